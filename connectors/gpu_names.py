"""Provider GPU names -> canonical catalogue names (schemas.gpus). Unknown names return None and are
reported by the caller, never guessed.

>>> gcp_accelerator("a100-80gb")
'A100-80GB'
>>> tracker_gpu("H100_80GB", "PCIe")
'H100-PCIE-80GB'
>>> gcp_accelerator("tpu-v5") is None
True
"""

from __future__ import annotations

_GCP = {
    "a100": "A100-40GB",
    "nvidia-tesla-a100": "A100-40GB",
    "a100-80gb": "A100-80GB",
    "nvidia-a100-80gb": "A100-80GB",
    "h100-80gb": "H100-80GB",
    "nvidia-h100-80gb": "H100-80GB",
    "h100-80gb-mega": "H100-80GB",
    "nvidia-h100-mega-80gb": "H100-80GB",
    "h200": "H200",
    "nvidia-h200-141gb": "H200",
    "b200": "B200",
    "nvidia-b200": "B200",
    "l4": "L4",
    "nvidia-l4": "L4",
    "t4": "T4",
    "nvidia-tesla-t4": "T4",
    "v100": "V100-16GB",
    "nvidia-tesla-v100": "V100-16GB",
    "rtx-pro-6000": "RTX-PRO-6000",
    "nvidia-rtx-pro-6000": "RTX-PRO-6000",
}

_TRACKER = {
    ("A100_80GB", "PCIe"): "A100-PCIE-80GB",
    ("A100_80GB", "SXM4"): "A100-80GB",
    ("H100_80GB", "PCIe"): "H100-PCIE-80GB",
    ("H100_80GB", "SXM5"): "H100-80GB",
    ("H200_141GB", None): "H200",
    ("B200_180GB", None): "B200",
    ("GH200_96GB", None): "GH200",
}


def gcp_accelerator(name: str) -> str | None:
    return _GCP.get(name.strip().lower())


def tracker_gpu(gpu_type: str, socket_type: str | None) -> str | None:
    return _TRACKER.get((gpu_type, socket_type or None))

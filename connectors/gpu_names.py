"""Every provider's GPU names -> canonical catalogue names (schemas.gpus.GPU_CATALOGUE).

This is the single mapping table for all connectors. The catalogue itself (memory, relative
throughput defaults) is `schemas.gpus`; here we only say which provider name means which entry.
Unknown names return None and are reported (logged + counted) by the caller, never guessed.

>>> gcp_accelerator("a100-80gb")
'A100-80GB'
>>> tracker_gpu("H100_80GB", "PCIe")
'H100-PCIE-80GB'
>>> gcp_accelerator("tpu-v5") is None
True
>>> aws_instance("p5.48xlarge")
('H100-80GB', 8)
>>> aws_gpu_info("V100", 32768)
'V100-32GB'
>>> azure_sku("Standard_ND96isr_H100_v5")
('H100-80GB', 8)
>>> lambda_gpu("H100 (80 GB SXM5)")
'H100-80GB'
>>> runpod_gpu("NVIDIA GeForce RTX 4090")
'RTX-4090'
>>> vast_gpu("A100 SXM4", 81920)
'A100-80GB'
>>> vast_gpu("RTX 3090", 24576) is None
True
>>> gcp_machine("g2-standard-24")
('L4', 2)
>>> tracker2026_gpu("A100_PCIE_80GB")
'A100-PCIE-80GB'
>>> tracker2026_gpu("MI250X") is None
True
"""

from __future__ import annotations

import re

from schemas.gpus import GPU_CATALOGUE

# --- GCP (accelerator type names, pricing-calculator names) -------------------------------------

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

# GPU names inside Cloud Billing Catalog SKU descriptions ("Nvidia Tesla A100 GPU running in Americas")
_GCP_SKU = {
    "tesla a100": "A100-40GB",
    "a100 80gb": "A100-80GB",
    "h100 80gb": "H100-80GB",
    "h100 80gb mega": "H100-80GB",
    "h100 mega 80gb": "H100-80GB",
    "h200 141gb": "H200",
    "b200": "B200",
    "l4": "L4",
    "tesla t4": "T4",
    "tesla v100": "V100-16GB",
    "rtx pro 6000": "RTX-PRO-6000",
}

# --- neocloud tracker ---------------------------------------------------------------------------

_TRACKER = {
    ("A100_80GB", "PCIe"): "A100-PCIE-80GB",
    ("A100_80GB", "SXM4"): "A100-80GB",
    ("H100_80GB", "PCIe"): "H100-PCIE-80GB",
    ("H100_80GB", "SXM5"): "H100-80GB",
    ("H200_141GB", None): "H200",
    ("B200_180GB", None): "B200",
    ("GH200_96GB", None): "GH200",
}

# --- GCP machine types (when only the machine type is known, e.g. AWS-style price feeds) ----------
# GPUs per machine from the GCP accelerator-optimized machine family documentation (A2, A3, G2).

GCP_MACHINES: dict[str, tuple[str, int]] = {
    **{f"a2-highgpu-{n}g": ("A100-40GB", n) for n in (1, 2, 4, 8)},
    "a2-megagpu-16g": ("A100-40GB", 16),
    **{f"a2-ultragpu-{n}g": ("A100-80GB", n) for n in (1, 2, 4, 8)},
    **{f"a3-highgpu-{n}g": ("H100-80GB", n) for n in (1, 2, 4, 8)},
    "a3-edgegpu-8g": ("H100-80GB", 8), "a3-edgegpu-8g-nolssd": ("H100-80GB", 8),
    "a3-megagpu-8g": ("H100-80GB", 8),
    "a3-ultragpu-8g": ("H200", 8), "a3-ultragpu-8g-nolssd": ("H200", 8),
    "a4-highgpu-8g": ("B200", 8),
    "a4x-highgpu-4g": ("GB200", 4),
    **{f"g2-standard-{v}": ("L4", 1) for v in (4, 8, 12, 16, 32)},
    "g2-standard-24": ("L4", 2), "g2-standard-48": ("L4", 4), "g2-standard-96": ("L4", 8),
}

# --- gpu-price-tracker-2026 (getdeploying / vast.ai style model names) ---------------------------

_TRACKER_2026 = {
    "A100_SXM_80GB": "A100-80GB",
    "A100_SXM_40GB": "A100-40GB",
    "A100_PCIE_80GB": "A100-PCIE-80GB",
    "A100_PCIE_40GB": "A100-40GB",  # the catalogue has no separate A100 40 GB PCIe entry (as for Lambda)
    "H100_SXM": "H100-80GB",
    "H100_PCIE": "H100-PCIE-80GB",
    "H200": "H200",
    "B200": "B200",
    "GH200": "GH200",
    "L40S": "L40S",
    "L40": "L40",
    "RTX_4090": "RTX-4090",
    "RTX_PRO_6000": "RTX-PRO-6000",
    "H100_NVL": "H100-NVL",
    "RTX_5090": "RTX-5090",
    "MI300X": "MI300X",
    "B300": "B300",
    "GB200": "GB200",
    "MI355X": "MI355X",
    "GB300": "GB300",   # (not in the file up to 2026-05; the names its later samples will likely use)
    "MI325X": "MI325X",
}

# --- AWS ----------------------------------------------------------------------------------------
# Static instance table (used by the replays, which have no API; the live connector prefers
# describe_instance_types GpuInfo). Sizes per family from the EC2 instance-type documentation.

def _family(gpu: str, sizes: dict[str, int], prefix: str) -> dict[str, tuple[str, int]]:
    return {f"{prefix}.{size}": (gpu, n) for size, n in sizes.items()}


_G_SIZES = {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1,
            "12xlarge": 4, "24xlarge": 4, "48xlarge": 8}

AWS_INSTANCES: dict[str, tuple[str, int]] = {
    **_family("K80", {"xlarge": 1, "8xlarge": 8, "16xlarge": 16}, "p2"),
    **_family("V100-16GB", {"2xlarge": 1, "8xlarge": 4, "16xlarge": 8}, "p3"),
    "p3dn.24xlarge": ("V100-32GB", 8),
    "p4d.24xlarge": ("A100-40GB", 8),
    "p4de.24xlarge": ("A100-80GB", 8),
    "p5.4xlarge": ("H100-80GB", 1),
    "p5.48xlarge": ("H100-80GB", 8),
    "p5e.48xlarge": ("H200", 8),
    "p5en.48xlarge": ("H200", 8),
    "p6-b200.48xlarge": ("B200", 8),
    "p6-b300.48xlarge": ("B300", 8),
    "p6e-gb200.36xlarge": ("GB200", 4),   # (one node of a P6e-GB200 UltraServer)
    **_family("T4", {"xlarge": 1, "2xlarge": 1, "4xlarge": 1, "8xlarge": 1, "16xlarge": 1, "12xlarge": 4,
                     "metal": 8}, "g4dn"),
    **_family("A10G", _G_SIZES, "g5"),
    **_family("L4", _G_SIZES, "g6"),
    **_family("L40S", _G_SIZES, "g6e"),
    "gr6.4xlarge": ("L4", 1),
    "gr6.8xlarge": ("L4", 1),
}
# not mapped (reported): g3 (M60), g4ad (Radeon Pro V520), g5g (T4G on Graviton), g6f (fractional L4),
# inf/trn (not GPUs).

# describe_instance_types GpuInfo: (Name, memory GiB per GPU) -> canonical
_AWS_GPUINFO: dict[tuple[str, int], str] = {
    ("K80", 12): "K80", ("V100", 16): "V100-16GB", ("V100", 32): "V100-32GB", ("A100", 40): "A100-40GB",
    ("A100", 80): "A100-80GB", ("H100", 80): "H100-80GB", ("H200", 141): "H200", ("B200", 179): "B200",
    ("B200", 180): "B200", ("T4", 16): "T4", ("A10G", 22): "A10G", ("A10G", 24): "A10G", ("L4", 22): "L4",
    ("L4", 24): "L4",
    ("L40S", 44): "L40S", ("L40S", 45): "L40S", ("L40S", 48): "L40S",
}

# --- Azure (armSkuName) -------------------------------------------------------------------------

AZURE_SKUS: dict[str, tuple[str, int]] = {
    "Standard_NC6s_v3": ("V100-16GB", 1), "Standard_NC12s_v3": ("V100-16GB", 2),
    "Standard_NC24s_v3": ("V100-16GB", 4), "Standard_NC24rs_v3": ("V100-16GB", 4),
    "Standard_ND40rs_v2": ("V100-32GB", 8),
    "Standard_NC4as_T4_v3": ("T4", 1), "Standard_NC8as_T4_v3": ("T4", 1), "Standard_NC16as_T4_v3": ("T4", 1),
    "Standard_NC64as_T4_v3": ("T4", 4),
    "Standard_NC24ads_A100_v4": ("A100-PCIE-80GB", 1), "Standard_NC48ads_A100_v4": ("A100-PCIE-80GB", 2),
    "Standard_NC96ads_A100_v4": ("A100-PCIE-80GB", 4),
    "Standard_ND96asr_v4": ("A100-40GB", 8), "Standard_ND96amsr_A100_v4": ("A100-80GB", 8),
    "Standard_ND96isr_H100_v5": ("H100-80GB", 8), "Standard_ND96isr_H200_v5": ("H200", 8),
    "Standard_NV36ads_A10_v5": ("A10", 1), "Standard_NV72ads_A10_v5": ("A10", 2),
    "Standard_NC40ads_H100_v5": ("H100-NVL", 1), "Standard_NC80adis_H100_v5": ("H100-NVL", 2),
    "Standard_ND96isr_MI300X_v5": ("MI300X", 8),
    "Standard_ND128isr_NDR_GB200_v6": ("GB200", 4),
}
# not mapped (reported): fractional-GPU NV*_A10_v5 sizes below 36 vCPU, NV*_v3 (M60).

# --- Lambda (gpu_description) -------------------------------------------------------------------

_LAMBDA = {
    "a100 (40 gb pcie)": "A100-40GB",  # the catalogue has no separate A100 40 GB PCIe entry
    "a100 (40 gb sxm4)": "A100-40GB",
    "a100 (80 gb sxm4)": "A100-80GB",
    "a100 (80 gb pcie)": "A100-PCIE-80GB",
    "h100 (80 gb pcie)": "H100-PCIE-80GB",
    "h100 (80 gb sxm5)": "H100-80GB",
    "gh200 (96 gb)": "GH200",
    "b200 (180 gb sxm6)": "B200",
    "a10 (24 gb pcie)": "A10",
    "a6000 (48 gb)": "A6000",
    "v100 (16 gb)": "V100-16GB",
}

# --- RunPod (gpuTypes id / displayName) ---------------------------------------------------------

_RUNPOD = {
    "nvidia h100 80gb hbm3": "H100-80GB",
    "nvidia h100 pcie": "H100-PCIE-80GB",
    "nvidia h200": "H200",
    "nvidia b200": "B200",
    "nvidia a100 80gb pcie": "A100-PCIE-80GB",
    "nvidia a100-sxm4-80gb": "A100-80GB",
    "nvidia l40s": "L40S",
    "nvidia l40": "L40",
    "nvidia l4": "L4",
    "nvidia rtx a6000": "A6000",
    "nvidia geforce rtx 4090": "RTX-4090",
    "nvidia geforce rtx 5090": "RTX-5090",
    "nvidia h100 nvl": "H100-NVL",
    "amd instinct mi300x oam": "MI300X",
    "nvidia rtx pro 6000 blackwell server edition": "RTX-PRO-6000",
    "nvidia rtx pro 6000 blackwell workstation edition": "RTX-PRO-6000",
    "tesla v100-sxm2-16gb": "V100-16GB",
    "tesla v100-sxm2-32gb": "V100-32GB",
    "tesla t4": "T4",
}

# --- Vast.ai (gpu_name, gpu_ram MiB) ------------------------------------------------------------

_VAST: dict[str, str | dict[int, str]] = {
    "h100 sxm": "H100-80GB",
    "h100 pcie": "H100-PCIE-80GB",
    "h200": "H200",
    "b200": "B200",
    "gh200": "GH200",
    "a100 sxm4": {40: "A100-40GB", 80: "A100-80GB"},
    "a100 pcie": {40: "A100-40GB", 80: "A100-PCIE-80GB"},
    "a100x": {80: "A100-PCIE-80GB"},
    "l40s": "L40S",
    "l40": "L40",
    "l4": "L4",
    "a10": "A10",
    "rtx a6000": "A6000",
    "rtx 4090": "RTX-4090",
    "rtx 5090": "RTX-5090",
    "h100 nvl": "H100-NVL",
    "rtx pro 6000 ws": "RTX-PRO-6000",
    "rtx pro 6000 s": "RTX-PRO-6000",
    "tesla v100": {16: "V100-16GB", 32: "V100-32GB"},
    "tesla t4": "T4",
}


def _mem_gb(mib: float) -> int:
    """GPU memory as marketed (GB), from MiB as reported (e.g. 81920 -> 80, 40960 -> 40)."""
    return round(mib / 1024)


def gcp_accelerator(name: str) -> str | None:
    return _GCP.get(name.strip().lower())


def gcp_sku_gpu(name: str) -> str | None:
    """GPU name inside a Cloud Billing SKU description, e.g. 'Tesla A100' or 'H100 80GB'."""
    return _GCP_SKU.get(" ".join(name.lower().split()))


def gcp_machine(machine_type: str) -> tuple[str, int] | None:
    """(canonical GPU, GPUs per machine) for a GCP accelerator-optimized machine type, or None."""
    return GCP_MACHINES.get(machine_type.strip().lower())


def tracker2026_gpu(gpu_model: str) -> str | None:
    return _TRACKER_2026.get(gpu_model.strip())


def tracker_gpu(gpu_type: str, socket_type: str | None) -> str | None:
    return _TRACKER.get((gpu_type, socket_type or None))


def aws_instance(instance_type: str) -> tuple[str, int] | None:
    """(canonical GPU, GPUs per instance) from the static table, or None."""
    return AWS_INSTANCES.get(instance_type)


def aws_gpu_info(name: str, memory_mib: float) -> str | None:
    """describe_instance_types GpuInfo.Gpus[].Name and MemoryInfo.SizeInMiB (per GPU) -> canonical."""
    return _AWS_GPUINFO.get((name.strip(), _mem_gb(memory_mib)))


def azure_sku(arm_sku_name: str) -> tuple[str, int] | None:
    return AZURE_SKUS.get(arm_sku_name)


def lambda_gpu(gpu_description: str) -> str | None:
    return _LAMBDA.get(" ".join(gpu_description.lower().split()))


def runpod_gpu(gpu_type_id: str) -> str | None:
    return _RUNPOD.get(" ".join(gpu_type_id.lower().split()))


def vast_gpu(gpu_name: str, gpu_ram_mib: float | None = None) -> str | None:
    entry = _VAST.get(" ".join(gpu_name.lower().split()))
    if entry is None or isinstance(entry, str):
        return entry
    if gpu_ram_mib is None:
        return None
    return entry.get(_mem_gb(gpu_ram_mib))


def _check() -> None:
    """Every target is a catalogue entry (import-time guard against typos)."""
    targets: list[str] = [*_GCP.values(), *_GCP_SKU.values(), *_TRACKER.values(), *_AWS_GPUINFO.values(),
                          *_LAMBDA.values(), *_RUNPOD.values(), *_TRACKER_2026.values()]
    targets += [g for g, _ in AWS_INSTANCES.values()] + [g for g, _ in AZURE_SKUS.values()]
    targets += [g for g, _ in GCP_MACHINES.values()]
    for v in _VAST.values():
        targets += [v] if isinstance(v, str) else list(v.values())
    bad = sorted(set(targets) - set(GPU_CATALOGUE))
    if bad:
        raise AssertionError(f"gpu_names maps onto unknown catalogue models {bad}")


_check()

_LAMBDA_NAME = re.compile(r"^gpu_(\d+)x_")


def lambda_gpu_count(instance_type_name: str) -> int | None:
    """'gpu_8x_h100_sxm5' -> 8 (used when specs.gpus is missing)."""
    m = _LAMBDA_NAME.match(instance_type_name)
    return int(m.group(1)) if m else None

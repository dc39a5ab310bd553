"""The canonical GPU catalogue: one name per GPU, whatever each provider calls it.

`relative_throughput` is a default training throughput relative to an A100-80GB (1.0);
workloads may override it per model. Provider-specific names are mapped onto these
names by each connector (connectors/gpu_names.py); an unknown name is reported, never guessed.

>>> canonical_gpu("H100-80GB").memory_gb
80
>>> canonical_gpu("nope") is None
True
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GpuSpec:
    model: str
    memory_gb: int
    relative_throughput: float
    vendor: str = "nvidia"


_SPECS = [
    GpuSpec("GB300", 288, 3.0),          # a Blackwell Ultra GPU of a Grace-Blackwell superchip (NVL72 racks)
    GpuSpec("B300", 288, 2.9),           # Blackwell Ultra
    GpuSpec("GB200", 186, 2.7),          # a Blackwell GPU of a Grace-Blackwell superchip (NVL72 racks)
    GpuSpec("B200", 180, 2.6),
    GpuSpec("MI355X", 288, 2.4, vendor="amd"),
    GpuSpec("MI325X", 256, 1.7, vendor="amd"),
    GpuSpec("H200", 141, 1.9),
    GpuSpec("GH200", 96, 1.8),
    GpuSpec("H100-80GB", 80, 1.7),
    GpuSpec("H100-NVL", 94, 1.5),        # PCIe cards in NVLink-bridged pairs: more memory and bandwidth than H100 PCIe
    GpuSpec("H100-PCIE-80GB", 80, 1.35),
    GpuSpec("MI300X", 192, 1.5, vendor="amd"),
    GpuSpec("A100-80GB", 80, 1.0),
    GpuSpec("A100-PCIE-80GB", 80, 0.9),
    GpuSpec("A100-40GB", 40, 0.9),
    GpuSpec("RTX-PRO-6000", 96, 1.1),
    GpuSpec("L40S", 48, 0.75),
    GpuSpec("L40", 48, 0.6),
    GpuSpec("A6000", 48, 0.5),
    GpuSpec("RTX-5090", 32, 0.7),
    GpuSpec("RTX-4090", 24, 0.55),
    GpuSpec("L4", 24, 0.3),
    GpuSpec("A10G", 24, 0.3),
    GpuSpec("A10", 24, 0.3),
    GpuSpec("V100-32GB", 32, 0.35),
    GpuSpec("V100-16GB", 16, 0.3),
    GpuSpec("T4", 16, 0.12),
    GpuSpec("K80", 12, 0.05),
]

GPU_CATALOGUE: dict[str, GpuSpec] = {s.model: s for s in _SPECS}


def canonical_gpu(model: str) -> GpuSpec | None:
    """The catalogue entry for a canonical model name, or None when unknown."""
    return GPU_CATALOGUE.get(model)

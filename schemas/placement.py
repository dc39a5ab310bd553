"""What makes a placement one a real job can run in: the catalogue facts (egress prices, interconnects per
instance type, GPU families) and the user's GPU quotas.

A data-parallel job (topology `gang`) needs all its instances of one instance type in one place (provider,
region, zone): `place_of` names that place, and spot and on-demand offers of it share it. Interconnects are
what the providers publish per instance type; an instance type not listed here is unknown, and unknown
never satisfies a requirement.

>>> from schemas.offers import OfferKey, Market
>>> o = OfferKey(provider="aws", region="us-east-1", zone="us-east-1a", instance_type="p5.48xlarge",
...              gpu_model="H100-80GB", gpus_per_instance=8, market=Market.SPOT)
>>> place_of(o), interconnect_of(o), gpu_family("H100-PCIE-80GB")
('aws|us-east-1|us-east-1a|p5.48xlarge|H100-80GB', ('nvlink', 'infiniband'), 'H100')
>>> GpuQuota(provider="aws", region="us-east-1", gpu="H100", gpus=64).covers(o)
True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.gpus import GPU_CATALOGUE
from schemas.offers import KNOWN_PROVIDERS, OfferKey


class Topology(StrEnum):
    GANG = "gang"            # every instance of one instance type in one place (data-parallel training)
    REPLICAS = "replicas"    # independent replicas, each on one instance, free to spread


class Interconnect(StrEnum):
    ANY = "any"
    NVLINK = "nvlink"            # NVLink/NVSwitch between the GPUs of an instance
    INFINIBAND = "infiniband"    # InfiniBand / EFA-class fabric between instances (implies nvlink here)


# Internet egress, USD per GB out (list prices of the first tier; the neoclouds listed publish free egress).
# A provider not listed is charged DEFAULT_EGRESS_USD_PER_GB: an unknown cost is not a free one.
EGRESS_USD_PER_GB: dict[str, float] = {
    "aws": 0.09, "gcp": 0.12, "azure": 0.087,
    "lambda": 0.0, "lambdalabs": 0.0, "runpod": 0.0, "nebius": 0.0, "datacrunch": 0.0, "hyperstack": 0.0,
    "crusoecloud": 0.0, "verda": 0.0, "vastai": 0.02,
}
DEFAULT_EGRESS_USD_PER_GB = 0.09

# What providers publish per instance type: NVLink inside the instance, and an InfiniBand/EFA-class
# fabric between instances. Unknown instance types satisfy no requirement.
_INTERCONNECT: dict[str, tuple[str, ...]] = {
    # AWS (EFA between instances)
    "p4d.24xlarge": ("nvlink", "infiniband"), "p4de.24xlarge": ("nvlink", "infiniband"),
    "p5.48xlarge": ("nvlink", "infiniband"), "p5e.48xlarge": ("nvlink", "infiniband"),
    "p5en.48xlarge": ("nvlink", "infiniband"), "p6-b200.48xlarge": ("nvlink", "infiniband"),
    "p6-b300.48xlarge": ("nvlink", "infiniband"), "p6e-gb200.36xlarge": ("nvlink", "infiniband"),
    "p3.16xlarge": ("nvlink",), "p3dn.24xlarge": ("nvlink", "infiniband"), "p3.8xlarge": ("nvlink",),
    # GCP (A3 Mega/Ultra: GPUDirect-TCPXO/RDMA between instances)
    "a2-highgpu-8g": ("nvlink",), "a2-megagpu-16g": ("nvlink",), "a2-ultragpu-8g": ("nvlink",),
    "a2-highgpu-4g": ("nvlink",), "a3-highgpu-8g": ("nvlink",), "a3-megagpu-8g": ("nvlink", "infiniband"),
    "a3-ultragpu-8g": ("nvlink", "infiniband"), "a4-highgpu-8g": ("nvlink", "infiniband"),
    "a4x-highgpu-4g": ("nvlink", "infiniband"),
    # Azure (InfiniBand between instances)
    "Standard_ND96asr_v4": ("nvlink", "infiniband"), "Standard_ND96amsr_A100_v4": ("nvlink", "infiniband"),
    "Standard_ND96isr_H100_v5": ("nvlink", "infiniband"), "Standard_ND96isr_H200_v5": ("nvlink", "infiniband"),
    "Standard_ND96isr_MI300X_v5": ("nvlink", "infiniband"),   # (Infinity Fabric inside the instance: "nvlink"-class)
    "Standard_ND128isr_NDR_GB200_v6": ("nvlink", "infiniband"),
}


def interconnect_of(offer: OfferKey) -> tuple[str, ...]:
    return _INTERCONNECT.get(offer.instance_type, ())


def satisfies(offer: OfferKey, need: Interconnect, instances: int = 1) -> bool:
    """Does `instances` of this offer meet the requirement? NVLink: the GPUs of each instance are linked
    (a lone single-GPU instance needs no link); InfiniBand: that, plus a fabric between the instances
    once there are several.

    >>> from schemas.offers import OfferKey, Market
    >>> p5 = OfferKey(provider="aws", region="r", instance_type="p5.48xlarge", gpu_model="H100-80GB",
    ...               gpus_per_instance=8, market=Market.SPOT)
    >>> satisfies(p5, Interconnect.INFINIBAND, 4), satisfies(p5.model_copy(update={"instance_type": "x"}),
    ...                                                        Interconnect.NVLINK)
    (True, False)
    """
    if need is Interconnect.ANY:
        return True
    have = interconnect_of(offer)
    linked = "nvlink" in have or (offer.gpus_per_instance == 1 and instances == 1)
    if need is Interconnect.NVLINK:
        return linked
    return linked and (instances == 1 or "infiniband" in have)


def egress_usd_per_gb(provider: str) -> float:
    return EGRESS_USD_PER_GB.get(provider, DEFAULT_EGRESS_USD_PER_GB)


def move_egress_usd(state_gb: float, was_on: Iterable[str], now_on: Iterable[str]) -> float:
    """What moving a workload's state costs in egress: `state_gb` x the dearest USD/GB of the providers it
    was on, when it goes to a provider it was not on (none within a provider, nor for a first placement).

    >>> move_egress_usd(100.0, {"gcp"}, {"aws"}), move_egress_usd(100.0, {"gcp"}, {"gcp"})
    (12.0, 0.0)
    """
    was, now = set(was_on), set(now_on)
    if state_gb <= 0 or not was or now <= was:
        return 0.0
    return state_gb * max(egress_usd_per_gb(p) for p in was)


def place_of(offer: OfferKey) -> str:
    """Where a gang must keep all its instances: provider, region, zone, instance type (and GPU model)."""
    return "|".join((offer.provider, offer.region, offer.zone, offer.instance_type, offer.gpu_model))


def gpu_family(model: str) -> str:
    """The family a quota may name instead of a model: 'H100-80GB' and 'H100-PCIE-80GB' -> 'H100'."""
    return model.split("-")[0] if not model.startswith("RTX-") else "-".join(model.split("-")[:2])


GPU_FAMILIES: frozenset[str] = frozenset(gpu_family(m) for m in GPU_CATALOGUE)


class GpuQuota(BaseModel):
    """A GPU quota the user holds: at most `gpus` GPUs of a model (or family) in a provider's region
    ('*': all its regions together), spot and on-demand counted together."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: str = Field(min_length=1, max_length=40)
    region: str = Field(min_length=1, max_length=64, pattern=r"^(\*|[a-z0-9][a-z0-9_.\-]*)$",
                        description="a region as offers name it, or '*' = the provider's regions together")
    gpu: str = Field(description="a canonical GPU model (schemas.gpus) or a family (H100, A100, ...)")
    gpus: int = Field(ge=0, le=1_000_000)

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, v: str) -> str:
        if v not in KNOWN_PROVIDERS:
            raise ValueError(f"unknown provider {v[:40]!r}")
        return v

    @field_validator("gpu")
    @classmethod
    def _known_gpu(cls, v: str) -> str:
        if v not in GPU_CATALOGUE and v not in GPU_FAMILIES:
            raise ValueError(f"unknown GPU model or family {v[:60]!r}; families: {sorted(GPU_FAMILIES)}")
        return v

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.region}/{self.gpu}"

    def covers(self, offer: OfferKey) -> bool:
        return (offer.provider == self.provider and (self.region == "*" or offer.region == self.region)
                and (offer.gpu_model == self.gpu or gpu_family(offer.gpu_model) == self.gpu))


def quotas_covering(quotas: Iterable[GpuQuota], offer: OfferKey) -> list[GpuQuota]:
    return [q for q in quotas if q.covers(offer)]


def quota_violations(quotas: Sequence[GpuQuota], used: Iterable[tuple[OfferKey, int]]) -> list[str]:
    """The quotas that `used` ((offer, instances), ...) exceeds, as 'provider/region/gpu used/limit'."""
    total = {q.key: 0 for q in quotas}
    for offer, n in used:
        for q in quotas_covering(quotas, offer):
            total[q.key] += n * offer.gpus_per_instance
    return [f"{q.key} {total[q.key]}/{q.gpus}" for q in quotas if total[q.key] > q.gpus]

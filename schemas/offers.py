"""Offer identity: what exactly is being priced.

>>> k = OfferKey(provider="gcp", region="us-central1", zone="", instance_type="a2-highgpu-1g",
...              gpu_model="A100-40GB", gpus_per_instance=1, market=Market.SPOT)
>>> k.key
'gcp|us-central1||a2-highgpu-1g|A100-40GB|1|spot'
>>> OfferKey.from_key(k.key) == k
True
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, overload

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.gpus import GPU_CATALOGUE


class Market(StrEnum):
    ON_DEMAND = "on_demand"
    SPOT = "spot"


# Providers the pipeline knows. Hyperscalers, GPU clouds, and the neocloud providers seen in the
# recorded tracker data: clouds that rent GPU machines (VMs, bare metal or Kubernetes nodes) a job can
# hold for days. Serverless inference platforms (replicate, beam, cerebrium, koyeb), where a long job
# cannot run, stay out. A provider outside this set is rejected by validation (streams/validate).
KNOWN_PROVIDERS: frozenset[str] = frozenset(
    {
        "aws", "gcp", "azure", "lambda", "runpod", "vastai",
        "lambdalabs", "hyperstack", "nebius", "datacrunch", "massedcompute", "vultr", "crusoecloud",
        "oblivus", "latitude", "primecompute", "dc_roan", "dc_wildebeest", "dc_gnu",
        "neocloud",
        # GPU clouds of the 2026 tracker (verda: DataCrunch's name since 2025; paperspace: DigitalOcean's)
        "coreweave", "oracle", "digitalocean", "paperspace", "ovh", "scaleway", "fluidstack", "tensordock",
        "cudo", "gcore", "upcloud", "civo", "hotaisle", "sesterce", "thunder", "sfcompute", "together",
        "novita", "lyceum", "verda",
    }
)

_NAME = r"^[a-z0-9][a-z0-9_.\-]*$"


class _Key:
    """`OfferKey.key`: its fields joined by '|', computed at the first read and kept in the instance's
    `__dict__` (a non-data descriptor: later reads find it there). `functools.cached_property` does the same
    under a lock on Python 3.11, which made the first read 2.5x as slow, once per event on the market stage."""

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _Key: ...
    @overload
    def __get__(self, obj: OfferKey, owner: type | None = None) -> str: ...

    def __get__(self, obj: OfferKey | None, owner: type | None = None) -> str | _Key:
        if obj is None:
            return self
        key = obj.__dict__["key"] = "|".join(   # (a StrEnum member is its value: no slow `.value`)
            (obj.provider, obj.region, obj.zone, obj.instance_type, obj.gpu_model, str(obj.gpus_per_instance),
             obj.market))
        return key


class OfferKey(BaseModel):
    """One rentable thing: a machine shape in one place in one market."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: str = Field(pattern=_NAME, max_length=40)
    region: str = Field(pattern=_NAME, max_length=64)
    zone: str = Field(default="", max_length=64, description="'' when the quote is region-wide")
    instance_type: str = Field(min_length=1, max_length=96)
    gpu_model: str = Field(description="canonical name from schemas.gpus.GPU_CATALOGUE")
    gpus_per_instance: int = Field(ge=1, le=1024)
    market: Market

    @model_validator(mode="after")
    def _canonical(self) -> OfferKey:
        """A known GPU model, and no '|' (the key's separator) in the free-form names. (One validator for
        the three checks: each Python validator is a call per event on the market stage's path.)"""
        if self.gpu_model not in GPU_CATALOGUE:
            raise ValueError(f"unknown GPU model {self.gpu_model!r}; canonical names: {sorted(GPU_CATALOGUE)}")
        if "|" in self.instance_type or "|" in self.zone:
            raise ValueError("'|' is reserved as the offer-key separator (instance_type, zone)")
        return self

    key: ClassVar[_Key] = _Key()   # the stable string form: the Kafka message key and table key

    @classmethod
    def from_key(cls, key: str) -> OfferKey:
        provider, region, zone, instance_type, gpu, n, market = key.split("|")
        return cls(provider=provider, region=region, zone=zone, instance_type=instance_type,
                   gpu_model=gpu, gpus_per_instance=int(n), market=Market(market))

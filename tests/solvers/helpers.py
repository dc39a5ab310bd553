"""Small builders for solver tests."""

from __future__ import annotations

from typing import Any

from schemas.events import WorkloadSpec
from schemas.market import OfferQuote
from schemas.offers import Market, OfferKey
from schemas.placement import Topology


def quote(provider: str = "gcp", region: str = "us", model: str = "L4", gpus: int = 1, price: float = 1.0,
          spot: bool = False, cap: int | None = None, pi: float = 0.0, it: str | None = None,
          forecast: float | None = None, available: bool = True) -> OfferQuote:
    key = OfferKey(provider=provider, region=region, instance_type=it or f"{model}-{gpus}x", gpu_model=model,
                   gpus_per_instance=gpus, market=Market.SPOT if spot else Market.ON_DEMAND)
    return OfferQuote(key, usd_per_hour=price, forecast_usd_per_hour=forecast, available=available,
                      capacity_instances=cap, interruption_probability_per_hour=pi)


def spec(wid: str = "w", models: dict[str, float] | None = None, lo: int = 1, hi: int | None = None,
         budget: float = 1000.0, spot_share: float = 1.0, restart: float = 0.25, same_region: bool = False,
         priority: int = 1, **placement: Any) -> WorkloadSpec:
    """A workload; `placement`: WorkloadSpec's topology fields. The tests written before topologies existed
    test free placement across offers, so the default here is `replicas` with no size, share or interconnect
    rule (the old model exactly); placement tests pass topology="gang" etc."""
    placement.setdefault("topology", Topology.REPLICAS)
    return WorkloadSpec(workload_id=wid, gpu_throughput=models or {"L4": 1.0}, min_gpus=lo, max_gpus=hi or lo,
                        budget_usd_per_hour=budget, max_spot_share=spot_share, restart_overhead_h=restart,
                        same_region=same_region, priority=priority, **placement)


NO_CONC = {"concentration_penalty_usd_per_gpu_hour": 0.0}   # engine option: no concentration penalty

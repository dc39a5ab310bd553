from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas import CapacityObserved, Market, OfferKey, PriceObserved, WorkloadSpec
from schemas.events import InterruptionKind, InterruptionObserved

T0 = datetime(2025, 6, 1, tzinfo=UTC)


def offer(provider: str = "gcp", region: str = "us-central1", gpu: str = "L4", n: int = 1,
          market: Market = Market.ON_DEMAND, itype: str | None = None) -> OfferKey:
    return OfferKey(provider=provider, region=region, instance_type=itype or f"{gpu}-{n}x", gpu_model=gpu,
                    gpus_per_instance=n, market=market)


def price(o: OfferKey, usd: float, minutes: float = 0, eid: str | None = None) -> PriceObserved:
    t = T0 + timedelta(minutes=minutes)
    return PriceObserved(event_id=eid or f"p-{o.key}-{minutes}-{usd}", offer=o, usd_per_hour=usd, quoted_at=t,
                         observed_at=t, source="test")


def capacity(o: OfferKey, available: bool, minutes: float = 0) -> CapacityObserved:
    t = T0 + timedelta(minutes=minutes)
    return CapacityObserved(event_id=f"c-{o.key}-{minutes}-{available}", offer=o, available=available,
                            quoted_at=t, observed_at=t, source="test")


def preempted(o: OfferKey, minutes: float = 0) -> InterruptionObserved:
    t = T0 + timedelta(minutes=minutes)
    return InterruptionObserved(event_id=f"i-{o.key}-{minutes}", offer=o, kind=InterruptionKind.PREEMPTED,
                                occurred_at=t, observed_at=t, source="test")


def workload(wid: str = "w1", gpus: dict[str, float] | None = None, n: int = 1, budget: float = 100.0,
             spot: float = 1.0) -> WorkloadSpec:
    return WorkloadSpec(workload_id=wid, gpu_throughput=gpus or {"L4": 0.3}, min_gpus=n, max_gpus=n,
                        budget_usd_per_hour=budget, max_spot_share=spot)

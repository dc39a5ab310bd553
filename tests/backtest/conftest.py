from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backtest import parse_portfolio
from schemas.events import (
    CapacityObserved,
    InterruptionKind,
    InterruptionObserved,
    PriceObserved,
    deterministic_id,
)
from schemas.offers import Market, OfferKey

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def offer(name: str, market: str = "spot", provider: str = "gcp", gpu: str = "L4", region: str = "r1",
          gpus: int = 1) -> OfferKey:
    return OfferKey(provider=provider, region=region, instance_type=name, gpu_model=gpu, gpus_per_instance=gpus,
                    market=Market(market))


def price(o: OfferKey, usd: float, h: float) -> PriceObserved:
    t = T0 + timedelta(hours=h)
    return PriceObserved(event_id=deterministic_id("p", o.key, h, usd), offer=o, usd_per_hour=usd, quoted_at=t,
                         observed_at=t, source="test")


def capacity(o: OfferKey, available: bool, h: float) -> CapacityObserved:
    t = T0 + timedelta(hours=h)
    return CapacityObserved(event_id=deterministic_id("c", o.key, h, available), offer=o, available=available,
                            available_instances=None if available else 0, quoted_at=t, observed_at=t, source="test")


def frequency(o: OfferKey, p: float, h: float) -> InterruptionObserved:
    t = T0 + timedelta(hours=h)
    return InterruptionObserved(event_id=deterministic_id("i", o.key, h, p), offer=o,
                                kind=InterruptionKind.FREQUENCY, interruption_probability_per_hour=p,
                                occurred_at=t, observed_at=t, source="test")


def one_workload(**kw: Any) -> Any:
    w = {"workload_id": "w", "gpu_throughput": {"L4": 1.0}, "min_gpus": 1, "max_gpus": 1,
         "budget_usd_per_hour": 5.0, "restart_overhead_h": 0.5, "home_provider": "gcp"}
    w.update(kw)
    return parse_portfolio({"name": "tiny", "workloads": [w]})


@pytest.fixture
def t0() -> datetime:
    return T0

"""Fixtures for outputs tests: a realistic event set replayed from data/sample (prices, capacity),
with decisions from the greedy engine, naive forecasts, interruptions and alerts derived from it,
loaded into a fresh chdb database through the real ClickHouseWriter."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cloudarb.app import load_workloads, workload_events
from connectors.replay import event_time, replay_events
from schemas.events import (
    AlertRaised,
    AllocationDecided,
    CapacityObserved,
    Event,
    InterruptionKind,
    InterruptionObserved,
    ModelPromoted,
    PriceForecasted,
    PriceObserved,
    WorkloadCancelled,
    deterministic_id,
    utcnow,
)
from schemas.market import OfferQuote
from solvers import GreedyEngine
from streams.core.decide import resolve

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"
WORKLOADS = ROOT / "examples" / "workloads.yaml"


def build_events(step_h: float = 12.0) -> list[Event]:
    """Market events in event-time order, plus what the rest of the pipeline would derive from them."""
    rnd = random.Random(7)
    market = sorted(replay_events(SAMPLE), key=event_time)
    specs = load_workloads(WORKLOADS)
    wl = workload_events(specs)
    out: list[Event] = list(wl)
    engine = GreedyEngine()
    for s in specs:
        engine.upsert_workload(s)
    plan: dict[str, list[Any]] = {}
    prev_ids: dict[str, str] = {}
    last_price: dict[str, float] = {}
    err: dict[str, list[float]] = {}
    next_solve = event_time(market[0])
    trig: list[str] = []
    for e in market:
        t = event_time(e)
        out.append(e)
        trig.append(e.event_id)
        if isinstance(e, PriceObserved):
            k = e.offer.key
            engine.upsert_offers([OfferQuote(offer=e.offer, usd_per_hour=e.usd_per_hour)])
            if k in last_price:
                err.setdefault(k, []).append(abs(e.usd_per_hour - last_price[k]))
                errs = err[k][-20:]
                out.append(PriceForecasted(
                    event_id=deterministic_id("fc", e.event_id), offer=e.offer, forecast_at=t, horizon_s=3600,
                    usd_per_hour=0.5 * e.usd_per_hour + 0.5 * last_price[k], model="ewma",
                    mae_model=sum(errs) / len(errs) * 0.9, mae_naive=sum(errs) / len(errs), n_scored=len(errs),
                    interruption_probability_next_hour=0.05 if e.offer.market.value == "spot" else None))
                if len(err[k]) == 3:   # the group's model overtakes naive (an online A/B promotion)
                    o = e.offer
                    out.append(ModelPromoted(
                        event_id=deterministic_id("promo", e.event_id), group=f"{o.provider}|{o.gpu_model}|{o.market}",
                        target="price_3600s", champion="river-quantile-linreg x0.5", previous="naive", metric="mae",
                        score_champion=0.9 * sum(errs) / len(errs), score_previous=sum(errs) / len(errs),
                        n_scored=30 + len(errs), promoted_at=t))
                change = (e.usd_per_hour - last_price[k]) / last_price[k]
                if abs(change) > 0.1:
                    out.append(AlertRaised(
                        event_id=deterministic_id("alert", e.event_id),
                        rule="price_drop" if change < 0 else "price_spike",
                        severity="warning", message=f"{k} moved {change:+.0%}", raised_at=t, offer=e.offer,
                        value=round(change * 100, 2), threshold=10.0))
            last_price[k] = e.usd_per_hour
            if e.offer.market.value == "spot" and rnd.random() < 0.05:
                out.append(InterruptionObserved(
                    event_id=deterministic_id("int", e.event_id), offer=e.offer, kind=InterruptionKind.FREQUENCY,
                    interruption_probability_per_hour=round(rnd.uniform(0.01, 0.2), 3), frequency_band=1,
                    occurred_at=t, observed_at=t, source="test"))
        elif isinstance(e, CapacityObserved):
            engine.upsert_offers([OfferQuote(offer=e.offer, usd_per_hour=last_price.get(e.offer.key, 1.0),
                                             available=e.available)]) if e.offer.key in last_price else None
        if t >= next_solve:
            next_solve = t + timedelta(hours=step_h)
            d = resolve(engine, [s.workload_id for s in specs], plan, prev_ids, "market changed: re-solve",
                        trig[-10:], {}, t, latency_ms=rnd.uniform(5, 80))
            trig = []
            if d is not None:
                out.append(d)
                for wid in d.workload_ids:
                    plan[wid] = [a for a in d.assignments if a.workload_id == wid]
                    prev_ids[wid] = d.event_id
    # a cancelled workload, so the allocation view has to drop it
    out.append(WorkloadCancelled(event_id="cancel-eval", workload_id=specs[-1].workload_id,
                                 cancelled_at=utcnow() + timedelta(seconds=1), reason="test"))
    return out


_CACHE: dict[str, list[Event]] = {}


def replayed_events() -> list[Event]:
    if "e" not in _CACHE:
        _CACHE["e"] = build_events()
    return _CACHE["e"]


@pytest.fixture
def loaded_db(chdb_client: tuple[Any, str]) -> Iterator[tuple[Any, str, list[Event]]]:
    """(client, db, events): a fresh database holding the replayed events."""
    from outputs.sink import ClickHouseWriter

    client, db = chdb_client
    events = replayed_events()
    w = ClickHouseWriter(client, db)
    for i in range(0, len(events), 2000):
        w.write(events[i:i + 2000])
    yield client, db, events


def decisions_of(events: list[Event]) -> list[AllocationDecided]:
    return [e for e in events if isinstance(e, AllocationDecided)]

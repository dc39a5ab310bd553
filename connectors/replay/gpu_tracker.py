"""Neocloud GPU market tracker (about every 40 minutes, per GPU model).

Each line: timestamp, gpu_type, socket_type, price_stats, availability, by_provider{name:{count,min,avg}},
by_config. We emit, per provider, a `PriceObserved` for a 1-GPU on-demand unit at the provider's
minimum USD/GPU-hour (region 'global': the tracker has no regions), when it first appears or changes,
and a `CapacityObserved` when a provider's listing appears or disappears (a provider missing from a
snapshot had no listing then, which is itself a capacity signal).
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from connectors.gpu_names import tracker_gpu
from schemas.events import CapacityObserved, PriceObserved, deterministic_id
from schemas.offers import Market, OfferKey

log = logging.getLogger(__name__)
SOURCE_PRICE = "replay:gpu-price-tracker by_provider.min (USD/GPU-h, listed as a 1-GPU unit, region 'global')"
SOURCE_CAP = "replay:gpu-price-tracker listing present/absent per provider (count = listings)"


def _records(folder: Path) -> Iterator[dict]:  # type: ignore[type-arg]
    recs = []
    for f in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(f, "rt") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    recs.append(json.loads(line))
    recs.sort(key=lambda r: (r["timestamp"], r["gpu_type"], r.get("socket_type") or ""))
    yield from recs


def events(folder: Path) -> Iterator[PriceObserved | CapacityObserved]:
    last_price: dict[str, float] = {}
    listed: dict[tuple[str, str], set[str]] = {}
    for rec in _records(folder):
        gpu = tracker_gpu(rec["gpu_type"], rec.get("socket_type"))
        if gpu is None:
            log.warning("gpu-tracker: unknown GPU %r/%r skipped", rec["gpu_type"], rec.get("socket_type"))
            continue
        t = datetime.fromisoformat(rec["timestamp"]).astimezone(UTC)
        ts = rec["timestamp"]
        providers = rec.get("by_provider") or {}
        gkey = (rec["gpu_type"], rec.get("socket_type") or "")
        before = listed.get(gkey, set())
        now: set[str] = set()
        out: list[PriceObserved | CapacityObserved] = []
        for name in sorted(providers):
            p = providers[name]
            price = p.get("min")
            if not isinstance(price, int | float) or not price > 0:
                continue
            now.add(name)
            offer = OfferKey(provider=name, region="global", instance_type=f"{gpu}-1x", gpu_model=gpu,
                             gpus_per_instance=1, market=Market.ON_DEMAND)
            k = offer.key
            if name not in before:
                out.append(CapacityObserved(
                    event_id=deterministic_id("gpu-tracker-cap", k, ts, True), offer=offer, available=True,
                    available_instances=int(p.get("count") or 0) or None, quoted_at=t, observed_at=t,
                    source=SOURCE_CAP))
            if last_price.get(k) != float(price):
                last_price[k] = float(price)
                out.append(PriceObserved(
                    event_id=deterministic_id("gpu-tracker", k, ts, price), offer=offer,
                    usd_per_hour=float(price), quoted_at=t, observed_at=t, source=SOURCE_PRICE))
        for name in sorted(before - now):
            offer = OfferKey(provider=name, region="global", instance_type=f"{gpu}-1x", gpu_model=gpu,
                             gpus_per_instance=1, market=Market.ON_DEMAND)
            out.append(CapacityObserved(
                event_id=deterministic_id("gpu-tracker-cap", offer.key, ts, False), offer=offer,
                available=False, available_instances=0, quoted_at=t, observed_at=t, source=SOURCE_CAP))
        listed[gkey] = now
        yield from out

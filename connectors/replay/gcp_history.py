"""GCP GPU machine prices (weekly snapshots of the public pricing calculator data).

CSV columns: snapshot_time, commit, generated_ts, machine_type, accelerator, accelerator_count, vcpus,
ram_gib, region, price_hour, price_hour_spot. Prices are USD/h for the whole machine. Emits a
`PriceObserved` per offer (on-demand, and spot where published) when its price first appears or changes.
"""

from __future__ import annotations

import csv
import gzip
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from connectors.gpu_names import gcp_accelerator
from schemas.events import PriceObserved, deterministic_id
from schemas.offers import Market, OfferKey

log = logging.getLogger(__name__)
SOURCE = "replay:gcp-pricing-history (weekly snapshot of published list prices)"


def _rows(folder: Path) -> Iterator[dict[str, str]]:
    for f in sorted(folder.glob("*.csv.gz")):
        with gzip.open(f, "rt", newline="") as fh:
            yield from csv.DictReader(fh)


def events(folder: Path) -> Iterator[PriceObserved]:
    last: dict[tuple[str, str, str, str, Market], float] = {}
    offers: dict[tuple[str, str, str, str, Market], OfferKey] = {}
    unknown: set[str] = set()
    batch: list[PriceObserved] = []
    current_snapshot = None
    t_snap: tuple[str, datetime] | None = None
    for row in _rows(folder):
        snap = row["snapshot_time"]
        if snap != current_snapshot:
            yield from sorted(batch, key=lambda e: e.event_id)
            batch, current_snapshot = [], snap
        gpu = gcp_accelerator(row["accelerator"])
        if gpu is None:
            if row["accelerator"] not in unknown:
                unknown.add(row["accelerator"])
                log.warning("gcp-history: unknown accelerator %r skipped", row["accelerator"])
            continue
        if t_snap is None or t_snap[0] != snap:
            t_snap = (snap, datetime.fromisoformat(snap).astimezone(UTC))
        t = t_snap[1]
        for market, col in ((Market.ON_DEMAND, "price_hour"), (Market.SPOT, "price_hour_spot")):
            raw = row.get(col) or ""
            if not raw:
                continue
            price = float(raw)
            if not price > 0:
                continue
            ident = (row["region"], row["machine_type"], gpu, row["accelerator_count"], market)
            if last.get(ident) == price:  # unchanged: skip before building anything
                continue
            last[ident] = price
            offer = offers.get(ident)
            if offer is None:
                offer = offers[ident] = OfferKey(
                    provider="gcp", region=row["region"], zone="", instance_type=row["machine_type"], gpu_model=gpu,
                    gpus_per_instance=int(row["accelerator_count"]), market=market)
            k = offer.key
            batch.append(PriceObserved(
                event_id=deterministic_id("gcp-history", k, snap, price), offer=offer, usd_per_hour=price,
                quoted_at=t, observed_at=t, source=SOURCE))
    yield from sorted(batch, key=lambda e: e.event_id)

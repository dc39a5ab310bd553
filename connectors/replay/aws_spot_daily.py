"""Daily spot prices per (provider, region, instance type): AWS GPU/accelerator types, sparse GCP A2/A3/G2
and Azure T4 rows (`aws-spot-daily/`, evaluation use only: read in place, never copied into the repo).

CSV columns: provider, region, instance_type, date, open, high, low, close, avg (USD per instance-hour,
Linux; AZs already collapsed by the median; a price holds until the series' next row).
Emits a spot `PriceObserved` per (provider, region, instance type) when its price first appears or changes,
quoted at the row's day 00:00 UTC (observed_at = quoted_at, as every replay).

Why `open`: it is the figure known at 00:00, when the event is quoted. The day's `avg` (what an
instance held over the day paid) or `close` is only known at the day's end: quoted at 00:00 they would
show a back-test the day's moves up to a day ahead. In this file open = high = low = close = avg on every
row up to 2025-06, so the choice does not move those numbers; it keeps a replay of a later period with
intraday ranges free of look-ahead (the price in force over the day is then its open, and the next day's
open carries the move).

GPU model and GPUs per instance come from the instance type (connectors.gpu_names: AWS static table, GCP
machine types, Azure SKUs with or without the `Standard_` prefix; Azure instance types are normalised to
the `Standard_` armSkuName the live Azure connector uses). Types whose accelerator is not in the GPU
catalogue (inf*, trn*, dl1, dl2q, g3/g3s M60, g4ad Radeon, g5g T4G on Graviton, ...) are rejected at the
edge as `unknown_gpu`: counted per row and logged once per type, never guessed. Providers outside
schemas.offers.KNOWN_PROVIDERS are rejected (`unknown_provider`), and so are prices <= 0 (edge price check).
Event ids: deterministic from (edge name, offer key, quoted_at, price).
"""

from __future__ import annotations

import csv
import gzip
import logging
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.base import MarketEvent, Reject
from connectors.gpu_names import aws_instance, azure_sku, gcp_machine
from connectors.replay._edge import ReplayEdge
from schemas.events import PriceObserved
from schemas.offers import KNOWN_PROVIDERS, Market, OfferKey

log = logging.getLogger(__name__)
NAME = "aws-spot-daily"
SOURCE = "replay:aws-spot-daily open (USD/instance-h, daily, AZ median; held until the next day's row)"

Rejected = Counter[tuple[str, str]]


class CountingEdge(ReplayEdge):
    """ReplayEdge whose rejects are also tallied per (reason, detail) into a caller's Counter."""

    def __init__(self, name: str, provider: str, counts: Rejected | None = None) -> None:
        super().__init__(name, provider)
        self.counts: Rejected = Counter() if counts is None else counts

    def reject(self, reason: str, detail: str = "") -> None:
        super().reject(reason, detail)
        self.counts[(reason, detail)] += 1

    def price_if_changed(self, last: dict[Any, float], ident: Any, offer: OfferKey, raw: str, t: datetime,
                         source: str) -> PriceObserved | None:
        """The PriceObserved for `raw` when it differs from the series' last price (`last`, updated), else None;
        a price the edge rejects is counted and gives None."""
        try:
            price = float(raw)
        except ValueError:
            price = float("nan")
        if last.get(ident) == price:  # unchanged: skip before building anything
            return None
        self.at = t
        ev = self.price(offer, raw, t, source)
        if isinstance(ev, Reject):
            self.reject(ev.reason, ev.detail)
            return None
        last[ident] = price
        return ev


def csv_rows(folder: Path) -> Iterator[dict[str, str]]:
    for f in sorted(folder.glob("*.csv.gz")):
        with gzip.open(f, "rt", newline="") as fh:
            yield from csv.DictReader(fh)


def day_start(date: str) -> datetime:
    return datetime.fromisoformat(date[:10]).replace(tzinfo=UTC)


def instance_gpu(provider: str, instance_type: str) -> tuple[str, tuple[str, int] | None]:
    """(normalised instance type, (canonical GPU, GPUs per instance) or None when not a catalogue GPU)."""
    if provider == "aws":
        return instance_type, aws_instance(instance_type)
    if provider == "gcp":
        return instance_type, gcp_machine(instance_type)
    if provider == "azure":
        sku = instance_type if instance_type.startswith("Standard_") else f"Standard_{instance_type}"
        return sku, azure_sku(sku)
    return instance_type, None


def events(folder: Path, rejected: Rejected | None = None) -> Iterator[MarketEvent]:
    """Spot prices in event-time order (per day, ties by event id). `rejected` (optional) receives the
    edge's reject tally per (reason, detail), e.g. ("unknown_gpu", "'inf2.xlarge'") -> rows skipped."""
    counts: Rejected = Counter() if rejected is None else rejected
    gate = CountingEdge(f"replay-{NAME}", "aws", counts)  # provider-level rejects
    edges: dict[str, CountingEdge] = {}
    rows = sorted(csv_rows(folder), key=lambda r: (r["date"], r["provider"], r["region"], r["instance_type"]))
    last: dict[tuple[str, str, str], float] = {}
    offers: dict[tuple[str, str, str], OfferKey | Reject] = {}
    batch: list[PriceObserved] = []
    day = ""
    t = datetime(1970, 1, 1, tzinfo=UTC)
    for row in rows:
        if row["date"] != day:
            yield from sorted(batch, key=lambda e: e.event_id)
            batch, day, t = [], row["date"], day_start(row["date"])
        provider = row["provider"].strip().lower()
        if provider not in KNOWN_PROVIDERS:
            gate.reject("unknown_provider", provider)
            continue
        ident = (provider, row["region"], row["instance_type"])
        offer = offers.get(ident)
        if offer is None:
            edge = edges.get(provider) or edges.setdefault(provider, CountingEdge(f"replay-{NAME}", provider, counts))
            itype, gpu = instance_gpu(provider, row["instance_type"])
            offer = offers[ident] = edge.offer(region=row["region"], instance_type=itype,
                                               gpu_model=gpu[0] if gpu else None, gpus=gpu[1] if gpu else None,
                                               market=Market.SPOT, raw_gpu=row["instance_type"])
        edge = edges[provider]
        if isinstance(offer, Reject):
            edge.reject(offer.reason, offer.detail)
            continue
        ev = edge.price_if_changed(last, ident, offer, row["open"], t, SOURCE)
        if ev is not None:
            batch.append(ev)
    yield from sorted(batch, key=lambda e: e.event_id)


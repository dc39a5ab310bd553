"""Event-level AWS spot price history per availability zone, eu-west-1, 2021-07/08 and 2021-12 .. 2022-03
(`aws-spot-events-euwest1/`, evaluation use only: read in place, never copied into the repo).

CSV columns: timestamp_utc, availability_zone, instance_type, product_description, spot_price_usd.
Only `Linux/UNIX` records are used (other products are skipped and tallied as `not_linux_unix`, no log).
Emits a spot `PriceObserved` per (AZ, instance type) series when its price first appears or changes:
offer zone = the AZ, region = the AZ without its letter (eu-west-1), quoted_at = the record's timestamp
(a price holds until the series' next record). GPU model and count come from the instance type
(connectors.gpu_names.aws_instance); types whose accelerator is not in the GPU catalogue (f1 FPGA, g2
K520, g3/g3s M60, g4ad Radeon, inf1, vt1, ...) are rejected at the edge as `unknown_gpu` (counted per
record, logged once per type), never guessed; prices <= 0 are rejected by the edge's price check.
Event ids: deterministic from (edge name, offer key, quoted_at, price).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from connectors.base import MarketEvent, Reject
from connectors.gpu_names import aws_instance
from connectors.replay.aws_spot_daily import CountingEdge, Rejected, csv_rows
from schemas.events import PriceObserved
from schemas.offers import Market, OfferKey

log = logging.getLogger(__name__)
NAME = "aws-spot-events-euwest1"
SOURCE = "replay:aws-spot-events-euwest1 spot price record per AZ (Linux/UNIX; held until the next record)"
PRODUCT = "Linux/UNIX"
_AZ = re.compile(r"^([a-z]{2}(?:-[a-z]+)+-\d+)[a-z]$")


def _time(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(UTC)


def events(folder: Path, rejected: Rejected | None = None) -> Iterator[MarketEvent]:
    """Spot prices in event-time order (ties by event id). `rejected` (optional) receives the reject tally
    per (reason, detail)."""
    counts: Rejected = Counter() if rejected is None else rejected
    edge = CountingEdge(f"replay-{NAME}", "aws", counts)
    rows = []
    for row in csv_rows(folder):
        if row["product_description"] != PRODUCT:
            counts[("not_linux_unix", row["product_description"])] += 1
            continue
        rows.append(row)
    rows.sort(key=lambda r: (_time(r["timestamp_utc"]), r["availability_zone"], r["instance_type"]))
    last: dict[tuple[str, str], float] = {}
    offers: dict[tuple[str, str], OfferKey | Reject] = {}
    batch: list[PriceObserved] = []
    current: datetime | None = None
    for row in rows:
        t = _time(row["timestamp_utc"])
        if t != current:
            yield from sorted(batch, key=lambda e: e.event_id)
            batch, current = [], t
        az, itype = row["availability_zone"], row["instance_type"]
        ident = (az, itype)
        offer = offers.get(ident)
        if offer is None:
            m = _AZ.match(az)
            gpu = aws_instance(itype)
            if m is None:
                offer = Reject("bad_zone", repr(az))
            else:
                offer = edge.offer(region=m.group(1), zone=az, instance_type=itype,
                                   gpu_model=gpu[0] if gpu else None, gpus=gpu[1] if gpu else None,
                                   market=Market.SPOT, raw_gpu=itype)
            offers[ident] = offer
        if isinstance(offer, Reject):
            edge.reject(offer.reason, offer.detail)
            continue
        ev = edge.price_if_changed(last, ident, offer, row["spot_price_usd"], t, SOURCE)
        if ev is not None:
            batch.append(ev)
    yield from sorted(batch, key=lambda e: e.event_id)

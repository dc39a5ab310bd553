"""AWS Spot Instance Advisor snapshot(s) -> InterruptionObserved(kind=frequency) and derived spot prices.

File: spot-advisor-data.<YYYY-MM-DD>[.gpu].json.gz with spot_advisor[region]["Linux"][type] = {"s": savings %,
"r": band 0..4}. The snapshot time is the date in the file name at 00:00 UTC (the file has no timestamp).
Per (region, GPU instance type): an InterruptionObserved with the band and a per-hour probability derived
from the band's midpoint (see connectors.aws.band_probability_per_hour; said in `source`), and, where a
reference on-demand price exists (connectors.aws.REFERENCE_ON_DEMAND: us-east-1/us-east-2/us-west-2, not
P4/P5), a spot PriceObserved = on-demand x (1 - savings%) whose `source` says it is DERIVED.
Windows entries are ignored; non-GPU types are skipped.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from connectors.aws import REFERENCE_ON_DEMAND, REFERENCE_REGIONS, advisor_events
from connectors.base import MarketEvent
from connectors.replay._edge import ReplayEdge

log = logging.getLogger(__name__)
_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")


def events(folder: Path) -> Iterator[MarketEvent]:
    od = {(r, t): p for r in REFERENCE_REGIONS for t, p in REFERENCE_ON_DEMAND.items()}
    snaps = []
    for f in sorted(folder.glob("*.json.gz")):
        m = _DATE.search(f.name)
        if m is None:
            log.warning("aws-spot-advisor: %s has no date in its name; skipped", f.name)
            continue
        snaps.append((datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC), f))
    for t, f in sorted(snaps):
        with gzip.open(f, "rt") as fh:
            data = json.load(fh)
        edge = ReplayEdge("replay-aws-spot-advisor", "aws")
        edge.at = t
        out = list(edge.keep(advisor_events(edge, data, t, f"replay:aws-spot-advisor {t.date()}", od_prices=od)))
        yield from sorted(out, key=lambda e: e.event_id)

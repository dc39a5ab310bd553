"""Spot availability / preemption traces ("Can't Be Late", NSDI '24; skypilot-org/spot-traces).

Layout: spot-traces/{availability,preemption}/<N>-node/<provider>-<MM-DD-YYYY>/<zone>_<kind>_<count>.json,
each {"metadata": {"gap_seconds": g}, "data": [0/1 per tick]}.

- Direction: `unavailable_value` (default 1) is the tick value meaning "no spot capacity (unavailable or
  preempted)"; the other value means spot ran. As the paper's simulator reads the traces, 1 = unavailable
  (means ~0.17 for the 1-node V100 traces fit that). It is a parameter, tested both ways.
- Time: the traces carry no absolute start; t0 = the folder's date at 00:00 UTC, tick i at t0 + i*gap.
- Events: CapacityObserved at the first tick and at every change (available = tick != unavailable_value);
  for preemption traces also InterruptionObserved(kind=preempted) when a running tick turns unavailable.
- Offers: AWS v100_1 -> p3.2xlarge (1x V100-16GB), v100_8 -> p3.16xlarge (8x), k80_1 -> p2.xlarge (1x K80),
  k80_8 -> p2.8xlarge (8x) (the upstream README says p2.2xlarge/p2.16xlarge, which do not exist with 1/8
  GPUs; we map by GPU count), spot market, region = zone minus its letter.
- CPU-only traces (AWS intel_64 = r5.16xlarge, GCP c3-88 = c3-highcpu-88) have no GPU and therefore no offer
  in the GPU catalogue: they are skipped with a logged reason (not mapped to a proxy GPU).
- Only 1-node traces are replayed; multi-node folders (not in the shared data) are skipped with a log line.
"""

from __future__ import annotations

import heapq
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors.base import MarketEvent, Reject
from connectors.replay._edge import ReplayEdge
from schemas.events import InterruptionKind
from schemas.offers import Market

log = logging.getLogger(__name__)

AWS_TRACE_OFFERS: dict[tuple[str, int], tuple[str, str, int]] = {
    ("v100", 1): ("p3.2xlarge", "V100-16GB", 1),
    ("v100", 8): ("p3.16xlarge", "V100-16GB", 8),
    ("k80", 1): ("p2.xlarge", "K80", 1),
    ("k80", 8): ("p2.8xlarge", "K80", 8),
}
CPU_ONLY = {("aws", "intel"): "r5.16xlarge (64 vCPU, no GPU)", ("gcp", "c3"): "c3-highcpu-88 (no GPU)"}
_FOLDER = re.compile(r"^(aws|gcp)-(\d{2})-(\d{2})-(\d{4})$")
_FILE = re.compile(r"^(?P<zone>[a-z0-9-]+?)_(?P<kind>[a-z0-9]+?)[_-](?P<n>\d+)$")


def _region(provider: str, zone: str) -> str:
    return zone[:-1] if provider == "aws" else zone.rsplit("-", 1)[0]


def trace_events(path: Path, kind: str, provider: str, t0: datetime, unavailable_value: int = 1,
                 rel: str | None = None) -> Iterator[MarketEvent]:
    """Events of one trace file (in time order). `kind` is 'availability' or 'preemption'."""
    m = _FILE.match(path.stem)
    if m is None:
        log.warning("spot-traces: %s: unrecognised file name; skipped", path)
        return
    zone, gpu_kind, n = m.group("zone"), m.group("kind"), int(m.group("n"))
    if (provider, gpu_kind) in CPU_ONLY:
        log.info("spot-traces: %s skipped: CPU-only trace %s has no GPU offer", rel or path,
                 CPU_ONLY[(provider, gpu_kind)])
        return
    spec = AWS_TRACE_OFFERS.get((gpu_kind, n)) if provider == "aws" else None
    if spec is None:
        log.warning("spot-traces: %s skipped: no offer mapping for %s %s x%d", rel or path, provider, gpu_kind, n)
        return
    itype, gpu, count = spec
    doc = json.loads(path.read_text())
    gap = float(doc["metadata"]["gap_seconds"])
    data = doc["data"]
    edge = ReplayEdge("replay-spot-traces", provider)
    offer = edge.offer(region=_region(provider, zone), zone=zone, instance_type=itype, gpu_model=gpu, gpus=count,
                       market=Market.SPOT)
    src = (f"replay:spot-traces {kind} (NSDI'24) tick={gap:g}s {unavailable_value}=unavailable; "
           f"t0={t0.date()} 00:00 UTC (folder date)")
    rel = rel or path.name
    prev: int | None = None
    for i, v in enumerate(data):
        if v not in (0, 1):
            edge.reject("bad_tick", f"{rel}[{i}]={v!r}")
            continue
        if v == prev:
            continue
        t = t0 + timedelta(seconds=i * gap)
        edge.at = t
        available = v != unavailable_value
        out: list[MarketEvent | Reject] = [edge.capacity(offer, available, t, src)]
        if kind == "preemption" and prev is not None and prev != unavailable_value and not available:
            out.append(edge.interruption(offer, InterruptionKind.PREEMPTED, t, src, id_parts=(rel, i)))
        yield from edge.keep(out)
        prev = v


def events(folder: Path, unavailable_value: int = 1) -> Iterator[MarketEvent]:
    streams = []
    for kind in ("availability", "preemption"):
        for nodes_dir in sorted((folder / kind).glob("*")):
            if nodes_dir.name != "1-node":
                log.warning("spot-traces: %s skipped (only 1-node traces are replayed)", nodes_dir)
                continue
            for d in sorted(nodes_dir.iterdir()):
                m = _FOLDER.match(d.name)
                if m is None:
                    log.warning("spot-traces: %s: folder name is not <provider>-MM-DD-YYYY; skipped", d)
                    continue
                provider, mm, dd, yyyy = m.groups()
                t0 = datetime(int(yyyy), int(mm), int(dd), tzinfo=UTC)
                for f in sorted(d.glob("*.json")):
                    rel = str(f.relative_to(folder))
                    streams.append((e.quoted_at if hasattr(e, "quoted_at") else e.occurred_at, rel, e.event_id, e)
                                    for e in trace_events(f, kind, provider, t0, unavailable_value, rel))
    for _, _, _, e in heapq.merge(*streams, key=lambda x: (x[0], x[1], x[2])):
        yield e

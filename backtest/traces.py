"""Spot availability / preemption traces, mapped onto spot offers and replayed on the simulation clock.

The recorded traces (data/*/spot-traces, "Can't Be Late", NSDI '24) are 0/1 series, one value a tick
(`metadata.gap_seconds`), for a few AWS zones (V100/K80 GPU machines) and GCP zones (c3 CPU machines),
recorded 2022-10 .. 2023-04. The price data covers other periods and other machines, so traces are
mapped onto offers. THE MAPPING IS AN ASSUMPTION, not a measurement:

* Direction: `unavailable_value` (default 1, as the paper's simulator reads them) marks a tick without
  spot capacity (unavailable or preempted). It is an explicit parameter (`--trace-unavailable-value`).
* Which trace: each spot offer's capacity pool (provider, region, GPU model) gets one trace. Candidates
  are ranked: GPU traces before CPU traces, then same provider, then same GPU count class (1 vs many);
  among the best-ranked, the pick is a stable hash of the pool, so a pool always gets the same trace and
  different regions get different traces where the pool of traces allows.
* When: tick 0 of every trace is the simulation start (`--from`), and a trace is replayed cyclically
  until the simulation ends. By default at their recorded ticks (30-600 s). Resampled to `resolution_s` ticks
  (a tick is "no capacity" if any original tick in it was), blips shorter than the resolution merge into one
  outage, and every outage starts at the start of its first tick and ends at the end of its last: at 3600 s,
  us-east-1a_v100_1 is without capacity 29.5 % of the time, against 16.7 % recorded.
* Effect: a 0->1 transition emits `CapacityObserved(available=False)` for every offer of the pool (and,
  for preemption traces, an `InterruptionObserved(preempted)`); 1->0 emits `CapacityObserved(True)`.
  These events go through exactly the same state/forecast/trigger chain as recorded events; the
  simulator treats a spot allocation on an offer that loses capacity as interrupted.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from schemas.events import CapacityObserved, InterruptionKind, InterruptionObserved, deterministic_id
from schemas.offers import Market, OfferKey

SOURCE = "backtest:spot-trace overlay (recorded trace mapped onto this offer; see backtest/traces.py)"
GPU_TOKENS = ("v100", "k80", "a100", "h100", "t4", "l4", "a10", "p100")


@dataclass(frozen=True)
class Trace:
    name: str                 # e.g. availability/aws-02-15-2023/us-east-1a_v100_1
    kind: str                 # "availability" | "preemption"
    provider: str
    gpu: bool
    gpus: int
    gap_s: float
    unavailable: tuple[bool, ...]  # per tick, True = no spot capacity

    @property
    def cycle_s(self) -> float:
        return self.gap_s * len(self.unavailable)


def load_traces(folder: Path, unavailable_value: int = 1) -> list[Trace]:
    """Every trace under `folder` (the dataset's `spot-traces/` directory), sorted by name."""
    out: list[Trace] = []
    for f in sorted(folder.glob("*/*/*/*.json")):
        kind = f.parts[-4]
        setname = f.parts[-2]
        doc = json.loads(f.read_text())
        data = doc.get("data") or []
        gap = float((doc.get("metadata") or {}).get("gap_seconds") or 0)
        if not data or gap <= 0:
            continue
        resource = f.stem.split("_", 1)[1] if "_" in f.stem else f.stem
        low = resource.lower()
        gpu = any(low.startswith(t) for t in GPU_TOKENS)
        m = re.search(r"_(\d+)$", low)
        gpus = int(m.group(1)) if (gpu and m) else 1
        out.append(Trace(name=f"{kind}/{setname}/{f.stem}", kind=kind, provider=setname.split("-", 1)[0],
                         gpu=gpu, gpus=gpus, gap_s=gap,
                         unavailable=tuple(int(v) == unavailable_value for v in data)))
    return out


def resample(tr: Trace, resolution_s: float) -> list[tuple[float, bool]]:
    """(offset_s, unavailable) runs over one cycle, at `resolution_s` ticks (any-unavailable rule)."""
    step = max(1, round(resolution_s / tr.gap_s)) if resolution_s > tr.gap_s else 1
    vals = [any(tr.unavailable[i:i + step]) for i in range(0, len(tr.unavailable), step)]
    runs: list[tuple[float, bool]] = []
    for i, v in enumerate(vals):
        if not runs or runs[-1][1] != v:
            runs.append((i * step * tr.gap_s, v))
    return runs


def _h(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big")


def pick_trace(traces: list[Trace], offer: OfferKey) -> Trace | None:
    """The trace mapped onto this offer's pool (provider, region, GPU model); None when there are none."""
    if not traces:
        return None

    def rank(t: Trace) -> tuple[int, int, int]:
        return (int(t.gpu), int(t.provider == offer.provider), int((t.gpus > 1) == (offer.gpus_per_instance > 1)))

    best = max(rank(t) for t in traces)
    cands = [t for t in traces if rank(t) == best]
    return cands[_h(f"{offer.provider}|{offer.region}|{offer.gpu_model}") % len(cands)]


def overlay_events(offers: Iterable[OfferKey], traces: list[Trace], start: datetime, end: datetime,
                   resolution_s: float = 0.0) -> tuple[Iterator[CapacityObserved | InterruptionObserved],
                                                         dict[str, str]]:
    """Trace events for the given spot offers over [start, end), in time order; and offer key -> trace."""
    by_trace: dict[str, list[OfferKey]] = {}
    tmap: dict[str, Trace] = {}
    mapping: dict[str, str] = {}
    for o in sorted({o.key: o for o in offers if o.market is Market.SPOT}.values(), key=lambda o: o.key):
        t = pick_trace(traces, o)
        if t is None:
            continue
        by_trace.setdefault(t.name, []).append(o)
        tmap[t.name] = t
        mapping[o.key] = t.name
    t0, t1 = start.timestamp(), end.timestamp()

    def gen() -> Iterator[tuple[float, str, CapacityObserved | InterruptionObserved]]:
        items: list[tuple[float, str, CapacityObserved | InterruptionObserved]] = []
        for name in sorted(by_trace):
            tr = tmap[name]
            runs = resample(tr, resolution_s)
            cycle = tr.cycle_s
            n_cycles = math.ceil((t1 - t0) / cycle) if cycle > 0 else 0
            prev: bool | None = None
            for c in range(n_cycles):
                for off, unavail in runs:
                    t = t0 + c * cycle + off
                    if t >= t1:
                        break
                    if unavail == prev:
                        continue
                    if prev is None and not unavail:  # starts available: nothing to say
                        prev = unavail
                        continue
                    prev = unavail
                    when = datetime.fromtimestamp(t, UTC)
                    for o in by_trace[name]:
                        k = o.key
                        # model_construct: every field is valid by construction (hot path, ~10^5 events)
                        items.append((t, k, CapacityObserved.model_construct(
                            event_id=deterministic_id("trace-cap", k, t, not unavail), offer=o,
                            available=not unavail, available_instances=0 if unavail else None,
                            quoted_at=when, observed_at=when, source=SOURCE)))
                        if unavail and tr.kind == "preemption":
                            items.append((t, k + "~", InterruptionObserved.model_construct(
                                event_id=deterministic_id("trace-int", k, t), offer=o,
                                kind=InterruptionKind.PREEMPTED, occurred_at=when, observed_at=when,
                                source=SOURCE)))
        items.sort(key=lambda x: (x[0], x[1]))
        yield from items

    return (e for _, _, e in gen()), mapping

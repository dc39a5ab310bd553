"""Replay of recorded real markets as the same events the live connectors publish.

Datasets: GCP pricing history, the neocloud tracker, the AWS Spot Advisor snapshot, the spot
availability/preemption traces, and three evaluation-only datasets read in place from the shared data
folder (never copied into the repository): daily AWS (+ sparse GCP/Azure) spot prices, event-level AWS
eu-west-1 spot prices per AZ, and the 2026 multi-provider daily GPU price tracker (see each module for
what is derived and how).
Each dataset module yields events in event-time order; `replay_events` merges them (deterministic:
ties broken by dataset name then event id). Event ids are derived from the record, so replaying the
same data twice yields the same ids and downstream dedup holds.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path

from connectors.replay import (
    aws_spot_advisor,
    aws_spot_daily,
    aws_spot_events,
    gcp_history,
    gpu_tracker,
    gpu_tracker_2026,
    spot_traces,
)
from schemas.events import CapacityObserved, Event, InterruptionObserved, PriceObserved

MarketEvent = PriceObserved | CapacityObserved | InterruptionObserved

DATASETS: dict[str, Callable[[Path], Iterator[MarketEvent]]] = {
    "gcp-pricing-history": gcp_history.events,
    "gpu-price-tracker": gpu_tracker.events,
    "aws-spot-advisor": aws_spot_advisor.events,
    "spot-traces": spot_traces.events,
    "aws-spot-daily": aws_spot_daily.events,
    "aws-spot-events-euwest1": aws_spot_events.events,
    "gpu-price-tracker-2026": gpu_tracker_2026.events,
}


# read in place from ../shared/data for evaluation only (no redistribution licence): replayed when asked
# for by name, not by default, so a run's default market is the same whichever folder it is pointed at
EVALUATION_ONLY: frozenset[str] = frozenset({"aws-spot-daily", "aws-spot-events-euwest1", "gpu-price-tracker-2026"})
DEFAULT_DATASETS: tuple[str, ...] = tuple(sorted(set(DATASETS) - EVALUATION_ONLY))


def event_time(e: Event) -> datetime:
    t = getattr(e, "quoted_at", None) or getattr(e, "occurred_at", None)
    assert isinstance(t, datetime), f"{type(e).__name__} has no event time"
    return t


def replay_events(data_dir: Path, datasets: Iterable[str] | None = None,
                  start: datetime | None = None, end: datetime | None = None) -> Iterator[MarketEvent]:
    """All events of the chosen datasets (default: DEFAULT_DATASETS) under `data_dir`, merged in event-time
    order."""
    names = list(DEFAULT_DATASETS) if datasets is None else sorted(datasets)
    unknown = set(names) - set(DATASETS)
    if unknown:
        raise ValueError(f"unknown datasets {sorted(unknown)}; known: {sorted(DATASETS)}")
    streams = []
    for name in names:
        folder = data_dir / name
        if folder.is_dir():
            streams.append((event_time(e), name, e.event_id, e) for e in DATASETS[name](folder))
    for t, _, _, e in heapq.merge(*streams, key=lambda x: (x[0], x[1], x[2])):
        if start is not None and t < start:
            continue
        if end is not None and t >= end:
            break
        yield e


def paced(events: Iterable[MarketEvent], speed: float, *, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep, max_gap_s: float | None = None) -> Iterator[MarketEvent]:
    """Yield events at x`speed` real time (event-time gaps / speed); `speed` <= 0 = as fast as possible.
    `max_gap_s` caps one wait in wall seconds (e.g. to jump the years between datasets)."""
    if speed <= 0:
        yield from events
        return
    t0_event: datetime | None = None
    offset = 0.0  # wall seconds skipped by max_gap_s
    t0_wall = clock()
    for e in events:
        et = event_time(e)
        if t0_event is None:
            t0_event = et
        due = (et - t0_event).total_seconds() / speed - offset
        wait = due - (clock() - t0_wall)
        if max_gap_s is not None and wait > max_gap_s:
            offset += wait - max_gap_s
            wait = max_gap_s
        if wait > 0:
            sleep(wait)
        yield e

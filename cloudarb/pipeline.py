"""Wiring helpers shared by the CLI, the demo and the integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from connectors.publish import KafkaPublisher
from connectors.replay import paced, replay_events
from schemas.events import Event


def replay_to_kafka(bootstrap: str, data_dir: Path, speed: float = 0.0, datasets: Iterable[str] | None = None,
                    on_event: Callable[[int], None] | None = None, publisher: KafkaPublisher | None = None) -> int:
    """Publish recorded events in event-time order; `speed` = ×N real time (0 = as fast as possible)."""
    pub = publisher or KafkaPublisher(bootstrap)
    n = 0
    for e in paced(replay_events(data_dir, datasets), speed, max_gap_s=5.0):
        pub.publish(e)
        n += 1
        if on_event is not None and n % 500 == 0:
            on_event(n)
    left = pub.flush(60)
    if left or pub.failed:
        raise RuntimeError(f"{left} events undelivered, {pub.failed} failed")
    if on_event is not None:
        on_event(n)
    return n


def publish_events(bootstrap: str, events: Iterable[Event]) -> int:
    pub = KafkaPublisher(bootstrap)
    n = pub.publish_all(events)
    if pub.flush(30) or pub.failed:
        raise RuntimeError("publishing failed")
    return n

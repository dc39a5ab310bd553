"""Poison-pill isolation for the output consumers (sink, alerts, executors): one record never stops a stage.

A batch whose handler raises while the store it writes to is healthy is split in halves, recursively,
until the records that fail on their own are found; those go to the dead-letter topic with the reason
(capped: `schemas.events.dead_letter_of`) and the rest is handled. While the store is unhealthy (an
outage, not a bad record) the caller keeps retrying the whole batch: nothing is skipped for an outage.

>>> seen = []
>>> def handle(xs):
...     if 3 in xs:
...         raise ValueError("bad 3")
...     seen.extend(xs)
>>> [(x, str(e)) for x, e in isolate([1, 2, 3, 4], handle, healthy=lambda: True)], sorted(seen)
([(3, 'bad 3')], [1, 2, 4])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from schemas.events import dead_letter_of
from schemas.topics import DLQ

log = logging.getLogger(__name__)

T = TypeVar("T")


class Outage(RuntimeError):
    """The handler failed and the store is unhealthy: retry the batch later, skip nothing."""


def isolate(items: Sequence[T], handle: Callable[[Sequence[T]], Any],
            healthy: Callable[[], bool]) -> list[tuple[T, Exception]]:
    """Handle `items`; on a failure while `healthy()`, bisect down to the items that fail alone and return
    them with their exceptions (everything else handled). Raises `Outage` when a failure comes with
    `healthy()` False. `handle` must be idempotent (a half may be retried after a partial write)."""
    try:
        handle(items)
        return []
    except Exception as exc:
        if not healthy():
            raise Outage(f"{type(exc).__name__}: {exc}") from exc
        if len(items) == 1:
            return [(items[0], exc)]
        mid = len(items) // 2
        return isolate(items[:mid], handle, healthy) + isolate(items[mid:], handle, healthy)


@dataclass(frozen=True)
class Source:
    """Where a consumed record came from (what a dead letter must name)."""

    topic: str
    partition: int
    offset: int
    raw: bytes


def source_of(msg: Any) -> Source:
    """A confluent-kafka message's origin and bytes."""
    return Source(msg.topic(), msg.partition(), msg.offset(), msg.value() or b"")


class DeadLetters:
    """Writes dead letters for records a stage could not handle; never raises, never blocks for long.

    A record from the DLQ itself is not dead-lettered again (that could loop): it is counted and logged
    with its offset, as is a dead letter the broker refused."""

    def __init__(self, bootstrap: str, stage: str) -> None:
        from confluent_kafka import Producer

        self.stage = stage
        self.written = 0
        self.skipped = 0   # not dead-lettered: from the DLQ itself, or the DLQ write failed
        from schemas.kafka import kafka_security_config

        self._p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                            "log_level": 3, **kafka_security_config()})

    def send(self, src: Source, reason: str) -> None:
        if src.topic == DLQ.name:
            self.skipped += 1
            log.error("%s: skipped a record of %s [%d] @%d it cannot handle (%s)", self.stage, src.topic,
                      src.partition, src.offset, reason[:300])
            return
        dl = dead_letter_of(src.raw, reason, src.topic, src.partition, src.offset, self.stage)

        def done(err: Any, _msg: Any) -> None:
            if err is None:
                self.written += 1
            else:
                self.skipped += 1
                log.error("%s: dead letter for %s [%d] @%d not written (%s); skipped", self.stage, src.topic,
                          src.partition, src.offset, err)

        try:
            self._p.produce(DLQ.name, key=dl.event_id.encode(), value=dl.model_dump_json().encode(),
                            on_delivery=done)
        except Exception as exc:  # refused locally (e.g. too large): count it, never stop the stage
            self.skipped += 1
            log.error("%s: dead letter for %s [%d] @%d refused (%s); skipped", self.stage, src.topic,
                      src.partition, src.offset, exc)
        log.warning("%s: dead-lettered %s [%d] @%d: %s", self.stage, src.topic, src.partition, src.offset,
                    reason[:300])

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for the dead letters sent so far (before the caller commits past their records)."""
        left = self._p.flush(timeout_s)
        if left:
            self.skipped += left
            log.error("%s: %d dead letters undelivered after %.0f s; skipped", self.stage, left, timeout_s)


def describe(items: Sequence[tuple[Any, Exception]]) -> str:
    return ", ".join(f"{type(e).__name__}: {str(e)[:120]}" for _, e in items[:3])

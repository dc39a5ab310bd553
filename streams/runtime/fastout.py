"""A fast, batch-flushed output path for the decision agent and the market stage (Faust's own send costs
hundreds of µs per message; confluent-kafka a few).

`FastOutput` produces with confluent-kafka (C, a few µs per message) and is flushed at the end of each
batch, before the batch's offsets are acknowledged (`flush()` in the event loop, `flush_blocking()` in a
thread): at-least-once is kept (a crash before the flush redelivers the batch; everything it produces
carries deterministic ids or is an idempotent state write).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from confluent_kafka import KafkaException

from schemas.kafka import client_config

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """What one caller produced since its last flush: a delivery failure is charged to the batch that
    produced the message, so one agent's flush never clears (or raises for) another agent's failure."""

    errors: int = 0
    report: Any = field(default=None, repr=False, compare=False)   # its delivery callback, made once (FastOutput)


class FastOutput:
    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import Producer

        self.default = Batch()
        self._pool: ThreadPoolExecutor | None = None   # for `flush()`, made when first needed
        self._p = Producer({
            **client_config(bootstrap), "enable.idempotence": True, "acks": "all", "linger.ms": 2,
            "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000, "log_level": 3,
            # a delivery report only for a failure: a success has nothing to count, and its callback is a Python
            # call per message during the flush (~1 us of a message's ~8, produce and flush included)
            "delivery.report.only.error": True,
        })

    @staticmethod
    def _on_delivery(batch: Batch, err: Any, msg: Any) -> None:
        if err is not None:
            batch.errors += 1
            value = msg.value() if hasattr(msg, "value") else None   # a dead letter names its source offset
            log.warning("output message to %s failed: %s (%s)", msg.topic(), err, (value or b"")[:300])

    def pending(self) -> int:
        return len(self._p)

    def produce(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
                batch: Batch | None = None) -> None:
        b = batch or self.default
        if b.report is None:
            b.report = partial(self._on_delivery, b)
        try:
            produce_waiting(self._p, topic, key, value, partition, on_delivery=b.report)
        except KafkaException as exc:  # refused before sending (e.g. too large): a failed delivery
            b.errors += 1
            log.warning("output message to %s refused: %s (%s)", topic, exc, (value or b"")[:300])

    async def flush(self, batch: Batch | None = None) -> None:
        """Wait (without blocking the event loop) until everything produced is acknowledged; raise if a
        message of `batch` failed. The wait is librdkafka's own, in a thread (it holds no GIL while it
        waits, and returns on the last acknowledgement): polling from the event loop every millisecond
        instead added several ms per flush, more while other threads of the worker were busy."""
        if len(self._p) > 0:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="fastout-flush")
            loop = asyncio.get_running_loop()
            t0 = last = time.monotonic()
            # (a short wait per call: a stopping worker's thread is never held long by a broker that is down)
            while await loop.run_in_executor(self._pool, self._p.flush, 1.0) > 0:
                if time.monotonic() - last > 10:
                    last = time.monotonic()
                    log.warning("output flush waiting %.0f s for %d messages", last - t0, len(self._p))
        self._raise_failed(batch)

    def flush_blocking(self, batch: Batch | None = None, give_up_s: Callable[[], float | None] = lambda: None) -> None:
        """`flush()` for a thread: block until everything produced is acknowledged (raise if a message of
        `batch` failed), or raise once `give_up_s()` returns a number of seconds that have passed."""
        t0 = time.monotonic()
        while self._p.flush(1.0) > 0:
            waited, limit = time.monotonic() - t0, give_up_s()
            if limit is not None and waited > limit:
                raise RuntimeError(f"{len(self._p)} output messages undelivered after {waited:.0f} s")
            log.warning("output flush waiting %.0f s for %d messages", waited, len(self._p))
        self._raise_failed(batch)

    def _raise_failed(self, batch: Batch | None) -> None:
        b = batch or self.default
        if b.errors:
            n, b.errors = b.errors, 0
            raise DeliveryFailed(n)


def produce_waiting(producer: Any, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
                    **kw: Any) -> None:
    """`producer.produce(...)`, waiting for room while librdkafka's queue is full (a KafkaException, a record
    refused before sending, is the caller's)."""
    if partition is not None:
        kw["partition"] = partition
    while True:
        try:
            producer.produce(topic, key=key, value=value, **kw)
            return
        except BufferError:
            producer.poll(0.01)


class DeliveryFailed(RuntimeError):
    def __init__(self, n: int) -> None:
        super().__init__(f"{n} output messages failed delivery")
        self.n = n


def dlq_failed(exc: Exception) -> int:
    """How many messages a flush's failure reports."""
    return exc.n if isinstance(exc, DeliveryFailed) else 1

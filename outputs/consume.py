"""A small Kafka consume loop shared by the alert rules, the webhook dispatcher and the executors:
poll a batch, decode, hand it over, then commit (at-least-once; handlers are idempotent on event id)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence

from schemas.events import Event, decode_event

log = logging.getLogger(__name__)


def consume_loop(bootstrap: str, topics: Sequence[str], group_id: str, handle: Callable[[list[Event]], None],
                 stop: threading.Event, batch_size: int = 500, poll_s: float = 0.5,
                 idle_exit_s: float | None = None, from_beginning: bool = True) -> int:
    """Consume until `stop` (or idle for `idle_exit_s`); returns the number of events handled.

    A handler exception is logged and the batch retried after a pause (not committed), so nothing is lost.
    """
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest" if from_beginning else "latest",
                  "session.timeout.ms": 10000, "max.poll.interval.ms": 900_000})
    c.subscribe(list(topics))
    n = 0
    last = time.monotonic()
    try:
        while not stop.is_set():
            msgs = c.consume(num_messages=batch_size, timeout=poll_s)
            if not msgs:
                if idle_exit_s is not None and time.monotonic() - last > idle_exit_s:
                    break
                continue
            last = time.monotonic()
            events: list[Event] = []
            good = 0
            for m in msgs:
                if m.error():
                    log.debug("consume error: %s", m.error())
                    continue
                good += 1
                # undecodable input is skipped: the streaming core dead-letters it with the reason
                with contextlib.suppress(ValueError):
                    events.append(decode_event(m.value() or b""))
            while not stop.is_set():
                try:
                    handle(events)
                    break
                except Exception as exc:
                    log.warning("handler failed (%s), retrying the batch", type(exc).__name__)
                    stop.wait(1.0)
            else:
                break  # stopped before the batch was handled: do not commit
            if good:
                try:
                    c.commit(asynchronous=False)
                except Exception as exc:  # e.g. a rebalance took the partitions: they are redelivered
                    log.warning("commit failed: %s", exc)
            n += len(events)
    finally:
        c.close()
    return n

"""A small Kafka consume loop shared by the alert rules, the webhook dispatcher and the executors:
poll a batch, decode, hand it over, then commit (at-least-once; handlers are idempotent on event id).

A batch whose handler fails is retried while `healthy()` says the store the handler writes to is down
(an outage skips nothing); while it is up, the batch is split down to the events the handler fails on
alone (`outputs.poison`), which go to the DLQ with the reason, and the rest is handled."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence

from outputs.poison import DeadLetters, Outage, Source, describe, isolate, source_of
from schemas.events import Event, decode_event
from schemas.kafka import kafka_security_config

log = logging.getLogger(__name__)


def consume_loop(bootstrap: str, topics: Sequence[str], group_id: str, handle: Callable[[list[Event]], None],
                 stop: threading.Event, batch_size: int = 500, poll_s: float = 0.5,
                 idle_exit_s: float | None = None, from_beginning: bool = True,
                 healthy: Callable[[], bool] = lambda: True) -> int:
    """Consume until `stop` (or idle for `idle_exit_s`); returns the number of events handled.

    A handler exception while `healthy()` is False is logged and the batch retried after a pause (not
    committed), so nothing is lost; while it is True, the events the handler fails on alone are
    dead-lettered and the rest handled (see the module docstring).
    """
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest" if from_beginning else "latest",
                  "session.timeout.ms": 10000, "max.poll.interval.ms": 900_000, **kafka_security_config()})
    c.subscribe(list(topics))
    dead_letters: DeadLetters | None = None
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
            sources: list[Source] = []
            good = 0
            for m in msgs:
                if m.error():
                    log.debug("consume error: %s", m.error())
                    continue
                good += 1
                # undecodable input is skipped: the streaming core dead-letters it with the reason
                with contextlib.suppress(ValueError):
                    events.append(decode_event(m.value() or b""))
                    sources.append(source_of(m))
            def handle_some(ii: Sequence[int], evs: list[Event] = events) -> None:
                handle([evs[i] for i in ii])

            while not stop.is_set():
                try:
                    poison = isolate(range(len(events)), handle_some, healthy)
                except Outage as exc:
                    log.warning("handler failed (%s), retrying the batch", exc)
                    stop.wait(1.0)
                    continue
                if poison:
                    log.error("%s: the handler failed on %d of %d events (%s): dead-lettered", group_id,
                              len(poison), len(events), describe(poison))
                    if dead_letters is None:
                        dead_letters = DeadLetters(bootstrap, f"outputs.{group_id}")
                    for i, err in poison:
                        dead_letters.send(sources[i], f"handler failed: {type(err).__name__}: {err}")
                    dead_letters.flush()
                break
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

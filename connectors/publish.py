"""Publishing events to Kafka (confluent-kafka, idempotent producer, keyed by offer/workload/event id)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from schemas.events import (
    MAX_EVENT_BYTES,
    CapacityObserved,
    Event,
    InterruptionObserved,
    PriceForecasted,
    PriceObserved,
    QuotasSet,
    WorkloadCancelled,
    WorkloadRequested,
)
from schemas.kafka import client_config
from schemas.topics import TOPICS

log = logging.getLogger(__name__)

_TOPIC_OF: dict[type[Event], str] = {ev: spec.name for spec in TOPICS.values() for ev in spec.events}


def topic_for(event: Event) -> str:
    return _TOPIC_OF[type(event)]


def key_for(event: Event) -> str:
    """The partitioning key: offer key for market events, workload id for workloads, "quotas" for a quota
    set, else the event id."""
    if isinstance(event, PriceObserved | CapacityObserved | InterruptionObserved | PriceForecasted):
        return event.offer.key
    if isinstance(event, WorkloadRequested):
        return event.spec.workload_id
    if isinstance(event, WorkloadCancelled):
        return event.workload_id
    if isinstance(event, QuotasSet):   # one key: the compacted topic keeps the latest set only
        return "quotas"
    return event.event_id


@dataclass
class KafkaPublisher:
    """Thin wrapper over confluent_kafka.Producer. `publish()` is non-blocking; `flush()` waits.

    Delivery failures are counted in `failed` (and logged), never raised from the callback.
    """

    bootstrap: str
    extra: dict[str, Any] = field(default_factory=dict)
    delivered: int = 0
    failed: int = 0
    oversized: int = 0   # events refused by `publish` for their size

    def __post_init__(self) -> None:
        from confluent_kafka import Producer

        conf = {
            **client_config(self.bootstrap),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
            "log_level": 3,  # librdkafka warnings such as "coordinator load in progress" are retried anyway
        }
        conf.update(self.extra)
        self._producer = Producer(conf)

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed += 1
            log.error("delivery to %s failed: %s", msg.topic(), err)
        else:
            self.delivered += 1

    def publish_raw(self, topic: str, key: str | bytes | None, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)

    def publish(self, event: Event, topic: str | None = None) -> None:
        """Publish one event; one over `MAX_EVENT_BYTES` serialised (which every consumer would dead-letter)
        is refused here instead: counted in `oversized`, logged, not sent."""
        raw = event.model_dump_json().encode()
        if len(raw) > MAX_EVENT_BYTES:
            self.oversized += 1
            log.error("not publishing %s %s: %d bytes exceeds the %d-byte event limit", type(event).__name__,
                      event.event_id, len(raw), MAX_EVENT_BYTES)
            return
        self.publish_raw(topic or topic_for(event), key_for(event), raw)

    def publish_all(self, events: Iterable[Event]) -> int:
        n = 0
        for e in events:
            self.publish(e)
            n += 1
        return n

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries; returns how many are still pending."""
        return int(self._producer.flush(timeout_s))

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush and release the client (no reconnect attempts after its cluster goes away)."""
        self._producer.flush(timeout_s)
        self._producer.close()

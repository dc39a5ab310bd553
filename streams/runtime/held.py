"""The held offers followed from the plans table's changelog (a confluent-kafka consumer): the market stage's
view of which offers are under a placement. The set logic is streams.core.held.HeldOffers; this adds reading
the topic to its end (`follow`) and picking up what follows (`poll`)."""

from __future__ import annotations

import logging
from typing import Any

from pydantic_core import from_json

from streams.core.held import HeldOffers

log = logging.getLogger(__name__)


class FollowedHeldOffers(HeldOffers):
    """`HeldOffers` kept from a changelog topic: `follow`, then `poll` before each batch, `close` at the end."""

    def __init__(self) -> None:
        super().__init__()
        self._consumer: Any = None

    def follow(self, bootstrap: str, topic: str, timeout_s: float = 30.0) -> int:
        """Read `topic` (every partition) from its start to its end; `poll()` then picks up what follows.
        Returns the records read. The topic must exist (the market stage creates it when missing)."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.close()
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-follower", "enable.auto.commit": False,
                      "log_level": 3, "topic.metadata.refresh.interval.ms": 10_000})
        meta = c.list_topics(topic, timeout=timeout_s).topics[topic]
        if meta.error is not None:
            c.close()
            raise RuntimeError(f"cannot follow {topic}: {meta.error}")
        parts = sorted(meta.partitions)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self._consumer = c
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1] for p in parts}
        n = 0
        todo = {p for p, end in ends.items() if end > 0}
        while todo:
            n += self.poll(0.5)
            todo -= {tp.partition for tp in c.position([TopicPartition(topic, p) for p in todo])
                     if tp.offset >= ends[tp.partition]}
        return n

    def poll(self, timeout_s: float = 0.0) -> int:
        """Apply the records that arrived since the last call; returns how many."""
        if self._consumer is None:
            return 0
        n = 0
        for m in self._consumer.consume(10_000, timeout=timeout_s):
            if m.error() is not None or m.key() is None:
                continue
            try:
                value = m.value()
                self.apply(from_json(m.key()), None if value is None else from_json(value))
                n += 1
            except (ValueError, KeyError, TypeError) as exc:  # not a plan record: never fatal
                log.warning("held offers: skipped an unreadable plan record at offset %s: %s", m.offset(), exc)
        return n

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

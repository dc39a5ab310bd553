"""Kafka -> ClickHouse sink: batched, idempotent on event id, at-least-once.

Loop: poll a batch, decode, drop ids already in ClickHouse (redelivery after a crash or rebalance),
insert per table, then commit the Kafka offsets. A crash between insert and commit redelivers the
batch; the id filter (and the ReplacingMergeTree key) make that a no-op. Undecodable messages are
counted and skipped here: the streaming core dead-letters them with the reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from outputs.clickhouse import DEFAULT_DB
from outputs.rows import COLUMNS, ID_TABLE, rows_for
from schemas.events import Event, decode_event
from schemas.topics import CAPACITY, DECISIONS, DLQ, INTERRUPTIONS, PRICES

log = logging.getLogger(__name__)

SINK_TOPICS = (PRICES.name, CAPACITY.name, INTERRUPTIONS.name, DECISIONS.name, DLQ.name)


@dataclass
class SinkStats:
    consumed: int = 0
    written: int = 0
    duplicates: int = 0
    undecodable: int = 0
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class ClickHouseWriter:
    """Writes events to ClickHouse, skipping event ids already present."""

    def __init__(self, client: Any, db: str = DEFAULT_DB) -> None:
        self.client = client
        self.db = db
        self.stats = SinkStats()

    def _existing(self, table: str, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        res = self.client.query(f"SELECT event_id FROM {self.db}.{table} WHERE event_id IN {{ids:Array(String)}}",
                                parameters={"ids": list(ids)})
        return {r[0] for r in res.result_rows}

    def write(self, events: Iterable[Event]) -> int:
        by_table: dict[str, list[Event]] = defaultdict(list)
        seen: set[str] = set()
        for e in events:
            t = ID_TABLE.get(type(e))
            if t is None or e.event_id in seen:
                if t is not None:
                    self.stats.duplicates += 1
                continue
            seen.add(e.event_id)
            by_table[t].append(e)
        rows: dict[str, list[list[Any]]] = defaultdict(list)
        written = 0
        for table, evs in by_table.items():
            existing = self._existing(table, [e.event_id for e in evs])
            self.stats.duplicates += len(existing)
            for e in evs:
                if e.event_id in existing:
                    continue
                written += 1
                for tbl, row in rows_for(e):
                    rows[tbl].append(row)
        # child rows (decision_assignments) before parents (decisions), so a crash in between
        # leaves the parent missing and the redelivery writes both (children dedup by their key)
        for tbl in sorted(rows, key=lambda t: t != "decision_assignments"):
            self.client.insert(f"{self.db}.{tbl}", rows[tbl], column_names=COLUMNS[tbl])
            self.stats.rows[tbl] += len(rows[tbl])
        self.stats.written += written
        return written


def run_sink(bootstrap: str, writer: ClickHouseWriter, stop: threading.Event, group_id: str = "cloudarb-sink",
             topics: Sequence[str] = SINK_TOPICS, batch_size: int = 5000, poll_s: float = 0.5,
             idle_exit_s: float | None = None) -> SinkStats:
    """Consume until `stop` is set (or no message for `idle_exit_s`)."""
    from confluent_kafka import Consumer

    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group_id, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": 10000,
    })
    consumer.subscribe(list(topics))
    last_msg = time.monotonic()
    try:
        while not stop.is_set():
            msgs = consumer.consume(num_messages=batch_size, timeout=poll_s)
            if not msgs:
                if idle_exit_s is not None and time.monotonic() - last_msg > idle_exit_s:
                    break
                continue
            last_msg = time.monotonic()
            events: list[Event] = []
            for m in msgs:
                if m.error():
                    log.warning("consume error: %s", m.error())
                    continue
                writer.stats.consumed += 1
                try:
                    events.append(decode_event(m.value()))
                except ValueError as exc:
                    writer.stats.undecodable += 1
                    log.debug("undecodable message on %s@%s: %s", m.topic(), m.offset(), exc)
            writer.write(events)
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return writer.stats

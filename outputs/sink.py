"""Kafka -> ClickHouse sink: batched, idempotent on event id, at-least-once.

Loop: poll a batch, decode, drop ids already in ClickHouse (redelivery after a crash or rebalance),
insert per table, then commit the Kafka offsets. A crash between insert and commit redelivers the
batch; the id filter (and the ReplacingMergeTree key) make that a no-op. Undecodable messages are
counted and skipped here: the streaming core dead-letters them with the reason.

ClickHouse down: the batch in hand is retried with capped exponential backoff until it is written
(or the sink is stopped, in which case nothing is committed and Kafka redelivers it). Kafka is the
buffer: the sink holds at most one batch (`batch_size` messages) in memory and consumes nothing more
until that batch is in, so memory stays bounded however long the outage lasts.

ClickHouse up but the insert fails: a record the table refuses (every event field is bounded to its
column, so this should not happen; if it does) is found by splitting the batch (`outputs.poison`) and
goes to the DLQ with the reason; the rest of the batch is written. A sink with a batch in hand and no
progress for `stall_s` reports itself stalled (`SinkStats.stalled`, on /readyz and /metrics).
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
from outputs.poison import DeadLetters, Outage, Source, describe, isolate, source_of
from outputs.rows import COLUMNS, ID_TABLE, rows_for
from schemas.events import Event, decode_event
from schemas.kafka import kafka_security_config
from schemas.topics import (
    ALERTS,
    CAPACITY,
    DECISIONS,
    DLQ,
    FORECASTS,
    INTERRUPTIONS,
    MODELS,
    PRICES,
    QUOTAS,
    WORKLOADS,
)

log = logging.getLogger(__name__)

SINK_TOPICS = (PRICES.name, CAPACITY.name, INTERRUPTIONS.name, DECISIONS.name, DLQ.name, FORECASTS.name,
               ALERTS.name, WORKLOADS.name, QUOTAS.name, MODELS.name)


@dataclass
class SinkStats:
    consumed: int = 0
    written: int = 0
    duplicates: int = 0
    undecodable: int = 0
    write_failures: int = 0
    dead_lettered: int = 0   # records ClickHouse refused, sent to the DLQ (or skipped: see outputs.poison)
    insert_seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # monotonic time of the last batch written, and since when a batch has been waiting (None: none)
    progress_t: float = field(default_factory=time.monotonic)
    waiting_since: float | None = None

    def stalled(self, stall_s: float = 60.0, now: float | None = None) -> bool:
        """A batch is in hand and nothing was written for `stall_s` (an outage, or a stuck insert)."""
        now = time.monotonic() if now is None else now
        return self.waiting_since is not None and now - max(self.progress_t, self.waiting_since) > stall_s


class ClickHouseWriter:
    """Writes events to ClickHouse, skipping event ids already present."""

    def __init__(self, client: Any, db: str = DEFAULT_DB) -> None:
        self.client = client
        self.db = db
        self.stats = SinkStats()

    def healthy(self) -> bool:
        """ClickHouse answers (so a failed insert is the data's fault, not an outage)."""
        try:
            self.client.query("SELECT 1")
            return True
        except Exception:
            return False

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
        t0 = time.perf_counter()
        for tbl in sorted(rows, key=lambda t: t != "decision_assignments"):
            self.client.insert(f"{self.db}.{tbl}", rows[tbl], column_names=COLUMNS[tbl])
            self.stats.rows[tbl] += len(rows[tbl])
        self.stats.insert_seconds += time.perf_counter() - t0
        self.stats.written += written
        return written


def write_with_retry(writer: ClickHouseWriter, events: Sequence[Event], stop: threading.Event,
                     initial_backoff_s: float = 0.2, max_backoff_s: float = 5.0,
                     sources: Sequence[Source] | None = None, dead_letters: DeadLetters | None = None) -> bool:
    """Write `events`, retrying with capped exponential backoff while ClickHouse is unreachable. While it
    is reachable, a failing batch is split down to the events it refuses, which go to `dead_letters` (with
    `sources[i]` the record of `events[i]`) and are skipped.

    Returns True once written, False if `stop` was set first (the caller must then not commit).
    Retrying the whole batch is safe: ids already written are skipped.
    """
    backoff = initial_backoff_s
    stats = writer.stats
    stats.waiting_since = time.monotonic()
    idx = list(range(len(events)))
    while True:
        try:
            poison = isolate(idx, lambda ii: writer.write([events[i] for i in ii]), writer.healthy)
        except Outage as exc:
            stats.write_failures += 1
            log.warning("ClickHouse write failed (%s); retrying in %.1fs", str(exc)[:200], backoff)
            if stop.wait(backoff):
                return False
            backoff = min(max_backoff_s, backoff * 2)
            continue
        if poison:
            stats.write_failures += 1
            stats.dead_lettered += len(poison)
            log.error("ClickHouse refused %d of %d events (%s): dead-lettered", len(poison), len(events),
                      describe(poison))
            for i, err in poison:
                if dead_letters is not None and sources is not None:
                    dead_letters.send(sources[i], f"ClickHouse insert failed: {type(err).__name__}: {err}")
            if dead_letters is not None:
                dead_letters.flush()
        stats.progress_t, stats.waiting_since = time.monotonic(), None
        return True


def run_sink(bootstrap: str, writer: ClickHouseWriter, stop: threading.Event, group_id: str = "cloudarb-sink",
             topics: Sequence[str] = SINK_TOPICS, batch_size: int = 5000, poll_s: float = 0.5,
             idle_exit_s: float | None = None) -> SinkStats:
    """Consume until `stop` is set (or no message for `idle_exit_s`)."""
    from confluent_kafka import Consumer

    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group_id, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": 10000,
        # a ClickHouse outage holds one batch while retrying; stay in the group for up to 15 min
        "max.poll.interval.ms": 900_000, **kafka_security_config(),
    })
    consumer.subscribe(list(topics))
    dead_letters = DeadLetters(bootstrap, "outputs.sink")
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
            sources: list[Source] = []
            for m in msgs:
                if m.error():
                    log.warning("consume error: %s", m.error())
                    continue
                writer.stats.consumed += 1
                try:
                    events.append(decode_event(m.value() or b""))
                    sources.append(source_of(m))
                except ValueError as exc:
                    writer.stats.undecodable += 1
                    log.debug("undecodable message on %s@%s: %s", m.topic(), m.offset(), exc)
            if not write_with_retry(writer, events, stop, sources=sources, dead_letters=dead_letters):
                break  # stopped mid-outage: do not commit, Kafka redelivers the batch
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return writer.stats

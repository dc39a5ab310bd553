"""The market stage (validate -> state -> forecast -> trigger) on a confluent-kafka consumer, in a thread.

It used to be a Faust agent. Faust's aiokafka consumer and per-event stream machinery cost more than the
stage's own work (in a replay, about half the worker's time, capping it near 2,200 events/s); librdkafka
fetches and decodes in C, outside the GIL. The logic is unchanged: `streams.core.track.track_batch`.

Delivery is at-least-once, as before:

1. consume a batch: up to `batch_max` messages, or what arrived within `debounce_s`;
2. `track_batch` -> produce the dead letters, forecasts and packed market changes; flush (all acked);
3. write the batch's state changes to the offer-state topic (streams.runtime.store); flush;
4. commit the batch's offsets (at most every `commit_interval_s`, and always when partitions are revoked
   or the stage stops: a commit per batch was a broker request every 5 ms).

A crash before (4) redelivers the batch: every output carries a deterministic id and state updates are
idempotent (an event not newer than the offer's state is ignored). Writing the state last means a
redelivered event is ignored only when its outputs were already acknowledged. A delivery failure puts
the batch's state back, rewinds the consumer to the batch's first offsets and retries after a pause;
nothing crashes the worker.

State is a `ChangelogStore` (streams.runtime.store), offer key -> state (see streams.core.state), of the
assigned partitions, backed by the compacted topic `<app_id>-offer-state.v1` (partitioned as the market
topics: an offer's state goes to its events' partition). When partitions are assigned, their state is read
back from that topic before any of their events is processed.

The offers under a placement (any move on one is material) come from the public plans topic
(`cloudarb.plans.v1`), which every worker's stage follows (streams.runtime.held): the decision stage runs in
one worker, the market partitions are spread over all of them. Offers a step newly holds get their moves
since the step began forwarded by the stage that owns them (streams.core.track.catch_up), with the batch.

Forecasts of offers without an event for an hour are refreshed (streams.core.track.refresh_forecasts) once
their partition's event time, less REFRESH_LAG_S, passes each whole hour: the partition's own progress (the
latest event of its topics, held back by any of them with messages unread), so a partition that lags (a
replay, a slow connector, one market topic behind the others) is not refreshed past events still to come.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from schemas.kafka import client_config
from schemas.topics import DLQ, FORECASTS, MODELS, PLANS
from streams.core import state, track
from streams.core.forecast import REFRESH_S, Forecaster
from streams.core.heap import IDLE_S, FrozenHeap
from streams.runtime.fastout import Batch, FastOutput
from streams.runtime.held import FollowedHeldOffers
from streams.runtime.store import ChangelogStore, ensure_compacted

log = logging.getLogger(__name__)

RETRY_PAUSE_S = (0.5, 1.0, 2.0, 5.0, 10.0)  # after a failed batch: the pause before the n-th retry
LAG_REFRESH_S = 5.0   # how often the stage refreshes `lag` (from librdkafka's cached watermarks: no request)


def _producer_ts(m: Any) -> float | None:
    """The message's timestamp in seconds (None when it has none)."""
    kind, ms = m.timestamp()
    return ms / 1000 if kind and ms >= 0 else None


def market_group(app_id: str) -> str:
    """The consumer group of the market stage (apart from Faust's group, which uses its own assignor)."""
    return f"{app_id}-market"


def offer_state_topic(app_id: str) -> str:
    """The market stage's state topic (compacted; streams.runtime.store encoding version 1)."""
    return f"{app_id}-offer-state.v1"


@dataclass
class MarketConfig:
    bootstrap: str
    app_id: str
    changes_topic: str
    debounce_s: float = 0.005
    batch_max: int = 5000
    price_threshold: float = state.PRICE_MOVE_THRESHOLD
    partitions: int = 6            # of the offer-state topic (as the market topics)
    commit_interval_s: float = 1.0  # offsets of processed batches are committed at most this often
    nice: int = 10                  # the stage thread's scheduling priority (0: the worker's own)
    plans_topic: str | None = PLANS.name  # followed for the held offers (streams.runtime.held); None: none held


class MarketStage:
    """The consume -> track_batch -> produce -> commit loop; `start()` runs it in a daemon thread.

    The offers under a current placement are followed from `cfg.plans_topic` (streams.runtime.held; none when it
    is None), read to its end before the first batch, then before each batch.
    `on_batch(result, n_messages)` is called after each committed batch (counters).
    """

    def __init__(self, cfg: MarketConfig, topics: Iterable[str], forecaster: Forecaster,
                 on_batch: Callable[[track.TrackOutput, int], None] = lambda r, n: None) -> None:
        self.cfg = cfg
        self.topics = list(topics)
        # offer key -> state, of the assigned partitions
        self.store = ChangelogStore(offer_state_topic(cfg.app_id), cfg.partitions)
        self.forecaster = forecaster
        self.held = FollowedHeldOffers(cfg.app_id)
        self._newly_held: dict[str, float] = {}   # offers to catch up on (streams.core.track.catch_up)
        # forecast refresh (streams.core.track.refresh_forecasts): per assigned topic partition, the latest
        # event time seen; per partition number, when it is next due; per offer, the engine view last sent
        self._partition_t: dict[tuple[str, int], float] = {}
        self._next_refresh: dict[int, float] = {}
        self._sent: dict[str, state.State] = {}
        self.on_batch = on_batch
        self.batches = 0
        self.failures = 0
        self.dlq_skipped = 0   # dead letters the DLQ refused (logged with their source offsets)
        # (topic, partition) -> messages behind the high watermark, of the assigned partitions; replaced
        # whole every LAG_REFRESH_S (read by streams.runtime.metrics at scrape time)
        self.lag: dict[tuple[str, int], int] = {}
        self._lag_t = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None
        self._out: Any = None  # a streams.runtime.fastout.FastOutput, made in the stage's thread
        self._batch = Batch()
        self._to_commit: dict[tuple[str, int], int] = {}  # processed, not yet committed: next offsets
        self._committed_t = time.monotonic()
        self._heap = FrozenHeap(growth_check_s=120.0)   # the whole worker's heap: see streams.core.heap

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="market-stage", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the batch in hand (its offsets committed), leave the group."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        if self.cfg.nice:
            # Linux schedules threads: this lowers the stage's thread only. Under CPU contention the decision
            # stage (the worker's event loop, the decider process) then goes first: a decision waits for its
            # solve, while the market stage's backlog waits in Kafka
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.cfg.nice)
            except OSError as exc:
                log.warning("market stage: cannot lower its priority (%s)", exc)
        for attempt in itertools.count():  # the broker may be down at start: retry, never give up
            if self._stop.is_set():
                return
            try:
                self.ensure_topics()
                if self.cfg.plans_topic:
                    n = self.held.follow(self.cfg.bootstrap, self.cfg.plans_topic, PLANS.partitions)
                    log.info("market stage: %d offers held by the plans (%d plan records read)", len(self.held), n)
                break
            except Exception:
                pause = RETRY_PAUSE_S[min(attempt, len(RETRY_PAUSE_S) - 1)]
                log.exception("market stage: cannot create its topics; retrying in %.1f s", pause)
                self._stop.wait(pause)
        self._loop()

    def _loop(self) -> None:
        from confluent_kafka import Consumer

        self._out = FastOutput(self.cfg.bootstrap)
        self._consumer = Consumer({
            **client_config(self.cfg.bootstrap), "group.id": market_group(self.cfg.app_id),
            "enable.auto.commit": False, "auto.offset.reset": "earliest", "log_level": 3,
            # range: a member gets the same partition numbers of every market topic, so an offer's events
            # (keyed by offer) and its state partition stay with one worker
            "partition.assignment.strategy": "range",
            # bounded prefetch (librdkafka's defaults hold up to 64 MB of messages per consumer)
            "fetch.max.bytes": 8_000_000, "queued.max.messages.kbytes": 16_384,
            "session.timeout.ms": 10_000, "heartbeat.interval.ms": 1_000,
        })
        self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        log.info("market stage consuming %s as group %s", self.topics, market_group(self.cfg.app_id))
        retry = 0
        last_msg_t = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    # consume() also runs the assignment callbacks (the state read-back), which may fail
                    msgs = self._consumer.consume(self.cfg.batch_max, timeout=self.cfg.debounce_s)
                    self.held.poll()
                    for k, t in self.held.newly_held().items():
                        self._newly_held[k] = min(t, self._newly_held.get(k, t))
                    self._process([m for m in msgs if not self._is_error(m)])
                    # the states a batch leaves are long-lived: out of the collector's way (streams.core.heap)
                    if msgs:
                        self._heap.worked()
                        last_msg_t = time.monotonic()
                    elif time.monotonic() - last_msg_t > IDLE_S:
                        self._heap.idle()
                        last_msg_t = time.monotonic()
                    if time.monotonic() - self._committed_t >= self.cfg.commit_interval_s:
                        self._commit(asynchronous=True)
                    if time.monotonic() - self._lag_t >= LAG_REFRESH_S:
                        self._refresh_lag()
                    retry = 0
                except Exception:
                    self.failures += 1
                    pause = RETRY_PAUSE_S[min(retry, len(RETRY_PAUSE_S) - 1)]
                    retry += 1
                    log.exception("market batch failed; rewound, retrying in %.1f s", pause)
                    self._stop.wait(pause)
        finally:
            self._commit(asynchronous=False)
            self._consumer.close()  # leaves the group
            self.held.close()
            try:
                self._out.flush_blocking(give_up_s=lambda: 10.0)
            except RuntimeError as exc:  # redelivered to the next owner of the partitions
                log.warning("market stage stopped with undelivered outputs: %s", exc)
            log.info("market stage stopped after %d batches (%d failed and retried)", self.batches, self.failures)

    def _refresh_lag(self) -> None:
        """`lag` per assigned partition: the high watermark librdkafka cached from its last fetch response
        minus the consumer's position (its committed offset while none was consumed from it: one request;
        a partition without either is left out)."""
        self._lag_t = time.monotonic()
        lag: dict[tuple[str, int], int] = {}
        try:
            assigned = self._consumer.assignment()
            tps = self._consumer.position(assigned) if assigned else []
            unread = [tp for tp in tps if tp.offset < 0]   # nothing consumed from it yet: its committed offset
            if unread:
                tps = [tp for tp in tps if tp.offset >= 0] + self._consumer.committed(unread, timeout=2.0)
            for tp in tps:
                _, high = self._consumer.get_watermark_offsets(tp, cached=True)
                if high is not None and high >= 0 and tp.offset >= 0:
                    lag[(tp.topic, tp.partition)] = max(0, high - tp.offset)
        except Exception as exc:   # metrics only: never fail the loop
            log.debug("market stage: lag refresh failed: %s", exc)
            return
        self.lag = lag

    def ensure_topics(self) -> None:
        """Create the offer-state and plans topics (compacted) and the market-changes topic, when missing."""
        compacted = {self.store.topic: self.cfg.partitions}
        if self.cfg.plans_topic:
            compacted[self.cfg.plans_topic] = PLANS.partitions
        ensure_compacted(self.cfg.bootstrap, compacted, {self.cfg.changes_topic: 1})

    @staticmethod
    def _is_error(m: Any) -> bool:
        if m.error() is None:
            return False
        log.warning("consumer error: %s", m.error())
        return True

    # --- partitions ---------------------------------------------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        """Read the assigned partitions' state back before any of their events is processed (retried until
        it succeeds: processing on a partial state would diverge from a run without the restart)."""
        mine = {tp.partition for tp in partitions}
        t0 = time.monotonic()
        for attempt in itertools.count():
            try:
                n = self.store.recover(self.cfg.bootstrap, sorted(mine), self._stop.is_set)
                break
            except Exception:
                if self._stop.is_set():
                    raise
                pause = RETRY_PAUSE_S[min(attempt, len(RETRY_PAUSE_S) - 1)]
                log.exception("market stage: reading back the offer states failed; retrying in %.1f s", pause)
                self._stop.wait(pause)
        log.info("market stage assigned %d partitions; %d offer states recovered in %.2f s", len(partitions), n,
                 time.monotonic() - t0)
        # offers of these partitions that may have become held while no stage owned them: catch them up
        for k, t in self.held.since().items():
            if k in self.store:
                self._newly_held[k] = min(t, self._newly_held.get(k, t))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        # batches are processed whole inside the loop, so nothing is in flight here: commit what is done.
        # Asynchronously: a rebalance often comes with a coordinator that is moving or restarting, and a
        # synchronous commit can then block the consumer indefinitely (confluent-kafka-python#1801); a
        # commit that does not land redelivers batches whose outputs and state writes are idempotent.
        self._commit(asynchronous=True)
        if self._stop.is_set():
            return  # leaving the group on stop: the store keeps its last state (for a look after stop)
        self.store.clear()   # (eager assignment: what stays assigned is read back on the next assignment)
        self._partition_t.clear()
        self._next_refresh.clear()

    # --- one batch ----------------------------------------------------------------------------------

    def _process(self, msgs: list[Any]) -> None:
        """One batch, all or nothing: on any failure the batch's state is put back and the consumer rewound
        to the batch's first offsets (so the batch is redone from scratch), then the error is raised."""
        from confluent_kafka import TopicPartition

        if not msgs and not self._newly_held:
            return
        first: dict[tuple[str, int], int] = {}
        last: dict[tuple[str, int], int] = {}
        batch = []
        make, cls = tuple.__new__, track.Msg   # (a NamedTuple's own __new__ is a Python function: slower)
        for m in msgs:
            msg = make(cls, (m.value(), m.topic(), m.partition(), m.offset(), _producer_ts(m)))
            batch.append(msg)
            tp = (msg.topic, msg.partition)
            if tp not in first:
                first[tp] = msg.offset
            last[tp] = msg.offset
        try:
            res = track.track_isolated(batch, self.store.get, self.held, self.forecaster, self.cfg.price_threshold)
            if self._newly_held:
                track.catch_up(self._newly_held, self.store.get, self.store.partition_of, self.forecaster, res)
            refreshed = self._refresh(res)
            for key, (new, p) in res.updated.items():
                self.store.put(key, new, p)
            self._deliver(res)
        except Exception:
            self.store.rollback()
            for (topic, p), off in first.items():
                self._consumer.seek(TopicPartition(topic, p, off))
            raise
        self._newly_held = {}
        self._next_refresh.update(refreshed)
        self._sent.update(res.views)
        self._to_commit.update((tp, off + 1) for tp, off in last.items())
        self.batches += 1
        self.on_batch(res, len(msgs))

    def _refresh(self, res: track.TrackOutput) -> dict[int, float]:
        """Refresh the forecasts of the partitions whose event time (less REFRESH_LAG_S, for events out of
        order) passed their next whole hour; returns when each is next due."""
        for tp, t in res.partition_t.items():
            self._partition_t[tp] = max(t, self._partition_t.get(tp, t))
        due = {p: wm for p, wm in self._watermarks().items() if wm >= self._next_refresh.get(p, -math.inf)}
        if not due:
            return {}
        track.refresh_forecasts(self.forecaster, due, self.store.get, self.store.partition_of, self._sent, res,
                                self.cfg.price_threshold)
        return {p: (math.floor(wm / REFRESH_S) + 1) * REFRESH_S for p, wm in due.items()}

    def _watermarks(self) -> dict[int, float]:
        """Per partition number (an offer's events come on that partition of every market topic): the
        latest event time seen on any of its topics, but no later than that of a topic partition with
        messages still unread (`lag`), less REFRESH_LAG_S. None for a partition with a topic behind whose
        event time is unknown yet."""
        by_p: dict[int, dict[str, float]] = {}
        for (topic, p), t in self._partition_t.items():
            by_p.setdefault(p, {})[topic] = t
        out: dict[int, float] = {}
        for p, seen in by_p.items():
            behind = [topic for topic in self.topics if self.lag.get((topic, p), 0) > 0]
            if any(topic not in seen for topic in behind):
                continue
            out[p] = min([max(seen.values()), *(seen[topic] for topic in behind)]) - track.REFRESH_LAG_S
        return out

    def _commit(self, asynchronous: bool) -> None:
        """Commit the offsets after the processed batches (a failed commit is logged: those batches are
        redelivered, and their outputs and state writes are idempotent)."""
        from confluent_kafka import TopicPartition

        self._committed_t = time.monotonic()
        if not self._to_commit:
            return
        offsets = [TopicPartition(t, p, off) for (t, p), off in self._to_commit.items()]
        self._to_commit = {}
        try:
            self._consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except Exception as exc:  # e.g. the group rebalanced meanwhile
            log.warning("market stage: offset commit failed (%s); those batches will be redelivered", exc)

    def _deliver(self, res: track.TrackOutput) -> None:
        # dead letters are charged to a batch of their own: one the DLQ refuses is counted, logged with
        # its source offset and skipped (never a retry of the whole batch, which would fail the same way)
        dlq = Batch()
        for dl in res.dead_letters:
            self._out.produce(DLQ.name, dl.event_id.encode(), dl.model_dump_json().encode(), batch=dlq)
        for fkey, value in res.forecasts:
            self._produce(FORECASTS.name, fkey, value)
        for mkey, value in res.promotions:
            self._produce(MODELS.name, mkey, value)
        for value in track.pack_changes(res.changes):
            self._produce(self.cfg.changes_topic, b"m", value)
        self._flush()
        if dlq.errors:
            res.dead_letters_failed = dlq.errors
            self.dlq_skipped += dlq.errors
            log.error("market stage: %d dead letters not written (offsets in the lines above); skipped", dlq.errors)
        self.store.write(self._produce)   # the state, once the outputs it stands for are acknowledged
        self._flush()

    def _produce(self, topic: str, key: bytes, value: bytes | None, partition: int | None = None) -> None:
        self._out.produce(topic, key, value, partition, batch=self._batch)

    def _flush(self) -> None:
        # waits for the broker for as long as it takes (a broker restart), unless the stage is stopping
        self._out.flush_blocking(self._batch, lambda: 30.0 if self._stop.is_set() else None)

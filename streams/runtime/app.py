"""The worker: the market stage (streams.runtime.market, a confluent-kafka consumer thread) and the Faust app's
decision stage, a thin agent over streams.core.decide.

Topology (topics from schemas.topics; `<app_id>-...` topics are internal):

  prices.v1 ┐                          <app_id>-offer-state.v1 (per-offer state, 6 partitions)
  capacity.v1 ├─ market stage ──────────┤   (group <app_id>-market; follows plans.v1 for the held offers)
  interruptions.v1 ┘   │  invalid ─► dlq.v1; forecasts ─► forecasts.v1
                       └ material change ─► <app_id>-market-changes (1 partition)
                                                   │
  workloads.v1, quotas.v1 (1 partition each) ─────┴─ decide_allocations ─► decisions.v1 + plans.v1 (1 txn)
        (Faust agent, group <app_id>)   state: <app_id>-decision-{market,workloads,quotas}.v1

Faust hosts one agent and no table: it gives the decision stage its consumer group (one worker holds the
one-partition inputs; another takes over when it leaves) and commits past what the agent took. Every piece
of state is a streams.runtime.store.ChangelogStore on a compacted topic of ours, read back when the stage
(re)starts and written only after the outputs it stands for are acknowledged.

`decide_allocations` is the single writer of plans: it coalesces changes over `decide_debounce_s`, and a
`streams.core.decider.Decider` re-solves only the affected workloads through the injected engine, in a child
process (streams.runtime.remote) so the market stage keeps consuming during a solve; changes that arrive
meanwhile are coalesced into the next step. A step's decisions, the state they stand for and its plans
(`PlanAdopted` on plans.v1) are written in one Kafka transaction (streams.runtime.txout), so they land
together or not at all: a crash never loses a decision (its input is redelivered, and a decision made again
has the same deterministic id and is dropped downstream), and a worker that lost the stage without noticing
(a zombie) is fenced: its writes are refused once the new owner has started.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import faust
import mode

from schemas.events import (
    PlanAdopted,
    QuotasSet,
    WorkloadCancelled,
    WorkloadRequested,
)
from schemas.kafka import kafka_security_config
from schemas.market import AllocationEngine
from schemas.topics import CAPACITY, DECISIONS, DLQ, INTERRUPTIONS, PLANS, PRICES, QUOTAS, WORKLOADS
from streams.core import state, track
from streams.core.decider import DecideOutput, UserEvent
from streams.core.forecast import Forecaster
from streams.core.held import plan_adopted, plan_key
from streams.core.validate import Rejected, dead_letter, validate
from streams.runtime.fastout import Batch, FastOutput, dlq_failed
from streams.runtime.market import MarketConfig, MarketStage
from streams.runtime.metrics import SolveTimes
from streams.runtime.rebalance import App as RebalanceSafeApp
from streams.runtime.rebalance import FlowWatch
from streams.runtime.remote import CHILD_GONE, DeciderHandle, RemoteDecider, RemoteError
from streams.runtime.store import ChangelogStore, Produce, ensure_compacted, recover_all
from streams.runtime.txout import Fenced, PlainStepWriter, StepWriter, step_writer

log = logging.getLogger(__name__)

WORKLOAD_TYPES = ("WorkloadRequested", "WorkloadCancelled")
QUOTA_TYPES = ("QuotasSet",)
USER_TOPICS = {WORKLOADS.name: WORKLOAD_TYPES, QUOTAS.name: QUOTA_TYPES}  # validated, then given to the decider
DECIDE_STAGE = "streams.decide_allocations"
# the decider failed on the step's input (it raised; or its process died, also on the retry): isolate it
POISON = (RemoteError, *CHILD_GONE)
STEP_RETRY_PAUSE_S = (0.5, 1.0, 2.0, 5.0, 10.0)
MARKET_TOPICS = (PRICES.name, CAPACITY.name, INTERRUPTIONS.name)


@dataclass
class StreamsConfig:
    broker: str = "kafka://127.0.0.1:9092"
    app_id: str = "cloudarb"
    # batch window of the market stage. Its flush (the broker's ack, ~7 ms) lets the next batch gather
    # too; 20 ms windows added ~20 ms to every decision's latency
    debounce_s: float = 0.005
    # extra wait of the decision stage for more changes. Changes arrive packed (one message per market
    # batch) and keep arriving while a step runs, so a step's batch is already coalesced; a long window
    # only adds latency
    decide_debounce_s: float = 0.005
    batch_max: int = 2000         # of the decision stage
    market_batch_max: int = 5000  # of the market stage
    price_threshold: float = state.PRICE_MOVE_THRESHOLD
    broker_session_timeout_s: float = 10.0
    # the decision stage's writes: one Kafka transaction per step, fenced (streams.runtime.txout); False for a
    # Kafka-compatible service without transactions
    transactions: bool = True
    # Faust's data directory (Faust keeps no table here; it only makes empty folders): out of the working
    # directory
    datadir: str = field(default_factory=lambda: f"{tempfile.gettempdir()}/cloudarb-faust-{{conf.name}}")
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Counters:
    market_in: int = 0
    market_valid: int = 0
    dead_lettered: int = 0
    material: int = 0
    forecasts: int = 0
    decisions: int = 0
    solves: int = 0
    dlq_skipped: int = 0     # dead letters the DLQ refused (logged with their source offsets)
    step_failures: int = 0   # decision steps that failed (retried, or isolated down to a poison record)
    fenced: int = 0          # decision steps refused because another worker took the stage over (not written)
    # solve time of each decision step (served as cloudarb_worker_solve_seconds, see streams.runtime.metrics)
    solve_seconds: SolveTimes = field(default_factory=SolveTimes, repr=False)


@dataclass
class DecisionState:
    """The decision stage's state, each part a ChangelogStore: its view of the market (the last material
    change per offer), the workload specs and the quotas in force (internal topics of the app), and the
    plans (the public plans topic, one PlanAdopted per workload)."""

    app_id: str
    market: ChangelogStore
    workloads: ChangelogStore
    quotas: ChangelogStore
    plans: ChangelogStore   # keyed `<app_id>/<workload_id>`: every app's plans (streams.core.held.plan_key)

    @classmethod
    def of(cls, app_id: str) -> DecisionState:
        return cls(app_id, ChangelogStore(f"{app_id}-decision-market.v1"),
                   ChangelogStore(f"{app_id}-decision-workloads.v1"), ChangelogStore(f"{app_id}-decision-quotas.v1"),
                   ChangelogStore(PLANS.name, PLANS.partitions))

    def own_plans(self) -> dict[str, Any]:
        """This app's plans, by workload id. The plans topic is public: a record under this app's key that is
        not a PlanAdopted is logged and left out (the decider would fail on it at every start)."""
        prefix = plan_key(self.app_id, "")
        out = {}
        for k, v in self.plans.items():
            if not k.startswith(prefix):
                continue
            try:
                PlanAdopted.model_validate(v)
            except ValueError as exc:
                log.warning("plans topic: record %r is not a PlanAdopted, ignored: %s", k, str(exc)[:300])
                continue
            out[k[len(prefix):]] = v
        return out

    def stores(self) -> list[ChangelogStore]:
        return [self.market, self.workloads, self.quotas, self.plans]

    def rollback(self) -> None:
        for s in self.stores():
            s.rollback()

    def record(self, res: DecideOutput, step_started_t: float, adopted_t: float, produce: Produce) -> int:
        """Record a step: its state changes, then its plans as PlanAdopted records (`produce` sends them in
        the step's transaction, with its decisions; the caller commits it, or rolls back). Returns the
        records sent."""
        tables = {"market": self.market, "workloads": self.workloads, "quotas": self.quotas}
        for table, key, value in res.state_writes:
            tables[table].put(key, value)
        for _, wid, value in res.plan_writes:
            self.plans.put(plan_key(self.app_id, wid),
                           value and plan_adopted(self.app_id, wid, value, step_started_t, adopted_t))
        return sum(s.write(produce) for s in self.stores())


@dataclass
class StreamsWorker:
    """What `create_app` builds: the Faust app to run (`faust.Worker(worker.app)`) and the parts a caller
    may look at (metrics, tests)."""

    app: faust.App
    counters: Counters
    forecaster: Forecaster
    market_stage: MarketStage
    decider: DeciderHandle
    state: DecisionState
    agent: Any   # the decision agent (faust AgentT)
    steps: StepWriter | PlainStepWriter   # the decision stage's writer (cfg.transactions)


def faust_credentials(conf: dict[str, str]) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """The Faust (aiokafka) form of `schemas.kafka.kafka_security_config`, so that the decision stage connects
    as every other client does.

    >>> faust_credentials({}) is None
    True
    >>> faust_credentials({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
    ...                    "sasl.username": "u", "sasl.password": "p"}).mechanism.value
    'SCRAM-SHA-256'
    """
    proto = conf.get("security.protocol", "PLAINTEXT")
    if proto == "PLAINTEXT":
        return None
    ctx = None
    if proto in ("SSL", "SASL_SSL"):
        ctx = ssl.create_default_context(cafile=conf.get("ssl.ca.location"))
        if conf.get("ssl.certificate.location"):
            ctx.load_cert_chain(conf["ssl.certificate.location"], conf.get("ssl.key.location"),
                                conf.get("ssl.key.password"))
    if proto.startswith("SASL_"):
        return faust.SASLCredentials(username=conf.get("sasl.username"), password=conf.get("sasl.password"),
                                     mechanism=conf.get("sasl.mechanism", "PLAIN"), ssl_context=ctx)
    assert ctx is not None
    return faust.SSLCredentials(ctx)


def create_app(cfg: StreamsConfig, engine_factory: Callable[[], AllocationEngine]) -> StreamsWorker:
    app = RebalanceSafeApp(
        cfg.app_id, broker=cfg.broker, broker_credentials=faust_credentials(kafka_security_config()),
        store="memory://", datadir=cfg.datadir, web_enabled=False,
        topic_partitions=1, topic_replication_factor=1,
        broker_session_timeout=cfg.broker_session_timeout_s, broker_heartbeat_interval=1.0,
        consumer_auto_offset_reset="earliest", producer_acks=-1, stream_wait_empty=False,
        # batch produce requests: one request per message caps the worker at a few hundred events/s
        producer_linger=0.005, producer_max_batch_size=512 * 1024, producer_compression_type="lz4",
        **cfg.extra,
    )

    @app.task
    async def _quiet_logs() -> None:
        """Faust logs every send at DEBUG; formatting those records is a measurable share of CPU."""
        for name in ("faust", "aiokafka", "mode"):
            logging.getLogger(name).setLevel(max(logging.getLogger(name).getEffectiveLevel(), logging.INFO))

    counters = Counters()
    changes = app.topic(f"{cfg.app_id}-market-changes", key_serializer="raw", value_serializer="raw",
                        partitions=1, internal=True)
    forecaster = Forecaster()
    bootstrap = cfg.broker.removeprefix("kafka://")
    dstate = DecisionState.of(cfg.app_id)

    out_box: dict[str, FastOutput] = {}
    # the decision stage's writes: one transaction per step, fenced when another worker takes the stage over
    # (or, where the Kafka service has none, one acknowledged flush per step, not fenced)
    steps = step_writer(bootstrap, f"{cfg.app_id}-decide", cfg.transactions)
    if not cfg.transactions:
        log.warning("decision stage: writing without Kafka transactions (CLOUDARB_KAFKA_TRANSACTIONS=false): a "
                    "worker that loses the stage without noticing is not fenced")
    rebalances = [0]   # assignments seen (a fenced worker waits for the next one)

    def out() -> FastOutput:
        if "o" not in out_box:
            out_box["o"] = FastOutput(bootstrap)
        return out_box["o"]

    def recover_decision_state() -> int:
        ensure_compacted(bootstrap, {s.topic: s.partitions for s in dstate.stores()})
        return recover_all(bootstrap, dstate.stores())

    async def start_decider() -> RemoteDecider:
        """The decision stage, built from its state read back from its topics (when this worker first
        decides, after the inputs came back to it, and after a failed step)."""
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        # first fence the previous writer (its open step is aborted), then read back what it committed
        await loop.run_in_executor(None, steps.open)
        n = await loop.run_in_executor(None, recover_decision_state)
        plans = dstate.own_plans()
        log.info("decision stage: %d state records read back in %.2f s (%d offers, %d workloads, %d plans)", n,
                 time.monotonic() - t0, len(dstate.market), len(dstate.workloads), len(plans))
        snap = (dict(dstate.market.data), dict(dstate.workloads.data), plans, dict(dstate.quotas.data))
        return await loop.run_in_executor(None, lambda: RemoteDecider(engine_factory, *snap))

    decider = DeciderHandle(start_decider)

    def count_market(res: track.TrackOutput, n: int) -> None:
        counters.market_in += n
        counters.market_valid += res.valid
        counters.dead_lettered += len(res.dead_letters) - res.dead_letters_failed
        counters.dlq_skipped += res.dead_letters_failed
        counters.material += len(res.changes)
        counters.forecasts += len(res.forecasts)

    stage = MarketStage(
        MarketConfig(bootstrap, cfg.app_id, changes.get_topic_name(),
                     debounce_s=cfg.debounce_s, batch_max=cfg.market_batch_max, price_threshold=cfg.price_threshold,
                     partitions=PRICES.partitions,
                     commit_interval_s=float(cfg.extra.get("broker_commit_interval", 1.0)),
                     plans_topic=PLANS.name),
        MARKET_TOPICS, forecaster, on_batch=count_market)

    @app.task
    async def _start_market_stage() -> None:
        """The market stage (streams.runtime.market: its own consumer group and state) starts with the app."""
        stage.start()

    @app.service
    class _StopMarketStage(mode.Service):
        async def on_stop(self) -> None:
            await asyncio.get_running_loop().run_in_executor(None, stage.stop)

    # internal=True makes Faust create the changes topic (workloads.v1 and quotas.v1 already exist with 1
    # partition each)
    decide_in = app.topic(changes.get_topic_name(), WORKLOADS.name, QUOTAS.name, key_serializer="raw",
                          value_serializer="raw", partitions=1, internal=True)

    async def _release_decider_unless_deciding(sender: Any, assigned: Any = (), **kwargs: Any) -> None:
        """With several workers, the decision stage's one-partition inputs can move to another worker on a
        rebalance; the decider here (built from the state before) must not resume from a stale plan."""
        rebalances[0] += 1
        if not any(tp.topic == changes.get_topic_name() for tp in assigned or ()):
            decider.release()

    app.on_partitions_assigned.connect(cast(Any, _release_decider_unless_deciding))

    @app.agent(decide_in)
    async def decide_allocations(stream: faust.StreamT[bytes]) -> None:
        """Coalesce market and workload changes (over `decide_debounce_s` and the previous step); re-solve
        the affected workloads. Every record taken is decided or dead-lettered before the next batch is
        taken (Faust commits past a batch only then): nothing raises out of this loop."""
        assert isinstance(stream, faust.Stream)   # (StreamT, the agent's declared type, lacks take_events)
        async for batch in stream.take_events(cfg.batch_max, within=cfg.decide_debounce_s):
            now = datetime.now(UTC)
            market_changes: list[dict[str, Any]] = []
            workload_events: list[tuple[UserEvent, Any]] = []   # workload and quota events, in order
            dlq = Batch()
            for ev in batch:
                msg = ev.message
                allowed = USER_TOPICS.get(msg.topic)
                if allowed is None:
                    try:
                        market_changes += track.unpack_changes(ev.value)
                    except Exception as exc:   # written by our market stage: only corruption gets here
                        _dead_letter(ev.value, f"unreadable market change: {exc}", msg, now, dlq)
                    continue
                result = validate(ev.value, allowed, now)
                if isinstance(result, Rejected):
                    _dead_letter(ev.value, result.reason, msg, now, dlq)
                    continue
                assert isinstance(result, WorkloadRequested | WorkloadCancelled | QuotasSet)
                workload_events.append((result, msg))
            await _decide_isolating(market_changes, workload_events, now, dlq)
            try:
                await out().flush(dlq)
            except RuntimeError as exc:   # the DLQ refused some: counted and logged (with offsets), skipped
                counters.dlq_skipped += dlq_failed(exc)
                log.error("decision stage: %s; skipped", exc)

    def _dead_letter(raw: bytes | None, reason: str, msg: Any, now: datetime, dlq: Batch) -> None:
        counters.dead_lettered += 1
        dl = dead_letter(raw, reason, msg.topic, msg.partition, msg.offset, DECIDE_STAGE, now)
        out().produce(DLQ.name, dl.event_id.encode(), dl.model_dump_json().encode(), batch=dlq)

    async def _decide_isolating(market_changes: list[dict[str, Any]],
                                workload_events: list[tuple[UserEvent, Any]],
                                now: datetime, dlq: Batch) -> None:
        """`_decide_batch`, with poison-pill isolation: a step the decider fails on (it raised, or its
        process died twice) is split: the market changes alone, then the workload events in halves, down to
        the workload events it fails on alone, which are dead-lettered. A failure to deliver the step's
        outputs (the broker) is not the input's fault: the step is retried after a pause until it is in."""
        try:
            await _decide_retrying(market_changes, [w for w, _ in workload_events])
            return
        except POISON as exc:
            if not workload_events:
                counters.step_failures += 1
                log.error("decision stage: the decider failed on %d market changes alone; they are skipped "
                          "(the offers' next quotes re-trigger them): %s", len(market_changes), exc)
                return
            if len(workload_events) == 1 and not market_changes:
                _, msg = workload_events[0]
                kind = "quota set" if isinstance(workload_events[0][0], QuotasSet) else "workload"
                reason = f"the decision stage failed on this {kind}: {str(exc).strip().splitlines()[-1][:500]}"
                _dead_letter(msg.value, reason, msg, now, dlq)
                return
        if market_changes:
            await _decide_isolating(market_changes, [], now, dlq)
        mid = max(1, len(workload_events) // 2)
        for part in (workload_events[:mid], workload_events[mid:]):
            if part:
                await _decide_isolating([], part, now, dlq)

    async def _decide_retrying(market_changes: list[dict[str, Any]],
                               workload_events: list[UserEvent]) -> None:
        for attempt in itertools.count():
            try:
                await _decide_batch(market_changes, workload_events)
                return
            except POISON:
                raise
            except Fenced as exc:
                counters.fenced += 1
                log.error("decision stage fenced, its step not written: %s; waiting for the next rebalance", exc)
                if not await _deciding_after_rebalance():
                    log.warning("decision stage: another worker holds its inputs now; %d market changes and %d "
                                "workload events left to it", len(market_changes), len(workload_events))
                    return
            except Exception:
                counters.step_failures += 1
                pause = STEP_RETRY_PAUSE_S[min(attempt, len(STEP_RETRY_PAUSE_S) - 1)]
                log.exception("decision step failed to deliver its outputs; retrying in %.1f s", pause)
                await asyncio.sleep(pause)

    async def _deciding_after_rebalance() -> bool:
        """Wait for the consumer group's next assignment (a fenced worker was overtaken: it learns so at its
        next heartbeat); True when it gives this worker the decision stage's inputs again."""
        seen, t0 = rebalances[0], time.monotonic()
        while rebalances[0] == seen:
            await asyncio.sleep(0.2)
            if time.monotonic() - t0 > 30:
                t0 = time.monotonic()
                log.warning("decision stage fenced: still waiting for a rebalance")
        return any(tp.topic == changes.get_topic_name() for tp in app.consumer.assignment())

    async def _decide_batch(market_changes: list[dict[str, Any]],
                            workload_events: list[UserEvent]) -> None:
        step_t = time.time()
        res = await decider.step(market_changes, workload_events)
        stepped_t = time.time()
        try:
            # one transaction: the decisions, the state they stand for and the plans (PlanAdopted, with when
            # the step began: every worker's market stage follows the plans (streams.core.held) and forwards
            # moves quoted since then on the offers the step newly holds (track.catch_up)) land together
            steps.begin()
            for record in res.decision_records:
                steps.produce(DECISIONS.name, *record)
            dstate.record(res, step_t, time.time(), steps.produce)
            await asyncio.get_running_loop().run_in_executor(None, steps.commit)
        except BaseException:
            # the decider already adopted a plan that was not recorded: rebuild it from the topics next time
            steps.abort()
            dstate.rollback()
            decider.reset()
            raise
        counters.solves += res.solved
        counters.decisions += len(res.decision_records)
        if res.solve_ms is not None:
            counters.solve_seconds.observe(res.solve_ms / 1000)
        if log.isEnabledFor(logging.DEBUG):
            ts = [float(c["msg_ts"]) for c in market_changes if c.get("msg_ts")]
            oldest, newest = min(ts, default=step_t), max(ts, default=step_t)
            log.debug("step: %d market changes, oldest %.0f ms old (newest %.0f); step %.0f ms (solve %s ms, engine "
                      "%s), writes %.0f ms, %d decisions", len(market_changes), (step_t - oldest) * 1000,
                      (step_t - newest) * 1000,
                      (stepped_t - step_t) * 1000, res.solve_ms and round(res.solve_ms), res.engine_timings,
                      (time.time() - stepped_t) * 1000, len(res.decision_records))
        if res.solve_ms is not None and res.solve_ms > 1000:
            log.info("slow solve: %.0f ms for %d market changes, %d workload events", res.solve_ms,
                     len(market_changes), len(workload_events))

    flow = FlowWatch(app)

    @app.timer(10.0)
    async def _report_progress() -> None:
        """Every 10 s: one INFO line of counters (a line that stops coming means a blocked event loop) and
        the decision stage's input partitions read behind their high watermark; the rebalance workaround's
        check (streams.runtime.rebalance.FlowWatch)."""
        log.info("progress %s pending_out=%d", counters, out().pending())
        consumer = app.consumer
        behind = {}
        for tp in consumer.assignment():
            try:
                hw, pos = consumer.highwater(tp), await consumer.position(tp)
            except Exception:  # diagnostics only: never fail the timer
                continue
            if hw and (pos is None or hw > pos):
                behind[f"{tp.topic}:{tp.partition}"] = (pos, hw)
        if behind:
            log.info("behind (position, highwater): %s; rebalancing %s", dict(sorted(behind.items())[:12]),
                     app.rebalancing)
        flow.check()

    return StreamsWorker(app, counters, forecaster, stage, decider, dstate, decide_allocations, steps)

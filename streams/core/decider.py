"""The decision stage as a plain object: market and workload changes in, decisions and state writes out.

`Decider` holds the engine and the in-memory mirrors of the decision stage's stores (market view, workload
specs, plan, previous decision ids). `step()` applies one coalesced batch of changes, re-solves only the
affected workloads and returns what the agent must write: the decisions, then (only once the broker has
acknowledged them) the state and plan writes. No Kafka here; `streams.runtime.remote` runs a
`Decider` in a child process so a solve never blocks the worker's event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.events import (
    AllocationDecided,
    Assignment,
    QuotasSet,
    WorkloadCancelled,
    WorkloadRequested,
    WorkloadSpec,
)
from schemas.market import AllocationEngine, WarmEngine
from streams.core import decide, state

log = logging.getLogger(__name__)

StateWrite = tuple[str, str, Any]  # (store name, key, JSON value or None for a delete)
# what users send the decision stage (workloads.v1, quotas.v1), applied in the order given
UserEvent = WorkloadRequested | WorkloadCancelled | QuotasSet
QUOTAS_KEY = "quotas"  # the quotas store's one key: the set in force


@dataclass
class DecideOutput:
    state_writes: list[StateWrite] = field(default_factory=list)     # record once the decisions are acked
    # each AllocationDecided as its record (key: the event id; value: its JSON), serialised where it is made
    # (the decider's process), so the worker sends bytes: send, and wait for the broker's ack
    decision_records: list[tuple[bytes, bytes]] = field(default_factory=list)
    plan_writes: list[StateWrite] = field(default_factory=list)      # published (plans.v1) after that ack too
    solved: bool = False
    solve_ms: float | None = None
    engine_timings: dict[str, float] = field(default_factory=dict)  # the engine's own, when it keeps them

    @property
    def decisions(self) -> list[AllocationDecided]:
        """The decisions, read back from their records."""
        return [AllocationDecided.model_validate_json(v) for _, v in self.decision_records]


class Decider:
    """Single writer of the plan. Built from the recovered stores; the engine is built at the first step."""

    def __init__(self, engine_factory: Callable[[], AllocationEngine], market: Mapping[str, state.State],
                 workloads: Mapping[str, Any], plans: Mapping[str, Any],
                 quotas: Mapping[str, Any] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.engine_factory = engine_factory
        self.clock = clock   # UNIX seconds "now": the wall clock live, the event time in the back-test
        # the GPU quotas in force (the quotas store: one key, the last QuotasSet as JSON); None = never set
        q = (quotas or {}).get(QUOTAS_KEY)
        self.quotas: QuotasSet | None = QuotasSet.model_validate(q) if q else None
        self.market: dict[str, state.State] = {k: v for k, v in market.items() if v}
        self.specs: dict[str, WorkloadSpec] = {k: WorkloadSpec.model_validate(v) for k, v in workloads.items() if v}
        self.plan: dict[str, list[Assignment]] = {
            k: [Assignment.model_validate(a) for a in v["assignments"]] for k, v in plans.items() if v}
        self.prev_ids: dict[str, str] = {k: v["decision_id"] for k, v in plans.items() if v}
        self._engine: AllocationEngine | None = None
        self._accepting: dict[tuple[str, str], set[str]] = {}  # see decide.affected_workloads
        self._on_offer: dict[str, set[str]] | None = None        # decide.placed_on(self.plan), while valid

    def _placed_on(self) -> dict[str, set[str]]:
        if self._on_offer is None:
            self._on_offer = decide.placed_on(self.plan)
        return self._on_offer

    def engine(self) -> AllocationEngine:
        if self._engine is None:
            eng = self.engine_factory()
            now_t = self.clock()
            quotes = [q for k, v in self.market.items() if (q := state.quote_from_state(k, v, now_t))]
            eng.upsert_offers(quotes)
            for spec in self.specs.values():
                eng.upsert_workload(spec)
            if self.quotas is not None:
                eng.set_quotas(self.quotas.quotas)
            eng.set_current_plan([a for assigns in self.plan.values() for a in assigns])
            self._engine = eng
            log.info("engine %s rebuilt: %d offers, %d workloads", eng.name, len(quotes), len(self.specs))
        return self._engine

    def settle(self, stop: Callable[[], bool] | None = None) -> None:
        """Let the engine finish work it deferred past the last step's result (an engine with a `settle()`
        method: solvers.PortfolioEngine); called once the result has been handed over. With `stop` (True
        once the next step is waiting), also let it prepare the next solve meanwhile (its `warm()`)."""
        if isinstance(self._engine, WarmEngine):
            self._engine.settle()
            if stop is not None:
                self._engine.warm(stop)

    def step(self, market_changes: Sequence[Mapping[str, Any]],
             workload_events: Iterable[UserEvent]) -> DecideOutput:
        """Apply one batch. `market_changes`: records of the market-changes topic (offer_key, state,
        reason, event_id, msg_ts). `workload_events`: workload and quota events, in the order received. A
        quota set replaces the one in force (unless it is older: the latest `set_at` wins, as in the
        store) and re-decides every workload, so that every plan respects the new quotas."""
        eng = self.engine()
        out = DecideOutput()
        now_t = self.clock()
        now = datetime.fromtimestamp(now_t, UTC)
        reasons: list[str] = []
        triggers: list[str] = []
        changed_offers: dict[str, state.State] = {}
        oldest_ms: float | None = None
        for c in market_changes:
            changed_offers[c["offer_key"]] = c["state"]
            reasons.append(f"{c['reason']} on {c['offer_key']}")
            triggers.append(c["event_id"])
            if c.get("msg_ts"):
                ts_ms = float(c["msg_ts"]) * 1000
                oldest_ms = ts_ms if oldest_ms is None else min(oldest_ms, ts_ms)
        if changed_offers:
            for k, v in changed_offers.items():
                out.state_writes.append(("market", k, v))
                self.market[k] = v
            eng.upsert_offers([q for k, v in changed_offers.items() if (q := state.quote_from_state(k, v, now_t))])
        wl_ids: set[str] = set()
        quotas_changed = False
        for w in workload_events:
            if isinstance(w, QuotasSet):
                if self.quotas is not None and w.set_at < self.quotas.set_at:
                    log.warning("quota set %s ignored: older (%s) than the set in force (%s)", w.event_id,
                                w.set_at, self.quotas.set_at)
                    continue
                triggers.append(w.event_id)
                out.state_writes.append(("quotas", QUOTAS_KEY, w.model_dump(mode="json")))
                self.quotas = w
                eng.set_quotas(w.quotas)
                quotas_changed = True
                reasons.append(f"quotas set ({len(w.quotas)})")
                continue
            self._accepting.clear()   # the specs change
            triggers.append(w.event_id)
            if isinstance(w, WorkloadRequested):
                out.state_writes.append(("workloads", w.spec.workload_id, w.spec.model_dump(mode="json")))
                self.specs[w.spec.workload_id] = w.spec
                eng.upsert_workload(w.spec)
                wl_ids.add(w.spec.workload_id)
                reasons.append(f"workload {w.spec.workload_id} requested")
            elif self.specs.pop(w.workload_id, None) is not None or w.workload_id in self.plan:
                # (a plan without a spec: the cancellation was applied to the stores before a failed
                # delivery, and this is its redelivery)
                out.state_writes.append(("workloads", w.workload_id, None))
                wl_ids.add(w.workload_id)
                reasons.append(f"workload {w.workload_id} cancelled")
        old_plan = dict(self.plan)
        affected = decide.affected_workloads(changed_offers, self.specs, old_plan, self._accepting,
                                              self._placed_on()) | wl_ids
        cancelled = {wid for wid in wl_ids if wid not in self.specs}
        for wid in cancelled:
            eng.remove_workload(wid)
        if isinstance(eng, WarmEngine) and eng.rebuild_pending:
            # the engine rebuilds its model in this solve and drops its cached decisions: every workload is
            # re-decided now, at the structural change, rather than all at once by the next market event
            # that reaches them (~600 workloads, 300 ms, in the step after the benchmark's initial placement)
            affected |= set(self.specs)
        if quotas_changed:   # the new limits apply to every plan, including those no other change touches
            affected |= set(self.specs)
        to_solve = affected - cancelled
        if not affected:
            return out
        out.solved = True
        ages = _QuoteAges(self.market, now_t)
        reason = "; ".join(reasons[:5]) + (f"; +{len(reasons) - 5} more" if len(reasons) > 5 else "")
        t0 = time.perf_counter()
        decision = decide.resolve(eng, to_solve, old_plan, self.prev_ids, reason, triggers, ages, now, None)
        out.solve_ms = (time.perf_counter() - t0) * 1000
        out.engine_timings = {k: round(float(v), 1) for k, v in getattr(eng, "last_timings", {}).items()}
        # event -> decision ready to send: the oldest trigger's producer timestamp to now, solve included
        latency = (self.clock() * 1000 - oldest_ms) if oldest_ms is not None else None
        if decision is not None:
            decision = decision.model_copy(update={"latency_ms": latency})
        if cancelled:
            decision = _with_terminations(decision, old_plan, cancelled, self.prev_ids, now, reason, triggers,
                                          latency, eng.name)
        if decision is None:
            return out
        parts = decide.split(decision, self.prev_ids)
        out.decision_records = [(p.event_id.encode(), p.model_dump_json().encode()) for p in parts]
        self._on_offer = None
        new_plan: dict[str, list[Assignment]] = {}
        for a in decision.assignments:
            new_plan.setdefault(a.workload_id, []).append(a)
        for part in parts:
            for wid in part.workload_ids:
                if wid in cancelled:
                    self.plan.pop(wid, None)
                    self.prev_ids.pop(wid, None)
                    out.plan_writes.append(("plans", wid, None))
                else:
                    self.plan[wid] = new_plan.get(wid, [])
                    self.prev_ids[wid] = part.event_id
                    out.plan_writes.append(("plans", wid, {
                        "decision_id": part.event_id,
                        "assignments": [a.model_dump(mode="json") for a in self.plan[wid]]}))
        return out


class _QuoteAges(Mapping[str, float]):
    """Seconds since each offer's last quote, as the decision stage's market view has it, computed for
    the offers a decision reads (its assignments) rather than for every offer."""

    def __init__(self, market: Mapping[str, state.State], now_t: float) -> None:
        self.market, self.now_t = market, now_t

    def __getitem__(self, k: str) -> float:
        m = self.market.get(k)
        if not m:
            raise KeyError(k)
        return max(0.0, self.now_t - float(m.get("price_t", self.now_t)))

    def __iter__(self) -> Iterator[str]:
        return (k for k, m in self.market.items() if m)

    def __len__(self) -> int:
        return sum(1 for m in self.market.values() if m)


def _with_terminations(decision: AllocationDecided | None, old_plan: Mapping[str, list[Assignment]],
                       cancelled: set[str], prev_ids: Mapping[str, str], now: datetime, reason: str,
                       triggers: list[str], latency: float | None, solver: str) -> AllocationDecided | None:
    """A cancellation is a decision of its own kind: terminate what the workload held."""
    term = decide.diff_plans(dict(old_plan), {}, cancelled)
    if not term:
        return decision
    return AllocationDecided(
        event_id=decide.decision_id(prev_ids, cancelled, {}), decided_at=now,
        workload_ids=sorted({*cancelled, *(decision.workload_ids if decision else [])}),
        assignments=list(decision.assignments) if decision else [],
        changes=term + (list(decision.changes) if decision else []),
        reason=reason, trigger_event_ids=triggers[:50], latency_ms=latency,
        total_usd_per_hour=decision.total_usd_per_hour if decision else 0.0,
        explanations=list(decision.explanations) if decision else [], solver=solver)

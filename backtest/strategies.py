"""The back-tester's strategies: ours (the live decision stage's `Decider`) and the greedy baselines,
stepped once per event timestamp with what happened then (`Batch`)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from backtest.ledger import OURS, RELAXED_BUDGET, Ledger, Plan
from schemas.events import (
    Assignment,
    QuotasSet,
    WorkloadCancelled,
    WorkloadRequested,
    WorkloadSpec,
)
from schemas.market import AllocationEngine, OfferQuote, SolveResult
from schemas.placement import GpuQuota, quotas_covering
from solvers import greedy_plan
from streams.core import decide, state
from streams.core.decider import Decider, UserEvent

if TYPE_CHECKING:
    from backtest.sim import Simulation


@dataclass
class Batch:
    """What happened at one timestamp."""

    t: float
    changed: dict[str, dict[str, Any]]       # offer key -> engine view (material changes)
    reasons: list[str]
    triggers: list[str]
    lost: set[str]                           # spot offers that lost capacity / were preempted
    started: list[WorkloadSpec]
    ended: list[str]
    price_moved: frozenset[str] = frozenset()  # offers whose price changed at all (material or not)


class Strategy:
    name = "strategy"

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.plan: Plan = {}

    def step(self, sim: Simulation, b: Batch) -> dict[str, list[Assignment]]:
        raise NotImplementedError


class EngineStrategy(Strategy):
    """Ours: the live decision stage's own code, `streams.core.decider.Decider` (what `cloudarb worker` runs in its
    decision process), stepped in event time through an injected clock: market changes as the market stage
    forwards them, workloads started/ended as WorkloadRequested/WorkloadCancelled, the portfolio's quotas as
    a QuotasSet at the first step. What is measured is what runs (re-decide-all after a model rebuild,
    terminations on cancellation, `decide.split` of large decisions included)."""

    name = OURS

    def __init__(self, ledger: Ledger, engine: AllocationEngine, quotas: Sequence[GpuQuota] = ()) -> None:
        super().__init__(ledger)
        self.t = 0.0
        self.decider = Decider(lambda: engine, {}, {}, {}, clock=lambda: self.t)
        self._engine = engine
        self._user: list[UserEvent] = []
        if quotas:
            self._user.append(QuotasSet(event_id="backtest-quotas", quotas=list(quotas),
                                        set_at=datetime.fromtimestamp(0, UTC)))
        self.solves = 0
        self.decisions = 0
        self.guard_fired = 0
        self.solve_ms = 0.0

    @property
    def engine(self) -> AllocationEngine:
        return self._engine

    @property
    def specs(self) -> dict[str, WorkloadSpec]:
        return self.decider.specs

    def step(self, sim: Simulation, b: Batch) -> dict[str, list[Assignment]]:
        why: dict[str, tuple[str, str]] = {}   # offer key -> (reason, triggering event id), as forwarded live
        for r, eid in zip(b.reasons, b.triggers, strict=False):
            reason, _, key = r.partition(" on ")
            why[key] = (reason, eid)
        changes = [{"offer_key": k, "state": v, "reason": why.get(k, ("market change", ""))[0],
                    "event_id": why.get(k, ("", ""))[1], "msg_ts": None} for k, v in b.changed.items()]
        return self._decide(b.t, changes, b.started, b.ended)

    def _decide(self, t: float, changes: list[dict[str, Any]], started: Sequence[WorkloadSpec],
                ended: Sequence[str]) -> dict[str, list[Assignment]]:
        self.t = t
        now = datetime.fromtimestamp(t, UTC)
        events: list[UserEvent] = self._user
        self._user = []
        events += [WorkloadRequested(event_id=f"bt-req-{s.workload_id}-{t}", spec=s, requested_at=now)
                   for s in started]
        events += [WorkloadCancelled(event_id=f"bt-end-{w}-{t}", workload_id=w, cancelled_at=now) for w in ended]
        before = {w: list(a) for w, a in self.decider.plan.items()}
        t0 = time.perf_counter()
        res = self.decider.step(changes, events)
        self.decider.settle()
        self.solve_ms += (time.perf_counter() - t0) * 1000
        self.solves += int(res.solved)
        out: dict[str, list[Assignment]] = {}
        for d in res.decisions:
            self.decisions += 1
            for wid in d.workload_ids:
                out[wid] = list(self.decider.plan.get(wid, []))
        for wid in ended:
            if wid in before:
                out.setdefault(wid, [])
        self.plan = {w: list(a) for w, a in self.decider.plan.items()}
        return out

    def held_offers(self) -> set[str]:
        return {a.offer.key for assigns in self.decider.plan.values() for a in assigns}

    def guard(self, sim: Simulation, t: float) -> dict[str, list[Assignment]]:
        """Budget guard: fresh views of held offers whose unseen price moves break a budget."""
        stale: dict[str, dict[str, Any]] = {}
        for wid, assigns in self.decider.plan.items():
            spec = self.decider.specs.get(wid)
            if spec is None or not assigns:
                continue
            if self.ledger.rate_of(wid, sim.states) <= spec.budget_usd_per_hour * (1 + 1e-9):
                continue
            for a in assigns:
                s = sim.states[a.offer.key]
                if float(self.decider.market.get(a.offer.key, {}).get("usd_per_hour", -1)) != float(s["usd_per_hour"]):
                    stale[a.offer.key] = state.engine_view(s, sim.forecast_for(a.offer.key))
        if not stale:
            return {}
        self.guard_fired += 1
        return self._decide(t, [{"offer_key": k, "state": v, "reason": "budget guard", "event_id": "",
                                 "msg_ts": None} for k, v in sorted(stale.items())], [], [])


class GreedyRuleStrategy(Strategy):
    """Baselines built on `solvers.greedy_plan` (cheapest price per unit of throughput that fits)."""

    def __init__(self, ledger: Ledger, name: str) -> None:
        super().__init__(ledger)
        self.name = name
        self.specs: dict[str, WorkloadSpec] = {}
        self.seen: dict[str, float] = {}   # greedy_spot: per offer, the price it last re-decided on

    def quotes_for(self, sim: Simulation, spec: WorkloadSpec) -> list[OfferQuote]:
        qs = sim.quotes()
        if self.name == "on_demand_home":
            home = spec.home_provider
            return [q for q in qs if not q.is_spot and (home is None or q.offer.provider == home)]
        if self.name == "pco_like":
            ok = [q for q in qs if q.available and spec.gpu_throughput.get(q.offer.gpu_model)
                  and (spec.allowed_providers is None or q.offer.provider in spec.allowed_providers)]
            spot = [q for q in ok if q.is_spot]
            if spot and spec.max_spot_share >= 1.0:
                lo = min(q.interruption_probability_per_hour for q in spot)
                return [q for q in spot if q.interruption_probability_per_hour <= lo + 0.05]
            return [q for q in ok if not q.is_spot]
        return qs

    def _material(self, sim: Simulation, moved: Iterable[str]) -> set[str]:
        """The price moves greedy_spot re-decides on, by its own rule (not by what another strategy holds):
        any move on an offer it holds, else a move of at least the price threshold from the price it last
        re-decided on (a new offer's first price is one)."""
        held = {a.offer.key for assigns in self.plan.values() for a in assigns}
        out: set[str] = set()
        for k in moved:
            p = float(sim.states[k]["usd_per_hour"])
            seen = self.seen.get(k)
            if seen is None or k in held or abs(p - seen) >= sim.cfg.price_threshold * seen:
                self.seen[k] = p
                out.add(k)
        return out

    def place(self, sim: Simulation, wids: Iterable[str]) -> dict[str, list[Assignment]]:
        """Re-place `wids` (highest priority first) within the portfolio's quotas and the offers' capacity,
        counting what the other workloads hold (the running usage grows with every workload placed here)."""
        quotas = sim.portfolio.quotas
        todo = set(wids)
        used: dict[str, int] = {q.key: 0 for q in quotas}
        taken: dict[str, int] = {}   # offer key -> instances the strategy's workloads hold there

        def hold(assigns: Iterable[Assignment]) -> None:
            for a in assigns:
                taken[a.offer.key] = taken.get(a.offer.key, 0) + a.instances
                for q in quotas_covering(quotas, a.offer):
                    used[q.key] += a.instances * a.offer.gpus_per_instance

        for w, assigns in self.plan.items():
            if w not in todo:
                hold(assigns)
        out: dict[str, list[Assignment]] = {}
        for wid in sorted(todo, key=lambda w: (-self.specs[w].priority, w)):
            spec = self.specs[wid]
            qs = [q if q.capacity_instances is None or not taken.get(q.key) else
                  replace(q, capacity_instances=max(0, q.capacity_instances - taken[q.key]))
                  for q in self.quotes_for(sim, spec)]
            r = _greedy(qs, spec, quotas, used)
            got = r.plan().get(wid)
            if not got and any(i.constraint == "budget" for i in r.infeasible):
                # no choice fits the budget: the team runs anyway (counted as a budget violation)
                got = _greedy(qs, spec.model_copy(update={"budget_usd_per_hour": RELAXED_BUDGET}), quotas,
                              used).plan().get(wid)
            out[wid] = got or []
            hold(out[wid])
        return out

    def step(self, sim: Simulation, b: Batch) -> dict[str, list[Assignment]]:
        out: dict[str, list[Assignment]] = {}
        for wid in b.ended:
            if self.specs.pop(wid, None) is not None:
                out[wid] = []
                self.plan.pop(wid, None)
        todo: set[str] = set()
        for spec in b.started:
            self.specs[spec.workload_id] = spec
            todo.add(spec.workload_id)
        hit = {w for w, hs in self.plan.items() if any(a.offer.key in b.lost for a in hs)}
        todo |= hit & set(self.specs)
        if b.changed:
            todo |= {w for w in self.specs if not self.plan.get(w)}  # unplaced: retry when the market moves
        if self.name == "greedy_spot" and b.price_moved:
            moved = self._material(sim, b.price_moved)
            if moved:
                todo |= decide.affected_workloads(moved, self.specs, self.plan)
        if not todo:
            return out
        placed = self.place(sim, todo)
        for wid, assigns in placed.items():
            old = sorted((a.offer.key, a.instances) for a in self.plan.get(wid, []))
            if wid in hit or old != sorted((a.offer.key, a.instances) for a in assigns):
                self.plan[wid] = assigns
                out[wid] = assigns
        return out


def _greedy(qs: Sequence[OfferQuote], spec: WorkloadSpec, quotas: Sequence[GpuQuota],
            used: dict[str, int]) -> SolveResult:
    """`greedy_plan` for one workload within the quotas, given the GPUs `used` per quota key by others."""
    return greedy_plan(qs, [spec], quotas, dict(used))

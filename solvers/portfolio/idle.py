"""CP-SAT in idle time: `PortfolioEngine.warm` keeps improving the integer plan between solves.

A solve decides only the workloads whose inputs moved, one after the other (with a short joint pass where
they compete, `joint_time_limit_s`). Idle time can do better: one CP-SAT model (solvers/cpsat.py) over every
workload's admissible plans at once, against the whole capacity and quotas (nothing held),

    min  sum_w sum_k c_wk x_wk + sum_w M_w u_w   s.t.  one plan or none per w, capacity, quotas,

where the plans of w are those the integer phase weighs (`joint.options_for`: LP rounding, best single
offers, the best one-place gang plan or spread, the plan in force), widened in idle time to the next best
single offers and a gang's 8 cheapest one-place plans, priced as `candidates.select` prices them
(the plan in force without migration; a move with its migration term and amortised state transfer, offered
only when it saves the hysteresis threshold and pays back within the payback horizon). It is hinted with
the plan in force and runs while `stop()` is false (the search ends within ~2 ms of it), resumed by the next
`warm()` from its incumbent, until CP-SAT proves it optimal or has had `idle_time_limit_s` for this state.

The result is never adopted here: warm() does not change the plan in force. An incumbent cheaper than the
plan in force is kept as `IdleState.plan` (the rows of the workloads it moves); those workloads are marked
dirty in the decision cache, so the next solve that asks for them re-decides them, and that solve's
integer phase weighs the incumbent as one more pass (`seeded_pass`: each re-decided workload takes its
incumbent plan when it is still admissible in what the earlier ones left and its move still clears
hysteresis and payback at the prices of that solve, else decides as usual); the cheapest pass wins.

CP-SAT's best objective bound is a lower bound over these candidate plans only (not over every plan: the
LP and `integer_lower_bound` are valid for the whole problem); it is reported as `IdleState.bound`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from solvers import cpsat
from solvers import placement as pl
from solvers.instance import F64, Instance
from solvers.joint import joint_decisions, joint_problem
from solvers.portfolio.candidates import Decision, decide, single_candidates, take
from solvers.portfolio.master import Master
from solvers.portfolio.pairs import Pairs, Rows, rows_metric

if TYPE_CHECKING:
    from solvers.portfolio.engine import PortfolioEngine


@dataclass
class IdleState:
    """The idle CP-SAT search for one state of the engine (`solves`: the solve count it was built after)."""

    solves: int
    order: list[int]
    problem: cpsat.PlacementProblem | None = None
    per_w: dict[int, Any] = field(default_factory=dict)
    hint: list[int | None] = field(default_factory=list)
    hint_cost: float = math.inf
    objective: float = math.inf       # the incumbent's objective (the plan in force's, until improved)
    bound: float = -math.inf          # CP-SAT's best bound over the candidate plans
    status: str = ""
    spent_s: float = 0.0
    done: bool = False
    plan: dict[int, Rows | None] = field(default_factory=dict)   # w -> its incumbent plan, where it moves
    current: dict[int, Any] = field(default_factory=dict)          # w -> its plan in force (the hint)


def improve(engine: PortfolioEngine, stop: Callable[[], bool]) -> None:
    """Continue the idle CP-SAT search while `stop()` is false (see the module docstring)."""
    inst, P, M, c = engine._inst, engine._pairs, engine._master, engine._cache
    if inst is None or P is None or M is None or c is None or c.metric is None or engine.idle_time_limit_s <= 0:
        return
    st = engine._idle
    if st is None or st.solves != engine._solves:
        if not (engine._any_capacity or inst.quotas) or inst.n_workloads < 2:
            return   # without capacity limits or quotas the workloads do not compete
        order = sorted(range(inst.n_workloads), key=lambda w: (-inst.priority[w], inst.ids[w]))
        st = engine._idle = IdleState(engine._solves, order, plan=engine._idle.plan if engine._idle else {})
    if st.done or stop():
        return
    t0 = time.perf_counter()
    metric_unit = c.metric
    qleft = pl.quota_left(inst, np.zeros(inst.n_offers)) if inst.quotas else None
    if st.problem is None:
        lam = inst.params.risk_lambda
        current: dict[int, Any] = {}
        for w in st.order:
            rows = c.rows.get(w)
            if rows:
                current[w] = Decision(rows, rows_metric(P, w, rows, metric_unit, lam * float(M.mu[w])), "keep", [])
        built = joint_problem(engine, inst, P, M, st.order, metric_unit, inst.capacity.copy(), qleft, current,
                              stop, wide=True)
        if built is None:   # stopped while building: the next warm() starts over (the state may move)
            st.spent_s += time.perf_counter() - t0
            return
        st.problem, st.per_w, st.hint = built
        st.hint_cost = st.objective = st.problem.cost(st.hint)
        st.current = current
    limit = engine.idle_time_limit_s - st.spent_s
    if limit <= 0 or stop():
        st.spent_s += time.perf_counter() - t0
        st.done = limit <= 0
        return
    res = cpsat.solve(st.problem, time_limit_s=limit, hint=st.hint, stop=stop)
    st.spent_s += time.perf_counter() - t0
    st.status, st.bound = res.status, max(st.bound, res.bound)
    engine.stats["idle_cpsat_runs"] = engine.stats.get("idle_cpsat_runs", 0) + 1
    if res.status == "OPTIMAL" or st.spent_s >= engine.idle_time_limit_s:
        st.done = True
    if res.status not in ("OPTIMAL", "FEASIBLE") or cpsat.check(st.problem, res.choice) or \
            res.objective >= st.objective - 1e-6:
        return
    st.objective = res.objective
    st.hint = list(res.choice)
    _, decs, _, _ = joint_decisions(inst, P, M, st.order, st.per_w, res.choice, inst.capacity.copy(), qleft,
                                    st.current)
    moved: dict[int, Rows | None] = {}
    for w in st.order:
        d = decs[w]
        rows = d.rows if d is not None else None
        if rows != (c.rows.get(w) or None):
            moved[w] = rows
    st.plan = moved
    c.dirty |= set(moved)   # re-decided by the next solve that asks for them
    engine.stats["idle_improved"] = engine.stats.get("idle_improved", 0) + 1


def price_rows(inst: Instance, P: Pairs, M: Master, w: int, rows: Rows, metric_unit: F64, left: F64,
               ql: F64 | None) -> tuple[float, str] | None:
    """w's plan `rows` priced as `candidates.select` prices a candidate, or None when it is not admissible in
    `left` / `ql` or is a move that does not clear hysteresis and payback against a valid plan in force."""
    if not pl.plan_ok(inst, w, rows, left, ql):
        return None
    wid = inst.ids[w]
    cur = inst.current.get(wid)
    lam = inst.params.risk_lambda
    lam_mu = lam * float(M.mu[w])
    if cur is not None and rows == cur:
        return rows_metric(P, w, rows, metric_unit, lam_mu), "keep"
    m = rows_metric(P, w, rows, metric_unit)
    if cur and inst.state_gb[w]:
        m += lam * pl.amortised_move(inst, w, rows)
    if cur and wid not in inst.stale_plan and pl.plan_ok(inst, w, cur, left, ql):
        saving = rows_metric(P, w, cur, metric_unit, lam_mu) - rows_metric(P, w, rows, metric_unit, lam_mu)
        if saving < inst.threshold(w) or saving * pl.payback_hours(inst, w, rows) < \
                pl.move_cost_usd(inst, w, rows) - 1e-9:
            return None
    return m, "joint"


def seeded_pass(engine: PortfolioEngine, inst: Instance, P: Pairs, M: Master, order: list[int], metric_unit: F64,
                cap_left: F64, qleft0: F64 | None, seed: dict[int, Rows | None]
                ) -> tuple[float, dict[int, Decision | None], F64, F64 | None]:
    """The first pass of `integer.choose`, with each workload of `seed` on its idle incumbent where that is
    still admissible (`price_rows`), the others decided as usual."""
    left = cap_left.copy()
    ql = None if qleft0 is None else qleft0.copy()
    out: dict[int, Decision | None] = {}
    total = 0.0
    for w in order:
        d: Decision | None = None
        rows = seed.get(w)
        priced = price_rows(inst, P, M, w, rows, metric_unit, left, ql) if rows else None
        if rows and priced is not None:
            singles, blocked = single_candidates(inst, P, M, w, metric_unit, left, qleft=ql,
                                                 any_capacity=engine._any_capacity)
            chosen = {o for o, _ in rows}
            runner = next(((int(P.o[j]), mm) for j, mm in singles if int(P.o[j]) not in chosen), None)
            d = Decision(rows, priced[0], priced[1], ["joint placement"], runner, blocked)
        else:
            d = decide(inst, P, M, w, metric_unit, left, engine._place_offers, engine._any_capacity, qleft=ql)
        out[w] = d
        total += take(inst, M, w, d, left, ql)
    return total, out, left, ql

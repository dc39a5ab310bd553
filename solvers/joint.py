"""The integer phase's joint pass: when workloads compete for capacity or quota, choose every re-decided
workload's plan at once with CP-SAT (solvers.cpsat) among its admissible candidates, instead of one
workload after the other.

The sequential pass (priority order, first come first served) decides each workload against what the
earlier ones left; a workload decided early can take the only offer a later one could use, and the later
one is left unplaced or on a dearer plan. This pass gives CP-SAT, per workload, the candidates the
sequential pass would weigh (`solvers.portfolio.candidates.candidates`: the LP rounding, the best single offers, the
best one-place gang plan or share-respecting spread, the plan in force), each priced as the sequential
pass prices it (`candidates.select`: no migration charge for the plan in force, a move's state amortised over the
payback horizon; moves that would not clear the hysteresis threshold or pay back are not offered), plus
the sequential pass's own choice as the hint. CP-SAT's model is in solvers/cpsat.py; its result is
re-checked there (`check`) and taken only when cheaper than the sequential pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from solvers import cpsat
from solvers import placement as pl

if TYPE_CHECKING:   # (solvers.portfolio.integer imports this module)
    from solvers.instance import F64, Instance

Rows = tuple[tuple[int, int], ...]


def options_for(engine: Any, inst: Instance, P: Any, M: Any, w: int, metric_unit: F64, cap_left: F64,
                qleft: F64 | None, hint: Any, wide: bool = False
                ) -> tuple[list[tuple[Rows, float, str]], Any, list[str]]:
    """w's admissible plans priced as `candidates.select` prices them: [(rows, metric, kind)], singles, blocked.
    `wide` (idle time): also the runner-up single offers and, for a gang, its 8 cheapest one-place plans."""
    from solvers.portfolio.candidates import candidates
    from solvers.portfolio.pairs import rows_metric

    cands, singles, blocked = candidates(inst, P, M, w, metric_unit, cap_left, qleft, engine._place_offers,
                                         engine._any_capacity)
    if wide:
        cands = list(cands)
        cands += [(m, "single", ((int(P.o[j]), int(P.n_single[j])),)) for j, m in singles[1:]]
        if inst.gang[w]:
            s, e = int(P.ptr[w]), int(P.ptr[w + 1])
            live = np.flatnonzero(M.avail_pair[s:e])
            for m, rows in pl.gang_plans(inst, w, P.o[s:e][live], metric_unit[s:e][live], cap_left, qleft, top=8):
                if pl.plan_ok(inst, w, rows, cap_left, qleft):
                    cands.append((m, "place", rows))
    wid = inst.ids[w]
    cur = inst.current.get(wid)
    lam = inst.params.risk_lambda
    lam_mu = lam * float(M.mu[w])
    keep_ok = bool(cur) and wid not in inst.stale_plan and cur is not None and \
        pl.plan_ok(inst, w, cur, cap_left, qleft)
    opts: dict[Rows, tuple[float, str]] = {}
    m_keep = rows_metric(P, w, cur, metric_unit, lam_mu) if keep_ok and cur is not None else None
    for m, kind, rows in cands:
        if cur is not None and rows == cur:
            m, kind = m - lam * M.mu[w] * sum(float(inst.gpus[o]) * n for o, n in cur), "keep"
        elif cur and inst.state_gb[w]:
            m = m + lam * pl.amortised_move(inst, w, rows)
        if m_keep is not None and cur is not None and rows != cur:
            saving = m_keep - rows_metric(P, w, rows, metric_unit, lam_mu)
            if saving < inst.threshold(w) or saving * pl.payback_hours(inst, w, rows) < \
                    pl.move_cost_usd(inst, w, rows) - 1e-9:
                continue   # the sequential pass would keep the plan in force over this move
        if rows not in opts or m < opts[rows][0]:
            opts[rows] = (float(m), kind)
    if m_keep is not None and cur is not None and cur not in opts:
        opts[cur] = (float(m_keep), "keep")
    if hint is not None and hint.rows not in opts:
        opts[hint.rows] = (float(hint.metric), hint.kind)
    return [(rows, m, kind) for rows, (m, kind) in opts.items()], singles, blocked


def joint_problem(engine: Any, inst: Instance, P: Any, M: Any, order: Sequence[int], metric_unit: F64,
                  cap_left: F64, qleft: F64 | None, sequential: dict[int, Any],
                  stop: Callable[[], bool] | None = None, wide: bool = False
                  ) -> tuple[cpsat.PlacementProblem, dict[int, Any], list[int | None]] | None:
    """The CP-SAT problem over `order`'s admissible plans (`options_for`), its options per workload and the
    hint (the index of `sequential`'s choice per workload). None when `stop()` turned true while building."""
    per_w: dict[int, tuple[list[tuple[Rows, float, str]], Any, list[str]]] = {}
    for i, w in enumerate(order):
        if stop is not None and i % 8 == 0 and stop():
            return None
        per_w[w] = options_for(engine, inst, P, M, w, metric_unit, cap_left, qleft, sequential.get(w), wide)
    offers = sorted({o for opts, _, _ in per_w.values() for rows, _, _ in opts for o, _ in rows})
    local = {o: i for i, o in enumerate(offers)}
    cap = tuple(math.floor(cap_left[o] + 1e-9) if np.isfinite(cap_left[o]) else None for o in offers)
    quotas: list[tuple[int, frozenset[int]]] = []
    names: list[str] = []
    if qleft is not None:
        for qi in range(qleft.size):
            cov = frozenset(local[o] for o in offers if inst.qmask[qi, o])
            if cov:
                quotas.append((math.floor(qleft[qi] + 1e-9), cov))
                names.append(str(qi))
    problem = cpsat.PlacementProblem(
        options=tuple(tuple((tuple((local[o], n) for o, n in rows), m) for rows, m, _ in per_w[w][0])
                      for w in order),
        unplaced_usd=tuple(float(M.M[w]) for w in order), capacity=cap,
        gpus_per_instance=tuple(int(inst.gpus[o]) for o in offers), quotas=tuple(quotas), names=tuple(names))
    hint: list[int | None] = []
    for w in order:
        d = sequential.get(w)
        offered = [r for r, _, _ in per_w[w][0]]
        hint.append(offered.index(d.rows) if d is not None and d.rows in offered else None)
    return problem, per_w, hint


def joint_decisions(inst: Instance, P: Any, M: Any, order: Sequence[int], per_w: dict[int, Any],
                    choice: Sequence[int | None], cap_left: F64, qleft: F64 | None, sequential: dict[int, Any]
                    ) -> tuple[float, dict[int, Any], F64, F64 | None]:
    """CP-SAT's `choice` as decisions, as `run_pass` returns them (total, decisions, capacity left, quota
    left): a workload chosen as `sequential` decided it keeps that decision (its runner-up too)."""
    from solvers.portfolio.candidates import Decision

    left = cap_left.copy()
    ql = None if qleft is None else qleft.copy()
    out: dict[int, Any] = {}
    total = 0.0
    for w, k in zip(order, choice, strict=True):
        if k is None:
            out[w] = None
            total += float(M.M[w])
            continue
        rows, m, kind = per_w[w][0][k]
        seq = sequential.get(w)
        if seq is not None and seq.rows == rows:   # as the sequential pass decided it (its runner-up too)
            out[w] = seq
            m = seq.metric
        else:   # moved for the others' sake: its runner-up may be cheaper than what it got
            singles, blocked = per_w[w][1], per_w[w][2]
            chosen = {o for o, _ in rows}
            runner = next(((int(P.o[j]), mm) for j, mm in singles if int(P.o[j]) not in chosen), None)
            out[w] = Decision(rows, m, kind, ["joint placement"], runner, blocked)
        total += m
        for o, n in rows:
            left[o] -= n
        if ql is not None:
            pl.quota_take(inst, rows, ql)
    return total, out, left, ql


def joint_pass(engine: Any, inst: Instance, P: Any, M: Any, order: Sequence[int], metric_unit: F64,
               cap_left: F64, qleft: F64 | None, sequential: dict[int, Any], time_limit_s: float
               ) -> tuple[float, dict[int, Any], F64, F64 | None] | None:
    """The joint choice, as `run_pass` returns its result (total, decisions, capacity left, quota left), or
    None when CP-SAT found nothing better than the hint."""
    t0 = time.perf_counter()
    built = joint_problem(engine, inst, P, M, order, metric_unit, cap_left, qleft, sequential)
    assert built is not None
    problem, per_w, hint = built
    res = cpsat.solve(problem, time_limit_s=time_limit_s, hint=hint)
    engine.last_timings["joint_ms"] = (time.perf_counter() - t0) * 1000
    if res.status not in ("OPTIMAL", "FEASIBLE") or cpsat.check(problem, res.choice):
        return None
    return joint_decisions(inst, P, M, order, per_w, res.choice, cap_left, qleft, sequential)

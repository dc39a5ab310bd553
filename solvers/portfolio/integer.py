"""The integer phase: whole instances for the workloads whose inputs changed, the rest reused from the cache.

Steps of `integer_phase` (each a function below):
  1. `lp_values`: the LP solution per master pair column, keep columns z_w folded into their pairs;
  2. `incremental.affected`: which workloads to re-decide (A), from the cache (solvers/portfolio/cache.py);
  3. release what A holds: cap_left_o = cap_o - sum of the plans not re-decided; quota headroom likewise;
  4. `choose`: decide A in priority order (prio_w descending, then id), each by `candidates.decide` against
     what the earlier ones left (pass 1, first come first served); on large re-decisions (> 64, e.g. cold)
     when pass 1 broke an LP holding, pass 2 holds each later workload's rounded-down LP capacity
     floor(x_wo) for it; when workloads compete (one unplaced, or blocked from its cheapest offer), the joint
     CP-SAT pass (solvers/joint.py) chooses all their plans at once; where `warm()` found a cheaper plan in
     idle time (solvers/portfolio/idle.py), a pass seeded with it is weighed too. The cheapest total wins:
         total = sum_{w in A} metric_w(plan_w) + sum_{w in A unplaced} M_w;
  5. `record`: the decisions into the cache (usage, chosen metric without migration, runner-up, threshold);
  6. `verify`: `evaluate` re-checks the re-decided plans against the instance and what the others hold; a
     plan that fails is dropped (never returned);
  7. explanations (one pass of reduced costs), the cache's screening codes, the objective
         sum_w objective term of w's plan + concentration penalty of the group totals,
     and the LP bound when column generation converged and the LP places every workload.
The result is adopted into the LP master later (`PortfolioEngine.settle`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from schemas.events import Assignment, WorkloadExplanation
from schemas.market import InfeasibilityReport
from solvers import placement as pl
from solvers.instance import F64, Instance, concentration_penalty, evaluate
from solvers.joint import joint_pass
from solvers.portfolio.cache import DecisionCache, new_cache
from solvers.portfolio.candidates import Decision, decide, take
from solvers.portfolio.explain import diagnose, explain, explained_pairs
from solvers.portfolio.idle import seeded_pass
from solvers.portfolio.incremental import affected, refresh_runner
from solvers.portfolio.master import Master
from solvers.portfolio.pairs import Pairs, sorted_member

if TYPE_CHECKING:
    from solvers.portfolio.engine import PortfolioEngine

PhaseResult = tuple[tuple[Assignment, ...], dict[str, WorkloadExplanation], tuple[InfeasibilityReport, ...], float,
                    float | None, frozenset[str]]
PassResult = tuple[float, dict[int, Decision | None], F64, F64 | None]   # (total, decisions, cap left, quota left)


def integer_phase(engine: PortfolioEngine, inst: Instance, P: Pairs, M: Master, ids: set[str]) -> PhaseResult:
    """Decide whole instances for the workloads in `ids` whose inputs changed; reuse the rest (see the module
    docstring and solvers/portfolio/incremental.py). Returns (assignments, explanations, infeasible,
    objective, LP bound or None, the re-decided workload ids)."""
    widx = engine._widx
    W = inst.n_workloads
    engine._any_capacity = bool(np.isfinite(inst.capacity).any())   # (see candidates.single_candidates)
    xe, kv = lp_values(P, M, W)
    y = M.y
    conc_g = -(y[M.r_grp] + y[M.r_tot])
    c = engine._cache
    if c is None:
        c = engine._cache = new_cache(inst, engine.plan, engine._oidx, widx)
    want = {widx[i] for i in ids}
    A, runner_only, R = affected(engine, inst, P, M, c, xe, kv, conc_g, want)
    c.fresh = False
    metric_unit = c.metric
    assert metric_unit is not None
    order = sorted(A, key=lambda w: (-inst.priority[w], inst.ids[w]))
    engine.last_timings["redecided"] = float(len(A))
    usage = c.usage
    for w in order:                                   # release what the re-decided hold
        for o, n in c.rows.pop(w, ()):
            usage[o] -= n
    cap_left = inst.capacity - usage
    # GPUs left per quota after what every other workload holds: hard limits, tracked like the capacity
    qleft0 = pl.quota_left(inst, usage) if inst.quotas else None
    best = choose(engine, inst, P, M, order, metric_unit, cap_left, qleft0, lp_holdings(inst, P, M, xe, A))
    decided = record(inst, P, M, c, order, best, usage)
    new_plan, per_workload = verify(engine, inst, c, decided, usage)
    for w in sorted(R):
        refresh_runner(engine, inst, P, M, c, w, metric_unit, usage)
    # the explanations' reduced costs, in one pass over all their pairs
    expl_pairs = {w: explained_pairs(P, w, d) for w, d in decided.items()}
    flat = np.fromiter((j for js in expl_pairs.values() for j in js), np.int64)
    rc_of = dict(zip(flat.tolist(), M.reduced_costs(flat).tolist(), strict=True)) if flat.size else {}
    for w, d in decided.items():
        wid = inst.ids[w]
        c.expl[wid] = explain(inst, P, M, w, d, expl_pairs[w], rc_of)
        c.obj[wid] = per_workload[wid]
    for w in A:
        if w in c.reports:
            rep = c.reports[w]
            c.expl[rep.workload_id] = WorkloadExplanation(workload_id=rep.workload_id,
                                                          infeasible_reason=rep.reason)
            c.obj.pop(rep.workload_id, None)
    update_codes(inst, c, A, runner_only, decided)
    c.xv, c.kv, c.conc = xe, kv, conc_g
    c.avail, c.cap = inst.available.copy(), inst.capacity.copy()   # the offers as these decisions saw them
    engine._changed_offers.clear()
    engine._price_before.clear()
    # objective of the whole portfolio, from per-workload terms and group totals
    grp = np.bincount(inst.group, weights=usage * inst.gpus, minlength=len(inst.groups)).astype(np.float64)
    objective = sum(c.obj.values()) + concentration_penalty(inst, grp)
    lp_u = M.x[M.c_u] if M.x.size else np.ones(1)
    placed_all = len(c.rows) == W
    bound = M.lp_obj if (M.converged and placed_all and float(lp_u.sum()) < 1e-6) else None
    # adopt
    for wid in ids:
        if widx[wid] in A:
            engine.plan.pop(wid, None)
    engine.plan.update(new_plan)
    engine._deferred = (inst, M, new_plan, {inst.ids[w] for w in A})   # see PortfolioEngine.settle
    ordered = sorted(ids)
    plan = engine.plan
    out = tuple(a for wid in ordered if wid in plan for a in plan[wid])
    expl = {wid: c.expl[wid] for wid in ids if wid in c.expl}
    reports = c.reports
    infeasible = tuple(reports[w] for w in (widx[wid] for wid in ordered) if w in reports) if reports else ()
    return out, expl, infeasible, objective, bound, frozenset(inst.ids[w] for w in A)


def lp_values(P: Pairs, M: Master, W: int) -> tuple[F64, F64]:
    """The LP allocation per master pair column, keep columns folded into the pairs they represent, and per
    workload the keep value not representable by master pair columns."""
    f0 = M.first_pair_col
    xe = np.zeros(M.col_pair.size)
    nx = min(M.x.size - f0, xe.size)
    if nx > 0:
        xe[:nx] = M.x[f0:f0 + nx]
    xe[M.col_pair < 0] = 0.0
    kv = np.zeros(W)   # keep value not representable by master pair columns
    kcols, kpj, knn = M.keep_flat()
    if kcols.size:
        xk = np.where(kcols < M.x.size, M.x[np.minimum(kcols, max(M.x.size - 1, 0))], 0.0) if M.x.size \
            else np.zeros(kcols.size)
        pcol = M.pair_col[kpj]
        inm = pcol >= 0
        np.add.at(xe, pcol[inm] - f0, xk[inm] * knn[inm])
        np.add.at(kv, P.w[kpj[~inm]], xk[~inm])
    return xe, kv


def lp_holdings(inst: Instance, P: Pairs, M: Master, xe: F64, A: set[int]) -> dict[int, list[tuple[int, float]]]:
    """Per re-decided workload, the instances floor(x_wo) >= 1 the LP gives it on offers of finite capacity
    (what pass 2 of `choose` holds for it until its turn)."""
    own: dict[int, list[tuple[int, float]]] = {}
    fl = np.floor(xe + 1e-6)
    cols = np.flatnonzero(fl >= 1)
    if cols.size:
        pj = M.col_pair[cols]
        ok = pj >= 0
        fin = np.isfinite(inst.capacity[P.o[pj[ok]]])
        for j, f in zip(pj[ok][fin].tolist(), fl[cols[ok][fin]].tolist(), strict=True):
            wj = int(P.w[j])
            if wj in A:
                own.setdefault(wj, []).append((int(P.o[j]), f))
    return own


def choose(engine: PortfolioEngine, inst: Instance, P: Pairs, M: Master, order: list[int], metric_unit: F64,
           cap_left: F64, qleft0: F64 | None, own: dict[int, list[tuple[int, float]]]) -> PassResult:
    """The re-decided workloads' plans: the cheapest of pass 1 (priority order, first come first served),
    pass 2 (the capacity the LP gives, rounded down, to a workload decided later is held for it: `own`) and
    the joint CP-SAT pass of competing workloads."""
    place_offers, any_capacity = engine._place_offers, engine._any_capacity

    def run_pass(protect: bool) -> tuple[float, dict[int, Decision | None], F64, F64 | None]:
        left = cap_left.copy()
        ql = None if qleft0 is None else qleft0.copy()
        held = np.zeros_like(left)   # capacity held for workloads not decided yet
        if protect:
            for lst in own.values():
                for o, f in lst:
                    held[o] += f
        out: dict[int, Decision | None] = {}
        total = 0.0
        for w in order:
            if protect:
                for o, f in own.get(w, ()):
                    held[o] -= f
                d = decide(inst, P, M, w, metric_unit, left - held, place_offers, any_capacity, keep_cap=left,
                       qleft=ql)
                if d is None:   # held capacity is a preference, never a reason to fail
                    d = decide(inst, P, M, w, metric_unit, left, place_offers, any_capacity, qleft=ql)
            else:
                d = decide(inst, P, M, w, metric_unit, left, place_offers, any_capacity, qleft=ql)
            out[w] = d
            total += take(inst, M, w, d, left, ql)
        return total, out, left, ql

    best = run_pass(False)

    def honoured(decs: dict[int, Decision | None]) -> bool:
        for w, lst in own.items():
            d = decs.get(w)
            have = dict(d.rows) if d is not None else {}
            if any(have.get(o, 0) < f for o, f in lst):
                return False
        return True

    if own and len(order) > 64 and not honoured(best[1]):   # worth it on (cold) full decisions
        alt = run_pass(True)
        if alt[0] < best[0] - 1e-9:
            best = alt
    # workloads competing for capacity or quota (one left unplaced, or blocked from its cheapest offer):
    # choose their plans jointly with CP-SAT (solvers.joint), keep it when cheaper
    if engine.joint_time_limit_s > 0 and len(order) > 1 and any(
            d is None or d.blocked for d in best[1].values()):
        alt2 = joint_pass(engine, inst, P, M, order, metric_unit, cap_left, qleft0, best[1],
                          engine.joint_time_limit_s)
        engine.stats["joint_passes"] = engine.stats.get("joint_passes", 0) + 1
        if alt2 is not None and alt2[0] < best[0] - 1e-9:
            engine.stats["joint_improved"] = engine.stats.get("joint_improved", 0) + 1
            engine.last_timings["joint_saving"] = best[0] - alt2[0]
            best = alt2
    # the idle CP-SAT incumbent (solvers/portfolio/idle.py) for the workloads it moves, where still admissible
    idle = engine._idle
    if idle is not None and idle.plan and any(w in idle.plan for w in order):
        alt3 = seeded_pass(engine, inst, P, M, order, metric_unit, cap_left, qleft0, idle.plan)
        for w in order:
            idle.plan.pop(w, None)
        engine.stats["idle_seeded"] = engine.stats.get("idle_seeded", 0) + 1
        if alt3[0] < best[0] - 1e-9:
            engine.stats["idle_seed_won"] = engine.stats.get("idle_seed_won", 0) + 1
            engine.last_timings["idle_saving"] = best[0] - alt3[0]
            best = alt3
    return best


def record(inst: Instance, P: Pairs, M: Master, c: DecisionCache, order: list[int], best: PassResult,
           usage: F64) -> dict[int, Decision]:
    """The chosen decisions into the cache (a workload left unplaced gets its diagnosis); returns the placed."""
    decided: dict[int, Decision] = {}
    for w in order:
        c.reports.pop(w, None)
        d = best[1][w]
        if d is None:
            c.reports[w] = diagnose(inst, w, best[2], best[3])
            c.runner[w] = math.inf
            c.chosen[w] = math.inf
            c.thr[w] = 0.0
            continue
        for o, n in d.rows:
            usage[o] += n
        decided[w] = d
        c.rows[w] = d.rows
        c.runner[w] = d.runner[1] if d.runner is not None else math.inf
        keep_like = d.kind == "keep"
        g_new = sum(float(inst.gpus[o]) * n for o, n in d.rows)
        c.chosen[w] = d.metric if keep_like else d.metric - inst.params.risk_lambda * float(M.mu[w]) * g_new
        c.thr[w] = inst.threshold_of(inst.rows_cost(w, d.rows))
    return decided


def verify(engine: PortfolioEngine, inst: Instance, c: DecisionCache, decided: dict[int, Decision],
           usage: F64) -> tuple[dict[str, list[Assignment]], dict[str, float]]:
    """The re-decided part as assignments, verified against everything else from scratch (`evaluate`); a
    plan that fails is dropped (with an internal report). Returns the new plans and their objective terms."""
    widx = engine._widx
    # verify the re-decided part against everything else, from scratch
    new_plan: dict[str, list[Assignment]] = {}
    for w, d in decided.items():
        wid = inst.ids[w]
        new_plan[wid] = [Assignment(workload_id=wid, offer=inst.offer_keys[o], instances=int(n),
                                    usd_per_hour=float(n * inst.price[o])) for o, n in d.rows]
    others = usage.copy()
    for d in decided.values():
        for o, n in d.rows:
            others[o] -= n
    ev = evaluate(inst, new_plan, offer_index=engine._oidx, used=others, workload_index=widx)
    if not ev.ok:  # never return a plan that breaks a hard constraint
        # a quota over its limit indicts only the re-decided plans on offers it covers (a plan in force
        # not re-decided now may hold more than a lowered quota allows until it is asked for)
        over_q = np.flatnonzero(pl.quota_left(inst, usage) < -1e-9) if inst.quotas else np.zeros(0, np.int64)
        # and an offer over its capacity only the re-decided plans on it (not every re-decided plan)
        full = set(np.flatnonzero(usage > inst.capacity + 1e-9).tolist())
        for wid in list(new_plan):
            rows_w = decided[widx[wid]].rows
            on_over = bool(over_q.size) and any(bool(inst.qmask[over_q, o].any()) for o, _ in rows_w)
            on_full = any(o in full for o, _ in rows_w)
            if on_over or on_full or any(v.startswith(wid + ":") for v in ev.violations):
                w = widx[wid]
                new_plan.pop(wid)
                d = decided.pop(w)
                for o, n in c.rows.pop(w, ()):
                    usage[o] -= n
                c.reports[w] = InfeasibilityReport(
                    wid, f"internal: repaired plan failed verification ({'; '.join(ev.violations)[:300]})",
                    "capacity")
    return new_plan, ev.per_workload


def update_codes(inst: Instance, c: DecisionCache, A: set[int], runner_only: set[int],
                 decided: dict[int, Decision]) -> None:
    """The (workload, offer) codes of every plan and runner-up (sorted), for the screen of changed offers; only
    those of A and the runner-only workloads changed, so only theirs are replaced (code // n_offers = w)."""
    for w in A:
        c.codes_runner.pop(w, None)
    for w, d in decided.items():
        if d.runner is not None:
            c.codes_runner[w] = w * inst.n_offers + d.runner[0]
    # the (workload, offer) codes of every plan and runner-up (sorted); only those of A and the
    # runner-only workloads changed, so only theirs are replaced (a code's workload is code // n_offers)
    if c.codes is None:
        codes = [w * inst.n_offers + o for w, rows in c.rows.items() for o, _ in rows]
        codes += list(c.codes_runner.values())
        c.codes = np.unique(np.array(codes, np.int64)) if codes else np.zeros(0, np.int64)
    elif A or runner_only:
        moved = np.array(sorted(A | runner_only), np.int64)
        old_codes = c.codes
        kept = old_codes[~sorted_member(old_codes // inst.n_offers, moved)]
        new_codes = [w * inst.n_offers + o for w in moved.tolist() for o, _ in c.rows.get(w, ())]
        new_codes += [c.codes_runner[w] for w in moved.tolist() if w in c.codes_runner]
        c.codes = np.union1d(kept, np.array(new_codes, np.int64))

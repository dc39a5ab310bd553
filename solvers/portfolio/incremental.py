"""Which workloads a solve re-decides: the incremental part of the integer phase.

A workload w asked for (`want`) is re-decided when (a) nothing is cached, or (b) its LP values moved (the
rounding reads only the LP support {o: x_wo > 0} and the integer parts floor(x_wo): re-decide where those
moved, or its keep column's value), or (c) a changed offer o is in its plan or runner-up (unless o only got
cheaper there: a one-offer plan in force, or the runner-up, is then repriced in the cache), or gives it an
admissible single-offer plan cheaper than its plan by the hysteresis threshold,

    n_single_wo m_wo < chosen_w   and   n_single_wo (m_wo - lambda mu_w g_o) < chosen_w - theta_w,

or, when it has no plan, could hold one instance of o and o got better (cheaper, back in stock, more
capacity: nothing else can give it one), or (d) the concentration prices pi_G of its groups moved, or (e) an
offer it holds lost capacity below what the cached plans hold, or (f) one of these held in an earlier solve
that did not ask for it (`DecisionCache.dirty`). With `cg_budget_s`, the workloads re-decided for (b) alone
are at most LP_REDECIDE_PER_SOLVE per solve less those re-decided for the other reasons, at least
LP_REDECIDE_MIN (the rest wait in `lp_dirty`, longest waiting first). Otherwise a decision stands against
the same LP solution and prices (approximated: capacity interplay with re-decided workloads, which see the
capacity the others hold, and the rounding's fill, which can pick a changed offer).

Where a decision stands but an input of its explanation moved, the cache is brought up to date in place:
a runner-up that got dearer or went is found again (`refresh_runner`); a plan in force whose offer got
cheaper to plan on, or changed its market price only, is repriced (`stands_repriced`, `reprice_kept`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from schemas.events import Assignment
from solvers import placement as pl
from solvers.instance import F64, Instance
from solvers.portfolio.cache import DecisionCache
from solvers.portfolio.candidates import single_candidates
from solvers.portfolio.master import Master
from solvers.portfolio.pairs import Pairs, Rows, rows_metric, sorted_member

if TYPE_CHECKING:
    from solvers.portfolio.engine import PortfolioEngine

# with a column-generation budget, the workloads a solve re-decides because their LP values moved (and no
# event forces it): LP_REDECIDE_PER_SOLVE, less one per workload an event forces, at least LP_REDECIDE_MIN
LP_REDECIDE_PER_SOLVE = 32
LP_REDECIDE_MIN = 8


def affected(engine: PortfolioEngine, inst: Instance, P: Pairs, M: Master, c: DecisionCache, xe: F64, kv: F64,
             conc_g: F64, want: set[int]) -> tuple[set[int], set[int], set[int]]:
    """The workloads to re-decide now (A), those whose runner-up alone changed (runner_only: their cached
    explanation was updated in place) and those whose runner-up must be found again after the decisions
    (R). Updates the cache's per-pair metric, `dirty` and `lp_dirty` sets and reprices the plans that stand.
    `xe`, `kv`: the LP values now (per master pair column, keep columns folded in; per workload, the keep
    value not representable by pair columns); `conc_g`: the concentration prices now."""
    W = inst.n_workloads
    if not c.fresh:
        A: set[int] = set()
        runner_only: set[int] = set()
        prev, kv_before, conc_before, metric_before, codes = c.xv, c.kv, c.conc, c.metric, c.codes
        assert prev is not None and kv_before is not None and conc_before is not None
        assert metric_before is not None and codes is not None   # (set by the phase that made the decisions)
        if prev.size < xe.size:
            prev = np.concatenate([prev, np.zeros(xe.size - prev.size)])
        # the rounding reads only the LP support and its integer parts: re-decide where those moved
        dx = np.nonzero(((xe > 1e-7) != (prev > 1e-7)) | (np.floor(xe + 1e-6) != np.floor(prev + 1e-6)))[0]
        dp = M.col_pair[dx]
        A.update(np.unique(P.w[dp[dp >= 0]]).tolist())
        A.update(np.nonzero(np.abs(kv - kv_before) > 1e-9)[0].tolist())
        L = set(A)               # re-decided for the LP's sake only, unless an event hits them too (E)
        E: set[int] = set()
        R: set[int] = set()      # only their runner-up got dearer (or went): refreshed, not re-decided
        metric = metric_before   # (c.metric: replaced when concentration prices moved, else updated in place)
        repriced: list[int] = []   # workloads whose plan in force stands at new prices (`stands_repriced`)
        dg = np.nonzero(np.abs(conc_g - conc_before) > 1e-9)[0]
        if dg.size:
            moved_g = np.zeros(conc_g.size, np.bool_)
            moved_g[dg] = True
            hit = moved_g[M.grp_pair]
            E.update(np.unique(P.w[hit]).tolist())
            A |= E
            metric = c.metric = M.cost + conc_g[M.grp_pair] * P.g
        n_conc = len(E)
        changed = np.array(sorted(engine._changed_offers), np.int64)
        if changed.size:
            pc = np.concatenate([P.by_offer[P.offer_ptr[o]:P.offer_ptr[o + 1]] for o in changed])
            m_old = metric_before[pc].copy()
            metric[pc] = M.cost[pc] + conc_g[inst.group[P.o[pc]]] * P.g[pc]
            pw = P.w[pc]
            sm = P.n_single[pc] * metric[pc]
            codes_pc = pw * inst.n_offers + P.o[pc]
            used = sorted_member(codes_pc, codes)
            # An offer of the plan or the runner-up that only got cheaper (and stays available) forces
            # nothing: the runner-up is repriced below; a one-offer plan in force gained against every
            # alternative (one holding more of the offer holds more GPUs than the plan, so costs more).
            # The single-offer test below still catches a cheaper single plan on it.
            # A multi-offer plan in force whose offer only changed its market price (same planning
            # cost) stands too: every candidate costs what it did (see `_stands_repriced`).
            cheaper = used & inst.available[P.o[pc]] & (metric[pc] <= m_old + 1e-12)
            same = np.abs(metric[pc] - m_old) <= 1e-12
            plan_cheaper = np.zeros(pc.size, np.bool_)
            for k in np.flatnonzero(cheaper).tolist():
                w = int(pw[k])
                rows = c.rows.get(w, ())
                if c.codes_runner.get(w) == int(codes_pc[k]):
                    continue
                if stands_repriced(engine, inst, P, c, w, rows, int(pc[k]), bool(same[k])):
                    repriced.append(w)
                    plan_cheaper[k] = True
                else:
                    cheaper[k] = False
            used &= ~cheaper
            # the runner-up got dearer or went, and the plan does not hold it: the decision stands (an
            # alternative it beat only got worse); its runner-up and explanation are refreshed below
            runner_hit = np.zeros(pc.size, np.bool_)
            for k in np.flatnonzero(used).tolist():
                runner_hit[k] = c.codes_runner.get(int(pw[k])) == int(codes_pc[k])
            if engine.refresh_runners:
                used &= ~runner_hit
                R.update(np.unique(pw[runner_hit]).tolist())
            # could replace the plan in force: cheaper including the migration term, and by at
            # least the hysteresis threshold without it
            sm_base = sm - inst.params.risk_lambda * M.mu[pw] * P.g[pc] * P.n_single[pc]
            ch = c.chosen[pw]
            po_ = P.o[pc]
            n1 = P.n_single[pc]
            # the single-offer plan is admissible (as in _single_candidates, capacity aside) ...
            single_ok = (inst.available[po_] & P.single_fits[pc] & (n1 * P.g[pc] <= inst.max_gpus[pw])
                         & (n1 * inst.price[po_] <= inst.budget[pw] * (1 + 1e-9))
                         & (~inst.spot[po_] | (inst.spot_share[pw] >= 1.0)))
            # ... or, for a workload with no plan, one instance of the offer could be part of one. Such a
            # workload has no admissible plan in the capacity left: an offer's change can only give it one
            # when the offer got better (its market or planning price or risk fell, it became available
            # or gained capacity); after a rise alone it stays where it was, and is not diagnosed again
            better_o = np.zeros(inst.n_offers, np.bool_)
            for o in changed.tolist():
                better_o[o] = (inst.price[o] < engine._price_before.get(o, inst.price[o])
                               or (inst.available[o] and not c.avail[o]) or inst.capacity[o] > c.cap[o])
            stuck = (ch == math.inf) & ~better_o[po_] & (metric[pc] >= m_old - 1e-12 * (1 + np.abs(m_old)))
            placeable = (np.isinf(ch) & ~stuck & inst.available[po_] & (P.g[pc] <= inst.max_gpus[pw])
                         & (inst.price[po_] <= inst.budget[pw] * (1 + 1e-9))
                         & (~inst.spot[po_] | (inst.spot_share[pw] > 0.0)))
            hit = used | placeable | (single_ok & ~stuck & (sm < ch + 1e-9) & (sm_base < ch - c.thr[pw] + 1e-9))
            E.update(np.unique(pw[hit]).tolist())
            A |= E
            # cheaper than the runner-up only: the decision stands, the explanation changes
            feas1 = (~hit & ~plan_cheaper & (sm < c.runner[pw] - 1e-9) & single_ok
                     & (n1 <= inst.capacity[po_] - c.usage[po_] + 1e-9))
            new_runner: list[tuple[int, int]] = []   # (workload, k), in order
            for k in np.flatnonzero(feas1).tolist():
                w = int(pw[k])
                if w in A or sm[k] >= c.runner[w] - 1e-9:
                    continue
                runner_only.add(w)
                c.runner[w] = float(sm[k])
                c.codes_runner[w] = w * inst.n_offers + int(po_[k])
                if inst.ids[w] in c.expl:
                    new_runner.append((w, k))
            if new_runner:   # their explanations, with the reduced costs computed in one pass
                rcs = M.reduced_costs(pc[[k for _, k in new_runner]]).tolist()
                for (w, k), rc_k in zip(new_runner, rcs, strict=True):
                    wid = inst.ids[w]
                    x = c.expl[wid]
                    rc = dict(x.reduced_costs)
                    rc[inst.keys[int(po_[k])]] = float(rc_k)
                    c.expl[wid] = x.model_copy(update={
                        "runner_up": inst.keys[int(po_[k])], "reduced_costs": rc,
                        "runner_up_delta_usd_per_hour": float(sm[k]) - float(c.chosen[w])})
            over = np.nonzero(c.usage[changed] > inst.capacity[changed] + 1e-9)[0]
            for o in changed[over].tolist():
                E.update(w for w, rows in c.rows.items() if any(a == o for a, _ in rows))
        # inputs of workloads outside `ids` may have moved too: remember them until they are asked for
        n_events = len(E)
        E |= c.dirty | (R - want)
        L = (L | set(c.lp_dirty)) - E
        # With a column-generation budget, the LP keeps moving between events (warm() completes it), and
        # re-deciding every workload whose LP values moved made some steps several times longer. Those
        # re-decisions only look for a better plan (an event that touches a workload's plan puts it in E):
        # at most LP_REDECIDE_PER_SOLVE per solve, fewer when events already force re-decisions (a
        # capacity loss displacing 100+ workloads: those steps make the latency's tail), never fewer than
        # LP_REDECIDE_MIN; longest waiting first; the rest wait in `lp_dirty`.
        queue = list(dict.fromkeys(w for w in (*c.lp_dirty, *sorted(L)) if w in L))   # longest waiting first
        now_l = [w for w in queue if w in want]
        forced = E & want
        if engine.cg_budget_s is not None:
            now_l = now_l[:max(LP_REDECIDE_MIN, LP_REDECIDE_PER_SOLVE - len(forced))]
        A = forced | set(now_l)
        # why workloads are re-decided: LP values moved / concentration prices / changed offers, this
        # solve; forced now (events, and leftovers of earlier solves); all; and the ones now
        engine.last_timings.update(affected_lp=len(L), affected_conc=n_conc, affected_events=n_events,
                                 affected_forced=len(forced), affected_all=len(E | L), affected_now=len(A))
        standing = [w for w in dict.fromkeys(repriced) if w not in A]
        for w in standing:
            reprice_kept(engine, inst, P, M, c, w)
        engine.last_timings["repriced"] = len(standing)
        c.dirty = E - want
        c.lp_dirty = dict.fromkeys(w for w in queue if w not in A)
        R = (R & want) - A - E
        runner_only |= R
        engine.last_timings["runner_refreshed"] = len(R)
    else:
        c.metric = M.cost + conc_g[M.grp_pair] * P.g
        A = want
        c.dirty = set(range(W)) - want
        c.lp_dirty = {}
        runner_only = set()
        R = set()
    return A, runner_only, R


def refresh_runner(engine: PortfolioEngine, inst: Instance, P: Pairs, M: Master, c: DecisionCache, w: int,
                   metric_unit: F64, usage: F64) -> None:
    """w's decision stands but its runner-up got dearer or went: find the runner-up again (as `candidates.decide`
    would, against the capacity the others hold now) and bring the explanation up to date."""
    rows = c.rows.get(w)
    wid = inst.ids[w]
    if not rows or wid not in c.expl:
        return
    cap_left = inst.capacity - usage
    for o, n in rows:
        cap_left[o] += n
    singles, _ = single_candidates(inst, P, M, w, metric_unit, cap_left, any_capacity=engine._any_capacity)
    mine = {o for o, _ in rows}
    runner = next(((j, m) for j, m in singles if int(P.o[j]) not in mine), None)
    x = c.expl[wid]
    rc = {k: v for k, v in x.reduced_costs.items() if k in x.chosen}
    c.codes_runner.pop(w, None)
    if runner is None:
        c.runner[w] = math.inf
        c.expl[wid] = x.model_copy(update={"runner_up": None, "runner_up_delta_usd_per_hour": None,
                                              "reduced_costs": rc})
        return
    j, m = runner
    o = int(P.o[j])
    c.runner[w] = m
    c.codes_runner[w] = w * inst.n_offers + o
    rc[inst.keys[o]] = float(M.reduced_costs(np.array([j], np.int64))[0])
    c.expl[wid] = x.model_copy(update={"runner_up": inst.keys[o], "reduced_costs": rc,
                                          "runner_up_delta_usd_per_hour": m - float(c.chosen[w])})

def stands_repriced(engine: PortfolioEngine, inst: Instance, P: Pairs, c: DecisionCache, w: int, rows: Rows,
                    j: int, same: bool) -> bool:
    """w's plan in force holds pair j's offer, which got cheaper to plan on (or, `same`, costs the same to
    plan on while its market price moved): does the decision stand without a re-decision?

    A one-offer plan gained against every alternative (one holding more of the offer holds more GPUs,
    so costs more). A plan of several offers stands when only the market price moved (`same`, with
    `reprice_plans`): every candidate costs what it did, except for the budget, which is on market
    prices. So, either way, the plan must still fit the budget and not newly reach it (the
    explanation would change), and, for several offers, a single-offer plan on the offer must stay
    within (or over) the budget as it was (the candidates would change).
    """
    wid = inst.ids[w]
    if not rows or inst.current.get(wid) != rows or wid in inst.stale_plan:
        return False
    if len(rows) > 1 and not (same and engine.reprice_plans):
        return False
    if not pl.plan_ok(inst, w, rows):
        return False
    B = float(inst.budget[w])
    usd = sum(float(inst.price[o]) * n for o, n in rows)
    x = c.expl.get(wid)
    if usd >= B - 1e-6 * max(1.0, B) and (x is None or "budget" not in x.binding_constraints):
        return False
    if len(rows) > 1:
        o, n1 = int(P.o[j]), float(P.n_single[j])
        before = engine._price_before.get(o, float(inst.price[o]))
        if (n1 * before <= B * (1 + 1e-9)) != (n1 * float(inst.price[o]) <= B * (1 + 1e-9)):
            return False
    return True

def reprice_kept(engine: PortfolioEngine, inst: Instance, P: Pairs, M: Master, c: DecisionCache, w: int) -> None:
    """w's plan in force stands (`stands_repriced`): bring its cached metric, hysteresis threshold,
    objective, explanation and assignments to the new prices."""
    wid = inst.ids[w]
    rows = c.rows[w]
    assert c.metric is not None
    # keep-like: no migration term
    c.chosen[w] = rows_metric(P, w, rows, c.metric, inst.params.risk_lambda * float(M.mu[w]))
    cost = inst.rows_cost(w, rows)
    c.thr[w] = inst.threshold_of(cost)
    if wid in c.obj:
        c.obj[wid] = cost
    engine.plan[wid] = [Assignment(workload_id=wid, offer=inst.offer_keys[o], instances=int(n),
                                 usd_per_hour=float(n * inst.price[o])) for o, n in rows]
    usd = sum(a.usd_per_hour for a in engine.plan[wid])
    x = c.expl.get(wid)
    if x is not None:
        binding = x.binding_constraints
        at_budget = usd >= inst.budget[w] - 1e-6 * max(1.0, inst.budget[w])
        if "budget" in binding and "budget" not in x.duals and not at_budget:
            binding = [b for b in binding if b != "budget"]
        delta = float(c.runner[w]) - float(c.chosen[w]) if math.isfinite(c.runner[w]) else None
        c.expl[wid] = x.model_copy(update={"usd_per_hour": usd, "binding_constraints": binding,
                                              "runner_up_delta_usd_per_hour": delta})

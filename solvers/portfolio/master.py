"""The restricted master LP, alive in one highspy.Highs object between events, and column generation.

THE LP (the relaxation of the portfolio model in solvers/portfolio/__init__.py; x, z continuous)
    min  sum_wo c_wo x_wo + sum_w c^keep_w z_w + lambda * kappa_pen * sum_G e_G + sum_w M_w u_w
    s.t. sum_o g_o x_wo + g^cur_w z_w + L_w u_w >= L_w               r_min[w]  (GPU floor, or unplaced)
         sum_o g_o x_wo + g^cur_w z_w + U_w u_w <= U_w               r_max[w]  (GPU ceiling)
         sum_o p_o x_wo + p^cur_w z_w <= B_w                         r_bud[w]  (budget, today's prices)
         sum_o (s_o - S_w) g_o x_wo + (...)z_w <= 0                   r_spot[w] (when S_w < 1 and w has spot pairs)
         sum_w x_wo + sum_w n^cur_wo z_w <= cap_o                    r_cap[o]  (lazily, once a column uses o)
         sum_{o in G} g_o x_wo (+ keep) - kappa T - e_G <= 0          r_grp[G]  (concentration soft cap)
         sum_o g_o x_wo (+ keep) - T = 0                             r_tot
  Columns: u_w (c_u), e_G (c_e), T (c_T), then pair columns x_wo as column generation adds them
  (`col_pair` maps a column to its pair) and one composite keep column z_w per workload with a plan in force
  (`set_keeps`: its whole current plan; tombstoned columns are reused). M_w = prio_w (unplaced_penalty +
  100 B_w). The optimum is a valid lower bound of the integer problem (the placement rules are not rows).

COLUMN GENERATION: start from the K cheapest columns per workload (and the plan in force); each round runs
the simplex from the current basis, prices every pair (solvers/portfolio/pricing.py) and adds the most
negative few per workload, until none prices out (`converged`: the restricted LP solves the full LP).
Dominated offers never price out before their dominator, so they are pruned implicitly. Presolve is off
(warm starts need this exact model's basis), HiGHS runs serial, warm re-solves use Devex dual pricing.
`run(time_limit_s, stop)` may end early (HiGHS callback polling `stop`): x, y and lp_obj then stay those of
the last optimal run, and the next run continues from where it stopped.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Any

import highspy
import numpy as np

from solvers.instance import F64, I64, Instance
from solvers.portfolio.pairs import Pairs
from solvers.portfolio.pricing import Pricing

INF = highspy.kHighsInf
RC_TOL = 1e-7


class Master(Pricing):
    """The restricted master LP, alive in a highspy.Highs object."""

    def __init__(self, inst: Instance, pairs: Pairs, cost: F64, mu: F64, time_limit_s: float) -> None:
        self.inst = inst
        self.pairs = pairs
        h = _quiet_highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("presolve", "off")       # warm starts need the basis of this exact model
        # serial: the simplex is serial anyway, and on a small shared machine the thread pool's
        # synchronisation cost ~20 ms per run (a warm run with 0 iterations: 25 ms -> 2.5 ms)
        h.setOptionValue("threads", 1)
        h.setOptionValue("parallel", "off")
        h.setOptionValue("time_limit", float(time_limit_s))
        self.time_limit_s = float(time_limit_s)
        self.h = h
        W, n = inst.n_workloads, inst.n_offers
        # rows -----------------------------------------------------------------------------
        lo: list[F64] = []
        hi: list[F64] = []
        r = 0
        self.r_min = np.arange(W, dtype=np.int64)
        self.r_max = W + np.arange(W, dtype=np.int64)
        self.r_bud = 2 * W + np.arange(W, dtype=np.int64)
        lo += [inst.min_gpus.astype(float), np.full(W, -INF), np.full(W, -INF)]
        hi += [np.full(W, INF), inst.max_gpus.astype(float), inst.budget.copy()]
        r = 3 * W
        has_spot = np.zeros(W, bool)
        if pairs.size:
            np.logical_or.at(has_spot, pairs.w, inst.spot[pairs.o])
        need_spot = has_spot & (inst.spot_share < 1.0)
        self.r_spot = np.full(W, -1, np.int64)
        k = int(need_spot.sum())
        self.r_spot[need_spot] = r + np.arange(k)
        lo.append(np.full(k, -INF))
        hi.append(np.zeros(k))
        r += k
        # capacity rows are created lazily, when a column of a finite-capacity offer enters the
        # master (an empty row is never binding; ~1/3 of the rows at 10k offers)
        self.r_cap = np.full(n, -1, np.int64)
        nG = len(inst.groups)
        self.r_grp = r + np.arange(nG, dtype=np.int64)
        lo.append(np.full(nG, -INF))
        hi.append(np.zeros(nG))
        r += nG
        self.r_tot = r
        lo.append(np.zeros(1))
        hi.append(np.zeros(1))
        r += 1
        self.n_rows = r
        h.addRows(r, np.concatenate(lo), np.concatenate(hi), 0, np.zeros(r + 1, np.int32),
                  np.zeros(0, np.int32), np.zeros(0))
        # structural columns: u_w, e_G, T ----------------------------------------------------
        p = inst.params
        M = inst.priority * (p.unplaced_penalty_usd_per_hour + 100.0 * inst.budget)
        self.c_u = self._add_cols(M, np.ones(W), [
            [(int(self.r_min[w]), float(inst.min_gpus[w])), (int(self.r_max[w]), float(inst.max_gpus[w]))]
            for w in range(W)])
        self.c_e = self._add_cols(np.full(nG, p.risk_lambda * p.concentration_penalty_usd_per_gpu_hour),
                                  np.full(nG, INF), [[(int(self.r_grp[G]), -1.0)] for G in range(nG)])
        kap = p.concentration_cap
        self.c_T = int(self._add_cols(np.zeros(1), np.full(1, INF),
                                      [[(int(rg), -kap) for rg in self.r_grp] + [(self.r_tot, -1.0)]])[0])
        self.M = M
        # pair columns (column generation) ---------------------------------------------------
        self.col_pair = np.zeros(0, np.int64)     # master column -> pair index (-1 for others)
        self.first_pair_col = h.getNumCol()
        self.in_master = np.zeros(pairs.size, bool)
        self.pair_col = np.full(pairs.size, -1, np.int64)
        self.keep_col = np.full(W, -1, np.int64)
        self.keep_rows: dict[int, tuple[tuple[int, int], ...]] = {}
        # w -> (its keep column, the coefficients it holds, by row): a replaced plan rewrites the same column
        # in place (kept when tombstoned), so plan changes never grow the LP (nor force a rebuild to compact it)
        self.keep_slot: dict[int, tuple[int, dict[int, float]]] = {}
        self.keep_pairs: dict[int, tuple[I64, F64]] = {}   # w -> (pair indices, instances) of its keep column
        self.keep_by_offer: dict[int, set[int]] = {}
        self._keep_flat: tuple[I64, I64, F64] | None = None  # (keep column, pair, instances), flattened
        self._support: tuple[F64, tuple[I64, F64, I64]] | None = None   # (x it was computed from, lp_support())
        self.x = np.zeros(0)
        self.y = np.zeros(self.n_rows)
        self.lp_obj = 0.0
        self.optimal = False
        self.optimal_at = -math.inf   # time.monotonic() of the last optimal run
        self.converged = False   # optimal, and no column prices out: the restricted LP solves the full LP
        self.iterations = 0
        self.runs = 0
        self.cost = cost
        self.mu = mu
        self.run_ms = self.price_ms = 0.0
        self.rounds = 0
        # static per-pair coefficients for pricing (price_pair is refreshed on price events)
        self.grp_pair = inst.group[pairs.o]
        self.spot_coef = (inst.spot[pairs.o] - inst.spot_share[pairs.w]) * pairs.g
        self.price_pair = inst.price[pairs.o].astype(np.float64)
        self.avail_pair = inst.available[pairs.o]   # (refreshed on offer events, as price_pair)
        self.seg_len = np.diff(pairs.ptr)
        self.by_group = np.argsort(self.grp_pair, kind="stable").astype(np.int64)
        self.group_ptr = np.searchsorted(self.grp_pair[self.by_group], np.arange(nG + 1)).astype(np.int64)
        self._rc: F64 | None = None            # last pricing, valid for duals _y_rc ...
        self._y_rc = np.zeros(0)
        self._dirty: list[I64] = []            # ... except pairs whose cost/coefficients changed since
        self.partial_pricings = 0

    # --- low-level helpers -------------------------------------------------------------------
    def _add_cols(self, cost: F64, ub: F64, entries: list[list[tuple[int, float]]]) -> I64:
        start = self.h.getNumCol()
        k = len(entries)
        if k == 0:
            return np.zeros(0, np.int64)
        starts = np.zeros(k, np.int32)
        idx: list[int] = []
        val: list[float] = []
        for j, e in enumerate(entries):
            starts[j] = len(idx)
            for ri, v in e:
                idx.append(ri)
                val.append(v)
        self.h.addCols(k, np.asarray(cost, float), np.zeros(k), np.asarray(ub, float), len(idx), starts,
                       np.asarray(idx, np.int32), np.asarray(val, float))
        return start + np.arange(k, dtype=np.int64)

    def pair_entries(self, pidx: I64) -> tuple[I64, I64, F64]:
        """(column start offsets, row indices, values) of pair columns, vectorised."""
        inst, P = self.inst, self.pairs
        w, o, g = P.w[pidx], P.o[pidx], P.g[pidx]
        k = pidx.size
        rows = [self.r_min[w], self.r_max[w], self.r_bud[w], self.r_grp[inst.group[o]],
                np.full(k, self.r_tot), self.r_spot[w], self.r_cap[o]]
        vals = [g, g, inst.price[o], g, g, (inst.spot[o].astype(float) - inst.spot_share[w]) * g, np.ones(k)]
        R = np.stack(rows, 1)
        V = np.stack(vals, 1)
        ok = R >= 0
        counts = ok.sum(1)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        return starts, R[ok], V[ok]

    def ensure_cap_rows(self, offers: I64) -> None:
        inst = self.inst
        if offers.size <= 4 and all(self.r_cap[x] >= 0 or not math.isfinite(inst.capacity[x]) for x in offers.tolist()):
            return   # (the common case, a plan's few offers, without numpy's per-call overhead)
        o = np.unique(offers)
        o = o[(self.r_cap[o] < 0) & np.isfinite(inst.capacity[o])]
        if not o.size:
            return
        k = int(o.size)
        self.h.addRows(k, np.full(k, -INF), inst.capacity[o].astype(float), 0, np.zeros(k + 1, np.int32),
                       np.zeros(0, np.int32), np.zeros(0))
        self.r_cap[o] = self.n_rows + np.arange(k)
        self.n_rows += k
        self.y = np.concatenate([self.y, np.zeros(k)])

    def add_pairs(self, pidx: I64) -> None:
        pidx = pidx[~self.in_master[pidx]]
        if not pidx.size:
            return
        self.ensure_cap_rows(self.pairs.o[pidx])
        starts, R, V = self.pair_entries(pidx)
        ub = np.where(self.inst.available[self.pairs.o[pidx]], INF, 0.0)
        first = self.h.getNumCol()
        self.h.addCols(pidx.size, self.cost[pidx], np.zeros(pidx.size), ub, R.size, starts.astype(np.int32),
                       R.astype(np.int32), V)
        cols = first + np.arange(pidx.size, dtype=np.int64)
        self.in_master[pidx] = True
        self.pair_col[pidx] = cols
        self.col_pair = np.concatenate([self.col_pair, np.full(first - self.first_pair_col - self.col_pair.size, -1),
                                        pidx])

    def rows_pairs(self, w: int, rows: tuple[tuple[int, int], ...]) -> tuple[list[int], list[int]]:
        """The pair indices of w's plan rows that are pairs of w, and their instance counts (scalar
        bisection in w's segment, whose offers are sorted: a plan has a few rows)."""
        P = self.pairs
        s, e = int(P.ptr[w]), int(P.ptr[w + 1])
        js: list[int] = []
        ns: list[int] = []
        for a, n in rows:
            j = bisect_left(P.o, a, s, e)
            if j < e and P.o[j] == a:
                js.append(j)
                ns.append(n)
        return js, ns

    def set_keeps(self, items: Sequence[tuple[int, tuple[tuple[int, int], ...] | None]]) -> None:
        """(Re)place the composite 'keep current plan' columns of workloads [(w, rows or None)], each w
        once. A workload's column is kept when it is tombstoned (bounds 0) and reused for its next plan,
        rewriting only the coefficients that differ (inserting or deleting a coefficient shifts HiGHS's
        column-wise matrix); column costs and bounds are changed, and new columns added, in one call each
        (a step that moves 200 workloads adopts their plans: per-column calls were a third of that)."""
        inst, h = self.inst, self.h
        avail, price = inst.available, inst.price
        cost_of: dict[int, float] = {}       # column -> new cost
        ub_of: dict[int, float] = {}         # column -> new upper bound (lower bounds stay 0)
        live: list[tuple[int, tuple[tuple[int, int], ...]]] = []
        for w, rows in items:
            old = int(self.keep_col[w])
            if old >= 0 and rows and rows == self.keep_rows.get(w) and all(avail[a] for a, _ in rows):
                # same rows (a price moved): only the cost and the budget coefficient change
                rb = int(self.r_bud[w])
                if rb >= 0:
                    v = sum(n * float(price[o]) for o, n in rows)
                    h.changeCoeff(rb, old, v)
                    self.keep_slot[w][1][rb] = v
                cost_of[old] = inst.rows_cost(w, rows)
                continue
            if old >= 0:
                ub_of[old] = 0.0      # tombstone
                self.keep_col[w] = -1
                for oo, _ in self.keep_rows.pop(w, ()):
                    self.keep_by_offer.get(oo, set()).discard(w)
                self.keep_pairs.pop(w, None)
                self._keep_flat = None
            if rows and all(avail[a] for a, _ in rows):
                live.append((w, rows))
        if live:
            self.ensure_cap_rows(np.fromiter((a for _, rows in live for a, _ in rows), np.int64))
        fresh: list[tuple[int, tuple[tuple[int, int], ...], dict[int, float], float]] = []
        r_tot = self.r_tot
        for w, rows in live:
            acc: dict[int, float] = {}
            rmin, rmax, rbud, rspot = int(self.r_min[w]), int(self.r_max[w]), int(self.r_bud[w]), int(self.r_spot[w])
            share = float(inst.spot_share[w])
            for oi, ni in rows:
                gi = float(inst.gpus[oi]) * ni
                for ri, v in ((rmin, gi), (rmax, gi), (rbud, ni * float(price[oi])),
                              (rspot, (float(inst.spot[oi]) - share) * gi), (int(self.r_cap[oi]), float(ni)),
                              (int(self.r_grp[inst.group[oi]]), gi), (r_tot, gi)):
                    if ri >= 0:
                        acc[ri] = acc.get(ri, 0.0) + v
            cost = inst.rows_cost(w, rows)
            if w in self.keep_slot:  # reuse the workload's tombstoned column: rewrite the coefficients that differ
                col, held = self.keep_slot[w]
                for ri in held.keys() - acc.keys():
                    h.changeCoeff(ri, col, 0.0)
                for ri, v in acc.items():
                    if held.get(ri) != v:
                        h.changeCoeff(ri, col, v)
                cost_of[col] = cost
                ub_of[col] = 1.0
                self._register_keep(w, col, rows, acc)
            else:
                fresh.append((w, rows, acc, cost))
        if fresh:
            cols = self._add_cols(np.array([f[3] for f in fresh]), np.ones(len(fresh)),
                                  [sorted(f[2].items()) for f in fresh])
            for (w, rows, acc, _), col in zip(fresh, cols.tolist(), strict=True):
                self._register_keep(w, col, rows, acc)
        if cost_of:
            h.changeColsCost(len(cost_of), np.fromiter(cost_of, np.int32, len(cost_of)),
                             np.fromiter(cost_of.values(), np.float64, len(cost_of)))
        if ub_of:
            h.changeColsBounds(len(ub_of), np.fromiter(ub_of, np.int32, len(ub_of)), np.zeros(len(ub_of)),
                               np.fromiter(ub_of.values(), np.float64, len(ub_of)))

    def _register_keep(self, w: int, col: int, rows: tuple[tuple[int, int], ...], acc: dict[int, float]) -> None:
        self.keep_slot[w] = (col, acc)
        self.keep_col[w] = col
        self.keep_rows[w] = rows
        js, ns = self.rows_pairs(w, rows)
        self.keep_pairs[w] = (np.array(js, np.int64), np.array(ns, np.float64))
        for oi, _ in rows:
            self.keep_by_offer.setdefault(oi, set()).add(w)
        self._keep_flat = None

    def lp_support(self) -> tuple[I64, F64, I64]:
        """The pairs the last LP solution gives a positive value (sorted, so grouped by workload), their
        values, and each workload's range in them (`ptr`, as `Pairs.ptr`): computed once per solution
        from the master's columns, rather than per workload over all its pairs."""
        if self._support is None or self._support[0] is not self.x:
            x, f0 = self.x, self.first_pair_col
            nx = max(0, min(x.size - f0, self.col_pair.size))
            j = np.flatnonzero(x[f0:f0 + nx] > 1e-7)
            pj = self.col_pair[j]
            keep = pj >= 0
            pj, v = pj[keep], x[f0 + j[keep]]
            order = np.argsort(pj, kind="stable")
            pj, v = pj[order].astype(np.int64), v[order]
            self._support = (x, (pj, v, np.searchsorted(pj, self.pairs.ptr).astype(np.int64)))
        return self._support[1]

    def keep_flat(self) -> tuple[I64, I64, F64]:
        if self._keep_flat is None:
            if self.keep_pairs:
                ws = np.fromiter(self.keep_pairs, np.int64, len(self.keep_pairs))
                parts = list(self.keep_pairs.values())
                sizes = np.fromiter((p.size for p, _ in parts), np.int64, len(parts))
                self._keep_flat = (np.repeat(self.keep_col[ws], sizes).astype(np.int64),
                                   np.concatenate([p for p, _ in parts]), np.concatenate([n for _, n in parts]))
            else:
                self._keep_flat = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
        return self._keep_flat

    # --- solve ---------------------------------------------------------------------------------
    def run(self, time_limit_s: float | None = None, stop: Callable[[], bool] | None = None) -> None:
        """One simplex run from the current basis. With `time_limit_s` or `stop` (polled every ~2 ms of
        the run) it may end early: then `optimal` is False, `x`, `y` and `lp_obj` stay those of the last
        optimal run (padded for rows added since), and the next run continues from where this one stopped."""
        h = self.h
        # HiGHS's time limit is on its run clock, which adds up over all runs of this model: a limit per run
        # is an offset from where that clock stands (a plain limit would cut every run short once the
        # model had run that long in total, e.g. after an hour of events)
        limit = self.time_limit_s if time_limit_s is None else min(time_limit_s, self.time_limit_s)
        h.setOptionValue("time_limit", h.getRunTime() + limit)
        cb = None
        if stop is not None:
            last = [-math.inf]   # the first iteration polls: a run asked to stop before it starts does not

            def cb(ev: Any) -> None:   # every simplex iteration: poll `stop` at most every 2 ms
                now = time.perf_counter()
                stopping = False
                if now - last[0] >= 0.002:
                    last[0] = now
                    stopping = stop()
                # the flag is set either way: HiGHS (1.16) keeps an interrupt in the callback's input, so the
                # next run with a callback would end at its first iteration, and so would every run after it
                ev.interrupt(stopping)
            h.cbSimplexInterrupt += cb
        try:
            h.run()
        finally:
            if cb is not None:
                h.cbSimplexInterrupt -= cb
        st = h.getModelStatus()
        self.optimal = st == highspy.HighsModelStatus.kOptimal
        if self.optimal:
            self.optimal_at = time.monotonic()
        info = h.getInfo()
        self.iterations += int(info.simplex_iteration_count)
        if st in (highspy.HighsModelStatus.kTimeLimit, highspy.HighsModelStatus.kInterrupt) and self.runs:
            if self.y.size < self.n_rows:
                self.y = np.concatenate([self.y, np.zeros(self.n_rows - self.y.size)])
            return
        if self.optimal and not self.runs:
            # warm re-solves from here: Devex pricing. A re-solve after an event is a few hundred dual simplex
            # iterations from an optimal basis, and dual steepest edge's exact weights cost more per iteration
            # than they save there (measured on capacity-loss re-solves at 1,000 x 10,000: simplex 26 -> 15 ms,
            # 66 -> 25 ms); the cold first solve keeps HiGHS's default choice, which is faster there
            h.setOptionValue("simplex_dual_edge_weight_strategy", 1)
        self.runs += 1
        sol = h.getSolution()
        self.x = np.asarray(sol.col_value)
        self.y = np.asarray(sol.row_dual)
        self.lp_obj = float(info.objective_function_value)

    def column_generation(self, per_workload: int = 8, max_rounds: int = 100, budget_s: float | None = None,
                          stop: Callable[[], bool] | None = None) -> int:
        """Rounds of (simplex, pricing, add columns) until no column prices out (`converged`).

        `budget_s`: one run only, of at most that long; when it does not finish, the last optimal
        solution stands (see `run`). `stop`: no new round once it returns True, and the run in progress
        ends early. Either leaves the restricted master short of the full LP's optimum (not `converged`),
        for a later call to complete.
        """
        rounds = 0
        P = self.pairs
        self.run_ms = self.price_ms = 0.0
        self.converged = False
        while True:
            t0 = time.perf_counter()
            self.run(budget_s, stop)
            t1 = time.perf_counter()
            self.run_ms += (t1 - t0) * 1000
            rounds += 1
            if not self.optimal or rounds >= max_rounds or budget_s is not None or (stop is not None and stop()):
                break
            rc = self.price(stop)
            self.price_ms += (time.perf_counter() - t1) * 1000
            if rc is None or (stop is not None and stop()):   # stopped (the pricing is cached for next time)
                break
            cand = np.flatnonzero(rc < -RC_TOL)
            cand = cand[(rc[cand] < -RC_TOL * (1.0 + np.abs(self.cost[cand]))) & ~self.in_master[cand]
                        & self.avail_pair[cand]]
            if not cand.size:
                self.converged = True
                break
            # the most negative few per workload
            order = np.lexsort((rc[cand], P.w[cand]))
            cand = cand[order]
            wc = P.w[cand]
            first = np.searchsorted(wc, wc, side="left")
            rank = np.arange(cand.size) - first
            self.add_pairs(cand[rank < per_workload])
        self.rounds = rounds
        return rounds

    def pair_values(self) -> F64:
        """LP value of every pair (0 when not in the master)."""
        v = np.zeros(self.pairs.size)
        idx = np.nonzero(self.in_master & (self.pair_col < self.x.size))[0]
        v[idx] = self.x[self.pair_col[idx]]
        return v


def _quiet_highs() -> highspy.Highs:
    """A Highs instance without its start-up banner (printed by the C++ constructor to fd 1, which would
    interleave with a CLI's output); logging is switched off right after."""
    import os
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        h = highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
    h.setOptionValue("output_flag", False)
    return h

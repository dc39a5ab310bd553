"""The facade: `PortfolioEngine` (schemas.market.AllocationEngine and WarmEngine) keeps the market, the
workloads and the plan in force, and the live model built from them; `solve()` brings the LP up to date and
runs the integer phase.

Lifecycle of an event (see solvers/portfolio/__init__.py for the model and the layout):
  * `upsert_offers` / `remove_offers` queue quote changes; a new offer key, or any workload, quota or plan
    change is structural: the next solve rebuilds the instance, pairs and master (`_rebuild`), with an empty
    decision cache;
  * otherwise `_sync` applies the queued quotes in place: pair costs c_wo, per-pair prices and availability,
    column costs, budget coefficients and bounds, capacity rows, keep columns on changed offers. A
    reduced-cost screen proves the LP optimum unchanged when every changed column has x = 0 and still
    rc >= 0 (no re-solve then);
  * `solve()` runs column generation when the LP is dirty (within `cg_budget_s` on warm solves: with 0, none,
    and the integer phase decides on the last optimal LP solution; unless the model has held changes no
    optimal LP run has seen for MAX_STALE_LP_S), then `integer.integer_phase`;
  * `settle()` adopts the result into the master (`_adopt`: the moved workloads' migration terms mu_w, pair
    costs, keep columns), deferred so the caller has the result first; every other method settles first;
  * `warm(stop)` uses idle time: completes column generation, then improves the integer plan with CP-SAT
    (solvers/portfolio/idle.py) as a candidate for the next solve; it never changes the plan in force.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace

import numpy as np

from schemas.events import Assignment, WorkloadSpec
from schemas.market import OfferQuote, SolveResult
from schemas.placement import GpuQuota
from solvers import placement as pl
from solvers.instance import F64, I64, EngineParams, Instance, build_instance
from solvers.portfolio.cache import DecisionCache
from solvers.portfolio.idle import IdleState, improve
from solvers.portfolio.integer import integer_phase
from solvers.portfolio.master import INF, RC_TOL, Master
from solvers.portfolio.pairs import Pairs, build_pairs, pair_costs, segments

# with a column-generation budget: a solve whose model has held changes that no optimal LP run has seen for
# longer than this runs the simplex to the end, whatever the budget (see PortfolioEngine.solve)
MAX_STALE_LP_S = 0.5


class PortfolioEngine:
    """Risk-aware portfolio allocation (implements schemas.market.AllocationEngine).

    >>> from schemas import OfferKey, Market, WorkloadSpec
    >>> e = PortfolioEngine()
    >>> k = OfferKey(provider="gcp", region="r", instance_type="a", gpu_model="L4", gpus_per_instance=1,
    ...              market=Market.ON_DEMAND)
    >>> e.upsert_offers([OfferQuote(k, usd_per_hour=1.0)])
    >>> e.upsert_workload(WorkloadSpec(workload_id="w", gpu_throughput={"L4": 1.0}, min_gpus=2, max_gpus=2,
    ...                                budget_usd_per_hour=5))
    >>> r = e.solve(); r.assignments[0].instances, r.infeasible
    (2, ())
    """

    name = "portfolio"
    # a workload whose runner-up only got dearer or went keeps its decision and has the runner-up found
    # again, instead of a full re-decision (False: re-decide it, as before; kept for the tests' comparison)
    refresh_runners = True
    # a multi-offer plan in force whose offer changed in its market price only (its planning price, the cost
    # decisions use, is unchanged: a forecast in force) keeps its decision with its price brought up to date,
    # instead of a full re-decision (False: re-decide it; kept for the tests' comparison)
    reprice_plans = True

    def __init__(self, risk_lambda: float = 1.0, migration_threshold_usd_per_hour: float = 0.5,
                 migration_threshold_fraction: float = 0.05, concentration_cap: float = 0.5,
                 concentration_penalty_usd_per_gpu_hour: float = 0.10, lp_time_limit_s: float = 60.0,
                 initial_columns_per_workload: int = 8, cg_budget_s: float | None = None,
                 params: EngineParams | None = None, joint_time_limit_s: float = 0.2,
                 idle_time_limit_s: float = 10.0) -> None:
        self.params = params or EngineParams(
            risk_lambda=risk_lambda, concentration_cap=concentration_cap,
            concentration_penalty_usd_per_gpu_hour=concentration_penalty_usd_per_gpu_hour,
            migration_threshold_usd_per_hour=migration_threshold_usd_per_hour,
            migration_threshold_fraction=migration_threshold_fraction)
        self.lp_time_limit_s = lp_time_limit_s
        self.k0 = initial_columns_per_workload
        # None: every solve runs column generation to the full LP's optimum. A number: a warm re-solve runs
        # the simplex once, for at most that many seconds, and decides on the result, or, when the run does
        # not finish, on the last optimal LP solution (the current prices, availability and capacity still
        # rule every decision). The rest waits for `warm()` (the decision stage calls it while idle) or the
        # next solve. 0: no simplex in a warm re-solve at all, the decision rests on the last optimal LP
        # solution and `warm()` re-solves after it (tests/benchmarks/bench_lp_deferral.py)
        self.cg_budget_s = cg_budget_s
        # CP-SAT time for the joint pass of competing workloads (solvers.joint); 0 turns it off
        self.joint_time_limit_s = joint_time_limit_s
        # CP-SAT time `warm()` may spend improving the integer plan per state (solvers/portfolio/idle.py); 0: off
        self.idle_time_limit_s = idle_time_limit_s
        self._idle: IdleState | None = None
        self._solves = 0
        self.quotes: dict[str, OfferQuote] = {}
        self.workloads: dict[str, WorkloadSpec] = {}
        self.plan: dict[str, list[Assignment]] = {}
        self.quotas: tuple[GpuQuota, ...] = ()
        self._inst: Instance | None = None
        self._pairs: Pairs | None = None
        self._master: Master | None = None
        self._oidx: dict[str, int] = {}
        self._place_offers: list[I64] = []
        self._widx: dict[str, int] = {}
        self._structural = True
        self._pending: dict[str, OfferQuote] = {}
        self._lp_dirty = True
        # since when the model holds changes that no optimal LP run has seen (None: it is up to date); a
        # solve runs the simplex whatever `cg_budget_s` once that is MAX_STALE_LP_S ago
        self._behind_since: float | None = None
        self.stats: dict[str, float] = {"lp_solves": 0, "lp_skipped": 0, "rebuilds": 0}
        self._cache: DecisionCache | None = None
        self._changed_offers: set[int] = set()
        self._price_before: dict[int, float] = {}   # changed offers: market price before the first change
        self.last_timings: dict[str, float] = {}
        self._any_capacity = True   # some offer has a capacity limit (set by each integer phase)
        # the last solve's adoption into the LP master (see `settle`)
        self._deferred: tuple[Instance, Master, dict[str, list[Assignment]], set[str]] | None = None

    def settle(self) -> None:
        """Finish the bookkeeping the last solve deferred: adopting its result into the LP master (the
        moved workloads' hysteresis terms, keep columns and pair costs; ~20-35 % of a step that moves 100+
        workloads). A solve's result does not depend on it, so the caller can have the result first: the
        decision stage calls this after it has replied. Every other method settles first.
        """
        if self._deferred is not None:
            args, self._deferred = self._deferred, None
            self._adopt(*args)

    def warm(self, stop: Callable[[], bool]) -> None:
        """Prepare the next solve until `stop()` returns True: bring the LP to the full optimum (what
        `cg_budget_s` left undone, and the re-solve after the last result's adoption; checked between and
        during column-generation rounds), then improve the integer plan with CP-SAT over every workload,
        hinted with the plan in force (solvers/portfolio/idle.py; up to `idle_time_limit_s` per state). Never
        changes the plan in force: an improvement is a candidate of the next solve that asks for the
        workloads it moves. Returns within a few ms of `stop()` turning true."""
        self.settle()
        M = self._master
        if M is None or self._structural or self._pending or stop():
            return
        if self._lp_dirty or not M.converged:
            M.column_generation(stop=stop)
            self.stats["lp_warm"] = self.stats.get("lp_warm", 0) + 1
            self._lp_dirty = False
            self._caught_up(M)
            if not M.converged or stop():
                return
        improve(self, stop)

    @property
    def rebuild_pending(self) -> bool:
        """Whether the next solve rebuilds the model (a workload added, changed or removed, a new offer, a
        plan set, or the compaction `_adopt` asks for). A rebuilt model starts with no cached decision: a
        workload that solve is not asked to re-decide is marked dirty and re-decided, in full, by the next
        solve that asks for it (see `integer.integer_phase`). A caller that cares where that cost falls asks for
        every workload in the rebuilding solve (streams.core.decider does)."""
        self.settle()   # may ask for the compaction
        return self._structural or self._inst is None

    # --- AllocationEngine -----------------------------------------------------------------------
    def upsert_offers(self, quotes: Sequence[OfferQuote]) -> None:
        self.settle()
        for q in quotes:
            if q.key not in self._oidx:
                self._structural = True
            self.quotes[q.key] = q
            if not self._structural:
                self._pending[q.key] = q

    def remove_offers(self, keys: Collection[str]) -> None:
        self.settle()
        for k in keys:
            q = self.quotes.pop(k, None)
            if q is not None and not self._structural and k in self._oidx:
                # tombstone: unavailable until the next rebuild compacts it away
                self._pending[k] = replace(q, available=False)

    def upsert_workload(self, spec: WorkloadSpec) -> None:
        self.settle()
        if self.workloads.get(spec.workload_id) != spec:
            self.workloads[spec.workload_id] = spec
            self._structural = True

    def remove_workload(self, workload_id: str) -> None:
        self.settle()
        if self.workloads.pop(workload_id, None) is not None:
            self._structural = True
        self.plan.pop(workload_id, None)

    def set_quotas(self, quotas: Sequence[GpuQuota]) -> None:
        """The user's GPU quotas (all of them): hard limits of the integer phase. A changed set rebuilds the
        model at the next solve (plans in force over a quota are then re-decided as they are asked for)."""
        self.settle()
        q = tuple(quotas)
        if q != self.quotas:
            self.quotas = q
            self._structural = True

    def set_current_plan(self, assignments: Sequence[Assignment]) -> None:
        self.settle()
        self.plan = {}
        for a in assignments:
            self.plan.setdefault(a.workload_id, []).append(a)
        self._structural = True

    # --- introspection ----------------------------------------------------------------------------
    def instance(self) -> Instance:
        """The instance the next solve will see (applies pending events)."""
        self.settle()
        self._sync()
        assert self._inst is not None
        return self._inst

    # --- building ---------------------------------------------------------------------------------
    def _rebuild(self) -> None:
        t0 = time.perf_counter()
        quotes = list(self.quotes.values())
        specs = [self.workloads[k] for k in sorted(self.workloads)]
        inst = build_instance(quotes, specs, self.plan, self.params, self.quotas)
        self._oidx = inst.offer_index()
        self._widx = inst.workload_index()
        pairs = build_pairs(inst)
        mu = np.array([inst.migration_per_gpu(w) for w in range(inst.n_workloads)])
        cost = pair_costs(inst, pairs, mu)
        t1 = time.perf_counter()
        master = Master(inst, pairs, cost, mu, self.lp_time_limit_s)
        master.set_keeps([(w, rows) for w, wid in enumerate(inst.ids)
                          if (rows := inst.current.get(wid)) and wid not in inst.stale_plan
                          and self._plan_valid(inst, w, rows)])
        # initial restricted master: the k cheapest per-GPU columns of every workload (+ current)
        init: list[I64] = []
        per_gpu = cost / pairs.g
        avail = inst.available[pairs.o]
        for w in range(inst.n_workloads):
            s, e = int(pairs.ptr[w]), int(pairs.ptr[w + 1])
            if e == s:
                continue
            seg = np.arange(s, e)[avail[s:e]]
            if seg.size > self.k0:
                seg = seg[np.argpartition(per_gpu[seg], self.k0)[: self.k0]]
            init.append(seg)
            if w in master.keep_rows:
                cur_o = np.array([o for o, _ in master.keep_rows[w]])
                po = pairs.o[s:e]
                hit = np.nonzero(np.isin(po, cur_o))[0] + s
                init.append(hit)
        if init:
            master.add_pairs(np.unique(np.concatenate(init)))
        self._inst, self._pairs, self._master = inst, pairs, master
        order = np.argsort(inst.place, kind="stable")
        cuts = np.searchsorted(inst.place[order], np.arange(1, len(inst.places)))
        self._place_offers = np.split(order.astype(np.int64), cuts)   # offers of each place
        self._structural = False
        self._pending.clear()
        self._lp_dirty = True
        self._cache = None
        self._idle = None
        self._changed_offers.clear()
        self._price_before.clear()
        self.stats["rebuilds"] += 1
        self.last_timings["build_ms"] = (t1 - t0) * 1000
        self.last_timings["master_ms"] = (time.perf_counter() - t1) * 1000

    @staticmethod
    def _plan_valid(inst: Instance, w: int, rows: tuple[tuple[int, int], ...],
                    cap_left: F64 | None = None, qleft: F64 | None = None) -> bool:
        """Whether whole instances `rows` are an admissible plan of `w` now (scalar arithmetic: a plan has a
        few rows, and this runs for every workload a step moves): `solvers.placement.plan_ok`, quotas
        included when `qleft` (GPUs left per quota) is given."""
        return pl.plan_ok(inst, w, rows, cap_left, qleft)

    def _sync(self) -> None:
        """Apply pending offer events in place (or rebuild on structural change)."""
        if self._structural or self._inst is None:
            self._rebuild()
            return
        if not self._pending:
            return
        inst0, P, M = self._inst, self._pairs, self._master
        assert P is not None and M is not None
        quotes = list(self._pending.values())
        self._pending.clear()
        inst = inst0.with_offer_updates(quotes, self._oidx)
        changed = np.array(sorted({self._oidx[q.key] for q in quotes}), np.int64)
        self._changed_offers.update(changed.tolist())
        for o in changed.tolist():
            self._price_before.setdefault(o, float(inst0.price[o]))
        pidx = np.concatenate([P.by_offer[P.offer_ptr[o]:P.offer_ptr[o + 1]] for o in changed]) \
            if changed.size else np.zeros(0, np.int64)
        M.inst = inst
        self._inst = inst
        M.cost[pidx] = pair_costs(inst, P, M.mu, pidx)
        M.price_pair[pidx] = inst.price[P.o[pidx]]
        M.avail_pair[pidx] = inst.available[P.o[pidx]]
        M.mark_dirty(pidx)
        # screen (before touching the model): LP optimum unchanged?
        unchanged = not self._lp_dirty and M.optimal
        if unchanged and pidx.size:
            xval = np.zeros(pidx.size)
            im = M.in_master[pidx] & (M.pair_col[pidx] < M.x.size)   # columns added since the last LP: 0
            xval[im] = M.x[M.pair_col[pidx[im]]]
            rc = M.reduced_costs(pidx)
            live = inst.available[P.o[pidx]]
            unchanged = bool((xval <= 1e-9).all() and (rc[live] >= -RC_TOL * (1 + np.abs(M.cost[pidx][live]))).all())
        # capacity changes
        cap_rows_new: list[int] = []
        for o in changed.tolist():
            c_old, c_new = inst0.capacity[o], inst.capacity[o]
            if c_old == c_new:
                continue
            if M.r_cap[o] < 0:
                has_cols = (M.pair_col[P.by_offer[P.offer_ptr[o]:P.offer_ptr[o + 1]]] >= 0).any()
                if math.isfinite(c_new) and (has_cols or M.keep_by_offer.get(o)):
                    cap_rows_new.append(o)
                    unchanged = False
            else:
                M.h.changeRowBounds(int(M.r_cap[o]), -INF, float(c_new) if math.isfinite(c_new) else INF)
                ri = int(M.r_cap[o])
                if abs(M.y[ri]) > 1e-12 or (math.isfinite(c_new) and c_new < c_old):
                    unchanged = False
        # keep columns touching changed offers: refresh (price/availability may have changed)
        touched = sorted({w for o in changed.tolist() for w in M.keep_by_offer.get(o, ())})
        if touched:
            M.set_keeps([(w, rows if self._plan_valid(inst, w, rows := M.keep_rows[w]) else None) for w in touched])
            unchanged = False
        # in-place model updates of master columns
        inm = pidx[M.in_master[pidx]]
        if inm.size:
            cols = M.pair_col[inm].astype(np.int32)
            M.h.changeColsCost(cols.size, cols, M.cost[inm])
            for j, p in zip(cols.tolist(), inm.tolist(), strict=True):
                M.h.changeCoeff(int(M.r_bud[P.w[p]]), j, float(inst.price[P.o[p]]))
            ub = np.where(inst.available[P.o[inm]], INF, 0.0)
            M.h.changeColsBounds(cols.size, cols, np.zeros(cols.size), ub)
        for o in cap_rows_new:
            cols_o = M.pair_col[P.by_offer[P.offer_ptr[o]:P.offer_ptr[o + 1]]]
            cols_o = cols_o[cols_o >= 0]
            kc = [int(M.keep_col[w]) for w, rows in M.keep_rows.items() if any(a == o for a, _ in rows)]
            M.h.addRow(-INF, float(inst.capacity[o]), cols_o.size, cols_o.astype(np.int32), np.ones(cols_o.size))
            M.r_cap[o] = M.n_rows
            M.n_rows += 1
            M.y = np.concatenate([M.y, [0.0]])
            for kcol in kc:
                wk = next(w for w in M.keep_rows if M.keep_col[w] == kcol)
                n_o = dict(M.keep_rows[wk])[o]
                M.h.changeCoeff(int(M.r_cap[o]), kcol, float(n_o))
                M.keep_slot[wk][1][int(M.r_cap[o])] = float(n_o)
        if unchanged:
            self.stats["lp_skipped"] += 1
        else:
            self._lp_behind()

    def _lp_behind(self) -> None:
        """The model changed since the last LP run: it must be re-solved, and is behind the market from now
        (unless it already was)."""
        self._lp_dirty = True
        if self._behind_since is None:
            self._behind_since = time.monotonic()

    def _caught_up(self, M: Master) -> None:
        """After a simplex run: an optimal LP solution is the current model's (changes reach the model only
        in `_sync`, at a solve), so the LP is no longer behind the market."""
        if M.optimal:
            self._behind_since = None

    # --- solving ----------------------------------------------------------------------------------
    def solve(self, workload_ids: Collection[str] | None = None) -> SolveResult:
        self.settle()
        t0 = time.perf_counter()
        self._sync()
        inst, P, M = self._inst, self._pairs, self._master
        assert inst is not None and P is not None and M is not None
        t1 = time.perf_counter()
        if self._lp_dirty or not M.converged:
            # a cold solve converges; a warm one keeps to the budget unless the LP solution it would fall
            # back on is stale: when the simplex cannot keep up with the events within the budget and the
            # idle time between solves, decisions would otherwise rest on an LP that falls ever further behind
            budget = self.cg_budget_s
            if budget is not None and self._behind_since is not None and \
                    time.monotonic() - self._behind_since > MAX_STALE_LP_S:
                budget = math.inf
            if budget == 0 and M.runs:
                # no simplex here: decide on the last optimal LP solution (behind the market for at most
                # MAX_STALE_LP_S); `warm()` re-solves it once the result is out
                M.converged = False
                M.rounds, M.run_ms, M.price_ms = 0, 0.0, 0.0
                self.stats["lp_deferred"] = self.stats.get("lp_deferred", 0) + 1
            else:
                M.column_generation(budget_s=budget if M.runs else None)
                self.stats["lp_solves"] += 1
                self._lp_dirty = False
                self._caught_up(M)
        t2 = time.perf_counter()
        ids = set(inst.ids) if workload_ids is None else set(workload_ids) & set(inst.ids)
        res = integer_phase(self, inst, P, M, ids)
        self._solves += 1
        t3 = time.perf_counter()
        self.last_timings.update(sync_ms=(t1 - t0) * 1000, lp_ms=(t2 - t1) * 1000, int_ms=(t3 - t2) * 1000,
                                 cg_rounds=M.rounds, simplex_ms=M.run_ms, pricing_ms=M.price_ms)
        return SolveResult(assignments=res[0], explanations=res[1], infeasible=res[2], objective=res[3],
                           lower_bound=res[4], solver="portfolio-highs-cg",
                           solve_ms=(time.perf_counter() - t0) * 1000, redecided=res[5])


    def _adopt(self, inst: Instance, M: Master, new_plan: Mapping[str, list[Assignment]], ids: set[str]) -> None:
        """The result becomes the plan in force: refresh hysteresis terms of changed workloads."""
        widx = self._widx
        cur_new: dict[str, tuple[tuple[int, int], ...]] = dict(inst.current)
        changed: list[int] = []
        for wid in ids:
            rows = tuple(sorted((self._oidx[a.offer.key], a.instances) for a in new_plan.get(wid, [])))
            # a stale plan (it held offers no longer known) re-decided onto its known rows is a change too:
            # from now on it is the plan in force, with no migration to charge
            if cur_new.get(wid, ()) != rows or (rows and wid in inst.stale_plan):
                changed.append(widx[wid])
                if rows:
                    cur_new[wid] = rows
                else:
                    cur_new.pop(wid, None)
        c = self._cache
        if not changed:
            return
        from dataclasses import replace
        inst2 = replace(inst, current=cur_new, stale_plan=inst.stale_plan - {inst.ids[w] for w in changed})
        if c is not None:
            # a move's migration cost counts in the solve that makes it; from now on it is sunk, and a
            # workload that is not re-decided must not carry it in later objectives
            for w in changed:
                wid, in_force = inst.ids[w], cur_new.get(inst.ids[w])
                if in_force and wid in c.obj:
                    c.obj[wid] = inst2.rows_cost(w, in_force)
        self._inst = inst2
        M.inst = inst2
        P = self._pairs
        assert P is not None
        conc_g = -(M.y[M.r_grp] + M.y[M.r_tot])
        for w in changed:
            M.mu[w] = inst2.migration_per_gpu(w)
        # the moved workloads' pairs, all at once
        seg = segments(P, np.array(changed, np.int64))
        M.cost[seg] = pair_costs(inst2, P, M.mu, seg)
        M.mark_dirty(seg)
        if c is not None and c.metric is not None:
            c.metric[seg] = M.cost[seg] + conc_g[inst2.group[P.o[seg]]] * P.g[seg]
        inm = seg[M.in_master[seg]]
        if inm.size:
            cols = M.pair_col[inm].astype(np.int32)
            M.h.changeColsCost(cols.size, cols, M.cost[inm])
        now_pairs: list[int] = []
        keeps: list[tuple[int, tuple[tuple[int, int], ...] | None]] = []
        for w in changed:
            now = cur_new.get(inst.ids[w])
            keeps.append((w, now if now and self._plan_valid(inst2, w, now) else None))
            if now:   # the pairs of the plan now in force join the master
                now_pairs += M.rows_pairs(w, now)[0]
        M.set_keeps(keeps)
        if now_pairs:
            M.add_pairs(np.array(now_pairs, np.int64))
        self._lp_behind()
        if M.h.getNumCol() > 4 * max(1, int(np.count_nonzero(M.in_master))) + 10 * inst.n_workloads:
            self._structural = True   # too many tombstoned keep columns: compact at the next solve

    # --- per-workload integer decision ----------------------------------------------------------


def solve_once(quotes: Sequence[OfferQuote], workloads: Sequence[WorkloadSpec],
               current: Sequence[Assignment] = (), **kwargs: float) -> SolveResult:
    """One-shot convenience: a fresh engine, one solve."""
    e = PortfolioEngine(**kwargs)  # type: ignore[arg-type]
    e.upsert_offers(quotes)
    for w in workloads:
        e.upsert_workload(w)
    if current:
        e.set_current_plan(current)
    return e.solve()

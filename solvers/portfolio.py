"""The portfolio allocation engine: column generation over a live HiGHS LP, then round/repair.

THE MODEL
=========
Data (solvers/instance.py): offers o with GPUs g_o, price now p_o, planning (forecast) price p^_o,
capacity cap_o (instances, maybe unknown = inf), interruption probability per hour pi_o, spot flag
s_o, group G(o) = (provider, region, market); workloads w with throughput per GPU t_wm of each
accepted GPU model m, best accepted t*_w, GPU bounds [L_w, U_w], budget B_w, max spot share S_w,
restart overhead rho_w hours, co-location flag, priority prio_w; the plan in force x^cur.

Variables: x_wo in Z+ instances of offer o for workload w (only pairs with an accepted GPU model,
an allowed provider and g_o <= U_w exist); u_w in [0,1] "not placed"; z_w in {0,1} "keep the
current plan" (a composite column: the whole current plan of w); e_G >= 0 GPUs of group G above
the concentration cap; T = total portfolio GPUs.

Unit cost (USD per hour of the workload's best GPU, i.e. cost per delivered throughput-hour,
risk-adjusted):
    c_wo = p^_o * (t*_w / t_w,m(o)) * (1 + lambda * pi_o * rho_w)        # expected interruption cost
         + lambda * mu_w * g_o                                           # migration (hysteresis)
    mu_w = theta_w / GPUs(x^cur_w),  theta_w = max(theta_abs, theta_rel * cost(x^cur_w))
  (the keep column z_w costs the current plan's c without the migration term)

    min  sum_wo c_wo x_wo + sum_w c^keep_w z_w + lambda * kappa_pen * sum_G e_G + sum_w M_w u_w
    s.t. sum_o g_o x_wo + g^cur_w z_w + L_w u_w >= L_w               (GPU floor, or unplaced)
         sum_o g_o x_wo + g^cur_w z_w + U_w u_w <= U_w               (GPU ceiling)
         sum_o p_o x_wo + p^cur_w z_w <= B_w                         (budget, at today's price)
         sum_o (s_o - S_w) g_o x_wo + (...)z_w <= 0                   (spot share, when S_w < 1)
         sum_w x_wo + sum_w n^cur_wo z_w <= cap_o                    (capacity, when known)
         sum_{o in G} g_o x_wo (+ keep) - kappa T - e_G <= 0          (concentration soft cap)
         sum_o g_o x_wo (+ keep) - T = 0
         co-location (all of w's instances in one region): enforced in the integer phase only
  M_w = prio_w * (unplaced_penalty + 100 B_w): placing is always preferred; higher priority wins
  contention. The LP relaxation (x, z continuous) is the lower bound we report.

Hysteresis, hard rule (integer phase): a workload whose current plan is still feasible moves only
if the new plan's objective (without migration term) saves at least theta_w.

Placement rules (solvers/placement.py; issue 21). Offers carry their place P(o) = (provider, region,
zone, instance type, GPU model), their provider's egress e_o (USD/GB) and interconnect facts; workloads
their topology, replica size r_w, interconnect need, shares sigma^prov_w / sigma^reg_w, state s_w (GB).
  * pairs: (w, o) exists only if the interconnect holds for one instance of o and, for replicas with r_w,
    g_o = r_w (never valid otherwise: no column, no LP mass on it);
  * gang: all of w's instances in one place: sum over places of [w uses the place] <= 1, spot and
    on-demand of the place mixed within S_w; the interconnect holds for the plan's total instance count
    (InfiniBand: a fabric between several nodes);
  * replicas: every row of offers with g_o = r_w; per provider p: sum_{o in p} g_o x_wo <= sigma^prov_w G_w,
    per (provider, region) likewise with sigma^reg_w;
  * quotas q (provider, region or all, GPU model or family; limit Q_q), portfolio-wide:
        sum_w sum_{o covered by q} g_o x_wo <= Q_q.
  The LP carries none of these rows (the pair filter aside): it stays the same live model with the same
  warm starts, and its optimum is still a valid lower bound (a relaxation of a more constrained problem),
  only a weaker one for gangs (the LP may split a gang over places), share-limited replicas and binding
  quotas. They are enforced in the integer phase: the LP rounding of a gang keeps only the place with the
  most LP mass (x_wo g_o) among w's support and fills only from that place; a gang's other candidates are
  single-offer plans (one place by construction) and, when the spot share is strictly between 0 and 1 (or
  no single offer fits), the cheapest place mixing its spot and on-demand offers (`placement.gang_plans`);
  share-limited replicas are filled from scratch across providers and regions (the cheapest offers of each);
  quota headroom is tracked like `cap_left` (what every workload not re-decided holds, then each decision in
  priority order), so no candidate exceeds a quota; the plan in force is kept only if it is still valid
  (rules and quotas included). `evaluate` re-checks all of it independently, quotas over the whole portfolio.

Moves (integer phase). Moving w from x^cur_w to x costs once
    C_move(w, x) = (rho_w + s_w * 8 / (3600 * bw)) * usd(x)                # restart + transfer hours
                   + s_w * max_{o in x^cur_w} e_o * [x uses a provider x^cur_w does not]   # egress
  (bw = move_bandwidth_gbps; transfer hours charged at the new plan's USD/h; no egress within a provider).
  A candidate move's metric adds lambda * (C_move - rho_w usd(x)) / H (the state's part, amortised over
  the payback horizon H = payback_horizon_h; the restart part is priced by theta_w and pi_o rho_w already),
  and the same share enters the objective (`evaluate`) for a workload that moves. Hard rule: a move whose
  saving per hour Delta (the hysteresis metric above) has Delta < theta_w or Delta * H < C_move(w, x) is not
  made (binding "payback"); a plan in force that is no longer valid moves regardless.

SOLUTION METHOD (and why)
=========================
* Candidate pairs (w, o) are flat numpy arrays (CSR by workload, ~1-3M at 1,000 x 10,000); costs,
  coefficients and reduced costs are computed vectorised, never per element in Python.
* Column generation: the restricted master starts with the K cheapest columns per workload (and the
  current plan); each round prices every pair in numpy, rc = c - a^T y, and adds the most negative
  few per workload, until no rc < 0: the restricted LP is then optimal for the full LP. Dominated
  offers (same rows, higher cost) never price out before their dominator, so CG prunes them
  implicitly and no explicit dominance pass is kept in sync with price events.
* HiGHS (highspy) keeps the model and the simplex basis alive between calls. Price / risk /
  availability / capacity events change costs, coefficients and bounds in place (changeColsCost,
  changeCoeff, changeColsBounds, changeRowsBounds) and the next run is a warm dual/primal simplex.
  Chosen over OR-Tools: pywraplp re-extracts the whole model on every Solve() (measured in the
  earlier probe); MathOpt's incremental GLOP would also do, but highspy gives in-place updates with
  the basis kept, row duals and column reduced costs directly, and is the solver scipy's MILP
  baseline uses too. No CP-SAT/MIP polish: exact MILP did not finish beyond toy sizes.
* Reduced-cost screen: when every changed column has x = 0 and still prices out non-negative
  against the current duals, the LP optimum is provably unchanged and the LP is not re-solved.
* Partial pricing: after a warm re-solve only pairs whose duals (workload rows, group rows,
  capacity rows) or costs moved are re-priced; the rest keep their exact previous reduced cost.
* Optional budget (`cg_budget_s`): a warm re-solve runs the simplex once, time-limited, and decides on
  the restricted master's optimum, or on the last optimal solution when the run is cut short;
  `warm(stop)` completes column generation between decisions (interruptible mid-run).
* Integer phase (per workload, priority order, capacity tracked): candidates are (a) the LP support
  rounded down and repaired greedily to whole instances, (b) the best single-offer plan, (c) the
  current plan (hysteresis); pick the cheapest under the LP's concentration prices. (b) makes the
  plan never worse than the cheapest-feasible greedy rule per workload. On large re-decisions
  (> 64 workloads, e.g. cold) a second pass that holds each workload's rounded-down LP capacity
  for it runs when the first pass broke such a holding; the cheaper pass wins. `evaluate`
  re-checks the re-decided workloads against the instance (and the capacity everyone else
  holds) before anything is returned.
* Incremental integer phase: decisions are cached per workload and only re-made where the LP
  support or its integer parts moved, where a changed offer is used, or could beat the chosen plan;
  an offer that only beats the runner-up updates the explanation in place.
* Structural changes (new offer keys, workload added/changed/removed) rebuild pairs and master;
  removed offers are tombstoned (made unavailable) until the next rebuild.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import highspy
import numpy as np
import numpy.typing as npt

from schemas.events import Assignment, WorkloadExplanation, WorkloadSpec
from schemas.market import InfeasibilityReport, OfferQuote, SolveResult
from schemas.placement import GpuQuota
from solvers import placement as pl
from solvers.instance import (
    F64,
    I64,
    EngineParams,
    Instance,
    build_instance,
    concentration_penalty,
    evaluate,
)
from solvers.joint import joint_pass

INF = highspy.kHighsInf
RC_TOL = 1e-7
# with a column-generation budget, the workloads a solve re-decides because their LP values moved (and no
# event forces it): LP_REDECIDE_PER_SOLVE, less one per workload an event forces, at least LP_REDECIDE_MIN.
# See PortfolioEngine._integer_phase
LP_REDECIDE_PER_SOLVE = 32
LP_REDECIDE_MIN = 8
# with a column-generation budget: a solve whose last optimal LP solution is older than this runs the
# simplex to the end, whatever the budget (see PortfolioEngine.solve)
MAX_STALE_LP_S = 0.5


@dataclass
class _Pairs:
    """Candidate columns (w, o), sorted by workload, ptr[w]:ptr[w+1] is w's segment."""

    w: I64
    o: I64
    ptr: I64
    g: F64            # GPUs per instance
    ratio: F64        # t*_w / t_wo
    n_single: F64     # ceil(L_w / g): instances of a single-offer plan
    by_offer: I64     # pair indices sorted by offer
    offer_ptr: I64
    # a single-offer plan on the pair fits the workload's GPU count and spot share (static: the offers'
    # sizes and markets and the workloads' specs do not change without a rebuild)
    single_fits: npt.NDArray[np.bool_]

    @property
    def size(self) -> int:
        return int(self.w.size)


def build_pairs(inst: Instance) -> _Pairs:
    n_models = inst.tput.shape[1]
    offers_of_model = [np.nonzero(inst.model == m)[0] for m in range(n_models)]
    ws: list[I64] = []
    os_: list[I64] = []
    for w in range(inst.n_workloads):
        ms = np.nonzero(inst.tput[w] > 0)[0]
        if not ms.size:
            continue
        o = np.concatenate([offers_of_model[m] for m in ms]) if ms.size > 1 else offers_of_model[ms[0]]
        keep = inst.allowed[w, inst.provider[o]] & (inst.gpus[o] <= inst.max_gpus[w]) & pl.pair_possible(inst, w, o)
        if inst.spot_share[w] <= 0:
            keep &= ~inst.spot[o]
        o = np.sort(o[keep])
        ws.append(np.full(o.size, w, np.int64))
        os_.append(o.astype(np.int64))
    pw = np.concatenate(ws) if ws else np.zeros(0, np.int64)
    po = np.concatenate(os_) if os_ else np.zeros(0, np.int64)
    ptr = np.searchsorted(pw, np.arange(inst.n_workloads + 1)).astype(np.int64)
    g = inst.gpus[po].astype(np.float64)
    ratio = inst.ref_tput[pw] / inst.tput[pw, inst.model[po]] if po.size else np.zeros(0)
    n_single = np.ceil(inst.min_gpus[pw] / g) if po.size else np.zeros(0)
    by_offer = np.argsort(po, kind="stable").astype(np.int64)
    offer_ptr = np.searchsorted(po[by_offer], np.arange(inst.n_offers + 1)).astype(np.int64)
    single_fits = (n_single * g <= inst.max_gpus[pw]) & ((inst.spot_share[pw] >= 1.0) | ~inst.spot[po])
    if po.size:
        # placement rules: the interconnect for the plan's instance count (a gang's n instances; a replica's
        # one), and a replicas plan with provider/region shares is never on one offer
        n_ic = np.where(inst.gang[pw], n_single, 1.0)
        linked = inst.nvlink[po] | ((inst.gpus[po] == 1) & (n_ic == 1))
        need = inst.need_ic[pw]
        ic = (need == 0) | ((need == 1) & linked) | ((need == 2) & linked & ((n_ic == 1) | inst.ib[po]))
        spread = ~inst.gang[pw] & ((inst.share_provider[pw] < 1.0) | (inst.share_region[pw] < 1.0))
        single_fits &= ic & ~spread
    return _Pairs(pw, po, ptr, g, ratio, n_single, by_offer, offer_ptr, single_fits)


def pair_costs(inst: Instance, pairs: _Pairs, mu: F64, sel: I64 | slice = slice(None)) -> F64:
    lam = inst.params.risk_lambda
    w, o = pairs.w[sel], pairs.o[sel]
    return np.asarray(inst.plan_price[o] * pairs.ratio[sel] * (1.0 + lam * inst.interrupt[o] * inst.restart_h[w])
                      + lam * mu[w] * pairs.g[sel], dtype=np.float64)


def _segments(pairs: _Pairs, ws: I64) -> I64:
    """The pair indices of workloads `ws`, segment after segment.

    >>> P = _Pairs(*(np.zeros(5, np.int64),) * 2, np.array([0, 2, 2, 5]), *(np.zeros(5),) * 3,
    ...            np.zeros(5, np.int64), np.zeros(1, np.int64), np.ones(5, np.bool_))
    >>> _segments(P, np.array([2, 0])).tolist()
    [2, 3, 4, 0, 1]
    """
    start, n = pairs.ptr[ws], pairs.ptr[ws + 1] - pairs.ptr[ws]
    out: I64 = np.repeat(start - np.concatenate([[0], np.cumsum(n)[:-1]]), n) + np.arange(int(n.sum()))
    return out


PRICE_CHUNK = 100_000  # pairs re-priced between `stop()` checks in an interruptible pricing (a few ms)


class _Master:
    """The restricted master LP, alive in a highspy.Highs object."""

    def __init__(self, inst: Instance, pairs: _Pairs, cost: F64, mu: F64, time_limit_s: float) -> None:
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
        values, and each workload's range in them (`ptr`, as `_Pairs.ptr`): computed once per solution
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

    def reduced_costs(self, sel: I64 | slice = slice(None), with_total: bool = True) -> F64:
        """rc = c - a^T y for pairs (in the master or not), in numpy. `with_total=False` leaves out the
        total-GPU row's term (-g * its dual), which shifts every pair alike."""
        if isinstance(sel, slice):   # all pairs
            return self._rc_workloads(0, self.seg_len.size, with_total)
        P, y = self.pairs, self.y
        yw = y[self.r_min] + y[self.r_max]
        yg = y[self.r_grp] + (y[self.r_tot] if with_total else 0.0)
        ybud = y[self.r_bud]

        def dual(rows: I64) -> F64:   # the dual of each row; 0 where there is no row (-1)
            return np.where(rows >= 0, y[np.maximum(rows, 0)], 0.0)

        w, o = P.w[sel], P.o[sel]   # a few pairs: only their rows' duals
        rc = (self.cost[sel] - P.g[sel] * (yw[w] + yg[self.grp_pair[sel]])
              - self.price_pair[sel] * ybud[w] - self.spot_coef[sel] * dual(self.r_spot[w]) - dual(self.r_cap[o]))
        return np.asarray(rc, dtype=np.float64)

    def _rc_workloads(self, w0: int, w1: int, with_total: bool = True) -> F64:
        """`reduced_costs` of the pairs of workloads w0..w1-1 (contiguous: pairs are sorted by workload),
        with the per-workload terms by repeat; the same arithmetic per pair as over all of them."""
        P, y = self.pairs, self.y
        p0, p1 = int(P.ptr[w0]), int(P.ptr[w1])
        yw = y[self.r_min[w0:w1]] + y[self.r_max[w0:w1]]
        yg = y[self.r_grp] + (y[self.r_tot] if with_total else 0.0)
        ybud = y[self.r_bud[w0:w1]]
        r_spot = self.r_spot[w0:w1]
        ysp = np.where(r_spot >= 0, y[np.maximum(r_spot, 0)], 0.0)
        ycap = np.where(self.r_cap >= 0, y[np.maximum(self.r_cap, 0)], 0.0)
        L = self.seg_len[w0:w1]
        rc = np.repeat(yw, L)              # in place from here: ~1.6M pairs at 1,000 x 10,000
        rc += yg[self.grp_pair[p0:p1]]
        rc *= P.g[p0:p1]
        np.subtract(self.cost[p0:p1], rc, out=rc)
        t = np.repeat(ybud, L)
        t *= self.price_pair[p0:p1]
        rc -= t
        if (ysp != 0).any():
            t = np.repeat(ysp, L)
            t *= self.spot_coef[p0:p1]
            rc -= t
        if (ycap != 0).any():
            rc -= ycap[P.o[p0:p1]]
        return rc

    def mark_dirty(self, pidx: I64) -> None:
        self._dirty.append(np.asarray(pidx, np.int64))

    def price(self, stop: Callable[[], bool] | None = None) -> F64 | None:
        """Reduced costs of all pairs; re-prices only pairs whose duals or costs moved (partial
        pricing is exact: rc = c - a^T y is recomputed for every pair touched by a changed dual). The
        cached prices leave out the total-GPU row, whose dual moves with most re-solves: it is applied
        to all pairs at once on the way out. With `stop`, pricing (up to ~17 ms at 1,000 x 10,000) runs in
        chunks and gives up once `stop()` is true: None, and the cache stays consistent for the next call."""
        y = self.y
        if self._rc is None or self._y_rc.size != y.size:
            return self._full_price(stop)
        d = y != self._y_rc
        d[self.r_tot] = False
        P = self.pairs
        dw = d[self.r_min] | d[self.r_max] | d[self.r_bud] | np.where(self.r_spot >= 0, d[np.maximum(self.r_spot, 0)],
                                                                     False)
        dG = np.nonzero(d[self.r_grp])[0]
        dcap = np.nonzero(np.where(self.r_cap >= 0, d[np.maximum(self.r_cap, 0)], False))[0]
        W = dw.size
        if dw.sum() > W // 4 or dG.size > max(4, self.r_grp.size // 4):
            return self._full_price(stop)
        parts = list(self._dirty)
        for w in np.nonzero(dw)[0].tolist():
            parts.append(np.arange(P.ptr[w], P.ptr[w + 1], dtype=np.int64))
        for G in dG.tolist():
            parts.append(self.by_group[self.group_ptr[G]:self.group_ptr[G + 1]])
        for o in dcap.tolist():
            parts.append(P.by_offer[P.offer_ptr[o]:P.offer_ptr[o + 1]])
        if parts:
            mark = np.zeros(P.size, bool)
            for part in parts:
                mark[part] = True
            sel = np.flatnonzero(mark)
            if sel.size > P.size // 3:
                return self._full_price(stop)
            for i in range(0, sel.size, PRICE_CHUNK):
                if i and stop is not None and stop():
                    # the pairs re-priced so far are marked dirty (re-priced again next time: their duals
                    # may move back to the cached ones'), the others are still covered by the dual changes
                    self._dirty.append(sel[:i])
                    return None
                part = sel[i:i + PRICE_CHUNK]
                self._rc[part] = self.reduced_costs(part, with_total=False)
        self._dirty = []
        self._y_rc = y.copy()
        self.partial_pricings += 1
        return self._with_total(self._rc)

    def _full_price(self, stop: Callable[[], bool] | None = None, chunks: int = 8) -> F64 | None:
        W = self.seg_len.size
        if stop is None:
            rc = self._rc_workloads(0, W, with_total=False)
        else:
            rc = np.empty(self.pairs.size)
            ptr, step = self.pairs.ptr, max(1, -(-W // chunks))
            for w0 in range(0, W, step):
                if stop():
                    return None
                w1 = min(W, w0 + step)
                rc[int(ptr[w0]):int(ptr[w1])] = self._rc_workloads(w0, w1, with_total=False)
        self._rc = rc
        self._y_rc = self.y.copy()
        self._dirty = []
        return self._with_total(self._rc)

    def _with_total(self, rc: F64) -> F64:
        yt = float(self.y[self.r_tot])
        return rc - self.pairs.g * yt if yt != 0.0 else rc.copy()

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


@dataclass
class _Decision:
    rows: tuple[tuple[int, int], ...]
    metric: float                 # decision metric: objective incl. migration + concentration price
    kind: str                     # "lp" | "single" | "keep"
    binding: list[str]
    runner: tuple[int, float] | None = None   # (offer, metric of its single-offer plan)
    blocked: list[str] | None = None


def _sorted_member(x: I64, sorted_codes: I64) -> npt.NDArray[np.bool_]:
    """`np.isin(x, sorted_codes)` for a sorted, unique `sorted_codes` (a binary search per element, where
    `isin` sorts both arrays on every call).

    >>> _sorted_member(np.array([3, 5, 9]), np.array([1, 3, 9])).tolist()
    [True, False, True]
    """
    if not sorted_codes.size:
        return np.zeros(x.size, np.bool_)
    i = np.minimum(np.searchsorted(sorted_codes, x), sorted_codes.size - 1)
    return sorted_codes[i] == x


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
                 params: EngineParams | None = None, joint_time_limit_s: float = 0.2) -> None:
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
        # next solve
        self.cg_budget_s = cg_budget_s
        # CP-SAT time for the joint pass of competing workloads (solvers.joint); 0 turns it off
        self.joint_time_limit_s = joint_time_limit_s
        self.quotes: dict[str, OfferQuote] = {}
        self.workloads: dict[str, WorkloadSpec] = {}
        self.plan: dict[str, list[Assignment]] = {}
        self.quotas: tuple[GpuQuota, ...] = ()
        self._inst: Instance | None = None
        self._pairs: _Pairs | None = None
        self._master: _Master | None = None
        self._oidx: dict[str, int] = {}
        self._place_offers: list[I64] = []
        self._widx: dict[str, int] = {}
        self._structural = True
        self._pending: dict[str, OfferQuote] = {}
        self._lp_dirty = True
        self.stats: dict[str, float] = {"lp_solves": 0, "lp_skipped": 0, "rebuilds": 0}
        self._cache: dict | None = None
        self._changed_offers: set[int] = set()
        self._price_before: dict[int, float] = {}   # changed offers: market price before the first change
        self.last_timings: dict[str, float] = {}
        self._any_capacity = True   # some offer has a capacity limit (set by each integer phase)
        # the last solve's adoption into the LP master (see `settle`)
        self._deferred: tuple[Instance, _Master, dict[str, list[Assignment]], set[str]] | None = None

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
        """Bring the LP to the full optimum the next solve needs, until `stop()` returns True (checked
        between column-generation rounds): what `cg_budget_s` left undone, and the re-solve after the
        last result's adoption. The next solve then starts from there, and re-decides the workloads
        whose LP values moved (moves still subject to hysteresis)."""
        self.settle()
        M = self._master
        if M is None or self._structural or self._pending or not (self._lp_dirty or not M.converged) or stop():
            return
        M.column_generation(stop=stop)
        self.stats["lp_warm"] = self.stats.get("lp_warm", 0) + 1
        self._lp_dirty = False

    @property
    def rebuild_pending(self) -> bool:
        """Whether the next solve rebuilds the model (a workload added, changed or removed, a new offer, a
        plan set, or the compaction `_adopt` asks for). A rebuilt model starts with no cached decision: a
        workload that solve is not asked to re-decide is marked dirty and re-decided, in full, by the next
        solve that asks for it (see `_integer_phase`). A caller that cares where that cost falls asks for
        every workload in the rebuilding solve (streams.decider does)."""
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
                self._pending[k] = OfferQuote(q.offer, q.usd_per_hour, q.forecast_usd_per_hour, False,
                                              q.capacity_instances, q.interruption_probability_per_hour,
                                              q.quote_age_s)

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
        master = _Master(inst, pairs, cost, mu, self.lp_time_limit_s)
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
            self._lp_dirty = True

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
            if budget is not None and time.monotonic() - M.optimal_at > MAX_STALE_LP_S:
                budget = math.inf
            M.column_generation(budget_s=budget if M.runs else None)
            self.stats["lp_solves"] += 1
            self._lp_dirty = False
        t2 = time.perf_counter()
        ids = set(inst.ids) if workload_ids is None else set(workload_ids) & set(inst.ids)
        res = self._integer_phase(inst, P, M, ids)
        t3 = time.perf_counter()
        self.last_timings.update(sync_ms=(t1 - t0) * 1000, lp_ms=(t2 - t1) * 1000, int_ms=(t3 - t2) * 1000,
                                 cg_rounds=M.rounds, simplex_ms=M.run_ms, pricing_ms=M.price_ms)
        return SolveResult(assignments=res[0], explanations=res[1], infeasible=res[2], objective=res[3],
                           lower_bound=res[4], solver="portfolio-highs-cg",
                           solve_ms=(time.perf_counter() - t0) * 1000, redecided=res[5])

    def _integer_phase(self, inst: Instance, P: _Pairs, M: _Master, ids: set[str]
                       ) -> tuple[tuple[Assignment, ...], dict[str, WorkloadExplanation],
                                  tuple[InfeasibilityReport, ...], float, float | None, frozenset[str]]:
        """Decide whole instances for the workloads whose inputs changed; reuse the rest.

        The cache holds, per workload, the decision (rows, metric, runner-up), its explanation and
        objective. A workload is re-decided when it is in `ids` and (a) nothing is cached, or (b) its
        LP values moved, or (c) a changed offer is in its plan or runner-up (unless it only got cheaper
        there: a one-offer plan in force, or the runner-up, is then repriced in the cache), or gives it
        an admissible single-offer plan (available, within budget, GPU count and spot share) cheaper
        than its plan by the hysteresis threshold, or, when it has no plan, could hold one of its
        instances and got better (cheaper, back in stock, more capacity: nothing else can give it one),
        or (d) the concentration prices of its groups moved, or (e) it was just moved (its
        hysteresis terms changed), or (f) one of these held in an earlier solve that did not ask for
        it (kept in the cache's `dirty` set). With `cg_budget_s`, the workloads re-decided for (b) alone
        are at most LP_REDECIDE_PER_SOLVE per solve less those re-decided for the other reasons, and at least
        LP_REDECIDE_MIN (the rest wait in `lp_dirty`, longest waiting first).
        Otherwise its decision stands against the same LP
        solution and prices (approximated: capacity interplay with re-decided workloads, which see
        the capacity the others hold, and the rounding's fill, which can pick a changed offer).
        """
        widx = self._widx
        W = inst.n_workloads
        self._any_capacity = bool(np.isfinite(inst.capacity).any())   # (see _single_candidates)
        # LP allocation per master pair column, keep columns folded into the pairs they represent
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
        y = M.y
        conc_g = -(y[M.r_grp] + y[M.r_tot])
        c = self._cache
        if c is None:
            c = self._new_cache(inst, P)
        # affected workloads
        want = {widx[i] for i in ids}
        if not c["fresh"]:
            A: set[int] = set()
            runner_only: set[int] = set()
            prev = c["xv"]
            if prev.size < xe.size:
                prev = np.concatenate([prev, np.zeros(xe.size - prev.size)])
            # the rounding reads only the LP support and its integer parts: re-decide where those moved
            dx = np.nonzero(((xe > 1e-7) != (prev > 1e-7)) | (np.floor(xe + 1e-6) != np.floor(prev + 1e-6)))[0]
            dp = M.col_pair[dx]
            A.update(np.unique(P.w[dp[dp >= 0]]).tolist())
            A.update(np.nonzero(np.abs(kv - c["kv"]) > 1e-9)[0].tolist())
            L = set(A)               # re-decided for the LP's sake only, unless an event hits them too (E)
            E: set[int] = set()
            R: set[int] = set()      # only their runner-up got dearer (or went): refreshed, not re-decided
            metric_before = c["metric"]
            repriced: list[int] = []   # workloads whose plan in force stands at new prices (`_stands_repriced`)
            dg = np.nonzero(np.abs(conc_g - c["conc"]) > 1e-9)[0]
            if dg.size:
                moved_g = np.zeros(conc_g.size, np.bool_)
                moved_g[dg] = True
                hit = moved_g[M.grp_pair]
                E.update(np.unique(P.w[hit]).tolist())
                A |= E
                c["metric"] = M.cost + conc_g[M.grp_pair] * P.g
            n_conc = len(E)
            changed = np.array(sorted(self._changed_offers), np.int64)
            if changed.size:
                pc = np.concatenate([P.by_offer[P.offer_ptr[o]:P.offer_ptr[o + 1]] for o in changed])
                m_old = metric_before[pc].copy()
                c["metric"][pc] = M.cost[pc] + conc_g[inst.group[P.o[pc]]] * P.g[pc]
                pw = P.w[pc]
                sm = P.n_single[pc] * c["metric"][pc]
                codes_pc = pw * inst.n_offers + P.o[pc]
                used = _sorted_member(codes_pc, c["codes"])
                # An offer of the plan or the runner-up that only got cheaper (and stays available) forces
                # nothing: the runner-up is repriced below; a one-offer plan in force gained against every
                # alternative (one holding more of the offer holds more GPUs than the plan, so costs more).
                # The single-offer test below still catches a cheaper single plan on it.
                # A multi-offer plan in force whose offer only changed its market price (same planning
                # cost) stands too: every candidate costs what it did (see `_stands_repriced`).
                cheaper = used & inst.available[P.o[pc]] & (c["metric"][pc] <= m_old + 1e-12)
                same = np.abs(c["metric"][pc] - m_old) <= 1e-12
                plan_cheaper = np.zeros(pc.size, np.bool_)
                for k in np.flatnonzero(cheaper).tolist():
                    w = int(pw[k])
                    rows = c["rows"].get(w, ())
                    if c["codes_runner"].get(w) == int(codes_pc[k]):
                        continue
                    if self._stands_repriced(inst, P, c, w, rows, int(pc[k]), bool(same[k])):
                        repriced.append(w)
                        plan_cheaper[k] = True
                    else:
                        cheaper[k] = False
                used &= ~cheaper
                # the runner-up got dearer or went, and the plan does not hold it: the decision stands (an
                # alternative it beat only got worse); its runner-up and explanation are refreshed below
                runner_hit = np.zeros(pc.size, np.bool_)
                for k in np.flatnonzero(used).tolist():
                    runner_hit[k] = c["codes_runner"].get(int(pw[k])) == int(codes_pc[k])
                if self.refresh_runners:
                    used &= ~runner_hit
                    R.update(np.unique(pw[runner_hit]).tolist())
                # could replace the plan in force: cheaper including the migration term, and by at
                # least the hysteresis threshold without it
                sm_base = sm - inst.params.risk_lambda * M.mu[pw] * P.g[pc] * P.n_single[pc]
                ch = c["chosen"][pw]
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
                    better_o[o] = (inst.price[o] < self._price_before.get(o, inst.price[o])
                                   or (inst.available[o] and not c["avail"][o]) or inst.capacity[o] > c["cap"][o])
                stuck = (ch == math.inf) & ~better_o[po_] & (c["metric"][pc] >= m_old - 1e-12 * (1 + np.abs(m_old)))
                placeable = (np.isinf(ch) & ~stuck & inst.available[po_] & (P.g[pc] <= inst.max_gpus[pw])
                             & (inst.price[po_] <= inst.budget[pw] * (1 + 1e-9))
                             & (~inst.spot[po_] | (inst.spot_share[pw] > 0.0)))
                hit = used | placeable | (single_ok & ~stuck & (sm < ch + 1e-9) & (sm_base < ch - c["thr"][pw] + 1e-9))
                E.update(np.unique(pw[hit]).tolist())
                A |= E
                # cheaper than the runner-up only: the decision stands, the explanation changes
                feas1 = (~hit & ~plan_cheaper & (sm < c["runner"][pw] - 1e-9) & single_ok
                         & (n1 <= inst.capacity[po_] - c["usage"][po_] + 1e-9))
                new_runner: list[tuple[int, int]] = []   # (workload, k), in order
                for k in np.flatnonzero(feas1).tolist():
                    w = int(pw[k])
                    if w in A or sm[k] >= c["runner"][w] - 1e-9:
                        continue
                    runner_only.add(w)
                    c["runner"][w] = float(sm[k])
                    c["codes_runner"][w] = w * inst.n_offers + int(po_[k])
                    if inst.ids[w] in c["expl"]:
                        new_runner.append((w, k))
                if new_runner:   # their explanations, with the reduced costs computed in one pass
                    rcs = M.reduced_costs(pc[[k for _, k in new_runner]]).tolist()
                    for (w, k), rc_k in zip(new_runner, rcs, strict=True):
                        wid = inst.ids[w]
                        x = c["expl"][wid]
                        rc = dict(x.reduced_costs)
                        rc[inst.keys[int(po_[k])]] = float(rc_k)
                        c["expl"][wid] = x.model_copy(update={
                            "runner_up": inst.keys[int(po_[k])], "reduced_costs": rc,
                            "runner_up_delta_usd_per_hour": float(sm[k]) - float(c["chosen"][w])})
                over = np.nonzero(c["usage"][changed] > inst.capacity[changed] + 1e-9)[0]
                for o in changed[over].tolist():
                    E.update(w for w, rows in c["rows"].items() if any(a == o for a, _ in rows))
            # inputs of workloads outside `ids` may have moved too: remember them until they are asked for
            n_events = len(E)
            E |= c["dirty"] | (R - want)
            L = (L | set(c["lp_dirty"])) - E
            # With a column-generation budget, the LP keeps moving between events (warm() completes it), and
            # re-deciding every workload whose LP values moved made some steps several times longer. Those
            # re-decisions only look for a better plan (an event that touches a workload's plan puts it in E):
            # at most LP_REDECIDE_PER_SOLVE per solve, fewer when events already force re-decisions (a
            # capacity loss displacing 100+ workloads: those steps make the latency's tail), never fewer than
            # LP_REDECIDE_MIN; longest waiting first; the rest wait in `lp_dirty`.
            queue = list(dict.fromkeys(w for w in (*c["lp_dirty"], *sorted(L)) if w in L))   # longest waiting first
            now_l = [w for w in queue if w in want]
            forced = E & want
            if self.cg_budget_s is not None:
                now_l = now_l[:max(LP_REDECIDE_MIN, LP_REDECIDE_PER_SOLVE - len(forced))]
            A = forced | set(now_l)
            # why workloads are re-decided: LP values moved / concentration prices / changed offers, this
            # solve; forced now (events, and leftovers of earlier solves); all; and the ones now
            self.last_timings.update(affected_lp=len(L), affected_conc=n_conc, affected_events=n_events,
                                     affected_forced=len(forced), affected_all=len(E | L), affected_now=len(A))
            standing = [w for w in dict.fromkeys(repriced) if w not in A]
            for w in standing:
                self._reprice_kept(inst, P, M, c, w)
            self.last_timings["repriced"] = len(standing)
            c["dirty"] = E - want
            c["lp_dirty"] = dict.fromkeys(w for w in queue if w not in A)
            R = (R & want) - A - E
            runner_only |= R
            self.last_timings["runner_refreshed"] = len(R)
        else:
            c["metric"] = M.cost + conc_g[M.grp_pair] * P.g
            A = want
            c["dirty"] = set(range(W)) - want
            c["lp_dirty"] = {}
            runner_only = set()
            R = set()
        c["fresh"] = False
        metric_unit = c["metric"]
        order = sorted(A, key=lambda w: (-inst.priority[w], inst.ids[w]))
        self.last_timings["redecided"] = float(len(A))
        usage = c["usage"]
        for w in order:                                   # release what the re-decided hold
            for o, n in c["rows"].pop(w, ()):
                usage[o] -= n
        cap_left = inst.capacity - usage
        # GPUs left per quota after what every other workload holds: hard limits, tracked like the capacity
        qleft0 = pl.quota_left(inst, usage) if inst.quotas else None
        # Two passes, keep the cheaper: (1) priority order, first come first served; (2) the same, but
        # the capacity the LP gives (rounded down) to a workload decided later is held for it.
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

        def run_pass(protect: bool) -> tuple[float, dict[int, _Decision | None], F64, F64 | None]:
            left = cap_left.copy()
            ql = None if qleft0 is None else qleft0.copy()
            held = np.zeros_like(left)   # capacity held for workloads not decided yet
            if protect:
                for lst in own.values():
                    for o, f in lst:
                        held[o] += f
            out: dict[int, _Decision | None] = {}
            total = 0.0
            for w in order:
                if protect:
                    for o, f in own.get(w, ()):
                        held[o] -= f
                    d = self._decide(inst, P, M, w, metric_unit, left - held, keep_cap=left, qleft=ql)
                    if d is None:   # held capacity is a preference, never a reason to fail
                        d = self._decide(inst, P, M, w, metric_unit, left, qleft=ql)
                else:
                    d = self._decide(inst, P, M, w, metric_unit, left, qleft=ql)
                out[w] = d
                if d is None:
                    total += float(M.M[w])
                    continue
                total += d.metric
                for o, n in d.rows:
                    left[o] -= n
                if ql is not None:
                    pl.quota_take(inst, d.rows, ql)
            return total, out, left, ql

        best = run_pass(False)

        def honoured(decs: dict[int, _Decision | None]) -> bool:
            for w, lst in own.items():
                d = decs.get(w)
                have = dict(d.rows) if d is not None else {}
                if any(have.get(o, 0) < f for o, f in lst):
                    return False
            return True

        if own and len(A) > 64 and not honoured(best[1]):   # worth it on (cold) full decisions
            alt = run_pass(True)
            if alt[0] < best[0] - 1e-9:
                best = alt
        # workloads competing for capacity or quota (one left unplaced, or blocked from its cheapest offer):
        # choose their plans jointly with CP-SAT (solvers.joint), keep it when cheaper
        if self.joint_time_limit_s > 0 and len(order) > 1 and any(
                d is None or d.blocked for d in best[1].values()):
            alt2 = joint_pass(self, inst, P, M, order, metric_unit, cap_left, qleft0, best[1],
                              self.joint_time_limit_s)
            self.stats["joint_passes"] = self.stats.get("joint_passes", 0) + 1
            if alt2 is not None and alt2[0] < best[0] - 1e-9:
                self.stats["joint_improved"] = self.stats.get("joint_improved", 0) + 1
                self.last_timings["joint_saving"] = best[0] - alt2[0]
                best = alt2
        decided: dict[int, _Decision] = {}
        for w in order:
            c["reports"].pop(w, None)
            d = best[1][w]
            if d is None:
                c["reports"][w] = self._diagnose(inst, P, w, best[2], best[3])
                c["runner"][w] = math.inf
                c["chosen"][w] = math.inf
                c["thr"][w] = 0.0
                continue
            for o, n in d.rows:
                usage[o] += n
            decided[w] = d
            c["rows"][w] = d.rows
            c["runner"][w] = d.runner[1] if d.runner is not None else math.inf
            keep_like = d.kind == "keep"
            g_new = sum(float(inst.gpus[o]) * n for o, n in d.rows)
            c["chosen"][w] = d.metric if keep_like else d.metric - inst.params.risk_lambda * float(M.mu[w]) * g_new
            c["thr"][w] = inst.threshold_of(inst.rows_cost(w, d.rows))
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
        ev = evaluate(inst, new_plan, offer_index=self._oidx, used=others, workload_index=widx)
        if not ev.ok:  # never return a plan that breaks a hard constraint
            # a quota over its limit indicts only the re-decided plans on offers it covers (a plan in force
            # not re-decided now may hold more than a lowered quota allows until it is asked for)
            over_q = np.flatnonzero(pl.quota_left(inst, usage) < -1e-9) if inst.quotas else np.zeros(0, np.int64)
            for wid in list(new_plan):
                rows_w = decided[widx[wid]].rows
                on_over = bool(over_q.size) and any(bool(inst.qmask[over_q, o].any()) for o, _ in rows_w)
                if on_over or any(v.startswith((wid + ":", "offer ")) for v in ev.violations):
                    w = widx[wid]
                    new_plan.pop(wid)
                    d = decided.pop(w)
                    for o, n in c["rows"].pop(w, ()):
                        usage[o] -= n
                    c["reports"][w] = InfeasibilityReport(
                        wid, f"internal: repaired plan failed verification ({'; '.join(ev.violations)[:300]})",
                        "capacity")
        for w in sorted(R):
            self._refresh_runner(inst, P, M, c, w, metric_unit, usage)
        # the explanations' reduced costs, in one pass over all their pairs
        expl_pairs = {w: self._explained_pairs(P, w, d) for w, d in decided.items()}
        flat = np.fromiter((j for js in expl_pairs.values() for j in js), np.int64)
        rc_of = dict(zip(flat.tolist(), M.reduced_costs(flat).tolist(), strict=True)) if flat.size else {}
        for w, d in decided.items():
            wid = inst.ids[w]
            c["expl"][wid] = self._explain(inst, P, M, w, d, expl_pairs[w], rc_of)
            c["obj"][wid] = ev.per_workload[wid]
        for w in A:
            if w in c["reports"]:
                rep = c["reports"][w]
                c["expl"][rep.workload_id] = WorkloadExplanation(workload_id=rep.workload_id,
                                                                 infeasible_reason=rep.reason)
                c["obj"].pop(rep.workload_id, None)
        for w in A:
            c["codes_runner"].pop(w, None)
        for w, d in decided.items():
            if d.runner is not None:
                c["codes_runner"][w] = w * inst.n_offers + d.runner[0]
        # the (workload, offer) codes of every plan and runner-up (sorted); only those of A and the
        # runner-only workloads changed, so only theirs are replaced (a code's workload is code // n_offers)
        if c["codes"] is None:
            codes = [w * inst.n_offers + o for w, rows in c["rows"].items() for o, _ in rows]
            codes += list(c["codes_runner"].values())
            c["codes"] = np.unique(np.array(codes, np.int64)) if codes else np.zeros(0, np.int64)
        elif A or runner_only:
            moved = np.array(sorted(A | runner_only), np.int64)
            old_codes = c["codes"]
            kept = old_codes[~_sorted_member(old_codes // inst.n_offers, moved)]
            new_codes = [w * inst.n_offers + o for w in moved.tolist() for o, _ in c["rows"].get(w, ())]
            new_codes += [c["codes_runner"][w] for w in moved.tolist() if w in c["codes_runner"]]
            c["codes"] = np.union1d(kept, np.array(new_codes, np.int64))
        c["xv"], c["kv"], c["conc"] = xe, kv, conc_g
        c["avail"], c["cap"] = inst.available.copy(), inst.capacity.copy()   # the offers as these decisions saw them
        self._changed_offers.clear()
        self._price_before.clear()
        # objective of the whole portfolio, from per-workload terms and group totals
        grp = np.bincount(inst.group, weights=usage * inst.gpus, minlength=len(inst.groups)).astype(np.float64)
        objective = sum(c["obj"].values()) + concentration_penalty(inst, grp)
        lp_u = M.x[M.c_u] if M.x.size else np.ones(1)
        placed_all = len(c["rows"]) == W
        bound = M.lp_obj if (M.converged and placed_all and float(lp_u.sum()) < 1e-6) else None
        # adopt
        for wid in ids:
            if widx[wid] in A:
                self.plan.pop(wid, None)
        self.plan.update(new_plan)
        self._deferred = (inst, M, new_plan, {inst.ids[w] for w in A})   # see settle()
        ordered = sorted(ids)
        plan = self.plan
        out = tuple(a for wid in ordered if wid in plan for a in plan[wid])
        expl = {wid: c["expl"][wid] for wid in ids if wid in c["expl"]}
        reports = c["reports"]
        infeasible = tuple(reports[w] for w in (widx[wid] for wid in ordered) if w in reports) if reports else ()
        return out, expl, infeasible, objective, bound, frozenset(inst.ids[w] for w in A)

    def _refresh_runner(self, inst: Instance, P: _Pairs, M: _Master, c: dict, w: int, metric_unit: F64,
                        usage: F64) -> None:
        """w's decision stands but its runner-up got dearer or went: find the runner-up again (as `_decide`
        would, against the capacity the others hold now) and bring the explanation up to date."""
        rows = c["rows"].get(w)
        wid = inst.ids[w]
        if not rows or wid not in c["expl"]:
            return
        cap_left = inst.capacity - usage
        for o, n in rows:
            cap_left[o] += n
        singles, _ = self._single_candidates(inst, P, M, w, metric_unit, cap_left)
        mine = {o for o, _ in rows}
        runner = next(((j, m) for j, m in singles if int(P.o[j]) not in mine), None)
        x = c["expl"][wid]
        rc = {k: v for k, v in x.reduced_costs.items() if k in x.chosen}
        c["codes_runner"].pop(w, None)
        if runner is None:
            c["runner"][w] = math.inf
            c["expl"][wid] = x.model_copy(update={"runner_up": None, "runner_up_delta_usd_per_hour": None,
                                                  "reduced_costs": rc})
            return
        j, m = runner
        o = int(P.o[j])
        c["runner"][w] = m
        c["codes_runner"][w] = w * inst.n_offers + o
        rc[inst.keys[o]] = float(M.reduced_costs(np.array([j], np.int64))[0])
        c["expl"][wid] = x.model_copy(update={"runner_up": inst.keys[o], "reduced_costs": rc,
                                              "runner_up_delta_usd_per_hour": m - float(c["chosen"][w])})

    def _stands_repriced(self, inst: Instance, P: _Pairs, c: dict, w: int, rows: tuple[tuple[int, int], ...],
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
        if len(rows) > 1 and not (same and self.reprice_plans):
            return False
        if not self._plan_valid(inst, w, rows):
            return False
        B = float(inst.budget[w])
        usd = sum(float(inst.price[o]) * n for o, n in rows)
        x = c["expl"].get(wid)
        if usd >= B - 1e-6 * max(1.0, B) and (x is None or "budget" not in x.binding_constraints):
            return False
        if len(rows) > 1:
            o, n1 = int(P.o[j]), float(P.n_single[j])
            before = self._price_before.get(o, float(inst.price[o]))
            if (n1 * before <= B * (1 + 1e-9)) != (n1 * float(inst.price[o]) <= B * (1 + 1e-9)):
                return False
        return True

    def _reprice_kept(self, inst: Instance, P: _Pairs, M: _Master, c: dict, w: int) -> None:
        """w's plan in force stands (`_stands_repriced`): bring its cached metric, hysteresis threshold,
        objective, explanation and assignments to the new prices."""
        wid = inst.ids[w]
        rows = c["rows"][w]
        # keep-like: no migration term
        c["chosen"][w] = _rows_metric(P, w, rows, c["metric"], inst.params.risk_lambda * float(M.mu[w]))
        cost = inst.rows_cost(w, rows)
        c["thr"][w] = inst.threshold_of(cost)
        if wid in c["obj"]:
            c["obj"][wid] = cost
        self.plan[wid] = [Assignment(workload_id=wid, offer=inst.offer_keys[o], instances=int(n),
                                     usd_per_hour=float(n * inst.price[o])) for o, n in rows]
        usd = sum(a.usd_per_hour for a in self.plan[wid])
        x = c["expl"].get(wid)
        if x is not None:
            binding = x.binding_constraints
            at_budget = usd >= inst.budget[w] - 1e-6 * max(1.0, inst.budget[w])
            if "budget" in binding and "budget" not in x.duals and not at_budget:
                binding = [b for b in binding if b != "budget"]
            delta = float(c["runner"][w]) - float(c["chosen"][w]) if math.isfinite(c["runner"][w]) else None
            c["expl"][wid] = x.model_copy(update={"usd_per_hour": usd, "binding_constraints": binding,
                                                  "runner_up_delta_usd_per_hour": delta})

    def _new_cache(self, inst: Instance, P: _Pairs) -> dict:
        usage = np.zeros(inst.n_offers)
        rows: dict[int, tuple[tuple[int, int], ...]] = {}
        widx = self._widx
        for wid, assigns in self.plan.items():
            if wid not in widx:
                continue
            r: dict[int, int] = {}
            for a in assigns:
                o = self._oidx.get(a.offer.key)
                if o is not None:
                    r[o] = r.get(o, 0) + a.instances
                    usage[o] += a.instances
            rows[widx[wid]] = tuple(sorted(r.items()))
        obj = {inst.ids[w]: inst.rows_cost(w, rr) for w, rr in rows.items()}
        c = {"fresh": True, "rows": rows, "usage": usage, "runner": np.full(inst.n_workloads, math.inf),
             "chosen": np.full(inst.n_workloads, -math.inf), "thr": np.zeros(inst.n_workloads),
             "reports": {}, "expl": {}, "obj": obj, "codes": None,
             "codes_runner": {}, "metric": None, "xv": None, "kv": None, "conc": None,
             "dirty": set(), "lp_dirty": {}, "avail": inst.available.copy(), "cap": inst.capacity.copy()}
        self._cache = c
        return c

    def _adopt(self, inst: Instance, M: _Master, new_plan: Mapping[str, list[Assignment]], ids: set[str]) -> None:
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
                if in_force and wid in c["obj"]:
                    c["obj"][wid] = inst2.rows_cost(w, in_force)
        self._inst = inst2
        M.inst = inst2
        P = self._pairs
        assert P is not None
        conc_g = -(M.y[M.r_grp] + M.y[M.r_tot])
        for w in changed:
            M.mu[w] = inst2.migration_per_gpu(w)
        # the moved workloads' pairs, all at once
        seg = _segments(P, np.array(changed, np.int64))
        M.cost[seg] = pair_costs(inst2, P, M.mu, seg)
        M.mark_dirty(seg)
        if c is not None and c["metric"] is not None:
            c["metric"][seg] = M.cost[seg] + conc_g[inst2.group[P.o[seg]]] * P.g[seg]
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
        self._lp_dirty = True
        if M.h.getNumCol() > 4 * max(1, int(np.count_nonzero(M.in_master))) + 10 * inst.n_workloads:
            self._structural = True   # too many tombstoned keep columns: compact at the next solve

    # --- per-workload integer decision ----------------------------------------------------------
    def _single_candidates(self, inst: Instance, P: _Pairs, M: _Master, w: int, metric_unit: F64, cap_left: F64,
                           k: int = 4, qleft: F64 | None = None) -> tuple[list[tuple[int, float]], list[str]]:
        """Best k single-offer plans of w, feasible now: [(pair index, metric)], and blocked reasons."""
        s, e = int(P.ptr[w]), int(P.ptr[w + 1])
        if e == s:
            return [], []
        n = P.n_single[s:e]
        m = n * metric_unit[s:e]
        # (the master's per-pair copies of prices and availability: slices, where the offers' would be gathers)
        ok = P.single_fits[s:e] & M.avail_pair[s:e] & (n * M.price_pair[s:e] <= inst.budget[w] * (1 + 1e-9))
        blocked: list[str] = []
        okc = ok
        if self._any_capacity:   # (with no capacity limit anywhere, cap_left is infinite: nothing to test)
            o = P.o[s:e]
            okc = ok & (n <= cap_left[o] + 1e-9)
            if ok.any() and not okc[np.argmin(np.where(ok, m, np.inf))]:
                j = int(np.argmin(np.where(ok, m, np.inf)))
                blocked.append(f"capacity:{inst.keys[o[j]]}")
        if qleft is not None and inst.quotas:
            o = P.o[s:e]
            okq = okc & (n * P.g[s:e] <= pl.quota_room(inst, o, qleft) + 1e-9)
            if okc.any() and not okq[np.argmin(np.where(okc, m, np.inf))]:
                j = int(np.argmin(np.where(okc, m, np.inf)))
                b = pl.binding_quota(inst, o[j:j + 1], qleft)
                if b is not None:
                    blocked.append(f"quota:{b[0]}")
            okc = okq
        idx = np.nonzero(okc)[0]
        if not idx.size:
            return [], blocked
        kk = min(k, idx.size)
        top = idx[np.argpartition(m[idx], kk - 1)[:kk]] if idx.size > kk else idx
        top = top[np.argsort(m[top], kind="stable")]
        return [(s + int(j), float(m[j])) for j in top], blocked

    def _candidates(self, inst: Instance, P: _Pairs, M: _Master, w: int, metric_unit: F64, cap_left: F64,
                    qleft: F64 | None) -> tuple[list[tuple[float, str, tuple[tuple[int, int], ...]]],
                                                list[tuple[int, float]], list[str]]:
        """w's candidate plans feasible in `cap_left` / `qleft`, as (metric, kind, rows), before the plan in
        force and the migration charges are weighed (`_decide`), with its best single offers and what blocked
        the cheapest one."""
        lam_mu = inst.params.risk_lambda * float(M.mu[w])

        def metric(rows: tuple[tuple[int, int], ...], base: bool = False) -> float:
            return _rows_metric(P, w, rows, metric_unit, lam_mu if base else None)

        cands: list[tuple[float, str, tuple[tuple[int, int], ...]]] = []
        lp_rows = self._round_lp(inst, P, M, w, metric_unit, cap_left, qleft)
        if lp_rows:   # first: on ties (degenerate duals) the LP's own split wins
            cands.append((metric(lp_rows), "lp", lp_rows))
        singles, blocked = self._single_candidates(inst, P, M, w, metric_unit, cap_left, qleft=qleft)
        if singles:
            j, m = singles[0]
            cands.append((m, "single", ((int(P.o[j]), int(P.n_single[j])),)))
        s, e = int(P.ptr[w]), int(P.ptr[w + 1])
        S = float(inst.spot_share[w])
        if inst.gang[w] and e > s and (0.0 < S < 1.0 or not singles):
            # one place, its spot and on-demand offers mixed as the spot share allows
            # (the places of the 32 cheapest offers per GPU, with their other market: a few dozen offers)
            seg_o = P.o[s:e]
            live = np.flatnonzero(M.avail_pair[s:e])
            if live.size > 32:
                live = live[np.argpartition((metric_unit[s:e] / P.g[s:e])[live], 32)[:32]]
            po_ = self._place_offers
            offs = np.concatenate([po_[p] for p in set(inst.place[seg_o[live]].tolist())]) if live.size \
                else np.zeros(0, np.int64)
            jj = np.minimum(np.searchsorted(seg_o, offs), seg_o.size - 1)
            hit = seg_o[jj] == offs
            gp = pl.gang_plans_few(inst, w, offs[hit].tolist(), metric_unit[s + jj[hit]].tolist(), cap_left, qleft)
            if gp is not None and pl.plan_ok(inst, w, gp[1], cap_left, qleft):
                cands.append((gp[0], "place", gp[1]))
        elif not inst.gang[w] and e > s and (inst.share_provider[w] < 1.0 or inst.share_region[w] < 1.0):
            # replicas within provider/region shares: filled across providers from the cheapest of each
            seg_o = P.o[s:e]
            live = np.flatnonzero(M.avail_pair[s:e])
            pool = pl.spread_pool(inst, seg_o[live], metric_unit[s:e][live] / P.g[s:e][live])
            unit = {int(o): float(metric_unit[s + int(np.searchsorted(seg_o, o))]) for o in pool}
            rows_sp = pl.fill(inst, w, {}, pool, unit, cap_left, qleft)
            if rows_sp:
                cands.append((metric(rows_sp), "spread", rows_sp))
        return cands, singles, blocked

    def _decide(self, inst: Instance, P: _Pairs, M: _Master, w: int, metric_unit: F64,
                cap_left: F64, keep_cap: F64 | None = None, qleft: F64 | None = None) -> _Decision | None:
        cands, singles, blocked = self._candidates(inst, P, M, w, metric_unit, cap_left, qleft)
        return self._select(inst, P, M, w, metric_unit, cands, singles, blocked,
                            cap_left if keep_cap is None else keep_cap, qleft)

    def _select(self, inst: Instance, P: _Pairs, M: _Master, w: int, metric_unit: F64,
                cands: list[tuple[float, str, tuple[tuple[int, int], ...]]], singles: list[tuple[int, float]],
                blocked: list[str], keep_cap: F64, qleft: F64 | None) -> _Decision | None:
        """The best of w's candidates against the plan in force: a move must save the hysteresis threshold
        and pay its move back within the payback horizon, else the plan in force stays."""
        wid = inst.ids[w]
        cur = inst.current.get(wid)
        lam = inst.params.risk_lambda
        lam_mu = lam * float(M.mu[w])

        def metric(rows: tuple[tuple[int, int], ...], base: bool = False) -> float:
            return _rows_metric(P, w, rows, metric_unit, lam_mu if base else None)

        keep_ok = bool(cur) and wid not in inst.stale_plan and cur is not None and \
            self._plan_valid(inst, w, cur, keep_cap, qleft)
        chosen: tuple[float, str, tuple[tuple[int, int], ...]] | None = None
        for c in cands:
            if cur is not None and c[2] == cur:  # identical to the plan in force: no migration charge
                c = (c[0] - lam * M.mu[w] * sum(float(inst.gpus[o]) * n for o, n in cur), "keep", c[2])
            elif cur and inst.state_gb[w]:   # a move: its state's egress and transfer, amortised over the horizon
                c = (c[0] + lam * pl.amortised_move(inst, w, c[2]), c[1], c[2])
            if chosen is None or c[0] < chosen[0] - 1e-9 * (1 + abs(chosen[0])):
                chosen = c
        binding: list[str] = []
        if keep_ok and cur is not None and (chosen is None or chosen[1] != "keep"):
            m_keep = metric(cur, base=True)
            if chosen is None or m_keep <= chosen[0] + 1e-12:
                chosen = (m_keep, "keep", cur)
            else:
                saving = m_keep - metric(chosen[2], base=True)
                if saving < inst.threshold(w):
                    chosen = (m_keep, "keep", cur)
                    binding.append("hysteresis")
                elif saving * pl.payback_hours(inst, w, chosen[2]) < pl.move_cost_usd(inst, w, chosen[2]) - 1e-9:
                    chosen = (m_keep, "keep", cur)   # the move does not pay itself back before it ends
                    binding.append("payback")
        if chosen is None:
            return None
        rows = chosen[2]
        if cur is not None and rows == cur and not binding and singles:
            j0 = singles[0][0]
            alt = float(P.n_single[j0] * (metric_unit[j0] - lam_mu * P.g[j0]))
            saving = metric(cur, base=True) - alt
            if saving > 1e-9:   # a cheaper plan exists: its saving is below the threshold, or does not pay back
                alt_rows = ((int(P.o[j0]), int(P.n_single[j0])),)
                pays = saving * pl.payback_hours(inst, w, alt_rows) >= pl.move_cost_usd(inst, w, alt_rows) - 1e-9
                binding.append("hysteresis" if saving < inst.threshold(w) or pays else "payback")
        chosen_offers = {o for o, _ in rows}
        runner = next(((int(P.o[j]), m) for j, m in singles if int(P.o[j]) not in chosen_offers), None)
        return _Decision(rows, chosen[0], chosen[1], binding, runner, blocked)

    def _round_lp(self, inst: Instance, P: _Pairs, M: _Master, w: int, metric_unit: F64,
                  cap_left: F64, qleft: F64 | None = None) -> tuple[tuple[int, int], ...] | None:
        s, e = int(P.ptr[w]), int(P.ptr[w + 1])
        # the workload's LP support: a few pairs, handled as Python lists (numpy's per-call cost dominated)
        sup_all, val_all, sptr = M.lp_support()
        sup: list[int] = sup_all[sptr[w]:sptr[w + 1]].tolist()
        val: list[float] = val_all[sptr[w]:sptr[w + 1]].tolist()
        kc = int(M.keep_col[w])
        if kc >= 0 and M.x.size > kc and M.x[kc] > 1e-7:   # the keep column's value, on its rows' pairs
            xk = float(M.x[kc])
            kj, kn = M.keep_pairs[w]
            for j, n in zip(kj.tolist(), kn.tolist(), strict=True):
                if j in sup:
                    val[sup.index(j)] += xk * n
                else:
                    sup.append(j)
                    val.append(xk * n)
        avail, po = inst.available, P.o
        if not all(avail[po[j]] for j in sup):   # (all live, unless the LP solution predates an event: see run)
            sup, val = [j for j in sup if avail[po[j]]], [v for j, v in zip(sup, val, strict=True) if avail[po[j]]]
        if not sup:
            return None
        gang = bool(inst.gang[w])
        spread = not gang and (inst.share_provider[w] < 1.0 or inst.share_region[w] < 1.0)
        region = place = None
        if inst.same_region[w] or gang:
            # co-location / gang: the region (place) with the most LP mass among the support; fill only there
            sa = np.array(sup, np.int64)
            loc = inst.place[po[sa]] if gang else inst.region[po[sa]]
            mass = np.bincount(loc, weights=np.array(val) * P.g[sa])
            where = int(np.argmax(mass))
            if gang:
                place = where
            else:
                region = where
            keep = (loc == where).tolist()
            sup = [j for j, k in zip(sup, keep, strict=True) if k]
            val = [v for v, k in zip(val, keep, strict=True) if k]
        if gang and inst.same_region[w]:
            region = int(inst.region[po[sup[0]]])
        base: dict[int, int] = {}
        ql = None if qleft is None or not inst.quotas else qleft.copy()
        if not spread:   # (a spread plan is filled from scratch: the LP ignores the shares)
            for j, v in zip(sup, val, strict=True):
                o = int(po[j])
                k = int(min(math.floor(v + 1e-6), max(0.0, cap_left[o])))
                if ql is not None and k > 0:
                    g = int(P.g[j])
                    room = min((float(ql[q]) for q in inst.offer_quotas[o]), default=math.inf)
                    if room < k * g:
                        k = max(0, math.floor(room / g + 1e-9))
                    pl.quota_take(inst, ((o, k),), ql)
                if k > 0:
                    base[o] = k
        unit = {int(po[j]): float(metric_unit[j]) for j in sup}
        L = int(inst.min_gpus[w])
        G = sum(int(inst.gpus[o]) * k for o, k in base.items())
        pool: list[int] = list(unit)
        if G < L:
            # fill to L_w with the cheapest-per-GPU admissible instance: LP support first, then the
            # workload's cheapest pairs (looked up only when a fill is needed), of the place for a gang
            ok = M.avail_pair[s:e]
            if region is not None:
                ok = ok & (inst.region[P.o[s:e]] == region)
            if place is not None:
                ok = ok & (inst.place[P.o[s:e]] == place)
            idx = np.flatnonzero(ok)
            per_gpu = (metric_unit[s:e] / P.g[s:e])[idx]
            if spread:
                extra = pl.spread_pool(inst, P.o[s:e][idx], per_gpu)
                for o in extra:
                    unit.setdefault(o, float(metric_unit[s + int(np.searchsorted(P.o[s:e], o))]))
            else:
                if idx.size > 16:
                    idx = idx[np.argpartition(per_gpu, 16)[:16]]
                for j in (idx + s).tolist():
                    unit.setdefault(int(po[j]), float(metric_unit[j]))
            pool = list(unit)
        return pl.fill(inst, w, base, pool, unit, cap_left, qleft)

    # --- explanations and infeasibility ----------------------------------------------------------
    @staticmethod
    def _explained_pairs(P: _Pairs, w: int, d: _Decision) -> list[int]:
        """The pairs whose reduced costs an explanation shows: the chosen offers', then the runner-up's."""
        s, e = int(P.ptr[w]), int(P.ptr[w + 1])
        seg_o = P.o[s:e]
        offers = [o for o, _ in d.rows] + ([d.runner[0]] if d.runner is not None else [])
        return (s + np.searchsorted(seg_o, np.array(offers, np.int64))).tolist()

    def _explain(self, inst: Instance, P: _Pairs, M: _Master, w: int, d: _Decision, pairs: list[int],
                 rc_of: Mapping[int, float]) -> WorkloadExplanation:
        """`pairs`: `_explained_pairs(P, w, d)`; `rc_of`: their reduced costs."""
        wid = inst.ids[w]
        G = usd = Gs = 0.0   # (scalar arithmetic: a plan has a few rows)
        for oi, ni in d.rows:
            g = float(inst.gpus[oi]) * ni
            G += g
            usd += float(inst.price[oi]) * ni
            if inst.spot[oi]:
                Gs += g
        binding = list(d.binding)
        if inst.min_gpus[w] == G:
            binding.append("min_gpus")
        if inst.max_gpus[w] == G:
            binding.append("max_gpus")
        y = M.y
        duals: dict[str, float] = {}
        for name, r in (("min_gpus", M.r_min[w]), ("max_gpus", M.r_max[w]), ("budget", M.r_bud[w]),
                        ("spot_share", M.r_spot[w])):
            if r >= 0 and abs(y[r]) > 1e-9:
                duals[name] = float(y[r])
        if "budget" in duals or usd >= inst.budget[w] - 1e-6 * max(1.0, inst.budget[w]):
            binding.append("budget")
        if inst.spot_share[w] < 1 and Gs > 0 and Gs >= inst.spot_share[w] * G - 1e-9:
            binding.append("spot_share")
        if inst.same_region[w]:
            binding.append("co_location")
        for oi, _ in d.rows:
            r = int(M.r_cap[oi])
            if r >= 0 and abs(y[r]) > 1e-9:
                duals[f"capacity:{inst.keys[oi]}"] = float(y[r])
                binding.append(f"capacity:{inst.keys[oi]}")
        binding += [b for b in (d.blocked or []) if b not in binding]
        runner_key = None
        delta = None
        if d.runner is not None:
            ro, rm = d.runner
            runner_key = inst.keys[ro]
            delta = rm - d.metric
        reduced = {inst.keys[int(P.o[j])]: rc_of[j] for j in pairs}
        cur = inst.current.get(wid)
        move = pl.move_cost_usd(inst, w, d.rows) if cur and d.rows != cur else None   # the move's one-off cost
        return WorkloadExplanation(workload_id=wid, chosen=[inst.keys[oi] for oi, _ in d.rows], usd_per_hour=usd,
                                   runner_up=runner_key, runner_up_delta_usd_per_hour=delta,
                                   binding_constraints=list(dict.fromkeys(binding)), reduced_costs=reduced,
                                   duals=duals, move_cost_usd=move)

    def _diagnose(self, inst: Instance, P: _Pairs, w: int, cap_left: F64,
                  qleft: F64 | None = None) -> InfeasibilityReport:
        return diagnose(inst, w, cap_left, qleft)


def _rows_metric(P: _Pairs, w: int, rows: tuple[tuple[int, int], ...], metric_unit: F64,
                 lam_mu: float | None = None) -> float:
    """The metric of w's plan `rows` (whole instances per offer): sum of instances x metric_unit over its
    pairs; with `lam_mu`, without the migration term (lam_mu per GPU). inf for no rows."""
    if not rows:
        return math.inf
    s, e = int(P.ptr[w]), int(P.ptr[w + 1])
    tot = 0.0
    for o, n in rows:
        j = bisect_left(P.o, o, s, e)
        tot += n * float(metric_unit[j])
        if lam_mu is not None:
            tot -= n * lam_mu * float(P.g[j])
    return tot


def _knap(n_regions: int, U: int, g: I64, ri: I64, c: F64, sel: np.ndarray) -> np.ndarray:
    """best[region, k]: cheapest (by c) whole instances of the selected offers with exactly k GPUs."""
    best = np.full((n_regions, U + 1), np.inf)
    best[:, 0] = 0.0
    if not sel.any():
        return best
    gs = np.unique(g[sel])
    mins = np.full((n_regions, gs.size), np.inf)
    np.minimum.at(mins, (ri[sel], np.searchsorted(gs, g[sel])), c[sel])
    for k in range(1, U + 1):
        for t, gv in enumerate(gs.tolist()):
            if gv <= k:
                np.minimum(best[:, k], best[:, k - gv] + mins[:, t], out=best[:, k])
    return best


def integer_lower_bound(engine: PortfolioEngine, with_migration: bool = False) -> float | None:
    """A lower bound at least as strong as the LP's: Lagrangian relaxation of the coupling rows
    (capacity, concentration, portfolio total) at the LP's duals, with each workload's own problem
    solved over whole instances (GPU bounds and co-location kept; budget and spot share relaxed,
    which only weakens it). Valid for any sign-feasible multipliers, so also after events.
    `with_migration=False` bounds the problem without a plan in force (as the benchmark compares).
    """
    inst, P, M = engine._inst, engine._pairs, engine._master
    if inst is None or P is None or M is None or not M.optimal:
        return None
    p = inst.params
    y = M.y
    y_grp = np.clip(y[M.r_grp], -p.risk_lambda * p.concentration_penalty_usd_per_gpu_hour, 0.0)
    y_tot = -p.concentration_cap * float(y_grp.sum())        # makes T's reduced cost exactly 0
    y_cap = np.where(M.r_cap >= 0, np.minimum(y[np.maximum(M.r_cap, 0)], 0.0), 0.0)
    cost = M.cost if with_migration else M.cost - p.risk_lambda * M.mu[P.w] * P.g
    chat = cost - P.g * (y_grp[inst.group[P.o]] + y_tot) - y_cap[P.o]
    total = float((y_cap * np.where(np.isfinite(inst.capacity), inst.capacity, 0.0)).sum())
    for w in range(inst.n_workloads):
        s, e = int(P.ptr[w]), int(P.ptr[w + 1])
        ok = inst.available[P.o[s:e]]
        best_w = float(M.M[w])
        if ok.any():
            o = P.o[s:e][ok]
            c = chat[s:e][ok]
            g = P.g[s:e][ok].astype(np.int64)
            L, U = int(inst.min_gpus[w]), int(inst.max_gpus[w])
            S = float(inst.spot_share[w])
            if inst.gang[w]:   # a gang's own problem: one place, n instances of its type, the interconnect for n
                best_w = min(best_w, _gang_bound(inst, w, o, c, g, L, U, S))
                total += best_w
                continue
            reg = inst.region[o] if inst.same_region[w] else np.zeros(o.size, np.int64)
            regs, ri = np.unique(reg, return_inverse=True)
            split = S < 1.0 and U <= 256     # keep the spot share exactly (two knapsacks), else relax it

            spot = inst.spot[o]
            if split:
                b_od, b_sp = _knap(regs.size, U, g, ri, c, ~spot), _knap(regs.size, U, g, ri, c, spot)
                val = np.inf
                for ks in range(0, U + 1):
                    lo_od = max(L - ks, 0, math.ceil(ks * (1 - S) / S - 1e-9) if S > 0 else (0 if ks == 0 else U + 1))
                    if ks > 0 and S <= 0:
                        break
                    hi_od = U - ks
                    if lo_od > hi_od or not np.isfinite(b_sp[:, ks]).any():
                        continue
                    val = min(val, float((b_sp[:, ks] + b_od[:, lo_od:hi_od + 1].min(axis=1)).min()))
            else:
                val = float(_knap(regs.size, U, g, ri, c, np.ones(o.size, bool))[:, L:U + 1].min())
            best_w = min(best_w, val)
        total += best_w
    return total


def _gang_bound(inst: Instance, w: int, o: I64, c: F64, g: I64, L: int, U: int, S: float) -> float:
    """The cheapest (reduced) cost of a gang's admissible plans: per place, n whole instances of its one
    instance type (ceil(L/g) <= n <= U/g), at most floor(S n) of them spot, the interconnect holding for n.
    (inf when no place can host it: the workload's bound is then its unplaced penalty.)"""
    best = math.inf
    places = inst.place[o]
    for place in np.unique(places):
        sel = np.flatnonzero(places == place)
        gg = int(g[sel[0]])
        spot = inst.spot[o[sel]]
        c_sp = float(c[sel][spot].min()) if spot.any() else math.inf
        c_od = float(c[sel][~spot].min()) if (~spot).any() else math.inf
        for n in range(max(1, math.ceil(L / gg)), U // gg + 1):
            if not pl.ic_ok_vec(inst, w, o[sel[:1]], n)[0]:
                continue
            k_max = min(n, math.floor(S * n + 1e-9)) if math.isfinite(c_sp) else 0
            # linear in k: all spot (up to the share) or none is the cheapest
            for k in {0, k_max}:
                if n - k > 0 and not math.isfinite(c_od):
                    continue
                best = min(best, (k * c_sp if k else 0.0) + ((n - k) * c_od if n - k else 0.0))
    return best


def _reachable(gs: list[int], hi: int) -> np.ndarray:
    r = np.zeros(hi + 1, bool)
    r[0] = True
    for g in gs:
        for k in range(g, hi + 1):
            if r[k - g]:
                r[k] = True
    return r


def _cheapest(price_by_g: Mapping[int, float], lo: int, hi: int) -> float:
    """Cheapest USD/h of whole instances with lo..hi GPUs (unbounded knapsack)."""
    best = np.full(hi + 1, np.inf)
    best[0] = 0.0
    for g, p in price_by_g.items():
        for k in range(g, hi + 1):
            v = best[k - g] + p
            if v < best[k]:
                best[k] = v
    return float(best[lo:hi + 1].min()) if hi >= lo else math.inf


def diagnose(inst: Instance, w: int, cap_left: F64 | None = None, qleft: F64 | None = None) -> InfeasibilityReport:
    """Name the constraint that cannot be met for workload w, and by how much (the placement rules
    included: "interconnect", "replica_size", "gang", "spread", "quota")."""
    wid = inst.ids[w]
    L, U, B, S = int(inst.min_gpus[w]), int(inst.max_gpus[w]), float(inst.budget[w]), float(inst.spot_share[w])
    cap = inst.capacity if cap_left is None else cap_left
    acc = inst.tput[w, inst.model] > 0
    base = acc & inst.allowed[w, inst.provider]
    if not (base & inst.available).any():
        models = sorted(m for m, t in inst.specs[w].gpu_throughput.items() if t > 0)
        return InfeasibilityReport(wid, f"no available offer of {', '.join(models)} from the allowed providers",
                                   "no_offer")
    o_av = np.flatnonzero(base & inst.available)
    poss = pl.pair_possible(inst, w, o_av)
    if not poss.any():
        rg = int(inst.replica_gpus[w])
        if rg and not inst.gang[w] and not (inst.gpus[o_av] == rg).any():
            sizes = sorted({int(g) for g in inst.gpus[o_av]})
            return InfeasibilityReport(wid, f"replica_size: no available offer has {rg} GPUs per instance "
                                       f"(sizes {sizes[:8]})", "replica_size")
        return InfeasibilityReport(wid, f"interconnect: no available offer meets {inst.specs[w].interconnect.value}",
                                   "interconnect")
    base = base.copy()
    base[o_av[~poss]] = False
    cand = base & inst.available & (inst.gpus <= U)
    if S <= 0:
        if not (cand & ~inst.spot).any():
            return InfeasibilityReport(wid, "only spot offers fit and max_spot_share is 0", "spot_share")
        cand &= ~inst.spot
    gs = sorted({int(g) for g in inst.gpus[cand]})
    reach = _reachable(gs, U) if gs else np.zeros(U + 1, bool)
    if not reach[L:U + 1].any():
        below = np.nonzero(reach[:L])[0]
        short = float(L - below.max()) if below.size else float(L)
        return InfeasibilityReport(wid, f"{L}..{U} GPUs cannot be made of whole instances of {gs} GPUs",
                                   "gpu_count", shortfall=short)
    price_by_g: dict[int, float] = {}
    for o in np.nonzero(cand)[0]:
        g = int(inst.gpus[o])
        price_by_g[g] = min(price_by_g.get(g, math.inf), float(inst.price[o]))
    cheapest = _cheapest(price_by_g, L, U)
    if cheapest > B + 1e-9:
        return InfeasibilityReport(wid, f"budget ${B:.2f}/h below the cheapest feasible ${cheapest:.2f}/h",
                                   "budget", shortfall=cheapest - B)
    if S < 1:
        od = cand & ~inst.spot
        od_g = float((np.minimum(cap[od], 4096.0) * inst.gpus[od]).sum())
        if od_g < (1 - S) * L:
            return InfeasibilityReport(wid, f"max_spot_share {S:.2f} needs {math.ceil((1 - S) * L)} on-demand GPUs, "
                                       f"{int(od_g)} available", "spot_share", shortfall=(1 - S) * L - od_g)
    placed = _diagnose_placement(inst, w, cand, cap, qleft)
    if placed is not None:
        return placed
    tot = float((np.clip(cap[cand], 0, 4096.0) * inst.gpus[cand]).sum())
    if tot < L:
        free = float((np.minimum(inst.capacity[cand], 4096.0) * inst.gpus[cand]).sum())
        who = " (taken by higher-priority workloads)" if free >= L else ""
        return InfeasibilityReport(wid, f"capacity: {int(tot)} GPUs available{who}, {L} needed", "capacity",
                                   shortfall=L - tot)
    if inst.same_region[w]:
        return InfeasibilityReport(wid, "no single region can host all instances within budget and capacity",
                                   "co_location")
    return InfeasibilityReport(wid, "budget, capacity and spot share cannot be met together", "capacity")


def _diagnose_placement(inst: Instance, w: int, cand: npt.NDArray[np.bool_], cap: F64,
                        qleft: F64 | None) -> InfeasibilityReport | None:
    """The placement rule (gang, interconnect, spread, quota) that no plan in the candidates can meet, if one is
    what binds: tried without capacity and quotas, with capacity, then with quotas too."""
    wid = inst.ids[w]
    L = int(inst.min_gpus[w])
    o = np.flatnonzero(cand)
    if not o.size:
        return None
    unlimited = np.full(inst.n_offers, math.inf)
    price = inst.price[o]
    if inst.gang[w]:
        def places(capx: F64, q: F64 | None) -> list[tuple[float, tuple[tuple[int, int], ...]]]:
            return pl.gang_plans(inst, w, o, price, capx, q, top=8)
        if not places(unlimited, None):
            if inst.need_ic[w] and pl.gang_plans(inst, w, o, price, unlimited, None, check_ic=False):
                need = inst.specs[w].interconnect.value
                return InfeasibilityReport(wid, f"interconnect: no single place with {need} hosts {L} GPUs within "
                                           "budget", "interconnect")
            return InfeasibilityReport(wid, f"gang: no single place hosts {L} GPUs within budget and spot share",
                                       "gang")
        if not places(cap, None):
            return InfeasibilityReport(wid, f"gang: no single place has {L} GPUs in stock within budget", "gang")
        if qleft is not None and inst.quotas and not places(cap, qleft):
            ok = places(cap, None)
            b = pl.binding_quota(inst, np.array([r[0][0] for _, r in ok], np.int64), qleft)
            if b is not None:
                return InfeasibilityReport(wid, f"quota {b[0]} {int(b[1])}/{int(b[2])}: no place within quota "
                                           f"hosts {L} GPUs", "quota", shortfall=float(L))
        return None
    spread = inst.share_provider[w] < 1.0 or inst.share_region[w] < 1.0
    unit = {int(x): float(inst.price[x]) for x in o.tolist()}
    pool = pl.spread_pool(inst, o, price / inst.gpus[o], k=64, per_domain=8) if spread else []
    if spread:
        if pl.fill(inst, w, {}, pool, unit, unlimited, None) is None:
            sp, sr = float(inst.share_provider[w]), float(inst.share_region[w])
            n_p = len({int(inst.provider[x]) for x in o.tolist()})
            return InfeasibilityReport(wid, f"spread: at most {sp:.2f} of {L} GPUs per provider and {sr:.2f} per "
                                       f"region, within budget, over {n_p} providers", "spread")
        if pl.fill(inst, w, {}, pool, unit, cap, None) is None:
            return InfeasibilityReport(wid, "spread: not enough capacity spread over providers and regions",
                                       "spread")
    if qleft is not None and inst.quotas:
        room = pl.quota_room(inst, o, qleft)
        gq = float(np.minimum(np.clip(cap[o], 0, 4096.0) * inst.gpus[o], np.maximum(room, 0.0)).sum())
        if gq < L or (spread and pl.fill(inst, w, {}, pool, unit, cap, qleft) is None):
            b = pl.binding_quota(inst, o, qleft)
            if b is not None:
                return InfeasibilityReport(wid, f"quota {b[0]} {int(b[1])}/{int(b[2])}: {L} GPUs needed", "quota",
                                           shortfall=float(L - gq) if gq < L else 0.0)
    return None


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


__all__ = ["EngineParams", "PortfolioEngine", "concentration_penalty", "diagnose", "integer_lower_bound",
           "solve_once"]


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

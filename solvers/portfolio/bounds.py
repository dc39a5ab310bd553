"""Lower bounds on the integer problem's objective, to report a plan's gap against.

* The LP relaxation's optimum (`SolveResult.lower_bound`, solvers/portfolio/master.py): weak where whole
  instances matter and for gangs (the LP may split a gang over places; placement rules are not rows).
* `integer_lower_bound`: the Lagrangian relaxation of the coupling rows at multipliers taken from the LP's
  duals. With lambda_o <= 0 on capacity rows, pi_G in [-lambda kappa_pen, 0] on the concentration rows and
  pi_tot = -kappa sum_G pi_G (T's reduced cost is then 0, e_G's is >= 0), for any such multipliers

      LB(lambda, pi) = sum_o lambda_o cap_o + sum_w min( M_w,  min_{x in X_w} sum_o chat_wo x_wo ),
      chat_wo = c_wo - g_o (pi_G(o) + pi_tot) - lambda_o,

  is a valid bound (weak duality), where X_w is workload w's own set of whole-instance plans: GPU bounds,
  co-location and the spot share kept (two knapsacks, on-demand and spot, per region; `_knap`), the budget
  relaxed; for a gang, one place, n instances of its type, the interconnect for n (`_gang_bound`); for
  replicas with provider / region shares sigma, also the same knapsack with at most floor(sigma G) of its G
  GPUs in any one provider (region), spot share and co-location relaxed (`_spread_bound`): two relaxations
  of the same X_w, so the larger of the two minima is still a lower bound.
  `with_migration=False` drops the migration term (the problem without a plan in force, as the benchmark
  compares).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from solvers import placement as pl
from solvers.instance import F64, I64, Instance

if TYPE_CHECKING:
    from solvers.portfolio.engine import PortfolioEngine


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
    n_reg = int(inst.region.max()) + 1 if inst.region.size else 1
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
            # replicas within provider / region shares: each share kept alone (spot share, co-location relaxed)
            # is another relaxation of w's own problem; the larger of the valid bounds holds
            for share, dom in ((float(inst.share_provider[w]), inst.provider[o]),
                               (float(inst.share_region[w]), inst.provider[o] * n_reg + inst.region[o])):
                if share < 1.0:
                    val = max(val, _spread_bound(dom, g, c, L, U, share))
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


def _spread_bound(dom: I64, g: I64, c: F64, L: int, U: int, share: float) -> float:
    """The cheapest (reduced) cost of whole instances with G GPUs in total, L <= G <= U, at most
    floor(share G) of them in any one domain (provider, or provider and region): per G, a min-plus
    convolution over the domains of each domain's exact-k knapsack (`_knap`), k <= floor(share G).

    >>> c = np.array([1.0, 1.0, 5.0]); g = np.array([1, 1, 1]); dom = np.array([0, 0, 1])
    >>> _spread_bound(dom, g, c, 2, 2, 1.0), _spread_bound(dom, g, c, 2, 2, 0.5)
    (2.0, 6.0)
    """
    doms, di = np.unique(dom, return_inverse=True)
    best = _knap(doms.size, U, g, di, c, np.ones(g.size, bool))   # best[d, k]: exactly k GPUs in domain d
    out = math.inf
    for G in range(L, U + 1):
        cap = min(G, math.floor(share * G + 1e-9))
        f = np.full(G + 1, np.inf)
        f[0] = 0.0
        k = np.arange(G + 1)[:, None]
        j = np.arange(cap + 1)[None, :]
        valid = k >= j
        src = np.where(valid, k - j, 0)
        for d in range(doms.size):
            b = best[d, :cap + 1]
            f = np.where(valid, f[src] + b[None, :], np.inf).min(axis=1)
        out = min(out, float(f[G]))
    return out

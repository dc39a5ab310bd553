"""One workload's integer decision: its candidate plans in the capacity and quota left, and the choice
against the plan in force.

Candidates of w (each a plan `rows` of whole instances, priced by the per-pair metric
m_wo = c_wo + g_o * pi_G(o), the unit cost plus the LP's concentration price pi_G = -(y_grp,G + y_tot)):
  (a) "lp": the LP support rounded down, x_wo -> floor(x_wo) (capped by capacity and quota left), and repaired
      greedily to L_w GPUs with the cheapest admissible instances per GPU (`placement.fill`); a gang keeps only
      the place with the most LP mass sum_o x_wo g_o and fills there; co-location keeps one region;
  (b) "single": the best single-offer plans, n_single_wo = ceil(L_w / g_o) instances of one offer (the
      cheapest is a candidate, the next ones give the runner-up);
  (c) "place": for a gang with a partial spot share 0 < S_w < 1 (or no single offer), the cheapest place
      mixing its spot and on-demand offers within S_w (`placement.gang_plans_few`);
  (d) "spread": replicas with provider/region shares, filled across providers from the cheapest of each;
  (e) "keep": the plan in force, when still valid (rules, capacity, quota).
Choice (`select`): the least metric, where a move (any plan but the one in force) adds the migration term
lambda mu_w g and its state's transfer and egress amortised over the payback horizon H; the plan in force
(metric without migration m^keep) stays unless the best move saves Delta = m^keep - m(x) (both without the
migration term) with Delta >= theta_w (hysteresis) and Delta * H >= C_move(w, x) (payback).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from solvers import placement as pl
from solvers.instance import F64, I64, Instance
from solvers.portfolio.master import Master
from solvers.portfolio.pairs import Pairs, Rows, rows_metric

Candidate = tuple[float, str, Rows]   # (metric, kind, rows)


@dataclass
class Decision:
    rows: tuple[tuple[int, int], ...]
    metric: float                 # decision metric: objective incl. migration + concentration price
    kind: str                     # "lp" | "single" | "keep"
    binding: list[str]
    runner: tuple[int, float] | None = None   # (offer, metric of its single-offer plan)
    blocked: list[str] | None = None



def single_candidates(inst: Instance, P: Pairs, M: Master, w: int, metric_unit: F64, cap_left: F64,
                      k: int = 4, qleft: F64 | None = None, any_capacity: bool = True
                      ) -> tuple[list[tuple[int, float]], list[str]]:
    """Best k single-offer plans of w, feasible now: [(pair index, metric)], and blocked reasons.
    `any_capacity`: some offer has a capacity limit (else `cap_left` is infinite and not tested)."""
    s, e = int(P.ptr[w]), int(P.ptr[w + 1])
    if e == s:
        return [], []
    n = P.n_single[s:e]
    m = n * metric_unit[s:e]
    # (the master's per-pair copies of prices and availability: slices, where the offers' would be gathers)
    ok = P.single_fits[s:e] & M.avail_pair[s:e] & (n * M.price_pair[s:e] <= inst.budget[w] * (1 + 1e-9))
    blocked: list[str] = []
    okc = ok
    if any_capacity:   # (with no capacity limit anywhere, cap_left is infinite: nothing to test)
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

def candidates(inst: Instance, P: Pairs, M: Master, w: int, metric_unit: F64, cap_left: F64, qleft: F64 | None,
               place_offers: list[I64], any_capacity: bool
               ) -> tuple[list[Candidate], list[tuple[int, float]], list[str]]:
    """w's candidate plans feasible in `cap_left` / `qleft`, as (metric, kind, rows), before the plan in
    force and the migration charges are weighed (`decide`), with its best single offers and what blocked
    the cheapest one. `place_offers[p]`: the offers of place p."""
    lam_mu = inst.params.risk_lambda * float(M.mu[w])

    def metric(rows: tuple[tuple[int, int], ...], base: bool = False) -> float:
        return rows_metric(P, w, rows, metric_unit, lam_mu if base else None)

    cands: list[tuple[float, str, tuple[tuple[int, int], ...]]] = []
    lp_rows = round_lp(inst, P, M, w, metric_unit, cap_left, qleft)
    if lp_rows:   # first: on ties (degenerate duals) the LP's own split wins
        cands.append((metric(lp_rows), "lp", lp_rows))
    singles, blocked = single_candidates(inst, P, M, w, metric_unit, cap_left, qleft=qleft,
                                        any_capacity=any_capacity)
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
        po_ = place_offers
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

def take(inst: Instance, M: Master, w: int, d: Decision | None, left: F64, qleft: F64 | None) -> float:
    """Book w's decision in a pass: its capacity and quota leave `left` / `qleft`; returns its metric (the
    LP's unplaced cost M_w when there is no plan)."""
    if d is None:
        return float(M.M[w])
    for o, n in d.rows:
        left[o] -= n
    if qleft is not None:
        pl.quota_take(inst, d.rows, qleft)
    return d.metric


def decide(inst: Instance, P: Pairs, M: Master, w: int, metric_unit: F64, cap_left: F64,
           place_offers: list[I64], any_capacity: bool, keep_cap: F64 | None = None,
           qleft: F64 | None = None) -> Decision | None:
    """w's best plan in `cap_left` / `qleft` (`candidates`, then `select`); the plan in force is weighed
    against `keep_cap` when given (the capacity left without what is held for later workloads)."""
    cands, singles, blocked = candidates(inst, P, M, w, metric_unit, cap_left, qleft, place_offers, any_capacity)
    return select(inst, P, M, w, metric_unit, cands, singles, blocked,
                        cap_left if keep_cap is None else keep_cap, qleft)

def select(inst: Instance, P: Pairs, M: Master, w: int, metric_unit: F64,
            cands: list[tuple[float, str, tuple[tuple[int, int], ...]]], singles: list[tuple[int, float]],
            blocked: list[str], keep_cap: F64, qleft: F64 | None) -> Decision | None:
    """The best of w's candidates against the plan in force: a move must save the hysteresis threshold
    and pay its move back within the payback horizon, else the plan in force stays."""
    wid = inst.ids[w]
    cur = inst.current.get(wid)
    lam = inst.params.risk_lambda
    lam_mu = lam * float(M.mu[w])

    def metric(rows: tuple[tuple[int, int], ...], base: bool = False) -> float:
        return rows_metric(P, w, rows, metric_unit, lam_mu if base else None)

    keep_ok = bool(cur) and wid not in inst.stale_plan and cur is not None and \
        pl.plan_ok(inst, w, cur, keep_cap, qleft)
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
    return Decision(rows, chosen[0], chosen[1], binding, runner, blocked)

def round_lp(inst: Instance, P: Pairs, M: Master, w: int, metric_unit: F64,
             cap_left: F64, qleft: F64 | None = None) -> Rows | None:
    """Candidate (a): w's LP support rounded down within `cap_left` / `qleft`, repaired to L_w GPUs (one
    place for a gang, one region with co-location, filled from scratch across providers for a spread)."""
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

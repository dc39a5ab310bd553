"""Placement rules on the instance's arrays: what makes whole instances a plan a real job can run in.

The rules (schemas.placement has the catalogue facts; solvers/instance.py carries them per offer and workload):

* gang (the default topology): every instance in one place (`place_of`: provider, region, zone, instance type,
  GPU model); spot and on-demand offers of the place may mix within the spot share. The interconnect is
  checked for the plan's total instance count (InfiniBand between several instances).
* replicas: each row is one replica per instance; with `gpus_per_replica`, every instance has exactly that
  many GPUs; the interconnect is checked per instance (replicas do not talk to each other); at most
  `max_share_per_provider` of the GPUs on one provider and `max_share_per_region` in one (provider, region).
* quotas: portfolio-wide, the GPUs of every workload on offers a quota covers stay within its limit.
  `qleft` (GPUs left per quota) is tracked like the capacity left.
* a move (`move_cost_usd`): restart overhead (hours of the new plan's cost) + egress (state_gb x the source
  provider's USD/GB when the new plan uses a provider the current one does not) + transfer time (state_gb at
  `move_bandwidth_gbps`, hours of the new plan's cost). A move is made only when its hourly saving pays that
  back within `payback_horizon_h`.

Shared by `evaluate` (as the independent checker's rules), the greedy engine and the portfolio engine's
integer phase; the functions are small and scalar where a plan has a few rows, vectorised over a workload's
offers where they screen candidates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from solvers.instance import B8, F64, I64, Instance

Rows = tuple[tuple[int, int], ...]
_EPS = 1e-9


def ic_ok(inst: Instance, w: int, o: int, n: int) -> bool:
    """`schemas.placement.satisfies` on the arrays: n instances of offer o meet w's interconnect need."""
    need = int(inst.need_ic[w])
    if need == 0:
        return True
    linked = bool(inst.nvlink[o]) or (int(inst.gpus[o]) == 1 and n == 1)
    if need == 1:
        return linked
    return linked and (n == 1 or bool(inst.ib[o]))


def ic_ok_vec(inst: Instance, w: int, o: I64, n: F64 | I64 | int) -> B8:
    need = int(inst.need_ic[w])
    if need == 0:
        return np.ones(o.size, np.bool_)
    n_arr = np.broadcast_to(np.asarray(n), o.shape)
    linked = inst.nvlink[o] | ((inst.gpus[o] == 1) & (n_arr == 1))
    if need == 1:
        return np.asarray(linked, np.bool_)
    return np.asarray(linked & ((n_arr == 1) | inst.ib[o]), np.bool_)


def pair_possible(inst: Instance, w: int, o: I64) -> B8:
    """Offers that can be part of some valid plan of w: the interconnect holds for one instance, and a replica's
    size matches. Others never are, so they are no candidates at all."""
    ok = ic_ok_vec(inst, w, o, 1)
    rg = int(inst.replica_gpus[w])
    if rg and not inst.gang[w]:
        ok &= inst.gpus[o] == rg
    return ok


def rule_violations(inst: Instance, w: int, rows: Sequence[tuple[int, int]]) -> list[str]:
    """The placement rules `rows` (offer, instances) of workload w break (gang, interconnect, replica size,
    shares); quotas are portfolio-wide (`quota_violations`)."""
    if not rows:
        return []
    v: list[str] = []
    if inst.gang[w]:
        places = {int(inst.place[o]) for o, _ in rows}
        if len(places) > 1:
            v.append(f"gang spans {len(places)} places (provider/region/zone/instance type), one required")
        n_tot = sum(n for _, n in rows)
        for o, _ in rows:
            if not ic_ok(inst, w, o, n_tot):
                v.append(f"interconnect {inst.specs[w].interconnect.value} not met by {n_tot} x {inst.keys[o]}")
        return v
    rg = int(inst.replica_gpus[w])
    for o, _ in rows:
        if not ic_ok(inst, w, o, 1):
            v.append(f"interconnect {inst.specs[w].interconnect.value} not met by {inst.keys[o]}")
        if rg and int(inst.gpus[o]) != rg:
            v.append(f"replica size {int(inst.gpus[o])} GPUs on {inst.keys[o]}, {rg} required")
    sp, sr = float(inst.share_provider[w]), float(inst.share_region[w])
    if sp < 1.0 or sr < 1.0:
        G = 0.0
        byp: dict[int, float] = {}
        byr: dict[tuple[int, int], float] = {}
        for o, n in rows:
            g = float(inst.gpus[o]) * n
            G += g
            byp[int(inst.provider[o])] = byp.get(int(inst.provider[o]), 0.0) + g
            k = (int(inst.provider[o]), int(inst.region[o]))
            byr[k] = byr.get(k, 0.0) + g
        if max(byp.values()) > sp * G + _EPS:
            v.append(f"spread: {max(byp.values()) / G:.3f} of the GPUs on one provider, at most {sp:.3f}")
        if max(byr.values()) > sr * G + _EPS:
            v.append(f"spread: {max(byr.values()) / G:.3f} of the GPUs in one region, at most {sr:.3f}")
    return v


# --- quotas -------------------------------------------------------------------------------------------


def quota_left(inst: Instance, used_instances: F64) -> F64:
    """GPUs left per quota, given the instances used per offer (negative: over the limit)."""
    if not inst.quotas:
        return np.zeros(0)
    return np.asarray(inst.qlimit - inst.qmask.astype(np.float64) @ (used_instances * inst.gpus), np.float64)


def quota_room(inst: Instance, o: I64, qleft: F64) -> F64:
    """GPUs the quotas leave on each offer of `o` (inf where no quota covers it)."""
    if not inst.quotas:
        return np.full(o.size, math.inf)
    m = inst.qmask[:, o]
    return np.asarray(np.where(m, qleft[:, None], math.inf).min(axis=0), np.float64)


def quota_fits(inst: Instance, rows: Sequence[tuple[int, int]], qleft: F64) -> bool:
    if not inst.quotas:
        return True
    need: dict[int, float] = {}
    for o, n in rows:
        for q in inst.offer_quotas[o]:
            need[q] = need.get(q, 0.0) + float(inst.gpus[o]) * n
    return all(g <= qleft[q] + _EPS for q, g in need.items())


def quota_take(inst: Instance, rows: Sequence[tuple[int, int]], qleft: F64, sign: float = 1.0) -> None:
    for o, n in rows:
        for q in inst.offer_quotas[o]:
            qleft[q] -= sign * float(inst.gpus[o]) * n


def binding_quota(inst: Instance, o: I64, qleft: F64) -> tuple[str, float, float] | None:
    """The tightest quota over offers `o`: (key, used, limit)."""
    if not inst.quotas or not o.size:
        return None
    cover = inst.qmask[:, o].any(axis=1)
    if not cover.any():
        return None
    qs = np.flatnonzero(cover)
    q = int(qs[np.argmin(qleft[qs])])
    lim = float(inst.qlimit[q])
    return inst.quotas[q].key, lim - float(qleft[q]), lim


# --- plans ----------------------------------------------------------------------------------------------


def plan_ok(inst: Instance, w: int, rows: Sequence[tuple[int, int]], cap_left: F64 | None = None,
            qleft: F64 | None = None) -> bool:
    """Every per-workload hard rule, in scalar arithmetic (a plan has a few rows)."""
    if not rows:
        return False
    cap = inst.capacity if cap_left is None else cap_left
    G = Gs = usd = 0.0
    region = -1
    for o, n in rows:
        if n < 1 or not inst.available[o] or inst.tput[w, inst.model[o]] <= 0 or not inst.allowed[w, inst.provider[o]]:
            return False
        if n > cap[o] + 1e-9:
            return False
        g = float(inst.gpus[o]) * n
        G += g
        if inst.spot[o]:
            Gs += g
        usd += float(inst.price[o]) * n
        if inst.same_region[w]:
            if region >= 0 and inst.region[o] != region:
                return False
            region = int(inst.region[o])
    if not inst.min_gpus[w] <= G <= inst.max_gpus[w]:
        return False
    if usd > inst.budget[w] * (1 + 1e-9) + 1e-9:
        return False
    if Gs > inst.spot_share[w] * G + 1e-9:
        return False
    if rule_violations(inst, w, rows):
        return False
    return qleft is None or quota_fits(inst, rows, qleft)


def gang_plans(inst: Instance, w: int, o: I64, c: F64, cap_left: F64, qleft: F64 | None,
               top: int = 1, check_ic: bool = True) -> list[tuple[float, Rows]]:
    """The cheapest (by per-instance metric `c` of offers `o`) one-place plans of w with ceil(L/g) instances,
    mixing the place's cheapest spot and on-demand offers as the spot share and capacity allow: [(metric,
    rows)], cheapest first, at most `top` (one per place). Vectorised over the offers given (the engine passes
    the places of a workload's cheapest offers only; greedy all of them)."""
    if not o.size:
        return []
    L, U, B, S = int(inst.min_gpus[w]), int(inst.max_gpus[w]), float(inst.budget[w]), float(inst.spot_share[w])
    g = inst.gpus[o]
    n = -(-L // g)
    ok = inst.available[o] & (n * g <= U) & (cap_left[o] >= 1 - 1e-9)
    if check_ic:
        ok &= ic_ok_vec(inst, w, o, n)
    if qleft is not None and inst.quotas:
        ok &= n * g <= quota_room(inst, o, qleft) + 1e-9
    if S <= 0:
        ok &= ~inst.spot[o]
    if not ok.any():
        return []
    o, c, n = o[ok], c[ok], n[ok]
    spot = inst.spot[o]
    pl = inst.place[o]
    order = np.lexsort((c, spot, pl))
    o, c, n, spot, pl = o[order], c[order], n[order], spot[order], pl[order]
    key = pl * 2 + spot
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])       # the cheapest offer per (place, market)
    o, c, n, spot, pl = o[first], c[first], n[first], spot[first], pl[first]
    places, pi = np.unique(pl, return_inverse=True)
    P = places.size
    od_o = np.full(P, -1)
    sp_o = np.full(P, -1)
    od_o[pi[~spot]] = o[~spot]
    sp_o[pi[spot]] = o[spot]
    nn = np.zeros(P, np.int64)
    nn[pi] = n
    inf = math.inf
    c_od = np.full(P, inf)
    c_sp = np.full(P, inf)
    c_od[pi[~spot]] = c[~spot]
    c_sp[pi[spot]] = c[spot]
    cap_od = np.where(od_o >= 0, np.floor(np.minimum(cap_left[np.maximum(od_o, 0)], 1e9) + 1e-9), 0)
    cap_sp = np.where(sp_o >= 0, np.floor(np.minimum(cap_left[np.maximum(sp_o, 0)], 1e9) + 1e-9), 0)
    ks_max = np.minimum(np.floor(S * nn + 1e-9), cap_sp)
    spot_first = c_sp < c_od
    ks = np.where(spot_first, np.minimum(nn, ks_max), np.maximum(0, nn - np.minimum(nn, cap_od)))
    kod = nn - ks
    feas = (ks <= ks_max) & (kod <= cap_od) & (ks >= 0)
    p_od = np.where(od_o >= 0, inst.price[np.maximum(od_o, 0)], 0.0)
    p_sp = np.where(sp_o >= 0, inst.price[np.maximum(sp_o, 0)], 0.0)
    feas &= ks * p_sp + kod * p_od <= B * (1 + 1e-9) + 1e-9
    with np.errstate(invalid="ignore"):
        m = np.where(ks > 0, ks * c_sp, 0.0) + np.where(kod > 0, kod * c_od, 0.0)
    m = np.where(feas, m, inf)
    cand = np.flatnonzero(np.isfinite(m))
    if not cand.size:
        return []
    if cand.size > top:
        cand = cand[np.argpartition(m[cand], top - 1)[:top]]
    cand = cand[np.argsort(m[cand], kind="stable")]
    out: list[tuple[float, Rows]] = []
    for k in cand.tolist():
        rows = []
        if kod[k] > 0:
            rows.append((int(od_o[k]), int(kod[k])))
        if ks[k] > 0:
            rows.append((int(sp_o[k]), int(ks[k])))
        out.append((float(m[k]), tuple(sorted(rows))))
    return out


def gang_plans_few(inst: Instance, w: int, o: Sequence[int], c: Sequence[float], cap_left: F64,
                   qleft: F64 | None) -> tuple[float, Rows] | None:
    """`gang_plans(..., top=1)` in scalar arithmetic, for a few dozen offers (the engine's hot path, where
    numpy's per-call cost dominated): the cheapest one-place plan, or None."""
    L, U, B, S = int(inst.min_gpus[w]), int(inst.max_gpus[w]), float(inst.budget[w]), float(inst.spot_share[w])
    quotas = qleft is not None and bool(inst.quotas)
    best: dict[tuple[int, bool], tuple[float, int]] = {}
    for oo, cc in zip(o, c, strict=True):
        if not inst.available[oo] or cap_left[oo] < 1 - 1e-9:
            continue
        g = int(inst.gpus[oo])
        n = -(-L // g)
        sp = bool(inst.spot[oo])
        if n * g > U or (sp and S <= 0) or not ic_ok(inst, w, oo, n):
            continue
        if quotas and n * g > min((float(qleft[q]) for q in inst.offer_quotas[oo]), default=math.inf) + 1e-9:  # type: ignore[index]
            continue
        key = (int(inst.place[oo]), sp)
        if key not in best or (cc, oo) < best[key]:
            best[key] = (float(cc), int(oo))
    out: tuple[float, Rows, int] | None = None
    for p in sorted({k[0] for k in best}):
        od, spo = best.get((p, False)), best.get((p, True))
        g = int(inst.gpus[(od or spo)[1]])  # type: ignore[index]
        n = -(-L // g)
        cap_od = math.floor(min(float(cap_left[od[1]]), 1e9) + 1e-9) if od else 0
        cap_sp = math.floor(min(float(cap_left[spo[1]]), 1e9) + 1e-9) if spo else 0
        ks_max = min(math.floor(S * n + 1e-9), cap_sp)
        c_od = od[0] if od else math.inf
        c_sp = spo[0] if spo else math.inf
        ks = min(n, ks_max) if c_sp < c_od else max(0, n - min(n, cap_od))
        kod = n - ks
        if ks > ks_max or kod > cap_od or ks < 0:
            continue
        usd = (ks * float(inst.price[spo[1]]) if ks else 0.0) + (kod * float(inst.price[od[1]]) if kod else 0.0)  # type: ignore[index]
        if usd > B * (1 + 1e-9) + 1e-9:
            continue
        m = (ks * c_sp if ks else 0.0) + (kod * c_od if kod else 0.0)
        if out is None or m < out[0]:
            rows = ([(od[1], kod)] if kod else []) + ([(spo[1], ks)] if ks else [])  # type: ignore[index]
            out = (m, tuple(sorted(rows)), p)
    return None if out is None else (out[0], out[1])


def fill(inst: Instance, w: int, base: Mapping[int, int], pool: Sequence[int], unit: Mapping[int, float],
         cap_left: F64, qleft: F64 | None) -> Rows | None:
    """Add whole instances from `pool` (offers; `unit[o]` = metric of one instance) to `base`, cheapest per GPU
    first, until the workload's GPU floor, keeping capacity, the GPU ceiling, budget, spot share, provider and
    region shares and quotas; None when it cannot. The result passes `plan_ok` (or is None)."""
    L, U, B, S = int(inst.min_gpus[w]), int(inst.max_gpus[w]), float(inst.budget[w]), float(inst.spot_share[w])
    sp, sr = float(inst.share_provider[w]), float(inst.share_region[w])
    spread = not inst.gang[w] and (sp < 1.0 or sr < 1.0)
    cnt = dict(base)
    G = Gs = 0
    usd = 0.0
    byp: dict[int, int] = {}
    byr: dict[tuple[int, int], int] = {}
    qneed: dict[int, float] = {}
    for o, k in cnt.items():
        g = int(inst.gpus[o]) * k
        G += g
        Gs += g if inst.spot[o] else 0
        usd += float(inst.price[o]) * k
        byp[int(inst.provider[o])] = byp.get(int(inst.provider[o]), 0) + g
        rk = (int(inst.provider[o]), int(inst.region[o]))
        byr[rk] = byr.get(rk, 0) + g
        for q in inst.offer_quotas[o] if inst.quotas else ():
            qneed[q] = qneed.get(q, 0.0) + g
    while G < L:
        best, best_score = -1, math.inf
        for o in pool:
            g = int(inst.gpus[o])
            if cnt.get(o, 0) + 1 > cap_left[o] + 1e-9 or G + g > U or usd + inst.price[o] > B * (1 + 1e-9):
                continue
            if inst.spot[o] and Gs + g > S * max(L, G + g) + 1e-9:
                continue
            if spread:
                tot = max(L, G + g)
                p = int(inst.provider[o])
                if byp.get(p, 0) + g > sp * tot + 1e-9:
                    continue
                if byr.get((p, int(inst.region[o])), 0) + g > sr * tot + 1e-9:
                    continue
            if qleft is not None and inst.quotas and any(
                    qneed.get(q, 0.0) + g > qleft[q] + 1e-9 for q in inst.offer_quotas[o]):
                continue
            score = unit[o] / g
            if score < best_score:
                best, best_score = o, score
        if best < 0:
            return None
        g = int(inst.gpus[best])
        cnt[best] = cnt.get(best, 0) + 1
        G += g
        Gs += g if inst.spot[best] else 0
        usd += float(inst.price[best])
        p = int(inst.provider[best])
        byp[p] = byp.get(p, 0) + g
        rk = (p, int(inst.region[best]))
        byr[rk] = byr.get(rk, 0) + g
        for q in inst.offer_quotas[best] if inst.quotas else ():
            qneed[q] = qneed.get(q, 0.0) + g
    rows = tuple(sorted((o, k) for o, k in cnt.items() if k > 0))
    return rows if plan_ok(inst, w, rows, cap_left, qleft) else None


def spread_pool(inst: Instance, o: I64, per_gpu: F64, k: int = 16, per_domain: int = 3) -> list[int]:
    """Offers to fill a replicas plan with provider/region shares from: the k cheapest per GPU, and the
    `per_domain` cheapest of every provider and (provider, region)."""
    if not o.size:
        return []
    order = np.argsort(per_gpu, kind="stable")
    out = o[order[:k]].tolist()
    seen_p: dict[int, int] = {}
    seen_r: dict[tuple[int, int], int] = {}
    for j in order.tolist():
        oo = int(o[j])
        p, r = int(inst.provider[oo]), int(inst.region[oo])
        if seen_p.get(p, 0) < per_domain or seen_r.get((p, r), 0) < per_domain:
            out.append(oo)
            seen_p[p] = seen_p.get(p, 0) + 1
            seen_r[(p, r)] = seen_r.get((p, r), 0) + 1
    return list(dict.fromkeys(out))


# --- moves ------------------------------------------------------------------------------------------------


def move_cost_usd(inst: Instance, w: int, rows: Sequence[tuple[int, int]], restart: bool = True) -> float:
    """One-off cost (USD) of moving w from its plan in force to `rows`: restart overhead + egress (when the new
    plan uses a provider the current one does not: state_gb x the dearest source provider's USD/GB) + transfer
    time (state_gb at `move_bandwidth_gbps`), the hours charged at the new plan's USD/h. 0 without a plan in
    force or for the same rows. `restart=False`: the state's part only (egress and transfer)."""
    cur = inst.current.get(inst.ids[w])
    if not cur or tuple(rows) == cur or not rows:
        return 0.0
    usd_new = sum(float(inst.price[o]) * n for o, n in rows)
    p = inst.params
    state = float(inst.state_gb[w])
    hours = float(inst.restart_h[w]) if restart else 0.0
    if state > 0:
        hours += state * 8.0 / (max(p.move_bandwidth_gbps, 1e-9) * 3600.0)
    cost = hours * usd_new
    src = {int(inst.provider[o]) for o, _ in cur}
    if state > 0 and any(int(inst.provider[o]) not in src for o, _ in rows):
        cost += state * max(float(inst.egress[o]) for o, _ in cur)
    return cost


def payback_hours(inst: Instance, w: int, rows: Sequence[tuple[int, int]]) -> float:
    """How long a move to `rows` has to pay for itself: the payback horizon, or less when the new plan is
    expected to be interrupted before it (a gang restarts when any instance is: 1 / P(any of them within an
    hour)). A move onto a pool that keeps losing capacity would otherwise look paid back in a day it never
    holds, and the plan would flap between it and the next-best offer.

    >>> from solvers.instance import build_instance
    >>> from schemas.market import OfferQuote
    >>> from schemas.events import WorkloadSpec
    >>> from schemas.offers import OfferKey, Market
    >>> o = OfferKey(provider="gcp", region="r", instance_type="g2-standard-4", gpu_model="L4", gpus_per_instance=1,
    ...              market=Market.SPOT)
    >>> inst = build_instance([OfferQuote(o, 1.0, interruption_probability_per_hour=0.25)],
    ...                       [WorkloadSpec(workload_id="w", gpu_throughput={"L4": 1.0}, min_gpus=2, max_gpus=2,
    ...                                     budget_usd_per_hour=9.0)])
    >>> round(payback_hours(inst, 0, [(0, 2)]), 3)   # 1 / (1 - 0.75^2)
    2.286
    """
    H = max(inst.params.payback_horizon_h, 1e-9)
    if not inst.gang[w]:
        return H   # a replica's interruption restarts that replica, not the plan
    survive = 1.0
    for o, n in rows:
        survive *= (1.0 - min(max(float(inst.interrupt[o]), 0.0), 1.0)) ** n
    p_any = 1.0 - survive
    return H if p_any <= 1.0 / H else 1.0 / p_any


def amortised_move(inst: Instance, w: int, rows: Sequence[tuple[int, int]]) -> float:
    """The state's move cost (egress + transfer) per hour over the payback horizon: the objective's share of
    it (the restart overhead is already priced, as the hysteresis term and the interruption cost)."""
    if not inst.state_gb[w]:
        return 0.0
    return move_cost_usd(inst, w, rows, restart=False) / max(inst.params.payback_horizon_h, 1e-9)

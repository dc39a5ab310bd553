"""Why a workload got its plan (`explain`: a WorkloadExplanation) or none (`diagnose`: an InfeasibilityReport).

An explanation names the plan's binding constraints: the GPU bounds it meets exactly (G = L_w or U_w), the
budget (its row's dual y_bud,w != 0, or usd >= B_w), the spot share (G_spot >= S_w G), co-location, capacity
rows with a nonzero dual y_cap,o on its offers, and what the decision itself recorded (hysteresis, payback,
capacity or quota that blocked its cheapest single offer); the LP duals of its rows; the reduced costs
rc_wo (solvers/portfolio/pricing.py) of its offers and runner-up; the runner-up's metric difference; and the
one-off cost of a move (`placement.move_cost_usd`).

A diagnosis tries the constraints in order and names the first that no plan can meet: no offer at all, the
placement rules for one instance (interconnect, replica size), spot share 0 with only spot offers, whole
instances for L_w..U_w GPUs (a reachability knapsack over the instance sizes), the budget against the
cheapest whole-instance plan (an unbounded knapsack), on-demand GPUs for (1 - S_w) L_w, the placement rules
(gang, interconnect, spread, quota: without capacity and quotas, then with each), and the capacity left.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from schemas.events import WorkloadExplanation
from schemas.market import InfeasibilityReport
from solvers import placement as pl
from solvers.instance import F64, Instance
from solvers.portfolio.candidates import Decision
from solvers.portfolio.master import Master
from solvers.portfolio.pairs import Pairs


def explained_pairs(P: Pairs, w: int, d: Decision) -> list[int]:
    """The pairs whose reduced costs an explanation shows: the chosen offers', then the runner-up's."""
    s, e = int(P.ptr[w]), int(P.ptr[w + 1])
    seg_o = P.o[s:e]
    offers = [o for o, _ in d.rows] + ([d.runner[0]] if d.runner is not None else [])
    return (s + np.searchsorted(seg_o, np.array(offers, np.int64))).tolist()

def explain(inst: Instance, P: Pairs, M: Master, w: int, d: Decision, pairs: list[int],
             rc_of: Mapping[int, float]) -> WorkloadExplanation:
    """`pairs`: `explained_pairs(P, w, d)`; `rc_of`: their reduced costs."""
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

"""Greedy cheapest-feasible allocation: the walking skeleton's rule and the benchmark baseline.

For each workload (highest priority first), take the plan with the lowest price per unit of throughput
that fits GPU counts, budget, capacity, spot share, the placement rules (solvers/placement.py) and the
quotas, using as few whole instances as reach `min_gpus`:

* gang (the default): the cheapest single place (provider, region, zone, instance type) that hosts the
  whole gang, its spot and on-demand offers mixed as the spot share allows;
* replicas: the cheapest single offer (instances of `gpus_per_replica` GPUs when set); with provider/region
  shares, instances filled across providers and regions, cheapest per GPU first, within the shares.

The interconnect is met for the plan's instance count. Quotas: `quotas` and `quota_used` (GPUs already used
per quota key by workloads not in this call: a caller placing one workload at a time passes the running
usage) are hard limits. No risk, no diversification, no hysteresis.

>>> from schemas import OfferKey, Market, WorkloadSpec
>>> from schemas.market import OfferQuote
>>> o = OfferQuote(OfferKey(provider="gcp", region="r", instance_type="a", gpu_model="L4",
...                         gpus_per_instance=1, market=Market.ON_DEMAND), usd_per_hour=1.0)
>>> w = WorkloadSpec(workload_id="w", gpu_throughput={"L4": 1.0}, min_gpus=2, max_gpus=2, budget_usd_per_hour=5)
>>> r = greedy_plan([o], [w]); r.assignments[0].instances, r.infeasible
(2, ())
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

import numpy as np

from schemas.events import Assignment, WorkloadExplanation, WorkloadSpec
from schemas.market import InfeasibilityReport, OfferQuote, SolveResult
from schemas.placement import GpuQuota
from solvers import placement as pl
from solvers.instance import F64, Instance, build_instance

Rows = tuple[tuple[int, int], ...]


def _plans(inst: Instance, w: int, cap_left: F64, qleft: F64 | None) -> list[tuple[float, Rows]]:
    """w's admissible plans, best first by price per delivered throughput-GPU: [(score, rows)]."""
    L, U, B, S = int(inst.min_gpus[w]), int(inst.max_gpus[w]), float(inst.budget[w]), float(inst.spot_share[w])
    o = np.flatnonzero((inst.tput[w, inst.model] > 0) & inst.allowed[w, inst.provider] & inst.available
                       & (inst.gpus <= U))
    if o.size:
        o = o[pl.pair_possible(inst, w, o)]
    if not o.size:
        return []
    tput = inst.tput[w, inst.model[o]]
    c = inst.price[o] / tput                  # per instance, per unit of throughput
    out: list[tuple[float, Rows]] = []
    if inst.gang[w]:
        for m, rows in pl.gang_plans(inst, w, o, c, cap_left, qleft, top=8):
            G = sum(int(inst.gpus[oo]) * n for oo, n in rows)
            out.append((m / G, rows))
    elif inst.share_provider[w] < 1.0 or inst.share_region[w] < 1.0:
        pool = pl.spread_pool(inst, o, c / inst.gpus[o])
        unit = {int(oo): float(cc) for oo, cc in zip(o.tolist(), c.tolist(), strict=True)}
        rows_sp = pl.fill(inst, w, {}, pool, unit, cap_left, qleft)
        if rows_sp:
            G = sum(int(inst.gpus[oo]) * n for oo, n in rows_sp)
            out.append((sum(unit[oo] * n for oo, n in rows_sp) / G, rows_sp))
    else:
        g = inst.gpus[o]
        n = -(-L // g)
        ok = (n * g <= U) & (n <= cap_left[o] + 1e-9) & (n * inst.price[o] <= B * (1 + 1e-9) + 1e-9)
        if S < 1.0:
            ok &= ~inst.spot[o]        # a single-offer plan is all-spot or none
        if qleft is not None and inst.quotas:
            ok &= n * g <= pl.quota_room(inst, o, qleft) + 1e-9
        score = c / g
        for k in np.flatnonzero(ok)[np.argsort(score[ok], kind="stable")][:8].tolist():
            out.append((float(score[k]), ((int(o[k]), int(n[k])),)))
    out.sort(key=lambda t: (t[0], [inst.keys[oo] for oo, _ in t[1]]))
    return [(m, rows) for m, rows in out if pl.plan_ok(inst, w, rows, cap_left, qleft)]


def greedy_plan(quotes: Sequence[OfferQuote], workloads: Sequence[WorkloadSpec],
                quotas: Sequence[GpuQuota] = (), quota_used: Mapping[str, int] | None = None) -> SolveResult:
    """Cheapest feasible plan per workload, in priority order; `quotas` are hard limits, with `quota_used`
    GPUs (per quota key) already used by workloads not in this call."""
    from solvers.portfolio import diagnose  # (the shared diagnosis; portfolio imports nothing from here)

    t0 = time.perf_counter()
    inst = build_instance(quotes, workloads, quotas=quotas)
    widx = inst.workload_index()
    cap_left = inst.capacity.copy()
    qleft: F64 | None = None
    if inst.quotas:
        used = quota_used or {}
        qleft = np.array([float(q.gpus - used.get(q.key, 0)) for q in inst.quotas])
    assignments: list[Assignment] = []
    infeasible: list[InfeasibilityReport] = []
    explanations: dict[str, WorkloadExplanation] = {}
    for spec in sorted(workloads, key=lambda w: (-w.priority, w.workload_id)):
        w = widx[spec.workload_id]
        plans = _plans(inst, w, cap_left, qleft)
        if not plans:
            rep = diagnose(inst, w, cap_left, qleft)
            infeasible.append(rep)
            explanations[spec.workload_id] = WorkloadExplanation(workload_id=spec.workload_id,
                                                                 infeasible_reason=rep.reason)
            continue
        _, rows = plans[0]
        cost = 0.0
        for o, n in rows:
            cap_left[o] -= n
            usd = n * float(inst.price[o])
            cost += usd
            assignments.append(Assignment(workload_id=spec.workload_id, offer=inst.offer_keys[o], instances=n,
                                          usd_per_hour=usd))
        if qleft is not None:
            pl.quota_take(inst, rows, qleft)
        chosen = {o for o, _ in rows}
        runner = next((r for _, r in plans[1:] if not {o for o, _ in r} & chosen), None)
        r_cost = sum(n * float(inst.price[o]) for o, n in runner) if runner else None
        explanations[spec.workload_id] = WorkloadExplanation(
            workload_id=spec.workload_id, chosen=[inst.keys[o] for o, _ in rows], usd_per_hour=cost,
            runner_up=inst.keys[runner[0][0]] if runner else None,
            runner_up_delta_usd_per_hour=(r_cost - cost) if r_cost is not None else None,
            binding_constraints=["min_gpus"],
        )
    return SolveResult(
        assignments=tuple(assignments), explanations=explanations, infeasible=tuple(infeasible),
        objective=sum(a.usd_per_hour for a in assignments), solver="greedy",
        solve_ms=(time.perf_counter() - t0) * 1000,
    )


class GreedyEngine:
    """AllocationEngine over `greedy_plan` (re-solves from scratch; fine for small markets)."""

    name = "greedy"

    def __init__(self) -> None:
        self.quotes: dict[str, OfferQuote] = {}
        self.workloads: dict[str, WorkloadSpec] = {}
        self.plan: dict[str, list[Assignment]] = {}
        self.quotas: tuple[GpuQuota, ...] = ()

    def set_quotas(self, quotas: Sequence[GpuQuota]) -> None:
        self.quotas = tuple(quotas)

    def upsert_offers(self, quotes: Sequence[OfferQuote]) -> None:
        for q in quotes:
            self.quotes[q.key] = q

    def remove_offers(self, keys: Collection[str]) -> None:
        for k in keys:
            self.quotes.pop(k, None)

    def upsert_workload(self, spec: WorkloadSpec) -> None:
        self.workloads[spec.workload_id] = spec

    def remove_workload(self, workload_id: str) -> None:
        self.workloads.pop(workload_id, None)
        self.plan.pop(workload_id, None)

    def set_current_plan(self, assignments: Sequence[Assignment]) -> None:
        self.plan = {}
        for a in assignments:
            self.plan.setdefault(a.workload_id, []).append(a)

    def solve(self, workload_ids: Collection[str] | None = None) -> SolveResult:
        ids = set(self.workloads) if workload_ids is None else set(workload_ids) & set(self.workloads)
        # capacity already held by workloads we are not re-deciding stays reserved
        reserved = [a for wid, plan in self.plan.items() if wid not in ids for a in plan]
        quotes = list(self.quotes.values())
        if reserved:
            held: dict[str, int] = {}
            for a in reserved:
                held[a.offer.key] = held.get(a.offer.key, 0) + a.instances
            quotes = [q if q.capacity_instances is None or q.key not in held else
                      replace(q, capacity_instances=max(0, q.capacity_instances - held[q.key]))
                      for q in quotes]
        used: dict[str, int] = {}
        for a in reserved:   # the quotas others use stay used
            for q in self.quotas:
                if q.covers(a.offer):
                    used[q.key] = used.get(q.key, 0) + a.instances * a.offer.gpus_per_instance
        res = greedy_plan(quotes, [self.workloads[i] for i in sorted(ids)], self.quotas, used)
        for wid in ids:
            self.plan.pop(wid, None)
        for a in res.assignments:
            self.plan.setdefault(a.workload_id, []).append(a)
        return res

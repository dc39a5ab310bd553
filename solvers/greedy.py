"""Greedy cheapest-feasible allocation: the walking skeleton's rule and the benchmark baseline.

For each workload (highest priority first), take the offer with the lowest price per unit of
throughput that fits GPU counts, budget, capacity and spot share, using as few whole instances as
reach `min_gpus`. No risk, no diversification, no hysteresis.

>>> from schemas import OfferKey, Market, WorkloadSpec
>>> from schemas.market import OfferQuote
>>> o = OfferQuote(OfferKey(provider="gcp", region="r", instance_type="a", gpu_model="L4",
...                         gpus_per_instance=1, market=Market.ON_DEMAND), usd_per_hour=1.0)
>>> w = WorkloadSpec(workload_id="w", gpu_throughput={"L4": 1.0}, min_gpus=2, max_gpus=2, budget_usd_per_hour=5)
>>> r = greedy_plan([o], [w]); r.assignments[0].instances, r.infeasible
(2, ())
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Sequence

from schemas.events import Assignment, WorkloadExplanation, WorkloadSpec
from schemas.market import InfeasibilityReport, OfferQuote, SolveResult


def _candidates(quotes: Sequence[OfferQuote], w: WorkloadSpec,
                used: dict[str, int]) -> list[tuple[float, int, OfferQuote]]:
    out = []
    for q in quotes:
        tput = w.gpu_throughput.get(q.offer.gpu_model)
        if tput is None or not q.available:
            continue
        if w.allowed_providers is not None and q.offer.provider not in w.allowed_providers:
            continue
        g = q.offer.gpus_per_instance
        n = math.ceil(w.min_gpus / g)
        if n * g > w.max_gpus:
            continue
        if q.is_spot and w.max_spot_share < 1.0:
            continue  # a single-offer plan is all-spot or none
        cap = q.capacity_instances
        if cap is not None and n > cap - used.get(q.key, 0):
            continue
        cost = n * q.usd_per_hour
        out.append((cost / (n * g * tput), n, q))
    out.sort(key=lambda t: (t[0], t[2].key))
    return out


def greedy_plan(quotes: Sequence[OfferQuote], workloads: Sequence[WorkloadSpec]) -> SolveResult:
    t0 = time.perf_counter()
    used: dict[str, int] = {}
    assignments: list[Assignment] = []
    infeasible: list[InfeasibilityReport] = []
    explanations: dict[str, WorkloadExplanation] = {}
    for w in sorted(workloads, key=lambda w: (-w.priority, w.workload_id)):
        cands = _candidates(quotes, w, used)
        if not cands:
            infeasible.append(InfeasibilityReport(w.workload_id, "no available offer matches the GPU models, "
                                                  "GPU counts, capacity and spot share", "no_offer"))
            explanations[w.workload_id] = WorkloadExplanation(workload_id=w.workload_id,
                                                              infeasible_reason=infeasible[-1].reason)
            continue
        within = [c for c in cands if c[1] * c[2].usd_per_hour <= w.budget_usd_per_hour + 1e-9]
        if not within:
            cheapest = min(c[1] * c[2].usd_per_hour for c in cands)
            rep = InfeasibilityReport(
                w.workload_id,
                f"budget ${w.budget_usd_per_hour:.2f}/h below the cheapest feasible ${cheapest:.2f}/h",
                "budget", shortfall=cheapest - w.budget_usd_per_hour)
            infeasible.append(rep)
            explanations[w.workload_id] = WorkloadExplanation(workload_id=w.workload_id, infeasible_reason=rep.reason)
            continue
        _, n, q = within[0]
        used[q.key] = used.get(q.key, 0) + n
        cost = n * q.usd_per_hour
        assignments.append(Assignment(workload_id=w.workload_id, offer=q.offer, instances=n, usd_per_hour=cost))
        runner = within[1] if len(within) > 1 else None
        explanations[w.workload_id] = WorkloadExplanation(
            workload_id=w.workload_id, chosen=[q.key], usd_per_hour=cost,
            runner_up=runner[2].key if runner else None,
            runner_up_delta_usd_per_hour=(runner[1] * runner[2].usd_per_hour - cost) if runner else None,
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
                      OfferQuote(q.offer, q.usd_per_hour, q.forecast_usd_per_hour, q.available,
                                 max(0, q.capacity_instances - held[q.key]),
                                 q.interruption_probability_per_hour, q.quote_age_s)
                      for q in quotes]
        res = greedy_plan(quotes, [self.workloads[i] for i in sorted(ids)])
        for wid in ids:
            self.plan.pop(wid, None)
        for a in res.assignments:
            self.plan.setdefault(a.workload_id, []).append(a)
        return res

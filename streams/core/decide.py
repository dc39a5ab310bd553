"""From a market change to AllocationDecided: who is affected, re-solve, diff, deterministic ids.

Plain functions over an injected `AllocationEngine` (schemas.market); no Kafka here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime

from schemas.events import (
    AllocationDecided,
    Assignment,
    ChangeAction,
    PlanChange,
    WorkloadExplanation,
    WorkloadSpec,
    deterministic_id,
)
from schemas.market import AllocationEngine, SolveResult
from streams.core.explain import summarize

Plan = dict[str, list[Assignment]]


def placed_on(plan: Plan) -> dict[str, set[str]]:
    """Offer key -> the workloads the plan places on it."""
    on_offer: dict[str, set[str]] = {}
    for wid, assigns in plan.items():
        for a in assigns:
            on_offer.setdefault(a.offer.key, set()).add(wid)
    return on_offer


def affected_workloads(changed_offers: Iterable[str], workloads: Mapping[str, WorkloadSpec],
                       plan: Plan, accepting: dict[tuple[str, str], set[str]] | None = None,
                       on_offer: Mapping[str, set[str]] | None = None) -> set[str]:
    """Workloads a change to these offers can affect: those that accept the offer's GPU model (and
    provider), plus those currently placed on the offer. `accepting` caches the workloads per
    (GPU model, provider) between calls; the caller clears it when `workloads` changes. `on_offer`:
    `placed_on(plan)`, when the caller keeps it."""
    out: set[str] = set()
    if on_offer is None:
        on_offer = placed_on(plan)
    cache = {} if accepting is None else accepting
    seen: set[tuple[str, str]] = set()
    for k in changed_offers:
        provider, _, _, _, gpu, _, _ = k.split("|")
        if (gpu, provider) not in seen:  # one pass over the workloads per (GPU model, provider)
            seen.add((gpu, provider))
            if (gpu, provider) not in cache:
                cache[(gpu, provider)] = {wid for wid, w in workloads.items() if gpu in w.gpu_throughput
                                          and (w.allowed_providers is None or provider in w.allowed_providers)}
            out |= cache[(gpu, provider)]
        out |= on_offer.get(k, set())
    return out


def _sig(assigns: Sequence[Assignment]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((a.offer.key, a.instances) for a in assigns))


def diff_plans(old: Plan, new: Plan, workload_ids: Collection[str]) -> list[PlanChange]:
    """launch / terminate / migrate / resize per workload whose placement changed."""
    changes: list[PlanChange] = []
    for wid in sorted(workload_ids):
        before, after = old.get(wid, []), new.get(wid, [])
        if _sig(before) == _sig(after):
            continue
        b = {a.offer.key: a for a in before}
        a_ = {a.offer.key: a for a in after}
        if not before:
            changes += [PlanChange(action=ChangeAction.LAUNCH, workload_id=wid, to_offer=x.offer,
                                   instances=x.instances) for x in after]
        elif not after:
            changes += [PlanChange(action=ChangeAction.TERMINATE, workload_id=wid, from_offer=x.offer,
                                   instances=x.instances) for x in before]
        else:
            for k in sorted(set(b) & set(a_)):
                if b[k].instances != a_[k].instances:
                    changes.append(PlanChange(action=ChangeAction.RESIZE, workload_id=wid, from_offer=b[k].offer,
                                              to_offer=a_[k].offer, instances=a_[k].instances))
            gone, new_ = sorted(set(b) - set(a_)), sorted(set(a_) - set(b))
            for i in range(max(len(gone), len(new_))):
                f = b[gone[i]] if i < len(gone) else None
                t = a_[new_[i]] if i < len(new_) else None
                if f and t:
                    changes.append(PlanChange(action=ChangeAction.MIGRATE, workload_id=wid, from_offer=f.offer,
                                              to_offer=t.offer, instances=t.instances))
                elif t:
                    changes.append(PlanChange(action=ChangeAction.LAUNCH, workload_id=wid, to_offer=t.offer,
                                              instances=t.instances))
                elif f:
                    changes.append(PlanChange(action=ChangeAction.TERMINATE, workload_id=wid, from_offer=f.offer,
                                              instances=f.instances))
    return changes


def decision_id(previous_ids: Mapping[str, str], workload_ids: Collection[str], plan: Plan) -> str:
    """Deterministic: the same plan reached from the same previous decisions has the same id."""
    parts: list[object] = []
    for wid in sorted(workload_ids):
        parts += [wid, previous_ids.get(wid, ""), _sig(plan.get(wid, []))]
    return deterministic_id("decision", *parts)


def resolve(engine: AllocationEngine, workload_ids: Collection[str], old_plan: Plan,
            previous_ids: Mapping[str, str], reason: str, trigger_event_ids: Sequence[str],
            quote_ages_s: Mapping[str, float], now: datetime, latency_ms: float | None) -> AllocationDecided | None:
    """Re-solve `workload_ids`; an AllocationDecided when any placement changed, else None."""
    if not workload_ids:
        return None
    result: SolveResult = engine.solve(workload_ids)
    ids = set(workload_ids)
    if result.redecided is not None:   # the others' placements stand
        ids &= result.redecided
    new_plan = result.plan(ids)
    changes = diff_plans(old_plan, new_plan, ids)
    if not changes:
        return None
    changed = sorted({c.workload_id for c in changes})
    assignments = [a for wid in changed for a in new_plan.get(wid, [])]
    used = {a.offer.key for a in assignments}
    return AllocationDecided(
        event_id=decision_id(previous_ids, changed, new_plan),
        decided_at=now, workload_ids=changed, assignments=assignments, changes=changes,
        reason=reason[:500], trigger_event_ids=list(trigger_event_ids)[:50],
        quote_age_s={k: float(quote_ages_s[k]) for k in sorted(used) if k in quote_ages_s},
        latency_ms=latency_ms, total_usd_per_hour=sum(a.usd_per_hour for a in assignments),
        explanations=[_explained(w, old_plan.get(w, []), new_plan.get(w, []), result.explanations.get(w))
                      for w in changed],
        solver=result.solver,
    )


def _explained(wid: str, before: Sequence[Assignment], after: Sequence[Assignment],
               e: WorkloadExplanation | None) -> WorkloadExplanation:
    """The engine's explanation (or an empty one) with its one-sentence summary."""
    e = e or WorkloadExplanation(workload_id=wid)
    return e.model_copy(update={"summary": summarize(wid, before, after, e)})


MAX_WORKLOADS_PER_DECISION = 100  # keeps one AllocationDecided well under Kafka's 1 MB message limit


def split(decision: AllocationDecided, previous_ids: Mapping[str, str],
          max_workloads: int = MAX_WORKLOADS_PER_DECISION) -> list[AllocationDecided]:
    """One decision per chunk of at most `max_workloads` workloads (a re-solve that moves a thousand
    workloads would otherwise be a message of several MB). Each part carries its own workloads'
    assignments, changes, explanations and quote ages, the shared reason, triggers and latency, and a
    deterministic id over its own workloads. A decision that fits is returned unchanged.

    >>> from datetime import UTC, datetime
    >>> d = AllocationDecided(event_id="x", decided_at=datetime(2025, 1, 1, tzinfo=UTC),
    ...                       workload_ids=["a", "b", "c"], assignments=[], reason="r")
    >>> [p.workload_ids for p in split(d, {}, max_workloads=2)]
    [['a', 'b'], ['c']]
    """
    wids = sorted(decision.workload_ids)
    if len(wids) <= max_workloads:
        return [decision]
    parts: list[AllocationDecided] = []
    for i in range(0, len(wids), max_workloads):
        chunk = set(wids[i:i + max_workloads])
        assigns = [a for a in decision.assignments if a.workload_id in chunk]
        plan: Plan = {}
        for a in assigns:
            plan.setdefault(a.workload_id, []).append(a)
        used = {a.offer.key for a in assigns}
        parts.append(decision.model_copy(update={
            "event_id": decision_id(previous_ids, chunk, plan),
            "workload_ids": sorted(chunk),
            "assignments": assigns,
            "changes": [c for c in decision.changes if c.workload_id in chunk],
            "explanations": [e for e in decision.explanations if e.workload_id in chunk],
            "quote_age_s": {k: v for k, v in decision.quote_age_s.items() if k in used},
            "total_usd_per_hour": sum(a.usd_per_hour for a in assigns),
        }))
    return parts

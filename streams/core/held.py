"""The offers under a placement, as every worker's market stage sees them: followed from the public plans topic
(`cloudarb.plans.v1`, one `PlanAdopted` record per workload, compacted), which the decision stage writes.

Any price move on a held offer is material (streams.core.state), so each market stage must know the held set
for the offers of its own partitions. The decision stage runs in one worker (it consumes one-partition
topics), while the market stage's partitions are spread over all workers; the plans topic (a record per
workload: its plan, or a tombstone when it is gone) reaches them all. The set logic is here (pure);
streams.runtime.held reads the topic to its end before the stage processes anything, then picks up new
records before each batch.

A plan record carries `step_started_at`, when the step that made it began. A sub-threshold move on an offer
quoted after that, while the offer was not yet held, was not forwarded; `newly_held()` hands such offers
to the stage, which forwards the move (streams.core.track.catch_up).

>>> h = HeldOffers()
>>> h.apply("a/w1", plan_adopted("a", "w1", {"decision_id": "d1", "assignments": [{"workload_id": "w1", "offer": {
...     "provider": "gcp", "region": "r", "zone": "", "instance_type": "a", "gpu_model": "L4", "gpus_per_instance": 1,
...     "market": "spot"}, "instances": 1, "usd_per_hour": 1.0}]}, 5.0, 6.0))
>>> "gcp|r||a|L4|1|spot" in h, h.newly_held()
(True, {'gcp|r||a|L4|1|spot': 5.0})
>>> h.apply("a/w1", None)
>>> "gcp|r||a|L4|1|spot" in h, h.newly_held()
(False, {})
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from schemas.events import deterministic_id
from schemas.offers import OfferKey


def plan_key(app_id: str, workload_id: str) -> str:
    """A plan's key on the plans topic, which the CloudArb apps of a cluster share."""
    return f"{app_id}/{workload_id}"


def plan_adopted(app_id: str, workload_id: str, plan: dict[str, Any], step_started_t: float,
                 adopted_t: float) -> dict[str, Any]:
    """The plans topic's record (a `schemas.events.PlanAdopted` as JSON) of a plan the decider made (its
    `decision_id` and `assignments`, as JSON), adopted at `adopted_t` by a step begun at `step_started_t`."""
    return {"event_id": deterministic_id("plan", app_id, workload_id, plan["decision_id"]),
            "event_type": "PlanAdopted", "app_id": app_id, "workload_id": workload_id,
            "decision_id": plan["decision_id"], "assignments": plan["assignments"],
            "step_started_at": _iso(step_started_t), "adopted_at": _iso(adopted_t)}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _offer_key(offer: dict[str, Any]) -> str:
    """An assignment's offer (its JSON form in a plan record) as its key."""
    return OfferKey.model_validate(offer).key


class HeldOffers:
    """The held set, kept from plan records (`apply`; streams.runtime.held.FollowedHeldOffers follows them
    from the plans topic). `offer in held` is what the market stage asks per event."""

    def __init__(self) -> None:
        self._plans: dict[str, tuple[str, ...]] = {}   # workload -> offer keys of its plan
        self._count: Counter[str] = Counter()           # offer key -> plans using it (only > 0 kept)
        self._since: dict[str, float] = {}              # held offer -> start of the step that placed it
        self._newly: dict[str, float] = {}              # offer -> since_t, newly held since the last call

    def __contains__(self, key: object) -> bool:
        return key in self._count

    def __len__(self) -> int:
        return len(self._count)

    def apply(self, workload_id: str, plan: dict[str, Any] | None) -> None:
        """One plan record (None: the workload is gone); `workload_id` is any key unique per workload."""
        new = tuple(sorted({_offer_key(a["offer"]) for a in plan.get("assignments", [])})) if plan else ()
        old = self._plans.pop(workload_id, ())
        if new:
            self._plans[workload_id] = new
        for k in old:
            self._count[k] -= 1
            if self._count[k] <= 0:
                del self._count[k]
        started = plan.get("step_started_at") if plan else None
        since_t = datetime.fromisoformat(started).timestamp() if isinstance(started, str) else -math.inf
        for k in new:
            if k not in self._count:
                self._newly[k] = self._since[k] = min(self._newly.get(k, since_t), since_t)
            self._count[k] += 1
        for k in old:
            if k not in self._count:
                self._newly.pop(k, None)
                self._since.pop(k, None)

    def since(self) -> dict[str, float]:
        """Every held offer, with the start of the step that placed it (a copy)."""
        return dict(self._since)

    def newly_held(self) -> dict[str, float]:
        """Offers that became held since the last call, with the start of the step that placed them
        (the earliest, when several did); the caller takes them over."""
        out, self._newly = self._newly, {}
        return out

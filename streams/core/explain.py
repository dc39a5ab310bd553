"""One sentence per re-decided workload, for people (the dashboard's "why"); the machine-readable detail
stays in the explanation (runner-up, reduced costs, duals, binding constraints).

>>> from schemas import Market, OfferKey
>>> o = OfferKey(provider="gcp", region="us-central1", instance_type="a3-highgpu-8g", gpu_model="H100-80GB",
...              gpus_per_instance=8, market=Market.SPOT)
>>> a = Assignment(workload_id="w", offer=o, instances=2, usd_per_hour=40.0)
>>> b = Assignment(workload_id="w", offer=o.model_copy(update={"provider": "aws", "region": "us-east-1",
...                "instance_type": "p5.48xlarge"}), instances=2, usd_per_hour=30.0)
>>> e = WorkloadExplanation(workload_id="w", runner_up="lambdalabs|global||8x|H100-80GB|8|on_demand",
...                         runner_up_delta_usd_per_hour=2.5, binding_constraints=["gang"], move_cost_usd=25.0)
>>> summarize("w", [a], [b], e)
'moved w from 2× a3-highgpu-8g gcp/us-central1 spot to 2× p5.48xlarge aws/us-east-1 spot: $10.00/h cheaper \
($40.00 → $30.00/h), pays the move back in 2.5 h; runner-up lambdalabs/global 8x +$2.50/h; binding: gang'
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas.events import Assignment, WorkloadExplanation
from schemas.offers import OfferKey


def where(assigns: Sequence[Assignment]) -> str:
    """'2× p5.48xlarge aws/us-east-1 spot + 1× ...'"""
    return " + ".join(f"{a.instances}× {a.offer.instance_type} {a.offer.provider}/{a.offer.region} "
                      f"{'spot' if a.offer.market.value == 'spot' else 'on-demand'}" for a in assigns)


def _offer(key: str) -> str:
    try:
        o = OfferKey.from_key(key)
    except (ValueError, TypeError):
        return key[:80]
    return f"{o.provider}/{o.region} {o.instance_type}"


def summarize(workload_id: str, before: Sequence[Assignment], after: Sequence[Assignment],
              e: WorkloadExplanation | None) -> str:
    """The decision for one workload in one sentence (what changed, why, what it saves, what binds)."""
    old_usd, new_usd = sum(a.usd_per_hour for a in before), sum(a.usd_per_hour for a in after)
    if not after:
        why = e.infeasible_reason if e is not None and e.infeasible_reason else "cancelled"
        head = f"stopped {workload_id} on {where(before)}" if before else f"could not place {workload_id}"
        return f"{head}: {why}"[:1000]
    if not before:
        head = f"placed {workload_id} on {where(after)} at ${new_usd:,.2f}/h"
    elif old_usd - new_usd > 0.005:
        head = (f"moved {workload_id} from {where(before)} to {where(after)}: ${old_usd - new_usd:,.2f}/h cheaper "
                f"(${old_usd:,.2f} → ${new_usd:,.2f}/h)")
        if e is not None and e.move_cost_usd:
            head += f", pays the move back in {e.move_cost_usd / (old_usd - new_usd):.1f} h"
    else:
        head = f"moved {workload_id} from {where(before)} to {where(after)} (${old_usd:,.2f} → ${new_usd:,.2f}/h)"
    parts = [head]
    if e is not None and e.runner_up:
        delta = e.runner_up_delta_usd_per_hour
        parts.append(f"runner-up {_offer(e.runner_up)}" + (f" +${delta:,.2f}/h" if delta is not None else ""))
    if e is not None and e.binding_constraints:
        parts.append("binding: " + ", ".join(e.binding_constraints[:6]))
    return "; ".join(parts)[:1000]

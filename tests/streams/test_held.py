"""The held-offer set every market stage follows from the plans topic (streams.core.held), without Kafka."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from schemas import Assignment, Market
from schemas.events import PlanAdopted
from streams.core.held import HeldOffers, plan_adopted
from tests.streams.helpers import offer

A, B, C = offer(region="a"), offer(region="b", market=Market.SPOT), offer(region="c", gpu="H100-80GB", n=8)


def plan(*offers: object, since_t: float | None = 5.0) -> dict[str, object]:
    """A PlanAdopted record as the decision stage writes it (without its step's start: an outside writer's)."""
    rec = plan_adopted("app", "w", {"decision_id": "d", "assignments": [
        Assignment(workload_id="w", offer=o, instances=1, usd_per_hour=1.0).model_dump(mode="json")  # type: ignore[arg-type]
        for o in offers]}, 0.0 if since_t is None else since_t, 100.0)
    PlanAdopted.model_validate(rec)
    if since_t is None:
        del rec["step_started_at"]
    return rec


def test_an_offer_stays_held_while_any_plan_uses_it_and_is_newly_held_once() -> None:
    h = HeldOffers()
    h.apply("w1", plan(A, B, since_t=10.0))
    h.apply("w2", plan(A, since_t=12.0))
    assert A.key in h and B.key in h and C.key not in h and len(h) == 2
    assert h.newly_held() == {A.key: 10.0, B.key: 10.0} == h.since()   # A was already held when w2 came
    assert h.newly_held() == {}
    h.apply("w1", plan(C, since_t=20.0))                   # w1 moves from A and B to C
    assert A.key in h and B.key not in h and C.key in h
    assert h.newly_held() == {C.key: 20.0} and h.since() == {A.key: 10.0, C.key: 20.0}
    h.apply("w2", None)                                    # w2 gone: A is free
    h.apply("w1", None)
    assert len(h) == 0 and h.newly_held() == {}


def test_an_offer_freed_before_the_stage_looked_is_not_newly_held() -> None:
    h = HeldOffers()
    h.apply("w1", plan(A, since_t=10.0))
    h.apply("w1", plan(B, since_t=11.0))
    assert h.newly_held() == {B.key: 11.0}
    h.apply("w2", plan(C, since_t=None))                   # a record without the step's start
    assert h.newly_held() == {C.key: -math.inf}


@given(st.lists(st.tuples(st.sampled_from(["w1", "w2", "w3"]), st.sets(st.sampled_from([A, B, C]))), max_size=30))
def test_the_held_set_is_the_union_of_the_last_plans(ops: list[tuple[str, set[object]]]) -> None:
    h = HeldOffers()
    last: dict[str, set[str]] = {}
    for wid, offers in ops:
        h.apply(wid, plan(*offers) if offers else None)
        last[wid] = {o.key for o in offers}  # type: ignore[attr-defined]
    want = set().union(*last.values()) if last else set()
    assert {o.key for o in (A, B, C) if o.key in h} == want and len(h) == len(want)

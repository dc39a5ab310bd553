"""The worker's one state-store mechanism (streams.runtime.store) and what the decision stage records with it,
without a broker (tests/integration/test_market_stage.py and test_pipeline.py read the topics back)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.events import PlanAdopted
from streams.core.decider import DecideOutput
from streams.core.held import HeldOffers
from streams.runtime.app import DecisionState
from streams.runtime.store import ChangelogStore, decode_record, encode_record
from tests.streams.helpers import offer

json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=20)
                           | st.floats(allow_nan=False, allow_infinity=False),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)


@given(st.text(min_size=1, max_size=40), json_values)
def test_a_record_reads_back_as_written(key: str, value: Any) -> None:
    assert decode_record(*encode_record(key, value)) == (key, value)


def test_a_failed_batch_leaves_the_store_and_its_topic_as_before() -> None:
    s = ChangelogStore("t.v1", partitions=3)
    s.put("a", {"n": 1}, 2)
    sent: list[tuple[Any, ...]] = []
    s.write(lambda *r: sent.append(r))
    s.put("a", {"n": 2}, 2)
    s.put("b", {"n": 3}, 1)
    s.put("a", None, 2)
    s.rollback()
    assert s.data == {"a": {"n": 1}} and s.partition_of == {"a": 2} and s.pending() == 0
    assert s.write(lambda *r: sent.append(r)) == 0
    assert sent == [("t.v1", b"a", b'{"n":1}', 2)]


def test_only_the_last_value_of_a_key_in_a_batch_is_written_and_a_delete_is_a_tombstone() -> None:
    s = ChangelogStore("t.v1")
    s.put("a", 1)
    s.put("a", 2)
    s.put("b", 3)
    s.put("b", None)
    sent: list[tuple[Any, ...]] = []
    assert s.write(lambda *r: sent.append(r)) == 2
    assert sent == [("t.v1", b"a", b"2", 0), ("t.v1", b"b", None, 0)] and s.data == {"a": 2}


def _assignment(instances: int) -> dict[str, Any]:
    return {"workload_id": "w1", "offer": offer().model_dump(mode="json"), "instances": instances,
            "usd_per_hour": 2.0 * instances}


def test_the_decision_stage_records_its_state_and_publishes_plans_as_plan_adopted() -> None:
    st8 = DecisionState.of("t")
    res = DecideOutput(state_writes=[("market", offer().key, {"usd_per_hour": 2.0}), ("workloads", "w1", {"x": 1}),
                                     ("workloads", "gone", None)],
                       plan_writes=[("plans", "w1", {"decision_id": "d1", "assignments": [_assignment(2)]}),
                                    ("plans", "gone", None)])
    sent: list[tuple[Any, ...]] = []
    n = st8.record(res, 100.0, 101.5, lambda *r: sent.append(r))
    assert n == 5 and [r[0] for r in sent] == ["t-decision-market.v1", "t-decision-workloads.v1",
                                               "t-decision-workloads.v1", "cloudarb.plans.v1", "cloudarb.plans.v1"]
    plan = PlanAdopted.model_validate_json(sent[3][2])
    assert (plan.workload_id, plan.decision_id, plan.assignments[0].instances) == ("w1", "d1", 2)
    assert plan.step_started_at == datetime.fromtimestamp(100.0, UTC) and plan.adopted_at > plan.step_started_at
    assert sent[3][1] == b"t/w1" and plan.app_id == "t"   # the apps of a cluster share the plans topic
    assert sent[4][1:3] == (b"t/gone", None)   # the workload is gone: a tombstone
    # what every market stage makes of the record: the offer is held since the step began
    held = HeldOffers()
    held.apply(*decode_record(sent[3][1], sent[3][2]))
    assert held.newly_held() == {offer().key: pytest.approx(100.0)}


def test_a_step_whose_records_fail_is_rolled_back_everywhere() -> None:
    st8 = DecisionState.of("t")
    res = DecideOutput(state_writes=[("quotas", "quotas", {"q": 1})],
                       plan_writes=[("plans", "w1", {"decision_id": "d1", "assignments": []})])

    def refuse(*_: Any) -> None:
        raise RuntimeError("broker down")

    with pytest.raises(RuntimeError):
        st8.record(res, 1.0, 2.0, refuse)
    st8.rollback()
    assert all(len(s) == 0 and s.pending() == 0 for s in st8.stores())


def test_a_plan_record_that_is_not_a_plan_adopted_is_left_out_of_the_deciders_plans() -> None:
    """The plans topic is public: what someone else wrote under this app's key must not stop the decider."""
    st8 = DecisionState.of("t")
    good = {"decision_id": "d1", "assignments": [_assignment(1)]}
    st8.record(DecideOutput(plan_writes=[("plans", "w1", good)]), 1.0, 2.0, lambda *_: None)
    st8.plans.put("t/bad", {"assignments": "not a list"})
    st8.plans.put("other-app/w1", {"anything": 1})
    assert set(st8.own_plans()) == {"w1"} and st8.own_plans()["w1"]["decision_id"] == "d1"


def test_every_schema_valid_extreme_plan_is_followed_for_its_held_offers() -> None:
    from tests.outputs.test_sink_extremes import all_variants

    plans = [e for _, e in all_variants() if isinstance(e, PlanAdopted)]
    assert len(plans) > 3
    for p in plans:
        held = HeldOffers()
        held.apply("a/w", decode_record(*encode_record("a/w", p.model_dump(mode="json")))[1])
        assert all(a.offer.key in held for a in p.assignments)

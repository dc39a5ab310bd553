from __future__ import annotations

from datetime import UTC, datetime

from schemas.events import Assignment, ChangeAction
from schemas.market import OfferQuote
from solvers import GreedyEngine
from streams.core.decide import affected_workloads, decision_id, diff_plans, resolve, split
from tests.streams.helpers import offer, workload

L4A, L4B, H100 = offer(region="a"), offer(region="b"), offer(gpu="H100-80GB")
NOW = datetime(2025, 6, 1, tzinfo=UTC)


def a(wid: str, o: object, n: int = 1, usd: float = 1.0) -> Assignment:
    return Assignment(workload_id=wid, offer=o, instances=n, usd_per_hour=usd)  # type: ignore[arg-type]


def test_affected_workloads_by_gpu_model_and_current_placement() -> None:
    wl = {"l4": workload("l4"), "h": workload("h", {"H100-80GB": 1.7})}
    assert affected_workloads([L4A.key], wl, {}) == {"l4"}
    assert affected_workloads([H100.key], wl, {}) == {"h"}
    # a workload sitting on an offer is affected even when it no longer accepts that GPU
    assert affected_workloads([H100.key], {"l4": wl["l4"]}, {"l4": [a("l4", H100)]}) == {"l4"}


def test_diff_plans_actions() -> None:
    old = {"m": [a("m", L4A)], "t": [a("t", L4A)], "r": [a("r", L4A, 1)]}
    new = {"m": [a("m", L4B)], "l": [a("l", L4A)], "r": [a("r", L4A, 2)]}
    acts = {(c.workload_id, c.action) for c in diff_plans(old, new, {"m", "t", "l", "r"})}
    assert acts == {("m", ChangeAction.MIGRATE), ("t", ChangeAction.TERMINATE), ("l", ChangeAction.LAUNCH),
                    ("r", ChangeAction.RESIZE)}
    assert diff_plans(old, old, {"m", "t", "r"}) == []


def test_decision_ids_are_deterministic() -> None:
    plan = {"m": [a("m", L4B)]}
    assert decision_id({"m": "d0"}, ["m"], plan) == decision_id({"m": "d0"}, ["m"], plan)
    assert decision_id({"m": "d0"}, ["m"], plan) != decision_id({"m": "d1"}, ["m"], plan)


def test_resolve_emits_only_on_change() -> None:
    eng = GreedyEngine()
    eng.upsert_offers([OfferQuote(L4A, 1.0), OfferQuote(L4B, 2.0)])
    eng.upsert_workload(workload("w"))
    d = resolve(eng, {"w"}, {}, {}, "new offer", ["e1"], {L4A.key: 5.0}, NOW, 12.0)
    assert d is not None and d.assignments[0].offer == L4A and d.changes[0].action is ChangeAction.LAUNCH
    assert d.quote_age_s == {L4A.key: 5.0} and d.latency_ms == 12.0 and d.explanations
    plan = {"w": list(d.assignments)}
    assert resolve(eng, {"w"}, plan, {"w": d.event_id}, "again", [], {}, NOW, None) is None
    eng.upsert_offers([OfferQuote(L4B, 0.5)])
    d2 = resolve(eng, {"w"}, plan, {"w": d.event_id}, "price fell", [], {}, NOW, None)
    assert d2 is not None and d2.changes[0].action is ChangeAction.MIGRATE and d2.event_id != d.event_id
    # one sentence per workload for people; the detail stays machine-readable beside it
    assert d.explanations[0].summary.startswith("placed w on 1× ")
    summary = d2.explanations[0].summary
    assert summary.startswith("moved w from 1× ") and "$0.50/h cheaper ($1.00 → $0.50/h)" in summary


def test_a_large_decision_is_split_into_parts_that_reassemble_it() -> None:
    eng = GreedyEngine()
    offers = [offer(region=f"r{i}") for i in range(30)]
    eng.upsert_offers([OfferQuote(o, 1.0 + i / 100) for i, o in enumerate(offers)])
    for i in range(250):
        eng.upsert_workload(workload(f"w{i:03d}", budget=10.0))
    d = resolve(eng, {f"w{i:03d}" for i in range(250)}, {}, {}, "start", ["t1"], {}, datetime.now(UTC), 12.0)
    assert d is not None and len(d.workload_ids) == 250
    parts = split(d, {}, max_workloads=100)
    assert [len(p.workload_ids) for p in parts] == [100, 100, 50]
    assert sorted(w for p in parts for w in p.workload_ids) == sorted(d.workload_ids)
    assert sorted(a.workload_id for p in parts for a in p.assignments) == sorted(a.workload_id for a in d.assignments)
    assert sum(len(p.changes) for p in parts) == len(d.changes)
    assert all(p.reason == "start" and p.latency_ms == 12.0 and p.trigger_event_ids == ["t1"] for p in parts)
    assert all(c.workload_id in p.workload_ids for p in parts for c in p.changes)
    assert len({p.event_id for p in parts}) == 3 and [p.event_id for p in split(d, {}, 100)] == [p.event_id
                                                                                             for p in parts]
    assert split(d, {}, max_workloads=1000) == [d]

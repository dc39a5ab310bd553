"""Hand-solved instances with known optima, infeasibility reports, explanations, protocol (the incremental
solves: test_portfolio_incremental.py)."""

from __future__ import annotations

import inspect

import pytest

from schemas.events import Assignment
from schemas.market import AllocationEngine
from solvers import GreedyEngine, PortfolioEngine, build_instance, evaluate, greedy_plan
from solvers.portfolio import integer_lower_bound
from tests.solvers.helpers import NO_CONC, quote, spec


def solve(offers, workloads, **kw):
    e = PortfolioEngine(**{**NO_CONC, **kw})
    e.upsert_offers(offers)
    for w in workloads:
        e.upsert_workload(w)
    r = e.solve()
    ev = evaluate(e.instance(), r.plan())
    assert ev.ok, ev.violations
    return e, r


def chosen(r, wid="w"):
    return sorted((a.offer.instance_type, a.offer.region, a.offer.market.value, a.instances) for a in r.plan()[wid])


def test_cheapest_spot_when_risk_free():
    _, r = solve([quote(price=1.0), quote(price=0.5, spot=True)], [spec(lo=2)])
    assert chosen(r) == [("L4-1x", "us", "spot", 2)]
    assert r.objective == pytest.approx(1.0)
    assert r.lower_bound == pytest.approx(1.0)


def test_cost_per_throughput_prefers_fast_gpu():
    offers = [quote(model="L4", price=1.0), quote(model="H100-80GB", price=4.0)]
    _, r = solve(offers, [spec(models={"L4": 0.3, "H100-80GB": 1.7})])
    assert chosen(r)[0][0] == "H100-80GB-1x"
    assert r.objective == pytest.approx(4.0)   # USD/h of the workload's best GPU


def test_interruption_risk_moves_to_on_demand():
    offers = [quote(price=1.0), quote(price=0.8, spot=True, pi=0.5)]
    _, r = solve(offers, [spec(restart=1.0)])
    assert chosen(r) == [("L4-1x", "us", "on_demand", 1)]        # 0.8 * (1 + 0.5 * 1) = 1.2 > 1.0
    _, r0 = solve(offers, [spec(restart=1.0)], risk_lambda=0.0)
    assert chosen(r0) == [("L4-1x", "us", "spot", 1)]


def test_mixed_instance_sizes_whole_instances():
    offers = [quote(gpus=2, price=2.0), quote(gpus=1, price=1.2)]
    _, r = solve(offers, [spec(lo=3, hi=3)])
    assert chosen(r) == [("L4-1x", "us", "on_demand", 1), ("L4-2x", "us", "on_demand", 1)]
    assert r.objective == pytest.approx(3.2)
    assert r.lower_bound == pytest.approx(3.0)   # LP: 1.5 two-GPU instances
    e, _ = solve(offers, [spec(lo=3, hi=3)])
    assert integer_lower_bound(e) == pytest.approx(3.2)   # whole instances per workload: exact here


def test_priority_wins_capacity():
    offers = [quote(gpus=8, price=8.0, cap=1, it="cheap"), quote(gpus=8, price=12.0, it="dear")]
    _, r = solve(offers, [spec("lo", lo=8, priority=1), spec("hi", lo=8, priority=5)])
    assert chosen(r, "hi")[0][0] == "cheap"
    assert chosen(r, "lo")[0][0] == "dear"


def test_spot_share_mix():
    offers = [quote(price=1.0), quote(price=0.5, spot=True)]
    _, r = solve(offers, [spec(lo=4, spot_share=0.5)])
    assert chosen(r) == [("L4-1x", "us", "on_demand", 2), ("L4-1x", "us", "spot", 2)]
    assert r.objective == pytest.approx(3.0)


def test_co_location_single_region():
    offers = [quote(region="a", price=1.0, cap=2), quote(region="b", price=1.1)]
    _, r = solve(offers, [spec(lo=4, same_region=True)])
    assert chosen(r) == [("L4-1x", "b", "on_demand", 4)]
    _, r2 = solve(offers, [spec(lo=4)])
    assert r2.objective == pytest.approx(4.2)


def test_co_location_is_one_providers_region():
    # two clouds that both name a region us-east-1 are not one place: a same-region job cannot span them
    offers = [quote("aws", "us-east-1", "H100-80GB", 8, 30.0, cap=1, it="p5.48xlarge"),
              quote("lambda", "us-east-1", "H100-80GB", 8, 24.0, cap=1, it="gpu_8x_h100_sxm5")]
    w = spec(models={"H100-80GB": 1.0}, lo=16, budget=100.0, same_region=True)
    e = PortfolioEngine(**NO_CONC)
    e.upsert_offers(offers)
    e.upsert_workload(w)
    for r in (e.solve(), greedy_plan(offers, [w])):
        assert r.plan().get("w", []) == [] and [i.constraint for i in r.infeasible] == ["co_location"]
    split = {"w": [Assignment(workload_id="w", offer=o.offer, instances=1, usd_per_hour=o.usd_per_hour)
                   for o in offers]}
    assert not evaluate(build_instance(offers, [w]), split).ok


def test_concentration_diversifies():
    offers = [quote(provider="gcp", price=1.0), quote(provider="aws", price=1.02)]
    ws = [spec("a"), spec("b")]
    _, r = solve(offers, ws, concentration_penalty_usd_per_gpu_hour=0.1, concentration_cap=0.5)
    assert {r.plan()["a"][0].offer.provider, r.plan()["b"][0].offer.provider} == {"gcp", "aws"}
    _, r0 = solve(offers, ws)
    assert {r0.plan()["a"][0].offer.provider, r0.plan()["b"][0].offer.provider} == {"gcp"}


def test_hysteresis_threshold():
    a = quote(provider="gcp", price=1.0)
    e, r = solve([a], [spec()])
    e.upsert_offers([quote(provider="aws", price=0.8)])    # saves 0.2 < 0.5: stay
    r = e.solve()
    assert r.plan()["w"][0].offer.provider == "gcp"
    assert "hysteresis" in r.explanations["w"].binding_constraints
    e.upsert_offers([quote(provider="aws", price=0.3)])    # saves 0.7 >= 0.5: move
    r = e.solve()
    assert r.plan()["w"][0].offer.provider == "aws"


def test_budget_infeasible_report():
    _, r = solve([quote(gpus=4, price=52.0)], [spec(lo=4, budget=40.0)])
    assert not r.assignments
    (rep,) = r.infeasible
    assert rep.constraint == "budget" and rep.shortfall == pytest.approx(12.0)
    assert "$40.00/h" in rep.reason and "$52.00/h" in rep.reason
    assert r.explanations["w"].infeasible_reason == rep.reason


@pytest.mark.parametrize(("offers", "w", "constraint"), [
    ([quote(model="T4")], spec(), "no_offer"),
    ([quote(gpus=2)], spec(lo=3, hi=3), "gpu_count"),
    ([quote(spot=True, price=0.3)], spec(spot_share=0.0), "spot_share"),
    ([quote(cap=2)], spec(lo=4), "capacity"),
])
def test_infeasibility_names_constraint(offers, w, constraint):
    _, r = solve(offers, [w])
    assert [x.constraint for x in r.infeasible] == [constraint]
    assert r.infeasible[0].reason


def test_explanation_runner_up_really_costs_more():
    offers = [quote(provider="gcp", price=1.0), quote(provider="aws", price=1.3), quote(provider="azure", price=1.6)]
    e, r = solve(offers, [spec(lo=2)])
    x = r.explanations["w"]
    assert x.chosen == [offers[0].key] and x.runner_up == offers[1].key
    assert x.runner_up_delta_usd_per_hour == pytest.approx(0.6)
    fresh = build_instance(offers, [spec(lo=2)], params=e.params)   # no plan in force: no migration term
    alt = evaluate(fresh, {"w": [a.model_copy(update={"offer": offers[1].offer, "usd_per_hour": 2.6})
                                        for a in r.plan()["w"]]})
    assert alt.ok and alt.objective - r.objective == pytest.approx(x.runner_up_delta_usd_per_hour)
    assert "min_gpus" in x.binding_constraints
    assert x.reduced_costs[offers[0].key] == pytest.approx(0.0, abs=1e-9)
    assert x.reduced_costs[offers[1].key] > 0
    assert x.duals["min_gpus"] == pytest.approx(1.0)


def test_protocol_conformance():
    proto = {n: inspect.signature(getattr(AllocationEngine, n)) for n in
             ("upsert_offers", "remove_offers", "upsert_workload", "remove_workload", "set_current_plan", "solve")}
    for cls in (PortfolioEngine, GreedyEngine):
        eng: AllocationEngine = cls()
        assert isinstance(eng.name, str)
        for n, sig in proto.items():
            assert list(inspect.signature(getattr(cls, n)).parameters) == list(sig.parameters), (cls, n)


def test_remove_offer_and_workload_resolve():
    offers = [quote(provider="gcp", price=1.0), quote(provider="aws", price=1.3)]
    e, r = solve(offers, [spec(), spec("v")])
    e.remove_offers([offers[0].key])
    r = e.solve()
    assert {a.offer.provider for a in r.assignments} == {"aws"}
    e.remove_workload("v")
    r = e.solve()
    assert set(r.plan()) == {"w"}


def test_set_current_plan_charges_migration():
    offers = [quote(provider="gcp", price=1.0), quote(provider="aws", price=0.9)]
    e = PortfolioEngine(**NO_CONC)
    e.upsert_offers(offers)
    e.upsert_workload(spec())
    from schemas.events import Assignment
    e.set_current_plan([Assignment(workload_id="w", offer=offers[0].offer, instances=1, usd_per_hour=1.0)])
    r = e.solve()
    assert r.plan()["w"][0].offer.provider == "gcp"


def test_solve_subset_keeps_others_capacity():
    offers = [quote(gpus=8, price=8.0, cap=1, it="cheap"), quote(gpus=8, price=12.0, it="dear")]
    e, r = solve(offers, [spec("a", lo=8)])
    assert chosen(r, "a")[0][0] == "cheap"
    e.upsert_workload(spec("b", lo=8, priority=9))
    r = e.solve(["b"])
    assert chosen(r, "b")[0][0] == "dear" and set(r.plan()) == {"b"}

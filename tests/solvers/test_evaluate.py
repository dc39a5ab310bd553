"""`evaluate` is the oracle of the property tests: make sure it catches each kind of violation."""

from __future__ import annotations

import pytest

from schemas.events import Assignment
from schemas.market import OfferQuote
from solvers import PortfolioEngine, build_instance, evaluate
from tests.solvers.helpers import quote, spec


def a(wid, q, n):
    return Assignment(workload_id=wid, offer=q.offer, instances=n, usd_per_hour=n * q.usd_per_hour)


OD = quote(region="r1", price=1.0, cap=3)
SPOT = quote(region="r2", price=0.5, spot=True)
T4 = quote(model="T4", price=0.2)


@pytest.mark.parametrize(("ws", "plan", "needle"), [
    ([spec(lo=2, hi=2)], {"w": [a("w", OD, 1)]}, "GPUs outside"),
    ([spec(lo=2, budget=1.5)], {"w": [a("w", OD, 2)]}, "above budget"),
    ([spec(lo=2, spot_share=0.0)], {"w": [a("w", OD, 1), a("w", SPOT, 1)]}, "spot share"),
    ([spec(lo=2, same_region=True)], {"w": [a("w", OD, 1), a("w", SPOT, 1)]}, "co-location"),
    ([spec(lo=2), spec("v", lo=2)], {"w": [a("w", OD, 2)], "v": [a("v", OD, 2)]}, "above capacity"),
    ([spec()], {"w": [a("w", T4, 1)]}, "not acceptable"),
    ([spec()], {"w": [Assignment(workload_id="w", offer=OD.offer, instances=1, usd_per_hour=7.0)]}, "usd_per_hour"),
    ([spec()], {"nope": [a("nope", OD, 1)]}, "unknown workload"),
])
def test_evaluate_catches(ws, plan, needle):
    inst = build_instance([OD, SPOT, T4], ws)
    ev = evaluate(inst, plan)
    assert not ev.ok and any(needle in v for v in ev.violations), ev.violations


def test_evaluate_reserved_capacity_and_unavailable():
    inst = build_instance([OD, OfferQuote(SPOT.offer, 0.5, available=False)], [spec(lo=2), spec("v")])
    assert not evaluate(inst, {"w": [a("w", OD, 2)]}, {"v": [a("v", OD, 2)]}).ok
    assert any("not available" in v for v in evaluate(inst, {"w": [a("w", SPOT, 2)]}).violations)
    assert evaluate(inst, {"w": [a("w", OD, 2)]}).ok


def test_reduced_cost_screen_skips_and_stays_exact():
    offers = [quote(provider="gcp", price=1.0), quote(provider="aws", price=1.5), quote(provider="azure", price=2.0)]
    e = PortfolioEngine()
    e.upsert_offers(offers)
    e.upsert_workload(spec(lo=2))
    e.solve()
    e.solve()   # settle the plan in force
    skipped = e.stats["lp_skipped"]
    dearer = OfferQuote(offers[2].offer, 2.5)          # an unused offer gets dearer: LP provably unchanged
    e.upsert_offers([dearer])
    r = e.solve()
    assert e.stats["lp_skipped"] == skipped + 1
    cold = PortfolioEngine()
    cold.upsert_offers([offers[0], offers[1], dearer])
    cold.upsert_workload(spec(lo=2))
    cold.set_current_plan([x for v in e.plan.values() for x in v])
    assert cold.solve().lower_bound == pytest.approx(r.lower_bound)
    cheaper = OfferQuote(offers[1].offer, 0.2)         # a big price drop must not be screened out
    e.upsert_offers([cheaper])
    r = e.solve()
    assert e.stats["lp_skipped"] == skipped + 1
    assert r.plan()["w"][0].offer == offers[1].offer

"""CP-SAT in idle time (solvers/portfolio/idle.py): `warm()` improves the integer plan as a candidate for the
next solve, never changing the plan in force itself, and returns promptly when asked to stop."""

from __future__ import annotations

import time

from schemas.market import OfferQuote
from solvers import PortfolioEngine, evaluate
from tests.solvers.helpers import quote, spec


def _freed_capacity_engine(idle_time_limit_s: float) -> tuple[PortfolioEngine, OfferQuote]:
    """`a` (first by priority) takes the only o1 instance; `b` (L4 only) goes to the dear o3. Then the A10G
    offer gets cheap: `a` moves there and frees o1, but no event touches `b` (its LP values, plan and
    runner-up offers stand), so a solve does not re-decide it: it stays on o3 although o1 is free."""
    o1 = quote(model="L4", price=2.0, cap=1, it="o1")
    o2 = quote(model="A10G", price=3.0, cap=1, it="o2")
    o3 = quote(model="L4", region="eu", price=5.0, it="o3")
    e = PortfolioEngine(risk_lambda=0.0, concentration_penalty_usd_per_gpu_hour=0.0, joint_time_limit_s=0.0,
                        idle_time_limit_s=idle_time_limit_s)
    e.upsert_offers([o1, o2, o3])
    e.upsert_workload(spec("a", models={"L4": 1.0, "A10G": 1.0}, priority=2))
    e.upsert_workload(spec("b", models={"L4": 1.0}))
    r = e.solve()
    assert {w: [x.offer.instance_type for x in v] for w, v in r.plan().items()} == {"a": ["o1"], "b": ["o3"]}
    e.upsert_offers([OfferQuote(o2.offer, 1.0, None, True, 1, 0.0)])
    r = e.solve()
    assert {w: [x.offer.instance_type for x in v] for w, v in r.plan().items()} == {"a": ["o2"], "b": ["o3"]}
    return e, o1


def test_idle_cp_sat_finds_a_cheaper_plan_for_the_next_solve_without_changing_the_plan_in_force() -> None:
    e, _ = _freed_capacity_engine(idle_time_limit_s=5.0)
    before = {w: [(x.offer.key, x.instances) for x in v] for w, v in e.plan.items()}
    e.warm(lambda: False)
    assert {w: [(x.offer.key, x.instances) for x in v] for w, v in e.plan.items()} == before   # not adopted
    assert e._idle is not None and e._idle.status == "OPTIMAL" and e._idle.plan
    r = e.solve()
    assert {w: [x.offer.instance_type for x in v] for w, v in r.plan().items()} == {"a": ["o2"], "b": ["o1"]}
    assert r.objective == 3.0 and evaluate(e.instance(), r.plan()).ok
    # without idle CP-SAT, the same warm() and solve leave `b` on o3
    e0, _ = _freed_capacity_engine(idle_time_limit_s=0.0)
    e0.warm(lambda: False)
    r0 = e0.solve()
    assert r0.plan()["b"][0].offer.instance_type == "o3" and r0.objective == 6.0


def test_idle_cp_sat_returns_promptly_when_asked_to_stop() -> None:
    """A search that is not over (many competing workloads) ends within a few ms of `stop()` turning true."""
    offers = [quote(region=f"r{i}", price=1.0 + 0.01 * i, cap=2, it=f"o{i}") for i in range(40)]
    e = PortfolioEngine(joint_time_limit_s=0.0, idle_time_limit_s=30.0)
    e.upsert_offers(offers)
    for i in range(90):
        e.upsert_workload(spec(f"w{i}", lo=1 + i % 3, priority=1 + i % 2))
    e.solve()
    e.settle()
    t0 = time.perf_counter()
    deadline = t0 + 0.3
    e.warm(lambda: time.perf_counter() > deadline)
    assert time.perf_counter() - deadline < 0.05

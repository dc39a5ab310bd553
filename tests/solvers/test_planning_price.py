"""The price and risk a plan is costed on (issue 22, item 4): a risk-averse workload plans on the forecast's p90,
and an interruption costs the restart overhead plus copying the state again, for every instance a gang stops."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from schemas.events import Assignment, WorkloadSpec
from schemas.market import OfferQuote
from schemas.offers import Market, OfferKey
from solvers import EngineParams, PortfolioEngine, build_instance, evaluate


def quote(zone: str, price: float, median: float, p90: float | None, gpus: int = 8, spot: bool = False,
          pi: float = 0.0) -> OfferQuote:
    k = OfferKey(provider="gcp", region="us-central1", zone=zone, instance_type="a3-megagpu-8g" if gpus == 8
                 else "a3-highgpu-1g", gpu_model="H100-80GB", gpus_per_instance=gpus,
                 market=Market.SPOT if spot else Market.ON_DEMAND)
    return OfferQuote(k, usd_per_hour=price, forecast_usd_per_hour=median, forecast_usd_per_hour_p90=p90,
                      interruption_probability_per_hour=pi)


def spec(wid: str, averse: bool, **kw: object) -> WorkloadSpec:
    return WorkloadSpec(workload_id=wid, gpu_throughput={"H100-80GB": 1.0}, min_gpus=8, max_gpus=8,
                        budget_usd_per_hour=100.0, risk_averse=averse, **kw)


# a: cheapest median forecast but a wide upper tail; b: dearer median, narrow tail
OFFERS = [quote("a", 20.0, median=20.0, p90=30.0), quote("b", 22.0, median=22.0, p90=23.0)]


def test_a_risk_averse_workload_plans_on_the_p90_and_a_neutral_one_on_the_median() -> None:
    """(The greedy engine ranks on the price now, as the baseline it is.)"""
    e = PortfolioEngine(params=EngineParams(concentration_penalty_usd_per_gpu_hour=0.0))
    e.upsert_offers(OFFERS)
    e.upsert_workload(spec("neutral", averse=False))
    e.upsert_workload(spec("averse", averse=True))
    plan = e.solve().plan()
    assert [a.offer.zone for a in plan["neutral"]] == ["a"]
    assert [a.offer.zone for a in plan["averse"]] == ["b"]


def test_the_planning_p90_is_never_below_the_median_and_defaults_to_it() -> None:
    assert quote("a", 20.0, median=21.0, p90=None).planning_usd_per_hour_p90 == 21.0
    assert quote("a", 20.0, median=21.0, p90=19.0).planning_usd_per_hour_p90 == 21.0   # a crossed quantile
    assert OfferQuote(OFFERS[0].offer, 20.0).planning_usd_per_hour_p90 == 20.0


def test_an_interruption_costs_restart_and_state_copy_for_every_instance_a_gang_stops() -> None:
    one = quote("a", 10.0, median=10.0, p90=None, gpus=1, spot=True, pi=0.1)
    params = EngineParams(risk_lambda=1.0, move_bandwidth_gbps=1.0)
    gang = spec("g", False, restart_overhead_h=0.5, state_gb=450.0)           # 450 GB at 1 Gbit/s = 1 h
    reps = spec("r", False, restart_overhead_h=0.5, state_gb=450.0, topology="replicas", gpus_per_replica=1)
    inst = build_instance([one], [gang, reps], params=params)
    assert inst.lost_h.tolist() == pytest.approx([1.5, 1.5])
    o = np.array([0])
    # gang: 8 one-GPU instances, any interruption stops all 8: 10 x (1 + 0.1 x 8 x 1.5)
    assert inst.unit_cost(0, o, False)[0] == pytest.approx(10.0 * (1 + 0.1 * 8 * 1.5))
    # replicas: only the interrupted replica restarts: 10 x (1 + 0.1 x 1.5)
    assert inst.unit_cost(1, o, False)[0] == pytest.approx(10.0 * (1 + 0.1 * 1.5))
    # the scalar path prices whole plans with the same operations
    for w in (0, 1):
        assert inst.rows_cost(w, [(0, 8)]) == (inst.unit_cost(w, o, False) * 8).sum()


def test_evaluate_prices_a_risk_averse_plan_on_the_p90() -> None:
    inst = build_instance(OFFERS, [spec("averse", True)], params=EngineParams(concentration_penalty_usd_per_gpu_hour=0))
    a = OFFERS[0]
    plan = {"averse": [Assignment(workload_id="averse", offer=a.offer, instances=1, usd_per_hour=20.0)]}
    ev = evaluate(inst, plan)
    assert ev.ok and ev.objective == pytest.approx(30.0)
    assert replace(a, forecast_usd_per_hour_p90=None).planning_usd_per_hour_p90 == 20.0

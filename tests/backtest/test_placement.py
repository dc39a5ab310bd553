"""Placements real jobs can run in (issue 21): spread and quota use measured on the holdings in force,
the same quotas for every strategy, and the placement timeline in the HTML report."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backtest import (
    BacktestConfig,
    Portfolio,
    build_report,
    load_portfolio,
    parse_portfolio,
    run_backtest,
)
from backtest.report import render_html
from backtest.sim import BASELINES, Ledger
from schemas.events import Assignment, WorkloadSpec
from schemas.market import AllocationEngine
from schemas.placement import GpuQuota
from solvers import GreedyEngine
from tests.backtest.conftest import T0, offer, price

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"
START, END = datetime(2025, 5, 1, tzinfo=UTC), datetime(2025, 5, 11, tzinfo=UTC)


def spec(wid: str, gpus: int = 2, **kw: object) -> WorkloadSpec:
    return WorkloadSpec.model_validate({"workload_id": wid, "gpu_throughput": {"L4": 1.0, "A100-80GB": 2.0},
                                        "min_gpus": gpus, "max_gpus": gpus, "budget_usd_per_hour": 50.0, **kw})


def assign(wid: str, o: object, n: int) -> Assignment:
    return Assignment.model_validate({"workload_id": wid, "offer": o, "instances": n, "usd_per_hour": 1.0})


def test_spread_is_measured_on_what_is_held_at_once() -> None:
    a = offer("a", provider="gcp", region="r1")
    b = offer("b", provider="aws", region="us-east-1", gpu="A100-80GB")
    c = offer("c", provider="gcp", region="r2")
    led = Ledger("x", {"w": spec("w")})
    led.set_plan("w", [assign("w", a, 2)], 0.0, set())
    led.settle(0.0)
    # a split that lasts no time (replaced within the same instant) is not in force
    led.set_plan("w", [assign("w", a, 1), assign("w", b, 1)], 10.0, set())
    led.set_plan("w", [assign("w", c, 2)], 10.0, set())
    led.settle(10.0)
    assert led.spread["w"] == {"providers": 1, "regions": 1, "gpu_models": 1, "places": 1}
    led.set_plan("w", [assign("w", a, 1), assign("w", b, 1)], 20.0, set())
    led.settle(20.0)
    assert led.spread["w"] == {"providers": 2, "regions": 2, "gpu_models": 2, "places": 2}
    assert [t for t, _ in led.timeline["w"]] == [0.0, 10.0, 20.0]
    led.remove("w")
    led.settle(30.0)
    assert led.timeline["w"][-1] == (30.0, ())


def test_quota_violations_count_instants_and_name_the_workloads() -> None:
    a, b = offer("a", provider="gcp", region="r1"), offer("b", provider="gcp", region="r2")
    q = GpuQuota(provider="gcp", region="*", gpu="L4", gpus=3)
    led = Ledger("x", {"w1": spec("w1"), "w2": spec("w2")}, quotas=(q,))
    led.set_plan("w1", [assign("w1", a, 2)], 0.0, set())
    led.settle(0.0)
    assert led.quota_violations == 0
    led.set_plan("w2", [assign("w2", b, 2)], 3600.0, set())
    led.settle(3600.0)
    assert led.quota_violations == 1 and led.violated == ("gcp/*/L4 4/3",)
    assert led.quota_violations_by_workload == {"w1": 1, "w2": 1}
    led.accrue(3600.0, 7200.0, {a.key: {"usd_per_hour": 1.0}, b.key: {"usd_per_hour": 1.0}}, ["w1", "w2"])
    assert led.quota_violation_h == pytest.approx(1.0)
    led.remove("w2")
    led.settle(7200.0)
    assert led.quota_violations == 1 and led.violated == ()


def _two_workloads(quotas: list[dict[str, object]]) -> Portfolio:
    w = {"gpu_throughput": {"L4": 1.0}, "min_gpus": 2, "max_gpus": 2, "budget_usd_per_hour": 50.0,
         "home_provider": "gcp", "restart_overhead_h": 0.1, "max_spot_share": 1.0}
    return parse_portfolio({"name": "q", "quotas": quotas,
                            "workloads": [{"workload_id": "w1", "priority": 2, **w}, {"workload_id": "w2", **w}]})


def test_baselines_share_the_quota_across_workloads() -> None:
    home = offer("home", "on_demand", provider="gcp")
    spot = offer("home-spot", provider="gcp")
    away = offer("away", "on_demand", provider="lambdalabs", region="global")
    evs = [price(home, 1.0, 0), price(spot, 0.3, 0), price(away, 2.0, 0)]
    pf = _two_workloads([{"provider": "gcp", "region": "*", "gpu": "L4", "gpus": 3}])
    r = run_backtest(BacktestConfig(data_dir=Path("/nonexistent"), start=T0, end=T0 + timedelta(hours=4),
                                    strategies=BASELINES), pf, events=evs)
    for name in BASELINES:
        led = r.ledgers[name]
        assert led.quota_violations == 0, name
        gcp = sum(h.gpus for hs in led.holdings.values() for h in hs if h.offer.provider == "gcp")
        assert gcp <= 3, name
    # the higher-priority workload takes the home quota; the other runs away from home or not at all
    assert {h.offer.provider for h in r.ledgers["launch_cheapest"].holdings["w1"]} == {"gcp"}
    assert {h.offer.provider for h in r.ledgers["launch_cheapest"].holdings["w2"]} == {"lambdalabs"}
    assert not r.ledgers["on_demand_home"].holdings.get("w2")


class _RecordingEngine(GreedyEngine):
    def __init__(self) -> None:
        super().__init__()
        self.got: list[GpuQuota] | None = None

    def set_quotas(self, quotas: Sequence[GpuQuota]) -> None:
        self.got = list(quotas)
        super().set_quotas(quotas)


def test_engine_gets_the_portfolio_quotas() -> None:
    made: list[_RecordingEngine] = []

    def factory() -> AllocationEngine:
        made.append(_RecordingEngine())
        return made[-1]

    home = offer("home", "on_demand", provider="gcp")
    pf = _two_workloads([{"provider": "gcp", "region": "*", "gpu": "L4", "gpus": 3}])
    run_backtest(BacktestConfig(data_dir=Path("/nonexistent"), start=T0, end=T0 + timedelta(hours=2),
                                strategies=("cloudarb",)), pf, factory, events=[price(home, 1.0, 0)])
    assert made and made[0].got == [GpuQuota(provider="gcp", region="*", gpu="L4", gpus=3)]


def test_every_strategy_stays_within_the_quota_on_a_tiny_market() -> None:
    home = offer("home", "on_demand", provider="gcp")
    away = offer("away", "on_demand", provider="lambdalabs", region="global")
    pf = _two_workloads([{"provider": "gcp", "region": "*", "gpu": "L4", "gpus": 3}])
    r = run_backtest(BacktestConfig(data_dir=Path("/nonexistent"), start=T0, end=T0 + timedelta(hours=4)), pf,
                     events=[price(home, 1.0, 0), price(away, 2.0, 0)])
    rep = build_report(r)
    for name, st in rep["strategies"].items():
        assert st["quota_violations"] == 0, name
        gcp = sum(h.gpus for hs in r.ledgers[name].holdings.values() for h in hs if h.offer.provider == "gcp")
        assert gcp <= 3, name
    assert rep["strategies"]["cloudarb"]["gpu_hours_delivered"] == pytest.approx(16.0)


@pytest.mark.parametrize("quotas, msg", [
    ([{"provider": "nocloud", "region": "*", "gpu": "L4", "gpus": 1}], "unknown provider"),
    ([{"provider": "gcp", "region": "*", "gpu": "L4", "gpus": 1}] * 2, "one entry"),
    ({"provider": "gcp"}, "list"),
])
def test_bad_quotas_are_rejected(quotas: object, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        _two_workloads(quotas)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["training-lab.yaml", "inference-fleet.yaml"])
def test_example_portfolios_describe_real_jobs(name: str) -> None:
    pf = load_portfolio(ROOT / "examples" / "portfolios" / name)
    assert pf.quotas
    for w in pf.workloads:
        assert w.spec.state_gb > 0, w.spec.workload_id


def test_gang_workloads_run_in_one_place_for_every_strategy_on_sample() -> None:
    pf = load_portfolio(ROOT / "examples" / "portfolios" / "training-lab.yaml")
    r = run_backtest(BacktestConfig(data_dir=SAMPLE, start=START, end=END), pf)
    rep = build_report(r)
    gangs = [w.spec.workload_id for w in pf.workloads if w.restart_scope == "workload"]
    assert "pretrain-h100" in gangs
    bad = {}
    for name, st in rep["strategies"].items():
        assert st["quota_violations"] == 0, name
        for wid in gangs:
            d = st["per_workload"][wid]
            got = (d["max_providers_at_once"], d["max_regions_at_once"], d["max_gpu_models_at_once"],
                   d["quota_violations"])
            if got != (1, 1, 1, 0):
                bad[f"{name}/{wid}"] = got
    assert not bad, bad
    page = render_html(r, rep)
    assert "placement timeline" in page and "pretrain-h100" in page

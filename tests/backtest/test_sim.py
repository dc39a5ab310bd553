"""The simulator on hand-computed tiny markets: accounting, interruptions, each baseline's rule."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from backtest import BacktestConfig, build_report, run_backtest
from backtest.sim import MarketEvent
from backtest.traces import Trace
from tests.backtest.conftest import T0, capacity, frequency, offer, one_workload, price

OD = offer("od", "on_demand")
SA = offer("spot-a")
SB = offer("spot-b")


def cfg(hours: float = 4.0, **kw: object) -> BacktestConfig:
    return BacktestConfig(data_dir=Path("/nonexistent"), start=T0, end=T0 + timedelta(hours=hours), **kw)  # type: ignore[arg-type]


def test_accounting_on_hand_computed_market() -> None:
    # on-demand only: $1/h for 2 h, then $1.5/h for 2 h (a material move) -> $5, 4 GPU-h
    evs = [price(OD, 1.0, 0), price(OD, 1.5, 2)]
    r = run_backtest(cfg(), one_workload(), events=evs)
    for name in ("on_demand_home", "launch_cheapest", "greedy_spot", "cloudarb"):
        led = r.ledgers[name]
        assert led.cost == pytest.approx(5.0), name
        assert led.gpu_h == pytest.approx(4.0), name
        assert led.budget_violations == 0
    assert r.requested_gpu_h == pytest.approx(4.0)


def test_budget_violation_is_a_span_and_counted_for_baselines() -> None:
    # the home on-demand price rises above the budget for the last hour: one violation, 1 h long
    evs = [price(OD, 1.0, 0), price(OD, 6.0, 3)]
    r = run_backtest(cfg(strategies=("on_demand_home",)), one_workload(), events=evs)
    led = r.ledgers["on_demand_home"]
    assert led.budget_violations == 1
    assert led.budget_violation_h == pytest.approx(1.0)
    assert led.cost == pytest.approx(3 * 1.0 + 6.0)


def test_interruption_forces_replacement_and_restart_overhead() -> None:
    # cheapest spot A ($0.5) loses capacity at 1 h; next is spot B ($0.6); restart overhead 0.5 h
    evs: list[MarketEvent] = [price(OD, 1.0, 0), price(SA, 0.5, 0), price(SB, 0.6, 0), capacity(SA, False, 1)]
    r = run_backtest(cfg(), one_workload(), events=evs)
    for name in ("launch_cheapest", "greedy_spot"):
        led = r.ledgers[name]
        assert led.interruptions == 1, name
        assert led.cost == pytest.approx(0.5 * 1 + 0.6 * 3), name
        assert led.gpu_h == pytest.approx(1 + (3 - 0.5)), name
        assert led.migrations == 0
    ours = r.ledgers["cloudarb"]
    assert ours.interruptions == 1
    assert ours.stuck == 0
    assert ours.gpu_h == pytest.approx(3.5)          # re-placed at once, then the restart overhead
    assert not any(h.key == SA.key for h in ours.holdings.get("w", []))


def test_on_demand_home_uses_only_home_on_demand() -> None:
    other = offer("od-x", "on_demand", provider="lambdalabs")
    evs = [price(OD, 1.0, 0), price(other, 0.4, 0), price(SA, 0.2, 0)]
    r = run_backtest(cfg(), one_workload(), events=evs)
    assert set(r.ledgers["on_demand_home"].share_gpu_h) == {"gcp/on_demand"}
    assert r.ledgers["on_demand_home"].cost == pytest.approx(4.0)
    assert set(r.ledgers["launch_cheapest"].share_gpu_h) == {"gcp/spot"}


def test_launch_cheapest_keeps_its_choice_greedy_spot_rechooses() -> None:
    # at 2 h spot B becomes cheaper than A: launch_cheapest stays, greedy_spot moves (and restarts)
    evs = [price(SA, 0.5, 0), price(SB, 0.6, 0), price(SB, 0.3, 2)]
    r = run_backtest(cfg(), one_workload(), events=evs)
    lc, gs = r.ledgers["launch_cheapest"], r.ledgers["greedy_spot"]
    assert lc.migrations == 0 and lc.cost == pytest.approx(4 * 0.5)
    assert gs.migrations == 1 and gs.cost == pytest.approx(2 * 0.5 + 2 * 0.3)
    assert gs.gpu_h == pytest.approx(4 - 0.5)


def test_pco_like_prefers_the_low_risk_pool() -> None:
    evs: list[MarketEvent] = [price(SA, 0.5, 0), price(SB, 0.6, 0), frequency(SA, 0.5, 0), frequency(SB, 0.01, 0)]
    r = run_backtest(cfg(), one_workload(), events=evs)
    assert r.ledgers["pco_like"].cost == pytest.approx(4 * 0.6)
    assert r.ledgers["launch_cheapest"].cost == pytest.approx(4 * 0.5)


def test_spot_not_allowed_never_on_spot() -> None:
    evs = [price(OD, 1.0, 0), price(SA, 0.2, 0)]
    r = run_backtest(cfg(), one_workload(spot_allowed=False), events=evs)
    for name, led in r.ledgers.items():
        assert set(led.share_gpu_h) == {"gcp/on_demand"}, name


def test_workload_window_relative_offsets() -> None:
    evs = [price(OD, 1.0, 0)]
    r = run_backtest(cfg(hours=10), one_workload(start="+2h", end="+5h"), events=evs)
    assert r.requested_gpu_h == pytest.approx(3.0)
    assert r.ledgers["on_demand_home"].cost == pytest.approx(3.0)


def test_trace_overlay_interrupts_spot() -> None:
    # a 1-tick-per-hour trace: available 2 h, unavailable 1 h, available 1 h (tick 0 = window start)
    trace = Trace(name="availability/x/z_v100_1", kind="availability", provider="aws", gpu=True, gpus=1,
                  gap_s=3600, unavailable=(False, False, True, False))
    evs = [price(OD, 1.0, 0), price(SA, 0.5, 0)]
    r = run_backtest(cfg(), one_workload(), events=evs, traces=[trace])
    assert r.n_trace_events == 2
    lc = r.ledgers["launch_cheapest"]
    assert lc.interruptions == 1
    # 2 h on A, then on-demand from 2 h (0.5 h restart), then stays (kept until preempted)
    assert lc.cost == pytest.approx(2 * 0.5 + 2 * 1.0)
    assert lc.gpu_h == pytest.approx(2 + 1.5)


def test_report_schema_and_determinism() -> None:
    evs: list[MarketEvent] = [price(OD, 1.0, 0), price(SA, 0.5, 0), price(SB, 0.6, 0), capacity(SA, False, 1),
                              price(SB, 0.7, 3)]
    reps = [build_report(run_backtest(cfg(), one_workload(), events=evs)) for _ in range(2)]
    for rep in reps:
        rep.pop("timing")
    assert json.dumps(reps[0], sort_keys=True) == json.dumps(reps[1], sort_keys=True)
    st = reps[0]["strategies"]
    assert {"cloudarb", "on_demand_home", "launch_cheapest", "greedy_spot"} <= set(st)
    for name, s in st.items():
        for key in ("total_cost_usd", "gpu_hours_delivered", "gpu_hours_requested", "interruptions", "migrations",
                    "budget_violations", "savings_pct_vs"):
            assert key in s, (name, key)
        assert isinstance(s["savings_pct_vs"], dict)
    assert set(st["cloudarb"]["savings_pct_vs"]) >= {"on_demand_home", "launch_cheapest", "greedy_spot"}
    assert st["cloudarb"]["budget_violations"] == 0
    base, ours = st["on_demand_home"]["total_cost_usd"], st["cloudarb"]["total_cost_usd"]
    assert st["cloudarb"]["savings_pct_vs"]["on_demand_home"] == pytest.approx(100 * (base - ours) / base, abs=0.01)


def _ledger(gang: bool):  # type: ignore[no-untyped-def]
    from backtest.sim import Ledger
    from schemas.events import Assignment

    pf = one_workload(min_gpus=2, max_gpus=2, budget_usd_per_hour=10)
    spec = pf.workloads[0].spec
    led = Ledger("x", {"w": spec}, {"w": gang})
    led.set_plan("w", [Assignment(workload_id="w", offer=SA, instances=1, usd_per_hour=0.5),
                       Assignment(workload_id="w", offer=SB, instances=1, usd_per_hour=0.6)], 0.0, set())
    states = {SA.key: {"usd_per_hour": 0.5}, SB.key: {"usd_per_hour": 0.6}, OD.key: {"usd_per_hour": 1.0}}
    led.accrue(0.0, 3600.0, states, {"w"})
    led.interrupt({SA.key}, 3600.0)
    led.set_plan("w", [Assignment(workload_id="w", offer=OD, instances=1, usd_per_hour=1.0),
                       Assignment(workload_id="w", offer=SB, instances=1, usd_per_hour=0.6)], 3600.0, {SA.key})
    led.accrue(3600.0, 3 * 3600.0, states, {"w"})
    return led


def test_restart_scope_gang_vs_instance() -> None:
    gang, inst = _ledger(True), _ledger(False)
    for led in (gang, inst):
        assert led.interruptions == 1 and led.migrations == 0 and led.launches == 1
        assert led.cost == pytest.approx(1.1 + 2 * 1.6)
    # 1 h with 2 GPUs, then the replacement waits 0.5 h; in a gang the survivor waits too
    assert gang.gpu_h == pytest.approx(2 + 2 * 1.5)
    assert inst.gpu_h == pytest.approx(2 + 1.5 + 2)


def test_sub_threshold_move_on_a_held_offer_is_re_decided() -> None:
    # a 1.5 % rise (below the 2 % materiality threshold) puts the cheapest offer over the $1.01 budget;
    # the live rule (any move on a held offer is material) re-decides it, so the guard never has to
    alt = offer("od-2", "on_demand", region="r2")
    evs = [price(OD, 1.00, 0), price(alt, 1.005, 0), price(OD, 1.015, 1)]
    pf = one_workload(budget_usd_per_hour=1.01, spot_allowed=False)
    from solvers import GreedyEngine  # engine-independent; greedy makes the first choice obvious

    for guard in (True, False):
        res = run_backtest(cfg(strategies=("cloudarb",), budget_guard=guard), pf, GreedyEngine, events=evs)
        assert res.ledgers["cloudarb"].budget_violations == 0
        assert res.engine_stats["budget_guard_fired"] == 0
        assert [h.key for h in res.ledgers["cloudarb"].holdings["w"]] == [alt.key]


def test_no_savings_claimed_against_or_by_a_strategy_that_delivered_nothing() -> None:
    # the home cloud has no offer at all: on_demand_home places nothing, costs nothing
    evs = [price(offer("od-x", "on_demand", provider="lambdalabs"), 1.0, 0)]
    rep = build_report(run_backtest(cfg(), one_workload(), events=evs))
    st = rep["strategies"]
    assert st["on_demand_home"]["gpu_hours_delivered"] == 0
    assert st["cloudarb"]["savings_pct_vs"]["on_demand_home"] is None
    assert all(v is None for v in st["on_demand_home"]["savings_pct_vs"].values())
    assert st["cloudarb"]["savings_pct_vs"]["launch_cheapest"] == pytest.approx(0.0)


def test_cost_per_unit_of_work_credits_a_faster_gpu() -> None:
    """An A100 spot instance at $1.2/h does 3x an L4's work: dearer per GPU-hour than the home L4 on demand at
    $1/h, cheaper per throughput-hour (the unit the engine prices), and the report says both."""
    a100 = offer("a100", gpu="A100-80GB")
    evs = [price(OD, 1.0, 0), price(a100, 1.2, 0)]
    pf = one_workload(gpu_throughput={"L4": 1.0, "A100-80GB": 3.0})
    rep = build_report(run_backtest(cfg(), pf, events=evs))
    ours, home = rep["strategies"]["cloudarb"], rep["strategies"]["on_demand_home"]
    assert ours["total_cost_usd"] == pytest.approx(4.8) and ours["throughput_hours_delivered"] == pytest.approx(12.0)
    assert ours["cost_per_delivered_gpu_hour"] == pytest.approx(1.2)
    assert ours["cost_per_throughput_hour"] == pytest.approx(0.4)
    assert home["cost_per_throughput_hour"] == pytest.approx(1.0)
    assert ours["savings_pct_vs"]["on_demand_home"] == pytest.approx(-20.0)
    assert ours["savings_pct_vs_per_throughput_hour"]["on_demand_home"] == pytest.approx(60.0)

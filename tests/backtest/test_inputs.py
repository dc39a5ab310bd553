"""Portfolio files, trace loading (direction as a parameter) and the trace -> offer mapping."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backtest import load_portfolio, parse_portfolio
from backtest.traces import Trace, load_traces, overlay_events, pick_trace, resample
from tests.backtest.conftest import offer

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"


@pytest.mark.parametrize("name", ["training-lab.yaml", "inference-fleet.yaml"])
def test_example_portfolios_load(name: str) -> None:
    pf = load_portfolio(ROOT / "examples" / "portfolios" / name)
    assert len(pf.workloads) >= 3
    assert all(w.spec.home_provider for w in pf.workloads)


def test_portfolio_fields() -> None:
    pf = parse_portfolio({"name": "p", "risk_tolerance": "low", "markets": {"regions": ["r1"]}, "workloads": [
        {"workload_id": "a", "gpu_throughput": {"L4": 1}, "min_gpus": 1, "max_gpus": 2, "budget_usd_per_hour": 3,
         "spot_allowed": False, "start": "+1d", "end": "2025-01-05T00:00:00Z"},
        {"workload_id": "b", "gpu_throughput": {"L4": 1}, "min_gpus": 1, "max_gpus": 2, "budget_usd_per_hour": 3,
         "risk_tolerance": "medium"},
        {"workload_id": "c", "gpu_throughput": {"L4": 1}, "min_gpus": 1, "max_gpus": 2, "budget_usd_per_hour": 3,
         "risk_tolerance": "low"}]})
    a, b, c = pf.workloads
    assert a.spec.max_spot_share == 0.0 and b.spec.max_spot_share == 0.5 and c.spec.max_spot_share == 0.25
    assert c.spec.risk_averse and not b.spec.risk_averse   # a low risk tolerance plans on the p90 forecast
    assert pf.risk_lambda == 2.0
    assert pf.in_market("gcp", "r1") and not pf.in_market("gcp", "r2")
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    assert a.window(t0, t0 + timedelta(days=10)) == (t0 + timedelta(days=1), datetime(2025, 1, 5, tzinfo=UTC))
    assert b.window(t0, t0 + timedelta(days=10)) == (t0, t0 + timedelta(days=10))


def test_portfolio_json_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"workloads": [{"workload_id": "a", "gpu_throughput": {"L4": 1}, "min_gpus": 1,
                                            "max_gpus": 1, "budget_usd_per_hour": 1}]}))
    assert load_portfolio(p).name == "p"
    with pytest.raises(ValueError):
        parse_portfolio({"workloads": []})
    with pytest.raises(ValueError):
        parse_portfolio({"workloads": [{"workload_id": "a", "gpu_throughput": {"NOPE": 1}, "min_gpus": 1,
                                        "max_gpus": 1, "budget_usd_per_hour": 1}]})
    with pytest.raises(ValueError):
        parse_portfolio({"workloads": [{"workload_id": "a", "gpu_throughput": {"L4": 1}, "min_gpus": 1,
                                        "max_gpus": 1, "budget_usd_per_hour": 1, "start": "2025-01-01"}]})


def test_trace_direction_is_a_parameter() -> None:
    ones = load_traces(SAMPLE / "spot-traces", unavailable_value=1)
    zeros = load_traces(SAMPLE / "spot-traces", unavailable_value=0)
    assert ones and [t.name for t in ones] == [t.name for t in zeros]
    for a, b in zip(ones, zeros, strict=True):
        assert all(x != y for x, y in zip(a.unavailable, b.unavailable, strict=True))
    gpu = [t for t in ones if t.gpu]
    assert gpu and all(t.provider == "aws" for t in gpu)


def test_resample_any_outage_rule() -> None:
    t = Trace("availability/s/z_v100_1", "availability", "aws", True, 1, 600.0,
              (False, False, True, False, False, False, False, False, False, False, False, False))
    assert resample(t, 600) == [(0.0, False), (1200.0, True), (1800.0, False)]
    assert resample(t, 3600) == [(0.0, True), (3600.0, False)]


def test_mapping_prefers_gpu_then_provider_and_is_stable() -> None:
    cpu_gcp = Trace("preemption/gcp-x/z_c3-88", "preemption", "gcp", False, 1, 30.0, (False, True))
    gpu_aws = Trace("availability/aws-x/z_v100_1", "availability", "aws", True, 1, 30.0, (False, True))
    gpu_aws8 = Trace("availability/aws-x/z_v100_8", "availability", "aws", True, 8, 30.0, (False, True))
    o1 = offer("g2", gpu="L4")
    o8 = offer("a3-8g", gpu="H100-80GB", gpus=8)
    assert pick_trace([cpu_gcp, gpu_aws, gpu_aws8], o1) is gpu_aws
    assert pick_trace([cpu_gcp, gpu_aws, gpu_aws8], o8) is gpu_aws8
    assert pick_trace([cpu_gcp], o1) is cpu_gcp
    assert pick_trace([], o1) is None


def test_overlay_is_cyclic_from_the_window_start() -> None:
    tr = Trace("preemption/aws-x/z_v100_1", "preemption", "aws", True, 1, 3600.0, (False, True))
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    evs, mapping = overlay_events([offer("s")], [tr], t0, t0 + timedelta(hours=4), resolution_s=3600)
    got = [(type(e).__name__, getattr(e, "available", None), (e.observed_at - t0).total_seconds() / 3600)
           for e in evs]
    assert mapping == {offer("s").key: tr.name}
    assert got == [("CapacityObserved", False, 1.0), ("InterruptionObserved", None, 1.0),
                   ("CapacityObserved", True, 2.0), ("CapacityObserved", False, 3.0),
                   ("InterruptionObserved", None, 3.0)]

"""End to end on the trimmed real data (data/sample): both example portfolios, the CLI, report files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backtest import BacktestConfig, build_report, load_portfolio, run_backtest
from cloudarb.cli import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample"
START, END = datetime(2025, 5, 1, tzinfo=UTC), datetime(2025, 5, 11, tzinfo=UTC)


@pytest.mark.parametrize("name", ["training-lab.yaml", "inference-fleet.yaml"])
def test_example_portfolio_on_sample_has_no_budget_violations(name: str) -> None:
    pf = load_portfolio(ROOT / "examples" / "portfolios" / name)
    r = run_backtest(BacktestConfig(data_dir=SAMPLE, start=START, end=END), pf)
    rep = build_report(r)
    ours = rep["strategies"]["cloudarb"]
    assert ours["budget_violations"] == 0
    assert ours["placements_on_lost_capacity"] == 0
    assert ours["gpu_hours_delivered"] > 0
    assert rep["events"]["trace_overlay"] > 0
    for s in rep["strategies"].values():
        assert s["gpu_hours_requested"] == pytest.approx(ours["gpu_hours_requested"])


def test_cli_writes_report_and_prints_headline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc = main(["backtest", "--data", str(SAMPLE), "--portfolio", str(ROOT / "examples/portfolios/inference-fleet.yaml"),
               "--from", START.isoformat(), "--to", END.isoformat(), "--out", str(out), "-q"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "cloudarb" in printed and "on_demand_home" in printed
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["strategies"]) >= {"cloudarb", "on_demand_home", "launch_cheapest", "greedy_spot"}
    page = (out / "report.html").read_text()
    assert "<svg" in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def test_cli_rejects_bad_inputs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("workloads: []\n")
    assert main(["backtest", "--data", str(SAMPLE), "--portfolio", str(bad), "-q"]) == 2
    assert main(["backtest", "--data", str(tmp_path / "nope"), "--portfolio", str(bad), "-q"]) == 2


def test_same_input_same_report() -> None:
    pf = load_portfolio(ROOT / "examples" / "portfolios" / "training-lab.yaml")
    cfg = BacktestConfig(data_dir=SAMPLE, start=START, end=datetime(2025, 5, 4, tzinfo=UTC))
    reps = [build_report(run_backtest(cfg, pf)) for _ in range(2)]
    for rep in reps:
        rep.pop("timing")
    assert json.dumps(reps[0], sort_keys=True) == json.dumps(reps[1], sort_keys=True)

"""Benchmark of the back-tester (not a timed test): `.venv/bin/python tests/benchmarks/bench_backtest.py [--quick]`.

Runs both example portfolios (examples/portfolios) on ../shared/data:
  * "one_year": 2024-11-08 -> 2025-11-08, i.e. the last year of the GCP history (to 2025-06) plus the
    whole neocloud tracker (2025-10-19 -> 2025-11-08), with and without the spot-trace overlay;
  * "one_year_traces_reversed": the same year with the trace direction reversed (0 = no capacity), a
    sensitivity check of that assumption (skipped with --quick);
  * "full": the whole data (2022-02 -> 2025-11), with the overlay (skipped with --quick).
Times each run, writes the reports to tests/benchmarks/out/<portfolio>-<run>/ (gitignored) and merges
headline numbers into tests/benchmarks/results.json under "backtest" (other keys are kept).

`--forecast-evaluation`: instead, the forecasts judged and the decisions with forecasts on versus
`naive_forecasts` (issue 22): both portfolios on the year, and examples/portfolios/aws-fleet.yaml on each
AWS spot-price dataset's span alone (aws-spot-daily 2024-01-01 -> 2025-06-30, aws-spot-events-euwest1
2021-07-30 -> 2022-04-01); merged into results.json under "forecast_evaluation".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backtest import OURS, BacktestConfig, headline, load_portfolio, run_backtest, write_report  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results.json"
OUT = Path(__file__).resolve().parent / "out"
PORTFOLIOS = ("training-lab", "inference-fleet")
YEAR = (datetime(2024, 11, 8, tzinfo=UTC), datetime(2025, 11, 8, tzinfo=UTC))


def _summary(rep: dict, wall_s: float) -> dict:
    keep = ("total_cost_usd", "cost_per_delivered_gpu_hour", "cost_per_throughput_hour", "gpu_hours_delivered",
            "gpu_hours_requested", "interruptions", "migrations", "budget_violations", "savings_pct_vs",
            "savings_pct_vs_per_throughput_hour", "quota_violations")
    spread = ("topology", "max_providers_at_once", "max_regions_at_once", "max_gpu_models_at_once",
              "quota_violations")
    return {"wall_s": round(wall_s, 2), "cpu_s": rep["timing"]["cpu_s"], "time_split_s": rep["timing"]["split_s"],
            "window": rep["window"], "events": rep["events"], "engine": rep["engine"],
            "forecast_error": rep["forecast_error"],
            "strategies": {n: {**{k: s[k] for k in keep},
                               "per_workload": {w: {k: d[k] for k in spread} for w, d in s["per_workload"].items()}}
                           for n, s in rep["strategies"].items()}}


FE_RUNS: tuple[tuple[str, str, dict], ...] = (
    ("training-lab", "one_year", {"start": YEAR[0], "end": YEAR[1]}),
    ("inference-fleet", "one_year", {"start": YEAR[0], "end": YEAR[1]}),
    ("aws-fleet", "aws-spot-daily", {"start": datetime(2024, 1, 1, tzinfo=UTC),
                                     "end": datetime(2025, 6, 30, tzinfo=UTC), "datasets": ["aws-spot-daily"]}),
    ("aws-fleet", "aws-spot-events-euwest1", {"start": datetime(2021, 7, 30, tzinfo=UTC),
                                              "end": datetime(2022, 4, 1, tzinfo=UTC),
                                              "datasets": ["aws-spot-events-euwest1"]}),
)
DECISION_KEYS = ("total_cost_usd", "cost_per_delivered_gpu_hour", "cost_per_throughput_hour", "delivered_share",
                 "interruptions", "migrations", "budget_violations")


def _group_line(d: dict) -> str:
    """One group's scores on one line: per horizon n, MAE ratio model/naive (forecast in force; fresh), risk
    log-loss ratio vs the base rate (n, events), and the champions at the end."""
    cells = [f"{d['offers']} offers"]
    for h, c in d["price"].items():
        if c.get("n"):
            cells.append(f"{h} n={c['n']} ratio {c['ratio']} (fresh {c['fresh'].get('ratio', '-')}, "
                         f"n={c['fresh']['n']})")
    r = d["risk_1h"]
    if r.get("n"):
        cells.append(f"risk n={r['n']} events={r['events']} log-loss ratio {r['logloss_ratio']}")
    cells.append("champions " + " / ".join(d["champion"].values()))
    return "; ".join(cells)


def _fe_summary(rep: dict, wall_s: float) -> dict:
    fe = rep["forecast_evaluation"]
    return {"wall_s": round(wall_s, 2), "cpu_s": rep["timing"]["cpu_s"], "window": rep["window"],
            "overall": {"price": fe["overall"]["price"], "risk_1h": fe["overall"]["risk_1h"]},
            "reliability": fe["overall"]["reliability"], "goals": fe["goals"], "by_dataset": fe["by_dataset"],
            "groups": {g: _group_line(d) for g, d in fe["groups"].items()},
            "price_sources": {k: v for k, v in rep["price_sources"].items() if k != "per_offer"},
            "decisions": {n: {k: rep["strategies"][n][k] for k in DECISION_KEYS}
                          for n in (OURS, "greedy_spot") if n in rep["strategies"]}}


def forecast_evaluation(data: Path) -> int:
    out: dict = {"data": str(data), "runs": {}}
    for pname, rname, kw in FE_RUNS:
        pf = load_portfolio(ROOT / "examples" / "portfolios" / f"{pname}.yaml")
        run: dict = {}
        for mode, naive in (("forecasts", False), ("naive_forecasts", True)):
            cfg = BacktestConfig(data_dir=data, naive_forecasts=naive, **kw)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            res = run_backtest(cfg, pf)
            wall = time.perf_counter() - t0
            rep = write_report(res, OUT / f"fe-{pname}-{rname}-{mode}")
            print(headline(rep), flush=True)
            print(flush=True)
            run[mode] = _fe_summary(rep, wall)
        f, n = run["forecasts"]["decisions"].get(OURS), run["naive_forecasts"]["decisions"].get(OURS)
        if f and n:
            run["forecasts_vs_naive"] = {k: [f[k], n[k]] for k in DECISION_KEYS}
        run["naive_forecasts"].pop("groups")   # the evaluation judges the same models either way: kept once
        out["runs"][f"{pname}/{rname}"] = run
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}   # re-read: others write other keys
    doc["forecast_evaluation"] = out
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {RESULTS} (key 'forecast_evaluation') and reports under {OUT}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one-year runs only")
    ap.add_argument("--forecast-evaluation", action="store_true",
                    help="the forecast evaluation runs (forecasts on vs naive) into 'forecast_evaluation'")
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    if not (args.data / "gcp-pricing-history").is_dir():
        print(f"skipped: {args.data} not found (the back-test benchmark needs ../shared/data)")
        return 0
    if args.forecast_evaluation:
        return forecast_evaluation(args.data)
    runs: list[tuple[str, dict]] = [("one_year", {"start": YEAR[0], "end": YEAR[1]}),
                                    ("one_year_no_traces", {"start": YEAR[0], "end": YEAR[1], "traces": False})]
    if not args.quick:
        runs.append(("one_year_traces_reversed", {"start": YEAR[0], "end": YEAR[1], "trace_unavailable_value": 0}))
        runs.append(("full", {}))
    out: dict = {"data": str(args.data), "runs": {}}
    for pname in PORTFOLIOS:
        pf = load_portfolio(ROOT / "examples" / "portfolios" / f"{pname}.yaml")
        for rname, kw in runs:
            cfg = BacktestConfig(data_dir=args.data, **kw)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            res = run_backtest(cfg, pf)
            wall = time.perf_counter() - t0
            rep = write_report(res, OUT / f"{pname}-{rname}")
            print(headline(rep), flush=True)
            print(flush=True)
            out["runs"][f"{pname}/{rname}"] = _summary(rep, wall)
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    doc["backtest"] = out
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {RESULTS} (key 'backtest') and reports under {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The forecaster's cost per event, in-process, on real recorded events (its own command, not a test):

    .venv/bin/python tests/benchmarks/bench_forecast.py [--data ../shared/data] [--batch 5000] [--profile out.prof]

Every dataset under `--data` (connectors.replay.replay_events, event-time order) is folded through
streams.core.state.apply_event as the market stage does, and each new state is kept with its offer key and event
time. Then only the forecaster is timed over that sequence (a fresh forecaster each repeat, the best of
`--repeat` reported), in microseconds per event, amortised over every event that changed a state:

- `forecast_us_per_event`: as the market stage calls it, `observe_many` per batch of `--batch` consecutive
  events (the offer's last state in the batch; the market stage folds a batch per offer the same way);
- `forecast_us_per_event_per_call`: as the back-tester calls it, `observe` per event (the forecaster then
  flushes by itself every BUCKET_S of event time; the recorded data is sparse in time, ~5,000 flushes of a
  few offers each, so this is the costlier way).

Also reported: forecasts made and predictions scored per event (forecasts, and samples of forecasts still in
force), and the forecaster's own summary (published vs naive errors, weighted by time in force; `n` in
horizons) as a check that the cheaper path still forecasts. Results go to tests/benchmarks/results.json
under "streams" (`forecast_us_per_event`, `forecast_bench_*`; other keys are left alone). Skips itself, with a
message, where the data is missing.

`--evaluate [early|late]`: instead, the back-test's forecast evaluation alone (backtest.sim.Simulation without
strategies: the forecaster and backtest/evaluation.py on the replayed market, no engine) on the spans of
`SPANS`, each cut in an early part (for tuning) and a later part (for reporting; the forecaster learns from
everything before it): 24 h and 1 h price MAE model/naive for the forecast in force (as the engine uses it)
and fresh, and the groups worse than naive. Results under "forecast_in_force" (key per part).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from connectors.replay import DATASETS, replay_events  # noqa: E402
from schemas.offers import KNOWN_PROVIDERS  # noqa: E402
from streams.core import state  # noqa: E402
from streams.core.forecast import Forecaster  # noqa: E402

RESULTS = ROOT / "tests" / "benchmarks" / "results.json"
DATA = ROOT.parent / "shared" / "data"
Update = tuple[str, state.State, float]


def recorded_updates(data: Path) -> list[Update]:
    """(offer key, new state, event time) of every recorded event that changed its offer's state."""
    states: dict[str, state.State] = {}
    out: list[Update] = []
    for e in replay_events(data, sorted(DATASETS)):
        if e.offer.provider not in KNOWN_PROVIDERS:   # streams.core.validate rejects these
            continue
        k = e.offer.key
        old = states.get(k)
        new, _ = state.apply_event(old or {}, e)  # type: ignore[arg-type]
        if new is old:
            continue
        states[k] = new
        out.append((k, new, state.event_t(e)))  # type: ignore[arg-type]
    return out


def batches(updates: list[Update], size: int) -> list[list[Update]]:
    """Consecutive batches of `size` events, each offer's last update per batch (as track_batch folds)."""
    return [list({k: (k, s, t) for k, s, t in updates[i:i + size]}.values()) for i in range(0, len(updates), size)]


def run_batched(bs: list[list[Update]]) -> tuple[float, Forecaster]:
    f = Forecaster()
    t0 = time.perf_counter()
    for b in bs:
        f.observe_many(b)
    return time.perf_counter() - t0, f


def run_per_call(updates: list[Update]) -> tuple[float, Forecaster]:
    f = Forecaster()
    obs = f.observe
    t0 = time.perf_counter()
    for k, s, t in updates:
        obs(k, s, t)
    f.flush()
    return time.perf_counter() - t0, f


# (portfolio, datasets (None: the defaults), early part, later part)
SPANS: dict[str, tuple[str, list[str] | None, tuple[str, str], tuple[str, str]]] = {
    "aws-spot-events-euwest1": ("aws-fleet", ["aws-spot-events-euwest1"], ("2021-07-30", "2021-09-01"),
                                ("2021-12-13", "2022-04-01")),
    "aws-spot-daily": ("aws-fleet", ["aws-spot-daily"], ("2024-01-01", "2024-09-01"), ("2024-09-01", "2025-06-30")),
    "inference-fleet": ("inference-fleet", None, ("2024-11-08", "2025-05-08"), ("2025-05-08", "2025-11-08")),
    "training-lab": ("training-lab", None, ("2024-11-08", "2025-05-08"), ("2025-05-08", "2025-11-08")),
    "gpu-price-tracker-2026": ("training-lab", ["gpu-price-tracker-2026"], ("2026-02-11", "2026-04-10"),
                               ("2026-04-10", "2026-05-31")),
}


def evaluate(data: Path, part: str) -> dict[str, Any]:
    """The forecast evaluation of every span's `part` (see the module docstring)."""
    from backtest import BacktestConfig, load_portfolio
    from backtest.sim import Simulation

    out: dict[str, Any] = {}
    for name, (pname, datasets, early, late) in SPANS.items():
        lo, hi = early if part == "early" else late
        pf = load_portfolio(ROOT / "examples" / "portfolios" / f"{pname}.yaml")
        cfg = BacktestConfig(data_dir=data, start=datetime.fromisoformat(lo).replace(tzinfo=UTC),
                             end=datetime.fromisoformat(hi).replace(tzinfo=UTC), datasets=datasets, strategies=())
        t0 = time.perf_counter()
        fe = Simulation(cfg, pf).run().forecast_evaluation
        cell: dict[str, Any] = {"window": [lo, hi], "wall_s": round(time.perf_counter() - t0, 1)}
        for h, c in fe["overall"]["price"].items():
            cell[h] = {"n": c.get("n"), "in_force": c.get("ratio"), "fresh": c.get("fresh", {}).get("ratio")}
        cell["groups_worse_than_naive"] = fe["goals"]["price_groups_worse_than_naive"]
        cell["groups_worse_ratio"] = {h: {g: fe["groups"][g]["price"][h]["ratio"] for g in gs}
                                      for h, gs in cell["groups_worse_than_naive"].items() if gs}
        neo = fe["goals"].get("neocloud_86400s_ratio") or {}
        cell["neocloud_86400s_below_1"] = sorted(g for g, r in neo.items() if r is not None and r < 1)
        cell["neocloud_86400s_above_1"] = sorted(g for g, r in neo.items() if r is not None and r > 1)
        cell["champions"] = {g: "/".join(d["champion"].values()) for g, d in fe["groups"].items()
                             if any(x != "naive" for x in list(d["champion"].values())[:-1])}
        print(name, json.dumps({k: v for k, v in cell.items() if k != "champions"}), flush=True)
        out[name] = cell
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--batch", type=int, default=5000, help="events per market-stage batch")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", type=Path, help="also write a cProfile of one batched run here (pstats format)")
    ap.add_argument("--no-save", action="store_true", help="print only; leave results.json alone")
    ap.add_argument("--evaluate", choices=("early", "late"), help="the forecast evaluation of SPANS instead")
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"skipped: no recorded data at {args.data}")
        return 0
    if args.evaluate:
        res = evaluate(args.data, args.evaluate)
        if not args.no_save:
            data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}   # re-read: others write other keys
            data.setdefault("forecast_in_force", {})[args.evaluate] = {
                **res, "measured_at": datetime.now(UTC).isoformat()}
            RESULTS.write_text(json.dumps(data, indent=2) + "\n")
        return 0
    t0 = time.perf_counter()
    updates = recorded_updates(args.data)
    bs = batches(updates, args.batch)
    load_s = time.perf_counter() - t0
    n = len(updates)
    best, f = min((run_batched(bs) for _ in range(max(1, args.repeat))), key=lambda r: r[0])
    best_call, f_call = min((run_per_call(updates) for _ in range(max(1, args.repeat))), key=lambda r: r[0])
    if args.profile:
        import cProfile

        cProfile.runctx("run_batched(bs)", globals(), {"bs": bs}, str(args.profile))
    out: dict[str, Any] = {
        "forecast_us_per_event": round(best / n * 1e6, 2),
        "forecast_us_per_event_per_call": round(best_call / n * 1e6, 2),
        "forecast_bench_events": n,
        "forecast_bench_batch": args.batch,
        "forecast_bench_forecasts_per_event": round(f.made / n, 3),
        "forecast_bench_scored_per_event": round(f.scored / n, 3),
        "forecast_bench_summary": f.summary(),
        "forecast_bench_summary_per_call": f_call.summary(),
        "forecast_bench_measured_at": datetime.now(UTC).isoformat(),
    }
    print(json.dumps(out, indent=1))
    print(f"(loading and folding {n} events took {load_s:.1f} s)")
    if not args.no_save:
        data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}   # re-read: others write other keys
        data["streams"] = {**data.get("streams", {}), **out}
        RESULTS.write_text(json.dumps(data, indent=2) + "\n")   # (the file's key order kept: a small diff)
    return 0


if __name__ == "__main__":
    sys.exit(main())

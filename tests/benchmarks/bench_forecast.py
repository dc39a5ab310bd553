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

Also reported: forecasts made and predictions scored per event, and the forecaster's own summary (published
vs naive errors) as a check that the cheaper path still forecasts. Results go to tests/benchmarks/results.json
under "streams" (`forecast_us_per_event`, `forecast_bench_*`; other keys are left alone). Skips itself, with a
message, where the data is missing.
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--batch", type=int, default=5000, help="events per market-stage batch")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", type=Path, help="also write a cProfile of one batched run here (pstats format)")
    ap.add_argument("--no-save", action="store_true", help="print only; leave results.json alone")
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"skipped: no recorded data at {args.data}")
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

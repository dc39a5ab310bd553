"""Run the benchmarks one after another (`make bench`, or `make bench ARGS="--only streams --quick"`).

Each benchmark is its own script in this folder and merges its numbers into results.json under its own
key; this runner only sequences them (never two at once: they share two cores and the local broker's
ports) and reports which failed. `--quick` is passed to the scripts that have a quick mode. The
benchmarks that need ../shared/data (solvers, backtest) skip themselves, with a message, where it is missing.

    .venv/bin/python tests/benchmarks/run_all.py --only solvers,streams
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (script, has a --quick mode)
BENCHMARKS: dict[str, tuple[str, bool]] = {
    "solvers": ("bench_solvers.py", True),
    "lp-deferral": ("bench_lp_deferral.py", False),
    "streams": ("bench_streams.py", False),
    "forecast": ("bench_forecast.py", False),
    "connectors": ("bench_connectors.py", False),
    "api": ("bench_api.py", False),
    "api-limits": ("bench_api_limits.py", False),
    "backtest": ("bench_backtest.py", True),
    "k8s-replay": ("bench_k8s_replay.py", True),
}


def command(name: str, quick: bool) -> list[str]:
    """The command that runs one benchmark.

    >>> command("solvers", quick=True)[-2:] == [str(HERE / "bench_solvers.py"), "--quick"]
    True
    >>> command("streams", quick=True)[-1] == str(HERE / "bench_streams.py")
    True
    """
    script, has_quick = BENCHMARKS[name]
    return [sys.executable, str(HERE / script)] + (["--quick"] if quick and has_quick else [])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(BENCHMARKS),
                    help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    ap.add_argument("--quick", action="store_true", help="quick mode where a benchmark has one")
    args = ap.parse_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in only if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; known: {list(BENCHMARKS)}")
    failed: list[str] = []
    for name in only:
        cmd = command(name, args.quick)
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.monotonic()
        rc = subprocess.call(cmd, cwd=HERE.parents[1])
        print(f"== {name}: exit {rc} after {time.monotonic() - t0:.0f} s", flush=True)
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"results in {HERE / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

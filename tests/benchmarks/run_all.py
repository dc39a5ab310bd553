"""Run the benchmarks one after another (`make bench`, or `make bench ARGS="--only streams --quick"`).

Each benchmark is its own script in this folder and merges its numbers into results.json under its own
key; this runner only sequences them (never two at once: they share two cores and the local broker's
ports) and reports which failed. `--quick` is passed to the scripts that have a quick mode.
Benchmarks that need ../shared/data (solvers, backtest) are skipped, with a message, where it is missing.

    .venv/bin/python tests/benchmarks/run_all.py --only solvers,streams
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED_DATA = HERE.parents[1].parent / "shared" / "data"

# name -> (script, has a --quick mode, needs ../shared/data)
BENCHMARKS: dict[str, tuple[str, bool, bool]] = {
    "solvers": ("bench_solvers.py", True, True),
    "streams": ("bench_streams.py", False, False),
    "connectors": ("bench_connectors.py", False, False),
    "api": ("bench_api.py", False, False),
    "backtest": ("bench_backtest.py", True, True),
}


def commands(only: list[str], quick: bool, data_present: bool) -> list[tuple[str, list[str] | None]]:
    """The command per selected benchmark, or None where it must be skipped (no ../shared/data).

    >>> commands(["solvers"], quick=True, data_present=False)
    [('solvers', None)]
    >>> commands(["solvers"], quick=True, data_present=True)[0][1][-2:] == [str(HERE / "bench_solvers.py"), "--quick"]
    True
    """
    out: list[tuple[str, list[str] | None]] = []
    for name in only:
        script, has_quick, needs_data = BENCHMARKS[name]
        if needs_data and not data_present:
            out.append((name, None))
            continue
        cmd = [sys.executable, str(HERE / script)]
        if quick and has_quick:
            cmd.append("--quick")
        out.append((name, cmd))
    return out


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
    for name, cmd in commands(only, args.quick, SHARED_DATA.is_dir()):
        if cmd is None:
            print(f"== {name}: skipped, it needs {SHARED_DATA}", flush=True)
            continue
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

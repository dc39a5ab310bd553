"""The Makefile's commands point at files that exist, and the benchmark runner knows every benchmark.

`make bench` once called a runner that was never committed; nothing ran it, so nothing noticed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "tests" / "benchmarks"


def test_every_path_a_make_target_runs_exists() -> None:
    text = (ROOT / "Makefile").read_text()
    paths = set(re.findall(r"(?<![\w./-])((?:scripts|tests)/[\w./-]+\.(?:py|sh))", text))
    assert paths, "the Makefile's recipes name no scripts: the pattern is stale"
    assert [p for p in sorted(paths) if not (ROOT / p).is_file()] == []


def test_the_benchmark_runner_covers_every_benchmark_script() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import run_all
    finally:
        sys.path.remove(str(BENCH))
    scripts = {script for script, _ in run_all.BENCHMARKS.values()}
    assert scripts == {p.name for p in BENCH.glob("bench_*.py")}


def test_the_benchmark_runner_rejects_an_unknown_name() -> None:
    done = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--only", "nope"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown benchmark(s) ['nope']" in done.stderr

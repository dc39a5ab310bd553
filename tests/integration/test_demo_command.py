"""The README's run command, end to end (against the session's broker to save a broker start)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_cloudarb_demo_prints_a_matching_summary(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "CLOUDARB_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "cloudarb", "demo", "--timeout-s", "240"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    summary = next(line for line in out.splitlines() if line.startswith("SUMMARY"))
    fields = dict(kv.split("=") for kv in summary.split()[1:-1])
    assert fields["prices_rows"] == fields["prices_published"] and int(fields["decisions"]) >= 1
    assert summary.endswith("OK")
    # the worker it started is gone
    assert "cloudarb worker" not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout

"""Every long-running command serves its metrics when CLOUDARB_METRICS_PORT is set (cloudarb.metrics): the
worker, the sink and the connectors, each scraped over 127.0.0.1 (the default address)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from embedded.kafka import free_port
from tests.conftest import ROOT, unique
from tests.integration.helpers import stop

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXPECTED = {
    "worker": ["cloudarb_worker_events_in_total", "cloudarb_worker_dead_lettered_total",
               "cloudarb_worker_decisions_total", "cloudarb_worker_solve_seconds_bucket", "cloudarb_consumer_lag",
               "cloudarb_forecast_mae", "process_cpu_seconds_total"],
    "sink": ["cloudarb_sink_consumed_total", "cloudarb_sink_written_total", "cloudarb_sink_dead_lettered_total",
             "cloudarb_sink_write_failures_total", "cloudarb_sink_stalled", "cloudarb_consumer_lag"],
    "connectors": ['cloudarb_connector_source_polls_total{provider="vastai"',
                   "cloudarb_connector_source_failures_total", "cloudarb_connector_circuit_state"],
}
COMMANDS = {"worker": ["worker", "--engine", "greedy"], "sink": ["sink"],
            "connectors": ["connectors", "run", "--provider", "vastai"]}


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def test_worker_sink_and_connectors_serve_metrics(kafka_bootstrap: str, tmp_path: Path) -> None:
    procs: dict[str, tuple[subprocess.Popen[bytes], int, Path]] = {}
    try:
        for name, args in COMMANDS.items():
            port = free_port()
            log = tmp_path / f"{name}.log"
            env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "CLOUDARB_APP_ID": unique("metrics"),
                   "CLOUDARB_HOME": str(tmp_path / name), "PYTHONUNBUFFERED": "1",
                   "CLOUDARB_METRICS_PORT": str(port),
                   # Vast.ai's public API replaced by a closed local port: its polls fail, no traffic leaves
                   "VAST_API_URL": f"http://127.0.0.1:{free_port()}/bundles/"}
            env.pop("CLOUDARB_METRICS_ADDR", None)
            with open(log, "ab") as out:   # the child keeps its own copy of the descriptor
                p = subprocess.Popen([sys.executable, "-m", "cloudarb", *args], cwd=ROOT, env=env,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            procs[name] = (p, port, log)
        for name, (p, port, log) in procs.items():
            deadline, body, missing = time.monotonic() + 90, "", EXPECTED[name]
            while time.monotonic() < deadline:
                assert p.poll() is None, f"{name} exited {p.returncode}:\n{log.read_text()[-3000:]}"
                try:
                    body = _scrape(port)
                except OSError:
                    body = ""
                missing = [m for m in EXPECTED[name] if m not in body]
                if not missing:
                    break
                time.sleep(0.5)
            assert not missing, f"{name}: {missing} not in /metrics:\n{body[-2000:]}\n{log.read_text()[-2000:]}"
    finally:
        for p, _, _ in procs.values():
            stop(p)
    for name, (p, port, _) in procs.items():
        assert p.returncode is not None, name
        with pytest.raises(OSError):   # stopped with the process
            _scrape(port)

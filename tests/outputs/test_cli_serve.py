"""SLOW (subprocesses, ~30 s): `cloudarb serve` end to end in a subprocess (chdb, real local broker):
ready, a workload POSTed through the API reaches Kafka and comes back through the sink into ClickHouse;
SIGTERM stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import unique

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ADMIN = "admin-cli-key-0123456789abcdef0123456789"


@pytest.mark.slow
def test_serve(kafka_bootstrap: str, tmp_path: Path) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "CLOUDARB_HOME": str(tmp_path),
           "CLOUDARB_ADMIN_KEY": ADMIN, "CLICKHOUSE_DB": "serve_test", "PYTHONUNBUFFERED": "1",
           "CLOUDARB_APP_ID": unique("serve")}
    env.pop("CLICKHOUSE_URL", None)
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    p = subprocess.Popen([sys.executable, "-m", "cloudarb", "serve", "--port", str(port)], cwd=ROOT, env=env,
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert p.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.3)
        h = {"X-API-Key": ADMIN}
        wid = unique("cli-wl")
        # this goes to the shared workloads topic, which other tests' workers read from the beginning: make it
        # a workload no engine can place (a GPU absent from the sample data, a budget no offer meets)
        spec = {"workload_id": wid, "gpu_throughput": {"RTX-PRO-6000": 1.0}, "min_gpus": 1, "max_gpus": 1,
                "budget_usd_per_hour": 0.001}
        assert httpx.post(f"{base}/v1/workloads", json=spec, headers=h, timeout=15).status_code == 202
        found = False
        while time.monotonic() < deadline + 30 and not found:
            items = httpx.get(f"{base}/v1/workloads", params={"limit": 1000}, headers=h, timeout=5).json()["items"]
            found = any(i["workload_id"] == wid for i in items)
            time.sleep(0.3)
        assert found, "the submitted workload did not come back through Kafka and the sink"
        assert httpx.delete(f"{base}/v1/workloads/{wid}", headers=h, timeout=15).status_code == 202
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        assert 'cloudarb_pipeline{stat="sink_written"}' in metrics
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        rc = p.wait(40)
        log.close()
    assert rc == 0, (tmp_path / "serve.log").read_text()[-2000:]
    assert ADMIN not in (tmp_path / "serve.log").read_text()


def test_cli_commands_parse() -> None:
    from cloudarb.cli import build_parser

    p = build_parser()
    for argv in (["api", "--port", "0"], ["serve", "--no-sink", "--execute", "aws", "--max-instances", "2"],
                 ["alerts", "run", "--price-change-pct", "5", "--idle-exit-s", "1"],
                 ["executors", "run", "--max-usd-per-hour", "10"], ["apikey", "create", "--role", "viewer"]):
        assert callable(p.parse_args(argv).func), argv
    with pytest.raises(SystemExit):
        p.parse_args(["apikey", "create", "--role", "root"])


@pytest.mark.slow
def test_alerts_and_executors_commands_run_and_exit(kafka_bootstrap: str, tmp_path: Path) -> None:
    procs = []
    for name, argv in (("executors", ["executors", "run", "--idle-exit-s", "3"]),
                       ("alerts", ["alerts", "run", "--idle-exit-s", "3"])):
        home = tmp_path / name
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "CLOUDARB_HOME": str(home),
               "CLOUDARB_APP_ID": unique(name)}
        env.pop("CLICKHOUSE_URL", None)
        procs.append((name, subprocess.Popen([sys.executable, "-m", "cloudarb", *argv], cwd=ROOT, env=env,
                                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                             start_new_session=True)))
    for name, p in procs:
        try:
            out, _ = p.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
        assert p.returncode == 0, (name, out.decode()[-2000:])
        assert b"running" in out

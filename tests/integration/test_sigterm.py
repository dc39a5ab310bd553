"""SIGTERM (systemd, Kubernetes, `docker stop`) stops every long-running command like Ctrl-C: it exits
soon and leaves no process behind (the broker, the worker's decider, the demo's worker).

Each command runs as a subprocess with a unique marker in its environment; every process it starts
inherits it, so after the exit a scan of /proc finds whatever it left behind, even a process that put
itself in another session (the broker, the demo's worker) or was re-parented to init.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from embedded.children import die_with_parent
from embedded.kafka import free_port
from tests.conftest import ROOT, unique

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]

EXIT_BOUND_S = 30.0
MARKER = "CLOUDARB_SIGTERM_TEST"


@dataclass
class Cli:
    """A `cloudarb` subprocess, its output collected by a thread."""

    proc: subprocess.Popen[str]
    args: list[str]
    marker: str
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "".join(self.lines[-80:])

    def wait_for(self, text: str, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} from `cloudarb` (exit {self.proc.poll()}):\n{self.output()}")

    def processes(self) -> dict[int, str]:
        """pid -> command line of every live process carrying this run's marker (the CLI and its tree)."""
        found: dict[int, str] = {}
        needle = f"{MARKER}={self.marker}".encode()
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/environ", "rb") as f:
                    if needle not in f.read().split(b"\0"):
                        continue
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    found[int(d)] = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # gone meanwhile, or not ours
                continue
        return found

    def kill_all(self) -> None:
        for pid in self.processes():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[list[Cli]]:
    """Started commands; whatever is still alive at the end is killed (so a failure leaks nothing)."""
    started: list[Cli] = []
    yield started
    for c in started:
        c.kill_all()


def launch(started: list[Cli], args: list[str], home: Path, **env: str) -> Cli:
    marker = uuid.uuid4().hex
    full_env = {**os.environ, "CLOUDARB_HOME": str(home), "PYTHONUNBUFFERED": "1", MARKER: marker, **env}
    if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
        full_env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    proc = subprocess.Popen([sys.executable, "-m", "cloudarb", *args], cwd=ROOT, env=full_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    c = Cli(proc, args, marker)
    started.append(c)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            c.lines.append(line)

    threading.Thread(target=read, daemon=True, name="cli-output").start()
    return c


def terminate(c: Cli, sig: int = signal.SIGTERM) -> float:
    """Send `sig` to the CLI process only; assert it exits within the bound and leaves no process alive.
    Returns the seconds it took to exit."""
    assert c.proc.poll() is None, f"exited before the signal:\n{c.output()}"
    t0 = time.monotonic()
    os.kill(c.proc.pid, sig)
    try:
        rc = c.proc.wait(EXIT_BOUND_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {EXIT_BOUND_S:.0f} s after the signal:\n{c.output()}") from None
    took = time.monotonic() - t0
    if sig == signal.SIGTERM:
        # 0 or 143 (128 + SIGTERM): it handled the signal; -15 would be the default action, no clean-up
        assert rc in (0, 128 + signal.SIGTERM), f"exit code {rc}:\n{c.output()}"
    left: dict[int, str] = {}
    deadline = time.monotonic() + 3.0  # a child in the middle of exiting
    while time.monotonic() < deadline:
        left = c.processes()
        if not left:
            break
        time.sleep(0.1)
    assert not left, f"left running after the CLI exited: {left}\n{c.output()}"
    print(f"cloudarb {' '.join(c.args)}: exited {took:.1f} s after the signal, code {rc}")
    return took


def test_kafka_start_stops_its_broker_on_sigterm(cli: list[Cli], tmp_path: Path) -> None:
    c = launch(cli, ["kafka", "start", "--port", str(free_port())], tmp_path)
    c.wait_for("Kafka ready at")
    assert any("java" in cmd and "kafka.Kafka" in cmd for cmd in c.processes().values()), c.output()
    terminate(c)


@pytest.mark.skipif(die_with_parent(["x"]) == ["x"], reason="no `setpriv --pdeathsig` here")
def test_the_broker_dies_with_a_killed_cli(cli: list[Cli], tmp_path: Path) -> None:
    """kill -9 runs no clean-up: the broker goes because the kernel sends it SIGTERM (PR_SET_PDEATHSIG)."""
    c = launch(cli, ["kafka", "start", "--port", str(free_port())], tmp_path)
    c.wait_for("Kafka ready at")
    os.kill(c.proc.pid, signal.SIGKILL)
    c.proc.wait(10)
    deadline = time.monotonic() + 20
    while c.processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not c.processes(), c.processes()


def test_worker_stops_itself_and_its_decider_on_sigterm(cli: list[Cli], kafka_bootstrap: str,
                                                        tmp_path: Path) -> None:
    from cloudarb.app import workload_events
    from cloudarb.pipeline import publish_events
    from tests.streams.helpers import offer, price, workload

    app_id = unique("sigterm")
    c = launch(cli, ["worker", "--engine", "greedy", "--loglevel", "info"], tmp_path,
               KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, CLOUDARB_APP_ID=app_id)
    c.wait_for("[^Worker]: Ready")
    tag = app_id.split("-")[-1]
    publish_events(kafka_bootstrap, [price(offer(region=f"sigterm-{tag}"), 0.01)])
    publish_events(kafka_bootstrap, workload_events([workload(f"w-sigterm-{tag}")]))
    c.wait_for("decider process")  # the decision stage's child process is running
    assert any("multiprocessing" in cmd for cmd in c.processes().values()), c.processes()
    terminate(c)


# command, what it prints once running, seconds to wait after that (a command doing its work)
BROKER_COMMANDS = [
    pytest.param(["sink"], "sink running", 0.0, id="sink"),
    pytest.param(["serve", "--port", "0"], "CloudArb outputs:", 0.0, id="serve"),
    pytest.param(["api", "--port", "0"], "CloudArb API at", 0.0, id="api"),
    pytest.param(["executors", "run"], "executors running", 0.0, id="executors"),
    pytest.param(["alerts", "run"], "alerts running", 0.0, id="alerts"),
    pytest.param(["connectors", "run", "--provider", "vastai"], "running 1 connectors", 1.0, id="connectors"),
    pytest.param(["replay", "--speed", "1"], "replaying", 1.0, id="replay"),
    pytest.param(["demo", "--timeout-s", "120"], "replaying", 2.0, id="demo"),
]


@pytest.mark.parametrize(("args", "ready", "settle_s"), BROKER_COMMANDS)
def test_long_running_command_stops_on_sigterm(cli: list[Cli], kafka_bootstrap: str, tmp_path: Path,
                                               args: list[str], ready: str, settle_s: float) -> None:
    # Vast.ai's public API replaced by a closed local port: no traffic leaves the machine
    c = launch(cli, args, tmp_path, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, CLOUDARB_APP_ID=unique("sigterm"),
               VAST_API_URL=f"http://127.0.0.1:{free_port()}/bundles/")
    c.wait_for(ready)
    time.sleep(settle_s)
    if args[0] == "demo":
        assert any("cloudarb worker" in cmd for cmd in c.processes().values()), c.processes()
    terminate(c)


def test_backtest_stops_on_sigterm(cli: list[Cli], tmp_path: Path) -> None:
    c = launch(cli, ["backtest", "--portfolio", str(ROOT / "examples" / "portfolios" / "inference-fleet.yaml"),
                     "--out", str(tmp_path / "out")], tmp_path)
    time.sleep(4.0)  # it prints only at the end (a non-terminal gets no progress bar); on the sample: ~15 s
    terminate(c)

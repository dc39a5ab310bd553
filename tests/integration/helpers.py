from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from embedded.demo import group_position
from tests.conftest import unique


def start_worker(bootstrap: str, app_id: str, log: Path, engine: str = "greedy",
                 loglevel: str = "info", env_extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "CLOUDARB_APP_ID": app_id, "PYTHONUNBUFFERED": "1",
           **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "cloudarb", "worker", "--engine", engine, "--loglevel", loglevel],
                            env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(p: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if p.poll() is None:
        os.killpg(p.pid, sig)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def wait_until(cond: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.5,
               log: Path | None = None, worker: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `cond`; on timeout fail with the worker log's tail (and, with `worker`, its thread stacks)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(poll_s)
    if worker is not None and worker.poll() is None:
        os.kill(worker.pid, signal.SIGUSR1)  # the worker dumps every thread's stack into its log
        time.sleep(1.0)
    tail = ""
    if log is not None and log.exists():
        tail = "\n--- worker log tail (connection noise left out) ---\n" + "\n".join(log_tail(log))
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}{tail}")


NOISE = re.compile(r"^%\d\|\d+\.\d+\|FAIL\||NodeNotReadyError|Connect call failed|Unable to update metadata"
                   r"|Unable connect to node")


def log_tail(log: Path, n: int = 120) -> list[str]:
    """The last `n` lines of a worker log without the repeated connection errors of a broker that is down
    (they would push out what matters), runs of progress lines folded to their first and last."""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if not NOISE.search(ln)]
    out: list[str] = []
    run: list[str] = []
    for ln in [*lines, ""]:
        if " progress " in ln:
            run.append(ln)
            continue
        if run:
            out += run if len(run) <= 2 else [run[0], f"... ({len(run) - 2} progress lines)", run[-1]]
            run = []
        out.append(ln)
    return out[-n - 1:-1]


def caught_up(bootstrap: str, group: str, topics: list[str]) -> bool:
    done, end = group_position(bootstrap, group, topics)
    return done >= end


def read_all(bootstrap: str, topics: Sequence[str], idle_polls: int = 6) -> list[Any]:
    """Every message of `topics` from the beginning (fresh group; error records dropped), in partition order;
    stops after `idle_polls` empty half-second polls in a row."""
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("read"), "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe(list(topics))
    out: list[Any] = []
    idle = 0
    while idle < idle_polls:
        msgs = c.consume(5000, timeout=0.5)
        idle = 0 if msgs else idle + 1
        out += [m for m in msgs if m.error() is None]
    c.close()
    return out


def decided(bootstrap: str, workload_id: str) -> bool:
    """Whether a decision on the decisions topic names the workload."""
    from schemas.topics import DECISIONS

    return any(workload_id in json.loads(m.value())["workload_ids"] for m in read_all(bootstrap, [DECISIONS.name]))


def overtake_after_a_decision(bootstrap: str, app_id: str, tag: str, log: Path) -> Any:
    """Publish a few prices and workload `a-<tag>`, wait for its decision, then register the decision stage's
    transactional id from another producer (as a new owner does when it starts its decider) and publish
    workload `b-<tag>`. Returns that producer (`StepWriter`, open: close it)."""
    from cloudarb.app import workload_events
    from cloudarb.pipeline import publish_events
    from streams.runtime.txout import StepWriter
    from tests.streams.helpers import offer, price, workload

    publish_events(bootstrap, [price(offer(region=f"z-{tag}-{i}"), 1.0 + i / 100) for i in range(6)])
    publish_events(bootstrap, workload_events([workload(f"a-{tag}")]))
    wait_until(lambda: decided(bootstrap, f"a-{tag}"), 180, "the first workload's decision", poll_s=1.0, log=log)
    other = StepWriter(bootstrap, f"{app_id}-decide")
    other.open()
    publish_events(bootstrap, workload_events([workload(f"b-{tag}")]))
    return other

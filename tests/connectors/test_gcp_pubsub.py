"""GCP preemptions through the real Pub/Sub emulator installed on this machine (skipped, with the reason,
where it is missing). The message is a LogEntry as a Cloud Logging sink on compute.instances.preempted
delivers it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.gcp import GcpPreemptionSource
from schemas.events import InterruptionKind, InterruptionObserved
from tests.connectors.conftest import NOW

EMULATOR = Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")
FAST: dict[str, Any] = {"retry_wait_min_s": 0.001, "retry_wait_max_s": 0.01, "rate_per_s": 1000.0}

LOG_ENTRY = {
    "insertId": "-x1b2c3d4e5",
    "logName": "projects/demo-proj/logs/cloudaudit.googleapis.com%2Fsystem_event",
    "protoPayload": {
        "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "authenticationInfo": {"principalEmail": "system@google.com"},
        "methodName": "compute.instances.preempted",
        "requestMetadata": {"callerIp": "0.0.0.0", "callerSuppliedUserAgent": ""},
        "resourceName": "projects/demo-proj/zones/us-central1-a/instances/trainer-7",
        "serviceName": "compute.googleapis.com",
        "status": {"message": "Instance was preempted."},
    },
    "receiveTimestamp": "2025-07-01T11:30:01.552Z",
    "resource": {"labels": {"instance_id": "4455667788", "project_id": "demo-proj", "zone": "us-central1-a"},
                 "type": "gce_instance"},
    "severity": "INFO",
    "timestamp": "2025-07-01T11:30:00.123Z",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def pubsub_emulator() -> Iterator[str]:
    if not EMULATOR.exists():
        pytest.skip(f"Pub/Sub emulator not installed at {EMULATOR}")
    if shutil.which("java") is None:
        pytest.skip("the Pub/Sub emulator needs java on PATH")
    port = _free_port()
    proc = subprocess.Popen([str(EMULATOR), "--host=127.0.0.1", f"--port={port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                pytest.skip("the Pub/Sub emulator exited at start")
            time.sleep(0.3)
        else:
            pytest.skip("the Pub/Sub emulator did not open its port within 60 s")
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)


def test_preemption_from_pubsub_emulator(pubsub_emulator: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator)
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.topic_path("demo-proj", "preemptions")
    sub = subscriber.subscription_path("demo-proj", "cloudarb-preemptions")
    publisher.create_topic(request={"name": topic})
    subscriber.create_subscription(request={"name": sub, "topic": topic})
    other = {**LOG_ENTRY, "insertId": "y", "protoPayload": {**LOG_ENTRY["protoPayload"],
                                                            "methodName": "v1.compute.instances.start"}}
    for data in (json.dumps(LOG_ENTRY).encode(), json.dumps(other).encode(), b"\xff not json"):
        publisher.publish(topic, data).result(30)
    lookups: list[tuple[str, str, str]] = []

    def lookup(project: str, zone: str, instance: str) -> str:
        lookups.append((project, zone, instance))
        return "a2-highgpu-1g"

    env = {"GCP_PREEMPTION_SUBSCRIPTION": sub, "PUBSUB_EMULATOR_HOST": pubsub_emulator}
    src = GcpPreemptionSource(env=env, subscriber=subscriber, instance_lookup=lookup, clock=lambda: NOW,
                              timeout_s=5, **FAST)
    out: list[Any] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(src.stats.rejected.values()) + len(out) < 3:
        out += src.poll()
    assert len(out) == 1, (out, src.stats)
    e = out[0]
    assert isinstance(e, InterruptionObserved) and e.kind == InterruptionKind.PREEMPTED
    assert e.offer.key == "gcp|us-central1|us-central1-a|a2-highgpu-1g|A100-40GB|1|spot"
    assert e.instance_id == "4455667788"
    assert e.occurred_at == datetime(2025, 7, 1, 11, 30, 0, 123000, tzinfo=UTC) and e.observed_at == NOW
    assert lookups == [("demo-proj", "us-central1-a", "trainer-7")]
    assert src.stats.rejected["not_a_preemption"] == 1 and src.stats.rejected["malformed_json"] == 1
    # acknowledged: nothing is redelivered
    assert src.poll() == []
    src.close()
    publisher.stop() if hasattr(publisher, "stop") else None


def test_unknown_machine_type_is_reported_not_guessed() -> None:
    src = GcpPreemptionSource(env={}, subscriber=object(), instance_lookup=lambda *a: "n2-standard-8",
                              clock=lambda: NOW, **FAST)
    r = src.convert(json.dumps(LOG_ENTRY).encode())
    assert getattr(r, "reason", None) == "unknown_gpu"


def test_credentials_check() -> None:
    assert GcpPreemptionSource.missing_credentials({}) is not None
    assert GcpPreemptionSource.missing_credentials({"GCP_PREEMPTION_SUBSCRIPTION": "projects/p/subscriptions/s",
                                                    "PUBSUB_EMULATOR_HOST": "h:1"}) is None

"""Every Kafka client reaches a cluster that takes only SASL logins, with the `KAFKA_*` security settings
(schemas.kafka): the connectors' publisher, the topic set-up, the worker's market stage, stores and Faust
decision stage, and a reader of the public topics. A broker of its own: the session's is plaintext."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from cloudarb.app import workload_events
from cloudarb.pipeline import publish_events
from embedded.kafka import LocalKafka, ensure_topics
from schemas.kafka import client_config
from schemas.topics import DECISIONS, PLANS
from tests.conftest import unique
from tests.integration.helpers import start_worker, stop, wait_until
from tests.streams.helpers import offer, price, workload

pytestmark = pytest.mark.integration

LOGIN = {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN",
         "KAFKA_SASL_USERNAME": "cloudarb", "KAFKA_SASL_PASSWORD": "s3cret-for-tests"}


def _read(bootstrap: str, topic: str) -> list[Any]:
    from confluent_kafka import Consumer

    c = Consumer(client_config(bootstrap, **{"group.id": unique("read"), "auto.offset.reset": "earliest",
                                             "enable.auto.commit": False}))
    c.subscribe([topic])
    try:
        msgs = [m for _ in range(6) for m in c.consume(1000, timeout=0.5) if m.error() is None]
    finally:
        c.close()
    return msgs


def test_the_pipeline_runs_on_a_cluster_that_takes_only_sasl_logins(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("an external cluster is configured: this test starts a SASL broker of its own")
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    broker = LocalKafka(tmp_path / "kafka", sasl_users={LOGIN["KAFKA_SASL_USERNAME"]: LOGIN["KAFKA_SASL_PASSWORD"]})
    broker.start()
    worker = None
    try:
        with pytest.raises(KafkaException):   # without the login, nothing: the settings below are what works
            AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 0}).list_topics(timeout=5)
        for k, v in LOGIN.items():
            monkeypatch.setenv(k, v)
        ensure_topics(broker.bootstrap)
        app_id = unique("sasl")
        log = tmp_path / "worker.log"
        worker = start_worker(broker.bootstrap, app_id, log)   # (inherits the environment)
        o, wid = offer(region="sasl-a"), f"w-{app_id}"
        publish_events(broker.bootstrap, [price(o, 0.01)])
        publish_events(broker.bootstrap, workload_events([workload(wid)]))
        wait_until(lambda: any(wid.encode() in m.value() for m in _read(broker.bootstrap, DECISIONS.name)), 120,
                   "a decision from the worker", log=log, worker=worker)
        wait_until(lambda: any(m.key() == f"{app_id}/{wid}".encode() for m in _read(broker.bootstrap, PLANS.name)),
                   60, "the plan on the plans topic", log=log, worker=worker)
        assert LOGIN["KAFKA_SASL_PASSWORD"] not in log.read_text(errors="replace")
    finally:
        if worker is not None:
            stop(worker)
        broker.stop()

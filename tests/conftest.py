"""Shared fixtures.

`kafka_bootstrap` (session): `KAFKA_BOOTSTRAP_SERVERS` if set; else testcontainers' Kafka where a
Docker engine is reachable and CLOUDARB_TEST_DOCKER=1; else the pinned local broker (embedded.kafka),
started once per session in a temporary directory and stopped at the end.
`chdb_client` (function): a clickhouse-connect client on a fresh database of the session's chdb.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from embedded.kafka import LocalKafka, ensure_topics

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
SHARED = ROOT.parent / "shared" / "data"


def _docker_kafka() -> Iterator[str] | None:
    if os.environ.get("CLOUDARB_TEST_DOCKER") != "1":
        return None
    try:
        from testcontainers.kafka import KafkaContainer  # type: ignore[import-not-found]
    except ImportError:
        return None

    def gen() -> Iterator[str]:
        with KafkaContainer().with_kraft() as kc:
            yield kc.get_bootstrap_server()

    return gen()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka | None]:
    """The local broker object (None when an external cluster is used); tests that restart it use this."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield None
        return
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: LocalKafka | None) -> str:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or (kafka_broker.bootstrap if kafka_broker else "")
    ensure_topics(bootstrap)
    return bootstrap


@pytest.fixture(scope="session")
def chdb_session_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def chdb_client(chdb_session_path: Path) -> Iterator[tuple[Any, str]]:
    """(client, database): a fresh database with the project's DDL applied, dropped afterwards."""
    from outputs.clickhouse import apply_ddl, get_client

    client = get_client(os.environ.get("CLICKHOUSE_URL"), chdb_session_path)
    db = f"t_{uuid.uuid4().hex[:10]}"
    apply_ddl(client, db)
    try:
        yield client, db
    finally:
        client.command(f"DROP DATABASE IF EXISTS {db}")


def unique(prefix: str) -> str:
    """A unique name for consumer groups / app ids, so tests never share offsets."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"

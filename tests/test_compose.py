"""docker-compose.yml can't run here (no Docker engine): check it stays consistent with the local run."""

from __future__ import annotations

import re

import yaml

from cloudarb.cli import build_parser
from cloudarb.kafka_local import kafka_version
from cloudarb.settings import Settings
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_kafka_image_is_the_pinned_broker_version() -> None:
    assert COMPOSE["services"]["kafka"]["image"] == f"apache/kafka:{kafka_version()}"


def test_services_run_real_cli_commands_with_the_same_env() -> None:
    parser = build_parser()
    fields = {f.upper() for f in Settings.model_fields}
    for name, svc in COMPOSE["services"].items():
        if "build" not in svc:
            continue
        args = parser.parse_args(svc["command"])  # raises SystemExit on an unknown command
        assert callable(args.func), name
        env = svc["environment"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["CLICKHOUSE_URL"].startswith("http://")
        for var in env:
            if var.startswith(("CLOUDARB_", "KAFKA_", "CLICKHOUSE_")) and var != "CLOUDARB_ADMIN_KEY":
                assert var in fields, f"{name}: {var} is not a Settings field"


def test_grafana_provisioning_is_mounted_and_dockerfile_ships_every_package() -> None:
    vols = COMPOSE["services"]["grafana"]["volumes"]
    for v in vols:
        assert (ROOT / v.split(":")[0]).exists(), v
    docker = (ROOT / "Dockerfile").read_text()
    for pkg in ("schemas", "connectors", "streams", "solvers", "outputs", "cloudarb", "infra"):
        assert re.search(rf"^COPY {pkg} {pkg}$", docker, re.M), pkg

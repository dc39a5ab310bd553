"""docker-compose.yml can't run here (no Docker engine): check it stays consistent with the local run."""

from __future__ import annotations

import re

import pytest
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


SECRET_REF = re.compile(r"\$\{(?P<var>[A-Z_]+):\?(?P<msg>[^}]+)\}")  # required: compose refuses to start without it


def _env_values() -> list[tuple[str, str, str]]:
    return [(name, var, str(val)) for name, svc in COMPOSE["services"].items()
            for var, val in (svc.get("environment") or {}).items()]


def test_secrets_have_no_defaults_and_are_required() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for name, var, val in _env_values():
        if var == "CLOUDARB_ADMIN_KEY":
            m = SECRET_REF.fullmatch(val)
            assert m and m["var"] == "CLOUDARB_ADMIN_KEY" and "32" in m["msg"], name
        if var in ("CLICKHOUSE_PASSWORD", "GF_SECURITY_ADMIN_PASSWORD"):
            assert SECRET_REF.fullmatch(val), f"{name}: {var} must be required from the environment"
        if var == "CLICKHOUSE_URL":
            ref = SECRET_REF.search(val.split("://", 1)[1].rsplit("@", 1)[0])  # the password in the user info
            assert ref is not None and ref["var"] == "CLICKHOUSE_PASSWORD", name
    # no secret-looking variable falls back to a fixed value (an empty default, "connector skipped", is fine)
    for var, default in re.findall(r"\$\{([A-Z_]+):?-([^}]*)\}", text):
        if re.search(r"KEY|PASSWORD|SECRET|TOKEN", var):
            assert default == "", f"{var} defaults to {default!r}"
    values = yaml.safe_dump(COMPOSE)  # without the comments
    assert "change-me" not in values and not re.search(r"PASSWORD:\s*cloudarb\b", values)
    assert {s for s, svc in COMPOSE["services"].items() if "CLOUDARB_ADMIN_KEY" in (svc.get("environment") or {})} \
        >= {"serve"}


def test_clickhouse_is_not_published_on_the_host() -> None:
    for name, svc in COMPOSE["services"].items():
        for p in svc.get("ports") or []:
            container = str(p.get("target") if isinstance(p, dict) else p).rsplit(":", 1)[-1].split("/")[0]
            assert container not in ("8123", "9000", "9009"), f"{name} publishes ClickHouse port {p}"
    assert "ports" not in COMPOSE["services"]["clickhouse"]
    graf = COMPOSE["services"]["grafana"]["environment"]
    assert graf["CLICKHOUSE_HOST"] == "clickhouse"  # Grafana reaches it by service name, on the compose network
    assert "@clickhouse:8123" in COMPOSE["x-cloudarb-env"]["CLICKHOUSE_URL"]


@pytest.mark.parametrize("key,ok", [(None, True), ("0123456789abcdef" * 4, True), ("change-me", False),
                                    ("CHANGE-ME", False), ("abcdefghijklmnopqrstuvwxyz01234", False),  # 31 chars
                                    ("x" * 64, False)])
def test_serve_refuses_weak_admin_keys(key: str | None, ok: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """What compose passes as CLOUDARB_ADMIN_KEY is checked where `cloudarb serve` / `api` read it."""
    from cloudarb.cmd_outputs import _api_config

    if key is None:
        monkeypatch.delenv("CLOUDARB_ADMIN_KEY", raising=False)
    else:
        monkeypatch.setenv("CLOUDARB_ADMIN_KEY", key)
    args = build_parser().parse_args(["serve"])
    if ok:
        assert _api_config(args, Settings()).admin_key == key
    else:
        with pytest.raises(SystemExit) as exc:
            _api_config(args, Settings())
        assert key is not None and "CLOUDARB_ADMIN_KEY" in str(exc.value) and key not in str(exc.value)

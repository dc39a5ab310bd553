"""docker-compose.yml can't run here (no Docker engine): check it stays consistent with the local run."""

from __future__ import annotations

import ast
import re

import pytest
import yaml

from cloudarb.cli import build_parser
from cloudarb.settings import Settings
from embedded.kafka import kafka_version
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict = COMPOSE["services"]
# read by the processes directly, not through Settings (CLOUDARB_METRICS_*: cloudarb.metrics)
NON_SETTINGS_VARS = {"CLOUDARB_ADMIN_KEY", "CLOUDARB_METRICS_PORT", "CLOUDARB_METRICS_ADDR"}


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
            if var.startswith(("CLOUDARB_", "KAFKA_", "CLICKHOUSE_")) and var not in NON_SETTINGS_VARS \
                    and var not in connector_env_vars():
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


# --- production shape: healthchecks, readiness ordering, passthroughs, persistence, metrics ----------------------

PROVIDER_VAR = re.compile(r"(AWS|AZURE|GCP|GOOGLE|PUBSUB|LAMBDA|RUNPOD|VAST|CLOUDARB)(_[A-Z0-9]+)+")


def connector_env_vars() -> dict[str, bool]:
    """Every environment variable connectors/ reads -> whether the code has a non-empty default for it.

    Found in the source (string constants naming a provider's variable, e.g. env.get("X"), env["X"] or a tuple of
    names read in a loop), so a connector reading a new variable fails the passthrough test below until compose
    passes it."""
    found: dict[str, bool] = {}
    for path in sorted((ROOT / "connectors").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and PROVIDER_VAR.fullmatch(node.value):
                found.setdefault(node.value, False)
        for node in ast.walk(tree):  # env.get("X", <default>) with a default that is not ""
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                    and len(node.args) == 2 and isinstance(node.args[0], ast.Constant) \
                    and node.args[0].value in found:
                d = node.args[1]
                found[node.args[0].value] |= not (isinstance(d, ast.Constant) and d.value in ("", None))
    return found


def test_connector_env_vars_are_found_in_the_source() -> None:
    found = connector_env_vars()
    # the three interruption sources' variables (Pub/Sub, Event Hubs, EventBridge -> SQS) and a credential
    for var in ("GCP_PREEMPTION_SUBSCRIPTION", "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_EVENTHUB_CONNECTION_STRING",
                "AZURE_EVENTHUB_NAME", "AZURE_EVENTHUB_CONSUMER_GROUP", "AWS_SPOT_INTERRUPTION_QUEUE_URL",
                "AWS_SPOT_INTERRUPTION_QUEUE_REGION", "AWS_PROFILE"):
        assert var in found, var
    assert found["AZURE_EVENTHUB_CONSUMER_GROUP"] and not found["GCP_PREEMPTION_SUBSCRIPTION"]  # "$Default" vs ""


EMPTY_BREAKS = {"AWS_PROFILE"}  # boto3: AWS_PROFILE="" -> ProfileNotFound "The config profile () could not be found"


def test_connectors_pass_every_variable_the_connectors_read() -> None:
    env = SERVICES["connectors"]["environment"]
    for var, has_default in connector_env_vars().items():
        assert var in env, f"connectors: {var} is read by connectors/ but not passed through"
        val = env[var]
        if val is None:  # bare `VAR:`: passed only when set in the shell / .env, else unset in the container
            continue
        # `${VAR:-}`: empty when not set, which must mean "not set" to the code reading it
        assert val == f"${{{var}:-}}", f"connectors: {var}: {val!r} is neither ${{{var}:-}} nor a bare passthrough"
        assert not has_default and var not in EMPTY_BREAKS, \
            f"connectors: {var} must be a bare `{var}:` (an empty string is not the same as unset for it)"


def _target_port(svc: dict) -> int | None:
    cmd = svc.get("command") or []
    return int(cmd[cmd.index("--port") + 1]) if "--port" in cmd else None


def test_every_service_has_a_real_healthcheck() -> None:
    probe_src = ROOT / "infra/helm/cloudarb/files/probe.py"
    for name, svc in SERVICES.items():
        hc = svc.get("healthcheck")
        assert hc and not hc.get("disable"), f"{name} has no healthcheck"
        test = hc["test"]
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
        cmd = " ".join(test[1:])
        if "/etc/cloudarb-probe/probe.py" in cmd:  # the Helm chart's exec probe, mounted at the chart's path
            mounts = [v.rsplit(":", 1)[0] if v.endswith((":ro", ":rw")) else v for v in svc.get("volumes") or []]
            assert f"./{probe_src.relative_to(ROOT)}:/etc/cloudarb-probe/probe.py" in mounts, name
            checks = test[test.index("/etc/cloudarb-probe/probe.py") + 1:]
            assert test[:3] == ["CMD", "python", "/etc/cloudarb-probe/probe.py"] and checks, name
            assert "alive" in checks and set(checks) <= {"alive", "kafka", "clickhouse"}, name
    assert probe_src.exists()
    assert "/readyz" in " ".join(SERVICES["serve"]["healthcheck"]["test"])
    assert f"127.0.0.1:{_target_port(SERVICES['serve'])}/readyz" in " ".join(SERVICES["serve"]["healthcheck"]["test"])
    assert "8123/ping" in " ".join(SERVICES["clickhouse"]["healthcheck"]["test"])
    assert "kafka-topics.sh" in " ".join(SERVICES["kafka"]["healthcheck"]["test"])
    # python:3.11-slim has neither curl nor wget: the app image's checks must use python
    assert "FROM python:" in (ROOT / "Dockerfile").read_text()
    for name, svc in SERVICES.items():
        if "build" in svc:
            assert svc["healthcheck"]["test"][1] == "python", f"{name}: the app image has python, not curl/wget"


def test_depends_on_waits_for_healthy_or_completed() -> None:
    one_shot = {n for n, s in SERVICES.items() if "build" in s and "restart" not in s}
    assert one_shot == {"topics", "replay"}
    for name, svc in SERVICES.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on as a list only waits for `service_started`"
        for dep, spec in deps.items():
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            want = "service_completed_successfully" if dep in one_shot else "service_healthy"
            assert spec.get("condition") == want, f"{name} -> {dep}: {spec.get('condition')}, want {want}"
    need = {"topics": {"kafka"}, "worker": {"topics", "kafka"}, "serve": {"topics", "kafka", "clickhouse"},
            "connectors": {"topics", "kafka"}, "replay": {"worker"}, "grafana": {"clickhouse", "prometheus"}}
    for name, deps in need.items():
        assert set(SERVICES[name]["depends_on"]) >= deps, name


def _named_volume_mounts(svc: dict) -> dict[str, str]:
    out = {}
    for v in svc.get("volumes") or []:
        src, target = (v["source"], v["target"]) if isinstance(v, dict) else v.split(":")[:2]
        if src in (COMPOSE.get("volumes") or {}):
            out[src] = target
    return out


def test_kafka_data_lives_on_the_named_volume() -> None:
    """apache/kafka defaults KAFKA_LOG_DIRS to /tmp/kraft-combined-logs: the volume must be where the data is."""
    kafka = SERVICES["kafka"]
    log_dirs = kafka["environment"].get("KAFKA_LOG_DIRS")
    assert log_dirs, "KAFKA_LOG_DIRS unset: the image's default /tmp/kraft-combined-logs is not on a volume"
    mounts = _named_volume_mounts(kafka)
    assert "kafka-data" in mounts
    for d in str(log_dirs).split(","):
        assert any(d.rstrip("/") == t.rstrip("/") or d.startswith(t.rstrip("/") + "/") for t in mounts.values()), \
            f"Kafka log dir {d} is not on a named volume ({mounts})"
    assert _named_volume_mounts(SERVICES["clickhouse"]) == {"clickhouse-data": "/var/lib/clickhouse"}
    assert _named_volume_mounts(SERVICES["prometheus"]) == {"prometheus-data": "/prometheus"}
    assert "--storage.tsdb.path=/prometheus" in SERVICES["prometheus"]["command"]


def test_no_service_publishes_clickhouse_or_prometheus() -> None:
    for name, svc in SERVICES.items():
        for p in svc.get("ports") or []:
            spec = p if isinstance(p, dict) else {"target": str(p).rsplit(":", 1)[-1].split("/")[0]}
            assert str(spec["target"]) not in ("8123", "9000", "9090"), f"{name} publishes {p}"
    assert "ports" not in SERVICES["prometheus"]


PROM = yaml.safe_load((ROOT / "infra/prometheus/prometheus.yml").read_text())


def test_prometheus_scrapes_existing_services_on_their_metrics_ports() -> None:
    prom = SERVICES["prometheus"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prom["image"]), "pin the Prometheus image"
    assert "./infra/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prom["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    targets: dict[str, int] = {}
    for job in PROM["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]
        for sc in job["static_configs"]:
            for t in sc["targets"]:
                host, port = t.rsplit(":", 1)
                targets[host] = int(port)
    assert set(targets) >= {"serve", "worker", "connectors"}
    for host, port in targets.items():
        assert host in SERVICES, f"prometheus.yml scrapes {host}, which is not a compose service"
        svc = SERVICES[host]
        env = svc.get("environment") or {}
        if port == _target_port(svc):  # the API's own /metrics
            continue
        assert str(env.get("CLOUDARB_METRICS_PORT")) == str(port), f"{host}: CLOUDARB_METRICS_PORT != {port}"
        assert env.get("CLOUDARB_METRICS_ADDR") == "0.0.0.0", f"{host}: metrics bind 127.0.0.1 by default"
    # every process that serves metrics on CLOUDARB_METRICS_PORT is scraped
    for name, svc in SERVICES.items():
        if "CLOUDARB_METRICS_PORT" in (svc.get("environment") or {}):
            assert targets.get(name) == int(svc["environment"]["CLOUDARB_METRICS_PORT"]), f"{name} is not scraped"


def test_grafana_has_the_prometheus_datasource() -> None:
    ds_dir = ROOT / "infra/grafana/provisioning/datasources"
    sources = [d for f in sorted(ds_dir.glob("*.y*ml")) for d in yaml.safe_load(f.read_text())["datasources"]]
    by_uid = {d["uid"]: d for d in sources}
    prom = by_uid["cloudarb-prometheus"]
    assert prom["type"] == "prometheus" and prom["url"] == "http://prometheus:9090"
    assert "prometheus" in SERVICES and "9090" in [str(p) for p in SERVICES["prometheus"]["expose"]]
    assert [d["uid"] for d in sources if d.get("isDefault")] == ["cloudarb-clickhouse"]

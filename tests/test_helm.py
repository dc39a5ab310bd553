"""The Helm chart (infra/helm/cloudarb): lint, render each ci/ values file, validate every object offline
against the Kubernetes API models (the `kubernetes` client's generated classes: unknown fields, missing
required fields, wrong types), structural checks of the CRDs (KEDA, Prometheus Operator, Strimzi), the
chart's invariants, its render-time failures, the generated topics file and the exec probe script.

Helm is the pinned build in .cache/bin (scripts/setup.sh --test; $HELM overrides); tests needing it skip
without it."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "infra" / "helm" / "cloudarb"
CI_VALUES = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
PROBE = CHART / "files" / "probe.py"
TOPICS = yaml.safe_load((CHART / "files" / "topics.yaml").read_text())
MARKET_PARTITIONS = TOPICS["market"]["partitions"]


def _helm_binary() -> str | None:
    cand = os.environ.get("HELM") or str(ROOT / ".cache" / "bin" / "helm")
    return cand if Path(cand).is_file() and os.access(cand, os.X_OK) else None


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    binary = _helm_binary()
    if binary is None:
        pytest.skip("helm not built: scripts/setup.sh --test builds it into .cache/bin (needs go)")
    home = tmp_path_factory.mktemp("helm-home")
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([binary, *args], capture_output=True, text=True, env=env, timeout=60, check=False)

    yield run


def template(helm: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return helm("template", "rel", str(CHART), "--namespace", "cloudarb", *args)


_rendered: dict[str, list[dict[str, Any]]] = {}


def rendered(helm: Any, values: str) -> list[dict[str, Any]]:
    if values not in _rendered:
        r = template(helm, "-f", str(CHART / "ci" / values))
        assert r.returncode == 0, r.stderr
        _rendered[values] = [d for d in yaml.safe_load_all(r.stdout) if d]
    return _rendered[values]


# --- the generated topics file --------------------------------------------------------------------------------------

def test_topics_file_is_generated_from_schemas() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import helm_topics
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert (CHART / "files" / "topics.yaml").read_text() == helm_topics.render(), \
        "infra/helm/cloudarb/files/topics.yaml is stale: run .venv/bin/python scripts/helm_topics.py"
    from schemas.topics import TOPICS as SPECS

    assert [t["name"] for t in TOPICS["topics"]] == list(SPECS)
    from streams.runtime.app import MARKET_TOPICS
    from streams.runtime.market import market_group

    assert tuple(TOPICS["market"]["topics"]) == MARKET_TOPICS
    assert market_group("x") == "x-market"  # the KEDA trigger's consumerGroup is <appId>-market


# --- the exec probe script ------------------------------------------------------------------------------------------

def probe(*checks: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL")}
    return subprocess.run([sys.executable, str(PROBE), *checks], capture_output=True, text=True,
                          env={**base, "PROBE_TIMEOUT_S": "2", **env}, timeout=30, check=False)


def test_probe_alive_follows_the_process_state() -> None:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "cloudarb", "worker"])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert probe("alive", PROBE_PID=str(p.pid)).returncode == 0
        r = probe("alive", PROBE_PID=str(other.pid))
        assert r.returncode == 1 and "not cloudarb" in r.stderr
        p.send_signal(signal.SIGSTOP)
        r = probe("alive", PROBE_PID=str(p.pid))
        assert r.returncode == 1 and "state T" in r.stderr
        p.send_signal(signal.SIGCONT)
        p.kill()
        p.wait()
        assert probe("alive", PROBE_PID=str(p.pid)).returncode == 1  # gone
    finally:
        for q in (p, other):
            q.kill()
            q.wait()


def test_probe_kafka_needs_a_listening_broker() -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    try:
        assert probe("kafka", KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:1,127.0.0.1:{port}").returncode == 0
    finally:
        srv.close()
    r = probe("kafka", KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}")
    assert r.returncode == 1 and "no bootstrap server reachable" in r.stderr
    assert probe("kafka").returncode == 1  # unset


def test_probe_clickhouse_pings_without_leaking_the_password() -> None:
    status = {"code": 200}

    class Ping(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/ping" and "Authorization" not in self.headers and status["code"] == 200
            self.send_response(200 if ok else 500)
            self.end_headers()
            self.wfile.write(b"Ok.\n" if ok else b"no")

        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ping)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://cloudarb:hunter2secret@127.0.0.1:{srv.server_address[1]}"
    try:
        assert probe("clickhouse", CLICKHOUSE_URL=url).returncode == 0
        status["code"] = 500
        r = probe("clickhouse", CLICKHOUSE_URL=url)
        assert r.returncode == 1 and "hunter2secret" not in r.stderr + r.stdout
    finally:
        srv.shutdown()
        srv.server_close()
    r = probe("alive", "clickhouse", CLICKHOUSE_URL=url, PROBE_PID="999999999")
    assert r.returncode == 1 and "hunter2secret" not in r.stderr and r.stderr.count("\n") == 2


# --- lint and render ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("values", CI_VALUES)
def test_helm_lint(helm: Any, values: str) -> None:
    r = helm("lint", "--strict", str(CHART), "-f", str(CHART / "ci" / values))
    assert r.returncode == 0, r.stdout + r.stderr


def test_ci_values_files_exist() -> None:
    assert CI_VALUES == ["minimal-values.yaml", "production-values.yaml", "strimzi-values.yaml"]


# Kubernetes API validation with the official client's generated models
BUILTIN = {("v1", "ConfigMap"): "V1ConfigMap", ("v1", "Service"): "V1Service",
           ("v1", "ServiceAccount"): "V1ServiceAccount", ("v1", "Secret"): "V1Secret",
           ("apps/v1", "Deployment"): "V1Deployment", ("batch/v1", "Job"): "V1Job",
           ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
           ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy"}
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def validate_model(data: Any, type_name: str, path: str, errors: list[str]) -> None:
    """Deserialize into the client's model: its pydantic classes forbid unknown fields, require the required
    ones and are strict about types (a port given as a string, a quantity as a number fail)."""
    from kubernetes import client as k8s
    from pydantic import ValidationError

    try:
        getattr(k8s, type_name).model_validate(data)
    except ValidationError as exc:
        errors += [f"{path}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]


def _need(obj: dict[str, Any], dotted: str, typ: type | tuple[type, ...], errors: list[str], where: str) -> Any:
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            errors.append(f"{where}: missing {dotted}")
            return None
        cur = cur[part]
    if not isinstance(cur, typ) or (isinstance(cur, bool) and typ is int):
        errors.append(f"{where}: {dotted} should be {typ}, is {type(cur).__name__}")
    return cur


KEDA_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount",
             "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers"}
KEDA_KAFKA_META = {"bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold",
                   "offsetResetPolicy", "allowIdleConsumers", "scaleToZeroOnInvalidOffset", "excludePersistentLag",
                   "limitToPartitionsWithLag", "partitionLimitation", "version", "sasl", "tls"}
SM_ENDPOINT = {"port", "targetPort", "path", "scheme", "interval", "scrapeTimeout", "honorLabels", "tlsConfig",
               "relabelings", "metricRelabelings", "bearerTokenSecret", "authorization", "basicAuth", "params"}


def validate_crd(obj: dict[str, Any], errors: list[str]) -> None:
    """Structural checks of the custom resources' required fields (their CRDs are not in the client)."""
    kind, where = obj["kind"], f"{obj['kind']}/{obj.get('metadata', {}).get('name')}"
    spec = _need(obj, "spec", dict, errors, where) or {}
    if kind == "ScaledObject":
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        errors += [f"{where}: unknown spec field {k}" for k in set(spec) - KEDA_SPEC]
        _need(obj, "spec.scaleTargetRef.name", str, errors, where)
        for f in ("minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod"):
            _need(obj, f"spec.{f}", int, errors, where)
        triggers = _need(obj, "spec.triggers", list, errors, where) or []
        if not triggers:
            errors.append(f"{where}: no triggers")
        for t in triggers:
            meta = t.get("metadata") or {}
            if t.get("type") != "kafka" or not meta.get("bootstrapServers") or not meta.get("consumerGroup"):
                errors.append(f"{where}: kafka trigger needs type, bootstrapServers, consumerGroup: {t}")
            errors += [f"{where}: trigger metadata {k} must be a string" for k, v in meta.items()
                       if not isinstance(v, str)]  # KEDA's metadata is map[string]string
            errors += [f"{where}: unknown kafka trigger metadata {k}" for k in set(meta) - KEDA_KAFKA_META]
    elif kind == "ServiceMonitor":
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        _need(obj, "spec.selector.matchLabels", dict, errors, where)
        for e in _need(obj, "spec.endpoints", list, errors, where) or []:
            if not (e.get("port") or e.get("targetPort")):
                errors.append(f"{where}: endpoint without port")
            errors += [f"{where}: unknown endpoint field {k}" for k in set(e) - SM_ENDPOINT]
    elif kind == "Kafka":
        assert obj["apiVersion"] == "kafka.strimzi.io/v1beta2"
        _need(obj, "spec.kafka.version", str, errors, where)
        for li in _need(obj, "spec.kafka.listeners", list, errors, where) or []:
            if not (isinstance(li.get("name"), str) and isinstance(li.get("port"), int) and li.get("type")
                    and isinstance(li.get("tls"), bool)):
                errors.append(f"{where}: listener needs name, port, type, tls: {li}")
        ann = obj["metadata"].get("annotations", {})
        if ann.get("strimzi.io/kraft") != "enabled" or ann.get("strimzi.io/node-pools") != "enabled":
            errors.append(f"{where}: KRaft with node pools needs the strimzi.io/kraft and node-pools annotations")
    elif kind == "KafkaNodePool":
        _need(obj, "spec.replicas", int, errors, where)
        _need(obj, "spec.storage.type", str, errors, where)
        if not set(_need(obj, "spec.roles", list, errors, where) or ["x"]) <= {"controller", "broker"}:
            errors.append(f"{where}: roles must be controller/broker")
        if not obj["metadata"].get("labels", {}).get("strimzi.io/cluster"):
            errors.append(f"{where}: KafkaNodePool needs the strimzi.io/cluster label")
    elif kind == "KafkaTopic":
        if not obj["metadata"].get("labels", {}).get("strimzi.io/cluster"):
            errors.append(f"{where}: KafkaTopic needs the strimzi.io/cluster label")
        for f in ("partitions", "replicas"):
            if (_need(obj, f"spec.{f}", int, errors, where) or 0) < 1:
                errors.append(f"{where}: spec.{f} < 1")
        _need(obj, "spec.topicName", str, errors, where)
    else:
        errors.append(f"{where}: no validation for {obj['apiVersion']} {kind}")


@pytest.mark.parametrize("values", CI_VALUES)
def test_rendered_objects_are_valid_kubernetes(helm: Any, values: str) -> None:
    errors: list[str] = []
    for obj in rendered(helm, values):
        name = obj.get("metadata", {}).get("name", "")
        if not NAME_RE.match(name) or len(name) > 63:
            errors.append(f"{obj.get('kind')}: bad name {name!r}")
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key in BUILTIN:
            validate_model(obj, BUILTIN[key], f"{key[1]}/{name}", errors)
        else:
            validate_crd(obj, errors)
    assert not errors, "\n".join(errors)


def test_validator_catches_mistakes() -> None:
    """The validation above can fail: unknown fields, missing required fields, wrong types."""
    good = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
            "spec": {"ports": [{"port": 80}], "selector": {"a": "b"}}}
    for bad, expect in (({"spec": {"ports": [{"port": 80, "prot": "TCP"}]}}, "spec.ports.0.prot: Extra inputs"),
                        ({"spec": {"ports": [{"name": "http"}]}}, "spec.ports.0.port: Field required"),
                        ({"spec": {"ports": [{"port": "80"}]}}, "spec.ports.0.port: Input should be a valid integer")):
        errors: list[str] = []
        validate_model({**good, **bad}, "V1Service", "Service/x", errors)
        assert any(expect in e for e in errors), (bad, errors)
    errors = []
    validate_model(good, "V1Service", "Service/x", errors)
    assert errors == []


# --- invariants ----------------------------------------------------------------------------------------------------

def _by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


SECRET_NAME = re.compile(r"(?i)(password|secret|token|api_?key|admin_key|credential|private)")
CREDENTIAL_URL = re.compile(r"://[^/@\s:]+:[^/@\s]+@")


@pytest.mark.parametrize("values", CI_VALUES)
def test_invariants(helm: Any, values: str) -> None:
    objs = rendered(helm, values)
    vals = yaml.safe_load((CHART / "ci" / values).read_text())
    deployments = _by_kind(objs, "Deployment")
    names = {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in deployments}
    assert {"worker", "connectors"} <= names and ({"api", "sink", "alerts", "executors"} <= names or "serve" in names)
    api_src = (ROOT / "outputs" / "api.py").read_text()
    from importlib import util

    spec = util.spec_from_file_location("probe", PROBE)
    assert spec is not None and spec.loader is not None
    probe_mod = util.module_from_spec(spec)
    spec.loader.exec_module(probe_mod)

    for d in deployments:
        comp = d["metadata"]["labels"]["app.kubernetes.io/component"]
        pod = d["spec"]["template"]
        labels = pod["metadata"]["labels"]
        for c in pod["spec"]["containers"]:
            for p in ("livenessProbe", "readinessProbe"):
                pr = c.get(p)
                assert pr, f"{comp}: {p} missing"
                if "httpGet" in pr:  # only endpoints the API really has
                    assert f'@app.get("{pr["httpGet"]["path"]}"' in api_src, pr
                else:
                    cmd = pr["exec"]["command"]
                    assert cmd[:2] == ["python", "/etc/cloudarb-probe/probe.py"] and cmd[2:], cmd
                    assert set(cmd[2:]) <= set(probe_mod.CHECKS), cmd
            req = c.get("resources", {}).get("requests", {})
            assert req.get("cpu") and req.get("memory"), f"{comp}: resource requests missing"
            if comp in ("api", "serve"):  # `cloudarb api` listens on 127.0.0.1 unless told otherwise
                assert c["args"][c["args"].index("--host") + 1] == "0.0.0.0", c["args"]
                assert c["ports"][0]["containerPort"] == int(c["args"][c["args"].index("--port") + 1])
            for e in c.get("env", []):  # secrets by reference only, to the Secrets named in the values
                assert "value" not in e or not SECRET_NAME.search(e["name"]), e
                if "valueFrom" in e:
                    assert e["valueFrom"]["secretKeyRef"]["name"] == vals["secrets"]["existingSecret"]
        assert any(_selects(p["spec"]["selector"], labels) for p in _by_kind(objs, "PodDisruptionBudget")), comp
        assert any(_selects(n["spec"]["podSelector"], labels) for n in _by_kind(objs, "NetworkPolicy")), comp
        # the metrics port the ServiceMonitor scrapes is one the pod's NetworkPolicy lets in
        mports = {p["containerPort"] for c in d["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])
                  if p.get("name") == "metrics"}
        allowed = {pp["port"] for n in _by_kind(objs, "NetworkPolicy") if _selects(n["spec"]["podSelector"], labels)
                   for rule in n["spec"].get("ingress") or [] for pp in rule.get("ports", [])}
        assert mports and mports <= allowed, (comp, mports, allowed)

    worker = next(d for d in deployments if d["metadata"]["name"].endswith("-worker"))
    scaled = _by_kind(objs, "ScaledObject")
    if scaled:
        assert "replicas" not in worker["spec"]  # KEDA owns it
        so = scaled[0]["spec"]
        assert so["scaleTargetRef"]["name"] == worker["metadata"]["name"]
        assert so["minReplicaCount"] <= so["maxReplicaCount"] <= MARKET_PARTITIONS
        assert sorted(t["metadata"]["topic"] for t in so["triggers"]) == sorted(TOPICS["market"]["topics"])
        assert {t["metadata"]["consumerGroup"] for t in so["triggers"]} == {f"{vals.get('appId', 'cloudarb')}-market"}
    else:
        assert worker["spec"].get("replicas", 1) <= MARKET_PARTITIONS
    for d in deployments:
        if d["metadata"]["name"].endswith("-executors"):
            assert d["spec"]["replicas"] <= TOPICS["decisions"]["partitions"]

    for cm in _by_kind(objs, "ConfigMap"):  # no secret in a ConfigMap
        for k, v in cm.get("data", {}).items():
            assert not SECRET_NAME.search(k), f"{cm['metadata']['name']}: {k} looks secret"
            assert not CREDENTIAL_URL.search(v), f"{cm['metadata']['name']}: {k} holds a URL with credentials"
    assert not _by_kind(objs, "Secret"), "the chart refers to Secrets; it never creates one"

    if vals.get("api", {}).get("serviceMonitor", {}).get("enabled"):
        sm = _by_kind(objs, "ServiceMonitor")[0]
        svc = _by_kind(objs, "Service")[0]
        assert sm["spec"]["endpoints"][0]["path"] == "/metrics" and '@app.get("/metrics"' in api_src
        assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    topics = _by_kind(objs, "KafkaTopic")
    if vals.get("strimzi", {}).get("enabled"):
        assert {(t["spec"]["topicName"], t["spec"]["partitions"]) for t in topics} == \
            {(t["name"], t["partitions"]) for t in TOPICS["topics"]}
        compacted = {t["spec"]["topicName"] for t in topics if t["spec"]["config"]["cleanup.policy"] == "compact"}
        assert compacted == {t["name"] for t in TOPICS["topics"] if t["compacted"]}
    else:
        assert not topics


def test_object_counts(helm: Any) -> None:
    counts = {v: Counter(o["kind"] for o in rendered(helm, v)) for v in CI_VALUES}
    print({v: (sum(c.values()), dict(sorted(c.items()))) for v, c in counts.items()})
    assert counts["production-values.yaml"]["ScaledObject"] == 1
    assert counts["strimzi-values.yaml"]["KafkaTopic"] == len(TOPICS["topics"])


# --- render-time failures ------------------------------------------------------------------------------------------

MINIMAL = ("--set", "kafka.bootstrapServers=kafka:9092", "--set", "secrets.existingSecret=cloudarb")


@pytest.mark.parametrize(("args", "message"), [
    ((*MINIMAL, "--set", f"worker.replicas={MARKET_PARTITIONS + 1}"),
     f"worker.replicas={MARKET_PARTITIONS + 1} exceeds the {MARKET_PARTITIONS} partitions"),
    ((*MINIMAL, "--set", "worker.autoscaling.enabled=true", "--set",
      f"worker.autoscaling.maxReplicaCount={MARKET_PARTITIONS + 2}"),
     f"worker.autoscaling.maxReplicaCount={MARKET_PARTITIONS + 2} exceeds the {MARKET_PARTITIONS} partitions"),
    (("--set", "secrets.existingSecret=cloudarb"), "kafka.bootstrapServers is required"),
    (("--set", "kafka.bootstrapServers=kafka:9092"), "secrets.existingSecret is required"),
    ((*MINIMAL, "--set", "executors.replicas=2"), "executors.replicas=2 exceeds"),
    ((*MINIMAL, "--set", "config.extraEnv.CLICKHOUSE_PASSWORD=x"), "config.extraEnv.CLICKHOUSE_PASSWORD looks like"),
    ((*MINIMAL, "--set", "config.extraEnv.STORE=http://u:pw@h:8123"), "config.extraEnv.STORE is a URL"),
    ((*MINIMAL, "--set", "worker.resources.requests=null"), "worker.resources.requests needs cpu and memory"),
    ((*MINIMAL, "--set", "worker.replica=8"), "additional properties 'replica' not allowed"),  # values.schema.json
    ((*MINIMAL, "--set", "outputs.layout=both"), "/outputs/layout"),
])
def test_bad_values_fail_with_a_message_naming_the_value(helm: Any, args: tuple[str, ...], message: str) -> None:
    r = template(helm, *args)
    assert r.returncode != 0, f"rendered although {args}"
    assert message in r.stderr, r.stderr


def test_values_schema_knows_the_providers() -> None:
    import json

    from connectors.registry import PROVIDERS

    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["properties"]["connectors"]["properties"]["providers"]["items"]["enum"] == list(PROVIDERS)


def test_strimzi_points_kafka_at_its_cluster(helm: Any) -> None:
    env = next(o for o in rendered(helm, "strimzi-values.yaml") if o["metadata"]["name"].endswith("-env"))
    kafka = next(o for o in rendered(helm, "strimzi-values.yaml") if o["kind"] == "Kafka")
    assert env["data"]["KAFKA_BOOTSTRAP_SERVERS"] == f"{kafka['metadata']['name']}-kafka-bootstrap:9092"
    assert any(li["port"] == 9092 and not li["tls"] for li in kafka["spec"]["kafka"]["listeners"])


def test_values_file_above_partitions_fails(helm: Any, tmp_path: Path) -> None:
    f = tmp_path / "too-many.yaml"
    f.write_text(yaml.safe_dump({"kafka": {"bootstrapServers": "kafka:9092"}, "secrets": {"existingSecret": "s"},
                                 "worker": {"replicas": MARKET_PARTITIONS + 4}}))
    r = template(helm, "-f", str(f))
    assert r.returncode != 0 and f"worker.replicas={MARKET_PARTITIONS + 4}" in r.stderr, r.stderr
    f.write_text(yaml.safe_dump({"kafka": {"bootstrapServers": "kafka:9092"}, "secrets": {"existingSecret": "s"},
                                 "worker": {"replicas": MARKET_PARTITIONS}}))
    assert template(helm, "-f", str(f)).returncode == 0


def test_helm_is_the_pinned_version(helm: Any) -> None:
    if os.environ.get("HELM"):
        pytest.skip("HELM overrides the pinned build")
    r = helm("version", "--short")
    assert r.stdout.startswith("v4."), r.stdout  # a `go install` build reports only "v4.3"
    if shutil.which("go") is None:
        pytest.skip("go not found: cannot read the module version of the helm binary")
    mod = subprocess.run(["go", "version", "-m", str(ROOT / ".cache" / "bin" / "helm")], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    pin = re.search(r"^HELM_VERSION=(\S+)$", (ROOT / "scripts" / "helm.sh").read_text(), re.M)
    assert pin and re.search(rf"^\s+mod\s+helm\.sh/helm/v4\s+{re.escape(pin[1])}\s", mod, re.M), mod

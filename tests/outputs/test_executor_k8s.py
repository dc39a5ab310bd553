"""Kubernetes executor against an HTTP double of the Kubernetes API.

The double (`FakeKube`, an httpx.MockTransport) answers with recorded response shapes written from the public
Kubernetes API reference (v1.31: Job batch/v1, Deployment apps/v1, NodeList v1, Status v1 for 404/409/delete)
under tests/outputs/fixtures/k8s/ (see its README), filling in what the client sent as the API server echoes
it, and the status a poll has reached. Manifests are also deserialized with the `kubernetes` package's models,
failing on any field the models do not know (skipped, with the reason, when the package is not installed).

Covered: gang -> indexed Job (all or nothing, one zone), replicas -> Deployment, pinning and GPU requests;
the runner's dry run by default and opt-in; idempotence on decision id (409 -> reuse, nothing new);
make-before-break migrations (new ready before old deleted; old kept when the new fails); bounded readiness
timeout; bad input (no context for the place, unknown instance type) recorded `failed` with nothing written;
resize down by scaling; caps checked by the runner's guard before the executor is called.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from outputs.executor_guard import Caps, MarketPrices
from outputs.executor_k8s import (
    K8sExecutor,
    KubeConfig,
    KubeInputError,
    WorkloadTopologies,
    k8s_executors_from_env,
    load_config,
    readiness,
)
from outputs.executors import ExecutorRunner
from outputs.k8s_manifests import check_manifest, gang_job, object_name, replicas_deployment
from schemas.events import (
    AllocationDecided,
    Assignment,
    ChangeAction,
    PlanChange,
    WorkloadRequested,
    WorkloadSpec,
)
from schemas.offers import Market, OfferKey
from schemas.placement import Topology

FIX = Path(__file__).parent / "fixtures" / "k8s"
SERVER = "https://k8s.test:6443"


def fixture(name: str) -> Any:
    return json.loads((FIX / name).read_text())


# --- the HTTP double ------------------------------------------------------------------------------------

_OBJ = re.compile(r"^/apis/(batch|apps)/v1/namespaces/([^/]+)/(jobs|deployments)(?:/([^/]+))?$")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


class FakeKube:
    """A Kubernetes API server in memory: objects become ready after `ready_after` GETs (never when None);
    `fail` makes Jobs fail (podFailurePolicy) instead."""

    def __init__(self, ready_after: int | None = 1, fail: bool = False, token: str = "tok") -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.polls: dict[tuple[str, str, str], int] = {}
        self.ready_after, self.fail, self.token = ready_after, fail, token

    @property
    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] in ("POST", "PUT", "PATCH", "DELETE")]

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    @staticmethod
    def _status(name: str, code: int, plural: str) -> httpx.Response:
        st = fixture(f"status_{code}.json")
        st["message"] = st["message"].replace("jobs.batch", f"{plural}.{'batch' if plural == 'jobs' else 'apps'}")
        st["message"] = st["message"].replace("REPLACED", name)
        st["details"].update(name=name, kind=plural)
        return httpx.Response(code, json=st)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.requests.append((request.method, path))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return httpx.Response(401, json={"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                             "reason": "Unauthorized", "code": 401, "message": "Unauthorized"})
        if path == "/api/v1/nodes":
            assert request.url.params.get("labelSelector") == "node.kubernetes.io/instance-type"
            return httpx.Response(200, json=fixture("nodelist.json"))
        m = _OBJ.match(path)
        assert m, path
        _, ns, plural, name = m.groups()
        if request.method == "POST":
            body = json.loads(request.content)
            key = (plural, ns, body["metadata"]["name"])
            if key in self.objects:
                return self._status(key[2], 409, plural)
            base = fixture("job.json" if plural == "jobs" else "deployment.json")
            obj = _merge(base, {k: v for k, v in body.items() if k != "status"})
            self.objects[key] = obj
            return httpx.Response(201, json=obj)
        key = (plural, ns, name or "")
        if key not in self.objects:
            return self._status(key[2], 404, plural)
        obj = self.objects[key]
        if request.method == "GET":
            self.polls[key] = self.polls.get(key, 0) + 1
            if self.ready_after is not None and self.polls[key] >= self.ready_after:
                obj["status"] = self._ready(obj)
            return httpx.Response(200, json=obj)
        if request.method == "DELETE":
            assert json.loads(request.content)["propagationPolicy"] == "Background"
            del self.objects[key]
            st = fixture("status_delete.json")
            st["details"].update(name=name, kind=plural)
            return httpx.Response(200, json=st)
        if request.method == "PATCH":
            assert request.headers["Content-Type"] == "application/merge-patch+json"
            obj.update(_merge(obj, json.loads(request.content)))
            obj["metadata"]["generation"] += 1
            return httpx.Response(200, json=obj)
        raise AssertionError(request.method)

    def _ready(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj["kind"] == "Job":
            if self.fail:
                return fixture("job_status_failed.json")
            st = fixture("job_status_running.json")
            st["active"] = st["ready"] = obj["spec"]["parallelism"]
            return dict(st)
        st = fixture("deployment_status_available.json")
        n = obj["spec"]["replicas"]
        st.update(observedGeneration=obj["metadata"]["generation"], replicas=n, updatedReplicas=n, readyReplicas=n,
                  availableReplicas=n)
        return dict(st)


# --- the kubernetes package's models as a schema ------------------------------------------------------


def model_problems(data: Any, type_name: str, where: str = "") -> list[str]:
    """Fields the kubernetes models do not know, and wrong JSON types, anywhere in `data`."""
    import kubernetes.client.models as models

    m = re.match(r"^(?:list|List)\[(.+)\]$", type_name)
    if m:
        if not isinstance(data, list):
            return [f"{where}: expected a list"]
        return [p for i, x in enumerate(data) for p in model_problems(x, m.group(1), f"{where}[{i}]")]
    m = re.match(r"^(?:dict\(str, |Dict\[str, )(.+?)[\])]$", type_name)
    if m:
        if not isinstance(data, dict):
            return [f"{where}: expected a map"]
        return [p for k, v in data.items() for p in model_problems(v, m.group(1), f"{where}.{k}")]
    prim: dict[str, Any] = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object,
                            "datetime": str}
    if type_name in prim:
        ok = isinstance(data, prim[type_name]) and not (type_name == "int" and isinstance(data, bool))
        return [] if ok else [f"{where}: expected {type_name}, got {type(data).__name__}"]
    cls = getattr(models, type_name)
    if not isinstance(data, dict):
        return [f"{where}: expected an object {type_name}"]
    by_json = {j: a for a, j in cls.attribute_map.items()}
    out: list[str] = []
    for k, v in data.items():
        if k not in by_json:
            out.append(f"{where}.{k}: unknown field of {type_name}")
        else:
            out += model_problems(v, cls.openapi_types[by_json[k]], f"{where}.{k}")
    return out


def assert_valid_k8s(manifest: dict[str, Any]) -> None:
    k8s = pytest.importorskip("kubernetes", reason="kubernetes (dev extra) not installed: manifests are only "
                                                   "checked structurally (outputs.k8s_manifests.check_manifest)")
    type_name = {"Job": "V1Job", "Deployment": "V1Deployment"}[manifest["kind"]]
    assert model_problems(manifest, type_name) == []
    # required fields: the models' constructors refuse None for them
    obj = k8s.client.ApiClient()._ApiClient__deserialize(copy.deepcopy(manifest), type_name)
    assert obj.metadata.name == manifest["metadata"]["name"]


# --- helpers ------------------------------------------------------------------------------------------

GANG_OFFER = OfferKey(provider="aws", region="us-east-1", zone="us-east-1a", instance_type="p5.48xlarge",
                      gpu_model="H100-80GB", gpus_per_instance=8, market=Market.SPOT)
GANG_OFFER_OD = GANG_OFFER.model_copy(update={"market": Market.ON_DEMAND, "zone": ""})
REPL_OFFER = OfferKey(provider="aws", region="us-east-1", instance_type="g6.xlarge", gpu_model="L4",
                      gpus_per_instance=1, market=Market.ON_DEMAND)
TRAIN = WorkloadSpec(workload_id="llm-finetune", gpu_throughput={"H100-80GB": 1.0}, min_gpus=16, max_gpus=16,
                     budget_usd_per_hour=1000)
SERVE = WorkloadSpec(workload_id="serve.api", gpu_throughput={"L4": 1.0}, min_gpus=1, max_gpus=8,
                     budget_usd_per_hour=100, topology=Topology.REPLICAS, gpus_per_replica=1)


def config(**kw: Any) -> KubeConfig:
    base: dict[str, Any] = {
        "clusters": {"eks-use1": {"server": SERVER, "token_env": "K8S_TOKEN", "namespace": "cloudarb",
                                  "provider": "aws", "region": "us-east-1", "execute": True},
                     "gke-off": {"server": "https://gke.test", "token_env": "K8S_TOKEN", "provider": "gcp",
                                 "region": "us-central1"}},
        "images": {"default": "nvcr.io/nvidia/pytorch:24.08-py3"}, "poll_s": 2.0, "ready_timeout_s": 30.0}
    base.update(kw)
    return KubeConfig.model_validate(base)


class Mono:
    """A monotonic clock that moves only when the executor sleeps."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


def executor(fake: FakeKube, cfg: KubeConfig | None = None, mono: Mono | None = None) -> K8sExecutor:
    mono = mono or Mono()
    return K8sExecutor(cfg or config(), WorkloadTopologies([TRAIN, SERVE]), env={"K8S_TOKEN": "tok"},
                       transport=fake.transport(), sleep=mono.sleep, clock=mono)


def decision(did: str, wid: str, changes: list[tuple[ChangeAction, OfferKey | None, OfferKey | None, int]],
             per: float = 3.0) -> AllocationDecided:
    assigns = [Assignment(workload_id=wid, offer=to, instances=n, usd_per_hour=per * n)
               for _, _, to, n in changes if to is not None]
    return AllocationDecided(event_id=did, decided_at=datetime.now(UTC), workload_ids=[wid], assignments=assigns,
                             reason="test", changes=[PlanChange(action=a, workload_id=wid, from_offer=f,
                                                                to_offer=to, instances=n) for a, f, to, n in changes])


def runner(ex: K8sExecutor, enabled: tuple[str, ...] = ("aws",), *offers: OfferKey) -> ExecutorRunner:
    prices = MarketPrices({o.key: 3.0 for o in (offers or (GANG_OFFER, GANG_OFFER_OD, REPL_OFFER))})
    caps = Caps(max_instances=64, max_usd_per_hour=1000, max_launches_per_hour=64, max_workload_launches_per_hour=64)
    return ExecutorRunner({"aws": ex}, enabled=enabled, caps=caps, prices=prices)


# --- manifests ------------------------------------------------------------------------------------------


def test_gang_job_manifest() -> None:
    name = object_name(TRAIN.workload_id, "d1", GANG_OFFER)
    m = gang_job(name, "cloudarb", TRAIN.workload_id, "d1", "a1", GANG_OFFER, 2, "img:1")
    s, pod = m["spec"], m["spec"]["template"]["spec"]
    assert (s["completionMode"], s["completions"], s["parallelism"], s["backoffLimit"]) == ("Indexed", 2, 2, 0)
    assert s["podFailurePolicy"]["rules"][0]["action"] == "FailJob" and pod["restartPolicy"] == "Never"
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "p5.48xlarge",
                                   "topology.kubernetes.io/zone": "us-east-1a", "karpenter.sh/capacity-type": "spot"}
    term = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["topologyKey"] == "topology.kubernetes.io/zone"
    assert term["labelSelector"]["matchLabels"].items() <= m["spec"]["template"]["metadata"]["labels"].items()
    res = pod["containers"][0]["resources"]
    assert res["requests"] == res["limits"] == {"nvidia.com/gpu": "8"}
    assert m["metadata"]["annotations"]["cloudarb.io/workload-id"] == "llm-finetune"
    assert check_manifest(m) == []
    assert_valid_k8s(m)


def test_replicas_deployment_manifest() -> None:
    name = object_name(SERVE.workload_id, "d1", REPL_OFFER)
    m = replicas_deployment(name, "cloudarb", SERVE.workload_id, "d1", "a1", REPL_OFFER, 3, "img:1", ["python"])
    pod = m["spec"]["template"]["spec"]
    assert m["spec"]["replicas"] == 3 and "affinity" not in pod
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "g6.xlarge",
                                   "karpenter.sh/capacity-type": "on-demand"}   # no zone: the offer has none
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert check_manifest(m) == []
    assert_valid_k8s(m)


def test_names_deterministic_and_valid() -> None:
    long = "A" * 100 + ".x:y"
    n1, n2 = object_name(long, "d", GANG_OFFER), object_name(long, "d", GANG_OFFER)
    assert n1 == n2 and len(n1) <= 52 and re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", n1)
    assert object_name(long, "e", GANG_OFFER) != n1


def test_model_check_catches_unknown_and_structural_errors() -> None:
    m = gang_job("ca-x-1", "ns", "x", "d", "a", GANG_OFFER, 2, "img")
    bad = copy.deepcopy(m)
    bad["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    pytest.importorskip("kubernetes", reason="kubernetes (dev extra) not installed")
    assert any("unknown field" in p for p in model_problems(bad, "V1Job"))
    broken = copy.deepcopy(m)
    broken["spec"]["parallelism"] = 1
    broken["spec"]["template"]["spec"]["containers"] = []
    assert len(check_manifest(broken)) == 2


def test_readiness_of_recorded_shapes() -> None:
    job = _merge(fixture("job.json"), {"spec": {"parallelism": 2}})
    assert readiness(job) == (False, None)
    job["status"] = {**fixture("job_status_running.json"), "active": 2, "ready": 2}
    assert readiness(job) == (True, None)
    job["status"] = fixture("job_status_failed.json")
    ok, why = readiness(job)
    assert not ok and why and "PodFailurePolicy" in why
    dep = _merge(fixture("deployment.json"), {"spec": {"replicas": 2}})
    dep["status"] = {**fixture("deployment_status_available.json"), "availableReplicas": 1, "updatedReplicas": 2}
    assert readiness(dep) == (False, None)


# --- the executor through the runner ------------------------------------------------------------------


def test_dry_run_by_default_touches_nothing() -> None:
    fake = FakeKube()
    r = runner(executor(fake), enabled=())
    recs = r.handle(decision("d-dry", TRAIN.workload_id, [(ChangeAction.LAUNCH, None, GANG_OFFER, 2)]))
    assert [x.status for x in recs] == ["planned"] and fake.requests == []


def test_gang_launch_creates_indexed_job_and_waits() -> None:
    fake = FakeKube(ready_after=3)
    mono = Mono()
    r = runner(executor(fake, mono=mono))
    recs = r.handle(decision("d-1", TRAIN.workload_id, [(ChangeAction.LAUNCH, None, GANG_OFFER, 2)]))
    assert [(x.status, x.executor, x.instances) for x in recs] == [("done", "k8s", 2)]
    assert len(recs[0].resource_ids) == 2 and recs[0].resource_ids[0].startswith("k8s:eks-use1/cloudarb/jobs/ca-")
    (key, obj), = fake.objects.items()
    assert key[0] == "jobs" and obj["metadata"]["labels"]["cloudarb.io/action"] == recs[0].action_id
    assert obj["spec"]["parallelism"] == 2 and mono.slept == [2.0, 2.0]   # polled until every pod was ready
    assert_valid_k8s({k: obj[k] for k in ("apiVersion", "kind", "metadata", "spec")})   # the API's echo too


def test_idempotent_on_decision_id() -> None:
    fake = FakeKube()
    d = decision("d-same", SERVE.workload_id, [(ChangeAction.LAUNCH, None, REPL_OFFER, 2)])
    first = runner(executor(fake)).handle(d)
    assert [x.status for x in first] == ["done"] and len(fake.objects) == 1
    again = runner(executor(fake)).handle(d)   # a restarted runner without ClickHouse: the executor reuses it
    assert [x.status for x in again] == ["done"] and again[0].resource_ids == first[0].resource_ids
    assert len(fake.objects) == 1 and [w[0] for w in fake.writes] == ["POST", "POST"]   # the second got a 409
    (obj,) = fake.objects.values()
    assert obj["kind"] == "Deployment" and obj["spec"]["replicas"] == 2


def test_conflicting_object_of_another_action_is_not_adopted() -> None:
    fake = FakeKube()
    ex = executor(fake)
    ex.launch("a1", REPL_OFFER, 1, SERVE.workload_id, decision_id="d")
    (obj,) = fake.objects.values()
    assert obj["metadata"]["labels"]["cloudarb.io/decision"] == "d"
    with pytest.raises(Exception, match="not this action's"):
        ex.launch("a2", REPL_OFFER, 1, SERVE.workload_id, decision_id="d")


def test_migration_is_make_before_break() -> None:
    fake = FakeKube(ready_after=2)
    r = runner(executor(fake))
    r.handle(decision("d-a", TRAIN.workload_id, [(ChangeAction.LAUNCH, None, GANG_OFFER, 2)]))
    (old,) = fake.objects
    fake.requests.clear()
    recs = r.handle(decision("d-b", TRAIN.workload_id, [(ChangeAction.MIGRATE, GANG_OFFER, GANG_OFFER_OD, 2)]))
    assert [(x.action, x.status) for x in recs] == [("launch", "done"), ("terminate", "done")]
    (new,) = fake.objects
    assert new != old
    methods = [(m, p.rsplit("/", 1)[-1]) for m, p in fake.requests if m != "GET" or p.endswith(new[2])]
    assert methods == [("POST", "jobs"), ("GET", new[2]), ("GET", new[2]), ("DELETE", old[2])]


def test_migration_keeps_old_when_new_fails() -> None:
    fake = FakeKube()
    r = runner(executor(fake))
    r.handle(decision("d-a", TRAIN.workload_id, [(ChangeAction.LAUNCH, None, GANG_OFFER, 2)]))
    (old,) = fake.objects
    fake.fail = True
    recs = r.handle(decision("d-b", TRAIN.workload_id, [(ChangeAction.MIGRATE, GANG_OFFER, GANG_OFFER_OD, 2)]))
    assert [(x.action, x.status) for x in recs] == [("launch", "failed"), ("terminate", "failed")]
    assert "PodFailurePolicy" in recs[0].detail and "make-before-break" in recs[1].detail
    assert list(fake.objects) == [old]   # the failed gang was deleted, the old one kept


def test_readiness_timeout_is_bounded_and_cleans_up() -> None:
    fake = FakeKube(ready_after=None)
    mono = Mono()
    r = runner(executor(fake, mono=mono))
    recs = r.handle(decision("d-t", TRAIN.workload_id, [(ChangeAction.LAUNCH, None, GANG_OFFER, 2)]))
    assert recs[0].status == "failed" and "TimeoutError" in recs[0].detail
    assert sum(mono.slept) == 30.0 and fake.objects == {}
    assert r.running() == (0, 0.0)


@pytest.mark.parametrize("offer,why", [
    (GANG_OFFER.model_copy(update={"region": "us-west-2"}), "no kube context configured"),
    (GANG_OFFER.model_copy(update={"instance_type": "p4d.24xlarge", "gpu_model": "A100-40GB"}), "no p4d.24xlarge"),
])
def test_bad_input_fails_and_writes_nothing(offer: OfferKey, why: str) -> None:
    fake = FakeKube()
    r = runner(executor(fake), ("aws",), offer)
    recs = r.handle(decision("d-bad", TRAIN.workload_id, [(ChangeAction.LAUNCH, None, offer, 2)]))
    assert recs[0].status == "failed" and why in recs[0].detail
    assert fake.writes == [] and fake.objects == {}


def test_unknown_workload_topology_fails() -> None:
    fake = FakeKube()
    ex = K8sExecutor(config(), WorkloadTopologies(), env={"K8S_TOKEN": "tok"}, transport=fake.transport())
    with pytest.raises(KubeInputError, match="topology"):
        ex.launch("a", GANG_OFFER, 1, "nobody")
    topo = WorkloadTopologies()
    topo.observe([WorkloadRequested(event_id="w", spec=TRAIN, requested_at=datetime.now(UTC))])
    assert topo.get(TRAIN.workload_id) == TRAIN


def test_resize_down_scales_then_terminate_deletes() -> None:
    fake = FakeKube()
    r = runner(executor(fake))
    wid = SERVE.workload_id
    r.handle(decision("d-1", wid, [(ChangeAction.LAUNCH, None, REPL_OFFER, 3)]))
    recs = r.handle(decision("d-2", wid, [(ChangeAction.RESIZE, None, REPL_OFFER, 1)]))
    assert [(x.action, x.status, x.instances) for x in recs] == [("terminate", "done", 2)]
    (obj,) = fake.objects.values()
    assert obj["spec"]["replicas"] == 1
    recs = r.handle(decision("d-3", wid, [(ChangeAction.TERMINATE, REPL_OFFER, None, 0)]))
    assert recs[0].status == "done" and fake.objects == {}


def test_caps_are_checked_by_the_guard_before_the_executor() -> None:
    fake = FakeKube()
    ex = executor(fake)
    r = ExecutorRunner({"aws": ex}, enabled={"aws"}, prices=MarketPrices({GANG_OFFER.key: 3.0}),
                       caps=Caps(max_instances=1, max_usd_per_hour=1000, max_launches_per_hour=64,
                                 max_workload_launches_per_hour=64))
    recs = r.handle(decision("d-cap", TRAIN.workload_id, [(ChangeAction.LAUNCH, None, GANG_OFFER, 2)]))
    assert recs[0].status == "refused" and fake.requests == []


def test_preflight_names_the_problem_without_writing() -> None:
    fake = FakeKube()
    ex = executor(fake)
    bad = GANG_OFFER.model_copy(update={"instance_type": "p4d.24xlarge", "gpu_model": "A100-40GB"})
    d = decision("d-pf", TRAIN.workload_id, [(ChangeAction.LAUNCH, None, bad, 2)])
    assert "no p4d.24xlarge" in (ex.preflight(d) or "")
    ok = decision("d-ok", TRAIN.workload_id, [(ChangeAction.LAUNCH, None, GANG_OFFER, 2)])
    assert ex.preflight(ok) is None and fake.writes == []


def test_config_file_token_file_and_env_factory(tmp_path: Path) -> None:
    tok = tmp_path / "token"
    tok.write_text("tok\n")
    cfg = tmp_path / "k8s.yaml"
    cfg.write_text(f"""
clusters:
  eks-use1: {{server: "{SERVER}", token_file: "{tok}", namespace: cloudarb, provider: aws, region: us-east-1,
             execute: true, instance_types: [p5.48xlarge]}}
  gke: {{server: "https://gke.test", token_env: GKE_TOKEN, provider: gcp, region: us-central1}}
images: {{default: "img:1"}}
""")
    assert set(load_config(cfg).clusters) == {"eks-use1", "gke"}
    fake = FakeKube()
    exs = k8s_executors_from_env({"CLOUDARB_K8S_CONFIG": str(cfg)}, WorkloadTopologies([TRAIN]),
                                 transport=fake.transport())
    assert set(exs) == {"aws"}   # gcp's cluster is not opted in
    exs["aws"].manifest("a", GANG_OFFER, 2, TRAIN.workload_id)
    assert fake.requests == []   # configured instance types: the nodes are not consulted
    with pytest.raises(ValueError, match="token_file or token_env"):
        KubeConfig.model_validate({"clusters": {"x": {"server": SERVER, "provider": "aws", "region": "r"}}})

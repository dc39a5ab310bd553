"""Kubernetes executor: run placements as Jobs / Deployments on clusters the user already has.

Registered in `ExecutorRunner` like the provider executors (`outputs/executors.py`): dry run by default, a
provider acts for real only when it is in `CLOUDARB_EXECUTE`, and within that only the clusters marked
`execute: true` in the config are used (opt-in per cluster). The runner checks the whole decision against
the caps before it calls any executor (`outputs/executor_guard.py`: a migration's launch is counted before
its terminate, so both objects fit the caps while they overlap) and records every step in
`executor_actions` (done / failed / ...); this executor acts, or raises with the reason (-> `failed`).

One kube context per (provider, region) cluster, from YAML (`CLOUDARB_K8S_CONFIG`):

    clusters:
      eks-use1:
        server: https://ABC.gr7.us-east-1.eks.amazonaws.com
        token_file: /var/run/secrets/cloudarb/eks-use1/token   # or token_env: EKS_USE1_TOKEN
        ca_file: /var/run/secrets/cloudarb/eks-use1/ca.crt
        namespace: cloudarb
        provider: aws
        region: us-east-1
        execute: true                 # opt-in; clusters without it are never called
        instance_types: []            # optional: what the cluster can provision (Karpenter scale from zero);
                                      # empty = the instance types of its nodes (GET /api/v1/nodes)
    images: {default: nvcr.io/nvidia/pytorch:24.08-py3, llm-finetune: ghcr.io/acme/ft:1.4}
    ready_timeout_s: 900

What happens (manifests: `outputs/k8s_manifests.py`):

- **launch** of a gang workload -> an indexed Job, of a replicas workload -> a Deployment (one per offer),
  pinned to the offer's instance type, zone and capacity type, `nvidia.com/gpu` per pod. Everything is
  validated first and nothing is written when anything is wrong: a cluster configured for the offer's
  (provider, region), the workload's topology known, the manifest well formed, and the instance type
  present in the cluster (label `node.kubernetes.io/instance-type` of its nodes, or the configured
  `instance_types`). Then create-if-absent (POST; 409 AlreadyExists -> the existing object is reused when it
  carries the same action label, so re-applying a decision creates nothing new) and wait until ready (Job:
  every pod ready; Deployment: available), polling with a bounded timeout; an object that fails or times
  out is deleted (all or nothing) and the launch fails.
- **make-before-break**: a migration is the runner's launch step followed by its terminate step; the launch
  returns only once the new object is ready. When a launch of a workload failed, terminations of that
  workload's objects are refused (`failed`, the old object stays) until a launch of it succeeds or
  `mbb_hold_s` has passed.
- **terminate** deletes the objects (propagationPolicy Background, so their pods go too), or scales a
  Deployment down when only some of its replicas are terminated; a gang Job is never partly terminated.
  Every object is looked up first, and nothing is deleted unless all of them can be.

Resource ids recorded in `executor_actions`: `k8s:<cluster>/<namespace>/<jobs|deployments>/<name>#<i>`, one
per instance (the runner counts instances by resource id). Tokens are never logged or recorded.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from outputs.k8s_manifests import (
    A_WORKLOAD,
    INSTANCE_TYPE_KEY,
    L_ACTION,
    L_MANAGED,
    MANAGED_BY,
    check_manifest,
    gang_job,
    label_value,
    object_name,
    replicas_deployment,
)
from schemas.events import AllocationDecided, Event, WorkloadRequested, WorkloadSpec
from schemas.offers import OfferKey
from schemas.placement import Topology

log = logging.getLogger(__name__)

_PATHS = {"Job": ("/apis/batch/v1", "jobs"), "Deployment": ("/apis/apps/v1", "deployments")}
_KINDS = {plural: kind for kind, (_, plural) in _PATHS.items()}


class KubeInputError(ValueError):
    """The placement cannot run on the configured clusters (nothing was changed)."""


# --- configuration ------------------------------------------------------------------------------------


class KubeCluster(BaseModel):
    model_config = ConfigDict(extra="forbid")

    server: str = Field(pattern=r"^https?://", description="API server URL")
    token_file: Path | None = Field(default=None, description="bearer token file (read per request: rotates)")
    token_env: str | None = Field(default=None, description="environment variable holding the bearer token")
    ca_file: Path | None = Field(default=None, description="CA bundle of the API server; None = system CAs")
    namespace: str = Field(default="default", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    provider: str
    region: str
    execute: bool = Field(default=False, description="opt-in: act on this cluster for real")
    instance_types: list[str] = Field(default_factory=list, description=(
        "instance types the cluster can provision; empty = those of its current nodes"))

    @model_validator(mode="after")
    def _one_token(self) -> KubeCluster:
        if self.token_file is None and self.token_env is None:
            raise ValueError("a cluster needs token_file or token_env")
        return self


class KubeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clusters: dict[str, KubeCluster] = Field(default_factory=dict)
    images: dict[str, str] = Field(default_factory=dict, description="workload id -> image; 'default' for the rest")
    command: list[str] | None = None
    ready_timeout_s: float = Field(default=900.0, gt=0)
    poll_s: float = Field(default=5.0, gt=0)
    request_timeout_s: float = Field(default=30.0, gt=0)
    nodes_ttl_s: float = Field(default=60.0, ge=0)
    mbb_hold_s: float = Field(default=600.0, ge=0)

    @model_validator(mode="after")
    def _one_cluster_per_place(self) -> KubeConfig:
        seen: dict[tuple[str, str], str] = {}
        for name, c in self.clusters.items():
            if c.execute and (c.provider, c.region) in seen:
                raise ValueError(f"clusters {seen[c.provider, c.region]} and {name} both serve "
                                 f"({c.provider}, {c.region})")
            if c.execute:
                seen[c.provider, c.region] = name
        return self


class KubeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLOUDARB_K8S_", extra="ignore", case_sensitive=False)

    config: Path | None = Field(default=None, description="YAML file of KubeConfig")


def load_config(path: Path | str) -> KubeConfig:
    return KubeConfig.model_validate(yaml.safe_load(Path(path).read_text()) or {})


# --- the API ------------------------------------------------------------------------------------------


class _Bearer(httpx.Auth):
    def __init__(self, c: KubeCluster, env: Mapping[str, str]) -> None:
        self._c, self._env = c, env

    def token(self) -> str:
        if self._c.token_file is not None:
            return self._c.token_file.read_text().strip()
        tok = self._env.get(self._c.token_env or "", "")
        if not tok:
            raise KubeInputError(f"token variable {self._c.token_env} is empty")
        return tok

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        yield request


class KubeApiError(RuntimeError):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"HTTP {code} {reason}: {message[:300]}")
        self.code, self.reason = code, reason


class KubeApi:
    """The few Kubernetes API calls the executor needs, over httpx."""

    def __init__(self, name: str, c: KubeCluster, env: Mapping[str, str], timeout_s: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.name, self.cluster = name, c
        verify: Any = str(c.ca_file) if c.ca_file else True
        self._http = httpx.Client(base_url=c.server.rstrip("/"), timeout=timeout_s, transport=transport,
                                  verify=verify, auth=_Bearer(c, env),
                                  headers={"User-Agent": "cloudarb-executor/1", "Accept": "application/json"})

    def call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        r = self._http.request(method, path, **kw)
        if r.status_code >= 300:
            reason, msg = "", r.text
            try:
                st = r.json()
                reason, msg = str(st.get("reason", "")), str(st.get("message", ""))
            except ValueError:
                pass
            raise KubeApiError(r.status_code, reason, msg)
        data = r.json() if r.content else {}
        return data if isinstance(data, dict) else {}

    def path(self, kind: str, namespace: str, name: str | None = None) -> str:
        base, plural = _PATHS[kind]
        return f"{base}/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.call("GET", self.path(kind, namespace, name))
        except KubeApiError as exc:
            if exc.code == 404:
                return None
            raise

    def create_if_absent(self, m: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(the object, created?). An existing object of the same name is reused only when it carries the
        same action label (it is this action's, from an earlier attempt); anything else is a conflict."""
        kind, ns, name = m["kind"], m["metadata"]["namespace"], m["metadata"]["name"]
        try:
            return self.call("POST", self.path(kind, ns), json=m), True
        except KubeApiError as exc:
            if exc.code != 409:
                raise
        cur = self.get(kind, ns, name)
        want = m["metadata"]["labels"][L_ACTION]
        if cur is None or (cur.get("metadata", {}).get("labels") or {}).get(L_ACTION) != want:
            raise KubeApiError(409, "AlreadyExists", f"{kind} {ns}/{name} exists and is not this action's")
        return cur, False

    def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            self.call("DELETE", self.path(kind, namespace, name),
                      json={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})
        except KubeApiError as exc:
            if exc.code != 404:
                raise

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        self.call("PATCH", self.path("Deployment", namespace, name), json={"spec": {"replicas": replicas}},
                  headers={"Content-Type": "application/merge-patch+json"})

    def node_instance_types(self) -> set[str]:
        items = self.call("GET", "/api/v1/nodes", params={"labelSelector": INSTANCE_TYPE_KEY}).get("items") or []
        return {str(lab[INSTANCE_TYPE_KEY]) for n in items
                if INSTANCE_TYPE_KEY in (lab := (n.get("metadata") or {}).get("labels") or {})}


def readiness(obj: dict[str, Any]) -> tuple[bool, str | None]:
    """(ready?, why it can never become ready or None) of a Job or Deployment as the API returns it."""
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    conds = {c.get("type"): c for c in st.get("conditions") or [] if c.get("status") == "True"}
    if obj.get("kind") == "Job":
        if "Failed" in conds or "FailureTarget" in conds:
            c = conds.get("Failed") or conds["FailureTarget"]
            return False, f"job failed: {c.get('reason', '')} {c.get('message', '')}".strip()
        if (st.get("failed") or 0) > 0:
            return False, f"job failed: {st['failed']} pod(s) failed"
        n = int(spec.get("parallelism") or 0)
        ready = st.get("ready")
        up = int(ready) if ready is not None else int(st.get("active") or 0)
        return n > 0 and up >= n, None
    prog = next((c for c in st.get("conditions") or [] if c.get("type") == "Progressing"), None)
    if prog and prog.get("status") == "False" and prog.get("reason") == "ProgressDeadlineExceeded":
        return False, f"deployment stalled: {prog.get('message', '')}"
    gen = int((obj.get("metadata") or {}).get("generation") or 0)
    want = int(spec.get("replicas") or 0)
    ok = (int(st.get("observedGeneration") or 0) >= gen and int(st.get("availableReplicas") or 0) >= want
          and int(st.get("updatedReplicas") or 0) >= want)
    return ok, None


# --- the executor -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectRef:
    cluster: str
    namespace: str
    kind: str
    name: str

    @property
    def rid_prefix(self) -> str:
        return f"k8s:{self.cluster}/{self.namespace}/{_PATHS[self.kind][1]}/{self.name}"

    @classmethod
    def parse(cls, rid: str) -> ObjectRef:
        body = rid.removeprefix("k8s:").split("#", 1)[0]
        parts = body.split("/")
        if not rid.startswith("k8s:") or len(parts) != 4 or parts[2] not in _KINDS:
            raise KubeInputError(f"not a Kubernetes resource id: {rid[:120]!r}")
        return cls(parts[0], parts[1], _KINDS[parts[2]], parts[3])


class WorkloadTopologies:
    """Workload id -> its spec (topology), fed by WorkloadRequested events or read from ClickHouse's
    `workloads` table (the spec of the latest row per workload)."""

    def __init__(self, specs: Iterable[WorkloadSpec] = (), client: Any = None, db: str = "cloudarb") -> None:
        self._specs: dict[str, WorkloadSpec] = {s.workload_id: s for s in specs}
        self.client, self.db = client, db

    def observe(self, events: Iterable[Event]) -> None:
        for e in events:
            if isinstance(e, WorkloadRequested):
                self._specs[e.spec.workload_id] = e.spec

    def get(self, workload_id: str) -> WorkloadSpec | None:
        if workload_id not in self._specs and self.client is not None:
            rows = self.client.query(
                f"SELECT argMax(spec, at) FROM {self.db}.workloads WHERE workload_id = {{w:String}} "
                f"AND spec != '' GROUP BY workload_id", parameters={"w": workload_id}).result_rows
            if rows and rows[0][0]:
                try:
                    self._specs[workload_id] = WorkloadSpec.model_validate(json.loads(rows[0][0]))
                except ValueError:
                    return None
        return self._specs.get(workload_id)


class K8sExecutor:
    """Launch / terminate placements as Kubernetes objects on the cluster serving the offer's place."""

    name = "k8s"
    takes_decision_id = True   # launch(..., decision_id=...) labels objects with the decision (runner wiring)

    def __init__(self, config: KubeConfig, topologies: WorkloadTopologies | Callable[[str], WorkloadSpec | None],
                 env: Mapping[str, str] | None = None, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._spec_of = topologies.get if isinstance(topologies, WorkloadTopologies) else topologies
        env = os.environ if env is None else env
        self.apis = {n: KubeApi(n, c, env, config.request_timeout_s, transport)
                     for n, c in config.clusters.items() if c.execute}
        self._by_place = {(c.provider, c.region): n for n, c in config.clusters.items() if c.execute}
        self._sleep, self._clock = sleep, clock
        self._types: dict[str, tuple[float, set[str]]] = {}
        self._held: dict[str, float] = {}   # workload -> when its last launch failed (make-before-break)
        self._lock = threading.Lock()

    # -- validation (no writes)
    def api_for(self, offer: OfferKey) -> KubeApi:
        name = self._by_place.get((offer.provider, offer.region))
        if name is None:
            raise KubeInputError(f"no kube context configured (execute: true) for ({offer.provider}, "
                                 f"{offer.region})")
        return self.apis[name]

    def instance_types(self, api: KubeApi) -> set[str]:
        if api.cluster.instance_types:
            return set(api.cluster.instance_types)
        now = self._clock()
        hit = self._types.get(api.name)
        if hit is None or now - hit[0] > self.config.nodes_ttl_s:
            hit = (now, api.node_instance_types())
            self._types[api.name] = hit
        return hit[1]

    def manifest(self, action_id: str, offer: OfferKey, instances: int, workload_id: str,
                 decision_id: str | None = None) -> tuple[KubeApi, dict[str, Any]]:
        """The object a launch would create, after every check that needs no write; raises KubeInputError."""
        api = self.api_for(offer)
        spec = self._spec_of(workload_id)
        if spec is None:
            raise KubeInputError(f"workload {workload_id!r} unknown: its topology (gang|replicas) is needed")
        if spec.gpus_per_replica is not None and spec.gpus_per_replica != offer.gpus_per_instance:
            raise KubeInputError(f"{workload_id}: replicas of {spec.gpus_per_replica} GPUs, offer has "
                                 f"{offer.gpus_per_instance} per instance")
        if instances < 1:
            raise KubeInputError("nothing to launch")
        did = decision_id or action_id
        image = self.config.images.get(workload_id) or self.config.images.get("default")
        if not image:
            raise KubeInputError(f"no image configured for {workload_id} (images.default)")
        name = object_name(workload_id, did, offer)
        build = gang_job if spec.topology is Topology.GANG else replicas_deployment
        m = build(name, api.cluster.namespace, workload_id, did, action_id, offer, instances, image,
                  self.config.command)
        errs = check_manifest(m)
        if errs:
            raise KubeInputError("invalid manifest: " + "; ".join(errs))
        types = self.instance_types(api)
        if offer.instance_type not in types:
            raise KubeInputError(f"cluster {api.name} has no {offer.instance_type} nodes "
                                 f"(has: {', '.join(sorted(types))[:300] or 'none'})")
        return api, m

    # -- Executor protocol
    def launch(self, action_id: str, offer: OfferKey, instances: int, workload_id: str,
               decision_id: str | None = None) -> list[str]:
        try:
            api, m = self.manifest(action_id, offer, instances, workload_id, decision_id)
            kind, ns, name = m["kind"], m["metadata"]["namespace"], m["metadata"]["name"]
            api.create_if_absent(m)
            try:
                self._wait_ready(api, kind, ns, name)
            except Exception:
                api.delete(kind, ns, name)   # all or nothing: a gang that cannot start holds no GPUs
                raise
        except Exception:
            with self._lock:
                self._held[workload_id] = self._clock()
            raise
        with self._lock:
            self._held.pop(workload_id, None)
        ref = ObjectRef(api.name, ns, kind, name)
        return [f"{ref.rid_prefix}#{i}" for i in range(instances)]

    def _wait_ready(self, api: KubeApi, kind: str, ns: str, name: str) -> None:
        deadline = self._clock() + self.config.ready_timeout_s
        while True:
            obj = api.get(kind, ns, name)
            if obj is None:
                raise RuntimeError(f"{kind} {ns}/{name} disappeared while starting")
            ok, why = readiness(obj)
            if ok:
                return
            if why:
                raise RuntimeError(f"{kind} {ns}/{name}: {why}")
            if self._clock() >= deadline:
                raise TimeoutError(f"{kind} {ns}/{name} not ready after {self.config.ready_timeout_s:.0f}s")
            self._sleep(self.config.poll_s)

    def terminate(self, offer: OfferKey, resource_ids: Sequence[str]) -> None:
        groups: dict[ObjectRef, int] = {}
        for rid in resource_ids:
            ref = ObjectRef.parse(rid)
            groups[ref] = groups.get(ref, 0) + 1
        plan: list[tuple[KubeApi, ObjectRef, int | None]] = []   # None = delete, else scale to
        for ref, n in groups.items():   # look everything up first: delete nothing unless all can go
            api = self.apis.get(ref.cluster)
            if api is None:
                raise KubeInputError(f"cluster {ref.cluster} is not configured for execution")
            obj = api.get(ref.kind, ref.namespace, ref.name)
            if obj is None:
                continue   # already gone
            meta = obj.get("metadata") or {}
            if (meta.get("labels") or {}).get(L_MANAGED) != MANAGED_BY:
                raise KubeInputError(f"{ref.kind} {ref.namespace}/{ref.name} is not managed by cloudarb")
            wid = (meta.get("annotations") or {}).get(A_WORKLOAD, "")
            with self._lock:
                held = self._held.get(wid)
            if held is not None and self._clock() - held < self.config.mbb_hold_s:
                raise RuntimeError(f"make-before-break: the last launch of {wid} failed; keeping "
                                   f"{ref.kind} {ref.namespace}/{ref.name}")
            spec = obj.get("spec") or {}
            total = int((spec.get("replicas") if ref.kind == "Deployment" else spec.get("parallelism")) or 0)
            if n >= total:
                plan.append((api, ref, None))
            elif ref.kind == "Job":
                raise KubeInputError(f"a gang is all or nothing: cannot terminate {n} of {total} pods of "
                                     f"Job {ref.namespace}/{ref.name}")
            else:
                plan.append((api, ref, total - n))
        for api, ref, to in plan:
            if to is None:
                api.delete(ref.kind, ref.namespace, ref.name)
            else:
                api.scale(ref.namespace, ref.name, to)

    # -- decision-level preflight (optional wiring: see the report / ARCHITECTURE)
    def preflight(self, d: AllocationDecided) -> str | None:
        """Why some launch of the decision cannot run here (checked without writing anything), or None."""
        providers = {p for p, _ in self._by_place}
        for c in d.changes:
            if c.to_offer is None or c.action.value == "terminate" or c.to_offer.provider not in providers:
                continue
            try:
                self.manifest("preflight", c.to_offer, max(c.instances, 1), c.workload_id, d.event_id)
            except (KubeInputError, KubeApiError, httpx.HTTPError) as exc:
                return f"{c.workload_id} on {c.to_offer.key}: {exc}"
        return None


def k8s_executors_from_env(env: Mapping[str, str], topologies: WorkloadTopologies | None = None,
                           transport: httpx.BaseTransport | None = None) -> dict[str, K8sExecutor]:
    """{provider: K8sExecutor} for every provider with a cluster opted in (`execute: true`) in the YAML file
    named by CLOUDARB_K8S_CONFIG; the runner still acts only for providers in CLOUDARB_EXECUTE."""
    path = env.get("CLOUDARB_K8S_CONFIG") or KubeSettings().config
    if not path:
        return {}
    cfg = load_config(path)
    ex = K8sExecutor(cfg, topologies or WorkloadTopologies(), env=env, transport=transport)
    return {c.provider: ex for c in cfg.clusters.values() if c.execute}


__all__ = ["K8sExecutor", "KubeApi", "KubeApiError", "KubeCluster", "KubeConfig", "KubeInputError",
           "ObjectRef", "WorkloadTopologies", "k8s_executors_from_env", "label_value", "load_config", "readiness"]

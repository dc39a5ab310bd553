"""Kubernetes objects for a placement: pure functions, no I/O (the executor is `outputs/executor_k8s.py`).

A **gang** workload (every instance in one place, as a data-parallel job needs) becomes an indexed `Job`
(batch/v1): `completionMode: Indexed`, `parallelism = completions = instances`, all pods or none
(`backoffLimit: 0`, `restartPolicy: Never` and a `podFailurePolicy` failing the whole Job when a pod is
disrupted, e.g. a spot reclaim), and a required pod affinity on `topology.kubernetes.io/zone` keeping every
pod of the gang in one zone. A **replicas** workload becomes a `Deployment` per offer (`replicas =
instances`). Both are pinned to the offer with a nodeSelector:

    node.kubernetes.io/instance-type   the offer's instance type
    topology.kubernetes.io/zone        the offer's zone (only when the offer has one)
    karpenter.sh/capacity-type         spot | on-demand

and request (and limit) `nvidia.com/gpu: gpus_per_instance` per pod, tolerating the usual GPU taint.

Names are deterministic (`object_name`: workload id + decision id + offer), so re-applying one decision
addresses the same objects; labels carry the decision and action ids, an annotation the full workload id
and offer key (label values are limited to 63 characters).

`check_manifest` is the structural check every manifest passes before it is sent (required fields, name
rules, selector matching the pod template, Indexed Job invariants). The tests additionally deserialize
every manifest with the `kubernetes` package's models and fail on unknown fields.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from schemas.offers import Market, OfferKey

GPU_RESOURCE = "nvidia.com/gpu"
MANAGED_BY = "cloudarb"
L_MANAGED = "app.kubernetes.io/managed-by"
L_OBJECT = "cloudarb.io/object"
L_WORKLOAD = "cloudarb.io/workload"
L_DECISION = "cloudarb.io/decision"
L_ACTION = "cloudarb.io/action"
A_WORKLOAD = "cloudarb.io/workload-id"
A_OFFER = "cloudarb.io/offer-key"
ZONE_KEY = "topology.kubernetes.io/zone"
INSTANCE_TYPE_KEY = "node.kubernetes.io/instance-type"
CAPACITY_TYPE_KEY = "karpenter.sh/capacity-type"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _slug(s: str, n: int) -> str:
    out = re.sub(r"[^a-z0-9-]+", "-", s.lower()).strip("-")[:n].strip("-")
    return out or "w"


def label_value(s: str) -> str:
    """`s` made a valid label value (<= 63 chars, alphanumeric at both ends)."""
    v = re.sub(r"[^A-Za-z0-9_.-]+", "-", s)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", v)


def object_name(workload_id: str, decision_id: str, offer: OfferKey) -> str:
    """`ca-<workload slug>-<hash>`: a DNS-1123 label of at most 52 characters (an indexed Job's pods are
    named `<job>-<index>-<random 5>` and their hostname `<job>-<index>` must stay a 63-character label)."""
    h = hashlib.blake2b(f"{workload_id}\x1f{decision_id}\x1f{offer.key}".encode(), digest_size=6).hexdigest()
    return f"ca-{_slug(workload_id, 36)}-{h}"


def capacity_type(offer: OfferKey) -> str:
    return "spot" if offer.market is Market.SPOT else "on-demand"


def node_selector(offer: OfferKey) -> dict[str, str]:
    sel = {INSTANCE_TYPE_KEY: offer.instance_type, CAPACITY_TYPE_KEY: capacity_type(offer)}
    if offer.zone:
        sel[ZONE_KEY] = offer.zone
    return sel


def _meta(name: str, namespace: str, workload_id: str, decision_id: str, action_id: str,
          offer: OfferKey) -> dict[str, Any]:
    labels = {L_MANAGED: MANAGED_BY, L_OBJECT: name, L_WORKLOAD: label_value(workload_id) or "w",
              L_DECISION: label_value(decision_id) or "none", L_ACTION: label_value(action_id) or "none"}
    return {"name": name, "namespace": namespace, "labels": labels,
            "annotations": {A_WORKLOAD: workload_id, A_OFFER: offer.key}}


def _pod_spec(name: str, offer: OfferKey, image: str, command: list[str] | None, restart: str,
              gang: bool) -> dict[str, Any]:
    gpus = str(offer.gpus_per_instance)
    container: dict[str, Any] = {"name": "workload", "image": image,
                                 "resources": {"requests": {GPU_RESOURCE: gpus}, "limits": {GPU_RESOURCE: gpus}}}
    if command:
        container["command"] = list(command)
    spec: dict[str, Any] = {
        "restartPolicy": restart,
        "nodeSelector": node_selector(offer),
        "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
        "containers": [container],
    }
    if gang:  # every pod of the gang in the zone of the first one
        spec["affinity"] = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {L_OBJECT: name}}, "topologyKey": ZONE_KEY}]}}
    return spec


def gang_job(name: str, namespace: str, workload_id: str, decision_id: str, action_id: str, offer: OfferKey,
             instances: int, image: str, command: list[str] | None = None) -> dict[str, Any]:
    """An indexed Job: `instances` pods, all running or the Job fails (no pod is retried alone)."""
    meta = _meta(name, namespace, workload_id, decision_id, action_id, offer)
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
        "spec": {
            "completionMode": "Indexed", "completions": instances, "parallelism": instances,
            "backoffLimit": 0,
            "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]},
            "template": {"metadata": {"labels": dict(meta["labels"]), "annotations": dict(meta["annotations"])},
                         "spec": _pod_spec(name, offer, image, command, "Never", gang=True)},
        },
    }


def replicas_deployment(name: str, namespace: str, workload_id: str, decision_id: str, action_id: str,
                        offer: OfferKey, instances: int, image: str,
                        command: list[str] | None = None) -> dict[str, Any]:
    """A Deployment of `instances` independent replicas on the offer."""
    meta = _meta(name, namespace, workload_id, decision_id, action_id, offer)
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
        "spec": {
            "replicas": instances,
            "selector": {"matchLabels": {L_OBJECT: name}},
            "template": {"metadata": {"labels": dict(meta["labels"]), "annotations": dict(meta["annotations"])},
                         "spec": _pod_spec(name, offer, image, command, "Always", gang=False)},
        },
    }


def check_manifest(m: dict[str, Any]) -> list[str]:
    """What is wrong with a Job or Deployment manifest (empty when nothing): the fields the API server
    requires and the invariants this module promises."""
    errs: list[str] = []
    kind = m.get("kind")
    if (kind, m.get("apiVersion")) not in (("Job", "batch/v1"), ("Deployment", "apps/v1")):
        return [f"unsupported object {m.get('apiVersion')}/{kind}"]
    meta = m.get("metadata") or {}
    name = meta.get("name", "")
    if not isinstance(name, str) or not _DNS1123_LABEL.match(name) or len(name) > 52:
        errs.append(f"metadata.name {name!r} is not a DNS-1123 label of at most 52 characters")
    if not meta.get("namespace") or not _DNS1123_LABEL.match(str(meta.get("namespace"))):
        errs.append("metadata.namespace missing or invalid")
    for k, v in (meta.get("labels") or {}).items():
        if not isinstance(v, str) or len(v) > 63 or not _LABEL_VALUE.match(v):
            errs.append(f"label {k}={v!r} is not a valid label value")
    spec = m.get("spec") or {}
    tpl = spec.get("template") or {}
    pod = tpl.get("spec") or {}
    containers = pod.get("containers") or []
    if not containers:
        errs.append("spec.template.spec.containers is empty")
    for i, c in enumerate(containers):
        if not c.get("name") or not c.get("image"):
            errs.append(f"container {i} needs a name and an image")
        res = c.get("resources") or {}
        if (res.get("requests") or {}).get(GPU_RESOURCE) != (res.get("limits") or {}).get(GPU_RESOURCE):
            errs.append(f"container {i}: {GPU_RESOURCE} requests and limits differ (extended resources need equal)")
    if INSTANCE_TYPE_KEY not in (pod.get("nodeSelector") or {}):
        errs.append(f"nodeSelector lacks {INSTANCE_TYPE_KEY}")
    tpl_labels = (tpl.get("metadata") or {}).get("labels") or {}
    if kind == "Job":
        n = spec.get("completions")
        if spec.get("completionMode") != "Indexed" or not isinstance(n, int) or n < 1 or spec.get("parallelism") != n:
            errs.append("a gang Job is Indexed with parallelism == completions >= 1")
        if spec.get("backoffLimit") != 0:
            errs.append("a gang Job has backoffLimit 0 (all pods or none)")
        if spec.get("podFailurePolicy") and pod.get("restartPolicy") != "Never":
            errs.append("podFailurePolicy needs restartPolicy Never")
    else:
        sel = (spec.get("selector") or {}).get("matchLabels") or {}
        if not sel or any(tpl_labels.get(k) != v for k, v in sel.items()):
            errs.append("spec.selector.matchLabels must match the pod template's labels")
        if not isinstance(spec.get("replicas"), int) or spec["replicas"] < 1:
            errs.append("spec.replicas must be >= 1")
        if pod.get("restartPolicy", "Always") != "Always":
            errs.append("a Deployment's pods restart Always")
    return errs

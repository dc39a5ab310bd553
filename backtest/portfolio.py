"""The portfolio file (YAML or JSON): the workloads a back-test runs, and the market they may use.

    name: training-lab
    risk_tolerance: medium          # the engine's risk weight: low -> 2.0, medium -> 1.0, high -> 0.5
    markets:                        # optional: the footprint (quota) of the team; filters the replay
      providers: [gcp, lambdalabs]  # omitted = every provider in the data
      regions: [us-central1, global]  # omitted = every region ('global' = the neocloud tracker's region)
    workloads:
      - workload_id: llm-pretrain
        gpu_throughput: {H100-80GB: 1.7, A100-80GB: 1.0}   # acceptable GPU models, relative throughput
        min_gpus: 16
        max_gpus: 16
        budget_usd_per_hour: 120
        spot_allowed: true          # false = on-demand only (max_spot_share 0)
        risk_tolerance: low         # low / medium / high -> max_spot_share 0.25 / 0.5 / 1.0 (unless given);
                                    # low also plans on the p90 price forecast (risk_averse, unless given)
        home_provider: gcp          # the home cloud of the on-demand baseline
        restart_overhead_h: 1.0
        restart_scope: workload     # workload (= topology: gang) | instance (= topology: replicas); or give
                                    # topology (gang | replicas, gpus_per_replica, ...) directly
        state_gb: 800               # checkpoint + data a move copies (egress + transfer time)
        start: +0d                  # offset from the replay start (+3d, +12h, +90m) or an ISO UTC time
        end: +60d                   # omitted = the end of the replay window
    quotas:                         # optional: the GPU quotas the team holds (schemas.placement.GpuQuota);
      - {provider: gcp, region: '*', gpu: H100, gpus: 32}   # every strategy must stay within them

Any other `WorkloadSpec` field (priority, same_region, allowed_providers, max_spot_share) may be given.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from schemas.events import WorkloadSpec
from schemas.placement import GpuQuota, Topology

SCOPE_TOPOLOGY = {"workload": "gang", "instance": "replicas"}
RISK_LAMBDA = {"low": 2.0, "medium": 1.0, "high": 0.5}
SPOT_SHARE = {"low": 0.25, "medium": 0.5, "high": 1.0}
_REL = re.compile(r"^\+?(\d+(?:\.\d+)?)\s*([dhm])$")


@dataclass(frozen=True)
class PortfolioWorkload:
    spec: WorkloadSpec
    start: str | None = None
    end: str | None = None

    @property
    def restart_scope(self) -> str:
        """'workload' for a gang (any restart stops the whole job), 'instance' for replicas."""
        return "workload" if self.spec.topology is Topology.GANG else "instance"

    def window(self, t0: datetime, t1: datetime) -> tuple[datetime, datetime]:
        """Absolute [start, end) of this workload inside the replay window [t0, t1]."""
        s = resolve_time(self.start, t0) if self.start else t0
        e = resolve_time(self.end, t0) if self.end else t1
        return max(s, t0), min(e, t1)


@dataclass(frozen=True)
class Portfolio:
    name: str
    workloads: tuple[PortfolioWorkload, ...]
    risk_tolerance: str = "medium"
    providers: frozenset[str] | None = None
    regions: frozenset[str] | None = None
    engine: dict[str, Any] = field(default_factory=dict)
    quotas: tuple[GpuQuota, ...] = ()

    @property
    def risk_lambda(self) -> float:
        return RISK_LAMBDA[self.risk_tolerance]

    def in_market(self, provider: str, region: str) -> bool:
        return ((self.providers is None or provider in self.providers)
                and (self.regions is None or region in self.regions))


def resolve_time(v: str, t0: datetime) -> datetime:
    m = _REL.match(v.strip())
    if m:
        n, unit = float(m.group(1)), m.group(2)
        return t0 + timedelta(**{{"d": "days", "h": "hours", "m": "minutes"}[unit]: n})
    t = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"time {v!r} must be a UTC offset like +3d or an ISO time with a zone")
    return t


def parse_portfolio(doc: dict[str, Any], default_name: str = "portfolio") -> Portfolio:
    if not isinstance(doc, dict) or not isinstance(doc.get("workloads"), list) or not doc["workloads"]:
        raise ValueError("a portfolio needs a non-empty 'workloads' list")
    risk = str(doc.get("risk_tolerance", "medium"))
    if risk not in RISK_LAMBDA:
        raise ValueError(f"risk_tolerance must be one of {sorted(RISK_LAMBDA)}")
    out: list[PortfolioWorkload] = []
    for raw in doc["workloads"]:
        w = dict(raw)
        start, end = w.pop("start", None), w.pop("end", None)
        spot = w.pop("spot_allowed", True)
        wrisk = w.pop("risk_tolerance", None)
        scope = w.pop("restart_scope", None)
        if scope is not None:   # one concept: restart_scope is the topology seen from its restarts
            if scope not in SCOPE_TOPOLOGY:
                raise ValueError(f"{w.get('workload_id')}: restart_scope must be 'workload' or 'instance'")
            if "topology" in w and w["topology"] != SCOPE_TOPOLOGY[scope]:
                raise ValueError(f"{w.get('workload_id')}: restart_scope {scope!r} contradicts topology "
                                 f"{w['topology']!r} (workload = gang, instance = replicas)")
            w["topology"] = SCOPE_TOPOLOGY[scope]
        if wrisk is not None and wrisk not in SPOT_SHARE:
            raise ValueError(f"{w.get('workload_id')}: risk_tolerance must be one of {sorted(SPOT_SHARE)}")
        if not spot:
            w["max_spot_share"] = 0.0
        elif "max_spot_share" not in w and wrisk is not None:
            w["max_spot_share"] = SPOT_SHARE[wrisk]
        if wrisk == "low":
            w.setdefault("risk_averse", True)
        spec = WorkloadSpec.model_validate(w)
        pw = PortfolioWorkload(spec=spec, start=None if start is None else str(start),
                               end=None if end is None else str(end))
        for v in (pw.start, pw.end):
            if v is not None:
                resolve_time(v, datetime.fromisoformat("2025-01-01T00:00:00+00:00"))  # validate early
        out.append(pw)
    ids = [w.spec.workload_id for w in out]
    if len(set(ids)) != len(ids):
        raise ValueError("workload_id values must be unique")
    mk = doc.get("markets") or {}
    raw_q = doc.get("quotas") or []
    if not isinstance(raw_q, list):
        raise ValueError("quotas must be a list of {provider, region, gpu, gpus}")
    quotas = tuple(GpuQuota.model_validate(q) for q in raw_q)
    if len({q.key for q in quotas}) != len(quotas):
        raise ValueError("quotas: one entry per provider/region/gpu")
    return Portfolio(name=str(doc.get("name", default_name)), workloads=tuple(out), risk_tolerance=risk,
                     providers=frozenset(mk["providers"]) if mk.get("providers") else None,
                     regions=frozenset(mk["regions"]) if mk.get("regions") else None,
                     engine=dict(doc.get("engine") or {}), quotas=quotas)


def load_portfolio(path: Path) -> Portfolio:
    text = path.read_text()
    doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return parse_portfolio(doc, default_name=path.stem)

"""Deployment executors: act on AllocationDecided.

`ExecutorRunner.handle(decision)` turns each plan change (launch, terminate, migrate, resize) into
provider actions. Dry run is the default: a provider's real executor acts only when that provider is
explicitly enabled (opt-in); otherwise the intended action is recorded with status `planned`.

Decisions are not trusted (`outputs/executor_guard.py`): each one is checked as a whole before any of
it runs. Launches are priced at the market (max of the latest known price of the offer and the
decision's own), an offer without a market price or a change without a matching assignment is refused,
caps bound instances, $/h, and instances launched per rolling hour (in total and per workload), and
decisions dated in the future (or, for real executors, stale ones) are refused. A refused decision
changes nothing; its steps are recorded with status `refused` and the reason. Idempotent on decision id
(decisions already handled, in memory and in ClickHouse, are skipped; AWS launches also pass the action
id as ClientToken). Every action is recorded in ClickHouse `executor_actions` with what happened:
planned / done / failed / skipped / refused. Broker ACLs and SASL/SSL: outputs/README.md
("Kafka security and ACLs").

Real executors: AWS (boto3 run_instances or create_fleet, terminate_instances), Lambda Cloud and
RunPod (their REST launch/terminate APIs over httpx). Credentials come from the environment or the
caller and never appear in records or logs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from outputs.executor_guard import (
    Budget,
    Caps,
    ClickHouseLatestPrices,
    LaunchWindow,
    MarketPrices,
    PriceSource,
    decision_time_refusal,
)
from schemas.events import AllocationDecided, ChangeAction, Event, PriceObserved, deterministic_id
from schemas.offers import Market, OfferKey

log = logging.getLogger(__name__)

ACTION_COLUMNS = ["action_id", "decision_id", "executor", "action", "workload_id", "offer_key", "instances",
                  "usd_per_hour", "status", "detail", "resource_ids", "at"]


class Executor(Protocol):
    name: str

    def launch(self, action_id: str, offer: OfferKey, instances: int, workload_id: str) -> list[str]:
        """Start `instances` of `offer`; returns provider resource ids. Raises on failure."""

    def terminate(self, offer: OfferKey, resource_ids: Sequence[str]) -> None: ...


class DryRunExecutor:
    name = "dry-run"

    def launch(self, action_id: str, offer: OfferKey, instances: int, workload_id: str) -> list[str]:
        return [f"dry-{action_id[:10]}-{i}" for i in range(instances)]

    def terminate(self, offer: OfferKey, resource_ids: Sequence[str]) -> None:
        return None


class AwsExecutor:
    """EC2 via boto3: run_instances (default) or an instant create_fleet with a launch template."""

    name = "aws"

    def __init__(self, image_id: str | None = None, launch_template_id: str | None = None, use_fleet: bool = False,
                 key_name: str | None = None, subnet_id: str | None = None,
                 security_group_ids: Sequence[str] = (), session: Any = None) -> None:
        if not image_id and not launch_template_id:
            raise ValueError("AWS executor needs an image_id or a launch_template_id")
        self.image_id, self.launch_template_id, self.use_fleet = image_id, launch_template_id, use_fleet
        self.key_name, self.subnet_id, self.security_group_ids = key_name, subnet_id, list(security_group_ids)
        self._session = session
        self._clients: dict[str, Any] = {}

    def _ec2(self, region: str) -> Any:
        if region not in self._clients:
            import boto3

            s = self._session or boto3.session.Session()
            self._clients[region] = s.client("ec2", region_name=region)
        return self._clients[region]

    def launch(self, action_id: str, offer: OfferKey, instances: int, workload_id: str) -> list[str]:
        ec2 = self._ec2(offer.region)
        tags = [{"Key": "cloudarb:workload", "Value": workload_id}, {"Key": "cloudarb:action", "Value": action_id}]
        spot = offer.market is Market.SPOT
        if self.use_fleet and self.launch_template_id:
            override: dict[str, Any] = {"InstanceType": offer.instance_type}
            if offer.zone:
                override["AvailabilityZone"] = offer.zone
            resp = ec2.create_fleet(
                ClientToken=action_id, Type="instant",
                LaunchTemplateConfigs=[{"LaunchTemplateSpecification": {"LaunchTemplateId": self.launch_template_id,
                                                                        "Version": "$Latest"},
                                        "Overrides": [override]}],
                TargetCapacitySpecification={"TotalTargetCapacity": instances,
                                             "DefaultTargetCapacityType": "spot" if spot else "on-demand"},
                TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
            ids = [i for grp in resp.get("Instances", []) for i in grp.get("InstanceIds", [])]
            if len(ids) < instances:
                errs = "; ".join(f"{e.get('ErrorCode')}: {e.get('ErrorMessage')}" for e in resp.get("Errors", []))
                if ids:
                    ec2.terminate_instances(InstanceIds=ids)  # all or nothing
                raise RuntimeError(f"fleet gave {len(ids)}/{instances} instances: {errs or 'no reason given'}")
            return ids
        kw: dict[str, Any] = {"ImageId": self.image_id, "InstanceType": offer.instance_type, "MinCount": instances,
                              "MaxCount": instances, "ClientToken": action_id,
                              "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}]}
        if spot:
            kw["InstanceMarketOptions"] = {"MarketType": "spot",
                                           "SpotOptions": {"SpotInstanceType": "one-time",
                                                           "InstanceInterruptionBehavior": "terminate"}}
        if offer.zone:
            kw["Placement"] = {"AvailabilityZone": offer.zone}
        if self.key_name:
            kw["KeyName"] = self.key_name
        if self.subnet_id:
            kw["SubnetId"] = self.subnet_id
        if self.security_group_ids:
            kw["SecurityGroupIds"] = self.security_group_ids
        resp = ec2.run_instances(**kw)
        return [i["InstanceId"] for i in resp["Instances"]]

    def terminate(self, offer: OfferKey, resource_ids: Sequence[str]) -> None:
        if resource_ids:
            self._ec2(offer.region).terminate_instances(InstanceIds=list(resource_ids))


class _HttpExecutor:
    name = "http"
    base_url = ""

    def __init__(self, api_key: str, base_url: str | None = None, timeout_s: float = 30.0,
                 transport: Any = None) -> None:
        import httpx

        self._http = httpx.Client(base_url=base_url or self.base_url, timeout=timeout_s, transport=transport,
                                  headers={"Authorization": f"Bearer {api_key}", "User-Agent": "cloudarb-executor/1"})

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        r = self._http.request(method, path, **kw)
        if r.status_code >= 300:
            # the provider's message, never our request headers
            raise RuntimeError(f"{self.name} {method} {path}: HTTP {r.status_code} {r.text[:300]}")
        return r.json() if r.content else {}


class LambdaExecutor(_HttpExecutor):
    """Lambda Cloud API: POST /instance-operations/launch and /instance-operations/terminate."""

    name = "lambda"
    base_url = "https://cloud.lambdalabs.com/api/v1"

    def __init__(self, api_key: str, ssh_key_names: Sequence[str] = (), **kw: Any) -> None:
        super().__init__(api_key, **kw)
        self.ssh_key_names = list(ssh_key_names)

    def launch(self, action_id: str, offer: OfferKey, instances: int, workload_id: str) -> list[str]:
        body = {"region_name": offer.region, "instance_type_name": offer.instance_type,
                "ssh_key_names": self.ssh_key_names, "quantity": instances,
                "name": f"cloudarb-{workload_id}"[:64]}
        data = self._call("POST", "/instance-operations/launch", json=body)
        ids = list(data.get("data", {}).get("instance_ids", []))
        if len(ids) < instances:
            if ids:
                self.terminate(offer, ids)
            raise RuntimeError(f"lambda launched {len(ids)}/{instances} instances")
        return ids

    def terminate(self, offer: OfferKey, resource_ids: Sequence[str]) -> None:
        if resource_ids:
            self._call("POST", "/instance-operations/terminate", json={"instance_ids": list(resource_ids)})


class RunPodExecutor(_HttpExecutor):
    """RunPod REST API: POST /pods (one pod per instance; spot = interruptible), DELETE /pods/{id}."""

    name = "runpod"
    base_url = "https://rest.runpod.io/v1"

    def __init__(self, api_key: str, image_name: str = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04",
                 cloud_type: str = "SECURE", **kw: Any) -> None:
        super().__init__(api_key, **kw)
        self.image_name, self.cloud_type = image_name, cloud_type

    def launch(self, action_id: str, offer: OfferKey, instances: int, workload_id: str) -> list[str]:
        ids: list[str] = []
        try:
            for i in range(instances):
                body = {"name": f"cloudarb-{workload_id}-{i}"[:64], "imageName": self.image_name,
                        "gpuTypeIds": [offer.instance_type], "gpuCount": offer.gpus_per_instance,
                        "cloudType": self.cloud_type, "interruptible": offer.market is Market.SPOT}
                ids.append(str(self._call("POST", "/pods", json=body)["id"]))
        except Exception:
            self.terminate(offer, ids)  # all or nothing
            raise
        return ids

    def terminate(self, offer: OfferKey, resource_ids: Sequence[str]) -> None:
        for rid in resource_ids:
            self._call("DELETE", f"/pods/{rid}")


@dataclass
class ActionRecord:
    action_id: str
    decision_id: str
    executor: str
    action: str
    workload_id: str
    offer_key: str
    instances: int
    usd_per_hour: float
    status: str
    detail: str = ""
    resource_ids: list[str] = field(default_factory=list)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def row(self) -> list[Any]:
        return [getattr(self, c) for c in ACTION_COLUMNS]


@dataclass(frozen=True)
class Step:
    """One provider action of a decision: change `change` of the decision, `action` launch or terminate."""

    action_id: str
    change: int
    action: str
    workload_id: str
    offer: OfferKey
    instances: int


class ExecutorRunner:
    """Applies decisions through per-provider executors (opt-in), within caps, once per decision.

    A decision is checked as a whole before any of it runs (see `outputs.executor_guard`): launches are
    priced at max(market price from `prices`, the decision's own price); changes without a matching
    assignment, offers without a market price, anything over a cap (instances, $/h, launches per rolling
    hour in total and per workload) and decisions dated in the future or (for real executors) older than
    `caps.max_decision_age_s` refuse the whole decision: nothing is done, every step is recorded `refused`.
    """

    def __init__(self, executors: dict[str, Executor] | None = None, enabled: Iterable[str] = (),
                 caps: Caps | None = None, client: Any = None, db: str = "cloudarb",
                 record: Callable[[list[ActionRecord]], None] | None = None,
                 max_decision_age_s: float | None = None, prices: PriceSource | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        """`prices`: the market price source (default: ClickHouse `offer_latest` when `client` is given,
        else an empty `MarketPrices`, fed by `handle_events` with `PriceObserved`; with no known price
        every launch is refused). `max_decision_age_s` overrides `caps.max_decision_age_s`. `clock`: now."""
        self.executors = dict(executors or {})
        self.enabled = set(enabled)
        self.caps = caps or Caps()
        if max_decision_age_s is not None:
            self.caps = replace(self.caps, max_decision_age_s=max_decision_age_s)
        self.client, self.db = client, db
        self.prices: PriceSource = prices or (ClickHouseLatestPrices(client, db) if client is not None
                                              else MarketPrices())
        self._clock = clock or (lambda: datetime.now(UTC))
        self.dry = DryRunExecutor()
        self._record = record
        self.handled: set[str] = set()
        self.records: list[ActionRecord] = []
        # (workload, offer key) -> [(resource id, usd/h per instance, real?)]
        self.inventory: dict[tuple[str, str], list[tuple[str, float, bool]]] = {}
        self.launches = LaunchWindow()
        self._done: dict[str, ActionRecord] = {}
        self._lock = threading.Lock()
        if client is not None:
            self._restore()

    # -- state
    def _restore(self) -> None:
        rows = self.client.query(
            f"SELECT decision_id, executor, action, workload_id, offer_key, usd_per_hour, instances, status, "
            f"resource_ids, at FROM {self.db}.executor_actions FINAL ORDER BY at, action_id").result_rows
        for did, ex, action, wid, key, usd, n, status, rids, at in rows:
            self.handled.add(did)
            if status not in ("done", "planned"):
                continue
            inv = self.inventory.setdefault((wid, key), [])
            if action == "launch":
                per = usd / n if n else 0.0
                inv += [(r, per, ex != "dry-run") for r in rids]
                self.launches.add(at, wid, n)
            elif action == "terminate":
                gone = set(rids)
                inv[:] = [x for x in inv if x[0] not in gone]

    def running(self) -> tuple[int, float]:
        """(instances, $/h) of everything launched and not terminated (dry-run included: caps model intent)."""
        items = [x for inv in self.inventory.values() for x in inv]
        return len(items), sum(x[1] for x in items)

    def executor_for(self, offer: OfferKey) -> Executor:
        if offer.provider in self.enabled and offer.provider in self.executors:
            return self.executors[offer.provider]
        return self.dry

    # -- handling
    def handle_events(self, events: Sequence[Event]) -> None:
        """Decisions are handled; prices feed the runner's `MarketPrices` source, if that is its source."""
        for e in events:
            if isinstance(e, AllocationDecided):
                self.handle(e)
            elif isinstance(e, PriceObserved) and isinstance(self.prices, MarketPrices):
                self.prices.observe([e])

    def _steps(self, d: AllocationDecided) -> tuple[list[Step], str | None]:
        """The decision's provider actions in order (instance counts from the inventory), or why not."""
        have = {k: len(v) for k, v in self.inventory.items()}
        steps: list[Step] = []
        for i, c in enumerate(d.changes):
            raw: list[tuple[str, OfferKey, int]] = []
            if c.action is ChangeAction.LAUNCH and c.to_offer:
                raw.append(("launch", c.to_offer, c.instances))
            elif c.action is ChangeAction.TERMINATE and c.from_offer:
                raw.append(("terminate", c.from_offer, have.get((c.workload_id, c.from_offer.key), 0)))
            elif c.action is ChangeAction.MIGRATE and c.to_offer and c.from_offer:
                raw += [("launch", c.to_offer, c.instances),
                        ("terminate", c.from_offer, have.get((c.workload_id, c.from_offer.key), 0))]
            elif c.action is ChangeAction.RESIZE and c.to_offer:
                n = have.get((c.workload_id, c.to_offer.key), 0)
                if c.instances > n:
                    raw.append(("launch", c.to_offer, c.instances - n))
                elif c.instances < n:
                    raw.append(("terminate", c.to_offer, n - c.instances))
            else:
                return steps, f"change {i} ({c.action.value} for {c.workload_id}) lacks its offer"
            for j, (action, offer, n) in enumerate(raw):
                k = (c.workload_id, offer.key)
                have[k] = have.get(k, 0) + (n if action == "launch" else -n)
                steps.append(Step(deterministic_id("exec", d.event_id, i, j, action, c.workload_id, offer.key), i,
                                  action, c.workload_id, offer, n))
        return steps, None

    def _check(self, d: AllocationDecided, steps: Sequence[Step], now: datetime) -> tuple[dict[str, float], str | None]:
        """Price every launch at the market and run the whole decision against the caps, doing nothing.
        Returns ($/h per instance by action id, why the decision is refused or None)."""
        assigned: dict[tuple[str, str], tuple[int, float]] = {}
        for a in d.assignments:
            n, p = assigned.get((a.workload_id, a.offer.key), (0, 0.0))
            assigned[a.workload_id, a.offer.key] = (n + a.instances, max(p, a.usd_per_hour / a.instances))
        market = self.prices.latest({s.offer.key for s in steps if s.action == "launch" and s.instances > 0})
        count, usd = self.running()
        launched, by_wl = self.launches.counts(now)
        budget = Budget(self.caps, count, usd, launched, by_wl)
        have = {k: len(v) for k, v in self.inventory.items()}
        per: dict[str, float] = {}
        for s in steps:
            k = (s.workload_id, s.offer.key)
            what = f"change {s.change}: {s.action} {s.instances} x {s.offer.key} for {s.workload_id}"
            if s.action == "terminate":
                inv = self.inventory.get(k, [])
                gone = inv[max(0, len(inv) - s.instances):]
                budget.terminate(len(gone), sum(p for _, p, _ in gone))
                have[k] = have.get(k, 0) - s.instances
                continue
            if s.instances <= 0:
                continue
            if k not in assigned:
                return per, f"{what}: no matching assignment in the decision"
            if have.get(k, 0) + s.instances > assigned[k][0]:
                return per, (f"{what}: would run {have.get(k, 0) + s.instances}, the decision assigns "
                             f"{assigned[k][0]}")
            if s.offer.key not in market:
                return per, f"{what}: no known market price for the offer (not launching at an unverified price)"
            per[s.action_id] = max(market[s.offer.key], assigned[k][1])
            over = budget.launch(s.workload_id, s.instances, per[s.action_id])
            if over is not None:
                return per, f"{what}: {over}"
            have[k] = have.get(k, 0) + s.instances
        return per, None

    def handle(self, d: AllocationDecided) -> list[ActionRecord]:
        with self._lock:
            if d.event_id in self.handled:
                return []
            now = self._clock()
            steps, reason = self._steps(d)
            real = any(self.executor_for(s.offer) is not self.dry for s in steps)
            reason = reason or decision_time_refusal(d.decided_at, now, self.caps, real)
            per: dict[str, float] = {}
            if reason is None:
                per, reason = self._check(d, steps, now)
            status = "refused"
            if reason is None:   # an executor that can check a whole decision first (no partial apply)
                for ex in {id(e): e for e in (self.executor_for(s.offer) for s in steps)}.values():
                    reason = getattr(ex, "preflight", lambda _d: None)(d)
                    if reason:
                        status = "failed"   # the target cannot run it (not a policy refusal): nothing is done
                        break
            if reason is not None:
                out = self._refuse(d, steps, reason, per, now, status)
            else:
                out = [self._act(s, d.event_id, per.get(s.action_id, 0.0), now) for s in steps]
            self._save(out)
            self.handled.add(d.event_id)
            return out

    def _refuse(self, d: AllocationDecided, steps: Sequence[Step], reason: str, per: dict[str, float],
                now: datetime, status: str = "refused") -> list[ActionRecord]:
        detail = f"decision {status}: {reason}"[:1000]
        log.warning("executors: decision %s refused: %s", d.event_id, reason)
        if not steps:
            return [ActionRecord(deterministic_id("exec", d.event_id, "refused"), d.event_id, "-", "decision",
                                 ",".join(d.workload_ids)[:200], "", 0, 0.0, status, detail, at=now)]
        return [ActionRecord(s.action_id, d.event_id, self.executor_for(s.offer).name, s.action, s.workload_id,
                             s.offer.key, s.instances, round(per.get(s.action_id, 0.0) * s.instances, 6), status,
                             detail, at=now) for s in steps]

    def _act(self, s: Step, did: str, per: float, now: datetime) -> ActionRecord:
        if s.action_id in self._done:
            return self._done[s.action_id]
        aid, action, wid, offer, n = s.action_id, s.action, s.workload_id, s.offer, s.instances
        ex = self.executor_for(offer)
        rec = ActionRecord(aid, did, ex.name, action, wid, offer.key, n, round(per * n, 6), "planned", at=now)
        inv = self.inventory.setdefault((wid, offer.key), [])
        try:
            if action == "launch":
                count, usd = self.running()  # checked before the decision ran; again in case a step failed
                if n <= 0:
                    rec.status, rec.detail = "skipped", "nothing to launch"
                elif count + n > self.caps.max_instances:
                    rec.status, rec.detail = "skipped", (f"cap: {count}+{n} instances > max {self.caps.max_instances}")
                elif usd + per * n > self.caps.max_usd_per_hour + 1e-9:
                    rec.status, rec.detail = "skipped", (f"cap: ${usd + per * n:.2f}/h > max "
                                                         f"${self.caps.max_usd_per_hour:.2f}/h")
                else:
                    rec.resource_ids = (ex.launch(aid, offer, n, wid, decision_id=did)  # type: ignore[call-arg]
                                        if getattr(ex, "takes_decision_id", False) else ex.launch(aid, offer, n, wid))
                    inv += [(r, per, ex is not self.dry) for r in rec.resource_ids]
                    self.launches.add(now, wid, len(rec.resource_ids))
                    rec.status = "planned" if ex is self.dry else "done"
                    rec.detail = "dry run: would launch" if ex is self.dry else "launched"
            else:
                victims = inv[-n:] if n else []
                if not victims:
                    rec.status, rec.detail = "skipped", "no known resources to terminate"
                else:
                    real = [r for r, _, is_real in victims if is_real]
                    if real and ex is not self.dry:
                        ex.terminate(offer, real)
                    elif real:
                        raise RuntimeError(f"{len(real)} real instances but {offer.provider} is not enabled")
                    rec.resource_ids = [r for r, _, _ in victims]
                    rec.instances = len(victims)
                    rec.usd_per_hour = round(sum(p for _, p, _ in victims), 6)
                    del inv[len(inv) - len(victims):]
                    rec.status = "planned" if ex is self.dry else "done"
                    rec.detail = "dry run: would terminate" if ex is self.dry else "terminated"
        except Exception as exc:
            rec.status, rec.detail = "failed", f"{type(exc).__name__}: {str(exc)[:400]}"
            log.warning("executor %s %s for %s failed: %s", ex.name, action, wid, type(exc).__name__)
        self._done[aid] = rec
        return rec

    def _save(self, recs: list[ActionRecord]) -> None:
        self.records += recs
        if self._record is not None:
            self._record(recs)
        if self.client is not None and recs:
            self.client.insert(f"{self.db}.executor_actions", [r.row() for r in recs], column_names=ACTION_COLUMNS)


def executors_from_env(env: dict[str, str]) -> tuple[dict[str, Executor], set[str]]:
    """Real executors configured from the environment, and the providers explicitly enabled.

    CLOUDARB_EXECUTE=aws,lambda,runpod opts providers in (default: none, dry run only).
    AWS: CLOUDARB_AWS_IMAGE_ID or CLOUDARB_AWS_LAUNCH_TEMPLATE_ID (+ CLOUDARB_AWS_USE_FLEET=1), standard AWS creds.
    Lambda: LAMBDA_API_KEY, CLOUDARB_LAMBDA_SSH_KEYS. RunPod: RUNPOD_API_KEY, CLOUDARB_RUNPOD_IMAGE.
    """
    enabled = {p.strip() for p in env.get("CLOUDARB_EXECUTE", "").split(",") if p.strip()}
    ex: dict[str, Executor] = {}
    if "aws" in enabled and (env.get("CLOUDARB_AWS_IMAGE_ID") or env.get("CLOUDARB_AWS_LAUNCH_TEMPLATE_ID")):
        ex["aws"] = AwsExecutor(image_id=env.get("CLOUDARB_AWS_IMAGE_ID"),
                                launch_template_id=env.get("CLOUDARB_AWS_LAUNCH_TEMPLATE_ID"),
                                use_fleet=env.get("CLOUDARB_AWS_USE_FLEET") == "1")
    if "lambda" in enabled and env.get("LAMBDA_API_KEY"):
        keys = [k for k in env.get("CLOUDARB_LAMBDA_SSH_KEYS", "").split(",") if k]
        ex["lambda"] = LambdaExecutor(env["LAMBDA_API_KEY"], ssh_key_names=keys)
        ex["lambdalabs"] = ex["lambda"]
    if "runpod" in enabled and env.get("RUNPOD_API_KEY"):
        ex["runpod"] = RunPodExecutor(env["RUNPOD_API_KEY"], **(
            {"image_name": env["CLOUDARB_RUNPOD_IMAGE"]} if env.get("CLOUDARB_RUNPOD_IMAGE") else {}))
    if "lambda" in enabled:
        enabled.add("lambdalabs")
    return ex, enabled

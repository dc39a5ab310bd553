"""Benchmark: the Kubernetes executor's actions for one year-long back-test's decisions, replayed in dry run.

`.venv/bin/python tests/benchmarks/bench_k8s_replay.py [--quick]` (not a timed test; skips itself, with a
message, where ../shared/data is missing).

1. **Decisions.** Runs the back-test of examples/portfolios/training-lab.yaml on ../shared/data over the year
   2024-11-08 -> 2025-11-08 (the window bench_backtest.py calls "one_year"; CLI defaults otherwise: portfolio
   engine, spot-trace overlay, budget guard, every strategy) in-process, and captures every AllocationDecided
   the engine strategy's `streams.core.decider.Decider` emits: `Decider.step` of the back-test's EngineStrategy is
   wrapped (in this script only; the back-test code is unchanged) to collect `res.decisions`, budget-guard
   re-decisions included, in the order they are made.
2. **Replay.** Feeds them, in order, to a real `outputs.executors.ExecutorRunner` whose executors are one
   `outputs.executor_k8s.K8sExecutor` (every provider the decisions use is in the runner's enabled set; one
   KubeConfig cluster, `execute: true`, per (provider, region) the decisions use) talking to `KubeDouble`, an
   in-memory Kubernetes API server on httpx.MockTransport: nothing leaves the process. The double keeps
   objects per cluster / namespace / kind / name; POST creates (409 AlreadyExists when present), GET returns
   the object already ready (Job: every pod active and ready; Deployment: available replicas = replicas),
   DELETE removes, PATCH (merge patch, also on /scale) updates; `/api/v1/nodes` lists one node per instance
   type the decisions use in that cluster, so the executor's instance-type check passes. Responses are the
   recorded shapes of tests/outputs/fixtures/k8s/ (as the HTTP double of tests/outputs/test_executor_k8s.py
   uses them).
   - **Clock**: the runner's clock (`clock=`, its `_clock`) is the decision's own `decided_at`, set before
     each decision is handled, so the staleness guard (real executors refuse decisions older than
     `max_decision_age_s`) accepts recorded decisions and the rolling-hour launch caps run in event time. The
     K8sExecutor's monotonic clock is the same event time (plus whatever it "sleeps" polling, which it never
     needs to here), so its node-list TTL and make-before-break hold are in event time too.
   - **Market prices**: before each decision, one PriceObserved per assignment of that decision (price per
     instance = assignment usd_per_hour / instances, quoted and observed at decided_at) is fed to the runner's
     `MarketPrices` source through `ExecutorRunner.handle_events`, so launches are priced at the decision's
     own prices (the runner prices at max(market, decision)).
   - **Caps**: the main replay sets every cap far above anything a portfolio of four workloads can reach
     (HIGH_CAPS: 100 000 instances, $10 000 000/h, 100 000 launches per rolling hour in total and per
     workload), so nothing is refused for policy; whatever is still refused or fails is reported with its
     reason. A second replay of the same decisions with the documented default caps (16 instances, $200/h,
     48 launches/h, 16 launches/h per workload: DEFAULT_CAPS) reports what those would refuse.
3. **Results.** Prints and merges into tests/benchmarks/results.json under "k8s_replay" (other keys kept):
   the number of decisions, per cluster the creates (Jobs, Deployments), patches/scales, deletes, API
   requests, runner actions by status and the failed / refused / skipped actions with their reasons, objects
   left at the end, the most at once, and the wall times (back-test, replay).

`--quick` replays the first 90 days of the year only.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import time
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from backtest import BacktestConfig, load_portfolio, run_backtest  # noqa: E402
from backtest import sim as bt_sim  # noqa: E402
from outputs.executor_guard import Caps, MarketPrices  # noqa: E402
from outputs.executor_k8s import K8sExecutor, KubeConfig, WorkloadTopologies  # noqa: E402
from outputs.executors import ActionRecord, ExecutorRunner  # noqa: E402
from outputs.k8s_manifests import INSTANCE_TYPE_KEY  # noqa: E402
from schemas.events import AllocationDecided, PriceObserved  # noqa: E402
from schemas.offers import OfferKey  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results.json"
FIX = ROOT / "tests" / "outputs" / "fixtures" / "k8s"
PORTFOLIO = ROOT / "examples" / "portfolios" / "training-lab.yaml"
YEAR = (datetime(2024, 11, 8, tzinfo=UTC), datetime(2025, 11, 8, tzinfo=UTC))
NAMESPACE = "cloudarb"
TOKEN = "bench-token"   # a dummy bearer token for the in-memory double
HIGH_CAPS = Caps(max_instances=100_000, max_usd_per_hour=10_000_000.0, max_launches_per_hour=100_000,
                 max_workload_launches_per_hour=100_000, max_decision_age_s=900.0, max_clock_skew_s=60.0)
DEFAULT_CAPS = Caps(max_instances=16, max_usd_per_hour=200.0, max_launches_per_hour=48,
                    max_workload_launches_per_hour=16, max_decision_age_s=900.0, max_clock_skew_s=60.0)


def fixture(name: str) -> Any:
    return json.loads((FIX / name).read_text())


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


# --- 1. the decisions -------------------------------------------------------------------------------------


def capture_decisions(data: Path, start: datetime, end: datetime) -> tuple[list[AllocationDecided], Any, float]:
    """(every AllocationDecided of the engine strategy's Decider in order, the portfolio, wall seconds)."""
    captured: list[AllocationDecided] = []
    base = bt_sim.EngineStrategy

    class Capturing(base):  # type: ignore[valid-type, misc]
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            step = self.decider.step

            def recording(*sa: Any, **skw: Any) -> Any:
                res = step(*sa, **skw)
                captured.extend(res.decisions)
                return res

            self.decider.step = recording  # type: ignore[method-assign]

    pf = load_portfolio(PORTFOLIO)
    bt_sim.EngineStrategy = Capturing  # type: ignore[misc]
    try:
        t0 = time.perf_counter()
        res = run_backtest(BacktestConfig(data_dir=data, start=start, end=end), pf)
        wall = time.perf_counter() - t0
    finally:
        bt_sim.EngineStrategy = base  # type: ignore[misc]
    n = res.engine_stats.get("decisions")
    print(f"back-test {start:%Y-%m-%d} -> {end:%Y-%m-%d}: {len(captured)} decisions captured "
          f"(engine_stats.decisions={n}) in {wall:.1f} s", flush=True)
    return captured, pf, wall


# --- 2. the Kubernetes API double -------------------------------------------------------------------------

_OBJ = re.compile(r"^/apis/(batch|apps)/v1/namespaces/([^/]+)/(jobs|deployments)(?:/([^/]+))?(/scale)?$")


def cluster_name(provider: str, region: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", f"{provider}-{region}".lower()).strip("-")


class KubeDouble:
    """Kubernetes API servers in memory, one per cluster (told apart by host): objects stored per
    (cluster, namespace, plural, name), ready as soon as they are read; every request counted per cluster."""

    def __init__(self, nodes: dict[str, list[OfferKey]]) -> None:
        self.nodes = nodes   # cluster -> offers whose instance types its nodes have
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.counts: dict[str, Counter[str]] = {c: Counter() for c in nodes}
        self.alive: Counter[str] = Counter()
        self.max_alive: Counter[str] = Counter()
        self._uid = 0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def _status(self, code: int, name: str, plural: str) -> httpx.Response:
        st = fixture("status_delete.json" if code == 200 else f"status_{code}.json")
        group = "batch" if plural == "jobs" else "apps"
        if "message" in st:
            st["message"] = st["message"].replace("jobs.batch", f"{plural}.{group}").replace("REPLACED", name)
        st["details"].update(name=name, kind=plural, group=group)
        return httpx.Response(code, json=st)

    def _nodelist(self, cluster: str) -> dict[str, Any]:
        doc = fixture("nodelist.json")
        tmpl = doc["items"][0]
        items = []
        for i, o in enumerate(sorted({o.instance_type: o for o in self.nodes[cluster]}.values(),
                                     key=lambda o: o.instance_type)):
            n = copy.deepcopy(tmpl)
            n["metadata"]["name"] = f"node-{cluster}-{i}"
            n["metadata"]["labels"].update({INSTANCE_TYPE_KEY: o.instance_type,
                                            "topology.kubernetes.io/region": o.region,
                                            "topology.kubernetes.io/zone": o.zone or f"{o.region}-a"})
            gpus = str(o.gpus_per_instance)
            n["status"]["capacity"]["nvidia.com/gpu"] = n["status"]["allocatable"]["nvidia.com/gpu"] = gpus
            items.append(n)
        doc["items"] = items
        return doc

    @staticmethod
    def _ready(obj: dict[str, Any]) -> dict[str, Any]:
        if obj["kind"] == "Job":
            st = fixture("job_status_running.json")
            st["active"] = st["ready"] = obj["spec"]["parallelism"]
            return dict(st)
        st = fixture("deployment_status_available.json")
        n = obj["spec"]["replicas"]
        st.update(observedGeneration=obj["metadata"]["generation"], replicas=n, updatedReplicas=n,
                  readyReplicas=n, availableReplicas=n)
        return dict(st)

    def handle(self, request: httpx.Request) -> httpx.Response:
        cluster = request.url.host.split(".", 1)[0]
        c = self.counts.setdefault(cluster, Counter())
        c["requests"] += 1
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            c["unauthorized"] += 1
            return httpx.Response(401, json={"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                             "reason": "Unauthorized", "code": 401, "message": "Unauthorized"})
        path = request.url.path
        if path == "/api/v1/nodes" and request.method == "GET":
            c["node_lists"] += 1
            return httpx.Response(200, json=self._nodelist(cluster))
        m = _OBJ.match(path)
        if not m:
            c["unknown_path"] += 1
            return self._status(404, path, "jobs")
        _, ns, plural, name, scale = m.groups()
        kind = "Job" if plural == "jobs" else "Deployment"
        if request.method == "POST" and name is None:
            body = json.loads(request.content)
            key = (cluster, ns, plural, body["metadata"]["name"])
            if key in self.objects:
                c["create_conflicts_409"] += 1
                return self._status(409, key[3], plural)
            obj = _merge(fixture("job.json" if plural == "jobs" else "deployment.json"),
                         {k: v for k, v in body.items() if k != "status"})
            self._uid += 1
            obj["metadata"].update(uid=f"00000000-0000-4000-8000-{self._uid:012d}", namespace=ns)
            self.objects[key] = obj
            c[f"creates_{kind}"] += 1
            self.alive[cluster] += 1
            self.max_alive[cluster] = max(self.max_alive[cluster], self.alive[cluster])
            return httpx.Response(201, json=obj)
        key = (cluster, ns, plural, name or "")
        obj = self.objects.get(key)
        if obj is None:
            c[f"{request.method.lower()}_404"] += 1
            return self._status(404, key[3], plural)
        if request.method == "GET":
            c["gets"] += 1
            obj["status"] = self._ready(obj)
            return httpx.Response(200, json=obj)
        if request.method == "DELETE":
            del self.objects[key]
            c[f"deletes_{kind}"] += 1
            self.alive[cluster] -= 1
            return self._status(200, key[3], plural)
        if request.method in ("PATCH", "PUT"):
            patch = json.loads(request.content)
            if scale:   # the scale subresource: {"spec": {"replicas": n}}
                patch = {"spec": {"replicas": patch["spec"]["replicas"]}}
            self.objects[key] = obj = _merge(obj, patch)
            obj["metadata"]["generation"] = int(obj["metadata"].get("generation") or 1) + 1
            c[f"patches_{kind}"] += 1
            return httpx.Response(200, json=obj)
        c["unsupported_method"] += 1
        return httpx.Response(405, json={"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                         "reason": "MethodNotAllowed", "code": 405, "message": request.method})


# --- the replay -------------------------------------------------------------------------------------------


class EventClock:
    """Event time: `now` is set to each decision's decided_at; the executor's sleeps move it forward."""

    def __init__(self) -> None:
        self.t = 0.0
        self.slept = 0.0

    def dt(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def mono(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept += s
        self.t += s


def prices_of(d: AllocationDecided) -> list[PriceObserved]:
    return [PriceObserved(event_id=f"bench-price-{d.event_id}-{i}", offer=a.offer,
                          usd_per_hour=a.usd_per_hour / a.instances, quoted_at=d.decided_at,
                          observed_at=d.decided_at, source="bench_k8s_replay: the decision's own assignment")
            for i, a in enumerate(d.assignments) if a.instances > 0 and a.usd_per_hour > 0]


def _reason(detail: str) -> str:
    """A reason with the varying parts (names, ids, numbers) blanked, to count alike reasons together."""
    s = re.sub(r"ca-[a-z0-9-]+", "<obj>", detail)
    s = re.sub(r"k8s:[^\s,]+", "<rid>", s)
    return re.sub(r"\d+(\.\d+)?", "N", s)[:240]


def replay(decisions: list[AllocationDecided], pf: Any, caps: Caps) -> dict[str, Any]:
    offers: dict[str, OfferKey] = {}
    for d in decisions:
        for a in d.assignments:
            offers[a.offer.key] = a.offer
        for ch in d.changes:
            for o in (ch.from_offer, ch.to_offer):
                if o is not None:
                    offers[o.key] = o
    places = sorted({(o.provider, o.region) for o in offers.values()})
    nodes: dict[str, list[OfferKey]] = {cluster_name(p, r): [] for p, r in places}
    for o in offers.values():
        nodes[cluster_name(o.provider, o.region)].append(o)
    cfg = KubeConfig.model_validate({
        "clusters": {cluster_name(p, r): {"server": f"https://{cluster_name(p, r)}.k8s.test:6443",
                                          "token_env": "BENCH_K8S_TOKEN", "namespace": NAMESPACE,
                                          "provider": p, "region": r, "execute": True} for p, r in places},
        "images": {"default": "nvcr.io/nvidia/pytorch:24.08-py3"}, "poll_s": 5.0, "ready_timeout_s": 900.0})
    double = KubeDouble(nodes)
    clock = EventClock()
    ex = K8sExecutor(cfg, WorkloadTopologies([w.spec for w in pf.workloads]), env={"BENCH_K8S_TOKEN": TOKEN},
                     transport=double.transport(), sleep=clock.sleep, clock=clock.mono)
    providers = sorted({p for p, _ in places})
    runner = ExecutorRunner({p: ex for p in providers}, enabled=providers, caps=caps, prices=MarketPrices(),
                            clock=clock.dt)
    t0 = time.perf_counter()
    for d in decisions:
        clock.t = d.decided_at.timestamp()
        runner.handle_events([*prices_of(d), d])
    recs: list[ActionRecord] = runner.records
    wall = time.perf_counter() - t0

    def cluster_of(r: ActionRecord) -> str:
        o = offers.get(r.offer_key)
        return cluster_name(o.provider, o.region) if o is not None else "-"

    per: dict[str, dict[str, Any]] = {}
    for name in sorted(set(nodes) | {cluster_of(r) for r in recs}):
        c = double.counts.get(name, Counter())
        mine = [r for r in recs if cluster_of(r) == name]
        status = Counter(f"{r.action}:{r.status}" for r in mine)
        bad: dict[str, Counter[str]] = {s: Counter() for s in ("failed", "refused", "skipped")}
        for r in mine:
            if r.status in bad:
                bad[r.status][f"{r.action}: {_reason(r.detail)}"] += 1
        per[name] = {
            "creates": {"Job": c["creates_Job"], "Deployment": c["creates_Deployment"]},
            "patches_scales": {"Job": c["patches_Job"], "Deployment": c["patches_Deployment"]},
            "deletes": {"Job": c["deletes_Job"], "Deployment": c["deletes_Deployment"]},
            "create_conflicts_409": c["create_conflicts_409"],
            "api_requests": c["requests"], "node_lists": c["node_lists"],
            "not_found": {k: v for k, v in c.items() if k.endswith("_404")},
            "actions_by_status": dict(sorted(status.items())),
            "instances_launched": sum(r.instances for r in mine if r.action == "launch" and r.status == "done"),
            "instances_terminated": sum(r.instances for r in mine if r.action == "terminate" and r.status == "done"),
            "objects_at_end": double.alive[name], "max_objects_at_once": double.max_alive[name],
            **{f"{s}_reasons": dict(v.most_common()) for s, v in bad.items() if v},
        }
    by_decision = Counter(r.decision_id for r in recs if r.status == "refused")
    return {
        "caps": asdict(caps),
        "clusters": per,
        "totals": {"actions": len(recs), "by_status": dict(Counter(r.status for r in recs)),
                   "decisions_refused": len(by_decision),
                   "decisions_without_actions": sum(1 for d in decisions if not d.changes)},
        "running_at_end": {"instances": runner.running()[0], "usd_per_hour": round(runner.running()[1], 2)},
        "executor_slept_s": clock.slept,
        "wall_s": round(wall, 3),
    }


def _where(o: OfferKey) -> str:
    return f"{cluster_name(o.provider, o.region)}/{o.instance_type}/{o.market.value}"


def _print(label: str, r: dict[str, Any]) -> None:
    print(f"\n== replay with {label}: {r['totals']['actions']} actions {r['totals']['by_status']}, "
          f"{r['totals']['decisions_refused']} decisions refused, {r['wall_s']:.2f} s", flush=True)
    for name, c in r["clusters"].items():
        print(f"  {name}: creates Job {c['creates']['Job']} / Deployment {c['creates']['Deployment']}, "
              f"patches/scales {sum(c['patches_scales'].values())}, deletes Job {c['deletes']['Job']} / "
              f"Deployment {c['deletes']['Deployment']}, 409s {c['create_conflicts_409']}, "
              f"requests {c['api_requests']}, objects at end {c['objects_at_end']} (max "
              f"{c['max_objects_at_once']}); actions {c['actions_by_status']}")
        for s in ("failed", "refused", "skipped"):
            for why, n in (c.get(f"{s}_reasons") or {}).items():
                print(f"      {s} x{n}: {why}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the first 90 days of the year only")
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args(argv)
    if not (args.data / "gcp-pricing-history").is_dir():
        print(f"skipped: {args.data} not found (the k8s replay benchmark needs ../shared/data)")
        return 0
    start, end = YEAR
    if args.quick:
        end = start + timedelta(days=90)
    t0 = time.perf_counter()
    decisions, pf, bt_wall = capture_decisions(args.data, start, end)
    runs: dict[str, Any] = {}
    for label, caps in (("high_caps", HIGH_CAPS), ("default_caps", DEFAULT_CAPS)):
        runs[label] = replay(decisions, pf, caps)
        _print(label, runs[label])
    changes = Counter(ch.action.value for d in decisions for ch in d.changes)
    by_wl: dict[str, Counter[str]] = {}
    routes: Counter[tuple[str, str]] = Counter()
    for d in decisions:
        for ch in d.changes:
            by_wl.setdefault(ch.workload_id, Counter())[ch.action.value] += 1
            if ch.from_offer is not None and ch.to_offer is not None:
                routes[_where(ch.from_offer), _where(ch.to_offer)] += 1
    out = {
        "portfolio": PORTFOLIO.name, "data": str(args.data), "window": [start.isoformat(), end.isoformat()],
        "quick": args.quick,
        "decisions": len(decisions),
        "decisions_by_reason_kind": dict(Counter(d.reason.split(":")[0][:60] for d in decisions).most_common(10)),
        "plan_changes": dict(changes),
        "plan_changes_by_workload": {w: dict(c) for w, c in sorted(by_wl.items())},
        "top_migration_routes": {f"{a} -> {b}": n for (a, b), n in routes.most_common(8)},
        "prices": "PriceObserved per assignment of each decision at its decided_at, fed to MarketPrices",
        "clock": "the runner's clock is each decision's decided_at (event time)",
        "backtest_wall_s": round(bt_wall, 2),
        "replays": runs,
        "wall_s": round(time.perf_counter() - t0, 2),
    }
    print(f"\n{len(decisions)} decisions, plan changes {dict(changes)}; total wall {out['wall_s']} s", flush=True)
    print(f"plan changes by workload: {out['plan_changes_by_workload']}")
    print(f"top migration routes: {json.dumps(out['top_migration_routes'], indent=1)}", flush=True)
    doc: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    doc["k8s_replay"] = out
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {RESULTS} (key 'k8s_replay')")
    return 0


if __name__ == "__main__":
    sys.exit(main())

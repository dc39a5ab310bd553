"""Read models over ClickHouse for the API and the dashboard.

Hot endpoints (offers, current allocation, savings) read an in-memory snapshot that a background
thread rebuilds from ClickHouse every `refresh_s`; filtering, sorting and pagination then run in
Python, so a request never waits on ClickHouse. Everything else queries ClickHouse directly.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.gpus import GPU_CATALOGUE

log = logging.getLogger(__name__)

# effective price: the price per GPU-hour, inflated by the work an interruption loses
# (probability per hour x restart overhead of 0.25 h, the WorkloadSpec default)
RESTART_OVERHEAD_H = 0.25


def _iso(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


def offers_sql(db: str) -> str:
    """Latest quote, availability and interruption probability per offer, from `offer_latest` (one row per
    offer after merges: no scan of the price history)."""
    return f"""
SELECT offer_key, argMaxMerge(usd_per_hour) AS usd_h, max(quoted_at) AS last_quoted_at,
       argMaxMerge(available) AS avail, argMaxMerge(avail_n) AS avail_count, max(cap_seen) AS has_cap,
       argMaxMerge(p_int) AS p, max(int_seen) AS has_int
FROM {db}.offer_latest
GROUP BY offer_key
HAVING last_quoted_at > toDateTime64(0, 3)
"""


def current_allocation_sql(db: str) -> str:
    return f"""
SELECT l.workload_id, l.decision_id, l.last_decided_at, d.reason, d.solver, d.payload
FROM (
    SELECT wid AS workload_id, argMax(event_id, decided_at) AS decision_id, max(decided_at) AS last_decided_at
    FROM {db}.decisions ARRAY JOIN workload_ids AS wid GROUP BY wid
) AS l
INNER JOIN {db}.decisions AS d ON d.event_id = l.decision_id
LEFT JOIN (
    SELECT workload_id, argMax(kind, at) AS last_kind, max(at) AS last_at FROM {db}.workloads GROUP BY workload_id
) AS w ON w.workload_id = l.workload_id
WHERE NOT (ifNull(w.last_kind, '') = 'cancelled' AND w.last_at >= l.last_decided_at)
ORDER BY l.workload_id
SETTINGS join_use_nulls = 1
"""


def explain(payload: str, workload_id: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The assignments and the explanation for one workload from a decision's JSON payload."""
    d = json.loads(payload)
    assigns = [a for a in d.get("assignments", []) if a.get("workload_id") == workload_id]
    expl = next((x for x in d.get("explanations", []) if x.get("workload_id") == workload_id), None)
    return assigns, expl


@dataclass
class Snapshot:
    version: int = 0
    built_at: float = 0.0
    offers: list[dict[str, Any]] = field(default_factory=list)
    allocation: list[dict[str, Any]] = field(default_factory=list)
    savings: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


class ReadModel:
    """Snapshots of the hot read models, rebuilt by a background thread."""

    def __init__(self, client: Any, db: str, refresh_s: float = 1.0) -> None:
        self.client, self.db, self.refresh_s = client, db, refresh_s
        self.snapshot = Snapshot()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition()
        self._sig: tuple[Any, ...] | None = None
        self.also_refresh: list[Any] = []  # other periodic refreshes run on this thread (e.g. API keys)

    # -- lifecycle
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="readmodel", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            for f in self.also_refresh:
                try:
                    f()
                except Exception as exc:
                    log.warning("refresh failed: %s", type(exc).__name__)
            try:
                self.refresh()
            except Exception as exc:
                self.snapshot.error = f"{type(exc).__name__}"
                log.warning("read model refresh failed: %s", str(exc)[:200])
            self._stop.wait(self.refresh_s)

    def wait_change(self, version: int, timeout: float) -> int:
        with self._changed:
            self._changed.wait_for(lambda: self.snapshot.version != version, timeout)
        return self.snapshot.version

    # -- building
    def _signature(self) -> tuple[Any, ...]:
        r = self.client.query(
            f"SELECT (SELECT count() FROM {self.db}.prices), (SELECT count() FROM {self.db}.capacity), "
            f"(SELECT count() FROM {self.db}.decisions), (SELECT count() FROM {self.db}.workloads), "
            f"(SELECT count() FROM {self.db}.interruptions), (SELECT count() FROM {self.db}.savings)").result_rows
        return tuple(r[0])

    def refresh(self, force: bool = False) -> None:
        sig = self._signature()
        if not force and sig == self._sig:
            return
        snap = Snapshot(version=self.snapshot.version + 1, built_at=time.time(), offers=self.load_offers(),
                        allocation=self.load_allocation(), savings=self.load_savings())
        with self._changed:
            self.snapshot = snap
            self._sig = sig
            self._changed.notify_all()

    def load_offers(self) -> list[dict[str, Any]]:
        out = []
        for key, usd_h, quoted_at, avail, avail_n, has_cap, p, has_int in self.client.query(
                offers_sql(self.db)).result_rows:
            provider, region, zone, itype, gpu, n_s, market = key.split("|")
            n = int(n_s)
            p_int = p if has_int else None
            usd_gh = usd_h / n
            spec = GPU_CATALOGUE.get(gpu)
            eff = usd_gh * (1 + (p_int or 0.0) * RESTART_OVERHEAD_H)
            out.append({
                "offer_key": key, "provider": provider, "region": region, "zone": zone, "instance_type": itype,
                "gpu_model": gpu, "gpus_per_instance": n, "market": market,
                "usd_per_hour": round(usd_h, 6), "usd_per_gpu_hour": round(usd_gh, 6),
                "effective_usd_per_gpu_hour": round(eff, 6),
                "usd_per_a100_hour": round(eff / spec.relative_throughput, 6) if spec else None,
                "available": bool(avail) if has_cap else None,
                "available_instances": avail_n if has_cap else None, "interruption_probability_per_hour": p_int,
                "quoted_at": _iso(quoted_at),
            })
        out.sort(key=lambda o: (o["effective_usd_per_gpu_hour"], o["offer_key"]))
        return out

    def load_allocation(self) -> list[dict[str, Any]]:
        out = []
        for wid, did, decided_at, reason, solver, payload in self.client.query(
                current_allocation_sql(self.db)).result_rows:
            assigns, expl = explain(payload, wid)
            out.append({
                "workload_id": wid, "decision_id": did, "decided_at": _iso(decided_at), "reason": reason,
                "solver": solver, "placed": bool(assigns),
                "usd_per_hour": round(sum(a["usd_per_hour"] for a in assigns), 6),
                "assignments": [{"offer_key": _offer_key(a["offer"]), "provider": a["offer"]["provider"],
                                 "region": a["offer"]["region"], "gpu_model": a["offer"]["gpu_model"],
                                 "market": a["offer"]["market"], "instances": a["instances"],
                                 "usd_per_hour": a["usd_per_hour"]} for a in assigns],
                "explanation": expl,
            })
        return out

    def load_savings(self) -> list[dict[str, Any]]:
        """Savings over time: after each decision, the whole plan's $/h versus on-demand $/h."""
        dec = self.client.query(
            f"SELECT event_id, decided_at, workload_ids FROM {self.db}.decisions FINAL ORDER BY decided_at, event_id"
        ).result_rows
        rows = self.client.query(
            f"SELECT decision_id, workload_id, sum(usd_per_hour), sum(ondemand_usd_per_hour) "
            f"FROM {self.db}.savings FINAL GROUP BY decision_id, workload_id").result_rows
        by_dec: dict[str, dict[str, tuple[float, float]]] = {}
        for did, wid, cost, od in rows:
            by_dec.setdefault(did, {})[wid] = (cost, od)
        current: dict[str, tuple[float, float]] = {}
        out = []
        for did, at, wids in dec:
            got = by_dec.get(did, {})
            for w in wids:
                current[w] = got.get(w, (0.0, 0.0))
            cost = sum(c for c, _ in current.values())
            od = sum(o for _, o in current.values())
            out.append({"decision_id": did, "at": _iso(at), "usd_per_hour": round(cost, 4),
                        "ondemand_usd_per_hour": round(od, 4), "savings_usd_per_hour": round(od - cost, 4),
                        "placed_workloads": sum(1 for c, _ in current.values() if c > 0)})
        return out

    # -- direct queries
    def allocation_history(self, workload_id: str, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        total = int(self.client.query(
            f"SELECT count() FROM {self.db}.decisions FINAL WHERE has(workload_ids, {{w:String}})",
            parameters={"w": workload_id}).result_rows[0][0])
        rows = self.client.query(
            f"SELECT event_id, decided_at, reason, solver, payload FROM {self.db}.decisions FINAL "
            f"WHERE has(workload_ids, {{w:String}}) ORDER BY decided_at DESC, event_id "
            f"LIMIT {{l:UInt32}} OFFSET {{o:UInt32}}",
            parameters={"w": workload_id, "l": limit, "o": offset}).result_rows
        out = []
        for did, at, reason, solver, payload in rows:
            assigns, expl = explain(payload, workload_id)
            changes = [c for c in json.loads(payload).get("changes", []) if c.get("workload_id") == workload_id]
            out.append({"decision_id": did, "decided_at": _iso(at), "reason": reason, "solver": solver,
                        "usd_per_hour": round(sum(a["usd_per_hour"] for a in assigns), 6),
                        "assignments": [{"offer_key": _offer_key(a["offer"]), "instances": a["instances"],
                                         "usd_per_hour": a["usd_per_hour"]} for a in assigns],
                        "changes": [{"action": c["action"], "instances": c.get("instances", 0),
                                     "from_offer": _offer_key(c["from_offer"]) if c.get("from_offer") else None,
                                     "to_offer": _offer_key(c["to_offer"]) if c.get("to_offer") else None}
                                    for c in changes],
                        "explanation": expl})
        return total, out

    def forecasts(self, gpu_model: str | None, offer_key: str | None, limit: int,
                  offset: int) -> tuple[int, list[dict[str, Any]]]:
        where = ["1"]
        params: dict[str, Any] = {"l": limit, "o": offset}
        if gpu_model:
            where.append("gpu_model = {g:String}")
            params["g"] = gpu_model
        if offer_key:
            where.append("offer_key = {k:String}")
            params["k"] = offer_key
        inner = (f"SELECT offer_key, any(gpu_model) AS g_model, any(market) AS mkt, "
                 f"argMax(model, forecast_at) AS m, max(forecast_at) AS last_at, "
                 f"argMax(horizon_s, forecast_at) AS h, argMax(usd_per_hour, forecast_at) AS usd, "
                 f"argMax(interruption_probability_next_hour, forecast_at) AS p_int, "
                 f"argMax(mae_model, forecast_at) AS mae_m, argMax(mae_naive, forecast_at) AS mae_n "
                 f"FROM {self.db}.forecasts WHERE {' AND '.join(where)} GROUP BY offer_key")
        total = int(self.client.query(f"SELECT count() FROM ({inner})", parameters=params).result_rows[0][0])
        rows = self.client.query(f"SELECT * FROM ({inner}) ORDER BY offer_key LIMIT {{l:UInt32}} OFFSET {{o:UInt32}}",
                                 parameters=params).result_rows
        keys = ["offer_key", "gpu_model", "market", "model", "forecast_at", "horizon_s", "usd_per_hour",
                "interruption_probability_next_hour", "mae_model", "mae_naive"]
        return total, [{k: _iso(v) for k, v in zip(keys, r, strict=True)} for r in rows]

    def latest_quotas(self) -> dict[str, Any] | None:
        """The GPU quotas in force: the QuotasSet with the latest `set_at` the sink wrote (ties: the larger
        event id), as {event_id, set_at, quotas}; None when none was ever set."""
        rows = self.client.query(f"SELECT event_id, set_at, quotas FROM {self.db}.quotas FINAL "
                                 "ORDER BY set_at DESC, event_id DESC LIMIT 1").result_rows
        if not rows:
            return None
        eid, set_at, quotas = rows[0]
        return {"event_id": eid, "set_at": _iso(set_at), "quotas": json.loads(quotas)}

    def model_champions(self, limit: int = 50) -> dict[str, Any]:
        """The forecasters' published model per (group, target), from their last promotion, and the latest
        promotions (online A/B outcomes with both scores). A group never promoted publishes naive."""
        cols = ["event_id", "group_key", "target", "champion", "previous", "metric", "score_champion",
                "score_previous", "n_scored", "promoted_at"]
        champions = self.client.query(
            f"SELECT group_key, target, argMax(champion, promoted_at), argMax(metric, promoted_at), "
            f"argMax(score_champion, promoted_at), max(promoted_at) FROM {self.db}.model_promotions FINAL "
            "GROUP BY group_key, target ORDER BY group_key, target").result_rows
        recent = self.client.query(
            f"SELECT {', '.join(cols)} FROM {self.db}.model_promotions FINAL ORDER BY promoted_at DESC, event_id "
            "LIMIT {l:UInt32}", parameters={"l": limit}).result_rows
        return {
            "champions": [{"group": g, "target": t, "champion": c, "metric": m, "score": sc, "since": _iso(at)}
                          for g, t, c, m, sc, at in champions],
            "promotions": [{**dict(zip(cols, r, strict=True)), "promoted_at": _iso(r[-1])} for r in recent],
        }

    def table_page(self, sql_from: str, columns: list[str], order: str, limit: int, offset: int,
                   params: dict[str, Any] | None = None) -> tuple[int, list[dict[str, Any]]]:
        p = dict(params or {})
        total = int(self.client.query(f"SELECT count() FROM {sql_from}", parameters=p).result_rows[0][0])
        p.update({"l": limit, "o": offset})
        rows = self.client.query(f"SELECT {', '.join(columns)} FROM {sql_from} ORDER BY {order} "
                                 f"LIMIT {{l:UInt32}} OFFSET {{o:UInt32}}", parameters=p).result_rows
        return total, [{c.split(" AS ")[-1]: _iso(v) for c, v in zip(columns, r, strict=True)} for r in rows]


def _offer_key(o: dict[str, Any]) -> str:
    return "|".join((o["provider"], o["region"], o.get("zone", ""), o["instance_type"], o["gpu_model"],
                     str(o["gpus_per_instance"]), o["market"]))

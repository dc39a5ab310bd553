"""Alert rules and signed webhook delivery.

`AlertEngine.observe(event)` turns market, forecast, workload and decision events into `AlertRaised`
(price drop/spike beyond X %, capacity lost, interruption, forecast budget breach, savings opportunity
above $Y/h). Alert ids are deterministic (rule, subject, triggering event), and a cooldown per
(rule, subject) in event time stops floods.

`WebhookDispatcher` POSTs each alert to every matching subscription, signed with HMAC-SHA256 over
"<timestamp>." + body (headers X-CloudArb-Timestamp, X-CloudArb-Signature: sha256=<hex>). It runs
its own asyncio loop in a thread: `submit()` never blocks the caller; each subscription has its own
bounded backlog and concurrency, so a slow or dead receiver costs only its own retries (exponential
backoff), and after `max_attempts` failures the delivery is dead-lettered.

Delivery goes through `outputs.security.PinnedTransport`: the host is resolved once per request, every
answer must be a public address (unless allow_private), and the connection goes to the address checked
(no second lookup, so no DNS-rebinding window); TLS is verified for the host name. Redirects are not
followed (a 3xx is a permanent failure), and proxies from the environment are ignored.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from outputs.security import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    BlockedAddress,
    InvalidWebhookURL,
    PinnedTransport,
    Resolver,
    sign_payload,
    validate_webhook_url,
)
from schemas.events import (
    AlertRaised,
    AllocationDecided,
    Assignment,
    CapacityObserved,
    DeadLettered,
    Event,
    InterruptionKind,
    InterruptionObserved,
    PriceForecasted,
    PriceObserved,
    WorkloadCancelled,
    WorkloadRequested,
    WorkloadSpec,
    deterministic_id,
    utcnow,
)

log = logging.getLogger(__name__)


@dataclass
class AlertRules:
    price_change_pct: float = 10.0              # price drop / spike beyond X % versus the previous quote
    savings_opportunity_usd_per_hour: float = 1.0  # a cheaper acceptable offer saves more than $Y/h
    capacity_lost: bool = True
    interruptions: bool = True
    forecast_budget_breach: bool = True
    cooldown_s: float = 3600.0                  # per (rule, subject), in event time


class AlertEngine:
    """Pure rules over events (state: last price and availability per offer, workloads, current plan)."""

    def __init__(self, rules: AlertRules | None = None) -> None:
        self.rules = rules or AlertRules()
        self.last_price: dict[str, float] = {}
        self.available: dict[str, bool] = {}
        self.workloads: dict[str, WorkloadSpec] = {}
        self.plan: dict[str, list[Assignment]] = {}
        self._fired: dict[tuple[str, str], datetime] = {}

    def warm_start(self, client: Any, db: str) -> None:
        """Rebuild state from ClickHouse (after a restart the consumer resumes at its committed offsets):
        last price and availability per offer, live workloads, and the current plan."""
        import json

        for key, usd in client.query(f"SELECT offer_key, argMax(usd_per_hour, quoted_at) FROM {db}.prices "
                                     "GROUP BY offer_key").result_rows:
            self.last_price[key] = usd
        for key, avail in client.query(f"SELECT offer_key, argMax(available, quoted_at) FROM {db}.capacity "
                                       "GROUP BY offer_key").result_rows:
            self.available[key] = bool(avail)
        for wid, kind, spec in client.query(f"SELECT workload_id, argMax(kind, at), argMax(spec, at) "
                                            f"FROM {db}.workloads GROUP BY workload_id").result_rows:
            if kind == "requested":
                self.workloads[wid] = WorkloadSpec.model_validate_json(spec)
        rows = client.query(f"SELECT wid, argMax(payload, decided_at) FROM {db}.decisions "
                            "ARRAY JOIN workload_ids AS wid GROUP BY wid").result_rows
        for wid, payload in rows:
            if wid in self.workloads:
                d = json.loads(payload)
                self.plan[wid] = [Assignment.model_validate(a) for a in d.get("assignments", [])
                                  if a.get("workload_id") == wid]

    def _alert(self, rule: str, subject: str, trigger: Event, at: datetime, severity: str, message: str,
               **kw: Any) -> AlertRaised | None:
        last = self._fired.get((rule, subject))
        if last is not None and (at - last).total_seconds() < self.rules.cooldown_s:
            return None
        self._fired[(rule, subject)] = at
        return AlertRaised(event_id=deterministic_id("alert", rule, subject, trigger.event_id), rule=rule,
                           severity=severity, message=message[:2000], raised_at=at, **kw)

    def observe(self, e: Event) -> list[AlertRaised]:
        out: list[AlertRaised | None] = []
        r = self.rules
        if isinstance(e, PriceObserved):
            k = e.offer.key
            prev = self.last_price.get(k)
            self.last_price[k] = e.usd_per_hour
            if prev:
                pct = (e.usd_per_hour - prev) / prev * 100
                if abs(pct) >= r.price_change_pct:
                    rule = "price_drop" if pct < 0 else "price_spike"
                    out.append(self._alert(rule, k, e, e.quoted_at, "info" if pct < 0 else "warning",
                                           f"{k}: ${prev:.4f}/h -> ${e.usd_per_hour:.4f}/h ({pct:+.1f}%)",
                                           offer=e.offer, value=round(pct, 3), threshold=r.price_change_pct))
            out += self._savings(e)
        elif isinstance(e, CapacityObserved):
            k = e.offer.key
            was = self.available.get(k)
            self.available[k] = e.available
            if r.capacity_lost and was is True and not e.available:
                held = [w for w, assigns in self.plan.items() if any(a.offer.key == k for a in assigns)]
                out.append(self._alert("capacity_lost", k, e, e.quoted_at, "critical" if held else "warning",
                                       f"{k} has no capacity" + (f"; placed workloads: {', '.join(held)}" if held
                                                                 else ""), offer=e.offer))
        elif isinstance(e, InterruptionObserved):
            if r.interruptions and e.kind in (InterruptionKind.PREEMPTED, InterruptionKind.WARNING):
                out.append(self._alert("interruption", f"{e.offer.key}|{e.instance_id or ''}", e, e.occurred_at,
                                       "critical" if e.kind is InterruptionKind.PREEMPTED else "warning",
                                       f"{e.kind.value} on {e.offer.key}" +
                                       (f" instance {e.instance_id}" if e.instance_id else ""), offer=e.offer))
        elif isinstance(e, PriceForecasted):
            if r.forecast_budget_breach:
                out += self._forecast_breach(e)
        elif isinstance(e, WorkloadRequested):
            self.workloads[e.spec.workload_id] = e.spec
        elif isinstance(e, WorkloadCancelled):
            self.workloads.pop(e.workload_id, None)
            self.plan.pop(e.workload_id, None)
        elif isinstance(e, AllocationDecided):
            for wid in e.workload_ids:
                self.plan[wid] = [a for a in e.assignments if a.workload_id == wid]
        return [a for a in out if a is not None]

    def _savings(self, e: PriceObserved) -> list[AlertRaised | None]:
        out: list[AlertRaised | None] = []
        m = e.offer.gpu_model
        if self.available.get(e.offer.key) is False:
            return out
        per_gpu = e.usd_per_gpu_hour
        for wid, assigns in self.plan.items():
            spec = self.workloads.get(wid)
            if not assigns or spec is None or m not in spec.gpu_throughput:
                continue
            if e.offer.market.value == "spot" and spec.max_spot_share <= 0:
                continue
            if spec.allowed_providers is not None and e.offer.provider not in spec.allowed_providers:
                continue
            if any(a.offer.key == e.offer.key for a in assigns):
                continue
            gpus = sum(a.instances * a.offer.gpus_per_instance for a in assigns)
            worst = min(spec.gpu_throughput.get(a.offer.gpu_model, 0.0) for a in assigns)
            if spec.gpu_throughput[m] < worst or gpus % e.offer.gpus_per_instance:
                continue
            current = sum(a.usd_per_hour for a in assigns)
            saving = current - per_gpu * gpus
            if saving > self.rules.savings_opportunity_usd_per_hour:
                out.append(self._alert("savings_opportunity", f"{wid}|{e.offer.key}", e, e.quoted_at, "info",
                                       f"{wid}: {e.offer.key} would save ${saving:.2f}/h "
                                       f"(${current:.2f}/h now)", offer=e.offer, workload_id=wid,
                                       value=round(saving, 4), threshold=self.rules.savings_opportunity_usd_per_hour))
        return out

    def _forecast_breach(self, e: PriceForecasted) -> list[AlertRaised | None]:
        out: list[AlertRaised | None] = []
        k = e.offer.key
        for wid, assigns in self.plan.items():
            spec = self.workloads.get(wid)
            if spec is None or not any(a.offer.key == k for a in assigns):
                continue
            projected = sum(e.usd_per_hour * a.instances if a.offer.key == k else a.usd_per_hour for a in assigns)
            if projected > spec.budget_usd_per_hour:
                out.append(self._alert("forecast_budget_breach", wid, e, e.forecast_at, "warning",
                                       f"{wid}: forecast ${projected:.2f}/h in {e.horizon_s // 60} min exceeds budget "
                                       f"${spec.budget_usd_per_hour:.2f}/h", offer=e.offer, workload_id=wid,
                                       value=round(projected, 4), threshold=spec.budget_usd_per_hour))
        return out


# --- webhooks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    url: str
    secret: str = field(repr=False)
    rules: tuple[str, ...] = ()

    def wants(self, alert: AlertRaised) -> bool:
        return not self.rules or alert.rule in self.rules


def load_subscriptions(client: Any, db: str) -> list[Subscription]:
    rows = client.query(f"SELECT subscription_id, url, secret, rules FROM {db}.webhook_subscriptions FINAL "
                        "WHERE active").result_rows
    return [Subscription(r[0], r[1], r[2], tuple(r[3])) for r in rows]


@dataclass
class DispatchStats:
    submitted: int = 0
    delivered: int = 0
    retries: int = 0
    dead: int = 0
    dropped: int = 0


class WebhookDispatcher:
    """Signed, retried, non-blocking webhook delivery on its own event loop thread."""

    def __init__(self, subscriptions: Callable[[], Sequence[Subscription]] | Sequence[Subscription],
                 max_attempts: int = 5, base_backoff_s: float = 0.5, max_backoff_s: float = 60.0,
                 timeout_s: float = 5.0, max_pending_per_subscription: int = 1000, concurrency: int = 4,
                 allow_private: bool = False, record: Callable[[dict[str, Any]], None] | None = None,
                 dead_letter: Callable[[DeadLettered], None] | None = None, transport: Any = None,
                 resolver: Resolver | None = None, network_backend: Any = None) -> None:
        """`transport` replaces the pinned transport entirely (a test double: no address checks then);
        `resolver` and `network_backend` are passed to the pinned transport (tests: fake DNS, no sockets)."""
        self._subs = subscriptions if callable(subscriptions) else (lambda: list(subscriptions))
        self.max_attempts, self.base_backoff_s, self.max_backoff_s = max_attempts, base_backoff_s, max_backoff_s
        self.timeout_s, self.max_pending, self.concurrency = timeout_s, max_pending_per_subscription, concurrency
        self.allow_private, self.record, self.dead_letter = allow_private, record, dead_letter
        self.transport, self.resolver, self.network_backend = transport, resolver, network_backend
        self.stats = DispatchStats()
        self._pending: dict[str, int] = {}
        self._sems: dict[str, asyncio.Semaphore] = {}
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._ready = threading.Event()

    # -- lifecycle
    def start(self) -> WebhookDispatcher:
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        transport = self.transport or PinnedTransport(allow_private=self.allow_private, resolver=self.resolver,
                                                      network_backend=self.network_backend,
                                                      limits=httpx.Limits(max_connections=200),
                                                      resolve_timeout_s=self.timeout_s)
        self._client = httpx.AsyncClient(timeout=self.timeout_s, transport=transport, follow_redirects=False,
                                         trust_env=False)
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()

    def pending(self) -> int:
        return sum(self._pending.values())

    def stop(self, drain_s: float = 5.0) -> None:
        deadline = time.monotonic() + drain_s
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._loop is not None:
            loop = self._loop

            def _cancel_all() -> None:
                for t in asyncio.all_tasks(loop):
                    t.cancel()
                loop.stop()

            loop.call_soon_threadsafe(_cancel_all)
        if self._thread is not None:
            self._thread.join(10)

    # -- submit (any thread, never blocks)
    def submit(self, alert: AlertRaised) -> int:
        """Queue the alert for every matching subscription; returns how many deliveries were queued."""
        assert self._loop is not None, "start() first"
        n = 0
        for sub in self._subs():
            if not sub.wants(alert):
                continue
            key = (alert.event_id, sub.subscription_id)
            if key in self._seen:
                continue  # redelivered alert: already sent (or in flight) to this subscription
            self._seen[key] = None
            if len(self._seen) > 100_000:
                self._seen.popitem(last=False)
            try:
                validate_webhook_url(sub.url, self.allow_private)
            except InvalidWebhookURL as exc:
                self._give_up(alert, sub, 0, f"invalid url: {exc}", None)
                continue
            if self._pending.get(sub.subscription_id, 0) >= self.max_pending:
                self.stats.dropped += 1
                self._give_up(alert, sub, 0, "backlog full (receiver too slow)", None)
                continue
            self._pending[sub.subscription_id] = self._pending.get(sub.subscription_id, 0) + 1
            self.stats.submitted += 1
            asyncio.run_coroutine_threadsafe(self._deliver(alert, sub), self._loop)
            n += 1
        return n

    async def _deliver(self, alert: AlertRaised, sub: Subscription) -> None:
        try:
            body = json.dumps({"subscription_id": sub.subscription_id,
                               "alert": alert.model_dump(mode="json")}, separators=(",", ":")).encode()
            delivery_id = secrets.token_hex(8)
            sem = self._sems.setdefault(sub.subscription_id, asyncio.Semaphore(self.concurrency))
            err = ""
            status: int | None = None
            attempt = 0
            for attempt in range(1, self.max_attempts + 1):
                ts = int(time.time())
                headers = {"Content-Type": "application/json", "User-Agent": "cloudarb-webhooks/1",
                           TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign_payload(sub.secret, ts, body),
                           "X-CloudArb-Delivery": delivery_id, "X-CloudArb-Event": alert.rule}
                async with sem:
                    try:
                        resp = await self._client.post(sub.url, content=body, headers=headers)
                        status, err = resp.status_code, "" if resp.status_code < 300 else f"HTTP {resp.status_code}"
                        if 300 <= resp.status_code < 400:
                            err += " (redirects are not followed)"
                    except BlockedAddress as exc:  # the SSRF guard: never retried
                        self._give_up(alert, sub, attempt, str(exc), None, delivery_id)
                        return
                    except httpx.ConnectError as exc:  # includes UnresolvableHost (its message says so)
                        status, err = None, f"{type(exc).__name__}: {exc}"[:200]
                    except Exception as exc:
                        status, err = None, type(exc).__name__
                if not err:
                    self.stats.delivered += 1
                    self._log(alert, sub, delivery_id, attempt, "delivered", status, "")
                    return
                permanent = status is not None and 300 <= status < 500 and status not in (408, 425, 429)
                self._log(alert, sub, delivery_id, attempt, "failed", status, err)
                if permanent or attempt == self.max_attempts:
                    break
                self.stats.retries += 1
                await asyncio.sleep(min(self.max_backoff_s, self.base_backoff_s * 2 ** (attempt - 1)))
            self._give_up(alert, sub, attempt, err, status, delivery_id)
        finally:
            self._pending[sub.subscription_id] -= 1

    def _log(self, alert: AlertRaised, sub: Subscription, delivery_id: str, attempt: int, status: str,
             http_status: int | None, error: str) -> None:
        if self.record is None:
            return
        from urllib.parse import urlsplit

        self.record({"delivery_id": delivery_id, "alert_id": alert.event_id, "subscription_id": sub.subscription_id,
                     "url_host": urlsplit(sub.url).hostname or "", "attempt": attempt, "status": status,
                     "http_status": http_status, "error": error[:500], "at": datetime.now(UTC)})

    def _give_up(self, alert: AlertRaised, sub: Subscription, attempts: int, reason: str, status: int | None,
                 delivery_id: str = "") -> None:
        self.stats.dead += 1
        log.warning("webhook %s: alert %s dead-lettered after %d attempts: %s", sub.subscription_id,
                    alert.event_id, attempts, reason)
        self._log(alert, sub, delivery_id or secrets.token_hex(8), attempts, "dead", status, reason)
        if self.dead_letter is not None:
            body = alert.model_dump_json().encode()
            self.dead_letter(DeadLettered(
                event_id=deterministic_id("webhook-dead", alert.event_id, sub.subscription_id),
                source_topic="cloudarb.alerts.v1", stage="outputs.webhooks",
                reason=f"webhook {sub.subscription_id} failed after {attempts} attempts: {reason}"[:4000],
                original_b64=base64.b64encode(body).decode(), dead_lettered_at=utcnow()))


DELIVERY_COLUMNS = ["delivery_id", "alert_id", "subscription_id", "url_host", "attempt", "status", "http_status",
                    "error", "at"]


class DeliveryLog:
    """Buffers delivery records and writes them to ClickHouse in batches (bounded; oldest dropped)."""

    def __init__(self, client: Any, db: str, max_rows: int = 10_000) -> None:
        self.client, self.db, self.max_rows = client, db, max_rows
        self._rows: list[list[Any]] = []
        self._lock = threading.Lock()

    def __call__(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._rows.append([row[c] for c in DELIVERY_COLUMNS])
            if len(self._rows) > self.max_rows:
                del self._rows[: len(self._rows) - self.max_rows]

    def flush(self) -> int:
        with self._lock:
            rows, self._rows = self._rows, []
        if rows:
            try:
                self.client.insert(f"{self.db}.webhook_deliveries", rows, column_names=DELIVERY_COLUMNS)
            except Exception:
                with self._lock:
                    self._rows = (rows + self._rows)[-self.max_rows:]
                raise
        return len(rows)

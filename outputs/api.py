"""The thin query API (FastAPI): offers, forecasts, allocations, savings, workloads, GPU quotas, alerts,
executions, webhooks and API keys; health, readiness, Prometheus metrics, the OpenAPI document
(/openapi.json; the Swagger UI page /docs only with CLOUDARB_API_DOCS=1, served from vendored files), and a
built-in dashboard page with live updates (server-sent events).

Limits: a request body over 256 KiB (CLOUDARB_API_MAX_BODY_BYTES) is refused with 413 before it is read,
before auth; a workload whose event would exceed the pipeline's event size limit gets 413 too. Request bodies
are validated strictly (no "2" or true for an integer). Every response carries a Content-Security-Policy.

Auth: `X-API-Key: <key>` (or `Authorization: Bearer <key>`); keys are stored hashed with a role
(viewer < operator < admin). 401 without a valid key, 403 for a lower role, 429 over the rate limit.
Every list is paginated (`limit`, `offset`; the response carries `total` and `next_offset`).
It reads ClickHouse (and submits workloads and quotas through an injected `publish` callable), never a
worker's memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from outputs import api_limits, api_models, api_quotas
from outputs.api_limits import (
    DEFAULT_MAX_BODY_BYTES,
    BodyLimitMiddleware,
    DuplicateKeysMiddleware,
    SecurityHeadersMiddleware,
    bounded_errors,
    env_flag,
    env_int,
    security_headers_dict,
)
from outputs.catalog import catalog_router
from outputs.queries import ReadModel
from outputs.security import (
    InvalidWebhookURL,
    KeyStore,
    Principal,
    RateLimiter,
    redact_url,
    role_allows,
    validate_webhook_url,
)
from schemas.events import MAX_EVENT_BYTES, Event, WorkloadCancelled, WorkloadRequested, deterministic_id, utcnow

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
WORKLOAD_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"
ALERT_RULES = ("price_drop", "price_spike", "capacity_lost", "interruption", "forecast_budget_breach",
               "savings_opportunity")

Publish = Callable[[Event], None]


@dataclass
class ApiConfig:
    db: str = "cloudarb"
    admin_key: str | None = None            # bootstrap admin (CLOUDARB_ADMIN_KEY), hashed at start
    rate_per_s: float = 50.0
    burst: float = 100.0
    refresh_s: float = 1.0
    allow_private_webhooks: bool = False
    start_read_model: bool = True
    # request bodies over this are refused (413) before they are read, before auth
    max_body_bytes: int = field(default_factory=lambda: env_int("CLOUDARB_API_MAX_BODY_BYTES",
                                                                DEFAULT_MAX_BODY_BYTES))
    # the Swagger UI page /docs (vendored assets, no CDN); off unless CLOUDARB_API_DOCS=1
    docs: bool = field(default_factory=lambda: env_flag("CLOUDARB_API_DOCS"))


class Page(BaseModel):
    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int
    next_offset: int | None


def page(items: list[dict[str, Any]], total: int, limit: int, offset: int) -> dict[str, Any]:
    nxt = offset + limit if offset + limit < total else None
    return {"items": items, "total": total, "limit": limit, "offset": offset, "next_offset": nxt}


Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="items to skip")]
WorkloadIdPath = Annotated[str, PathParam(pattern=WORKLOAD_ID, description="workload id")]


class WorkloadAccepted(BaseModel):
    event_id: str
    workload_id: str
    status: Literal["submitted", "cancel_requested"]


class WebhookIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    url: str = Field(max_length=2000, description="http(s) URL that receives signed alert POSTs")
    rules: list[Literal["price_drop", "price_spike", "capacity_lost", "interruption", "forecast_budget_breach",
                        "savings_opportunity"]] = Field(default_factory=list, max_length=10,
                                                        description="empty = every rule")


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    role: Literal["viewer", "operator", "admin"]
    name: str = Field(default="", max_length=100)


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.requests = Counter("cloudarb_api_requests_total", "API requests", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("cloudarb_api_request_seconds", "API request latency", ["route"],
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
                                 registry=self.registry)
        self.published = Counter("cloudarb_api_workload_events_total", "workload events published", ["kind"],
                                 registry=self.registry)


class _PipelineCollector:
    def __init__(self, stats: Callable[[], dict[str, float]]) -> None:
        self.stats = stats

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        g = GaugeMetricFamily("cloudarb_pipeline", "counters of the sink, alerts and executors in this process",
                              labels=["stat"])
        try:
            for k, v in sorted(self.stats().items()):
                g.add_metric([k], float(v))
        except Exception as exc:
            log.warning("pipeline stats failed: %s", type(exc).__name__)
        yield g


class MetricsMiddleware:
    """Pure ASGI (cheaper than BaseHTTPMiddleware): count and time requests by route template."""

    def __init__(self, app: Any, metrics: _Metrics) -> None:
        self.app, self.m = app, metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def _send(msg: Any) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.m.latency.labels(name).observe(time.perf_counter() - t0)
            self.m.requests.labels(name, scope.get("method", ""), str(status[0])).inc()


def create_app(client: Any, config: ApiConfig | None = None, publish: Publish | None = None,
               read_model: ReadModel | None = None, keys: KeyStore | None = None,
               pipeline_stats: Callable[[], dict[str, float]] | None = None) -> FastAPI:
    """`pipeline_stats`: counters of services in this process (sink, alerts, executors), exported on /metrics
    as `cloudarb_pipeline{stat="..."}`."""
    cfg = config or ApiConfig()
    db = cfg.db
    rm = read_model or ReadModel(client, db, cfg.refresh_s)
    ks = keys or KeyStore(client, db, bootstrap_admin_key=cfg.admin_key)
    limiter = RateLimiter(cfg.rate_per_s, cfg.burst)
    fail_limiter = RateLimiter(cfg.rate_per_s, cfg.burst)
    metrics = _Metrics()
    if pipeline_stats is not None:
        metrics.registry.register(_PipelineCollector(pipeline_stats))

    app = FastAPI(title="CloudArb API", version="1.0.0", docs_url=None, redoc_url=None,
                  swagger_ui_oauth2_redirect_url=None,
                  description=__doc__, openapi_tags=[{"name": "market"}, {"name": "allocations"},
                                                     {"name": "workloads"}, {"name": "alerts"},
                                                     {"name": "admin"}, {"name": "ops"}])
    app.state.read_model = rm
    app.state.keys = ks
    app.state.metrics = metrics
    # outermost last: security headers on every answer (a 413 too), then metrics (which count the 413s), then
    # the body limit, before anything reads the body, then the check for a key given twice in a JSON body
    app.add_middleware(DuplicateKeysMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(SecurityHeadersMiddleware)

    @app.on_event("startup")
    async def _start() -> None:
        if cfg.start_read_model:
            await asyncio.to_thread(_first_refresh, rm)
            ks.inline_refresh = False  # keys are reloaded by the read model's thread, never on a request
            rm.also_refresh.append(ks.refresh)
            rm.start()
        try:
            await asyncio.to_thread(ks.refresh)
        except Exception as exc:
            log.warning("API key refresh failed: %s", type(exc).__name__)

    @app.on_event("shutdown")
    async def _stop() -> None:
        rm.stop()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # name the field, never echo the input back (it may hold a secret, or be huge); a bounded list
        return JSONResponse({"detail": bounded_errors(exc.errors())}, status_code=422)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled %s on %s", type(exc).__name__, request.url.path)
        # this handler answers outside the middlewares, so it adds the security headers itself
        headers = security_headers_dict()
        if isinstance(exc, OSError) or type(exc).__module__.startswith(("clickhouse_connect", "chdb")):
            return JSONResponse({"detail": "the store is unavailable, try again"}, status_code=503,
                                headers={"Retry-After": "5", **headers})
        return JSONResponse({"detail": "internal error"}, status_code=500, headers=headers)

    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")
    bearer = HTTPBearer(auto_error=False, description="API key as a bearer token")

    def auth(need: str) -> Callable[..., Any]:
        async def dep(request: Request, x_api_key: str | None = Depends(api_key_header),
                      authz: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
            key = x_api_key or (authz.credentials if authz else None)
            p = ks.lookup(key)
            if p is None:
                ok, _ = fail_limiter.allow(request.client.host if request.client else "?")
                if not ok:
                    raise HTTPException(429, "too many requests", headers={"Retry-After": "1"})
                raise HTTPException(401, "a valid API key is required (X-API-Key header)",
                                    headers={"WWW-Authenticate": "Bearer"})
            ok, wait = limiter.allow(p.key_id)
            if not ok:
                raise HTTPException(429, "rate limit exceeded", headers={"Retry-After": str(max(1, round(wait)))})
            if not role_allows(p.role, need):
                raise HTTPException(403, f"role '{p.role}' cannot do this; needs '{need}'")
            return p
        return dep

    # serialized pages of the snapshot-backed lists, per snapshot version (hot path: no re-serialization)
    cache: dict[tuple[Any, ...], bytes] = {}
    cache_version = [-1]

    def cached(key: tuple[Any, ...], build: Callable[[], dict[str, Any]]) -> Response:
        v = rm.snapshot.version
        if v != cache_version[0]:
            cache.clear()
            cache_version[0] = v
        body = cache.get(key)
        if body is None:
            body = json.dumps(build(), separators=(",", ":")).encode()
            if len(cache) < 2048:
                cache[key] = body
        return Response(body, media_type="application/json")

    viewer = Depends(auth("viewer"))
    operator = Depends(auth("operator"))
    admin = Depends(auth("admin"))

    # --- ops ----------------------------------------------------------------------------------
    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "not ready"}})
    def readyz(response: Response) -> dict[str, Any]:
        try:
            client.query("SELECT 1")
            store = "ok"
        except Exception as exc:
            store = f"unavailable: {type(exc).__name__}"
        snap = rm.snapshot
        # a sink in this process with a batch in hand and no progress (outputs.sink.SinkStats.stalled)
        sink = "stalled" if pipeline_stats is not None and pipeline_stats().get("sink_stalled") else "ok"
        ready = store == "ok" and snap.version > 0 and sink == "ok"
        if not ready:
            response.status_code = 503
        return {"ready": ready, "clickhouse": store, "sink": sink, "snapshot_version": snap.version,
                "snapshot_age_s": round(time.time() - snap.built_at, 3) if snap.built_at else None,
                "kafka_publish": publish is not None}

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def prom() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # --- market -------------------------------------------------------------------------------
    @app.get("/v1/offers", tags=["market"], response_model=Page)
    async def offers(_: Principal = viewer, gpu_model: str | None = Query(None, max_length=64),
               provider: str | None = Query(None, max_length=40), region: str | None = Query(None, max_length=64),
               market: Literal["spot", "on_demand"] | None = None, available: bool | None = None,
               sort: Literal["effective_usd_per_gpu_hour", "usd_per_gpu_hour", "usd_per_hour",
                             "usd_per_a100_hour"] = "effective_usd_per_gpu_hour",
               order: Literal["asc", "desc"] = "asc", limit: Limit = 100, offset: Offset = 0) -> Response:
        key = ("offers", gpu_model, provider, region, market, available, sort, order, limit, offset)
        return cached(key, lambda: _offers_page(gpu_model, provider, region, market, available, sort, order, limit,
                                                offset))

    def _offers_page(gpu_model: str | None, provider: str | None, region: str | None, market: str | None,
                     available: bool | None, sort: str, order: str, limit: int, offset: int) -> dict[str, Any]:
        items = rm.snapshot.offers
        if gpu_model:
            items = [o for o in items if o["gpu_model"] == gpu_model]
        if provider:
            items = [o for o in items if o["provider"] == provider]
        if region:
            items = [o for o in items if o["region"] == region]
        if market:
            items = [o for o in items if o["market"] == market]
        if available is not None:
            items = [o for o in items if (o["available"] is not False) == available]
        if sort != "effective_usd_per_gpu_hour" or order == "desc":
            big = float("inf")
            items = sorted(items, key=lambda o: (o[sort] if o[sort] is not None else big, o["offer_key"]),
                           reverse=order == "desc")
        return page(items[offset:offset + limit], len(items), limit, offset)

    @app.get("/v1/forecasts", tags=["market"], response_model=Page)
    def forecasts(_: Principal = viewer, gpu_model: str | None = Query(None, max_length=64),
                  offer_key: str | None = Query(None, max_length=400), limit: Limit = 100,
                  offset: Offset = 0) -> dict[str, Any]:
        total, items = rm.forecasts(gpu_model, offer_key, limit, offset)
        return page(items, total, limit, offset)

    # --- allocations --------------------------------------------------------------------------
    @app.get("/v1/allocations", tags=["allocations"], response_model=Page)
    async def allocations(_: Principal = viewer, limit: Limit = 100, offset: Offset = 0) -> Response:
        def build() -> dict[str, Any]:
            items = rm.snapshot.allocation
            return page(items[offset:offset + limit], len(items), limit, offset)

        return cached(("allocations", limit, offset), build)

    @app.get("/v1/allocations/{workload_id}/history", tags=["allocations"], response_model=Page)
    def allocation_history(workload_id: WorkloadIdPath, _: Principal = viewer, limit: Limit = 100,
                           offset: Offset = 0) -> dict[str, Any]:
        total, items = rm.allocation_history(workload_id, limit, offset)
        return page(items, total, limit, offset)

    @app.get("/v1/savings", tags=["allocations"], response_model=Page)
    async def savings(_: Principal = viewer, limit: Limit = 100, offset: Offset = 0,
                      order: Literal["asc", "desc"] = "desc") -> Response:
        def build() -> dict[str, Any]:
            items = rm.snapshot.savings
            if order == "desc":
                items = items[::-1]
            return page(items[offset:offset + limit], len(items), limit, offset)

        return cached(("savings", limit, offset, order), build)

    @app.get("/v1/executions", tags=["allocations"], response_model=Page)
    def executions(_: Principal = viewer, decision_id: str | None = Query(None, max_length=128),
                   limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
        where, params = "", {}
        if decision_id:
            where, params = " WHERE decision_id = {d:String}", {"d": decision_id}
        total, items = rm.table_page(
            f"{db}.executor_actions FINAL{where}",
            ["action_id", "decision_id", "executor", "action", "workload_id", "offer_key", "instances",
             "usd_per_hour", "status", "detail", "resource_ids", "at"], "at DESC, action_id", limit, offset, params)
        return page(items, total, limit, offset)

    # --- workloads ----------------------------------------------------------------------------
    @app.get("/v1/workloads", tags=["workloads"], response_model=Page)
    def workloads(_: Principal = viewer, limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
        total, items = rm.table_page(
            f"(SELECT workload_id, argMax(kind, at) AS state, max(at) AS updated_at, "
            f"argMax(budget_usd_per_hour, at) AS budget "
            f"FROM {db}.workloads GROUP BY workload_id)",
            ["workload_id", "state", "updated_at", "budget AS budget_usd_per_hour"], "workload_id", limit, offset)
        return page(items, total, limit, offset)

    def _publish(e: Event, kind: str) -> None:
        if publish is None:
            raise HTTPException(503, "workload submission is not configured (no Kafka publisher)")
        try:
            publish(e)
        except Exception as exc:
            log.error("publishing %s failed: %s", kind, type(exc).__name__)
            raise HTTPException(503, "could not publish to Kafka, try again") from None
        metrics.published.labels(kind).inc()

    @app.post("/v1/workloads", tags=["workloads"], status_code=202, response_model=WorkloadAccepted,
              responses={413: {"description": f"the request body, or the event it makes (limit {MAX_EVENT_BYTES} "
                                              "bytes), is too large"}})
    def submit_workload(body: api_limits.WorkloadSpec, _: Principal = operator) -> dict[str, Any]:
        spec = body.to_spec()
        now = utcnow()
        e = WorkloadRequested(event_id=deterministic_id("workload", spec.model_dump_json(), now.isoformat()),
                              spec=spec, requested_at=now)
        size = len(e.model_dump_json().encode())
        if size > MAX_EVENT_BYTES:  # the pipeline would dead-letter it: refuse it here, publish nothing
            return JSONResponse({"detail": f"the workload's event would be {size} bytes, over the limit of "
                                           f"{MAX_EVENT_BYTES} bytes", "limit_bytes": MAX_EVENT_BYTES},
                                status_code=413)  # type: ignore[return-value]
        _publish(e, "requested")
        return {"event_id": e.event_id, "workload_id": spec.workload_id, "status": "submitted"}

    @app.delete("/v1/workloads/{workload_id}", tags=["workloads"], status_code=202, response_model=WorkloadAccepted)
    def cancel_workload(workload_id: WorkloadIdPath, _: Principal = operator,
                        reason: str = Query("cancelled via API", max_length=200)) -> dict[str, Any]:
        now = utcnow()
        e = WorkloadCancelled(event_id=deterministic_id("cancel", workload_id, now.isoformat()),
                              workload_id=workload_id, cancelled_at=now, reason=reason)
        _publish(e, "cancelled")
        return {"event_id": e.event_id, "workload_id": workload_id, "status": "cancel_requested"}

    # quotas (outputs.api_quotas): GET the set in force, POST a new one (published like a workload)
    app.include_router(api_quotas.router(rm, viewer, operator, _publish))
    # the forecasters' online A/B (outputs.api_models): champions and promotions
    app.include_router(api_models.router(rm, viewer))
    # live offers in SkyPilot's / gpuhunt's catalog formats (outputs.catalog)
    app.include_router(catalog_router(client, cfg.db, viewer))

    # --- alerts and webhooks ------------------------------------------------------------------
    @app.get("/v1/alerts", tags=["alerts"], response_model=Page)
    def alerts(_: Principal = viewer, rule: str | None = Query(None, max_length=64), limit: Limit = 100,
               offset: Offset = 0) -> dict[str, Any]:
        where, params = "", {}
        if rule:
            where, params = " WHERE rule = {r:String}", {"r": rule}
        total, items = rm.table_page(
            f"{db}.alerts FINAL{where}", ["event_id", "rule", "severity", "message", "raised_at", "offer_key",
                                          "workload_id", "value", "threshold"], "raised_at DESC, event_id",
            limit, offset, params)
        return page(items, total, limit, offset)

    @app.get("/v1/webhooks", tags=["admin"], response_model=Page)
    def list_webhooks(_: Principal = admin, limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
        total, items = rm.table_page(f"{db}.webhook_subscriptions FINAL WHERE active",
                                     ["subscription_id", "url", "rules", "created_at"], "created_at, subscription_id",
                                     limit, offset)
        for it in items:
            it["url"] = redact_url(it["url"])
        return page(items, total, limit, offset)

    @app.post("/v1/webhooks", tags=["admin"], status_code=201)
    def add_webhook(body: WebhookIn, _: Principal = admin) -> dict[str, Any]:
        try:
            url = validate_webhook_url(body.url, cfg.allow_private_webhooks)
        except InvalidWebhookURL as exc:
            return JSONResponse({"detail": [{"loc": ["body", "url"], "msg": str(exc), "type": "value_error"}]},
                                status_code=422)  # type: ignore[return-value]
        sid = secrets.token_hex(8)
        secret = "whsec_" + secrets.token_urlsafe(32)
        client.insert(f"{db}.webhook_subscriptions",
                      [[sid, url, secret, list(body.rules), True, datetime.now(UTC), time.time_ns()]],
                      column_names=["subscription_id", "url", "secret", "rules", "active", "created_at", "version"])
        return {"subscription_id": sid, "url": redact_url(url), "rules": body.rules,
                "secret": secret, "note": "the signing secret is shown once; store it now"}

    @app.delete("/v1/webhooks/{subscription_id}", tags=["admin"], status_code=204,
                responses={404: {"description": "no such subscription"}})
    def delete_webhook(subscription_id: Annotated[str, PathParam(pattern=r"^[0-9a-f]{1,32}$")],
                       _: Principal = admin) -> Response:
        rows = client.query(f"SELECT url, secret, rules, created_at FROM {db}.webhook_subscriptions FINAL "
                            "WHERE subscription_id = {s:String} AND active", parameters={"s": subscription_id}
                            ).result_rows
        if not rows:
            raise HTTPException(404, "no such subscription")
        url, secret, rules, created = rows[0]
        client.insert(f"{db}.webhook_subscriptions",
                      [[subscription_id, url, secret, rules, False, created, time.time_ns()]],
                      column_names=["subscription_id", "url", "secret", "rules", "active", "created_at", "version"])
        return Response(status_code=204)

    # --- API keys -----------------------------------------------------------------------------
    @app.get("/v1/api-keys", tags=["admin"], response_model=Page)
    def list_keys(_: Principal = admin, limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
        total, items = rm.table_page(f"{db}.api_keys FINAL WHERE active", ["key_id", "role", "name", "created_at"],
                                     "created_at, key_id", limit, offset)
        return page(items, total, limit, offset)

    @app.post("/v1/api-keys", tags=["admin"], status_code=201)
    def create_key(body: ApiKeyIn, _: Principal = admin) -> dict[str, Any]:
        key_id, key = ks.create(body.role, body.name)
        return {"key_id": key_id, "role": body.role, "name": body.name, "api_key": key,
                "note": "the key is shown once; only its hash is stored"}

    @app.delete("/v1/api-keys/{key_id}", tags=["admin"], status_code=204,
                responses={404: {"description": "no such key"}})
    def revoke_key(key_id: Annotated[str, PathParam(pattern=r"^[0-9a-f]{1,32}$")], _: Principal = admin) -> Response:
        if not ks.revoke(key_id):
            raise HTTPException(404, "no such key")
        return Response(status_code=204)

    # --- dashboard ----------------------------------------------------------------------------
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    @app.get("/dashboard", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "dashboard.html", headers={"Cache-Control": "no-store"})

    if cfg.docs:
        @app.get("/docs", include_in_schema=False)
        def docs() -> FileResponse:  # Swagger UI from static/vendor/swagger-ui, set up by static/docs.js
            return FileResponse(STATIC / "docs.html", headers={"Cache-Control": "no-store"})

    @app.get("/v1/stream", tags=["allocations"], response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}}})
    async def stream(request: Request, _: Principal = viewer,
                     once: bool = Query(False, description="send one snapshot and close")) -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            version = -1
            last_beat = time.monotonic()
            while True:
                snap = rm.snapshot
                if snap.version != version:
                    version = snap.version
                    data = {"version": snap.version, "built_at": snap.built_at, "offers": best_per_gpu(snap.offers),
                            "allocation": snap.allocation, "savings": snap.savings[-500:]}
                    yield f"event: snapshot\nid: {version}\ndata: {json.dumps(data)}\n\n".encode()
                    if once:
                        return
                elif time.monotonic() - last_beat > 15:
                    last_beat = time.monotonic()
                    yield b": keep-alive\n\n"
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.5)

        return StreamingResponse(gen(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return app


def best_per_gpu(offers: list[dict[str, Any]], n: int = 20) -> list[dict[str, Any]]:
    """The cheapest available offer per (GPU model, market), cheapest first (offers arrive sorted)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for o in offers:
        k = (o["gpu_model"], o["market"])
        if k in seen or o["available"] is False:
            continue
        seen.add(k)
        out.append(o)
    return out[:n]


def _first_refresh(rm: ReadModel) -> None:
    try:
        rm.refresh(force=True)
    except Exception as exc:
        log.warning("initial read model build failed: %s", type(exc).__name__)

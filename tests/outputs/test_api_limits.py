"""Hostile input at the API: body size cap before auth (declared and chunked), the event size cap on
workloads, strict integers and booleans, bounded error messages, security headers, docs off by default."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from outputs.api import STATIC, ApiConfig, create_app
from outputs.api_limits import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware, DuplicateKeysMiddleware, Message
from outputs.security import KeyStore, Principal
from schemas.events import MAX_EVENT_BYTES, Event
from schemas.gpus import GPU_CATALOGUE

ADMIN = "admin-limits-key-0123456789"
LIMIT = DEFAULT_MAX_BODY_BYTES
SPEC: dict[str, Any] = {"workload_id": "w1", "gpu_throughput": {"L4": 0.3}, "min_gpus": 1, "max_gpus": 2,
                        "budget_usd_per_hour": 3}


class _DownStore:
    """No ClickHouse: every query fails like an unreachable server."""

    def query(self, *a: Any, **kw: Any) -> Any:
        raise ConnectionError("clickhouse is down")

    insert = command = query


class _CountingKeys(KeyStore):
    lookups = 0

    def lookup(self, key: str | None) -> Principal | None:
        _CountingKeys.lookups += 1
        return super().lookup(key)


def _client(**cfg: Any) -> tuple[TestClient, list[Event]]:
    published: list[Event] = []
    config = ApiConfig(admin_key=ADMIN, rate_per_s=1000, burst=1000, start_read_model=False, **cfg)
    app = create_app(_DownStore(), config, publish=published.append, keys=_CountingKeys(None,
                                                                                        bootstrap_admin_key=ADMIN))
    return TestClient(app, raise_server_exceptions=False), published


@pytest.fixture
def api() -> Iterator[tuple[TestClient, list[Event]]]:
    tc, published = _client()
    with tc:
        yield tc, published


def H(key: str = ADMIN) -> dict[str, str]:
    return {"X-API-Key": key}


def _is_413(r: Any, limit: int = LIMIT) -> bool:
    return r.status_code == 413 and r.json()["limit_bytes"] == limit and str(limit) in r.json()["detail"]


def test_body_over_the_limit_is_refused_before_auth(api: tuple[TestClient, list[Event]]) -> None:
    tc, published = api
    body = b"{" + b" " * LIMIT + b"}"  # LIMIT + 2 bytes of valid JSON
    assert len(body) > LIMIT
    _CountingKeys.lookups = 0
    for headers in ({}, H(), H("wrong-key")):
        r = tc.post("/v1/workloads", content=b"x" * (LIMIT + 1), headers=headers)
        assert _is_413(r), (headers, r.status_code, r.text)
        assert r.headers["connection"] == "close"
        assert _is_413(tc.post("/v1/workloads", content=body, headers={**headers, "content-type": "application/json"}))
    assert _CountingKeys.lookups == 0  # auth never ran
    assert published == []
    # at the limit: through to auth and validation as usual
    at = b'{"workload_id": "w1"' + b" " * (LIMIT - 21) + b"}"
    assert len(at) == LIMIT
    assert tc.post("/v1/workloads", content=at, headers={"content-type": "application/json"}).status_code == 401
    assert tc.post("/v1/workloads", content=at, headers={**H(), "content-type": "application/json"}).status_code == 422
    # any path, any method
    assert _is_413(tc.put("/nowhere", content=b"x" * (LIMIT + 1)))


def test_huge_body_is_refused_quickly(api: tuple[TestClient, list[Event]]) -> None:
    tc, _ = api
    body = b"x" * (10 * 1024 * 1024)
    for headers in ({}, H()):
        t0 = time.perf_counter()
        r = tc.post("/v1/workloads", content=body, headers=headers)
        assert _is_413(r) and time.perf_counter() - t0 < 1.0


def test_chunked_body_is_counted_while_streaming(api: tuple[TestClient, list[Event]]) -> None:
    tc, published = api

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 10_000

    for headers in ({}, H()):
        r = tc.post("/v1/workloads", content=chunks(), headers=headers)
        assert r.request.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.request.headers
        assert _is_413(r), r.text
    assert published == []


def test_body_limit_middleware_stops_reading_once_over() -> None:
    """ASGI level: a chunked body is read only until it passes the limit; the app then sees a disconnect and
    its own answer is dropped; a declared Content-Length over the limit is never read at all."""
    sent: list[Message] = []
    reads = [0]
    app_saw: list[str] = []

    async def receive() -> Message:
        reads[0] += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}  # an endless stream

    async def send(msg: Message) -> None:
        sent.append(msg)

    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        while True:
            msg = await rcv()
            app_saw.append(msg["type"])
            if msg["type"] == "http.disconnect":
                break
        await snd({"type": "http.response.start", "status": 400, "headers": []})
        await snd({"type": "http.response.body", "body": b"too late"})

    mw = BodyLimitMiddleware(app, max_bytes=10_000)
    scope = {"type": "http", "method": "POST", "path": "/v1/workloads", "headers": []}
    asyncio.run(mw(scope, receive, send))
    assert reads[0] == 11 and app_saw[-1] == "http.disconnect" and app_saw.count("http.request") == 10
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [413]
    assert b"too late" not in b"".join(m.get("body", b"") for m in sent)

    sent.clear()
    reads[0] = 0
    declared = {**scope, "headers": [(b"content-length", b"50000000")]}
    asyncio.run(mw(declared, receive, send))
    assert reads[0] == 0 and sent[0]["status"] == 413
    sent.clear()
    asyncio.run(mw({**scope, "headers": [(b"content-length", b"-1")]}, receive, send))
    assert sent[0]["status"] == 400


@pytest.mark.parametrize("body", [
    '{"workload_id": "w1", "gpu_throughput": {"L4": 0.3}, "min_gpus": 1, "max_gpus": 2, "budget_usd_per_hour": 3,'
    ' "budget_usd_per_hour": 300}',
    '{"workload_id": "w1", "gpu_throughput": {"L4": 0.3, "L4": 3.0}, "min_gpus": 1, "max_gpus": 2,'
    ' "budget_usd_per_hour": 3}'])
def test_a_key_given_twice_is_refused(api: tuple[TestClient, list[Event]], body: str) -> None:
    tc, published = api
    r = tc.post("/v1/workloads", content=body, headers={**H(), "Content-Type": "application/json"})
    assert r.status_code == 422 and "duplicate key" in r.json()["detail"][0]["msg"] and published == []
    assert r.headers["x-content-type-options"] == "nosniff"   # (answered inside the security headers' middleware)
    once = json.dumps(json.loads(body))   # (the same body with each key once: accepted)
    ok = tc.post("/v1/workloads", content=once, headers={**H(), "Content-Type": "application/json"})
    assert ok.status_code == 202 and len(published) == 1


def test_duplicate_keys_middleware_hands_the_body_on_as_it_came() -> None:
    """ASGI level: a body in three chunks reaches the app whole, in the same chunks; a body with a key given
    twice never reaches it; a GET passes untouched."""
    chunks = [b'{"a": 1,', b' "b": {"c": 2},', b' "d": 3}']

    def receiver(parts: list[bytes]) -> Any:
        msgs = [{"type": "http.request", "body": c, "more_body": i < len(parts) - 1} for i, c in enumerate(parts)]

        async def receive() -> Message:
            return msgs.pop(0) if msgs else {"type": "http.disconnect"}
        return receive

    app_saw: list[Message] = []
    sent: list[Message] = []

    async def app(scope: Any, rcv: Any, snd: Any) -> None:
        while (msg := await rcv())["type"] == "http.request":
            app_saw.append(msg)
            if not msg["more_body"]:
                break

    async def send(msg: Message) -> None:
        sent.append(msg)

    mw = DuplicateKeysMiddleware(app)
    scope = {"type": "http", "method": "POST", "path": "/v1/workloads",
             "headers": [(b"content-type", b"application/json")]}
    asyncio.run(mw(scope, receiver(chunks), send))
    assert [m["body"] for m in app_saw] == chunks and sent == []
    app_saw.clear()
    asyncio.run(mw(scope, receiver([b'{"a": 1,', b' "a": 2}']), send))
    assert app_saw == [] and sent[0]["status"] == 422 and b"duplicate key 'a'" in sent[1]["body"]
    sent.clear()
    asyncio.run(mw({**scope, "method": "GET"}, receiver([b'{"a": 1, "a": 2}']), send))
    assert len(app_saw) == 1 and sent == []


def test_limit_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDARB_API_MAX_BODY_BYTES", "1000")
    monkeypatch.setenv("CLOUDARB_API_DOCS", "1")
    cfg = ApiConfig()
    assert cfg.max_body_bytes == 1000 and cfg.docs
    monkeypatch.delenv("CLOUDARB_API_MAX_BODY_BYTES")
    monkeypatch.delenv("CLOUDARB_API_DOCS")
    assert ApiConfig().max_body_bytes == LIMIT and not ApiConfig().docs
    tc, _ = _client(max_body_bytes=1000)
    with tc:
        assert _is_413(tc.post("/v1/workloads", json={**SPEC, "workload_id": "w" * 1000}, headers=H()), 1000)
        assert tc.post("/v1/workloads", json=SPEC, headers=H()).status_code == 202


def test_the_largest_workload_accepted_fits_the_pipelines_event_limit(api: tuple[TestClient, list[Event]]) -> None:
    tc, published = api
    big = {**SPEC, "allowed_providers": ["aws"] * 20_000}  # ~140 KB: under the body limit, over the event limit
    r = tc.post("/v1/workloads", json=big, headers=H())
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "allowed_providers"], r.text
    assert published == []
    largest = {**SPEC, "workload_id": "w" * 128, "allowed_providers": ["massedcompute"] * 100,
               "gpu_throughput": {m: 1.0 for m in GPU_CATALOGUE}}
    ok = tc.post("/v1/workloads", json=largest, headers=H())
    assert ok.status_code == 202 and len(published) == 1
    assert len(published[0].model_dump_json().encode()) <= MAX_EVENT_BYTES


@pytest.mark.parametrize("field,value", [("min_gpus", "2"), ("min_gpus", True), ("max_gpus", 2.0),
                                         ("priority", "3"), ("same_region", "true"), ("same_region", 1),
                                         ("budget_usd_per_hour", "3"), ("gpu_throughput", {"L4": "0.3"}),
                                         ("budget_usd_per_hour", 1e308), ("budget_usd_per_hour", 0)])
def test_strict_workload_fields(api: tuple[TestClient, list[Event]], field: str, value: Any) -> None:
    tc, published = api
    r = tc.post("/v1/workloads", json={**SPEC, field: value}, headers=H())
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][:2] == ["body", field]
    assert published == []


def test_strict_accepts_the_right_types(api: tuple[TestClient, list[Event]]) -> None:
    tc, published = api
    r = tc.post("/v1/workloads", json={**SPEC, "budget_usd_per_hour": 3, "max_spot_share": 1, "same_region": True,
                                       "priority": 2}, headers=H())
    assert r.status_code == 202, r.text
    spec = published[0].spec  # type: ignore[attr-defined]
    assert type(spec).__module__ == "schemas.events" and spec.budget_usd_per_hour == 3.0 and spec.priority == 2
    bad = tc.post("/v1/api-keys", json={"role": "viewer", "name": 5}, headers=H())
    assert bad.status_code == 422


def test_topology_and_interconnect_come_as_their_names(api: tuple[TestClient, list[Event]]) -> None:
    tc, published = api
    for extra in ({"topology": "gang", "interconnect": "nvlink"}, {"topology": "replicas", "gpus_per_replica": 1},
                  {"interconnect": "infiniband"}):
        assert tc.post("/v1/workloads", json={**SPEC, **extra}, headers=H()).status_code == 202
    assert [p.spec.topology.value for p in published] == ["gang", "replicas", "gang"]  # type: ignore[attr-defined]
    for bad in ({"topology": "ring"}, {"interconnect": 1}):
        assert tc.post("/v1/workloads", json={**SPEC, **bad}, headers=H()).status_code == 422


@pytest.mark.parametrize("field,value", [("home_provider", "\ud800"), ("allowed_providers", ["\udfff"]),
                                         ("home_provider", "AWS"), ("allowed_providers", ["aws", "x" * 60_000])])
def test_providers_a_workload_names_are_known_ones(api: tuple[TestClient, list[Event]], field: str,
                                                   value: Any) -> None:
    tc, published = api
    body = json.dumps({**SPEC, field: value})   # (ASCII, a lone surrogate as its JSON escape)
    r = tc.post("/v1/workloads", content=body, headers={**H(), "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", field] and published == []
    assert len(r.content) < 2000


@pytest.mark.parametrize("url", ["https://example.com/a\u0000b", "https://example.com/a\u007fb",
                                 "http://localhost./hook", "http://10.0.0.1./hook", "http://169.254.169.254./x",
                                 "https://hooks.example.com:xoxb-SECRET-" + "A" * 1500 + "/x"])
def test_webhook_urls_that_could_never_be_delivered_are_refused(api: tuple[TestClient, list[Event]],
                                                                url: str) -> None:
    tc, _ = api
    r = tc.post("/v1/webhooks", json={"url": url}, headers=H())
    assert r.status_code == 422 and "SECRET" not in r.text and len(r.content) < 1000


def test_unknown_fields_are_refused_not_dropped(api: tuple[TestClient, list[Event]]) -> None:
    tc, _ = api
    assert tc.post("/v1/webhooks", json={"url": "https://example.com/h", "rule": ["price_drop"]},
                   headers=H()).status_code == 422
    assert tc.post("/v1/api-keys", json={"role": "viewer", "nmae": "ci"}, headers=H()).status_code == 422
    quota = {"provider": "aws", "region": "US-EAST-1", "gpu": "H100", "gpus": 8}   # no offer names its region so
    assert tc.post("/v1/quotas", json={"quotas": [quota]}, headers=H()).status_code == 422


def test_errors_never_echo_unbounded_input(api: tuple[TestClient, list[Event]]) -> None:
    tc, _ = api
    # 10,000 unknown GPU models (about 190 KB, under the body limit): one short error
    many = {f"gpu-{i:05d}": 1.0 for i in range(10_000)}
    r = tc.post("/v1/workloads", json={**SPEC, "gpu_throughput": many}, headers=H())
    assert r.status_code == 422 and len(r.content) < 2048, len(r.content)
    msg = r.json()["detail"][0]["msg"]
    assert "gpu-00000" in msg and "(+9995 more)" in msg
    # one enormous key: clipped
    r = tc.post("/v1/workloads", json={**SPEC, "gpu_throughput": {"G" * 200_000: 1.0}}, headers=H())
    assert r.status_code == 422 and len(r.content) < 2048
    # 10,000 invalid values: at most a few errors, a count of the rest, no input echoed
    r = tc.post("/v1/workloads", json={**SPEC, "gpu_throughput": {f"k{i}": "SECRET" for i in range(10_000)}},
                headers=H())
    detail = r.json()["detail"]
    assert r.status_code == 422 and len(r.content) < 4096 and len(detail) == 11
    assert detail[-1]["type"] == "too_many_errors" and "9990" in detail[-1]["msg"]
    assert "SECRET" not in r.text and '"input"' not in r.text
    # a long invalid value is not echoed either
    r = tc.post("/v1/workloads", json={**SPEC, "workload_id": "!" + "A" * 100}, headers=H())
    assert r.status_code == 422 and "AAAA" not in r.text and '"input"' not in r.text


def _csp(r: Any) -> dict[str, str]:
    return {d.split()[0]: d for d in (p.strip() for p in r.headers["content-security-policy"].split(";")) if d}


def test_security_headers_on_every_response(api: tuple[TestClient, list[Event]]) -> None:
    tc, _ = api
    responses = [tc.get("/healthz"), tc.get("/dashboard"), tc.get("/"), tc.get("/static/dashboard.js"),
                 tc.get("/v1/offers"), tc.get("/nowhere"), tc.get("/openapi.json"),
                 tc.post("/v1/workloads", content=b"x" * (LIMIT + 1)),
                 tc.get("/v1/alerts", headers=H()),  # the store is down: the crash handler's 503
                 tc.get("/readyz")]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 401, 404, 200, 413, 503, 503]
    for r in responses:
        csp = _csp(r)
        assert csp["default-src"] == "default-src 'self'" and csp["frame-ancestors"] == "frame-ancestors 'none'"
        assert "'unsafe-inline'" not in r.headers["content-security-policy"]
        assert "'unsafe-eval'" not in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["x-frame-options"] == "DENY"


def _urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_docs_off_by_default(api: tuple[TestClient, list[Event]]) -> None:
    tc, _ = api
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert tc.get(path).status_code == 404
    assert "/v1/workloads" in tc.get("/openapi.json").json()["paths"]  # the document itself stays


def test_docs_on_serve_vendored_swagger_ui() -> None:
    tc, _ = _client(docs=True)
    with tc:
        r = tc.get("/docs")
        assert r.status_code == 200 and "swagger-ui" in r.text
        assert _csp(r)["script-src"] == "script-src 'self'" and _csp(r)["style-src"] == "style-src 'self'"
        for url in _urls(r.text):
            assert url.startswith("/static/"), url
            assert tc.get(url).status_code == 200
        assert tc.get("/redoc").status_code == 404
    # no page or script we serve names another origin
    for f in ("dashboard.html", "docs.html", "dashboard.js", "docs.js"):
        text = (STATIC / f).read_text()
        assert not [u for u in _urls(text) if not u.startswith("/static/")], f
        assert "cdn" not in text.lower(), f


def test_a_large_request_cannot_make_a_large_error() -> None:
    """The probe's 1.9 MB unknown-GPU request (1.6 MB answer before): even with the body limit raised to let it
    through, the error stays small."""
    tc, _ = _client(max_body_bytes=4 * 1024 * 1024)
    many = {f"unknown-gpu-{i:07d}-" + "x" * 40: 1.0 for i in range(30_000)}
    with tc:
        r = tc.post("/v1/workloads", json={**SPEC, "gpu_throughput": many}, headers=H())
    assert len(r.request.content) > 1_900_000
    assert r.status_code == 422 and len(r.content) < 2048, len(r.content)


def test_pages_run_under_the_csp_in_a_browser() -> None:
    """Swagger UI (vendored) and the dashboard render in headless Chromium with no CSP violation."""
    from tests.outputs.test_dashboard_browser import CHROMIUM, DRIVER, _driver, _wait

    if not (CHROMIUM and DRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver")
    import shutil
    import tempfile

    from outputs.server import serve_in_thread

    server = serve_in_thread(_DownStore(), port=0, config=ApiConfig(admin_key=ADMIN, start_read_model=False,
                                                                     docs=True))
    profile = tempfile.mkdtemp(prefix="cloudarb-chromium-")
    driver = None
    try:
        driver = _driver(profile)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": (
            "window.__csp=[];document.addEventListener('securitypolicyviolation',"
            "e=>window.__csp.push(e.violatedDirective+' '+e.blockedURI))")})
        driver.get(f"{server.url}/docs")
        _wait(lambda: driver.execute_script("return document.querySelectorAll('.opblock').length") >= 10)
        driver.execute_script("document.querySelectorAll('.opblock-summary-control').forEach(b=>b.click())")
        _wait(lambda: driver.execute_script("return document.querySelectorAll('.opblock-body').length") >= 10)
        assert "CloudArb API" in driver.find_element("css selector", ".title").text
        assert driver.execute_script("return window.__csp") == []
        driver.get(f"{server.url}/dashboard")
        _wait(lambda: "enter an API key" in driver.find_element("id", "status").text)
        assert driver.execute_script("return typeof Chart !== 'undefined'")
        assert driver.execute_script("return window.__csp") == []
    finally:
        if driver is not None:
            driver.quit()
        server.stop()
        shutil.rmtree(profile, ignore_errors=True)

"""The query API over a chdb database loaded with replayed events: auth, roles, rate limit,
pagination, filters, allocations with reasons, savings, workload submission, webhooks, metrics."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from outputs.api import ApiConfig, create_app
from schemas.events import Event, WorkloadCancelled, WorkloadRequested

ADMIN = "admin-test-key-0123456789"


@pytest.fixture
def api(loaded_db: tuple[Any, str, list[Event]]) -> Any:
    client, db, events = loaded_db
    published: list[Event] = []
    app = create_app(client, ApiConfig(db=db, admin_key=ADMIN, rate_per_s=1000, burst=1000, refresh_s=0.2),
                     publish=published.append)
    with TestClient(app) as tc:
        tc.published = published  # type: ignore[attr-defined]
        tc.events = events  # type: ignore[attr-defined]
        yield tc


def H(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def test_auth_roles_and_keys(api: TestClient) -> None:
    assert api.get("/v1/offers").status_code == 401
    assert api.get("/v1/offers", headers=H("nope")).status_code == 401
    assert api.get("/v1/offers", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
    r = api.post("/v1/api-keys", json={"role": "viewer", "name": "ro"}, headers=H(ADMIN))
    assert r.status_code == 201
    viewer = r.json()["api_key"]
    assert api.get("/v1/offers", headers=H(viewer)).status_code == 200
    spec = {"workload_id": "w1", "gpu_throughput": {"L4": 0.3}, "min_gpus": 1, "max_gpus": 2,
            "budget_usd_per_hour": 3}
    assert api.post("/v1/workloads", json=spec, headers=H(viewer)).status_code == 403
    assert api.post("/v1/api-keys", json={"role": "viewer"}, headers=H(viewer)).status_code == 403
    keys = api.get("/v1/api-keys", headers=H(ADMIN)).json()
    assert keys["total"] == 1
    assert viewer not in json.dumps(keys) and "sha256" not in json.dumps(keys)
    kid = r.json()["key_id"]
    assert api.delete(f"/v1/api-keys/{kid}", headers=H(ADMIN)).status_code == 204
    assert api.get("/v1/offers", headers=H(viewer)).status_code == 401


def test_rate_limit(loaded_db: tuple[Any, str, list[Event]]) -> None:
    client, db, _ = loaded_db
    app = create_app(client, ApiConfig(db=db, admin_key=ADMIN, rate_per_s=1, burst=5, start_read_model=False))
    with TestClient(app) as tc:
        codes = [tc.get("/v1/allocations", headers=H(ADMIN)).status_code for _ in range(8)]
    assert codes[:5] == [200] * 5 and codes[-1] == 429


def test_offers_filter_sort_paginate(api: TestClient) -> None:
    r = api.get("/v1/offers", params={"limit": 5}, headers=H(ADMIN)).json()
    assert r["total"] > 20 and len(r["items"]) == 5 and r["next_offset"] == 5
    prices = [o["effective_usd_per_gpu_hour"] for o in r["items"]]
    assert prices == sorted(prices)
    r2 = api.get("/v1/offers", params={"limit": 5, "offset": 5}, headers=H(ADMIN)).json()
    assert r2["items"][0]["effective_usd_per_gpu_hour"] >= prices[-1]
    f = api.get("/v1/offers", params={"gpu_model": "H100-80GB", "market": "spot", "sort": "usd_per_hour",
                                      "order": "desc"}, headers=H(ADMIN)).json()
    assert f["items"] and all(o["gpu_model"] == "H100-80GB" and o["market"] == "spot" for o in f["items"])
    assert [o["usd_per_hour"] for o in f["items"]] == sorted((o["usd_per_hour"] for o in f["items"]), reverse=True)
    bad = api.get("/v1/offers", params={"market": "moon", "limit": 0}, headers=H(ADMIN))
    assert bad.status_code == 422
    locs = {tuple(e["loc"]) for e in bad.json()["detail"]}
    assert ("query", "market") in locs and ("query", "limit") in locs


def test_allocation_history_savings_forecasts(api: TestClient) -> None:
    alloc = api.get("/v1/allocations", headers=H(ADMIN)).json()
    ids = {a["workload_id"] for a in alloc["items"]}
    assert "llm-finetune-8xh100" in ids and "pretrain-b200" not in ids  # the cancelled one is gone
    placed = [a for a in alloc["items"] if a["placed"]]
    assert placed and all(a["reason"] and a["assignments"] for a in placed)
    h = api.get("/v1/allocations/llm-finetune-8xh100/history", params={"limit": 2}, headers=H(ADMIN)).json()
    assert h["total"] >= 1 and h["items"][0]["changes"]
    assert api.get("/v1/allocations/bad id!/history", headers=H(ADMIN)).status_code == 422
    s = api.get("/v1/savings", headers=H(ADMIN)).json()
    assert s["total"] >= 1 and s["items"][0]["ondemand_usd_per_hour"] >= s["items"][0]["usd_per_hour"] > 0
    fc = api.get("/v1/forecasts", params={"gpu_model": "L4", "limit": 3}, headers=H(ADMIN)).json()
    assert fc["total"] > 0 and len(fc["items"]) <= 3 and fc["items"][0]["model"] == "ewma"
    al = api.get("/v1/alerts", params={"limit": 2}, headers=H(ADMIN)).json()
    assert al["total"] > 0 and len(al["items"]) == 2
    assert api.get("/v1/workloads", headers=H(ADMIN)).json()["total"] == 5


def test_workload_submit_and_cancel(api: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    spec = {"workload_id": "new-one", "gpu_throughput": {"L4": 0.3}, "min_gpus": 1, "max_gpus": 2,
            "budget_usd_per_hour": 3}
    r = api.post("/v1/workloads", json=spec, headers=H(ADMIN))
    assert r.status_code == 202 and r.json()["workload_id"] == "new-one"
    bad = api.post("/v1/workloads", json={**spec, "max_gpus": 0, "gpu_throughput": {"Nope": 1}}, headers=H(ADMIN))
    assert bad.status_code == 422
    fields = {e["loc"][-1] for e in bad.json()["detail"]}
    assert {"max_gpus", "gpu_throughput"} <= fields
    assert api.delete("/v1/workloads/new-one", headers=H(ADMIN)).status_code == 202
    pub = api.published  # type: ignore[attr-defined]
    assert isinstance(pub[0], WorkloadRequested) and isinstance(pub[1], WorkloadCancelled)
    assert ADMIN not in caplog.text


def test_webhooks_validate_and_hide_secret(api: TestClient) -> None:
    bad = api.post("/v1/webhooks", json={"url": "ftp://x"}, headers=H(ADMIN))
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "url"]
    assert api.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/x"}, headers=H(ADMIN)).status_code == 422
    ok = api.post("/v1/webhooks", json={"url": "https://hooks.example.com/T0/B1/tok3n", "rules": ["price_drop"]},
                  headers=H(ADMIN))
    assert ok.status_code == 201 and ok.json()["secret"].startswith("whsec_")
    listed = api.get("/v1/webhooks", headers=H(ADMIN)).json()
    assert listed["total"] == 1 and ok.json()["secret"] not in json.dumps(listed)
    assert "tok3n" not in json.dumps(listed) + ok.text  # a token in the URL path is a secret too
    assert listed["items"][0]["url"] == "https://hooks.example.com/***"
    sid = ok.json()["subscription_id"]
    assert api.delete(f"/v1/webhooks/{sid}", headers=H(ADMIN)).status_code == 204
    assert api.get("/v1/webhooks", headers=H(ADMIN)).json()["total"] == 0


def test_ops_endpoints_and_stream(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"]
    api.get("/v1/offers", headers=H(ADMIN))
    m = api.get("/metrics").text
    assert 'cloudarb_api_requests_total{method="GET",route="/v1/offers",status="200"}' in m
    assert "/v1/offers" in api.get("/openapi.json").json()["paths"]
    assert "chart.umd.min.js" in api.get("/dashboard").text
    assert api.get("/static/vendor/chart.umd.min.js").status_code == 200
    with api.stream("GET", "/v1/stream", params={"once": True}, headers=H(ADMIN)) as r:
        body = r.read().decode()
    data = json.loads(body.split("data: ", 1)[1])
    assert data["offers"] and data["allocation"] and data["savings"]


def test_store_outage(loaded_db: tuple[Any, str, list[Event]]) -> None:
    """ClickHouse unreachable: hot lists keep serving the last snapshot, direct queries say 503, /readyz 503."""
    client, db, _ = loaded_db

    class Switch:
        down = False

        def __getattr__(self, name: str) -> Any:
            attr = getattr(client, name)

            def call(*a: Any, **kw: Any) -> Any:
                if Switch.down:
                    raise ConnectionError("clickhouse is down")
                return attr(*a, **kw)

            return call

    app = create_app(Switch(), ApiConfig(db=db, admin_key=ADMIN, rate_per_s=1000, burst=1000, refresh_s=0.2))
    with TestClient(app, raise_server_exceptions=False) as tc:
        assert tc.get("/v1/offers", headers=H(ADMIN)).json()["total"] > 0
        Switch.down = True
        assert tc.get("/v1/offers", headers=H(ADMIN)).json()["total"] > 0
        r = tc.get("/v1/alerts", headers=H(ADMIN))
        assert r.status_code == 503 and r.headers["Retry-After"] == "5"
        assert tc.get("/readyz").status_code == 503
        Switch.down = False
        assert tc.get("/readyz").status_code == 200

"""Alert rules, and signed webhook delivery with retries, backoff and dead letters against real
local HTTP receivers (one good, one slow, one failing, one dead port)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from outputs.alerts import AlertEngine, AlertRules, Subscription, WebhookDispatcher
from outputs.security import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from schemas.events import (
    AlertRaised,
    AllocationDecided,
    Assignment,
    CapacityObserved,
    DeadLettered,
    InterruptionKind,
    InterruptionObserved,
    PriceForecasted,
    PriceObserved,
    WorkloadRequested,
    WorkloadSpec,
)
from schemas.offers import Market, OfferKey

T0 = datetime(2025, 5, 1, tzinfo=UTC)


def offer(it: str = "p4d", market: Market = Market.ON_DEMAND, gpu: str = "A100-80GB", n: int = 8) -> OfferKey:
    return OfferKey(provider="aws", region="us-east-1", instance_type=it, gpu_model=gpu, gpus_per_instance=n,
                    market=market)


def price(o: OfferKey, usd: float, t: datetime, i: int) -> PriceObserved:
    return PriceObserved(event_id=f"p{i}", offer=o, usd_per_hour=usd, quoted_at=t, observed_at=t, source="t")


def test_rules() -> None:
    eng = AlertEngine(AlertRules(price_change_pct=10, savings_opportunity_usd_per_hour=2.0, cooldown_s=600))
    a, b = offer("a"), offer("b", Market.SPOT)
    spec = WorkloadSpec(workload_id="w", gpu_throughput={"A100-80GB": 1.0}, min_gpus=8, max_gpus=8,
                        budget_usd_per_hour=30)
    assert eng.observe(WorkloadRequested(event_id="w", spec=spec, requested_at=T0)) == []
    eng.observe(price(a, 20.0, T0, 1))
    eng.observe(AllocationDecided(event_id="d1", decided_at=T0, workload_ids=["w"], reason="r",
                                  assignments=[Assignment(workload_id="w", offer=a, instances=1, usd_per_hour=20)]))
    # spike +15 %
    out = eng.observe(price(a, 23.0, T0 + timedelta(minutes=1), 2))
    assert [x.rule for x in out] == ["price_spike"] and out[0].value == pytest.approx(15.0)
    # within cooldown: nothing again
    assert eng.observe(price(a, 26.5, T0 + timedelta(minutes=2), 3)) == []
    # a cheaper acceptable spot offer: savings opportunity 26.5 - 8*2 = 10.5 $/h > 2
    out = eng.observe(price(b, 16.0, T0 + timedelta(minutes=3), 4))
    assert [x.rule for x in out] == ["savings_opportunity"] and out[0].workload_id == "w"
    # capacity lost on the placed offer
    cap = CapacityObserved(event_id="c1", offer=a, available=True, quoted_at=T0, observed_at=T0, source="t")
    assert eng.observe(cap) == []
    lost = eng.observe(cap.model_copy(update={"event_id": "c2", "available": False}))
    assert lost[0].rule == "capacity_lost" and lost[0].severity == "critical"
    # interruption warning
    it = InterruptionObserved(event_id="i1", offer=b, kind=InterruptionKind.WARNING, instance_id="i-1",
                              occurred_at=T0, observed_at=T0, source="t")
    assert eng.observe(it)[0].rule == "interruption"
    # forecast over budget for the placed offer
    fc = PriceForecasted(event_id="f1", offer=a, forecast_at=T0, horizon_s=3600, usd_per_hour=35.0, model="m")
    out = eng.observe(fc)
    assert out[0].rule == "forecast_budget_breach" and out[0].value == 35.0 and out[0].threshold == 30
    # ids are deterministic
    ids = []
    for _ in range(2):
        e = AlertEngine()
        e.observe(price(a, 20.0, T0, 1))
        ids.append(e.observe(price(a, 23.0, T0 + timedelta(minutes=1), 2))[0].event_id)
    assert ids[0] == ids[1]


class _Recv:
    def __init__(self, mode: str) -> None:
        self.mode, self.calls, self.bodies = mode, 0, []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.calls += 1
                if outer.mode == "slow":
                    time.sleep(2.0)
                if (outer.mode == "flaky" and outer.calls < 3) or outer.mode == "fail":
                    self.send_response(503)
                else:
                    outer.bodies.append((dict(self.headers), body))
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/hook"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def receivers() -> Iterator[dict[str, _Recv]]:
    rs = {m: _Recv(m) for m in ("good", "slow", "flaky", "fail")}
    yield rs
    for r in rs.values():
        r.close()


def _dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def test_webhooks_signed_retried_dead_lettered(receivers: dict[str, _Recv]) -> None:
    subs = [Subscription(m, r.url, f"secret-{m}") for m, r in receivers.items()]
    subs.append(Subscription("dead", f"http://127.0.0.1:{_dead_port()}/x", "secret-dead"))
    subs.append(Subscription("only-spikes", receivers["good"].url, "secret-x", ("price_spike",)))
    records: list[dict[str, Any]] = []
    dlq: list[DeadLettered] = []
    d = WebhookDispatcher(subs, max_attempts=3, base_backoff_s=0.05, timeout_s=0.5, allow_private=True,
                          record=records.append, dead_letter=dlq.append).start()
    try:
        alert = AlertRaised(event_id="a1", rule="price_drop", message="m", raised_at=T0)
        t0 = time.monotonic()
        assert d.submit(alert) == 5  # every sub except the price_spike-only one
        assert time.monotonic() - t0 < 0.1  # never blocks the caller
        assert d.submit(alert) == 0  # redelivered alert: not sent twice
        deadline = time.monotonic() + 10
        while not receivers["good"].bodies and time.monotonic() < deadline:
            time.sleep(0.01)
        good_latency = time.monotonic() - t0
        assert good_latency < 1.0, "a slow receiver must not delay the others"
        while d.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        d.stop()
    headers, body = receivers["good"].bodies[0]
    assert verify_signature("secret-good", headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    assert not verify_signature("secret-fail", headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
    assert json.loads(body)["alert"]["event_id"] == "a1"
    assert receivers["flaky"].calls == 3 and receivers["flaky"].bodies  # retried until it worked
    assert receivers["fail"].calls == 3  # N attempts, then dead letter
    dead = {x.reason.split()[1] for x in dlq}
    assert dead == {"fail", "dead", "slow"}  # slow: times out (0.5 s) each attempt
    assert all("secret-" not in x.reason and "secret-" not in x.original_b64 for x in dlq)
    assert {r["status"] for r in records} >= {"delivered", "failed", "dead"}
    assert d.stats.delivered == 2 and d.stats.dead == 3


def test_invalid_url_is_dead_lettered_without_a_request() -> None:
    dlq: list[DeadLettered] = []
    d = WebhookDispatcher([Subscription("s", "http://10.0.0.1/x", "k")], dead_letter=dlq.append).start()
    try:
        assert d.submit(AlertRaised(event_id="a", rule="r", message="m", raised_at=T0)) == 0
    finally:
        d.stop()
    assert "invalid url" in dlq[0].reason


def test_warm_start_from_clickhouse(loaded_db: tuple[Any, str, list[Any]]) -> None:
    """After a restart the engine rebuilds prices, workloads and the plan from ClickHouse, so the rules that
    need them (savings opportunity, forecast budget breach) work on the first new event."""
    client, db, _ = loaded_db
    cold, warm = AlertEngine(), AlertEngine()
    warm.warm_start(client, db)
    assert len(warm.last_price) > 100 and "llm-finetune-8xh100" in warm.plan
    assert "pretrain-b200" not in warm.workloads  # cancelled
    placed = warm.plan["llm-finetune-8xh100"][0]
    fc = PriceForecasted(event_id="f-warm", offer=placed.offer, forecast_at=T0, horizon_s=3600,
                         usd_per_hour=1000.0, model="m")
    out = warm.observe(fc)
    assert out and {a.rule for a in out} == {"forecast_budget_breach"}
    assert "llm-finetune-8xh100" in {a.workload_id for a in out}
    assert cold.observe(fc) == []

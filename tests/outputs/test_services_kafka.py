"""Integration on the real local broker and chdb: the sink survives ClickHouse being down (nothing
lost, bounded memory, idempotent), and the alert + executor services run end to end from Kafka."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from connectors.publish import KafkaPublisher
from embedded.kafka import ensure_topics
from outputs.alerts import Subscription
from outputs.clickhouse import table_counts
from outputs.server import start_alerts, start_executors
from outputs.sink import ClickHouseWriter, run_sink
from schemas.events import AlertRaised, AllocationDecided, Event, PriceObserved
from schemas.topics import TopicSpec
from tests.conftest import unique

pytestmark = pytest.mark.integration


class FlakyClient:
    """Wraps a client; every call fails while `down` is set (ClickHouse unreachable)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.down, self.failures = inner, True, 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)

        def call(*a: Any, **kw: Any) -> Any:
            if self.down:
                self.failures += 1
                raise ConnectionError("clickhouse is down")
            return attr(*a, **kw)

        return call


def _publish(bootstrap: str, events: list[Event], topic: str | None = None) -> None:
    pub = KafkaPublisher(bootstrap)
    for e in events:
        pub.publish(e, topic)
    assert pub.flush(30) == 0 and pub.failed == 0


def test_sink_survives_clickhouse_outage(kafka_bootstrap: str, chdb_client: tuple[Any, str]) -> None:
    from tests.outputs.conftest import replayed_events

    client, db = chdb_client
    topic = unique("prices-outage")
    prices = [e for e in replayed_events() if isinstance(e, PriceObserved)][:1500]
    _publish(kafka_bootstrap, prices, topic)
    flaky = FlakyClient(client)
    writer = ClickHouseWriter(flaky, db)
    stop = threading.Event()
    stats: list[Any] = []
    t = threading.Thread(target=lambda: stats.append(run_sink(
        kafka_bootstrap, writer, stop, group_id=unique("sink"), topics=[topic], batch_size=500, idle_exit_s=3.0)))
    t.start()
    time.sleep(3.0)  # "down for a minute", compressed: the sink keeps one batch and retries
    assert flaky.failures >= 3 and writer.stats.written == 0 and writer.stats.consumed <= 500
    flaky.down = False
    t.join(60)
    assert not t.is_alive()
    assert table_counts(client, db)["prices"] == 1500
    # redelivery of everything (a new group) writes nothing twice
    w2 = ClickHouseWriter(client, db)
    run_sink(kafka_bootstrap, w2, threading.Event(), group_id=unique("sink"), topics=[topic], idle_exit_s=2.0)
    assert w2.stats.written == 0 and w2.stats.duplicates == 1500
    assert table_counts(client, db)["prices"] == 1500
    bars = client.query(f"SELECT uniqExactMerge(n) FROM {db}.price_bars_hourly").result_rows[0][0]
    assert bars == 1500  # the hourly bars count each price once


def test_alerts_and_executors_from_kafka(kafka_bootstrap: str, chdb_client: tuple[Any, str]) -> None:
    """Decisions and prices on the real topics -> executor actions (dry run) and alerts (published to
    the alerts topic, delivered to a local webhook receiver)."""
    from tests.outputs.conftest import replayed_events

    client, db = chdb_client
    got: list[bytes] = []

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def do_POST(self) -> None:
            got.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    events = replayed_events()
    decisions = [e for e in events if isinstance(e, AllocationDecided)]
    # unique ids so this test's events are new to the shared topics' other readers
    tag = unique("t")
    decisions = [d.model_copy(update={"event_id": f"{tag}-{d.event_id}"}) for d in decisions]
    prices = [e for e in events if isinstance(e, PriceObserved)][:300]
    spiky = prices[0].offer.model_copy(update={"instance_type": tag})
    t0 = prices[0].quoted_at
    prices += [PriceObserved(event_id=f"{tag}-{i}", offer=spiky, usd_per_hour=usd, quoted_at=t0, observed_at=t0,
                             source="test") for i, usd in enumerate((2.0, 3.0))]  # +50 %: price_spike
    pub = KafkaPublisher(kafka_bootstrap)
    # this test's own topics: other tests on the session broker read the shared ones from the beginning
    t_dec, t_prices, t_alerts = unique("decisions"), unique("prices"), unique("alerts")

    def publish(e: Event) -> None:
        pub.publish(e, t_alerts if isinstance(e, AlertRaised) else None)

    ensure_topics(kafka_bootstrap, [TopicSpec(t, "event id", 1, ()) for t in (t_dec, t_prices, t_alerts)])
    _publish(kafka_bootstrap, [*decisions], t_dec)
    _publish(kafka_bootstrap, prices, t_prices)
    ex = start_executors(kafka_bootstrap, client, db, group_id=unique("exec"), idle_exit_s=4.0,
                         decisions_topic=t_dec)
    al = start_alerts(kafka_bootstrap, client, db, publish, flush=pub.flush, group_id=unique("alerts"),
                      subscriptions=[Subscription("local", f"http://127.0.0.1:{srv.server_address[1]}/h", "s3")],
                      allow_private_webhooks=True, idle_exit_s=6.0, input_topics=[t_dec, t_prices],
                      alerts_topic=t_alerts)
    try:
        deadline = time.monotonic() + 25
        runner = ex.objects["executor_runner"]
        while time.monotonic() < deadline and not (got and {d.event_id for d in decisions} <= runner.handled):
            time.sleep(0.2)
    finally:
        ex.stop()
        al.stop()
        srv.shutdown()
        srv.server_close()
    n = client.query(f"SELECT countDistinct(decision_id) FROM {db}.executor_actions WHERE decision_id LIKE "
                     "{p:String}", parameters={"p": f"{tag}-%"}).result_rows[0][0]
    assert n == len(decisions)
    eng, disp = al.objects["alert_engine"], al.objects["dispatcher"]
    assert got, f"no webhook delivered: {len(eng.last_price)} prices seen, {disp.stats}"
    assert client.query(f"SELECT count() FROM {db}.webhook_deliveries WHERE status = 'delivered'"
                        ).result_rows[0][0] >= 1

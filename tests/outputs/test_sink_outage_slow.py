"""SLOW (about 75 s): ClickHouse unreachable for a full minute while events keep arriving; the sink holds one
batch, retries with capped backoff, stays in its consumer group, and writes everything exactly once after."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from connectors.publish import KafkaPublisher
from outputs.clickhouse import table_counts
from outputs.sink import ClickHouseWriter, run_sink
from schemas.events import PriceObserved
from tests.conftest import unique
from tests.outputs.test_services_kafka import FlakyClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sink_survives_a_minute_of_clickhouse_outage(kafka_bootstrap: str, chdb_client: tuple[Any, str]) -> None:
    from tests.outputs.conftest import replayed_events

    client, db = chdb_client
    topic = unique("prices-outage-60")
    prices = [e for e in replayed_events() if isinstance(e, PriceObserved)]
    pub = KafkaPublisher(kafka_bootstrap)
    for e in prices[:1000]:
        pub.publish(e, topic)
    assert pub.flush(30) == 0
    flaky = FlakyClient(client)
    writer = ClickHouseWriter(flaky, db)
    stop = threading.Event()
    t = threading.Thread(target=run_sink, args=(kafka_bootstrap, writer, stop),
                         kwargs={"group_id": unique("sink"), "topics": [topic], "batch_size": 400}, daemon=True)
    t.start()
    t0 = time.monotonic()
    sent = 1000
    while time.monotonic() - t0 < 60:  # down for a minute; more events keep arriving meanwhile
        time.sleep(5)
        for e in prices[sent:sent + 50]:
            pub.publish(e, topic)
        sent = min(len(prices), sent + 50)
        pub.flush(10)
        assert writer.stats.consumed <= 400  # bounded: one batch in memory
    flaky.down = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and table_counts(client, db)["prices"] < sent:
        time.sleep(0.5)
    stop.set()
    t.join(30)
    assert flaky.failures >= 10
    assert table_counts(client, db)["prices"] == sent
    assert writer.stats.duplicates == 0

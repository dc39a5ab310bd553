"""Faust agents in test_context() (no broker, memory store): thin wiring over the tested logic."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from unittest import mock

import pytest

from schemas.market import OfferQuote
from solvers import GreedyEngine
from streams.app import StreamsConfig, create_app
from tests.streams.helpers import offer, price

OFF = offer()


@pytest.fixture
def app() -> Any:
    a = create_app(StreamsConfig(broker="kafka://127.0.0.1:1", app_id="t-agents", debounce_s=0.01), GreedyEngine)
    a.finalize()
    a.conf.store = "memory://"
    a.flow_control.resume()
    return a


async def test_track_offers_updates_the_table_and_forwards_material_changes(app: Any) -> None:
    track_offers = app.cloudarb_agents[0]
    sent: list[tuple[str, bytes]] = []

    async def fake_send(self: Any, key: Any = None, value: Any = None, **kw: Any) -> Any:
        sent.append((self.get_topic_name(), value))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    class FakeOut:
        def __init__(self, bootstrap: str) -> None:
            pass

        def produce(self, topic: str, key: Any, value: Any, partition: int | None = None, **kw: Any) -> None:
            sent.append((topic, value))

        def write_table(self, table: Any, key: str, value: Any, partition: int, **kw: Any) -> None:
            table.data[key] = value
            sent.append((table.changelog_topic.get_topic_name(), json.dumps(value).encode()))

        async def flush(self, batch: Any = None) -> None:
            pass

        def pending(self) -> int:
            return 0

    with mock.patch("faust.topics.Topic.send", fake_send), mock.patch("streams.app.FastOutput", FakeOut):
        async with track_offers.test_context() as agent:
            await agent.put(price(OFF, 1.0).model_dump_json().encode(), key=OFF.key.encode())
            await agent.put(b"{garbage", key=b"x")
            await asyncio.sleep(0.1)
    table = app.cloudarb_tables["offers"]
    assert table[OFF.key]["usd_per_hour"] == 1.0
    topics = [t for t, _ in sent]
    assert "t-agents-market-changes" in topics and "cloudarb.dlq.v1" in topics
    assert "t-agents-offers-changelog" in topics and "cloudarb.forecasts.v1" in topics
    dl = json.loads(next(v for t, v in sent if t == "cloudarb.dlq.v1"))
    assert "not JSON" in dl["reason"] and dl["original_b64"]
    assert app.cloudarb_counters.dead_lettered == 1 and app.cloudarb_counters.material == 1


def test_engine_contract_is_what_streams_uses() -> None:
    eng = GreedyEngine()
    eng.upsert_offers([OfferQuote(OFF, 1.0)])
    assert eng.solve().assignments == ()

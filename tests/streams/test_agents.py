"""The worker's wiring, without a broker (the stages' logic is tested in test_track / test_decide; the market
stage against the broker in tests/integration/test_market_stage.py)."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.market import OfferQuote
from solvers import GreedyEngine
from streams.runtime.app import StreamsConfig, create_app
from tests.streams.helpers import offer

OFF = offer()


@pytest.fixture
def app() -> Any:
    a = create_app(StreamsConfig(broker="kafka://127.0.0.1:1", app_id="t-agents", debounce_s=0.01), GreedyEngine)
    a.finalize()
    a.conf.store = "memory://"
    a.flow_control.resume()
    return a


def test_the_app_wires_the_market_stage_to_the_decision_agent(app: Any) -> None:
    stage = app.cloudarb_market
    assert stage.topics == ["cloudarb.prices.v1", "cloudarb.capacity.v1", "cloudarb.interruptions.v1"]
    assert stage.cfg.changes_topic == "t-agents-market-changes" and stage.cfg.bootstrap == "127.0.0.1:1"
    decide = app.cloudarb_agents[0]
    assert {t for ch in [decide.channel] for t in ch.topics} == {"t-agents-market-changes", "cloudarb.workloads.v1",
                                                               "cloudarb.quotas.v1"}
    assert not stage.alive  # started by the worker once the tables are recovered


def test_engine_contract_is_what_streams_uses() -> None:
    eng = GreedyEngine()
    eng.upsert_offers([OfferQuote(OFF, 1.0)])
    assert eng.solve().assignments == ()

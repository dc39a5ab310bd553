"""The worker's wiring, without a broker (the stages' logic is tested in test_track / test_decide; the market
stage against the broker in tests/integration/test_market_stage.py)."""

from __future__ import annotations

import pytest

from schemas.market import OfferQuote
from solvers import GreedyEngine
from streams.runtime.app import StreamsConfig, StreamsWorker, create_app
from tests.streams.helpers import offer

OFF = offer()


@pytest.fixture
def worker() -> StreamsWorker:
    w = create_app(StreamsConfig(broker="kafka://127.0.0.1:1", app_id="t-agents", debounce_s=0.01), GreedyEngine)
    w.app.finalize()
    return w


def test_the_app_wires_the_market_stage_to_the_decision_agent(worker: StreamsWorker) -> None:
    stage = worker.market_stage
    assert stage.topics == ["cloudarb.prices.v1", "cloudarb.capacity.v1", "cloudarb.interruptions.v1"]
    assert stage.cfg.changes_topic == "t-agents-market-changes" and stage.cfg.bootstrap == "127.0.0.1:1"
    assert stage.cfg.plans_topic == "cloudarb.plans.v1" and stage.store.topic == "t-agents-offer-state.v1"
    assert {t for ch in [worker.agent.channel] for t in ch.topics} == {
        "t-agents-market-changes", "cloudarb.workloads.v1", "cloudarb.quotas.v1"}
    assert not stage.alive  # started when the app starts
    # Faust holds no state: every store is a topic of ours, the plans the public plans topic
    assert not worker.app.tables
    assert [s.topic for s in worker.state.stores()] == [
        "t-agents-decision-market.v1", "t-agents-decision-workloads.v1", "t-agents-decision-quotas.v1",
        "cloudarb.plans.v1"]


def test_engine_contract_is_what_streams_uses() -> None:
    eng = GreedyEngine()
    eng.upsert_offers([OfferQuote(OFF, 1.0)])
    assert eng.solve().assignments == ()

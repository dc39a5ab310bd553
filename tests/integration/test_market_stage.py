"""The market stage (streams.runtime.market) against the local broker: outputs, committed offsets, recovery."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest

from schemas.topics import DLQ, FORECASTS
from streams.core import track
from streams.core.forecast import Forecaster
from streams.core.held import plan_adopted, plan_key
from streams.runtime.market import MarketConfig, MarketStage, market_group, offer_state_topic
from streams.runtime.store import decode_record, encode_record
from tests.conftest import unique
from tests.integration.helpers import caught_up, read_all, wait_until
from tests.streams.helpers import T0, offer, price

pytestmark = pytest.mark.integration


def _topic(bootstrap: str, partitions: int = 6) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"t-market-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the result
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    return name


def _stage(bootstrap: str, app_id: str, topic: str, plans_topic: str | None = None) -> MarketStage:
    cfg = MarketConfig(bootstrap, app_id, f"{app_id}-market-changes", plans_topic=plans_topic)
    return MarketStage(cfg, [topic], Forecaster())


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap})
    for k, v in records:
        p.produce(topic, key=k, value=v)
    assert p.flush(30) == 0


def test_market_stage_writes_state_changes_forecasts_and_dead_letters_then_recovers(kafka_bootstrap: str) -> None:
    app_id, topic = unique("t-market"), _topic(kafka_bootstrap)
    o = offer(region=f"r-{uuid.uuid4().hex[:6]}")
    _produce(kafka_bootstrap, topic, [(o.key.encode(), price(o, 1.0).model_dump_json().encode()),
                                      (b"x", b"{garbage")])
    stage = _stage(kafka_bootstrap, app_id, topic)
    stage.start()
    try:
        wait_until(lambda: caught_up(kafka_bootstrap, market_group(app_id), [topic]), 60, "the stage's commit")
    finally:
        stage.stop()
    assert not stage.alive and stage.failures == 0
    assert stage.store.get(o.key)["usd_per_hour"] == 1.0  # type: ignore[index]

    state = dict(decode_record(m.key(), m.value()) for m in read_all(kafka_bootstrap, [offer_state_topic(app_id)]))
    assert state[o.key] == stage.store.get(o.key)
    changes = [c for m in read_all(kafka_bootstrap, [f"{app_id}-market-changes"])
               for c in json.loads(m.value())["changes"]]
    assert [(c["offer_key"], c["reason"]) for c in changes] == [(o.key, "new offer")]
    dead: list[Any] = [json.loads(m.value()) for m in read_all(kafka_bootstrap, [DLQ.name])]
    mine = [d for d in dead if d["source_topic"] == topic]
    assert len(mine) == 1 and "not JSON" in mine[0]["reason"]
    forecasts = [json.loads(m.value()) for m in read_all(kafka_bootstrap, [FORECASTS.name])
                 if m.key() == o.key.encode()]
    assert {f["horizon_s"] for f in forecasts} == {3600, 86_400}

    # a new stage of the same app: state recovered from its topic, consumption resumes after the commit
    _produce(kafka_bootstrap, topic, [(o.key.encode(), price(o, 1.5, minutes=10).model_dump_json().encode())])
    again = _stage(kafka_bootstrap, app_id, topic)
    again.start()
    try:
        wait_until(lambda: caught_up(kafka_bootstrap, market_group(app_id), [topic]), 60, "the second commit")
        time.sleep(0.2)
    finally:
        again.stop()
    s = again.store.get(o.key)
    assert s is not None and s["usd_per_hour"] == 1.5 and s["n"] == 2  # n counts the first price: recovered
    changes = [c for m in read_all(kafka_bootstrap, [f"{app_id}-market-changes"])
               for c in json.loads(m.value())["changes"]]
    assert [c["reason"] for c in changes] == ["new offer", "price rose 50.0%"]


def test_a_batch_whose_outputs_fail_is_rolled_back_and_retried_until_delivered(kafka_bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

    app_id, topic = unique("t-market"), _topic(kafka_bootstrap)
    changes = f"{app_id}-market-changes"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    # the changes topic refuses the batch's change message (too large) until its limit is raised
    admin.create_topics([NewTopic(changes, 1, 1, config={"max.message.bytes": "100"})])[changes].result(30)
    o = offer(region=f"r-{uuid.uuid4().hex[:6]}")
    _produce(kafka_bootstrap, topic, [(o.key.encode(), price(o, 2.0).model_dump_json().encode())])
    stage = _stage(kafka_bootstrap, app_id, topic)
    stage.start()
    try:
        wait_until(lambda: stage.failures >= 2, 60, "failed deliveries")
        assert stage.store.get(o.key) is None                    # the batch's state was put back
        assert not caught_up(kafka_bootstrap, market_group(app_id), [topic])   # and its offsets not committed
        res = ConfigResource(ConfigResource.Type.TOPIC, changes, set_config={"max.message.bytes": "1000000"})
        for fut in admin.alter_configs([res]).values():
            fut.result(30)
        wait_until(lambda: caught_up(kafka_bootstrap, market_group(app_id), [topic]), 60, "the retried batch")
    finally:
        stage.stop()
    assert stage.store.get(o.key)["usd_per_hour"] == 2.0  # type: ignore[index]
    got = [c for m in read_all(kafka_bootstrap, [changes]) for c in json.loads(m.value())["changes"]]
    assert [(c["offer_key"], c["reason"]) for c in got] == [(o.key, "new offer")]


def test_market_stage_commits_at_most_every_interval_and_on_stop(kafka_bootstrap: str) -> None:
    app_id, topic = unique("t-market-commit"), _topic(kafka_bootstrap)
    o = offer(region=f"r-{uuid.uuid4().hex[:6]}")
    _produce(kafka_bootstrap, topic, [(o.key.encode(), price(o, 1.0).model_dump_json().encode())])
    stage = MarketStage(MarketConfig(kafka_bootstrap, app_id, f"{app_id}-market-changes", commit_interval_s=3600),
                        [topic], Forecaster(), set)
    stage.start()
    try:
        wait_until(lambda: stage.batches > 0, 60, "the stage's first batch")
        time.sleep(1.0)
        assert not caught_up(kafka_bootstrap, market_group(app_id), [topic])  # processed, not yet committed
    finally:
        stage.stop()
    assert caught_up(kafka_bootstrap, market_group(app_id), [topic])     # committed when it stopped


def _changes(bootstrap: str, app_id: str) -> list[tuple[str, str]]:
    return [(c["offer_key"], c["reason"]) for m in read_all(bootstrap, [f"{app_id}-market-changes"])
            for c in json.loads(m.value())["changes"]]


def _plan(app_id: str, wid: str, o: Any, since_t: float) -> tuple[bytes, bytes | None]:
    from schemas import Assignment

    a = Assignment(workload_id="w", offer=o, instances=1, usd_per_hour=1.0)
    return encode_record(plan_key(app_id, wid), plan_adopted(
        app_id, wid, {"decision_id": "d", "assignments": [a.model_dump(mode="json")]}, since_t, since_t + 1))


def test_the_held_offers_come_from_the_plans_topic_and_newly_held_offers_are_caught_up(
        kafka_bootstrap: str) -> None:
    """As in a worker without the decision stage: the plans reach its market stage through the plans topic
    (written here as the decision stage writes it). A move below the threshold is forwarded for a
    held offer. A move quoted during the step that newly holds an offer is forwarded when the plan arrives,
    also when it arrived while no stage ran, and not again after a restart."""
    app_id, topic = unique("t-market"), _topic(kafka_bootstrap)
    plans_topic = f"{app_id}-plans.v1"
    held, drift, late = (offer(region=f"{r}-{uuid.uuid4().hex[:6]}") for r in ("h", "d", "l"))
    step_t = (T0 + timedelta(minutes=5)).timestamp()   # a step began at minute 5; the moves are at minute 10

    def prices(*moves: tuple[Any, float, float]) -> None:
        _produce(kafka_bootstrap, topic, [(o.key.encode(), price(o, usd, minutes=m).model_dump_json().encode())
                                          for o, usd, m in moves])

    def engine_price(stage: MarketStage, o: Any) -> Any:
        return (stage.store.get(o.key) or {}).get("engine_usd_per_hour")

    stage = _stage(kafka_bootstrap, app_id, topic, plans_topic)
    stage.start()
    try:
        wait_until(lambda: stage.held.following, 60, "the stage following the plans")
        _produce(kafka_bootstrap, plans_topic, [_plan(app_id, "w1", held, since_t=0.0)])
        wait_until(lambda: held.key in stage.held, 30, "the plan reaching the stage")
        prices((held, 1.0, 0), (drift, 1.0, 0), (late, 1.0, 0), (held, 1.005, 10), (drift, 1.005, 10),
               (late, 1.005, 10))
        wait_until(lambda: caught_up(kafka_bootstrap, market_group(app_id), [topic]), 60, "the stage's commit")
    finally:
        stage.stop()
    assert sorted(_changes(kafka_bootstrap, app_id)) == sorted([
        (held.key, "new offer"), (drift.key, "new offer"), (late.key, "new offer"),
        (held.key, "price rose 0.5% on a held offer")])   # not held: drift's and late's moves wait

    # while no stage runs, a step places a workload on `drift`: caught up when a stage starts
    _produce(kafka_bootstrap, plans_topic, [_plan(app_id, "w2", drift, since_t=step_t)])
    again = _stage(kafka_bootstrap, app_id, topic, plans_topic)
    again.start()
    try:
        wait_until(lambda: engine_price(again, drift) == 1.005, 60, "the catch-up at start")
        # and a step places one on `late` while the stage runs
        _produce(kafka_bootstrap, plans_topic, [_plan(app_id, "w3", late, since_t=step_t)])
        wait_until(lambda: engine_price(again, late) == 1.005, 30, "the catch-up of a running stage")
    finally:
        again.stop()
    changes = _changes(kafka_bootstrap, app_id)
    assert changes[4:] == [(drift.key, track.CATCH_UP_REASON), (late.key, track.CATCH_UP_REASON)]
    assert again.failures == 0

    third = _stage(kafka_bootstrap, app_id, topic, plans_topic)   # all caught up already: nothing again
    third.start()
    try:
        wait_until(lambda: third.store.get(late.key) is not None and len(third.held) == 3, 60, "the third stage")
        time.sleep(1.0)
    finally:
        third.stop()
    assert len(_changes(kafka_bootstrap, app_id)) == len(changes) and engine_price(third, late) == 1.005

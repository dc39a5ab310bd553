"""End to end on the real local broker and chdb: replay -> worker -> decisions -> ClickHouse."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudarb.app import load_workloads, workload_events
from cloudarb.pipeline import publish_events
from connectors.publish import KafkaPublisher
from connectors.replay import replay_events
from embedded.demo import MARKET_TOPICS, group_position
from outputs.clickhouse import table_counts
from outputs.sink import SINK_TOPICS, ClickHouseWriter, run_sink
from schemas.events import PriceObserved
from schemas.market import OfferQuote
from solvers import greedy_plan
from streams.core import state
from streams.runtime.market import market_group
from streams.runtime.store import decode_record
from tests.conftest import ROOT, SAMPLE, unique
from tests.integration.helpers import caught_up, read_all, start_worker, stop, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKLOADS = load_workloads(ROOT / "examples" / "workloads.yaml")


@pytest.fixture
def sink(kafka_bootstrap: str, chdb_client: tuple[Any, str]) -> Iterator[tuple[ClickHouseWriter, str]]:
    client, db = chdb_client
    writer = ClickHouseWriter(client, db)
    group = unique("sink")
    stop_evt = threading.Event()
    t = threading.Thread(target=run_sink, args=(kafka_bootstrap, writer, stop_evt), kwargs={"group_id": group},
                         daemon=True)
    t.start()
    yield writer, group
    stop_evt.set()
    t.join(30)


def _store_state(bootstrap: str, topic: str) -> dict[str, Any]:
    """The last value per key of a store's topic (streams.runtime.store) = the store's durable state."""
    return dict(decode_record(m.key(), m.value()) for m in read_all(bootstrap, [topic]))


def _end_offsets(bootstrap: str) -> dict[tuple[str, int], int]:
    """(topic, partition) -> end offset, for the market topics."""
    from confluent_kafka import Consumer, TopicPartition

    from schemas.topics import TOPICS

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("ends")})
    try:
        parts = {name: TOPICS[name].partitions for name in MARKET_TOPICS}
        return {(t, p): c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
                for t, n in parts.items() for p in range(n)}
    finally:
        c.close()


def _expected_offer_state(events: list[Any]) -> dict[str, dict[str, Any]]:
    s: dict[str, dict[str, Any]] = {}
    for e in events:
        new, _ = state.apply_event(s.get(e.offer.key, {}), e)
        s[e.offer.key] = new
    return s


def _market_log(bootstrap: str) -> list[Any]:
    """Every valid market event in the topics, in partition order: the input of a run without a kill
    (the session's topics also hold other tests' events, which the worker processed too)."""
    from datetime import UTC, datetime

    from streams.core.validate import Rejected, validate

    now = datetime.now(UTC)
    events = (validate(m.value(), ("PriceObserved", "CapacityObserved", "InterruptionObserved"), now)
              for m in read_all(bootstrap, list(MARKET_TOPICS)))
    return [e for e in events if not isinstance(e, Rejected)]


def test_replay_reaches_clickhouse_once_with_decisions(
        kafka_bootstrap: str, sink: tuple[ClickHouseWriter, str], chdb_client: tuple[Any, str],
        tmp_path: Path) -> None:
    writer, sink_group = sink
    client, db = chdb_client
    app_id = unique("e2e")
    worker = start_worker(kafka_bootstrap, app_id, tmp_path / "worker.log")
    try:
        publish_events(kafka_bootstrap, workload_events(WORKLOADS))
        events = list(replay_events(SAMPLE))
        pub = KafkaPublisher(kafka_bootstrap)
        start = {t: group_position(kafka_bootstrap, app_id, [t])[1] for t in MARKET_TOPICS}
        start_at = _end_offsets(kafka_bootstrap)
        pub.publish_all(events)
        # a redelivery: the first 100 events again (same ids) must not duplicate rows
        pub.publish_all(events[:100])
        assert pub.flush(30) == 0
        wait_until(lambda: caught_up(kafka_bootstrap, market_group(app_id), list(MARKET_TOPICS))
                   and group_position(kafka_bootstrap, market_group(app_id), list(MARKET_TOPICS))[0]
                   > sum(start.values()),
                   300, "the worker to consume the replay")
        wait_until(lambda: writer.stats.rows.get("decisions", 0) > 0, 60, "a decision in ClickHouse")
        wait_until(lambda: caught_up(kafka_bootstrap, sink_group, list(SINK_TOPICS)), 60, "the sink")
    finally:
        stop(worker)
    counts = table_counts(client, db)
    ids = [e.event_id for e in events if isinstance(e, PriceObserved)]
    # the session's topics may also hold other tests' events: count this test's ids, each exactly once
    mine = client.query(f"SELECT count(), uniqExact(event_id) FROM {db}.prices WHERE event_id IN {{ids:Array(String)}}",
                        parameters={"ids": ids}).result_rows[0]
    assert mine == (len(ids), len(ids))
    assert counts["decisions"] >= 1
    assert writer.stats.duplicates >= 100
    # none of this test's events was dead-lettered (the worker reads the topics from the start, so it also
    # dead-letters what other tests put there before)
    rows = client.query(f"SELECT source_topic, source_partition, source_offset FROM {db}.dead_letters "
                        f"WHERE source_topic IN {{t:Array(String)}}", parameters={"t": list(MARKET_TOPICS)}).result_rows
    assert not [r for r in rows if r[2] is not None and r[2] >= start_at[(r[0], r[1])]]


def test_worker_killed_mid_stream_loses_nothing_and_duplicates_nothing(
        kafka_bootstrap: str, sink: tuple[ClickHouseWriter, str], chdb_client: tuple[Any, str],
        tmp_path: Path) -> None:
    _, sink_group = sink
    client, db = chdb_client
    app_id = unique("kill")
    # this test's own offers (the session's topics already hold the sample from other tests, whose states
    # would make every event here a no-op): same market, regions tagged with the app id
    tag = app_id.split("-")[-1]
    events = [type(e).model_validate({**e.model_dump(), "event_id": f"{e.event_id}-{tag}",
                                      "offer": {**e.offer.model_dump(), "region": f"{e.offer.region}-k{tag}"}})
              if hasattr(e, "offer") else e for e in replay_events(SAMPLE)]
    half = len(events) // 2
    log = tmp_path / "worker.log"
    worker = start_worker(kafka_bootstrap, app_id, log)
    publish_events(kafka_bootstrap, workload_events(WORKLOADS))
    pub = KafkaPublisher(kafka_bootstrap)
    pub.publish_all(events[:half])
    assert pub.flush(30) == 0
    wait_until(lambda: group_position(kafka_bootstrap, market_group(app_id), list(MARKET_TOPICS))[0] > 0, 90,
               "the worker to commit some progress")
    stop(worker, signal.SIGKILL)  # kill -9 mid-stream
    pub.publish_all(events[half:])
    assert pub.flush(30) == 0
    # what a run without the kill ends with: the pure state function over every event, in order
    expected = _expected_offer_state(_market_log(kafka_bootstrap))

    # `engine_usd_per_hour` (the price last forwarded to the engine) also depends on which offers were held
    # by a plan at that moment (timing-dependent even without a kill); every other field must match exactly
    def strip(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k != "engine_usd_per_hour"}

    last: dict[str, Any] = {}

    def state_matches() -> bool:
        got = last["got"] = _store_state(kafka_bootstrap, f"{app_id}-offer-state.v1")
        return set(got) == set(expected) and all(strip(got[k]) == strip(expected[k]) for k in expected)

    def state_diff() -> str:
        got = last.get("got", {})
        bad = sorted(k for k in set(expected) & set(got) if strip(got[k]) != strip(expected[k]))
        out = f"missing {len(set(expected) - set(got))}, unexpected {len(set(got) - set(expected))}, " \
              f"differing {len(bad)} of {len(expected)}"
        if bad:
            g, w = strip(got[bad[0]]), strip(expected[bad[0]])
            out += f"; e.g. {bad[0]}: " + ", ".join(f"{f}: got {g.get(f)!r} want {w.get(f)!r}"
                                                     for f in sorted(set(g) | set(w)) if g.get(f) != w.get(f))
        return out

    worker = start_worker(kafka_bootstrap, app_id, log)
    try:
        # the properties themselves first (the stores' state, then the decisions' effect), then the bookkeeping
        try:
            wait_until(state_matches, 300, "the restarted worker's offer state to equal a run without the kill",
                       poll_s=2.0, log=log, worker=worker)
        except AssertionError as exc:
            raise AssertionError(f"{state_diff()}\n{exc}") from None
        wait_until(lambda: caught_up(kafka_bootstrap, market_group(app_id), list(MARKET_TOPICS)), 120,
                   "the restarted worker to commit the market topics", log=log, worker=worker)
        wait_until(lambda: caught_up(kafka_bootstrap, app_id, [f"{app_id}-market-changes"]), 120,
                   "the restarted worker to commit its market changes (decisions)", log=log, worker=worker)
        wait_until(lambda: caught_up(kafka_bootstrap, sink_group, list(SINK_TOPICS)), 60, "the sink")
    finally:
        stop(worker)

    # every price is in ClickHouse once; no decision id twice
    ids = [e.event_id for e in events if isinstance(e, PriceObserved)]
    mine = client.query(f"SELECT count(), uniqExact(event_id) FROM {db}.prices WHERE event_id IN {{ids:Array(String)}}",
                        parameters={"ids": ids}).result_rows[0]
    assert mine == (len(ids), len(ids))
    dup = client.query(f"SELECT count() - uniqExact(event_id) FROM {db}.decisions").result_rows[0][0]
    assert dup == 0

    # what the decision stage saw of each offer (its market store) is the true final market up to the
    # materiality threshold: a move below it on an offer not held by a plan is not forwarded (which moves
    # those are depends on when offers were held, so it is timing-dependent even without a kill)
    seen = {k: v for k, v in _store_state(kafka_bootstrap, f"{app_id}-decision-market.v1").items() if v}
    assert {e.offer.key for e in events if hasattr(e, "offer")} <= set(expected)
    priced = {k: s for k, s in expected.items() if "usd_per_hour" in s}
    assert set(priced) <= set(seen)
    for k, s in priced.items():
        assert abs(s["usd_per_hour"] - seen[k]["usd_per_hour"]) < state.PRICE_MOVE_THRESHOLD * seen[k]["usd_per_hour"]
        assert s.get("available", True) == seen[k].get("available", True), k
    # the final plan equals the plan a run without the kill reaches: greedy over that final view
    quotes = [q for k, v in seen.items() if (q := state.quote_from_state(k, v))]
    want = {a.workload_id: (a.offer.key, a.instances) for a in greedy_plan(quotes, WORKLOADS).assignments}
    rows = client.query(
        f"SELECT workload_id, argMax(offer_key, decided_at), argMax(instances, decided_at) "
        f"FROM {db}.decision_assignments GROUP BY workload_id").result_rows
    # (workloads.v1 is shared by the session's tests: other tests' workloads are decided here too)
    mine = {s.workload_id for s in WORKLOADS}
    assert {w: (k, n) for w, k, n in rows if w in mine} == want
    assert isinstance(quotes[0], OfferQuote)

"""No single record stops the pipeline or is lost, against the real broker: an 800 KB and a 5 MB record on
each input topic of the worker, between valid ones; a workload the decision stage fails on; every
schema-valid extreme of every event type through the sink."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from connectors.publish import KafkaPublisher
from embedded.demo import MARKET_TOPICS
from outputs.clickhouse import table_counts
from outputs.rows import ID_TABLE
from outputs.sink import ClickHouseWriter, run_sink
from schemas.events import DLQ_ORIGINAL_MAX_BYTES, WorkloadRequested
from schemas.topics import CAPACITY, DECISIONS, DLQ, INTERRUPTIONS, PRICES, WORKLOADS
from streams.runtime.market import market_group
from tests.conftest import unique
from tests.integration.helpers import caught_up, read_all, start_worker, stop, wait_until
from tests.streams.helpers import T0, capacity, offer, preempted, price, workload

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SIZES = (800_000, 5_000_000)
INPUT_TOPICS = (PRICES.name, CAPACITY.name, INTERRUPTIONS.name, WORKLOADS.name)


def _allow_big_records(bootstrap: str, topics: tuple[str, ...]) -> None:
    """Let the broker accept 5 MB records on these topics (by default it refuses over ~1 MB): an attacker
    gets what the topic accepts, and the worker must survive that."""
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = [ConfigResource(ConfigResource.Type.TOPIC, t, incremental_configs=[
        ConfigEntry("max.message.bytes", "8000000", incremental_operation=AlterConfigOpType.SET)]) for t in topics]
    for fut in admin.incremental_alter_configs(res).values():
        fut.result(30)


def _big(n: int, tag: str) -> bytes:
    """A JSON object of about n bytes (valid JSON, over every size limit)."""
    return json.dumps({"event_type": "PriceObserved", "event_id": tag, "pad": "x" * n}).encode()


def _decided(bootstrap: str, workload_ids: set[str]) -> set[str]:
    out: set[str] = set()
    for m in read_all(bootstrap, [DECISIONS.name], idle_polls=2):
        out |= set(json.loads(m.value())["workload_ids"]) & workload_ids
    return out


def _dead_letters(bootstrap: str) -> list[dict[str, Any]]:
    return [json.loads(m.value()) for m in read_all(bootstrap, [DLQ.name], idle_polls=2)]


def test_big_records_and_a_poison_workload_are_dead_lettered_and_the_rest_is_decided(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    run = unique("pp")
    _allow_big_records(kafka_bootstrap, INPUT_TOPICS)
    pub = KafkaPublisher(kafka_bootstrap, extra={"message.max.bytes": 8_000_000})
    bigs: dict[str, str] = {}   # sha256 of each big record -> its topic
    o = offer(region=run)
    valid_market: dict[str, list[Any]] = {PRICES.name: [price(o, 1.0 + i / 10, minutes=i) for i in range(3)],
                    CAPACITY.name: [capacity(o, True, minutes=i) for i in range(3)],
                    INTERRUPTIONS.name: [preempted(o, minutes=i) for i in range(3)]}
    for topic, events in valid_market.items():   # valid, 800 KB, valid, 5 MB, valid: on the same partition
        key = events[0].offer.key
        for i, e in enumerate(events):
            pub.publish(e)
            if i < len(SIZES):
                raw = _big(SIZES[i], f"{run}-{topic}-{i}")
                bigs[hashlib.sha256(raw).hexdigest()] = topic
                pub.publish_raw(topic, key, raw)
    ids = [f"{run}-w{i}" for i in range(3)]
    for i, wid in enumerate(ids):
        pub.publish(WorkloadRequested(event_id=f"{wid}-req", spec=workload(wid), requested_at=T0))
        if i < len(SIZES):
            raw = _big(SIZES[i], f"{run}-wl-{i}")
            bigs[hashlib.sha256(raw).hexdigest()] = WORKLOADS.name
            pub.publish_raw(WORKLOADS.name, wid, raw)
    assert pub.flush(60) == 0 and pub.failed == 0
    log = tmp_path / "worker.log"
    worker = start_worker(kafka_bootstrap, run, log, engine="tests.integration.poison_engine:make")
    try:
        wait_until(lambda: _decided(kafka_bootstrap, set(ids)) == set(ids), 120, "decisions for the valid workloads",
                   poll_s=1.0, log=log, worker=worker)
        wait_until(lambda: caught_up(kafka_bootstrap, market_group(run), list(MARKET_TOPICS)), 60,
                   "the market stage to pass the big records", log=log, worker=worker)
        # a workload the decision stage fails on, then a valid one: how long until the valid one is decided
        poison, after = f"poison-{run}", f"{run}-after"
        t0 = time.monotonic()
        pub.publish(WorkloadRequested(event_id=f"{poison}-req", spec=workload(poison), requested_at=T0))
        pub.publish(WorkloadRequested(event_id=f"{after}-req", spec=workload(after), requested_at=T0))
        assert pub.flush(30) == 0
        wait_until(lambda: after in _decided(kafka_bootstrap, {after}), 60, "the workload after the poison pill",
                   poll_s=0.2, log=log, worker=worker)
        pass_s = time.monotonic() - t0
        assert worker.poll() is None, "the worker crashed"
    finally:
        stop(worker)
    print(f"\npoison pill passed in {pass_s:.2f} s")
    text = log.read_text(errors="replace")
    assert "market batch failed" not in text, "the market stage retried a batch"
    assert poison not in _decided(kafka_bootstrap, {poison})
    letters = _dead_letters(kafka_bootstrap)
    # each big record exactly once in the DLQ, from its topic, capped, with its length and hash
    big = [d for d in letters if d.get("original_sha256") in bigs]
    assert sorted((d["original_sha256"], d["source_topic"]) for d in big) == sorted(bigs.items())
    assert all(d["original_truncated"] and d["original_bytes"] >= SIZES[0] and "exceeds" in d["reason"]
               and len(base64.b64decode(d["original_b64"])) == DLQ_ORIGINAL_MAX_BYTES for d in big)
    # no valid record of this run was dead-lettered (every one was processed)
    assert [d["reason"] for d in letters if d.get("original_sha256") not in bigs
            and run.encode() in base64.b64decode(d["original_b64"]) and poison.encode() not in
            base64.b64decode(d["original_b64"])] == []
    poisoned = [d for d in letters if d["source_topic"] == WORKLOADS.name
                and poison.encode() in base64.b64decode(d["original_b64"])]
    assert len(poisoned) == 1 and "engine bug triggered by" in poisoned[0]["reason"]
    assert pass_s <= 30


def test_every_schema_valid_extreme_goes_through_the_sink(kafka_bootstrap: str, chdb_client: tuple[Any, str]) -> None:
    from tests.outputs.test_sink_extremes import all_variants

    client, db = chdb_client
    topic = unique("extremes")
    # every variant of every event type the sink stores (plans.v1 is read by the workers, not the sink)
    events = [e.model_copy(update={"event_id": f"{topic}-{i}"}) for i, (_, e) in enumerate(all_variants())
              if type(e) in ID_TABLE]
    pub = KafkaPublisher(kafka_bootstrap)
    for e in events:
        pub.publish(e, topic)
    assert pub.flush(30) == 0 and pub.failed == 0 and pub.oversized == 0
    writer = ClickHouseWriter(client, db)
    stats = run_sink(kafka_bootstrap, writer, threading.Event(), group_id=unique("sink"), topics=[topic],
                     idle_exit_s=3.0)
    assert stats.consumed == len(events) and stats.written == len(events)
    assert stats.dead_lettered == 0 and stats.write_failures == 0
    assert sum(n for t, n in table_counts(client, db).items() if t != "decision_assignments"
               and t in {"prices", "capacity", "interruptions", "decisions", "dead_letters", "forecasts", "alerts",
                         "workloads", "quotas", "model_promotions"}) == len(events)

"""Reliability: hostile input never crashes the worker and is dead-lettered with a reason; a broker
restart mid-stream is survived without intervention."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from connectors.publish import KafkaPublisher
from embedded.demo import MARKET_TOPICS, group_position
from embedded.kafka import LocalKafka
from schemas.topics import CAPACITY, DLQ, INTERRUPTIONS, PRICES
from streams.runtime.market import market_group
from tests.conftest import unique
from tests.integration.helpers import caught_up, overtake_after_a_decision, read_all, start_worker, stop, wait_until
from tests.integration.helpers import decided as decided_on
from tests.streams.helpers import offer, price

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def hostile_payloads(n: int, seed: int = 7) -> list[bytes]:
    """Fuzzed JSON, wrong types, NaN/negative/zero prices, unknown providers/GPUs, huge payloads."""
    rng = random.Random(seed)
    good = json.loads(price(offer(), 1.0).model_dump_json())
    out: list[bytes] = []
    for i in range(n):
        kind = i % 10
        d: Any = json.loads(json.dumps(good))
        d["event_id"] = f"hostile-{i}"
        if kind == 0:
            raw = json.dumps(d).encode()
            cut = rng.randrange(1, len(raw) - 10)  # truncated mid-object, plus a random byte: never valid
            out.append(raw[:cut] + bytes([rng.randrange(256)]))
            continue
        if kind == 1:
            d["usd_per_hour"] = rng.choice(["NaN", "Infinity", -1.0, 0.0, -1e-9, 1e12])
        elif kind == 2:
            d["usd_per_hour"] = rng.choice(["cheap", None, [], {}, True])
        elif kind == 3:
            d["offer"]["provider"] = f"evilcloud{i}"
        elif kind == 4:
            d["offer"]["gpu_model"] = rng.choice(["A100", "TPUv5", "", "H100 80GB"])
        elif kind == 5:
            d["quoted_at"] = rng.choice(["yesterday", 12345, "2025-06-01T00:00:00", "2999-01-01T00:00:00Z",
                                         "2099-01-01T00:00:00Z"])
        elif kind == 6:
            d["offer"]["gpus_per_instance"] = rng.choice([0, -8, "eight", 10**9])
        elif kind == 7:
            d = rng.choice([[], "string", 42, None, {"event_type": "PriceObserved"}])
        elif kind == 8:
            d["event_type"] = rng.choice(["AllocationDecided", "Nope", 7])
        elif kind == 9:
            if i == 9:
                d["source"] = "x" * 5_000_000  # a 5 MB record
            elif i % 1000 == 19:
                d["source"] = "x" * 800_000  # 800 KB records
            elif i % 200 == 9:
                d["source"] = "x" * 70_000  # over the 64 KiB limit
            else:
                del d[rng.choice(["offer", "quoted_at", "usd_per_hour", "event_id"])]
        out.append(json.dumps(d).encode())
    return out


def valid_extremes(n: int) -> list[tuple[str, bytes]]:
    """Schema-valid market events at the ends of their fields' ranges: processed, never dead-lettered."""
    from schemas.events import MIN_TIME, UINT32_MAX, CapacityObserved, InterruptionKind, InterruptionObserved

    out: list[tuple[str, bytes]] = []
    for i in range(n):
        o = offer(region=f"x{i}", n=1024 if i % 2 else 1)
        t = MIN_TIME if i % 3 == 0 else None
        p = price(o, 9_999.999 if i % 2 else 1e-9)
        c = CapacityObserved(event_id=f"cx{i}", offer=o, available=True, available_instances=UINT32_MAX,
                             capacity_score=1.0, quoted_at=t or p.quoted_at, observed_at=t or p.quoted_at, source="x")
        r = InterruptionObserved(event_id=f"ix{i}", offer=o, kind=InterruptionKind.FREQUENCY,
                                 interruption_probability_per_hour=1.0, frequency_band=4,
                                 occurred_at=t or p.quoted_at, observed_at=t or p.quoted_at, source="x")
        out += [(PRICES.name, p.model_dump_json().encode()), (CAPACITY.name, c.model_dump_json().encode()),
                (INTERRUPTIONS.name, r.model_dump_json().encode())]
    return out


def _dlq_records(bootstrap: str, ranges: dict[tuple[str, int], tuple[int, int]]) -> list[dict[str, Any]]:
    out = []
    for m in read_all(bootstrap, [DLQ.name], idle_polls=8):
        d = json.loads(m.value())
        lo_hi = ranges.get((d.get("source_topic"), d.get("source_partition")))
        if lo_hi and lo_hi[0] <= d["source_offset"] < lo_hi[1]:
            out.append(d)
    return out


def _offsets(bootstrap: str) -> dict[tuple[str, int], int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("w")})
    try:
        return {(t, p): c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
                for t in MARKET_TOPICS for p in range(PRICES.partitions)}
    finally:
        c.close()


def test_ten_thousand_hostile_events_are_all_dead_lettered(kafka_bootstrap: str, tmp_path: Path) -> None:
    """10,000 hostile records (among them 800 KB and 5 MB ones) spread over the market topics, between valid
    events and schema-valid extremes: per topic, in = processed + dead-lettered, exactly."""
    from tests.integration.test_poison_pills import _allow_big_records

    app_id = unique("hostile")
    _allow_big_records(kafka_bootstrap, tuple(MARKET_TOPICS))
    bad = hostile_payloads(10_000)
    good = [price(offer(region=f"r{i}"), 1.0 + i / 100) for i in range(50)]
    extremes = valid_extremes(20)
    before = _offsets(kafka_bootstrap)
    pub = KafkaPublisher(kafka_bootstrap, extra={"message.max.bytes": 8_000_000})
    sent_bad: dict[str, Counter[str]] = {t: Counter() for t in MARKET_TOPICS}  # sha256 -> how many sent
    sent_valid = {t: 0 for t in MARKET_TOPICS}
    for i, raw in enumerate(bad):
        topic = MARKET_TOPICS[i % len(MARKET_TOPICS)]
        pub.publish_raw(topic, f"k{i % 97}", raw)
        sent_bad[topic][hashlib.sha256(raw).hexdigest()] += 1
    pub.publish_all(good)
    sent_valid[PRICES.name] += len(good)
    for topic, raw in extremes:
        pub.publish_raw(topic, raw[:40], raw)
        sent_valid[topic] += 1
    assert pub.flush(60) == 0 and pub.failed == 0
    after = _offsets(kafka_bootstrap)
    log = tmp_path / "worker.log"
    worker = start_worker(kafka_bootstrap, app_id, log)
    try:
        wait_until(lambda: caught_up(kafka_bootstrap, market_group(app_id), list(MARKET_TOPICS))
                   and group_position(kafka_bootstrap, market_group(app_id), list(MARKET_TOPICS))[0]
                   >= sum(after.values()), 180, "the worker to consume the hostile batch", log=log)
        assert worker.poll() is None, "the worker crashed"
    finally:
        stop(worker)
    assert "market batch failed" not in log.read_text(errors="replace"), "a batch was retried"
    records = _dlq_records(kafka_bootstrap, {tp: (before[tp], after[tp]) for tp in before})
    assert all(r["reason"] and r["stage"] == "streams.track_offers" for r in records)
    for topic in MARKET_TOPICS:
        n_in = sum(after[(topic, p)] - before[(topic, p)] for p in range(PRICES.partitions))
        dead = [r for r in records if r["source_topic"] == topic]
        # every hostile message of the topic in the DLQ exactly once, and nothing else: in = processed + DLQ
        assert len({(r["source_partition"], r["source_offset"]) for r in dead}) == len(dead)
        assert Counter(r["original_sha256"] for r in dead) == sent_bad[topic]
        assert n_in == len(dead) + sent_valid[topic] == sum(sent_bad[topic].values()) + sent_valid[topic]
    big = [r for r in records if r["original_bytes"] > 700_000]
    assert len(big) == 11 and all(r["original_truncated"] and "exceeds" in r["reason"] for r in big)
    reasons = " ".join(r["reason"] for r in records)
    for expected in ("not JSON", "unknown provider", "unknown GPU model", "exceeds", "usd_per_hour", "future"):
        assert expected in reasons, expected


def test_worker_resumes_by_itself_after_a_broker_restart(kafka_broker: LocalKafka | None, kafka_bootstrap: str,
                                                          tmp_path: Path) -> None:
    if kafka_broker is None:
        pytest.skip("the broker is external (KAFKA_BOOTSTRAP_SERVERS): this test restarts the local one")
    app_id = unique("brk")
    log = tmp_path / "worker.log"
    worker = start_worker(kafka_bootstrap, app_id, log)
    try:
        pub = KafkaPublisher(kafka_bootstrap)
        first = [price(offer(region=f"a{i}"), 1.0) for i in range(200)]
        pub.publish_all(first)
        assert pub.flush(30) == 0
        wait_until(lambda: caught_up(kafka_bootstrap, market_group(app_id), [PRICES.name])
                   and group_position(kafka_bootstrap, market_group(app_id), [PRICES.name])[0] > 0, 120, "first batch",
                   log=log, worker=worker)
        kafka_broker.stop()
        time.sleep(5)
        kafka_broker.start()
        second = [price(offer(region=f"b{i}"), 2.0) for i in range(200)]
        pub2 = KafkaPublisher(kafka_bootstrap)
        pub2.publish_all(second)
        assert pub2.flush(60) == 0
        wait_until(lambda: caught_up(kafka_bootstrap, market_group(app_id), [PRICES.name]), 180,
                   "the worker to resume after the broker restart", log=log, worker=worker)
        assert worker.poll() is None, "the worker died with the broker"
    finally:
        stop(worker)


def test_a_second_worker_shares_the_market_work_and_takes_over_the_decision_stage(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """Two workers of one app: both get market partitions. kill -9 the one running the decision stage:
    the other takes it over (Faust moves the one-partition topics to it), and the next workload is decided."""
    import signal

    from cloudarb.app import workload_events
    from cloudarb.pipeline import publish_events
    from tests.streams.helpers import workload

    app_id = unique("two")
    tag = app_id.split("-")[-1]
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    workers = [start_worker(kafka_bootstrap, app_id, log, loglevel="debug") for log in logs]

    def decided(wid: str) -> bool:
        return decided_on(kafka_bootstrap, wid)

    def last_assignment(log: Path) -> int | None:
        lines = [ln for ln in log.read_text().splitlines() if "market stage assigned" in ln]
        return int(lines[-1].split("assigned ")[1].split()[0]) if lines else None

    try:
        publish_events(kafka_bootstrap, [price(offer(region=f"two-{tag}-{i}"), 1.0 + i / 100) for i in range(24)])
        publish_events(kafka_bootstrap, workload_events([workload(f"a-{tag}")]))
        wait_until(lambda: decided(f"a-{tag}"), 180, "the first workload's decision", poll_s=1.0, log=logs[0])
        # 3 market topics x 6 partitions, split between the two
        wait_until(lambda: [last_assignment(log) for log in logs] == [9, 9], 60, "both workers doing market work",
                   log=logs[1])
        deciding = [i for i, log in enumerate(logs) if "step:" in log.read_text()]
        assert len(deciding) == 1, deciding
        stop(workers[deciding[0]], signal.SIGKILL)
        survivor = 1 - deciding[0]
        publish_events(kafka_bootstrap, workload_events([workload(f"b-{tag}")]))
        wait_until(lambda: decided(f"b-{tag}"), 240, "the survivor's decision", poll_s=2.0, log=logs[survivor])
        assert "step:" in logs[survivor].read_text() and last_assignment(logs[survivor]) == 18
        assert workers[survivor].poll() is None
    finally:
        for w in workers:
            stop(w)


def test_a_worker_overtaken_on_the_decision_stage_writes_no_more_decisions(kafka_bootstrap: str,
                                                                            tmp_path: Path) -> None:
    """A zombie: the worker deciding is overtaken on the decision stage (another producer registers the
    stage's transactional id, as a new owner does when it starts its decider) before any rebalance reaches
    it. Its next step is refused whole (no decision, no plan), counted, and it waits for a rebalance, after
    which the stage's owner decides what was refused."""
    from schemas.topics import PLANS

    app_id = unique("zombie")
    tag = app_id.split("-")[-1]
    log = tmp_path / "worker.log"
    worker = start_worker(kafka_bootstrap, app_id, log)

    def decided(wid: str) -> bool:
        return decided_on(kafka_bootstrap, wid)

    try:
        new_owner = overtake_after_a_decision(kafka_bootstrap, app_id, tag, log)
        wait_until(lambda: "decision stage fenced" in log.read_text() or decided(f"b-{tag}"), 120,
                   "the worker's next step", log=log, worker=worker)
        assert not decided(f"b-{tag}"), "a zombie's decision landed"
        assert "decision stage fenced" in log.read_text()
        plans = [m.key() for m in read_all(kafka_bootstrap, [PLANS.name]) if m.key()]
        assert f"{app_id}/a-{tag}".encode() in plans and f"{app_id}/b-{tag}".encode() not in plans
        assert worker.poll() is None
        new_owner.close()
        # a rebalance (a second worker joins): whichever worker then holds the stage decides what was refused
        second = start_worker(kafka_bootstrap, app_id, tmp_path / "worker-2.log")
        try:
            wait_until(lambda: decided(f"b-{tag}"), 240, "the refused workload's decision after a rebalance",
                       poll_s=2.0, log=log)
        finally:
            stop(second)
    finally:
        stop(worker)

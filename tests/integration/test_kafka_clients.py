"""faust-streaming, aiokafka and confluent-kafka against the pinned broker: groups, offsets, restarts."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.conftest import unique

pytestmark = pytest.mark.integration


def _new_topic(bootstrap: str, partitions: int = 3) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"t-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    return name


def test_confluent_kafka_consumer_group_commits_and_resumes(kafka_bootstrap: str) -> None:
    from confluent_kafka import Consumer, Producer

    topic = _new_topic(kafka_bootstrap)
    p = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for i in range(100):
        p.produce(topic, key=str(i % 7), value=str(i))
    assert p.flush(30) == 0
    group = unique("ck")

    def consume(n: int) -> list[int]:
        c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                      "enable.auto.commit": False})
        c.subscribe([topic])
        got: list[int] = []
        while len(got) < n:
            for m in c.consume(n - len(got), timeout=10):
                assert m.error() is None
                got.append(int(m.value()))
        c.commit(asynchronous=False)
        c.close()
        return got

    first = consume(60)
    second = consume(40)
    assert sorted(first + second) == list(range(100))


async def test_aiokafka_idempotent_producer_and_group(kafka_bootstrap: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = _new_topic(kafka_bootstrap)
    prod = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True, compression_type="lz4")
    await prod.start()
    try:
        for i in range(50):
            await prod.send(topic, key=str(i).encode(), value=str(i).encode())
        await prod.flush()
    finally:
        await prod.stop()
    cons = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=unique("aio"),
                            auto_offset_reset="earliest", session_timeout_ms=10000)
    await cons.start()
    got: list[int] = []
    try:
        async with asyncio.timeout(30):
            while len(got) < 50:
                batch = await cons.getmany(timeout_ms=1000)
                got += [int(m.value) for msgs in batch.values() for m in msgs]
        await cons.commit()
    finally:
        await cons.stop()
    assert sorted(got) == list(range(50))

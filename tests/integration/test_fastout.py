"""The stages' output path (streams.runtime.fastout.FastOutput) on the real broker: it asks librdkafka for
delivery reports of failures only, so a message the broker refuses must still be charged to the batch that
produced it and fail that batch's flush, while the other batch's flush and messages go through."""

from __future__ import annotations

import os
import uuid

import pytest

from streams.runtime.fastout import Batch, DeliveryFailed, FastOutput
from tests.integration.helpers import read_all

pytestmark = pytest.mark.integration


def _topic_refusing_over(bootstrap: str, max_bytes: int) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"t-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, 1, 1, config={"max.message.bytes": str(max_bytes)})])[name].result(30)
    return name


def test_a_message_the_broker_refuses_fails_its_own_batch_only(kafka_bootstrap: str) -> None:
    # (a topic's max.message.bytes bounds a whole record batch: the refused message goes to a topic of its own,
    # or the messages batched with it would be refused too)
    refusing, topic = _topic_refusing_over(kafka_bootstrap, 2_000), _topic_refusing_over(kafka_bootstrap, 1_000_000)
    out = FastOutput(kafka_bootstrap)
    mine, theirs = Batch(), Batch()
    for i in range(50):
        out.produce(topic, b"k", b"fine %d" % i, batch=theirs)
    # (incompressible, so lz4 cannot bring it under the topic's limit; under the producer's own limit)
    out.produce(refusing, b"k", os.urandom(16_000), batch=mine)
    with pytest.raises(DeliveryFailed) as failed:
        out.flush_blocking(mine, give_up_s=lambda: 30.0)
    assert failed.value.n == 1 and theirs.errors == 0
    out.flush_blocking(theirs, give_up_s=lambda: 30.0)   # nothing of this batch failed: no raise
    values = [m.value() for m in read_all(kafka_bootstrap, [topic], idle_polls=4)]
    assert values == [b"fine %d" % i for i in range(50)]

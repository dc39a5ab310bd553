"""Every producer in connectors refuses an event over the size every consumer accepts (no broker needed:
what would be sent is recorded instead)."""

from __future__ import annotations

from typing import Any

from connectors.publish import KafkaPublisher
from schemas.events import MAX_EVENT_BYTES, WorkloadRequested
from tests.streams.helpers import T0, workload


def test_an_event_over_the_limit_is_refused_and_counted_not_sent() -> None:
    pub = KafkaPublisher("127.0.0.1:1")
    sent: list[Any] = []
    pub.publish_raw = lambda topic, key, value: sent.append((topic, key, value))  # type: ignore[method-assign]
    small = WorkloadRequested(event_id="ok", spec=workload("w1"), requested_at=T0)
    big_spec = workload("w2").model_copy(update={"allowed_providers": [f"p{i:07d}" for i in range(8000)]})
    big = WorkloadRequested(event_id="big", spec=big_spec, requested_at=T0)
    assert len(big.model_dump_json()) > MAX_EVENT_BYTES > len(small.model_dump_json())
    pub.publish(big)
    assert pub.oversized == 1 and sent == []
    pub.publish(small)
    assert pub.oversized == 1 and [k for _, k, _ in sent] == ["w1"]
    pub.close(0.1)


def test_a_quota_set_is_keyed_so_the_compacted_topic_keeps_the_latest() -> None:
    from connectors.publish import key_for
    from schemas.events import QuotasSet
    from schemas.placement import GpuQuota

    q = QuotasSet(event_id="q1", set_at=T0, quotas=[GpuQuota(provider="gcp", region="*", gpu="H100", gpus=8)])
    assert key_for(q) == key_for(q.model_copy(update={"event_id": "q2"})) == "quotas"

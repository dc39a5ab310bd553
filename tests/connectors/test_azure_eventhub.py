"""Azure spot evictions from Event Hubs. There is no Event Hubs emulator on this machine, so the consumer
logic is tested against the client's interface: a stand-in for EventHubConsumerClient.receive_batch that
calls our `on_event_batch(partition_context, events)` with real azure.eventhub.EventData objects and records
checkpoints, as the SDK does."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from azure.eventhub import EventData

from connectors.azure import AzureEvictionSource
from schemas.events import InterruptionKind, InterruptionObserved
from tests.connectors.conftest import NOW

FAST: dict[str, Any] = {"retry_wait_min_s": 0.001, "retry_wait_max_s": 0.01, "rate_per_s": 1000.0}
RID = ("/subscriptions/0000/resourceGroups/ML/providers/Microsoft.Compute/virtualMachines/trainer-3")


def activity(op: str, **extra: Any) -> dict[str, Any]:
    return {"time": "2025-07-01T11:45:10.1234567Z", "resourceId": RID, "operationName": op,
            "category": "Administrative", "resultType": "Success", "level": "Informational",
            "correlationId": "c0ffee", "location": "eastus", **extra}


class FakePartitionContext:
    def __init__(self) -> None:
        self.checkpoints: list[Any] = []

    def update_checkpoint(self, event: Any = None) -> None:
        self.checkpoints.append(event)


class FakeConsumer:
    """The parts of EventHubConsumerClient the source uses: receive_batch(...) blocking until close()."""

    def __init__(self, batches: list[list[EventData]]) -> None:
        self.batches, self.ctx, self.kwargs = batches, FakePartitionContext(), {}
        self._closed = threading.Event()

    def receive_batch(self, on_event_batch: Any, **kwargs: Any) -> None:
        self.kwargs = kwargs
        for b in self.batches:
            on_event_batch(self.ctx, b)
        self._closed.wait(10)

    def close(self) -> None:
        self._closed.set()


def test_evictions_become_preempted_events_and_batches_are_checkpointed() -> None:
    good = {"records": [
        activity("MICROSOFT.COMPUTE/VIRTUALMACHINES/EVICTSPOTVM/ACTION",
                 properties={"vmSize": "Standard_NC24ads_A100_v4"}),
        activity("MICROSOFT.COMPUTE/VIRTUALMACHINES/START/ACTION"),
    ]}
    no_size = {"records": [activity("Microsoft.Compute/virtualMachines/evictSpotVM/action")]}
    batches = [[EventData(json.dumps(good)), EventData("{oops")], [EventData(json.dumps(no_size))]]
    consumer = FakeConsumer(batches)
    src = AzureEvictionSource(env={}, consumer=consumer, clock=lambda: NOW, **FAST)
    out: list[Any] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(out) + sum(src.stats.rejected.values()) < 4:
        out += src.poll()
        time.sleep(0.01)
    src.close()
    assert len(out) == 1
    e = out[0]
    assert isinstance(e, InterruptionObserved) and e.kind == InterruptionKind.PREEMPTED
    assert e.offer.key == "azure|eastus||Standard_NC24ads_A100_v4|A100-PCIE-80GB|1|spot"
    assert e.instance_id == "trainer-3" and e.occurred_at.isoformat().startswith("2025-07-01T11:45:10.123456")
    r = src.stats.rejected
    assert r["not_an_eviction"] == 1 and r["malformed_json"] == 1 and r["unresolved_vm"] == 1
    assert len(consumer.ctx.checkpoints) == 2  # one per batch, after conversion
    assert consumer.kwargs["starting_position"] == "-1"


def test_vm_lookup_resolves_records_without_size() -> None:
    src = AzureEvictionSource(env={}, consumer=FakeConsumer([]), clock=lambda: NOW,
                              vm_lookup=lambda rid: ("Standard_ND96isr_H100_v5", "westus3"), **FAST)
    e = src.convert(activity("Microsoft.Compute/virtualMachines/evictSpotVM/action", location=None))
    assert isinstance(e, InterruptionObserved) and e.offer.gpus_per_instance == 8 and e.offer.region == "westus3"


def test_skipped_without_connection_string() -> None:
    assert "AZURE_EVENTHUB_CONNECTION_STRING" in (AzureEvictionSource.missing_credentials({}) or "")

"""Kafka topics: versioned names, key, partitions and which events each carries.

The major version is in the name. Within a version, event models may only gain fields with defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.events import (
    AlertRaised,
    AllocationDecided,
    CapacityObserved,
    DeadLettered,
    Event,
    InterruptionObserved,
    ModelPromoted,
    PlanAdopted,
    PriceForecasted,
    PriceObserved,
    QuotasSet,
    WorkloadCancelled,
    WorkloadRequested,
)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    partitions: int
    events: tuple[type[Event], ...]
    compacted: bool = False
    retention_ms: int = 7 * 24 * 3600 * 1000


PRICES = TopicSpec("cloudarb.prices.v1", "offer key", 6, (PriceObserved,))
CAPACITY = TopicSpec("cloudarb.capacity.v1", "offer key", 6, (CapacityObserved,))
INTERRUPTIONS = TopicSpec("cloudarb.interruptions.v1", "offer key", 6, (InterruptionObserved,))
WORKLOADS = TopicSpec("cloudarb.workloads.v1", "workload id", 1, (WorkloadRequested, WorkloadCancelled))
DECISIONS = TopicSpec("cloudarb.decisions.v1", "decision id", 1, (AllocationDecided,))
FORECASTS = TopicSpec("cloudarb.forecasts.v1", "offer key", 6, (PriceForecasted,))
ALERTS = TopicSpec("cloudarb.alerts.v1", "alert id", 1, (AlertRaised,))
MODELS = TopicSpec("cloudarb.models.v1", "group|target", 1, (ModelPromoted,))
QUOTAS = TopicSpec("cloudarb.quotas.v1", "\"quotas\"", 1, (QuotasSet,), compacted=True)
# the plan in force per workload (compacted: the last record per key is the placement; see PlanAdopted)
PLANS = TopicSpec("cloudarb.plans.v1", "app id/workload id", 1, (PlanAdopted,), compacted=True)
DLQ = TopicSpec("cloudarb.dlq.v1", "event id", 1, (DeadLettered,))

TOPICS: dict[str, TopicSpec] = {
    t.name: t for t in (PRICES, CAPACITY, INTERRUPTIONS, WORKLOADS, DECISIONS, FORECASTS, ALERTS, QUOTAS, MODELS,
                        PLANS, DLQ)
}


def topic(name: str) -> TopicSpec:
    """Look up a topic spec by name; KeyError names the known topics."""
    try:
        return TOPICS[name]
    except KeyError:
        raise KeyError(f"unknown topic {name!r}; known: {sorted(TOPICS)}") from None

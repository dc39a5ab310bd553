"""CloudArb's domain model: offers, events and topics.

Every other package imports this one; it imports none of ours and no runtime framework
(faust, ortools, river, fastapi, Kafka or ClickHouse clients). Enforced by import-linter.
"""

from schemas.events import (
    AlertRaised,
    AllocationDecided,
    Assignment,
    CapacityObserved,
    DeadLettered,
    Event,
    InterruptionObserved,
    PlanChange,
    PriceForecasted,
    PriceObserved,
    WorkloadCancelled,
    WorkloadExplanation,
    WorkloadRequested,
    WorkloadSpec,
    decode_event,
)
from schemas.gpus import GPU_CATALOGUE, GpuSpec, canonical_gpu
from schemas.offers import KNOWN_PROVIDERS, Market, OfferKey
from schemas.topics import TOPICS, TopicSpec, topic

__all__ = [
    "GPU_CATALOGUE",
    "KNOWN_PROVIDERS",
    "TOPICS",
    "AlertRaised",
    "AllocationDecided",
    "Assignment",
    "CapacityObserved",
    "DeadLettered",
    "Event",
    "GpuSpec",
    "InterruptionObserved",
    "Market",
    "OfferKey",
    "PlanChange",
    "PriceForecasted",
    "PriceObserved",
    "TopicSpec",
    "WorkloadCancelled",
    "WorkloadExplanation",
    "WorkloadRequested",
    "WorkloadSpec",
    "canonical_gpu",
    "decode_event",
    "topic",
]

"""Event -> ClickHouse row mapping (pure functions; one table per event type)."""

from __future__ import annotations

from typing import Any

from schemas.events import (
    AllocationDecided,
    CapacityObserved,
    DeadLettered,
    Event,
    InterruptionObserved,
    PriceObserved,
)

COLUMNS: dict[str, list[str]] = {
    "prices": ["event_id", "offer_key", "provider", "region", "zone", "instance_type", "gpu_model",
               "gpus_per_instance", "market", "usd_per_hour", "usd_per_gpu_hour", "quoted_at", "observed_at",
               "source"],
    "capacity": ["event_id", "offer_key", "provider", "region", "gpu_model", "market", "available",
                 "available_instances", "capacity_score", "quoted_at", "observed_at", "source"],
    "interruptions": ["event_id", "offer_key", "provider", "region", "gpu_model", "market", "kind",
                      "interruption_probability_per_hour", "frequency_band", "instance_id", "occurred_at",
                      "observed_at", "source"],
    "decisions": ["event_id", "decided_at", "workload_ids", "reason", "total_usd_per_hour", "latency_ms",
                  "n_assignments", "n_changes", "solver", "payload"],
    "decision_assignments": ["decision_id", "decided_at", "workload_id", "offer_key", "provider", "region",
                             "gpu_model", "market", "instances", "usd_per_hour"],
    "dead_letters": ["event_id", "source_topic", "source_partition", "source_offset", "stage", "reason",
                     "original_b64", "dead_lettered_at"],
}

# the table whose event_id column identifies an event already written
ID_TABLE = {PriceObserved: "prices", CapacityObserved: "capacity", InterruptionObserved: "interruptions",
            AllocationDecided: "decisions", DeadLettered: "dead_letters"}


def rows_for(e: Event) -> list[tuple[str, list[Any]]]:
    """(table, row) pairs for one event; [] for event types this sink does not store."""
    if isinstance(e, PriceObserved):
        o = e.offer
        return [("prices", [e.event_id, o.key, o.provider, o.region, o.zone, o.instance_type, o.gpu_model,
                            o.gpus_per_instance, o.market.value, e.usd_per_hour, e.usd_per_gpu_hour,
                            e.quoted_at, e.observed_at, e.source])]
    if isinstance(e, CapacityObserved):
        o = e.offer
        return [("capacity", [e.event_id, o.key, o.provider, o.region, o.gpu_model, o.market.value, e.available,
                              e.available_instances, e.capacity_score, e.quoted_at, e.observed_at, e.source])]
    if isinstance(e, InterruptionObserved):
        o = e.offer
        return [("interruptions", [e.event_id, o.key, o.provider, o.region, o.gpu_model, o.market.value,
                                   e.kind.value, e.interruption_probability_per_hour, e.frequency_band,
                                   e.instance_id, e.occurred_at, e.observed_at, e.source])]
    if isinstance(e, AllocationDecided):
        out: list[tuple[str, list[Any]]] = [("decisions", [
            e.event_id, e.decided_at, list(e.workload_ids), e.reason, e.total_usd_per_hour, e.latency_ms,
            len(e.assignments), len(e.changes), e.solver, e.model_dump_json()])]
        for a in e.assignments:
            o = a.offer
            out.append(("decision_assignments", [e.event_id, e.decided_at, a.workload_id, o.key, o.provider,
                                                 o.region, o.gpu_model, o.market.value, a.instances,
                                                 a.usd_per_hour]))
        return out
    if isinstance(e, DeadLettered):
        return [("dead_letters", [e.event_id, e.source_topic, e.source_partition, e.source_offset, e.stage,
                                  e.reason, e.original_b64, e.dead_lettered_at])]
    return []

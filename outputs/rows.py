"""Event -> ClickHouse row mapping (pure functions; one table per event type)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from schemas.events import (
    AlertRaised,
    AllocationDecided,
    CapacityObserved,
    DeadLettered,
    Event,
    InterruptionObserved,
    ModelPromoted,
    PriceForecasted,
    PriceObserved,
    QuotasSet,
    WorkloadCancelled,
    WorkloadRequested,
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
    "forecasts": ["event_id", "offer_key", "provider", "region", "gpu_model", "market", "gpus_per_instance",
                  "forecast_at", "horizon_s", "target_at", "usd_per_hour", "interruption_probability_next_hour",
                  "model", "mae_model", "mae_naive", "n_scored"],
    "alerts": ["event_id", "rule", "severity", "message", "raised_at", "offer_key", "workload_id", "value",
               "threshold"],
    "workloads": ["event_id", "workload_id", "kind", "at", "budget_usd_per_hour", "min_gpus", "max_gpus", "spec"],
    "quotas": ["event_id", "set_at", "n_quotas", "quotas"],
    "model_promotions": ["event_id", "group_key", "target", "champion", "previous", "metric", "score_champion",
                         "score_previous", "n_scored", "promoted_at"],
}

# the table whose event_id column identifies an event already written
ID_TABLE = {PriceObserved: "prices", CapacityObserved: "capacity", InterruptionObserved: "interruptions",
            AllocationDecided: "decisions", DeadLettered: "dead_letters", PriceForecasted: "forecasts",
            AlertRaised: "alerts", WorkloadRequested: "workloads", WorkloadCancelled: "workloads",
            QuotasSet: "quotas", ModelPromoted: "model_promotions"}


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
    if isinstance(e, PriceForecasted):
        o = e.offer
        return [("forecasts", [e.event_id, o.key, o.provider, o.region, o.gpu_model, o.market.value,
                               o.gpus_per_instance, e.forecast_at, e.horizon_s,
                               e.forecast_at + timedelta(seconds=e.horizon_s), e.usd_per_hour,
                               e.interruption_probability_next_hour, e.model, e.mae_model, e.mae_naive,
                               e.n_scored])]
    if isinstance(e, AlertRaised):
        return [("alerts", [e.event_id, e.rule, e.severity, e.message, e.raised_at,
                            e.offer.key if e.offer else "", e.workload_id or "", e.value, e.threshold])]
    if isinstance(e, WorkloadRequested):
        sp = e.spec
        return [("workloads", [e.event_id, sp.workload_id, "requested", e.requested_at, sp.budget_usd_per_hour,
                               sp.min_gpus, sp.max_gpus, sp.model_dump_json()])]
    if isinstance(e, ModelPromoted):
        return [("model_promotions", [e.event_id, e.group, e.target, e.champion, e.previous, e.metric,
                                      e.score_champion, e.score_previous, e.n_scored, e.promoted_at])]
    if isinstance(e, QuotasSet):
        return [("quotas", [e.event_id, e.set_at, len(e.quotas),
                            json.dumps([q.model_dump() for q in e.quotas], separators=(",", ":"))])]
    if isinstance(e, WorkloadCancelled):
        return [("workloads", [e.event_id, e.workload_id, "cancelled", e.cancelled_at, None, None, None,
                               e.model_dump_json()])]
    return []

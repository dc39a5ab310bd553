"""Events: immutable, past-tense facts. Every event carries `event_id` and UTC-aware datetimes.

Compatibility rule within a topic's major version (`.v1`): only add fields, and only with defaults.
`schemas/snapshots/*.json` hold the committed JSON Schemas; tests/test_schema_compat.py fails on
any other change. Unknown fields are ignored on read so older consumers accept newer producers.

>>> from datetime import datetime, UTC
>>> from schemas.offers import OfferKey, Market
>>> o = OfferKey(provider="gcp", region="us-central1", instance_type="g2-standard-4",
...              gpu_model="L4", gpus_per_instance=1, market=Market.ON_DEMAND)
>>> t = datetime(2025, 1, 1, tzinfo=UTC)
>>> e = PriceObserved(event_id="e1", offer=o, usd_per_hour=0.7, quoted_at=t, observed_at=t, source="test")
>>> PriceObserved.model_validate_json(e.model_dump_json()) == e
True
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AllowInfNan,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)

from schemas.gpus import GPU_CATALOGUE
from schemas.offers import KNOWN_PROVIDERS, OfferKey
from schemas.placement import GpuQuota, Interconnect, Topology

# Bounds every event field stays within, so that a schema-valid event is always storable: ClickHouse's
# DateTime64(3) (and the hourly bars' 32-bit DateTime) cover 1970..2106; UInt32/Int32 counters and ids.
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2100, 1, 1, tzinfo=UTC)
UINT16_MAX = 2**16 - 1
UINT32_MAX = 2**32 - 1
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
# The largest serialised event a consumer accepts (streams.core.validate, the API, the connectors' producers):
# far above any real event, far below Kafka's default 1 MB message limit.
MAX_EVENT_BYTES = 64 * 1024
# A dead letter carries at most this much of the original message (plus its length and SHA-256).
DLQ_ORIGINAL_MAX_BYTES = 8 * 1024


# A UTC-aware time within [MIN_TIME, MAX_TIME), held in UTC itself (`tzinfo is UTC`) whatever offset it was
# written with. `_in_utc` wraps pydantic-core's strict parse: the canonical form producers write
# ("...Z") is read by `datetime.fromisoformat`, which gives `datetime.UTC`; anything else (another offset,
# a datetime object, an invalid value) goes through pydantic-core, for its errors, and is then converted.
class _InUtc:
    """Marks a `UtcDatetime` field (pydantic ignores the marker; `Event._utc_fields` lists them)."""


def _in_utc(v: Any, handler: ValidatorFunctionWrapHandler) -> datetime:
    if v.__class__ is str:
        if v[-1:] == "Z":
            try:
                d = datetime.fromisoformat(v)
            except ValueError:
                pass
            else:
                if MIN_TIME <= d < MAX_TIME:
                    return d
        # (a wrapped validator sees a JSON string as a Python one, which strict mode refuses for a datetime)
        d = _TIME_JSON.validate_json(json.dumps(v), strict=True)
    else:
        d = handler(v)
    return d if d.tzinfo is UTC else d.astimezone(UTC)


_TIME_JSON: TypeAdapter[datetime] = TypeAdapter(Annotated[AwareDatetime, Field(ge=MIN_TIME, lt=MAX_TIME)])
_IN_UTC = _InUtc()
UtcDatetime = Annotated[AwareDatetime, Field(ge=MIN_TIME, lt=MAX_TIME), _IN_UTC, WrapValidator(_in_utc)]

# A float that is not NaN or infinite (checked by pydantic-core).
FiniteFloat = Annotated[float, AllowInfNan(False)]


def deterministic_id(*parts: object) -> str:
    """A stable id from the parts that define an event (same inputs, same id).

    >>> deterministic_id("a", 1) == deterministic_id("a", 1)
    True
    """
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=16)
    return h.hexdigest()


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Base of every event on a topic."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: str = Field(min_length=1, max_length=128)

    _utc_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._utc_fields = tuple(name for name, f in cls.model_fields.items() if _IN_UTC in f.metadata)


# --- market -------------------------------------------------------------------------------------


class PriceObserved(Event):
    """A provider quoted a price for an offer (whole instance, USD per hour)."""

    event_type: Literal["PriceObserved"] = "PriceObserved"
    offer: OfferKey
    usd_per_hour: FiniteFloat = Field(gt=0, lt=10_000)
    quoted_at: UtcDatetime = Field(description="when the provider's quote took effect")
    observed_at: UtcDatetime = Field(description="when we saw it (staleness = now - quoted_at)")
    source: str = Field(max_length=200, description="where the value came from, and how it was derived")

    @property
    def usd_per_gpu_hour(self) -> float:
        return self.usd_per_hour / self.offer.gpus_per_instance


class CapacityObserved(Event):
    """Whether (and how much) capacity an offer had at a moment."""

    event_type: Literal["CapacityObserved"] = "CapacityObserved"
    offer: OfferKey
    available: bool
    available_instances: int | None = Field(default=None, ge=0, le=UINT32_MAX, description="None when unknown")
    capacity_score: FiniteFloat | None = Field(
        default=None, ge=0, le=1, description="0..1, e.g. AWS placement score / 10")
    quoted_at: UtcDatetime
    observed_at: UtcDatetime
    source: str = Field(max_length=200)


class InterruptionKind(StrEnum):
    PREEMPTED = "preempted"        # an instance was reclaimed
    WARNING = "warning"            # a reclaim notice (e.g. AWS 2-minute warning)
    FREQUENCY = "frequency"        # a published interruption-frequency estimate


class InterruptionObserved(Event):
    """An interruption happened, was announced, or its frequency was published."""

    event_type: Literal["InterruptionObserved"] = "InterruptionObserved"
    offer: OfferKey
    kind: InterruptionKind
    interruption_probability_per_hour: FiniteFloat | None = Field(default=None, ge=0, le=1)
    frequency_band: int | None = Field(default=None, ge=0, le=4, description="AWS Spot Advisor band 0..4")
    instance_id: str | None = Field(default=None, max_length=128)
    occurred_at: UtcDatetime
    observed_at: UtcDatetime
    source: str = Field(max_length=200)


# --- workloads ----------------------------------------------------------------------------------


class WorkloadSpec(BaseModel):
    """What a team needs. GPU counts are totals across instances; whole instances only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workload_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
    gpu_throughput: dict[str, FiniteFloat] = Field(
        min_length=1, description="acceptable canonical GPU model -> relative throughput per GPU"
    )
    min_gpus: int = Field(ge=1, le=4096)
    max_gpus: int = Field(ge=1, le=4096)
    budget_usd_per_hour: FiniteFloat = Field(gt=0, le=1_000_000)
    max_spot_share: FiniteFloat = Field(default=1.0, ge=0, le=1, description="share of GPUs on spot")
    restart_overhead_h: FiniteFloat = Field(default=0.25, ge=0, le=10_000,
                                            description="work lost per interruption, hours")
    same_region: bool = Field(default=False, description="all instances in one region (co-location)")
    priority: int = Field(default=1, ge=1, le=10)
    home_provider: str | None = Field(default=None, max_length=40, description="a known provider (schemas.offers)")
    allowed_providers: list[Annotated[str, Field(max_length=40)]] | None = Field(
        default=None, max_length=100, description="known providers; None = any provider")
    # --- topology: what placements the job can run in (schemas.placement) ---
    topology: Topology = Field(default=Topology.GANG, description=(
        "gang: every instance of one instance type in one place (provider, region, zone), as a data-parallel "
        "job needs; replicas: independent replicas, each on one instance, free to spread"))
    gpus_per_replica: int | None = Field(default=None, ge=1, le=1024, description=(
        "replicas only: GPUs of one replica (one instance with exactly this many GPUs); None = any instance"))
    interconnect: Interconnect = Field(default=Interconnect.ANY, description=(
        "nvlink: GPUs linked inside each instance; infiniband: also an IB/EFA-class fabric between instances "
        "(as the GPU catalogue publishes per instance type; unknown = not satisfied)"))
    max_share_per_provider: FiniteFloat | None = Field(default=None, gt=0, le=1, description=(
        "replicas only: at most this share of the GPUs on one provider (resilience)"))
    max_share_per_region: FiniteFloat | None = Field(default=None, gt=0, le=1, description=(
        "replicas only: at most this share of the GPUs in one region"))
    state_gb: FiniteFloat = Field(default=0.0, ge=0, le=1_000_000, description=(
        "checkpoint + data a move must copy (priced as egress + transfer time)"))
    risk_averse: bool = Field(default=False, description=(
        "plan on the forecast's upper quantile (p90) at the horizon rather than its median: a workload that "
        "cannot absorb a price rise pays for certainty"))

    @field_validator("gpu_throughput")
    @classmethod
    def _known_models(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(GPU_CATALOGUE))
        if unknown:  # named, but bounded: the message never echoes an unbounded input
            more = f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""
            raise ValueError(f"unknown GPU models {[m[:60] for m in unknown[:5]]}{more}")
        if any(t <= 0 for t in v.values()):
            raise ValueError("throughput must be > 0")
        return v

    @field_validator("home_provider", "allowed_providers")
    @classmethod
    def _known_providers(cls, v: str | list[str] | None) -> str | list[str] | None:
        names = [] if v is None else [v] if isinstance(v, str) else v
        unknown = sorted({n for n in names if n not in KNOWN_PROVIDERS})
        if unknown:  # (bounded, and printable: a lone surrogate could not be written back out)
            shown = [n[:40].encode("utf-8", "backslashreplace").decode() for n in unknown[:5]]
            more = f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""
            raise ValueError(f"unknown providers {shown}{more}")
        return v

    @field_validator("max_gpus")
    @classmethod
    def _max_ge_min(cls, v: int, info: Any) -> int:
        lo = info.data.get("min_gpus")
        if lo is not None and v < lo:
            raise ValueError(f"max_gpus {v} < min_gpus {lo}")
        return v

    @model_validator(mode="after")
    def _topology_fields_agree(self) -> WorkloadSpec:
        if self.topology is Topology.GANG:
            for name in ("gpus_per_replica", "max_share_per_provider", "max_share_per_region"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} needs topology 'replicas' (a gang runs in one place)")
        n = self.gpus_per_replica
        if n is not None and (self.min_gpus % n or self.max_gpus % n):
            raise ValueError(f"gpus_per_replica {n} must divide min_gpus {self.min_gpus} and max_gpus "
                             f"{self.max_gpus}")
        return self


class WorkloadRequested(Event):
    """A workload was submitted or changed (same workload_id replaces the previous spec)."""

    event_type: Literal["WorkloadRequested"] = "WorkloadRequested"
    spec: WorkloadSpec
    requested_at: UtcDatetime


class WorkloadCancelled(Event):
    event_type: Literal["WorkloadCancelled"] = "WorkloadCancelled"
    workload_id: str = Field(min_length=1, max_length=128)
    cancelled_at: UtcDatetime
    reason: str = ""


# --- decisions ----------------------------------------------------------------------------------


class Assignment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    workload_id: str
    offer: OfferKey
    instances: int = Field(ge=1, le=UINT32_MAX)
    usd_per_hour: FiniteFloat = Field(ge=0, description="instances x offer price")


class ChangeAction(StrEnum):
    LAUNCH = "launch"
    TERMINATE = "terminate"
    MIGRATE = "migrate"
    RESIZE = "resize"


class PlanChange(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    action: ChangeAction
    workload_id: str
    from_offer: OfferKey | None = None
    to_offer: OfferKey | None = None
    instances: int = Field(default=0, ge=0, le=UINT32_MAX)


class WorkloadExplanation(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    workload_id: str
    chosen: list[str] = Field(default_factory=list, description="offer keys")
    usd_per_hour: FiniteFloat = 0.0
    runner_up: str | None = None
    runner_up_delta_usd_per_hour: FiniteFloat | None = None
    binding_constraints: list[str] = Field(default_factory=list)
    reduced_costs: dict[str, FiniteFloat] = Field(default_factory=dict)
    duals: dict[str, FiniteFloat] = Field(default_factory=dict)
    infeasible_reason: str | None = None
    move_cost_usd: FiniteFloat | None = Field(default=None, description=(
        "one-off cost of the move the engine charged (restart overhead, egress, transfer time), when it moved"))
    summary: str = Field(default="", max_length=1000, description="the decision for this workload in one sentence")


class AllocationDecided(Event):
    """A new plan for some workloads. `event_id` is deterministic: re-deciding the same inputs
    yields the same id, so downstream consumers drop duplicates."""

    event_type: Literal["AllocationDecided"] = "AllocationDecided"
    decided_at: UtcDatetime
    workload_ids: list[str]
    assignments: list[Assignment]
    changes: list[PlanChange] = Field(default_factory=list)
    reason: str = Field(max_length=500)
    trigger_event_ids: list[str] = Field(default_factory=list)
    quote_age_s: dict[str, FiniteFloat] = Field(default_factory=dict, description="offer key -> age used")
    latency_ms: FiniteFloat | None = Field(default=None, description="trigger observed -> decision")
    total_usd_per_hour: FiniteFloat = 0.0
    explanations: list[WorkloadExplanation] = Field(default_factory=list)
    solver: str = "unknown"


class PriceForecasted(Event):
    event_type: Literal["PriceForecasted"] = "PriceForecasted"
    offer: OfferKey
    forecast_at: UtcDatetime
    horizon_s: int = Field(gt=0, le=UINT32_MAX)
    usd_per_hour: FiniteFloat
    interruption_probability_next_hour: FiniteFloat | None = Field(default=None, ge=0, le=1)
    model: str
    mae_model: FiniteFloat | None = None
    mae_naive: FiniteFloat | None = None
    n_scored: int = Field(default=0, ge=0, le=UINT32_MAX)
    usd_per_hour_p10: FiniteFloat | None = Field(default=None, description="10th percentile at the horizon")
    usd_per_hour_p90: FiniteFloat | None = Field(default=None, description="90th percentile at the horizon")


class AlertRaised(Event):
    event_type: Literal["AlertRaised"] = "AlertRaised"
    rule: str
    severity: Literal["info", "warning", "critical"] = "info"
    message: str = Field(max_length=2000)
    raised_at: UtcDatetime
    offer: OfferKey | None = None
    workload_id: str | None = None
    value: FiniteFloat | None = None
    threshold: FiniteFloat | None = None


class PlanAdopted(Event):
    """The plan in force for one workload: what the decision stage adopted once the broker acknowledged the
    decision that made it. The plans topic is compacted and keyed by `<app_id>/<workload_id>` (the CloudArb
    apps of a cluster share it), so its last record per key is the current placement (a tombstone, a record
    without a value, once the workload is gone). Other workers' market stages follow it (an offer under a
    plan makes any move on it material), as may deployment executors and dashboards."""

    event_type: Literal["PlanAdopted"] = "PlanAdopted"
    app_id: str = Field(min_length=1, max_length=128, description="the CloudArb app (deployment) that adopted it")
    workload_id: str = Field(min_length=1, max_length=128)
    decision_id: str = Field(min_length=1, max_length=128, description="the AllocationDecided that made this plan")
    assignments: list[Assignment] = Field(max_length=100_000)
    step_started_at: UtcDatetime = Field(description=(
        "when the decision step that made the plan began: moves quoted since then on the offers it newly "
        "holds are forwarded by the market stage"))
    adopted_at: UtcDatetime


class ModelPromoted(Event):
    """A challenger became the published model of an offer group for one target (online A/B: every
    candidate is scored by progressive validation on the same stream; the best one is published)."""

    event_type: Literal["ModelPromoted"] = "ModelPromoted"
    group: str = Field(max_length=200, description="provider|gpu model|market")
    target: str = Field(max_length=64, description="price_<horizon>s | risk_1h")
    champion: str = Field(max_length=100)
    previous: str = Field(max_length=100)
    metric: Literal["mae", "logloss"]
    score_champion: FiniteFloat
    score_previous: FiniteFloat
    n_scored: int = Field(ge=0, le=UINT32_MAX)
    promoted_at: UtcDatetime


class QuotasSet(Event):
    """The GPU quotas the user holds, all of them (replaces the previous set): hard limits on placements."""

    event_type: Literal["QuotasSet"] = "QuotasSet"
    quotas: list[GpuQuota] = Field(max_length=10_000)
    set_at: UtcDatetime


class DeadLettered(Event):
    """An input that failed validation (or made a stage raise), with the reason and the original bytes
    (base64; a prefix of at most DLQ_ORIGINAL_MAX_BYTES for a larger one, with its length and hash)."""

    event_type: Literal["DeadLettered"] = "DeadLettered"
    source_topic: str
    source_partition: int | None = Field(default=None, ge=-1, le=INT32_MAX)
    source_offset: int | None = Field(default=None, ge=-2, le=INT64_MAX)
    stage: str = Field(description="which component rejected it, e.g. streams.validate")
    reason: str = Field(max_length=4000)
    original_b64: str = Field(description="the original bytes, base64; only their first DLQ_ORIGINAL_MAX_BYTES "
                                          "when original_truncated")
    dead_lettered_at: UtcDatetime
    original_bytes: int | None = Field(default=None, ge=0, le=INT64_MAX, description="length of the original")
    original_sha256: str | None = Field(default=None, max_length=64, description="hex digest of the original")
    original_truncated: bool = False


def dead_letter_of(data: bytes, reason: str, source_topic: str, source_partition: int | None,
                   source_offset: int | None, stage: str, now: datetime | None = None) -> DeadLettered:
    """The dead letter for a message that could not be processed: id deterministic on its position and
    content (reprocessing dedups), at most `DLQ_ORIGINAL_MAX_BYTES` of it kept (with its length and SHA-256),
    so a dead letter always fits the DLQ topic, however large the message it reports.

    >>> d = dead_letter_of(b"x" * 900_000, "too big", "t", 0, 7, "s")
    >>> len(d.model_dump_json()) < 16_000, d.original_bytes, d.original_truncated
    (True, 900000, True)
    """
    digest = hashlib.sha256(data).hexdigest()
    return DeadLettered(
        event_id=deterministic_id("dlq", source_topic, source_partition, source_offset, digest),
        source_topic=source_topic[:256], source_partition=source_partition, source_offset=source_offset,
        stage=stage, reason=reason[:4000], original_b64=base64.b64encode(data[:DLQ_ORIGINAL_MAX_BYTES]).decode(),
        dead_lettered_at=now or utcnow(), original_bytes=len(data), original_sha256=digest,
        original_truncated=len(data) > DLQ_ORIGINAL_MAX_BYTES,
    )


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (PriceObserved, CapacityObserved, InterruptionObserved, WorkloadRequested, WorkloadCancelled,
                AllocationDecided, PriceForecasted, AlertRaised, DeadLettered, QuotasSet, ModelPromoted,
                PlanAdopted)
}


AnyEvent = Annotated[
    PriceObserved | CapacityObserved | InterruptionObserved | WorkloadRequested | WorkloadCancelled
    | AllocationDecided | PriceForecasted | AlertRaised | DeadLettered | QuotasSet | ModelPromoted
    | PlanAdopted,
    Field(discriminator="event_type"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyEvent)


def decode_event(raw: bytes | str, expected: tuple[type[Event], ...] | None = None) -> Event:
    """Parse one JSON event (strictly: no bool for a number, no number for a date), dispatching on
    `event_type`. Raises ValueError (a pydantic ValidationError for field errors) with a clear reason.

    >>> decode_event(b'{"event_type": "Nope", "event_id": "x"}')
    Traceback (most recent call last):
    ...
    ValueError: unknown event_type 'Nope'
    """
    try:
        event: Event = _ADAPTER.validate_json(raw, strict=True)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        kind = first["type"]
        if kind == "json_invalid":
            raise ValueError(f"not JSON: {first['msg']}") from None
        if kind == "union_tag_invalid":
            raise ValueError(f"unknown event_type {first.get('ctx', {}).get('tag')!r}") from None
        if kind == "union_tag_not_found":
            raise ValueError("missing event_type") from None
        if kind in ("model_attributes_type", "model_type", "dict_type") and not first["loc"]:
            raise ValueError("event must be a JSON object") from None
        raise
    if expected is not None and type(event) not in expected:
        raise ValueError(f"event_type {type(event).__name__!r} not allowed here")
    return event

"""A schema-valid event is always storable: every numeric and time field of every event type, at each end of
the range its schema allows, goes through the ClickHouse sink (chdb) without the insert raising.

The variants are generated from the models' own field constraints, so a field added later is covered too,
and an integer field without an upper bound fails `test_every_integer_field_is_bounded` by name.
"""

from __future__ import annotations

import math
import threading
import types
import typing
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import annotated_types as at
import pytest
from pydantic import BaseModel

from outputs.clickhouse import table_counts
from outputs.sink import ClickHouseWriter, write_with_retry
from schemas.events import (
    EVENT_TYPES,
    MAX_TIME,
    MIN_TIME,
    AlertRaised,
    AllocationDecided,
    Assignment,
    CapacityObserved,
    DeadLettered,
    Event,
    InterruptionKind,
    InterruptionObserved,
    ModelPromoted,
    PlanAdopted,
    PlanChange,
    PriceForecasted,
    PriceObserved,
    QuotasSet,
    WorkloadCancelled,
    WorkloadExplanation,
    WorkloadRequested,
    WorkloadSpec,
)
from schemas.offers import Market, OfferKey
from schemas.placement import GpuQuota

T0 = datetime(2025, 3, 1, tzinfo=UTC)
OFFER = OfferKey(provider="aws", region="us-east-1", zone="us-east-1a", instance_type="p5.48xlarge",
                 gpu_model="H100-80GB", gpus_per_instance=8, market=Market.SPOT)
SPEC = WorkloadSpec(workload_id="w1", gpu_throughput={"H100-80GB": 1.0}, min_gpus=8, max_gpus=16,
                    budget_usd_per_hour=100.0)


def base_events() -> list[Event]:
    """One valid event of each type, with every optional numeric field set (so it is exercised)."""
    a = Assignment(workload_id="w1", offer=OFFER, instances=1, usd_per_hour=30.0)
    return [
        PriceObserved(event_id="p", offer=OFFER, usd_per_hour=30.0, quoted_at=T0, observed_at=T0, source="t"),
        CapacityObserved(event_id="c", offer=OFFER, available=True, available_instances=3, capacity_score=0.5,
                         quoted_at=T0, observed_at=T0, source="t"),
        InterruptionObserved(event_id="i", offer=OFFER, kind=InterruptionKind.FREQUENCY,
                             interruption_probability_per_hour=0.1, frequency_band=2, instance_id="x",
                             occurred_at=T0, observed_at=T0, source="t"),
        WorkloadRequested(event_id="wr", spec=SPEC, requested_at=T0),
        WorkloadCancelled(event_id="wc", workload_id="w1", cancelled_at=T0),
        AllocationDecided(event_id="d", decided_at=T0, workload_ids=["w1"], assignments=[a],
                          changes=[PlanChange(action="launch", workload_id="w1", to_offer=OFFER, instances=1)],
                          reason="r", quote_age_s={OFFER.key: 1.0}, latency_ms=5.0, total_usd_per_hour=30.0,
                          explanations=[WorkloadExplanation(workload_id="w1", usd_per_hour=30.0,
                                                            runner_up_delta_usd_per_hour=1.0)]),
        PriceForecasted(event_id="f", offer=OFFER, forecast_at=T0, horizon_s=3600, usd_per_hour=30.0,
                        interruption_probability_next_hour=0.1, model="m", mae_model=0.1, mae_naive=0.2,
                        n_scored=3),
        AlertRaised(event_id="a", rule="r", message="m", raised_at=T0, offer=OFFER, workload_id="w1", value=1.0,
                    threshold=2.0),
        ModelPromoted(event_id="m", group="aws|H100-80GB|spot", target="price_3600s", champion="a", previous="naive",
                      metric="mae", score_champion=0.1, score_previous=0.2, n_scored=40, promoted_at=T0),
        PlanAdopted(event_id="pa", app_id="cloudarb", workload_id="w1", decision_id="d", assignments=[a],
                    step_started_at=T0, adopted_at=T0),
        QuotasSet(event_id="q", set_at=T0, quotas=[GpuQuota(provider="aws", region="us-east-1", gpu="H100",
                                                            gpus=64)]),
        DeadLettered(event_id="dl", source_topic="t", source_partition=0, source_offset=5, stage="s", reason="r",
                     original_b64="", dead_lettered_at=T0, original_bytes=0, original_sha256="0" * 64),
    ]


def _bounds(info: Any) -> tuple[float | None, float | None]:
    """The smallest and largest value the field accepts (strict bounds stepped inside)."""
    lo = hi = None
    for m in info.metadata:
        if isinstance(m, at.Ge):
            lo = m.ge
        elif isinstance(m, at.Gt):
            lo = m.gt + 1 if isinstance(m.gt, int) else math.nextafter(m.gt, math.inf)  # type: ignore[operator]
        elif isinstance(m, at.Le):
            hi = m.le
        elif isinstance(m, at.Lt):
            hi = m.lt - 1 if isinstance(m.lt, int) else math.nextafter(m.lt, -math.inf)  # type: ignore[operator]
    return lo, hi  # type: ignore[return-value]


def _base_type(ann: Any) -> Any:
    """int / float / datetime / a model / list[model] / None for anything else (Optional unwrapped)."""
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else None
    if origin is typing.Annotated:
        return _base_type(typing.get_args(ann)[0])
    if origin is list:
        inner = _base_type(typing.get_args(ann)[0])
        return ("list", inner) if isinstance(inner, type) and issubclass(inner, BaseModel) else None
    if ann in (int, float, datetime) or (isinstance(ann, type) and issubclass(ann, BaseModel)):
        return ann
    return None


def _ends(kind: Any, lo: float | None, hi: float | None) -> list[Any]:
    if kind is datetime:
        return [MIN_TIME, MAX_TIME - timedelta(milliseconds=1)]
    if kind is int:
        return [int(lo) if lo is not None else None, int(hi) if hi is not None else None]
    big = 1.7e308
    return [lo if lo is not None else -big, hi if hi is not None else big]


def variants(m: BaseModel, path: str = "") -> Iterator[tuple[str, BaseModel]]:
    """Copies of `m` with one numeric/time field (nested ones too) at an end of its allowed range."""
    for name, info in type(m).model_fields.items():
        kind = _base_type(info.annotation)
        value = getattr(m, name)
        where = f"{path}{name}"
        if kind in (int, float, datetime):
            for v in _ends(kind, *_bounds(info)):
                if v is not None and not (kind is float and not math.isfinite(v)):
                    yield f"{where}={v}", m.model_copy(update={name: v})
        elif isinstance(kind, type) and issubclass(kind, BaseModel) and value is not None:
            for p, sub in variants(value, f"{where}."):
                yield p, m.model_copy(update={name: sub})
        elif isinstance(kind, tuple) and value:
            for p, sub in variants(value[0], f"{where}[0]."):
                yield p, m.model_copy(update={name: [sub, *value[1:]]})


def _revalidate(e: BaseModel) -> Event:
    """The variant as a consumer would read it (so it is schema-valid, not just constructed)."""
    out = type(e).model_validate_json(e.model_dump_json())
    assert isinstance(out, Event)
    return out


def all_variants() -> list[tuple[str, Event]]:
    """Every variant a consumer would accept (one that breaks a cross-field rule, e.g. min_gpus above
    max_gpus, is not schema-valid and is left out)."""
    from pydantic import ValidationError

    out = []
    for e in base_events():
        for path, v in variants(e):
            try:
                out.append((f"{type(e).__name__}.{path}", _revalidate(v)))
            except ValidationError:
                continue
    return out


def test_the_base_events_cover_every_event_type() -> None:
    assert {type(e).__name__ for e in base_events()} == set(EVENT_TYPES)


def test_every_integer_field_is_bounded() -> None:
    """An integer without an upper bound can overflow its column: name it."""
    unbounded = []

    def walk(cls: type[BaseModel], path: str) -> None:
        for name, info in cls.model_fields.items():
            kind = _base_type(info.annotation)
            if kind is int and _bounds(info)[1] is None:
                unbounded.append(f"{path}{name}")
            elif isinstance(kind, type) and issubclass(kind, BaseModel):
                walk(kind, f"{path}{name}.")
            elif isinstance(kind, tuple):
                walk(kind[1], f"{path}{name}[].")

    for cls in EVENT_TYPES.values():
        walk(cls, f"{cls.__name__}.")
    assert unbounded == []


def test_times_outside_the_storable_range_are_rejected() -> None:
    from pydantic import ValidationError

    base = base_events()[0]
    for t in (datetime(1969, 12, 31, tzinfo=UTC), MAX_TIME, datetime(9999, 1, 1, tzinfo=UTC)):
        with pytest.raises(ValidationError):
            PriceObserved.model_validate({**base.model_dump(), "quoted_at": t})
    with pytest.raises(ValidationError):
        CapacityObserved.model_validate({**base_events()[1].model_dump(), "available_instances": 2**33})


def test_every_schema_valid_extreme_is_insertable(chdb_client: tuple[Any, str]) -> None:
    client, db = chdb_client
    cases = all_variants()
    assert len(cases) > 60
    failed = []
    for i, (path, e) in enumerate(cases):
        e = e.model_copy(update={"event_id": f"x{i}"})
        try:
            ClickHouseWriter(client, db).write([e])
        except Exception as exc:
            failed.append(f"{path}: {type(exc).__name__}: {str(exc)[:120]}")
    assert failed == []


class RefusingClient:
    """A chdb client whose inserts refuse any row holding a poison marker (a record ClickHouse cannot store,
    whatever the reason), while ClickHouse itself stays healthy."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def insert(self, table: str, rows: list[list[Any]], **kw: Any) -> Any:
        if any("poison" in str(v) for r in rows for v in r):
            raise ValueError("Cannot parse input: poison row")
        return self.inner.insert(table, rows, **kw)


class RecordingDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, str]] = []

    def send(self, src: Any, reason: str) -> None:
        self.sent.append((src, reason))

    def flush(self, timeout_s: float = 30.0) -> None:
        pass


def test_a_refused_event_is_split_out_and_dead_lettered_the_rest_written(chdb_client: tuple[Any, str]) -> None:
    from outputs.poison import Source

    client, db = chdb_client
    good = [PriceObserved(event_id=f"g{i}", offer=OFFER, usd_per_hour=30.0 + i, quoted_at=T0, observed_at=T0,
                          source="t") for i in range(40)]
    bad = good[0].model_copy(update={"event_id": "bad", "source": "poison"})
    events: list[Event] = [*good[:17], bad, *good[17:]]
    sources = [Source("cloudarb.prices.v1", 0, i, e.model_dump_json().encode()) for i, e in enumerate(events)]
    writer = ClickHouseWriter(RefusingClient(client), db)
    dlq = RecordingDeadLetters()
    assert write_with_retry(writer, events, threading.Event(), sources=sources, dead_letters=dlq)  # type: ignore[arg-type]
    assert table_counts(client, db)["prices"] == 40
    assert [(s.offset, r.split(":")[0]) for s, r in dlq.sent] == [(17, "ClickHouse insert failed")]
    assert writer.stats.dead_lettered == 1 and writer.stats.waiting_since is None


def test_a_sink_without_progress_reports_itself_stalled() -> None:
    from outputs.sink import SinkStats

    s = SinkStats(progress_t=100.0)
    assert not s.stalled(60, now=1000.0)   # nothing in hand: idle, not stalled
    s.waiting_since = 900.0
    assert not s.stalled(60, now=950.0)
    assert s.stalled(60, now=961.0)


def test_readyz_says_not_ready_while_the_sink_is_stalled(loaded_db: tuple[Any, str, list[Event]]) -> None:
    from fastapi.testclient import TestClient

    from outputs.api import ApiConfig, create_app

    client, db, _ = loaded_db
    stats = {"sink_stalled": 0.0}
    app = create_app(client, ApiConfig(db=db, admin_key="k" * 40, refresh_s=0.2), pipeline_stats=lambda: stats)
    with TestClient(app) as tc:
        assert tc.get("/readyz").json()["sink"] == "ok"
        stats["sink_stalled"] = 1.0
        r = tc.get("/readyz")
        assert r.status_code == 503 and r.json()["sink"] == "stalled"
        assert "sink_stalled" in tc.get("/metrics").text

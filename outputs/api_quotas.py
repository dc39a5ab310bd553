"""The API's GPU quota routes: `GET /v1/quotas` (viewer: the set in force, as the sink stored it) and
`POST /v1/quotas` (operator: publish a new set, which replaces the previous one).

A quota is `schemas.placement.GpuQuota` validated strictly: a known provider, a region ('*' = all the
provider's regions), a canonical GPU model or a family, and a GPU count. The decision stage applies the
latest set (`set_at`) to every plan; a placement that would exceed a quota is never emitted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from outputs.queries import ReadModel
from schemas.events import MAX_EVENT_BYTES, Event, QuotasSet, deterministic_id, utcnow
from schemas.placement import GpuQuota as _GpuQuota

PublishAs = Callable[[Event, str], None]   # (event, metrics kind): publishes, or raises the HTTP error


class GpuQuota(_GpuQuota):
    """The API's view of `schemas.placement.GpuQuota`: the same fields and validators, validated strictly (no
    "8" for an integer). Named like the schema's model so the OpenAPI document keeps its component name."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class QuotasIn(BaseModel):
    """The whole set of quotas (it replaces the previous one); an empty list lifts every quota."""

    model_config = ConfigDict(strict=True, extra="forbid")

    quotas: list[GpuQuota] = Field(max_length=10_000)

    @model_validator(mode="after")
    def _one_per_key(self) -> QuotasIn:
        seen: set[str] = set()
        for q in self.quotas:
            if q.key in seen:
                raise ValueError(f"quota {q.key} is given twice")
            seen.add(q.key)
        return self

    def to_event(self) -> QuotasSet:
        quotas = [_GpuQuota.model_validate(q.model_dump()) for q in self.quotas]
        now = utcnow()
        body = json.dumps([q.model_dump() for q in quotas], sort_keys=True, separators=(",", ":"))
        return QuotasSet(event_id=deterministic_id("quotas", body, now.isoformat()), quotas=quotas, set_at=now)


class QuotasAccepted(BaseModel):
    event_id: str
    n_quotas: int
    status: Literal["submitted"]


class QuotasOut(BaseModel):
    event_id: str | None = Field(description="the QuotasSet in force; null when none was ever set")
    set_at: str | None
    quotas: list[dict[str, Any]]


def router(rm: ReadModel, viewer: Any, operator: Any, publish: PublishAs) -> APIRouter:
    """`viewer`, `operator`: the app's auth dependencies (`Depends(auth(role))`)."""
    r = APIRouter(tags=["workloads"])

    @r.get("/v1/quotas", response_model=QuotasOut, dependencies=[viewer])
    def get_quotas() -> dict[str, Any]:
        """The GPU quotas in force (the latest set the sink has stored), with when they were set."""
        return rm.latest_quotas() or {"event_id": None, "set_at": None, "quotas": []}

    @r.post("/v1/quotas", status_code=202, response_model=QuotasAccepted, dependencies=[operator],
            responses={413: {"description": f"the event the set makes is over {MAX_EVENT_BYTES} bytes"}})
    def set_quotas(body: QuotasIn) -> Any:
        """Replace the GPU quotas: every later plan respects them (the decision stage re-decides every
        workload when they change)."""
        e = body.to_event()
        size = len(e.model_dump_json().encode())
        if size > MAX_EVENT_BYTES:  # the pipeline would dead-letter it: refuse it here, publish nothing
            return JSONResponse({"detail": f"the quota set's event would be {size} bytes, over the limit of "
                                           f"{MAX_EVENT_BYTES} bytes", "limit_bytes": MAX_EVENT_BYTES},
                                status_code=413)
        publish(e, "quotas_set")
        return {"event_id": e.event_id, "n_quotas": len(e.quotas), "status": "submitted"}

    return r

"""The wiring point: the only module that joins connectors, streams, solvers and outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from schemas.events import WorkloadRequested, WorkloadSpec, deterministic_id, utcnow
from solvers.registry import engine_factory


def create_streams_app(bootstrap: str, app_id: str = "cloudarb", engine: str = "greedy",
                       cg_budget_s: float | None = None, **kw: Any) -> Any:
    """The worker (streams.runtime.app.StreamsWorker) with the named engine; run `faust.Worker(it.app)`."""
    from streams.runtime.app import StreamsConfig, create_app

    return create_app(StreamsConfig(broker=f"kafka://{bootstrap}", app_id=app_id, **kw),
                      engine_factory(engine, cg_budget_s))


def load_workloads(path: Path) -> list[WorkloadSpec]:
    doc = yaml.safe_load(path.read_text())
    return [WorkloadSpec.model_validate(w) for w in doc["workloads"]]


def workload_events(specs: list[WorkloadSpec]) -> list[WorkloadRequested]:
    now = utcnow()
    return [WorkloadRequested(event_id=deterministic_id("workload", s.model_dump_json()), spec=s, requested_at=now)
            for s in specs]

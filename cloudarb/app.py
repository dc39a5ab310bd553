"""The wiring point: the only module that joins connectors, streams, solvers and outputs."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from schemas.events import WorkloadRequested, WorkloadSpec, deterministic_id, utcnow
from schemas.market import AllocationEngine


def engine_factory(name: str, cg_budget_s: float | None = None) -> Callable[[], AllocationEngine]:
    """Engine by name: 'greedy' (cheapest feasible), 'portfolio' (the OR-Tools engine; `cg_budget_s`:
    see `solvers.PortfolioEngine`), or 'package.module:factory' for an engine of your own (any callable
    returning a `schemas.market.AllocationEngine`; it must be importable by the decider's child process)."""
    import importlib

    import solvers

    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"engine {name!r} cannot be imported: {exc}") from None

    if name == "greedy":
        return solvers.GreedyEngine
    factory = getattr(solvers, "PortfolioEngine", None)
    if name == "portfolio" and factory is not None:
        return partial(factory, cg_budget_s=cg_budget_s)  # type: ignore[no-any-return]
    raise ValueError(f"unknown engine {name!r}; available: greedy" + (", portfolio" if factory else ""))


def create_streams_app(bootstrap: str, app_id: str = "cloudarb", engine: str = "greedy",
                       cg_budget_s: float | None = None, **kw: Any) -> Any:
    from streams.app import StreamsConfig, create_app

    return create_app(StreamsConfig(broker=f"kafka://{bootstrap}", app_id=app_id, **kw),
                      engine_factory(engine, cg_budget_s))


def load_workloads(path: Path) -> list[WorkloadSpec]:
    doc = yaml.safe_load(path.read_text())
    return [WorkloadSpec.model_validate(w) for w in doc["workloads"]]


def workload_events(specs: list[WorkloadSpec]) -> list[WorkloadRequested]:
    now = utcnow()
    return [WorkloadRequested(event_id=deterministic_id("workload", s.model_dump_json()), spec=s, requested_at=now)
            for s in specs]

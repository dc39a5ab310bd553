"""Engines by name: what `cloudarb worker --engine`, `CLOUDARB_ENGINE` and the back-tester's `--engine` accept.

One table for the worker and the back-tester, so a back-test measures the engine the worker would run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import partial

from schemas.market import AllocationEngine


def engine_factory(name: str, cg_budget_s: float | None = None) -> Callable[[], AllocationEngine]:
    """Engine by name: 'greedy' (cheapest feasible), 'portfolio' (the OR-Tools engine; `cg_budget_s`:
    see `solvers.PortfolioEngine`), or 'package.module:factory' for an engine of your own (any callable
    returning a `schemas.market.AllocationEngine`; it must be importable by the decider's child process)."""
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

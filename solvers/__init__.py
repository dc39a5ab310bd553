"""Allocation engines: pure, synchronous, no I/O. They implement schemas.market.AllocationEngine."""

from solvers.greedy import GreedyEngine, greedy_plan
from solvers.instance import EngineParams, Evaluation, Instance, build_instance, evaluate
from solvers.portfolio import PortfolioEngine, diagnose, solve_once

__all__ = [
    "EngineParams",
    "Evaluation",
    "GreedyEngine",
    "Instance",
    "PortfolioEngine",
    "build_instance",
    "diagnose",
    "evaluate",
    "greedy_plan",
    "solve_once",
]

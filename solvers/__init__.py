"""Allocation engines: pure, synchronous, no I/O. They implement schemas.market.AllocationEngine."""

from solvers.greedy import GreedyEngine, greedy_plan

__all__ = ["GreedyEngine", "greedy_plan"]

"""What crosses the boundary between the streaming core and an allocation engine.

`streams` builds `OfferQuote`s from its tables and calls an `AllocationEngine` that the wiring point
(`cloudarb.app`) injects; `solvers` implements it. Neither imports the other: both import this module.

These are plain frozen dataclasses (not pydantic) because engines receive tens of thousands of them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from schemas.events import Assignment, WorkloadExplanation, WorkloadSpec
from schemas.offers import Market, OfferKey
from schemas.placement import GpuQuota


@dataclass(frozen=True, slots=True)
class OfferQuote:
    """The market's current view of one offer, as an engine needs it."""

    offer: OfferKey
    usd_per_hour: float                       # whole instance
    forecast_usd_per_hour: float | None = None  # at the planning horizon; None = use usd_per_hour
    available: bool = True
    capacity_instances: int | None = None     # None = unknown (treated as unbounded)
    interruption_probability_per_hour: float = 0.0
    quote_age_s: float = 0.0

    @property
    def key(self) -> str:
        return self.offer.key

    @property
    def is_spot(self) -> bool:
        return self.offer.market is Market.SPOT

    # the forecast's upper quantile (p90) at the horizon, for risk-averse workloads; None = the median's
    forecast_usd_per_hour_p90: float | None = None

    @property
    def planning_usd_per_hour(self) -> float:
        return self.usd_per_hour if self.forecast_usd_per_hour is None else self.forecast_usd_per_hour

    @property
    def planning_usd_per_hour_p90(self) -> float:
        """The planning price of a risk-averse workload: the p90 forecast, never below the median's."""
        med = self.planning_usd_per_hour
        return med if self.forecast_usd_per_hour_p90 is None else max(med, self.forecast_usd_per_hour_p90)


@dataclass(frozen=True, slots=True)
class InfeasibilityReport:
    """Why a workload could not be placed, and by how much (never an exception)."""

    workload_id: str
    reason: str                               # e.g. "budget $40.00/h below cheapest feasible $52.00/h"
    # "budget" | "gpu_count" | "capacity" | "spot_share" | "co_location" | "no_offer" | "gang" | "quota"
    # | "interconnect" | "replica_size" | "spread"
    constraint: str
    shortfall: float | None = None            # in the constraint's unit (USD/h for budget, GPUs for counts)


@dataclass(frozen=True, slots=True)
class SolveResult:
    assignments: tuple[Assignment, ...]
    explanations: Mapping[str, WorkloadExplanation] = field(default_factory=dict)
    infeasible: tuple[InfeasibilityReport, ...] = ()
    objective: float = 0.0
    lower_bound: float | None = None
    solver: str = "unknown"
    solve_ms: float = 0.0
    # the workloads whose placement this solve re-decided (None: unknown, any may have changed); the
    # others' placements are the ones in force before it
    redecided: frozenset[str] | None = None

    def plan(self, workload_ids: Collection[str] | None = None) -> dict[str, list[Assignment]]:
        """Assignments per workload (of `workload_ids` only, when given)."""
        out: dict[str, list[Assignment]] = {}
        for a in self.assignments:
            if workload_ids is None or a.workload_id in workload_ids:
                out.setdefault(a.workload_id, []).append(a)
        return out


class AllocationEngine(Protocol):
    """A stateful engine: keep its model alive between calls, re-solve incrementally."""

    name: str

    def upsert_offers(self, quotes: Sequence[OfferQuote]) -> None: ...

    def remove_offers(self, keys: Collection[str]) -> None: ...

    def upsert_workload(self, spec: WorkloadSpec) -> None: ...

    def remove_workload(self, workload_id: str) -> None: ...

    def set_current_plan(self, assignments: Sequence[Assignment]) -> None:
        """Restore the plan in force (after a restart) so migration costs are charged against it."""

    def set_quotas(self, quotas: Sequence[GpuQuota]) -> None:
        """The user's GPU quotas, all of them (replacing the previous set): hard limits no plan exceeds."""

    def solve(self, workload_ids: Collection[str] | None = None) -> SolveResult:
        """Re-decide the given workloads (None = all) and adopt the result as the current plan."""


@runtime_checkable
class WarmEngine(Protocol):
    """An engine that defers work past a solve's result and prepares the next solve while idle (the
    decision stage calls these between steps; solvers.PortfolioEngine implements them)."""

    @property
    def rebuild_pending(self) -> bool:
        """The next solve rebuilds the model (and drops cached decisions): re-decide every workload then."""

    def settle(self) -> None:
        """Finish the bookkeeping deferred past the last solve's result."""

    def warm(self, stop: Callable[[], bool]) -> None:
        """Prepare the next solve until `stop()` is true."""

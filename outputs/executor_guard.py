"""What the deployment executors refuse to do: caps, market prices, decision time bounds.

A decision on `cloudarb.decisions.v1` is an instruction to spend money, and the executors do not trust it:

- **Prices come from the market, not from the decision.** Every launch is priced at
  `max(latest market price of the offer, the decision's own price)` per instance. The market price comes
  from a `PriceSource` given to the runner: `ClickHouseLatestPrices` (the sink's `offer_latest`, the default
  whenever the runner has a ClickHouse client) or `MarketPrices` (in memory, fed with `PriceObserved`
  events by whatever process sees the prices). An offer with no known market price is refused, never
  priced at $0.
- **Every launch needs a matching assignment**: a launch, migrate or resize must target an offer that the
  decision's `assignments` give to that workload, for no more instances than assigned.
- **Caps** (`Caps`), checked over the whole decision before anything is done: instances running, $/h
  running, instances launched in the last hour (rolling window across decisions: churn) in total and per
  workload.
- **Time bounds**: a decision dated more than `max_clock_skew_s` in the future is refused; one older
  than `max_decision_age_s` is refused by real executors (dry run still records what it would do, so
  history can be replayed into `executor_actions`).

A decision that fails any check is refused as a whole: nothing is launched or terminated, and every one
of its steps is recorded in `executor_actions` with status `refused` and the reason.

Configuration (pydantic-settings, environment variables with the `CLOUDARB_EXEC_` prefix; a `Caps` built
without arguments reads them, explicit arguments win, e.g. the CLI's `--max-instances`/`--max-usd-per-hour`):

    CLOUDARB_EXEC_MAX_INSTANCES=16                     instances running at once (dry run included)
    CLOUDARB_EXEC_MAX_USD_PER_HOUR=200                 $/h running at once, at market prices
    CLOUDARB_EXEC_MAX_LAUNCHES_PER_HOUR=48             instances launched in any rolling hour (churn)
    CLOUDARB_EXEC_MAX_WORKLOAD_LAUNCHES_PER_HOUR=16    the same, per workload
    CLOUDARB_EXEC_MAX_DECISION_AGE_S=900               real executors ignore older decisions
    CLOUDARB_EXEC_MAX_CLOCK_SKEW_S=60                  decisions dated further ahead are refused
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.events import Event, PriceObserved

LAUNCH_WINDOW = timedelta(hours=1)


class ExecutorCapsSettings(BaseSettings):
    """The executors' caps from the environment (`CLOUDARB_EXEC_*`)."""

    model_config = SettingsConfigDict(env_prefix="CLOUDARB_EXEC_", extra="ignore", case_sensitive=False)

    max_instances: int = Field(default=16, ge=0, description="instances running at once")
    max_usd_per_hour: float = Field(default=200.0, ge=0, description="$/h running at once, at market prices")
    max_launches_per_hour: int = Field(default=48, ge=0, description="instances launched per rolling hour")
    max_workload_launches_per_hour: int = Field(default=16, ge=0,
                                                description="instances launched per rolling hour, per workload")
    max_decision_age_s: float = Field(default=900.0, gt=0, description="real executors ignore older decisions")
    max_clock_skew_s: float = Field(default=60.0, ge=0, description="how far in the future a decision may be dated")


def _env(name: str) -> Any:
    return getattr(ExecutorCapsSettings(), name)


@dataclass
class Caps:
    """Limits on what the executors do; unset fields come from `CLOUDARB_EXEC_*` (see the module doc).

    `max_launches_per_hour` and `max_workload_launches_per_hour` count instances launched in the rolling
    hour before now, across decisions, so a stream of launch/terminate pairs cannot churn without bound."""

    max_instances: int = field(default_factory=lambda: int(_env("max_instances")))
    max_usd_per_hour: float = field(default_factory=lambda: float(_env("max_usd_per_hour")))
    max_launches_per_hour: int = field(default_factory=lambda: int(_env("max_launches_per_hour")))
    max_workload_launches_per_hour: int = field(default_factory=lambda: int(_env("max_workload_launches_per_hour")))
    max_decision_age_s: float = field(default_factory=lambda: float(_env("max_decision_age_s")))
    max_clock_skew_s: float = field(default_factory=lambda: float(_env("max_clock_skew_s")))


# -- market prices

class PriceSource(Protocol):
    def latest(self, offer_keys: Collection[str]) -> dict[str, float]:
        """Latest known $/h per instance for each offer key that has one (unknown keys are left out)."""


def _valid(p: Any) -> bool:
    return isinstance(p, int | float) and math.isfinite(p) and p > 0


class MarketPrices:
    """Latest price per offer in memory: `observe(events)` with the `PriceObserved` stream (newest quote
    wins, late ones are ignored), or `set(key, usd)`. Thread-safe."""

    def __init__(self, prices: Mapping[str, float] | None = None) -> None:
        self._lock = threading.Lock()
        self._p: dict[str, tuple[datetime | None, float]] = {k: (None, float(v)) for k, v in (prices or {}).items()}

    def set(self, offer_key: str, usd_per_hour: float, at: datetime | None = None) -> None:
        with self._lock:
            self._p[offer_key] = (at, float(usd_per_hour))

    def observe(self, events: Iterable[Event]) -> None:
        with self._lock:
            for e in events:
                if isinstance(e, PriceObserved):
                    old = self._p.get(e.offer.key)
                    if old is None or old[0] is None or e.quoted_at >= old[0]:
                        self._p[e.offer.key] = (e.quoted_at, e.usd_per_hour)

    def latest(self, offer_keys: Collection[str]) -> dict[str, float]:
        with self._lock:
            return {k: self._p[k][1] for k in offer_keys if k in self._p and _valid(self._p[k][1])}


class ClickHouseLatestPrices:
    """The latest price per offer from ClickHouse `offer_latest` (kept by the sink from `prices`)."""

    def __init__(self, client: Any, db: str = "cloudarb") -> None:
        self.client, self.db = client, db

    def latest(self, offer_keys: Collection[str]) -> dict[str, float]:
        if not offer_keys:
            return {}
        rows = self.client.query(
            f"SELECT offer_key, argMaxMerge(usd_per_hour) FROM {self.db}.offer_latest "
            "WHERE offer_key IN {keys:Array(String)} GROUP BY offer_key",
            parameters={"keys": sorted(offer_keys)}).result_rows
        return {str(k): float(p) for k, p in rows if _valid(p)}  # an offer seen only in capacity reads as 0


# -- time bounds

def decision_time_refusal(decided_at: datetime, now: datetime, caps: Caps, real: bool) -> str | None:
    """Why a decision dated `decided_at` must not be acted on at `now`, or None."""
    ahead = (decided_at - now).total_seconds()
    if ahead > caps.max_clock_skew_s:
        return (f"decision from the future: decided_at is {ahead:.0f}s ahead of now "
                f"(> {caps.max_clock_skew_s:.0f}s clock skew)")
    age = -ahead
    if real and age > caps.max_decision_age_s:
        return f"stale decision ({age:.0f}s old > {caps.max_decision_age_s:.0f}s): not acting on history"
    return None


# -- churn

class LaunchWindow:
    """Instances launched over the last hour (rolling), in total and per workload."""

    def __init__(self, window: timedelta = LAUNCH_WINDOW) -> None:
        self.window = window
        self._q: deque[tuple[datetime, str, int]] = deque()

    def add(self, at: datetime, workload_id: str, instances: int) -> None:
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        self._q.append((at, workload_id, instances))
        if len(self._q) > 1 and self._q[-2][0] > at:  # restored out of order: keep it sorted
            self._q = deque(sorted(self._q, key=lambda x: x[0]))

    def counts(self, now: datetime) -> tuple[int, dict[str, int]]:
        while self._q and self._q[0][0] <= now - self.window:
            self._q.popleft()
        per: dict[str, int] = {}
        for _, wid, n in self._q:
            per[wid] = per.get(wid, 0) + n
        return sum(per.values()), per


@dataclass
class Budget:
    """What a decision would leave running, step by step, checked against the caps before any step runs."""

    caps: Caps
    instances: int
    usd_per_hour: float
    launched: int
    launched_by_workload: dict[str, int]

    def launch(self, workload_id: str, n: int, usd_per_instance: float) -> str | None:
        """Book a launch; returns why it is over a cap (and books nothing) or None."""
        c = self.caps
        usd = self.usd_per_hour + usd_per_instance * n
        wl = self.launched_by_workload.get(workload_id, 0)
        if self.instances + n > c.max_instances:
            return f"cap: {self.instances}+{n} instances > max {c.max_instances}"
        if usd > c.max_usd_per_hour + 1e-9:
            return f"cap: ${usd:.2f}/h at market prices > max ${c.max_usd_per_hour:.2f}/h"
        if self.launched + n > c.max_launches_per_hour:
            return (f"cap: {self.launched}+{n} instances launched in the last hour > max "
                    f"{c.max_launches_per_hour} (churn)")
        if wl + n > c.max_workload_launches_per_hour:
            return (f"cap: {wl}+{n} instances launched for workload {workload_id} in the last hour > max "
                    f"{c.max_workload_launches_per_hour}")
        self.instances += n
        self.usd_per_hour = usd
        self.launched += n
        self.launched_by_workload[workload_id] = wl + n
        return None

    def terminate(self, n: int, usd_per_hour: float) -> None:
        self.instances -= n
        self.usd_per_hour -= usd_per_hour

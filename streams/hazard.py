"""Interruption / capacity-loss hazard per spot pool, shrunk toward its group and the global rate
(empirical Bayes), from the events and the exposure the stream shows.

A pool is one offer (provider, region, zone, instance type, market). Its rate of "bad" events (capacity
lost, preempted, a reclaim warning) per hour of exposure is estimated as

    lambda_global = (n_all + 1) / (H_all + 1 / GLOBAL_PRIOR_RATE)      (one pseudo-event at the prior rate)
    lambda_group  = (n_group + K * lambda_global) / (H_group + K)
    lambda_pool   = (n_pool + K * prior_pool) / (H_pool + K)
    prior_pool    = the Spot Advisor band's rate when the pool has one (interruption_p), else lambda_group

with K = PRIOR_STRENGTH_H hours of pseudo-exposure, and P(event within h) = 1 - exp(-lambda_pool * h).
A pool with little history follows its group; one with much history follows its own count. Exposure
is the time between two observations of the pool, capped (a pool not heard from for days is not known
to have been fine). The counts are numpy arrays (a row per pool and per group), so the market stage's
forecaster observes a whole batch of pools in one call (`observe_many`).

>>> hz, pool, group = Hazard(), "aws|us-east-1|a|p5|H100-80GB|8|spot", "aws|H100-80GB|spot"
>>> for t in range(0, 200 * 3600, 3600):   # one event every 10 h
...     hz.observe(pool, group, t, bad_events=1 if t % 36000 == 0 else 0)
>>> 0.05 < hz.probability(pool, group) < 0.15
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

PRIOR_STRENGTH_H = 200.0     # pseudo-hours a pool's estimate borrows from its group (and a group from all)
MAX_EXPOSURE_GAP_S = 6 * 3600.0
GLOBAL_PRIOR_RATE = 0.01     # per hour, before anything is seen


class _Counts:
    """Events and hours of exposure per name (a pool or a group), as arrays indexed by the name's row."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.events = np.zeros(0)
        self.hours = np.zeros(0)
        self.last_t = np.zeros(0)   # (pools) when last observed

    def row(self, name: str) -> int:
        i = self.index.get(name)
        if i is None:
            i = self.index[name] = len(self.index)
            if i >= len(self.events):
                k = max(64, len(self.events))
                self.events, self.hours = np.r_[self.events, np.zeros(k)], np.r_[self.hours, np.zeros(k)]
                self.last_t = np.r_[self.last_t, np.full(k, -np.inf)]
        return i

    def get(self, names: Sequence[str]) -> tuple[Any, Any]:
        """(events, hours) of each name (0, 0 for one never seen)."""
        rows = np.array([self.index.get(n, -1) for n in names], dtype=np.int64)
        known = rows >= 0
        return np.where(known, self.events[rows], 0.0), np.where(known, self.hours[rows], 0.0)


class Hazard:
    def __init__(self, strength_h: float = PRIOR_STRENGTH_H) -> None:
        self.k = strength_h
        self.pools = _Counts()
        self.groups = _Counts()
        self.all_events = 0.0
        self.all_hours = 0.0

    def observe(self, pool: str, group: str, now_t: float, bad_events: int = 0) -> None:
        """The pool was seen at `now_t` with `bad_events` new bad events since its last observation."""
        self.observe_many([pool], [group], [now_t], [bad_events])

    def observe_many(self, pools: Sequence[str], groups: Sequence[str], now_t: Any, bad_events: Any) -> None:
        """`observe` of many pools at once (each pool at most once)."""
        pi = np.array([self.pools.row(p) for p in pools], dtype=np.int64)
        gi = np.array([self.groups.row(g) for g in groups], dtype=np.int64)
        now = np.asarray(now_t, dtype=float)
        bad = np.asarray(bad_events, dtype=float)
        last = self.pools.last_t[pi]
        later = now > last
        hours = np.where(later & (last > -np.inf), np.minimum(now - last, MAX_EXPOSURE_GAP_S) / 3600, 0.0)
        self.pools.last_t[pi] = np.where(later, now, last)
        self.pools.hours[pi] += hours
        self.pools.events[pi] += bad
        np.add.at(self.groups.hours, gi, hours)
        np.add.at(self.groups.events, gi, bad)
        self.all_hours += float(hours.sum())
        self.all_events += float(bad.sum())

    def rate(self, pool: str, group: str, band_probability: float | None = None) -> float:
        """Events per hour, shrunk (see the module docstring)."""
        band = [math.nan if band_probability is None else band_probability]
        return float(self.rate_many([pool], [group], band)[0])

    def rate_many(self, pools: Sequence[str], groups: Sequence[str], band_probability: Any = None) -> Any:
        """`rate` of many pools at once, as a numpy array (`band_probability`: NaN where a pool has none)."""
        lam_all = (self.all_events + 1.0) / (self.all_hours + 1.0 / GLOBAL_PRIOR_RATE)
        k = self.k
        g_ev, g_h = self.groups.get(groups)
        p_ev, p_h = self.pools.get(pools)
        prior = (g_ev + k * lam_all) / (g_h + k)
        if band_probability is not None:
            band = np.asarray(band_probability, dtype=float)
            ok = (band > 0) & (band < 1)
            with np.errstate(invalid="ignore", divide="ignore"):
                prior = np.where(ok, -np.log1p(-np.where(ok, band, 0.0)), prior)
        return (p_ev + k * prior) / (p_h + k)

    def probability(self, pool: str, group: str, horizon_h: float = 1.0,
                    band_probability: float | None = None) -> float:
        return 1.0 - math.exp(-self.rate(pool, group, band_probability) * horizon_h)

    def probability_many(self, pools: Sequence[str], groups: Sequence[str], horizon_h: float = 1.0,
                         band_probability: Any = None) -> Any:
        """`probability` of many pools at once, as a numpy array (`band_probability`: an array, NaN where a
        pool has none).

        >>> hz = Hazard()
        >>> hz.observe("a", "g", 0.0); hz.observe("a", "g", 3600.0, bad_events=1)
        >>> math.isclose(hz.probability_many(["a"], ["g"], 1.0, [0.2])[0], hz.probability("a", "g", 1.0, 0.2))
        True
        """
        return 1.0 - np.exp(-self.rate_many(pools, groups, band_probability) * horizon_h)

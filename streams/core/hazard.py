"""Interruption / capacity-loss hazard per spot pool, shrunk toward its group and the global rate
(empirical Bayes), from the events and the exposure the stream shows.

A pool is one offer (provider, region, zone, instance type, market). Its rate of "bad" events (capacity
lost, preempted, a reclaim warning) per hour of exposure is estimated as

    lambda_global = (n_all + 1) / (H_all + 1 / GLOBAL_PRIOR_RATE)      (one pseudo-event at the prior rate)
    lambda_group  = (n_group + K * lambda_global) / (H_group + K)
    lambda_pool   = (n_pool + K * prior_pool) / (H_pool + K)
    prior_pool    = the Spot Advisor band's rate when the pool has one (interruption_p), else lambda_group

with K = PRIOR_STRENGTH_H hours of pseudo-exposure, and P(event within h) = 1 - exp(-lambda_pool * h).
Counts (events and hours) decay with a half-life of HALF_LIFE_H, so n and H are recent, exponentially
weighted counts: spot markets change regime, and a pool that lost capacity every few hours this week is not
made safe by a quiet year before it. A pool with little recent exposure follows its group; one with much
follows its own count. Exposure
is the time between two observations of the pool while it had capacity (a pool without capacity cannot
lose it; counting that time too would dilute the rate of a pool that keeps losing and regaining it), capped
at a week (a pool not heard from for longer is not known to have been fine).
The counts are numpy arrays (a row per pool and per group), so the market stage's
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

PRIOR_STRENGTH_H = 48.0      # pseudo-hours a pool's estimate borrows from its group (and a group from all)
HALF_LIFE_H = 84.0           # counts halve every 3.5 days: a week's memory, as markets change regime
MAX_EXPOSURE_GAP_S = 7 * 86_400.0   # a pool not heard from for longer is not known to have been fine
GLOBAL_PRIOR_RATE = 0.01     # per hour, before anything is seen


class _Counts:
    """Decayed events and hours of exposure per name (a pool or a group), as arrays indexed by the name's
    row; `upd_t` is when a row's counts were last decayed (they are as of then)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.events = np.zeros(0)
        self.hours = np.zeros(0)
        self.last_t = np.zeros(0)   # (pools) when last observed
        self.upd_t = np.zeros(0)

    def row(self, name: str) -> int:
        i = self.index.get(name)
        if i is None:
            i = self.index[name] = len(self.index)
            if i >= len(self.events):
                k = max(64, len(self.events))
                self.events, self.hours = np.r_[self.events, np.zeros(k)], np.r_[self.hours, np.zeros(k)]
                self.last_t = np.r_[self.last_t, np.full(k, -np.inf)]
                self.upd_t = np.r_[self.upd_t, np.full(k, -np.inf)]
        return i

    def add(self, rows: Any, t: Any, events: Any, hours: Any, tau_h: float) -> None:
        """Decay rows to time `t` (per row; rows unique), then add."""
        f = _decay(t - self.upd_t[rows], tau_h)
        self.events[rows] = self.events[rows] * f + events
        self.hours[rows] = self.hours[rows] * f + hours
        self.upd_t[rows] = np.maximum(self.upd_t[rows], t)

    def get(self, names: Sequence[str], now_t: float, tau_h: float) -> tuple[Any, Any]:
        """(events, hours) of each name decayed to `now_t` (0, 0 for one never seen)."""
        rows = np.array([self.index.get(n, -1) for n in names], dtype=np.int64)
        known = rows >= 0
        f = np.where(known, _decay(now_t - self.upd_t[rows], tau_h), 0.0)
        return self.events[rows] * f, self.hours[rows] * f


def _decay(dt_s: Any, tau_h: float) -> Any:
    """exp(-dt / tau): 1 for dt <= 0 (a row never updated holds zeros, whatever its factor)."""
    with np.errstate(invalid="ignore", over="ignore"):
        f = np.exp(-np.maximum(np.nan_to_num(np.asarray(dt_s, dtype=float), posinf=0.0), 0.0) / (tau_h * 3600))
    return f


class Hazard:
    def __init__(self, strength_h: float = PRIOR_STRENGTH_H, half_life_h: float = HALF_LIFE_H) -> None:
        self.k = strength_h
        self.tau_h = half_life_h / math.log(2)
        self.pools = _Counts()
        self.groups = _Counts()
        self.all_events = 0.0
        self.all_hours = 0.0
        self.all_t = -math.inf
        self.now_t = -math.inf     # the latest observation

    def observe(self, pool: str, group: str, now_t: float, bad_events: int = 0, exposed: bool = True) -> None:
        """The pool was seen at `now_t` with `bad_events` new bad events since its last observation;
        `exposed`: it had capacity since then (only such time counts: a pool without capacity cannot lose it)."""
        self.observe_many([pool], [group], [now_t], [bad_events], [exposed])

    def observe_many(self, pools: Sequence[str], groups: Sequence[str], now_t: Any, bad_events: Any,
                     exposed: Any = None) -> None:
        """`observe` of many pools at once (each pool at most once; `exposed`: None = all)."""
        pi = np.array([self.pools.row(p) for p in pools], dtype=np.int64)
        gi = np.array([self.groups.row(g) for g in groups], dtype=np.int64)
        now = np.asarray(now_t, dtype=float)
        bad = np.asarray(bad_events, dtype=float)
        if not len(now):
            return
        last = self.pools.last_t[pi]
        later = now > last
        hours = np.where(later & (last > -np.inf), np.minimum(now - last, MAX_EXPOSURE_GAP_S) / 3600, 0.0)
        if exposed is not None:
            hours = np.where(np.asarray(exposed, dtype=bool), hours, 0.0)
        self.pools.last_t[pi] = np.where(later, now, last)
        self.pools.add(pi, now, bad, hours, self.tau_h)
        t = float(now.max())   # groups and the global count decay to the batch's latest time
        ug, inv = np.unique(gi, return_inverse=True)
        self.groups.add(ug, np.full(len(ug), t), np.bincount(inv, bad, len(ug)), np.bincount(inv, hours, len(ug)),
                        self.tau_h)
        f = float(_decay(t - self.all_t, self.tau_h))
        self.all_hours = self.all_hours * f + float(hours.sum())
        self.all_events = self.all_events * f + float(bad.sum())
        self.all_t = max(self.all_t, t)
        self.now_t = max(self.now_t, t)

    def rate(self, pool: str, group: str, band_probability: float | None = None) -> float:
        """Events per hour, shrunk (see the module docstring)."""
        band = [math.nan if band_probability is None else band_probability]
        return float(self.rate_many([pool], [group], band)[0])

    def _global_rate(self) -> float:
        """lambda_global, from the counts decayed to the latest observation."""
        f = float(_decay(self.now_t - self.all_t, self.tau_h))
        return (self.all_events * f + 1.0) / (self.all_hours * f + 1.0 / GLOBAL_PRIOR_RATE)

    def rate_many(self, pools: Sequence[str], groups: Sequence[str], band_probability: Any = None) -> Any:
        """`rate` of many pools at once, as a numpy array (`band_probability`: NaN where a pool has none)."""
        t = self.now_t
        lam_all = self._global_rate()
        k = self.k
        g_ev, g_h = self.groups.get(groups, t, self.tau_h)
        p_ev, p_h = self.pools.get(pools, t, self.tau_h)
        prior = (g_ev + k * lam_all) / (g_h + k)
        if band_probability is not None:
            band = np.asarray(band_probability, dtype=float)
            ok = (band > 0) & (band < 1)
            with np.errstate(invalid="ignore", divide="ignore"):
                prior = np.where(ok, -np.log1p(-np.where(ok, band, 0.0)), prior)
        return (p_ev + k * prior) / (p_h + k)

    def group_probability_many(self, groups: Sequence[str], horizon_h: float = 1.0) -> Any:
        """P(event within `horizon_h`) of each group's own (recent, shrunk to the global) rate: the naive
        candidate, a recent base rate."""
        t = self.now_t
        lam_all = self._global_rate()
        g_ev, g_h = self.groups.get(groups, t, self.tau_h)
        return 1.0 - np.exp(-(g_ev + self.k * lam_all) / (g_h + self.k) * horizon_h)

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

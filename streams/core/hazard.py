"""Interruption / capacity-loss hazard per spot pool, shrunk toward its group and the global rate
(empirical Bayes), from the events and the exposure the stream shows.

A pool is one offer (provider, region, zone, instance type, market). Its rate of "bad" events (capacity
lost, preempted, a reclaim warning) per hour of exposure is estimated as

    lambda_global = (n_all + 1) / (H_all + 1 / GLOBAL_PRIOR_RATE)      (one pseudo-event at the prior rate)
    lambda_group  = (n_group + a) / (H_group + a / lambda_global)      (a = GROUP_PRIOR_EVENTS pseudo-events)
    lambda_pool   = (n_pool + K * lambda_group + Kb * lambda_band) / (H_pool + K + Kb)

with K = PRIOR_STRENGTH_H hours of pseudo-exposure at the group's rate, Kb = BAND_PRIOR_H hours at the Spot
Advisor band's rate lambda_band = -log(1 - band) where the pool has one (Kb = 0 where not), and
P(event within h) = 1 - exp(-lambda_pool * h).
The group borrows a fixed number of pseudo-events, not hours: the global rate mixes pools that flap every
few hours with pools that never lose capacity, so K hours at it would be K * lambda_global events (~10 at
20 %/h), and a group that has had none for weeks would still be forecast ~lambda_global * K / H; with half
an event (as Jeffreys' prior) its rate falls as ~0.5 / H. The band (a monthly frequency, for another time
than the data it is applied to) is a prior of bounded weight: Kb hours, outweighed by the pool's own
exposure within a day or two.
Counts (events and hours) decay with a half-life of HALF_LIFE_H, so n and H are recent, exponentially
weighted counts: spot markets change regime, and a pool that lost capacity every few hours this week is not
made safe by a quiet year before it. A pool with little recent exposure follows its group; one with much
follows its own count. Exposure
is the time between two observations of the pool while it had capacity (a pool without capacity cannot
lose it; counting that time too would dilute the rate of a pool that keeps losing and regaining it), capped
at a week (a pool not heard from for longer is not known to have been fine); an event is counted only
after some exposure. Between its observations, a pool that held capacity at its last one adds its pending
exposure (to the latest observation of any pool) to every rate (`_pending`): a pool with no event records
no exposure until it is heard from again, and without it a quiet group would look unexposed.
The counts are numpy arrays (a row per pool and per group), so the market stage's
forecaster observes a whole batch of pools in one call (`observe_many`).

Duration dependence (proportional hazards, piecewise constant): a pool that has just regained capacity is
likelier to lose it again than one that has held it for days. The shape is pooled over every pool, by the
time the pool has held capacity u (bins with upper edges DURATION_EDGES_H hours, log-spaced), from the
losses E_b that fell in each bin and those its pools' own constant rates expected there, X_b = sum of
exposure x lambda_pool (decayed with the longer half-life SHAPE_HALF_LIFE_H: a shape pooled over all
pools changes slowly):

    r_b = (E_b + 1) / (X_b + 1)

(observed over expected, shrunk to 1 by one pseudo-event). Against expected counts, not raw hours: pools
that flap fill the short bins and steady ones the long bins, so a raw rate per bin would mostly tell pools
apart, which lambda_pool already does, and count that twice. A pool's rate over the next h hours is its own
lambda_pool times the exposure-weighted mean of r_b over (u, u + h]: `duration_factor_many`. An exposure is
split over the bins its up-time interval crosses; a loss falls in the bin of the up-time it ended. A pool's
up-time counts from when it was last seen regain capacity (or first seen with it).

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

PRIOR_STRENGTH_H = 24.0      # pseudo-hours a pool's estimate borrows from its group
GROUP_PRIOR_EVENTS = 0.5     # pseudo-events a group's estimate borrows from the global rate
BAND_PRIOR_H = 12.0          # pseudo-hours a pool's estimate borrows from its Spot Advisor band
HALF_LIFE_H = 84.0           # counts halve every 3.5 days: a week's memory, as markets change regime
MAX_EXPOSURE_GAP_S = 7 * 86_400.0   # a pool not heard from for longer is not known to have been fine
GLOBAL_PRIOR_RATE = 0.001    # per hour, before anything is seen (Spot Advisor bands: ~1e-4 - 4e-4 per hour)
DURATION_EDGES_H = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)   # up-time bins' upper edges (the last open)
SHAPE_HALF_LIFE_H = 672.0    # the pooled duration shape's memory: four weeks
_LO = np.r_[0.0, DURATION_EDGES_H]
_HI = np.r_[DURATION_EDGES_H, np.inf]


def _bin_overlap(start_h: Any, end_h: Any) -> Any:
    """Hours of each up-time interval (start_h, end_h] in each duration bin (a row per interval)."""
    return np.clip(np.minimum(end_h[:, None], _HI) - np.maximum(start_h[:, None], _LO), 0.0, None)


class _Counts:
    """Decayed events and hours of exposure per name (a pool or a group), as arrays indexed by the name's
    row; `upd_t` is when a row's counts were last decayed (they are as of then)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.events = np.zeros(0)
        self.hours = np.zeros(0)
        self.last_t = np.zeros(0)   # (pools) when last observed
        self.upd_t = np.zeros(0)
        self.open = np.zeros(0, dtype=bool)     # (pools) held capacity when last observed
        self.grp = np.zeros(0, dtype=np.int64)  # (pools) the group's row
        self.up_since = np.zeros(0)             # (pools) since when it holds capacity (NaN: it has none)

    def row(self, name: str) -> int:
        i = self.index.get(name)
        if i is None:
            i = self.index[name] = len(self.index)
            if i >= len(self.events):
                k = max(64, len(self.events))
                self.events, self.hours = np.r_[self.events, np.zeros(k)], np.r_[self.hours, np.zeros(k)]
                self.last_t = np.r_[self.last_t, np.full(k, -np.inf)]
                self.upd_t = np.r_[self.upd_t, np.full(k, -np.inf)]
                self.open = np.r_[self.open, np.zeros(k, dtype=bool)]
                self.grp = np.r_[self.grp, np.zeros(k, dtype=np.int64)]
                self.up_since = np.r_[self.up_since, np.full(k, np.nan)]
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
    def __init__(self, strength_h: float = PRIOR_STRENGTH_H, half_life_h: float = HALF_LIFE_H,
                 group_events: float = GROUP_PRIOR_EVENTS, band_h: float = BAND_PRIOR_H) -> None:
        self.k = strength_h
        self.a = group_events
        self.kb = band_h
        self.tau_h = half_life_h / math.log(2)
        self.pools = _Counts()
        self.groups = _Counts()
        self.all_events = 0.0
        self.all_hours = 0.0
        self.all_t = -math.inf
        self.now_t = -math.inf     # the latest observation
        self.tau_shape_h = SHAPE_HALF_LIFE_H / math.log(2)
        self.shape_events = np.zeros(len(_LO))   # pooled losses per up-time bin, and those expected (decayed)
        self.shape_expected = np.zeros(len(_LO))
        self.shape_t = -math.inf

    def observe(self, pool: str, group: str, now_t: float, bad_events: int = 0, exposed: bool = True,
                available: bool | None = None) -> None:
        """The pool was seen at `now_t` with `bad_events` new bad events since its last observation;
        `exposed`: it had capacity since then (only such time counts: a pool without capacity cannot lose it);
        `available`: it has capacity now (None: unless it has just lost it, i.e. `bad_events` == 0)."""
        self.observe_many([pool], [group], [now_t], [bad_events], [exposed],
                          None if available is None else [available])

    def observe_many(self, pools: Sequence[str], groups: Sequence[str], now_t: Any, bad_events: Any,
                     exposed: Any = None, available: Any = None) -> None:
        """`observe` of many pools at once (each pool at most once; `exposed`: None = all; `available`: None =
        where no bad event came)."""
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
        # an event with no exposure before it (a pool's first observation, or one without capacity since its
        # last) is not a loss of capacity held: counted, a batch of pools first seen without capacity would
        # read as tens of events in no time and set every rate at ~ n / (1 / GLOBAL_PRIOR_RATE)
        bad = np.where(hours > 0, bad, 0.0)
        self.pools.last_t[pi] = np.where(later, now, last)
        avail = (np.asarray(bad_events, dtype=float) == 0) if available is None else np.asarray(available, dtype=bool)
        up0 = self.pools.up_since[pi]
        if (hours > 0).any():   # (each pool's rate before this observation: its losses' expected count)
            lam = self.rate_many(pools, groups)
            self._add_shape(np.where(np.isfinite(up0), (now - up0) / 3600, hours), hours, bad, lam, float(now.max()))
        regained = later & avail & (~self.pools.open[pi] | np.isnan(up0))
        self.pools.up_since[pi] = np.where(later & ~avail, np.nan, np.where(regained, now, up0))
        self.pools.open[pi] = np.where(later, avail, self.pools.open[pi])
        self.pools.grp[pi] = gi
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

    def _add_shape(self, end_h: Any, hours: Any, bad: Any, lam: Any, t: float) -> None:
        """Exposures of up-time (end_h - hours, end_h] (hours) at rates `lam` (per hour) and the losses that
        ended them, into the pooled duration shape's bins."""
        sel = hours > 0
        end = end_h[sel]
        ov = _bin_overlap(np.maximum(end - hours[sel], 0.0), end)
        f = float(_decay(t - self.shape_t, self.tau_shape_h))
        self.shape_expected = self.shape_expected * f + (ov * lam[sel, None]).sum(axis=0)
        b = np.searchsorted(_HI[:-1], end, side="left")   # the bin the interval ends in
        self.shape_events = self.shape_events * f + np.bincount(b, bad[sel], len(_LO))
        self.shape_t = max(self.shape_t, t)

    def duration_shape(self) -> Any:
        """r_b per up-time bin: its losses over those its pools' own rates expect, shrunk to 1 (module
        docstring)."""
        return (self.shape_events + 1.0) / (self.shape_expected + 1.0)

    def duration_factor_many(self, pools: Sequence[str], now_t: float, horizon_h: float = 1.0) -> Any:
        """Per pool: the mean of r_b over its up-time (u, u + horizon_h] at `now_t` (u = 0 for a pool without
        capacity or never seen), the factor on its constant rate.

        >>> hz = Hazard()
        >>> for day in range(40):   # a pool loses capacity half an hour after regaining it, then holds it 22 h
        ...     t0 = day * 86_400.0
        ...     for dt, bad, up in ((0, 0, True), (1800, 1, False), (3600, 0, True), (82_800, 1, False)):
        ...         hz.observe_many(["a"], ["g"], [t0 + dt], [bad], available=[up])
        >>> hz.observe_many(["a"], ["g"], [40 * 86_400.0], [0], available=[True])
        >>> f = hz.duration_factor_many(["a"], 40 * 86_400.0 + 60, 1.0)   # "a": up for a minute
        >>> g = hz.duration_factor_many(["a"], 40 * 86_400.0 + 10 * 3600, 1.0)   # ... for ten hours
        >>> bool(f[0] > 2 > 0.5 > g[0])
        True
        """
        rows = np.array([self.pools.index.get(p, -1) for p in pools], dtype=np.int64)
        up0 = np.where(rows >= 0, self.pools.up_since[np.maximum(rows, 0)] if len(rows) else 0.0, np.nan)
        with np.errstate(invalid="ignore"):
            u = np.where(np.isfinite(up0), np.maximum(now_t - up0, 0.0) / 3600, 0.0)
        return (_bin_overlap(u, u + horizon_h) * self.duration_shape()).sum(axis=1) / horizon_h

    def rate(self, pool: str, group: str, band_probability: float | None = None) -> float:
        """Events per hour, shrunk (see the module docstring)."""
        band = [math.nan if band_probability is None else band_probability]
        return float(self.rate_many([pool], [group], band)[0])

    def _pending(self) -> Any:
        """Per pool row: the (decayed) hours of exposure since its last observation, to the latest one, of
        pools that held capacity then: tau * (1 - exp(-min(now - last, gap cap) / tau)). Counted in every rate,
        so that pools heard from rarely (quiet ones: no event, no exposure recorded) are not missing from
        the denominators between their observations."""
        n = len(self.pools.index)
        age = self.now_t - self.pools.last_t[:n]
        ok = self.pools.open[:n] & np.isfinite(age)
        with np.errstate(invalid="ignore", over="ignore"):
            span = np.minimum(np.where(ok, np.maximum(age, 0.0), 0.0), MAX_EXPOSURE_GAP_S) / 3600
        return np.where(ok, self.tau_h * -np.expm1(-span / self.tau_h), 0.0)

    def _global_rate(self, pending: Any = None) -> float:
        """lambda_global, from the counts decayed to the latest observation (and the pending exposure)."""
        f = float(_decay(self.now_t - self.all_t, self.tau_h))
        pend = float((self._pending() if pending is None else pending).sum())
        return (self.all_events * f + 1.0) / (self.all_hours * f + pend + 1.0 / GLOBAL_PRIOR_RATE)

    def _group_rate(self, groups: Sequence[str], pending: Any = None) -> Any:
        """lambda_group of each group (the global rate for a group never seen)."""
        pend = self._pending() if pending is None else pending
        lam_all = self._global_rate(pend)
        g_ev, g_h = self.groups.get(groups, self.now_t, self.tau_h)
        n = len(self.pools.index)
        g_pend = np.bincount(self.pools.grp[:n], pend, max(len(self.groups.index), 1))
        rows = np.array([self.groups.index.get(g, -1) for g in groups], dtype=np.int64)
        g_h = g_h + np.where(rows >= 0, g_pend[np.maximum(rows, 0)], 0.0)
        return (g_ev + self.a) / (g_h + self.a / lam_all)

    def rate_many(self, pools: Sequence[str], groups: Sequence[str], band_probability: Any = None) -> Any:
        """`rate` of many pools at once, as a numpy array (`band_probability`: NaN where a pool has none)."""
        k = self.k
        pend = self._pending()
        p_ev, p_h = self.pools.get(pools, self.now_t, self.tau_h)
        rows = np.array([self.pools.index.get(p, -1) for p in pools], dtype=np.int64)
        p_h = p_h + np.where(rows >= 0, pend[np.maximum(rows, 0)] if len(pend) else 0.0, 0.0)
        num_, den = p_ev + k * self._group_rate(groups, pend), p_h + k
        if band_probability is not None:
            band = np.asarray(band_probability, dtype=float)
            ok = (band > 0) & (band < 1)
            with np.errstate(invalid="ignore", divide="ignore"):
                lam_band = -np.log1p(-np.where(ok, band, 0.0))
            num_, den = num_ + np.where(ok, self.kb * lam_band, 0.0), den + np.where(ok, self.kb, 0.0)
        return num_ / den

    def group_probability_many(self, groups: Sequence[str], horizon_h: float = 1.0) -> Any:
        """P(event within `horizon_h`) of each group's own (recent, shrunk to the global) rate: the naive
        candidate, a recent base rate."""
        return 1.0 - np.exp(-self._group_rate(groups) * horizon_h)

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

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
to have been fine).

>>> hz, pool, group = Hazard(), "aws|us-east-1|a|p5|H100-80GB|8|spot", "aws|H100-80GB|spot"
>>> for t in range(0, 200 * 3600, 3600):   # one event every 10 h
...     hz.observe(pool, group, t, bad_events=1 if t % 36000 == 0 else 0)
>>> 0.05 < hz.probability(pool, group) < 0.15
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PRIOR_STRENGTH_H = 200.0     # pseudo-hours a pool's estimate borrows from its group (and a group from all)
MAX_EXPOSURE_GAP_S = 6 * 3600.0
GLOBAL_PRIOR_RATE = 0.01     # per hour, before anything is seen


@dataclass
class _Count:
    events: float = 0.0
    hours: float = 0.0


class Hazard:
    def __init__(self, strength_h: float = PRIOR_STRENGTH_H) -> None:
        self.k = strength_h
        self.pools: dict[str, _Count] = {}
        self.groups: dict[str, _Count] = {}
        self.all = _Count()
        self._last_t: dict[str, float] = {}

    def observe(self, pool: str, group: str, now_t: float, bad_events: int = 0) -> None:
        """The pool was seen at `now_t` with `bad_events` new bad events since its last observation."""
        p = self.pools.setdefault(pool, _Count())
        g = self.groups.setdefault(group, _Count())
        last = self._last_t.get(pool)
        hours = 0.0
        if last is not None and now_t > last:
            hours = min(now_t - last, MAX_EXPOSURE_GAP_S) / 3600
        if last is None or now_t > last:
            self._last_t[pool] = now_t
        for c in (p, g, self.all):
            c.hours += hours
            c.events += bad_events

    def rate(self, pool: str, group: str, band_probability: float | None = None) -> float:
        """Events per hour, shrunk (see the module docstring)."""
        lam_all = (self.all.events + 1.0) / (self.all.hours + 1.0 / GLOBAL_PRIOR_RATE)
        g = self.groups.get(group, _Count())
        lam_group = (g.events + self.k * lam_all) / (g.hours + self.k)
        prior = lam_group
        if band_probability is not None and 0 < band_probability < 1:
            prior = -math.log(1 - band_probability)
        p = self.pools.get(pool, _Count())
        return (p.events + self.k * prior) / (p.hours + self.k)

    def probability(self, pool: str, group: str, horizon_h: float = 1.0,
                    band_probability: float | None = None) -> float:
        return 1.0 - math.exp(-self.rate(pool, group, band_probability) * horizon_h)

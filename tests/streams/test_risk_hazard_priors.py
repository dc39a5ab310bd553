"""The interruption-risk priors and the hazard-logit candidate (issue 22): a group that never loses capacity is
forecast near zero even when other groups flap; events without exposure and a sticky band do not set rates;
a pool that has just come back after a burst of losses is forecast above a calm one; bad input stays finite."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from schemas import Market
from schemas.events import InterruptionKind, InterruptionObserved
from streams.core import state
from streams.core.hazard import Hazard
from streams.core.learners import D, Linear
from streams.core.risk import NF, RISK_CANDIDATES, RiskScores, risk_features
from tests.streams.helpers import T0, offer, preempted

FLAP, QUIET = "aws|H100-80GB|spot", "aws|K80|spot"
HL = RISK_CANDIDATES.index("hazard-logit")


def _flapping_world(hz: Hazard, hours: int, quiet: tuple[str, ...] = ()) -> None:
    """20 pools of group FLAP lose capacity every 5 h with it (and are back an hour later): ~20 %/h; the
    `quiet` pools (group QUIET) are seen once a day, with capacity and no loss."""
    for h in range(1, hours + 1):
        if quiet and h % 24 == 0:
            hz.observe_many(list(quiet), [QUIET] * len(quiet), [h * 3600.0] * len(quiet), [0] * len(quiet))
        t = h * 3600.0
        pools = [f"flap{i}" for i in range(20)]
        lost = h % 6 == 5
        back = h % 6 == 0
        hz.observe_many(pools, [FLAP] * 20, [t] * 20, [1 if lost else 0] * 20, [not back] * 20,
                        [not lost] * 20)


def test_a_group_without_losses_is_forecast_near_zero_while_others_flap() -> None:
    """Before: the group borrowed 48 h at the global rate (~0.2/h here: ~10 pseudo-events) and stayed at
    ~2 %/h after weeks without a loss; now half an event, so its rate falls as ~0.5 / its exposure."""
    hz = Hazard()
    _flapping_world(hz, 24 * 28, ("quiet0", "quiet1", "quiet2"))
    assert hz._global_rate() > 0.05
    assert hz.group_probability_many([QUIET])[0] < 0.005
    assert hz.probability_many(["quiet0"], [QUIET])[0] < 0.005


def test_pools_first_seen_without_capacity_are_not_losses() -> None:
    """50 pools whose first observation is a loss (a trace starting without capacity): no exposure before
    it, so not 50 events in no time (before: (50 + 1) / 100 h = 0.5 /h for every group)."""
    hz = Hazard()
    hz.observe_many([f"p{i}" for i in range(50)], ["g"] * 50, [0.0] * 50, [1] * 50, [True] * 50)
    hz.observe("x", "g2", 3600.0)
    assert hz._global_rate() < 0.02
    assert hz.probability("new", "g3") < 0.02


def test_pools_heard_from_rarely_count_their_hours_with_capacity() -> None:
    """20 quiet pools seen once, then three days of other pools' events: the quiet group's exposure is the
    time since (it had capacity), not nothing, so its rate is far below the global one."""
    hz = Hazard()
    hz.observe_many([f"q{i}" for i in range(20)], [QUIET] * 20, [0.0] * 20, [0] * 20)
    _flapping_world(hz, 72)
    lam_all = hz._global_rate()
    assert hz.group_probability_many([QUIET])[0] < 0.1 * lam_all


def test_a_band_is_a_prior_of_bounded_weight() -> None:
    """A pool with a band of 30 %/h that holds capacity for 400 h without a loss: its own hours win
    (before, the band was the whole prior at 48 h: ~10 %/h after the same 400 h)."""
    hz = Hazard()
    for h in range(401):
        hz.observe("p", "g", h * 3600.0)
    assert hz.probability("p", "g", band_probability=0.3) < 0.04
    assert hz.probability("p", "g", band_probability=0.3) > hz.probability("p", "g")   # it still counts


def test_the_band_prior_is_the_band_not_the_preemption_floor() -> None:
    o = offer(market=Market.SPOT)
    s, _ = state.apply_event({}, preempted(o))
    assert s["interruption_p"] >= state.INTERRUPTION_FLOOR and "band_p" not in s   # the engine's floor only
    t1 = T0 + timedelta(minutes=5)
    band = InterruptionObserved(event_id="i2", offer=o, kind=InterruptionKind.FREQUENCY, occurred_at=t1,
                                observed_at=t1, source="t", interruption_probability_per_hour=0.001)
    s, _ = state.apply_event(s, band)
    assert s["band_p"] == 0.001


def test_a_pool_back_after_a_burst_of_losses_is_forecast_above_a_calm_one() -> None:
    """Two pools of one group, the same pool hazard: one has just come back after three losses in 3 h and
    loses capacity again within 2 h, the other has been calm for a week and does not. The hazard-logit
    model starts as the pool hazard (equal forecasts) and learns the difference."""
    hz = Hazard()
    rs = RiskScores()
    rs.grow_groups(8)
    rs.grow_offers(2)
    model = Linear()
    model.grow(8)
    keys, groups = ["a", "b"], ["g", "g"]
    g, oi = np.zeros(2, dtype=np.int64), np.arange(2)
    z, valid = np.zeros((2, D)), np.zeros(2, dtype=bool)
    first = None
    for i in range(300):
        now = 1e6 + i * 7200.0
        hz.observe_many(keys, groups, [now, now], [i % 2, i % 2])   # (the same for both)
        states = [{"bad_t": [now - 10_800, now - 7200, now - 3600], "regained_t": now},
                  {"bad_t": [now - 8 * 86_400], "regained_t": now - 8 * 86_400}]
        cand = rs.candidates(hz, model, keys, groups, states, g, z, valid, 1.0)
        if first is None:
            first = cand
        rs.set_in_force(oi, cand, cand[:, 1], g)
        rs.score_in_force(oi, np.array([now, now]), np.array([now + 7200.0] * 2), np.array([True, True]),
                          np.array([1.0, 0.0]))
    assert first is not None and first[:, HL] == pytest.approx(first[:, 1])
    assert cand[0, 1] == pytest.approx(cand[1, 1])   # the pool hazard alone cannot tell them apart (one group prior)
    assert cand[0, HL] > 3 * cand[1, HL]
    assert cand[0, HL] > 0.3 and cand[1, HL] < 0.1


def test_bad_input_and_one_observation_groups_stay_finite() -> None:
    """NaN, strings and future times in the state, a group seen once, a NaN band: probabilities in (0, 1)."""
    hz = Hazard()
    hz.observe("p", "g", 0.0)
    hz.observe_many(["q"], ["h"], [math.nan], [math.nan])
    states: list[dict[str, Any]] = [{"bad_t": [math.nan, "x", 1e12], "regained_t": math.nan, "up_run_s": "y"}, {},
                                    {"bad_t": None}]
    x = risk_features(states, np.array([math.nan, 0.0, 1.0]), hz.now_t)
    assert x.shape == (3, NF) and np.isfinite(x).all()
    rs = RiskScores()
    rs.grow_groups(8)
    rs.grow_offers(3)
    model = Linear()
    model.grow(8)
    g = np.array([0, 1, 1], dtype=np.int64)
    cand = rs.candidates(hz, model, ["p", "q", "new"], ["g", "h", "h"], states, g, np.zeros((3, D)),
                         np.zeros(3, dtype=bool), 1.0)
    assert np.isfinite(cand).all() and (cand > 0).all() and (cand < 1).all()
    rs.set_in_force(np.arange(3), cand, cand[:, 0], g)
    rs.score_in_force(np.arange(3), np.array([0.0, math.nan, 0.0]), np.array([3600.0, 3600.0, math.nan]),
                      np.array([True, True, True]), np.array([1.0, math.nan, 0.0]))
    assert np.isfinite(rs.ws).all() and np.isfinite(rs.w).all()

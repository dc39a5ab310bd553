"""Interruption risk judged the way the engine uses it: held for hours, scored per hour with capacity.

A pool that keeps losing and regaining capacity is where a plan gets interrupted. Its hazard counts only the
time it had capacity, recent losses weigh more than last year's, and the candidates are scored over the hours
their forecast was in force, so a forecast of ~1 %/h for a pool that loses capacity every few hours loses."""

from __future__ import annotations

import math

import pytest

from schemas import Market
from streams.core import state
from streams.core.forecast import Forecaster
from streams.core.hazard import HALF_LIFE_H, Hazard
from tests.streams.helpers import capacity, offer, price

POOL, GROUP = "aws|us-east-1|a|p5|H100-80GB|8|spot", "aws|H100-80GB|spot"


def test_the_hazard_counts_only_the_hours_a_pool_had_capacity() -> None:
    """3 h with capacity, then 1 h without, a loss every cycle: 1 loss per 3 exposed hours, not per 4."""
    hz = Hazard(strength_h=1.0, half_life_h=1e9)
    t = 0.0
    hz.observe(POOL, GROUP, t)
    for _ in range(300):
        t += 3 * 3600
        hz.observe(POOL, GROUP, t, bad_events=1, exposed=True)    # lost after 3 h with capacity
        t += 3600
        hz.observe(POOL, GROUP, t, bad_events=0, exposed=False)   # back after 1 h without
    assert hz.rate(POOL, GROUP) == pytest.approx(1 / 3, rel=0.02)


def test_recent_losses_outweigh_a_quiet_past() -> None:
    """A year without a loss, then a week losing capacity every 4 h: the rate is the week's, not the year's."""
    hz = Hazard()
    t = 0.0
    hz.observe(POOL, GROUP, t)
    for _ in range(365):
        t += 86_400
        hz.observe(POOL, GROUP, t)
    for _ in range(42):
        t += 4 * 3600
        hz.observe(POOL, GROUP, t, bad_events=1)
    assert hz.rate(POOL, GROUP) > 0.15                          # ~0.25/h recently; all-time would be ~0.005
    assert HALF_LIFE_H <= 7 * 24


def test_the_risk_in_force_is_scored_over_the_hours_it_held() -> None:
    """One prediction in force for 10 h with capacity, then a loss: 10 trials, 1 positive, the published
    probability's log-loss over them (not one sample)."""
    f = Forecaster(horizons_s=(3600,))
    o = offer(market=Market.SPOT)
    s, _ = state.apply_event({}, price(o, 2.0))
    f.observe(o.key, s, state.event_t(price(o, 2.0)))
    f.flush()
    p = f.latest[o.key].interruption_probability_next_hour
    e = capacity(o, False, minutes=600)
    s, _ = state.apply_event(s, e)
    f.observe(o.key, s, state.event_t(e))
    f.flush()   # (observe() queues the scoring of the risk in force; the flush applies it)
    g = f.groups["gcp|L4|spot"]
    assert f._rs.rn[g] == pytest.approx(10.0) and f._rs.base[g] == 1.0
    q = min(max(p, 1e-6), 1 - 1e-6)
    assert f._rs.llpub[g] == pytest.approx(-math.log(q) - 9 * math.log1p(-q))


def test_hours_without_capacity_are_not_scored() -> None:
    f = Forecaster(horizons_s=(3600,))
    o = offer(market=Market.SPOT)
    s, _ = state.apply_event({}, price(o, 2.0))
    s, _ = state.apply_event(s, capacity(o, False, minutes=1))
    f.observe(o.key, s, state.event_t(price(o, 2.0)) + 60)
    f.flush()
    e = capacity(o, True, minutes=600)               # 10 h later: back, nothing could be lost meanwhile
    s, _ = state.apply_event(s, e)
    f.observe(o.key, s, state.event_t(e))
    f.flush()
    assert f._rs.rn[f.groups["gcp|L4|spot"]] == 0.0


def test_a_flapping_pool_is_forecast_near_its_rate_and_the_group_base_rate_loses() -> None:
    """Two pools of one group, events every 30 min: one loses capacity for an hour after every ~4 h with it,
    the other never. Scored in time, the pool hazard wins and the flapping pool is forecast near its 22 %/h."""
    f = Forecaster(horizons_s=(3600,))
    flaky, calm = offer(market=Market.SPOT, region="flaky"), offer(market=Market.SPOT, region="calm")
    states: dict[str, dict] = {flaky.key: {}, calm.key: {}}
    up = True
    for i in range(3000):
        minute = i * 30
        for o in (flaky, calm):
            e = price(o, 1.0, minutes=minute, eid=f"{o.region}{i}")
            states[o.key], _ = state.apply_event(states[o.key], e)
            t = state.event_t(e)
            if o is flaky and i % 10 in (8, 0):   # lost at 4 h, back 1 h later
                up = i % 10 == 0
                c = capacity(o, up, minutes=minute)
                states[o.key], _ = state.apply_event(states[o.key], c)
            f.observe(o.key, states[o.key], t)
    f.flush()
    assert f.champions()["gcp|L4|spot"]["risk_1h"] in ("eb-hazard", "hazard-logit")   # a pool-level one
    p_flaky = f.latest[flaky.key].interruption_probability_next_hour
    assert 0.12 < p_flaky < 0.35
    assert p_flaky > 5 * f.latest[calm.key].interruption_probability_next_hour   # (calm: shrunk to the group)

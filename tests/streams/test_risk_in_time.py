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


def test_a_flapping_pool_is_forecast_by_its_cycle_and_the_group_base_rate_loses() -> None:
    """Two pools of one group, events every 30 min: one loses capacity for an hour after every 4 h with it, the
    other never. Scored in time, a pool-level candidate wins, and it has learnt the cycle: the flapping pool's
    risk is high in the hours before its loss (the loss comes at 4 h of up-time) and low just after it is back
    (its rate, 22 %/h, is the mean of the two); the calm pool's is low."""
    f = Forecaster(horizons_s=(3600,))
    flaky, calm = offer(market=Market.SPOT, region="flaky"), offer(market=Market.SPOT, region="calm")
    states: dict[str, dict] = {flaky.key: {}, calm.key: {}}
    risk_by_up_h: dict[float, list[float]] = {}
    for i in range(3000):
        minute = i * 30
        for o in (flaky, calm):
            e = price(o, 1.0, minutes=minute, eid=f"{o.region}{i}")
            states[o.key], _ = state.apply_event(states[o.key], e)
            t = state.event_t(e)
            if o is flaky and i % 10 in (8, 0):   # lost at 4 h, back 1 h later
                c = capacity(o, i % 10 == 0, minutes=minute)
                states[o.key], _ = state.apply_event(states[o.key], c)
            fc = f.observe(o.key, states[o.key], t)
            if o is flaky and i >= 2000 and fc is not None:   # the risk in force, by hours since it came back
                risk_by_up_h.setdefault(i % 10 / 2, []).append(fc.interruption_probability_next_hour)
    f.flush()
    champion = f.champions()["gcp|L4|spot"]["risk_1h"]
    assert champion in ("eb-hazard", "hazard-logit", "duration-hazard")   # a pool-level one
    scores = f._rs.scores(f.groups["gcp|L4|spot"])
    assert scores[champion][0] < 0.8 * scores["base-rate"][0]
    mean = {u: sum(v) / len(v) for u, v in risk_by_up_h.items()}
    before_loss, just_back = (mean[2.5] + mean[3.0] + mean[3.5]) / 3, (mean[0.0] + mean[0.5]) / 2
    assert before_loss > 0.25 and before_loss > 10 * just_back, mean
    assert f.latest[calm.key].interruption_probability_next_hour < before_loss / 5   # (calm: shrunk to the group)

"""The pool hazard shaped by up-time (issue 22): a pool that has just regained capacity is likelier to lose it
again within the hour than one that has held it for days. The shape is learnt against each pool's own rate
(pools that flap are not mistaken for a duration effect), a pool's up-time starts when it regains capacity
and not at a price quote while it has none, and the "duration-hazard" candidate wins where losses cluster
after a regain."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import pytest

from schemas import Market
from streams.core import state
from streams.core.forecast import Forecaster
from streams.core.hazard import DURATION_EDGES_H, Hazard
from streams.core.risk import RISK_CANDIDATES
from tests.streams.helpers import capacity, offer, price


def _replay(hz: Hazard, hazards_per_h: Mapping[str, Callable[[float], float]], hours: int, seed: int = 7) -> None:
    """Pools observed every hour; pool p with capacity up for u hours loses it within the hour with probability
    `hazards_per_h[p](u)`, and is back an hour later. A pool's group is its name without the trailing digits."""
    rng = np.random.default_rng(seed)
    up: dict[str, float | None] = {p: 0.0 for p in hazards_per_h}
    for h in range(1, hours + 1):
        t = h * 3600.0
        pools: list[str] = []
        bad: list[int] = []
        exposed: list[bool] = []
        avail: list[bool] = []
        for p, fn in hazards_per_h.items():
            u = up[p]
            pools.append(p)
            if u is None:             # down for the last hour: back now
                lost, had = False, False
                up[p] = 0.0
            else:
                lost, had = bool(rng.random() < fn(u)), True
                up[p] = None if lost else u + 1
            bad.append(int(lost))
            exposed.append(had)
            avail.append(not lost)
        hz.observe_many(pools, [p.rstrip("0123456789") for p in pools], [t] * len(pools), bad, exposed, avail)


def test_pools_of_different_but_constant_rates_show_no_duration_effect() -> None:
    """Half the pools flap (30 %/h), half are steady (2 %/h), each memoryless (and each kind its own group, so
    that its pool hazard is not biased by shrinkage toward the other's): short up-times are mostly the
    flapping pools', long ones the steady pools', yet the shape stays near 1 in every bin with data, because
    each loss is set against its own pool's rate (a raw rate per bin would read ~10x from first to last).
    (Past 64 h the shape reads above 1 here: a pool's recent count, after days without a loss, reads below
    its rate, and the shape is relative to the pool hazard's own predictions, so it corrects that too.)"""
    hz = Hazard()
    pools = {f"flap{i}": (lambda u: 0.3) for i in range(10)} | {f"steady{i}": (lambda u: 0.02) for i in range(10)}
    _replay(hz, pools, 3000)
    r = hz.duration_shape()
    busy = hz.shape_expected > 40
    assert busy[:7].all()
    assert np.all((r[busy] > 0.75) & (r[busy] < 1.33)), r.round(2)


def test_losses_that_follow_a_regain_are_learnt_as_a_duration_shape() -> None:
    """Every pool loses capacity at 40 %/h during its first 2 h back and at 1 %/h after: the first bins read
    well above 1, the long ones below, and the factor on a pool's rate follows its own up-time."""
    hz = Hazard()
    _replay(hz, {f"p{i}": (lambda u: 0.4 if u < 2 else 0.01) for i in range(20)}, 3000)
    r = hz.duration_shape()
    assert r[0] > 2 and r[1] > 2
    assert r[4] < 0.5 and r[5] < 0.5   # 8-16 h, 16-32 h
    assert len(r) == len(DURATION_EDGES_H) + 1
    t = 3001 * 3600.0
    hz.observe_many(["fresh", "old"], ["p", "p"], [t - 10 * 3600, t - 10 * 3600], [0, 0], [False, False],
                    [True, True])   # both first seen with capacity 10 h ago
    hz.observe_many(["fresh"], ["p"], [t - 1800], [1], [True], [False])
    hz.observe_many(["fresh"], ["p"], [t - 600], [0], [False], [True])   # back 10 minutes ago
    fresh, old = hz.duration_factor_many(["fresh", "old"], t, 1.0)
    assert fresh > 2 > 0.5 > old
    assert hz.duration_factor_many(["never seen"], t, 1.0)[0] == pytest.approx(hz.duration_shape()[0])


def test_a_price_quote_while_a_pool_has_no_capacity_does_not_start_its_up_time() -> None:
    o = offer(market=Market.SPOT)
    f = Forecaster(horizons_s=(3600,))
    up_since = []
    s: state.State = {}
    for e in (price(o, 2.0), capacity(o, False, minutes=60), price(o, 2.1, minutes=120),
              capacity(o, True, minutes=300)):
        s, _ = state.apply_event(s, e)
        f.observe_many([(o.key, s, state.event_t(e))])
        up_since.append(float(f.hazard.pools.up_since[f.hazard.pools.index[o.key]]))
    t0, back = state.event_t(price(o, 2.0)), state.event_t(capacity(o, True, minutes=300))
    assert up_since[0] == t0 and math.isnan(up_since[1]) and math.isnan(up_since[2]) and up_since[3] == back


def test_the_duration_candidate_wins_where_losses_follow_regains() -> None:
    """Through the forecaster, scored in time: pools that lose capacity within 2 h of most regains and hold it
    for ~a day otherwise; the duration-shaped hazard's running log-loss beats the constant one's."""
    rng = np.random.default_rng(3)
    f = Forecaster(horizons_s=(3600,))
    offers = [offer(region=f"r{i}", market=Market.SPOT) for i in range(8)]
    states: dict[str, state.State] = {}
    for o in offers:
        states[o.key], _ = state.apply_event({}, price(o, 2.0))
        f.observe_many([(o.key, states[o.key], state.event_t(price(o, 2.0)))])
    up = {o.key: 0 for o in offers}
    for h in range(1, 24 * 120):
        updates = []
        for o in offers:
            u = up[o.key]
            if u < 0:
                e = capacity(o, True, minutes=60 * h)
                up[o.key] = 0
            elif rng.random() < (0.35 if u < 2 else 0.03):
                e = capacity(o, False, minutes=60 * h)
                up[o.key] = -1
            else:
                up[o.key] = u + 1
                continue
            states[o.key], _ = state.apply_event(states[o.key], e)
            updates.append((o.key, states[o.key], state.event_t(e)))
        f.observe_many(updates)
        f.refresh(state.event_t(price(offers[0], 1.0, minutes=60 * h)))
    scores = f._rs.scores(f.group_names.index(f._by_offer[offers[0].key][0]))
    assert scores["duration-hazard"][0] < 0.97 * scores["eb-hazard"][0], scores
    assert "duration-hazard" in RISK_CANDIDATES


def test_the_last_outage_length_is_a_feature_of_the_recalibration() -> None:
    """How long a pool was without capacity before it came back (hazard-logit's `last_down_run`): 3 h here; 0
    for a pool never lost or not back since its loss."""
    from streams.core.risk import RISK_FEATURES, risk_features

    now = 10 * 3600.0
    back = {"bad_t": [now - 5 * 3600], "regained_t": now - 2 * 3600}
    still_out = {"bad_t": [now - 5 * 3600], "regained_t": now - 20 * 3600}
    x = risk_features([back, still_out, {}], np.full(3, 0.1), now)
    j = RISK_FEATURES.index("last_down_run")
    assert x[0, j] == pytest.approx(math.log1p(3) / math.log1p(168))
    assert x[1, j] == 0.0 and x[2, j] == 0.0


def test_the_share_of_the_last_day_without_capacity_is_a_feature_of_the_recalibration() -> None:
    """The state keeps its offer's availability flips; hazard-logit's `down_24h` is the share of the last 24 h
    without capacity: an outage of 6 h and the hour since capacity was lost again (7 / 24); the 2 h outage
    two days earlier is outside it. A pool never lost: 0."""
    from streams.core.risk import RISK_FEATURES, risk_features

    o = offer(market=Market.SPOT)
    s: dict = {}
    reports = ((0, True), (60, False), (180, True), (48 * 60, False), (54 * 60, True), (60 * 60, False))
    for minutes, available in reports:
        s, _ = state.apply_event(s, capacity(o, available, minutes=minutes))
    assert [a for _, a in s["flips"]] == [0, 1, 0, 1, 0]   # (the first report, available, is not a flip)
    now = float(s["flips"][-1][0]) + 3600.0                # 61 h: the last day is 37 h .. 61 h
    x = risk_features([s, {}], np.full(2, 0.1), now)
    j = RISK_FEATURES.index("down_24h")
    assert x[0, j] == pytest.approx(7 / 24, abs=1e-6) and x[1, j] == 0.0

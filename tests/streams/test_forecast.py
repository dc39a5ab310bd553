from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import Market
from schemas.events import PriceForecasted
from streams.core import state
from streams.core.forecast import BUCKET_S, MIN_SCORED, Forecaster, features
from streams.core.forecast_events import Forecast, forecast_events, forecast_records
from streams.core.learners import FEATURES, feature_matrix
from streams.core.windows import WINDOWS_S, price_at, push, window_features, window_features_many, window_stats
from tests.streams.helpers import capacity, offer, price

OFF = offer(market=Market.SPOT)


def test_windows_keep_seven_days_and_compute_stats() -> None:
    h: list[list[float]] = []
    for i in range(0, 10 * 86_400, 3600):
        h = push(h, i, 1.0 + (i // 3600) % 3)
    assert h[0][0] < h[-1][0] - 7 * 86_400 <= h[1][0]  # one point before the 7 d window is kept
    s = window_stats(h, now_t=h[-1][0], window_s=3 * 3600)
    assert s["min"] == 1.0 and s["max"] == 3.0 and s["volatility"] > 0
    assert price_at(h, h[-1][0] + 10) == h[-1][1]
    assert price_at([[10.0, 2.0]], 5.0) is None


def test_forecaster_learns_online_and_scores_against_naive() -> None:
    f = Forecaster(horizons_s=(3600,))
    s: dict = {}
    # a slow upward drift: the model should learn to beat "last value"
    for i in range(3000):
        ev = price(OFF, 1.0 * math.exp(0.0005 * i), minutes=i * 10)
        s, _ = state.apply_event(s, ev)
        f.observe(OFF.key, s, state.event_t(ev))
    f.flush()
    summ = f.summary()["3600s"]
    assert f.made > 100 and summ["n"] > 100
    assert summ["mae_model"] < summ["mae_naive"]
    fc = f.latest[OFF.key]
    assert fc.model_used[3600] and fc.usd_per_hour[3600] > s["usd_per_hour"]
    # events are built without re-validation: they must still be exactly what the schema accepts
    for e in forecast_events(OFF, fc, None):
        assert PriceForecasted.model_validate_json(e.model_dump_json()) == e


def test_forecast_falls_back_to_naive_until_the_model_is_better() -> None:
    f = Forecaster(horizons_s=(3600,))
    s, _ = state.apply_event({}, price(OFF, 2.0))
    assert f.observe(OFF.key, s, 0.0) is None          # nothing in force yet: the flush predicts
    [fc] = f.flush()
    assert f.latest[OFF.key] is fc and not fc.model_used[3600] and fc.usd_per_hour[3600] == 2.0
    assert fc.n_scored[3600] < MIN_SCORED
    ev = forecast_events(OFF, fc, None)
    assert ev[0].horizon_s == 3600 and "naive" in ev[0].model and ev[0].offer == OFF


def test_risk_model_sees_capacity_losses() -> None:
    f = Forecaster(horizons_s=(3600,))
    s: dict = {}
    for i in range(400):
        s, _ = state.apply_event(s, price(OFF, 1.0 + (i % 2) * 0.1, minutes=i * 30))
        if i % 4 == 0:
            s, _ = state.apply_event(s, capacity(OFF, i % 8 == 0, minutes=i * 30 + 1))
        f.observe(OFF.key, s, state.event_t(price(OFF, 1.0, minutes=i * 30)))
    f.flush()
    r = f.summary()["risk_1h"]
    assert r["n"] > 50 and 0 < f.group_scores("gcp|L4|spot")["risk_1h"]["base_rate"] < 1 and "brier_model" in r
    assert set(features(OFF.key, s, 0.0)) >= {"ret_1h", "vol_24h", "bad_24h", "spot"}


def test_rare_large_moves_of_a_quiet_price_do_not_make_the_model_diverge() -> None:
    """A price that almost never moves has return features of tiny variance; a large move is then
    thousands of standard deviations and, unclipped, one SGD step overshoots and the weights run away
    (seen on the 2022-2025 GCP history: weights ~1e10, MAE 20,000x the naive one; here ~1e13)."""
    f = Forecaster(horizons_s=(3600,))
    offers = [offer(market=Market.SPOT, region=f"r{i}") for i in range(3)]
    states: dict[str, dict] = {o.key: {} for o in offers}
    usd = {o.key: 2.0 for o in offers}
    for i in range(6000):
        o = offers[i % 3]
        if i == 30:
            usd[o.key] = 2.0001  # one tiny move: the return features get a tiny, non-zero variance
        if i in (4000, 4600, 5200):
            usd[o.key] = round(usd[o.key] * 1.5, 4)  # then rare large moves
        e = price(o, usd[o.key], minutes=i * 2, eid=f"q{i}")
        states[o.key], _ = state.apply_event(states[o.key], e)
        f.observe(o.key, states[o.key], state.event_t(e))
    f.flush()
    weights = [abs(w) for w in f.weights(next(iter(f.groups)))["price_3600s"]]
    assert all(math.isfinite(w) for w in weights) and max(weights) < 1.0, max(weights)
    s = f.summary()["3600s"]
    # (n weighs each forecast by its time in force / h: here one every 6 min of an offer, a tenth each)
    assert s["n"] > 500 and s["mae_model"] < 5 * s["mae_naive"], s


@given(st.lists(st.tuples(st.floats(1.0, 86_400.0 * 30), st.floats(0.01, 500.0)), min_size=1, max_size=80),
       st.floats(0.0, 86_400.0 * 40))
def test_window_features_match_the_window_stats(points: list[tuple[float, float]], now_t: float) -> None:
    h: list[list[float]] = []
    for t, p in sorted(points):
        h = push(h, t, p)
    for name, (ret, vol, lo, hi) in window_features(h, now_t).items():
        s = window_stats(h, now_t, WINDOWS_S[name])
        assert (ret, vol, lo, hi) == pytest.approx((s["log_return"], s["volatility"], s["min"], s["max"]), rel=1e-12)


@given(st.floats(0.01, 1e4), st.floats(-5, 5), st.floats(0, 1), st.floats(0, 1e3) | st.none(), st.integers(0, 10**6),
       st.floats(0, 4.2e9) | st.sampled_from([1_700_000_000.25, 1_700_000_059.9999995, 0.0000005]))
def test_forecast_records_are_the_events_json(p0: float, move: float, risk: float, mae: float | None, n: int,
                                              made_t: float) -> None:
    """The hand-built JSON is byte for byte what pydantic writes for the same events (the time formatted
    by arithmetic up to 2100, by datetime after; microseconds rounded half to even, into the next minute)."""
    f = Forecast(offer_key=OFF.key, made_t=made_t, usd_per_hour={3600: p0, 86_400: p0 * math.exp(move)},
                 interruption_probability_next_hour=risk, model_used={3600: True, 86_400: False},
                 risk_model_used=False, mae_model={3600: mae, 86_400: None}, mae_naive={3600: mae, 86_400: 0.5},
                 n_scored={3600: n, 86_400: 0}, risk_logloss_model=None, risk_logloss_naive=None)
    assert forecast_records(OFF.model_dump_json(), f) == [e.model_dump_json().encode()
                                                          for e in forecast_events(OFF, f, None)]


def test_the_engine_plans_on_the_current_price_between_forecasts() -> None:
    """A forecast is due at most every 5 min of event time; a quote that changes in between moves the
    planning price with it (the naive forecast is then the current price, not the price 4 min ago)."""
    f = Forecaster(horizons_s=(3600,))
    s = {"usd_per_hour": 2.0, "price_t": 0.0, "ewma": 2.0, "hist": [[0.0, 2.0]]}
    f.observe(OFF.key, s, now_t=0.0)
    [fc] = f.flush()
    assert not fc.model_used[3600]
    newer = {**s, "usd_per_hour": 2.4, "price_t": 60.0, "hist": [[0.0, 2.0], [60.0, 2.4]]}
    assert f.observe(OFF.key, newer, now_t=60.0) is fc and f.flush() == []   # not due: the one from t=0 holds
    assert state.engine_view(newer, f.latest[OFF.key])["forecast_usd_per_hour"] == pytest.approx(2.4)
    moved = dataclasses.replace(fc, usd_per_hour={3600: 2.2})    # the model's +10 % from the t=0 price
    assert state.engine_view(newer, moved)["forecast_usd_per_hour"] == pytest.approx(2.4 * 1.1)


def test_a_price_that_never_moves_forecasts_itself_exactly_while_its_group_moves() -> None:
    f = Forecaster(horizons_s=(3600,))
    still, moving = offer(market=Market.SPOT, region="still"), offer(market=Market.SPOT, region="moving")
    s_still: dict = {}
    s_mov: dict = {}
    for i in range(2000):
        e = price(moving, 1.0 * math.exp(0.0005 * i), minutes=i * 10)
        s_mov, _ = state.apply_event(s_mov, e)
        f.observe(moving.key, s_mov, state.event_t(e))
        e2 = price(still, 3.0, minutes=i * 10, eid=f"s{i}")
        s_still, _ = state.apply_event(s_still, e2)
        f.observe(still.key, s_still, state.event_t(e2))
    f.flush()
    assert f.latest[moving.key].model_used[3600]            # the group's model is published where it helps
    fc = f.latest[still.key]
    assert fc.usd_per_hour[3600] == fc.p10_usd_per_hour[3600] == fc.p90_usd_per_hour[3600] == 3.0
    assert fc.model[3600] == "naive"


def test_the_published_forecast_is_not_worse_than_naive_on_a_random_walk() -> None:
    """No signal to learn: every shrink candidate loses to naive, so naive is what gets published."""
    import random

    rng = random.Random(3)
    f = Forecaster(horizons_s=(3600, 86_400))
    s: dict = {}
    p = 2.0
    for i in range(6000):
        p *= math.exp(rng.gauss(0, 0.01))
        e = price(OFF, p, minutes=i * 10)
        s, _ = state.apply_event(s, e)
        f.observe(OFF.key, s, state.event_t(e))
    for h in ("3600s", "86400s"):
        summ = f.summary()[h]
        assert summ["mae_model"] <= summ["mae_naive"] * 1.02, (h, summ)


def test_bad_input_is_skipped_counted_and_falls_back_to_naive() -> None:
    f = Forecaster(horizons_s=(3600,))
    good = {"usd_per_hour": 2.0, "price_t": 0.0, "ewma": 2.0, "hist": [[0.0, 2.0], [10.0, 2.1]]}
    f.observe(OFF.key, {**good, "ewma": float("nan")}, now_t=100.0)       # a NaN feature
    [fc] = f.flush()
    assert fc.model[3600] == "naive" and fc.usd_per_hour[3600] == 2.0
    f.observe(OFF.key, {**good, "usd_per_hour": 0.0}, now_t=9000.0)       # a price of 0
    assert f.flush() == [] and f.latest[OFF.key] is fc                    # (the forecast in force stays)
    assert f.observe(OFF.key, good, now_t=50.0) is None                   # the clock went back
    f.observe(offer(region="lonely").key, good, now_t=200.0)              # one observation
    [fc] = f.flush()
    assert fc.model[3600] == "naive"
    # the same through the market stage's batch call, with a time that is not a number and a price that is not
    assert f.observe_many([(offer(region="a").key, {**good, "usd_per_hour": "x"}, 9000.0),
                           (offer(region="b").key, good, float("nan")),
                           (offer(region="c").key, {**good, "hist": [[0.0, "y"]]}, 9000.0)])[0].model[3600] == "naive"
    assert f.skipped == {"feature": 2, "price": 2, "clock": 2}


def test_the_pool_hazard_beats_the_base_rate_where_pools_differ() -> None:
    """Two spot pools of one group: one loses capacity every ~5 h, the other never. The group's base rate
    is wrong for both; the shrunk per-pool hazard is published once it scores better."""
    import random

    rng = random.Random(9)
    f = Forecaster(horizons_s=(3600,))
    risky, calm = offer(market=Market.SPOT, region="risky"), offer(market=Market.SPOT, region="calm")
    states: dict[str, dict] = {risky.key: {}, calm.key: {}}
    for i in range(4000):
        minute = i * 15
        for o in (risky, calm):
            e = price(o, 1.0, minutes=minute, eid=f"{o.region}{i}")
            states[o.key], _ = state.apply_event(states[o.key], e)
            if o is risky and rng.random() < 0.05:   # capacity lost, back a minute later
                states[o.key], _ = state.apply_event(states[o.key], capacity(o, False, minutes=minute))
                states[o.key], _ = state.apply_event(states[o.key], capacity(o, True, minutes=minute + 1))
            f.observe(o.key, states[o.key], state.event_t(e))
    f.flush()
    r = f.summary()["risk_1h"]
    assert f.champions()["gcp|L4|spot"]["risk_1h"] != "base-rate"
    assert r["logloss_model"] < 0.9 * r["logloss_naive"], r
    p_risky = f.latest[risky.key].interruption_probability_next_hour
    assert p_risky > 5 * f.latest[calm.key].interruption_probability_next_hour


def test_a_challenger_that_wins_is_promoted_once_with_both_scores() -> None:
    f = Forecaster(horizons_s=(3600,))
    s: dict = {}
    for i in range(3000):
        ev = price(OFF, 1.0 * math.exp(0.0005 * i), minutes=i * 10)
        s, _ = state.apply_event(s, ev)
        f.observe(OFF.key, s, state.event_t(ev))
    promos = [p for p in f.drain_promotions() if p.target == "price_3600s"]
    assert promos and promos[0].previous == "naive" and promos[0].metric == "mae"
    last = promos[-1]
    assert last.champion == f.champions()["gcp|L4|spot"]["3600s"] != "naive"
    assert last.score_champion < last.score_previous and last.n_scored >= 30
    assert f.drain_promotions() == []


@given(st.lists(st.lists(st.tuples(st.integers(0, 86_400 * 30), st.floats(0.01, 500.0)), max_size=40),
                min_size=1, max_size=20),
       st.lists(st.floats(0.0, 86_400.0 * 40), min_size=20, max_size=20))
def test_window_features_of_many_histories_match_one_at_a_time(points: list[list[tuple[int, float]]],
                                                              nows: list[float]) -> None:
    hists: list[list[list[float]]] = []
    for pts in points:
        h: list[list[float]] = []
        for t, p in sorted(pts):
            h = push(h, t, p)
        hists.append(h)
    many, still = window_features_many(hists, nows[:len(hists)])
    for i, (h, now_t) in enumerate(zip(hists, nows, strict=False)):
        assert bool(still[i]) == (len({p for _, p in h}) <= 1)
        for name, one in window_features(h, now_t).items():
            got = tuple(float(a[i]) for a in many[name])
            assert got == pytest.approx(one, rel=1e-9, abs=1e-12, nan_ok=True)


def test_the_feature_matrix_is_features_row_by_row() -> None:
    """The batch path computes exactly `features()` (the definition) for every offer."""
    import random

    import numpy as np

    rng = random.Random(5)
    keys, states, ts = [], [], []
    for i in range(40):
        o = offer(market=Market.SPOT if i % 2 else Market.ON_DEMAND, region=f"r{i}")
        s: dict = {}
        for j in range(rng.randint(1, 30)):
            s, _ = state.apply_event(s, price(o, round(rng.uniform(1, 3), 3), minutes=j * rng.choice([7, 90, 600])))
            if rng.random() < 0.1:
                s, _ = state.apply_event(s, capacity(o, rng.random() < 0.5, minutes=j * 60 + 1))
        keys.append(o.key)
        states.append(s)
        ts.append(s["price_t"] + rng.choice([0.0, 30.0, 5000.0]))
    X, _ = feature_matrix(keys, states, np.array(ts), np.array([s["usd_per_hour"] for s in states]))
    for i, (k, s, t) in enumerate(zip(keys, states, ts, strict=True)):
        one = features(k, s, t)
        assert list(X[i]) == pytest.approx([one[c] for c in FEATURES], rel=1e-9, abs=1e-12)


def test_observe_flushes_by_itself_as_event_time_passes_and_the_batch_call_is_the_same() -> None:
    """Per event (the back-tester) the forecaster predicts once the event time is BUCKET_S past the oldest
    offer waiting; per batch (the market stage) at the end of the batch. Same forecasts either way."""
    one, batch = Forecaster(horizons_s=(3600,)), Forecaster(horizons_s=(3600,))
    offers = [offer(region=f"r{i}") for i in range(3)]
    states: dict[str, dict] = {o.key: {} for o in offers}
    made_by_one: list[Forecast] = []
    for step in range(20):
        updates = []
        for o in offers:
            e = price(o, 1.0 + 0.01 * ((step * 7 + len(o.region)) % 5), minutes=step * 10)
            states[o.key], _ = state.apply_event(states[o.key], e)
            updates.append((o.key, states[o.key], state.event_t(e)))
        for u in updates:
            one.observe(*u)
        made_by_one += one.flush()
        assert len(batch.observe_many(updates)) == 3
    assert len(made_by_one) == 60 and one.summary() == batch.summary()
    assert {k: f.usd_per_hour for k, f in one.latest.items()} == {k: f.usd_per_hour for k, f in batch.latest.items()}
    lazy = Forecaster(horizons_s=(3600,))
    lazy.observe(offers[0].key, states[offers[0].key], 0.0)
    assert lazy.observe(offers[1].key, states[offers[1].key], BUCKET_S - 1) is None and not lazy.latest
    lazy.observe(offers[1].key, states[offers[1].key], BUCKET_S)     # the bucket has passed: those waiting
    assert set(lazy.latest) == {offers[0].key, offers[1].key} and len(lazy.flush()) == 2   # are predicted

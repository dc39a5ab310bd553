"""The price candidate families (streams.core.price_models) and how the forecaster scores them in force."""

from __future__ import annotations

import bisect
import itertools
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from schemas import Market
from streams.core import state
from streams.core.forecast import Forecaster
from streams.core.price_models import CANDIDATES, PriceScores, candidate_moves, history_terms
from tests.streams.helpers import offer, price

OFF = offer(market=Market.SPOT)


def test_every_published_model_names_a_real_candidate() -> None:
    """The `model` field of forecasts, the promotions and `champions()` name candidates of CANDIDATES (no
    River-era names, no made-up ones)."""
    f = Forecaster(horizons_s=(3600, 86_400))
    s: dict = {}
    names: set[str] = set()
    for i in range(4000):
        e = price(OFF, 1.0 * math.exp(0.0005 * i), minutes=i * 10)
        s, _ = state.apply_event(s, e)
        f.observe(OFF.key, s, state.event_t(e))
        names |= {n for fc in f.flush() for n in fc.model.values()}
    promos = f.drain_promotions()
    promos = [p for p in promos if p.target.startswith("price_")]
    assert promos and {p.champion for p in promos} | {p.previous for p in promos} <= set(CANDIDATES)
    assert names <= set(CANDIDATES) and names - {"naive"}, names   # a drift: some model is published
    assert set(f.champions()["gcp|L4|spot"].values()) - {f.champions()["gcp|L4|spot"]["risk_1h"]} <= set(CANDIDATES)


def test_a_forecast_left_in_force_is_scored_for_as_long_as_it_stays() -> None:
    """A day of moves every 6 minutes, then a month of silence: the forecast made at the last move steers the
    engine all month, so it is scored at ages h, 2h, 4h, ... with weights for the ages each stands for (about
    720 hours in all), not once. (The day's moves keep the offer from being quiet: its 1 h forecasts move.)"""
    f = Forecaster(horizons_s=(3600,))
    s: dict = {}
    for i in range(240):
        e = price(OFF, 2.0 + 0.4 * (i % 2), minutes=6.0 * i, eid=f"e{i}")
        s, _ = state.apply_event(s, e)
        f.observe(OFF.key, s, state.event_t(e))
        f.flush()
    ps, gg = f._ps, f.groups["gcp|L4|spot"]
    n0, cnt0 = float(ps.n[0, gg]), float(ps.cnt[0, gg])
    e = price(OFF, 2.4, minutes=30 * 24 * 60, eid="late")
    s, _ = state.apply_event(s, e)
    f.observe(OFF.key, s, state.event_t(e))
    f.flush()
    # the last forecast was in force ~720 h: sampled at 1, 2, 4, ..., 512 h (then 1024 h: past); the other
    # forecasts of its last hour, replaced within minutes, are scored once each with their minutes' weight
    n, cnt = ps.n[0, gg] - n0, ps.cnt[0, gg] - cnt0
    assert 600 < n < 1100 and 10 <= cnt <= 30, (n, cnt)


def test_a_model_that_wins_fresh_but_loses_in_force_is_not_published() -> None:
    """Each offer jumps, then either falls back within the hour (most often) or stays for a week without a
    quote. Scored once per forecast, a candidate predicting the fall back wins; as the engine uses it
    (the forecast of the jump stays in force for the week of the jumps that stay) it loses to naive. The
    forecaster scores as used, so the forecast in force is not worse than naive."""
    rng = random.Random(1)
    f = Forecaster(horizons_s=(3600,))
    offers = [offer(market=Market.SPOT, region=f"r{i}") for i in range(8)]
    events: list[tuple[float, int, float]] = []
    for i in range(len(offers)):
        t = rng.uniform(0, 3600)
        while t < 200 * 86_400:
            events.append((t, i, 2.0))
            events.append((t + 3600, i, 2.6))
            if rng.random() < 0.7:
                events.append((t + 3600 + 1200, i, 2.0))
                t += 3600 + 1200 + rng.uniform(1, 3) * 3600
            else:
                t += 3600 + 7 * 86_400
    events.sort()
    states: dict[str, dict] = {o.key: {} for o in offers}
    index = {o.key: i for i, o in enumerate(offers)}
    pubs: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(offers))}   # (made, ratio)
    hist: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(offers))}
    for n, (t, i, usd) in enumerate(events):
        o = offers[i]
        states[o.key], _ = state.apply_event(states[o.key], price(o, usd, minutes=t / 60, eid=f"x{n}"))
        t = states[o.key]["price_t"]
        f.observe(o.key, states[o.key], t)
        for fc in f.flush():
            pubs[index[fc.offer_key]].append((fc.made_t, fc.usd_per_hour[3600] / float(fc.p0_usd_per_hour or 1.0)))
        hist[i].append((t, usd))
    # the evaluation's rule: every hour T of the second half, the move in force applied to the price at T
    err_m = err_n = 0.0
    for i in range(len(offers)):
        ts, ps = [t for t, _ in hist[i]], [p for _, p in hist[i]]
        made, ratio = [m for m, _ in pubs[i]], [r for _, r in pubs[i]]
        t0 = ts[0] - ts[0] % 3600
        for T in np.arange(t0 + 100 * 86_400, t0 + 195 * 86_400, 3600.0).tolist():
            p_t, p_h = ps[bisect.bisect_right(ts, T) - 1], ps[bisect.bisect_right(ts, T + 3600) - 1]
            r = ratio[bisect.bisect_right(made, T) - 1]
            err_m += abs(p_t * r - p_h)
            err_n += abs(p_t - p_h)
    assert err_m <= err_n * 1.005, (err_m, err_n)
    fresh = f.summary()["3600s"]
    assert fresh["mae_model"] <= fresh["mae_naive"] * 1.005, fresh


def test_candidates_move_nothing_for_a_still_price_and_within_the_clip() -> None:
    rising = [[1800.0 * i, 1.0 + 0.01 * i] for i in range(200)]   # a change every 30 min: not quiet
    hists = [[[0.0, 2.0]], rising, [], [[0.0, 1.0], [10.0, -1.0]]] * 3
    now = np.full(len(hists), 200 * 1800.0)
    terms = history_terms(hists, now, (3600, 86_400))
    still = np.array([len({p for _, p in h}) <= 1 for h in hists])
    for h in (3600, 86_400):
        m = candidate_moves(np.full(len(hists), 5.0), terms[h], h, still, np.ones(len(hists), dtype=bool))
        assert m.shape == (len(hists), len(CANDIDATES)) and np.isfinite(m).all()
        assert (np.abs(m) <= 0.7).all() and (m[still] == 0).all() and (m[:, 0] == 0).all()
        assert m[1, CANDIDATES.index("smoothed-level")] < 0   # the level lags a rise: it predicts a fall back


def test_a_quiet_offer_forecasts_no_change_where_a_busier_one_moves() -> None:
    """Absolute error's best forecast of a price that changes within the horizon less often than not is
    no change (its median), whatever the group's model predicts for the changes that happen: at 24 h an offer
    with four changes in the last week moves 0 under every candidate, one with six moves; at 1 h both are
    quiet, and an offer changing every 30 minutes is not."""
    week = 7 * 86_400.0
    def changes(n: int, now: float) -> list[list[float]]:
        return [[now - week + week * (i + 0.5) / n, 1.0 + 0.1 * (i % 2)] for i in range(n)]
    now = 30 * 86_400.0
    hists = [changes(4, now), changes(6, now), changes(336, now)]
    terms = history_terms(hists, np.full(3, now), (3600, 86_400))
    no = np.zeros(3, dtype=bool)
    day = candidate_moves(np.full(3, 0.3), terms[86_400], 86_400, no, ~no)
    hour = candidate_moves(np.full(3, 0.3), terms[3600], 3600, no, ~no)
    assert (day[0] == 0).all() and (day[1, 1:] != 0).any() and (day[2, 1:] != 0).any()
    assert (hour[0] == 0).all() and (hour[1] == 0).all() and (hour[2, 1:] != 0).any()


def test_a_lucky_candidate_needs_a_clear_lead_over_naive() -> None:
    """Equal means with noise: no candidate is published; a consistent lead is."""
    ps = PriceScores(1)
    ps.grow(2)
    rng = np.random.default_rng(0)
    n = 400
    actual = 2.0 + rng.normal(0, 0.1, n)
    moves = np.zeros((n, len(CANDIDATES)))
    moves[:, 1] = rng.normal(0, 0.05, n)                   # noise around naive
    moves[:, 2] = np.log(2.0 / 2.05)                       # toward the mean (2.0) from p0 = 2.05: better
    ps.add(0, np.zeros(n, dtype=np.int64), np.ones(n), actual, np.full(n, 2.05), moves, moves[:, 0])
    ps.add(0, np.ones(n, dtype=np.int64), np.ones(n), actual, np.full(n, 2.0), moves[:, [0, 1, 0, 0, 0, 0, 0, 0, 0]],
           moves[:, 0])
    assert ps.champions(0, np.array([0, 1]), 30).tolist() == [2, 0]


def test_a_lead_from_a_few_stretches_of_time_is_not_clear() -> None:
    """Samples whose outcomes fall in one horizon-long stretch of time share its moves, so a lead is only as
    clear as it is consistent from stretch to stretch. Leads of the same mean (0.05 USD, little noise) are
    published when each sample is its own stretch, not when they come from three stretches that disagree
    (0.3, -0.2, 0.05), fed in time order over several calls."""
    rng = np.random.default_rng(0)
    n, k = 600, len(CANDIDATES)

    def moves(y: np.ndarray) -> np.ndarray:   # candidate 1 forecasts 2 + y for a price going 2 -> 3: lead y
        m = np.zeros((len(y), k))
        m[:, 1] = np.log((2.0 + y) / 2.0)
        return m

    ps = PriceScores(1)
    ps.grow(2)
    y0 = 0.05 + rng.normal(0, 0.01, n)
    ps.add(0, np.zeros(n, dtype=np.int64), np.ones(n), np.full(n, 3.0), np.full(n, 2.0), moves(y0), np.zeros(n),
           0.0, np.arange(n, dtype=float))
    y1 = np.repeat([0.3, -0.2, 0.05], n // 3) + rng.normal(0, 0.01, n)
    for lo in range(0, n, 100):
        sl = slice(lo, lo + 100)
        ps.add(0, np.ones(100, dtype=np.int64), np.ones(100), np.full(100, 3.0), np.full(100, 2.0), moves(y1[sl]),
               np.zeros(100), 0.0, np.full(100, float(lo // 200)))
    assert abs(y1.mean() - 0.05) < 0.01
    assert ps.champions(0, np.array([0, 1]), 30).tolist() == [1, 0]


def test_a_lead_banked_months_ago_does_not_keep_a_candidate_published() -> None:
    """Markets change regime: a candidate that led naive for 100 days and has lost for the last 30 is not
    published, although its lead over the whole span is still clear (the test reads scores decayed over
    4 weeks)."""
    rng = np.random.default_rng(1)
    ps = PriceScores(1)
    ps.grow(1)
    day = 86_400.0

    def feed(days: range, lead: float) -> None:
        for d in days:
            y = lead + rng.normal(0, 0.02, 24)   # candidate 1 forecasts 2 + y for a price going 2 -> 3: lead y
            m = np.zeros((24, len(CANDIDATES)))
            m[:, 1] = np.log((2.0 + y) / 2.0)
            t = d * day + np.arange(24) * 3600.0
            ps.add(0, np.zeros(24, dtype=np.int64), np.ones(24), np.full(24, 3.0), np.full(24, 2.0), m, np.zeros(24),
                   float(t[-1]), np.floor(t / 3600.0))

    feed(range(100), 0.05)
    assert ps.champions(0, np.array([0]), 30).tolist() == [1]
    feed(range(100, 130), -0.05)
    whole = ps.mae[0, 0] / ps.n[0, 0]
    assert whole[1] < whole[0]   # over the whole span it still leads
    assert ps.champions(0, np.array([0]), 30).tolist() == [0]


class _LoopClusters:
    """The clusters kept one sample group at a time (the rule of PriceScores._cluster, written plainly)."""

    def __init__(self, k: int) -> None:
        self.closed: dict[int, list[tuple[np.ndarray, float]]] = {}
        self.open: dict[int, tuple[float, np.ndarray, float]] = {}
        self.k = k

    def add(self, g: np.ndarray, b: np.ndarray, wd: np.ndarray, w: np.ndarray) -> None:
        for gg in sorted(set(g.tolist())):
            for bb in sorted(set(b[g == gg].tolist())):
                sel = (g == gg) & (b == bb)
                if math.isinf(bb):
                    self.closed.setdefault(gg, []).extend((wd[i], float(w[i])) for i in np.flatnonzero(sel))
                    continue
                s, wc = wd[sel].sum(axis=0), float(w[sel].sum())
                ob, os_, ow = self.open.get(gg, (-math.inf, np.zeros(self.k), 0.0))
                if bb == ob:
                    self.open[gg] = (ob, os_ + s, ow + wc)
                elif bb > ob:
                    if ow > 0:
                        self.closed.setdefault(gg, []).append((os_, ow))
                    self.open[gg] = (bb, s, wc)
                else:
                    self.closed.setdefault(gg, []).append((s, wc))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 2), st.sampled_from([0.0, 1.0, 2.0, 3.0, math.inf]),
                                   st.floats(-1, 1), st.floats(0.1, 2)), min_size=1, max_size=12),
                min_size=1, max_size=6))
def test_the_clusters_match_the_plain_rule(calls: list[list[tuple[int, float, float, float]]]) -> None:
    """Whatever the order of buckets over calls (late samples, several buckets in one call, samples alone),
    the cluster sums are those of the plain one-sample-group-at-a-time rule."""
    k = len(CANDIDATES)
    ps, ref = PriceScores(1), _LoopClusters(k)
    ps.grow(3)
    for call in calls:
        g = np.array([c[0] for c in call], dtype=np.int64)
        b = np.array([c[1] for c in call])
        wd = np.outer([c[2] for c in call], np.arange(k, dtype=float))
        w = np.array([c[3] for c in call])
        ps._cluster(0, g, b, wd, w)
        ref.add(g, b, wd, w)
    for gg in range(3):
        closed = ref.closed.get(gg, [])
        assert ps.c_n[0, gg] == len(closed)
        assert np.allclose(ps.c_ss[0, gg], sum((s * s for s, _ in closed), np.zeros(k)))
        assert np.allclose(ps.c_sw[0, gg], sum((s * wc for s, wc in closed), np.zeros(k)))
        assert np.isclose(ps.c_ww[0, gg], sum(wc * wc for _, wc in closed))
        ob, os_, ow = ref.open.get(gg, (-math.inf, np.zeros(k), 0.0))
        assert ps.o_b[0, gg] == ob and np.isclose(ps.o_w[0, gg], ow) and np.allclose(ps.o_s[0, gg], os_)


def test_bad_input_is_counted_in_prometheus_and_falls_back_to_naive() -> None:
    def skipped(reason: str) -> float:
        return REGISTRY.get_sample_value("cloudarb_forecast_samples_skipped_total", {"reason": reason}) or 0.0

    before = {r: skipped(r) for r in ("feature", "clock", "price")}
    f = Forecaster(horizons_s=(3600, 86_400))
    good = {"usd_per_hour": 2.0, "price_t": 0.0, "ewma": 2.0, "hist": [[0.0, 2.0], [10.0, 2.1]]}
    f.observe(OFF.key, {**good, "ewma": float("inf")}, now_t=100.0)            # an infinite feature
    [fc] = f.flush()
    assert set(fc.model.values()) == {"naive"} and fc.usd_per_hour[86_400] == 2.0
    assert f.observe(OFF.key, good, now_t=50.0) is None                        # the clock went back
    lone = offer(region="lonely").key
    f.observe(lone, {"usd_per_hour": 3.0, "price_t": 0.0}, now_t=200.0)       # one observation, no history
    [fc2] = f.flush()
    assert set(fc2.model.values()) == {"naive"} and fc2.usd_per_hour == {3600: 3.0, 86_400: 3.0}
    f.observe(offer(region="odd").key, {**good, "hist": [[0.0, "x"]]}, now_t=300.0)   # a history not numbers
    assert set(f.flush()[0].model.values()) == {"naive"}
    assert skipped("feature") - before["feature"] >= 2 and skipped("clock") - before["clock"] == 1
    assert f.skipped["feature"] >= 2 and f.skipped["clock"] == 1


@pytest.mark.parametrize("h", [3600, 86_400])
def test_history_terms_match_a_direct_integral(h: int) -> None:
    """The smoothed level is the exponentially weighted time average of the log price (the first price
    extending to -inf), checked against a fine Riemann sum."""
    hist = [[0.0, 1.0], [5000.0, 1.5], [20_000.0, 1.2], [90_000.0, 1.4]]
    now = 100_000.0
    got = float(history_terms([hist] * 10, [now] * 10, (h,))[h]["level"][0])
    tau = float(h)
    grid = np.linspace(now - 40 * tau, now, 400_001)
    idx = np.searchsorted([p[0] for p in hist], grid, side="right") - 1
    x = np.log(np.array([p[1] for p in hist]))[np.maximum(idx, 0)]
    wts = np.exp(-(now - grid) / tau)
    assert got == pytest.approx(float((wts * x).sum() / wts.sum()) - math.log(1.4), abs=2e-4)


def test_a_horizon_not_due_keeps_its_forecast_in_force() -> None:
    """Forecasts are due per horizon (1 h: every 5 min of event time, 24 h: every 2 h); a flush that predicts
    the 1 h horizon keeps the 24 h forecast's move (the one being scored as in force) and its model name."""
    f = Forecaster(horizons_s=(3600, 86_400))
    s: dict = {}
    made: list = []
    for i in range(3000):
        e = price(OFF, 1.0 * math.exp(0.0005 * i + 0.002 * math.sin(i)), minutes=i * 10)
        s, _ = state.apply_event(s, e)
        f.observe(OFF.key, s, state.event_t(e))
        made += f.flush()
    assert len(made) > 2900 and {fc.model[86_400] for fc in made} - {"naive"}   # a model is published at 24 h
    ratio = [(fc.made_t, round(fc.usd_per_hour[86_400] / float(fc.p0_usd_per_hour or 1.0), 9), fc.model[86_400])
             for fc in made]
    changes = [b for a, b in itertools.pairwise(ratio) if (a[1], a[2]) != (b[1], b[2])]
    due_every = 86_400 / 12
    assert len(changes) <= (made[-1].made_t - made[0].made_t) / due_every + 2, len(changes)
    assert len({r for _, r, _ in ratio}) > 100          # (and it is re-predicted when due)


@pytest.mark.parametrize("c", [0.05, 0.5, 0.8, 1.0])
def test_the_band_covers_a_tenth_on_each_side_of_a_mixture(c: float) -> None:
    """Outcomes drawn from the band's own model, no change with probability 1 - c and a Laplace move (skewed
    up) otherwise: the published p10 / p90 leave about a tenth of them strictly outside on each side; where
    a change to that side is rarer than a tenth, the band's end is the price itself (and the changes to
    that side are outside it)."""
    rng = np.random.default_rng(1)
    n = 20_000
    moves = rng.laplace(0.02, 0.05, n)
    changed = rng.random(n) < c
    y = np.where(changed, moves, 0.0)
    ps = PriceScores(1)
    ps.grow(1)
    g = np.zeros(n, dtype=np.int64)
    ps.add_residuals(0, g[changed], y[changed])
    lo, hi = ps.band(0, g[:1], np.array([0]), np.zeros(1), np.full(1, c))
    below, above = float((y < lo[0]).mean()), float((y > hi[0]).mean())
    down, up = float((y < 0).mean()), float((y > 0).mean())
    for outside, side, end in ((below, down, lo[0]), (above, up, hi[0])):
        if side > 0.1:
            assert outside == pytest.approx(0.1, abs=0.03) and end != 0.0   # (from the last 512 moves)
        else:
            assert end == 0.0 and outside == pytest.approx(side)


def test_a_quiet_offers_band_is_its_price_where_a_busy_ones_is_wide() -> None:
    """Two offers of one group: one moves ±2-6 % every 30 minutes, the other once a week. At 1 h the busy
    one's p10 and p90 lie either side of its price; the quiet one's are its price: a change within the hour
    is far rarer than a tenth."""
    f = Forecaster(horizons_s=(3600,))
    busy, quiet = offer(market=Market.SPOT, itype="busy"), offer(market=Market.SPOT, itype="quiet")
    rng = random.Random(5)
    sb: dict = {}
    sq: dict = {}
    p = 2.0
    for i in range(6 * 24 * 14):   # two weeks of 10-minute steps
        if i % 3 == 0:
            p *= math.exp(rng.choice((-1, 1)) * rng.uniform(0.02, 0.06))
            sb, _ = state.apply_event(sb, price(busy, round(p, 4), minutes=i * 10))
            f.observe(busy.key, sb, state.event_t(price(busy, 1.0, minutes=i * 10)))
        if i % (6 * 24 * 7) == 0 or i % 6 == 0:
            q = 1.0 + 0.1 * (i // (6 * 24 * 7))
            sq, _ = state.apply_event(sq, price(quiet, q, minutes=i * 10))
            f.observe(quiet.key, sq, state.event_t(price(quiet, q, minutes=i * 10)))
        f.flush()
    fb, fq = f.latest[busy.key], f.latest[quiet.key]
    assert fb.p10_usd_per_hour[3600] < fb.usd_per_hour[3600] < fb.p90_usd_per_hour[3600]
    assert fq.p10_usd_per_hour[3600] == fq.usd_per_hour[3600] == fq.p90_usd_per_hour[3600] == sq["usd_per_hour"]

"""Online forecasts that earn their place: price at a few horizons (median and p10/p90) and the chance of
losing capacity or being interrupted in the next hour, each published only as far as it beats naive.

One model per offer group (provider, GPU model, market): single offers change too rarely to learn alone.

Price, per group and horizon h: candidates of several families predict the change y = log(p(t+h) / p(t))
(streams.core.price_models, which gives their maths): naive (no change), a linear model under the loss we
are scored by (absolute error -> the median: quantile loss at 0.5) on the offer's rolling state and
calendar features, shrunk toward "no change" or damped by the offer's time between changes, exponential
smoothing of the price (the level; Holt's damped trend) and the seasonal naive of a week ago. Every
candidate is scored on the same stream as its forecast is used (progressive validation): when its
horizon passes, and again while the forecast stays in force (the engine applies its move to the price of
the moment until the offer's next forecast), and the one with the lowest weighted MAE is published
(naive is a candidate, so a model is published only while it beats naive as used, clearly, on recent
scores). p10 and p90 are those of a mixture: no change, or, with the chance of a change within the
horizon at the offer's change rate, the median plus one of the group's recent residuals of forecasts whose
price changed, published while such bands beat "no change" by the pinball loss (streams.core.price_models;
else both are the median). An offer whose price has never moved forecasts itself exactly (median and
quantiles); a quiet one, more likely than not to keep its price over the horizon, forecasts no change (its
median; streams.core.price_models says why).

Risk: candidates for P(capacity lost or interruption within the next hour) are the group's recent base rate
(naive: its losses per hour with capacity, decayed as streams.core.hazard's counts are), an empirical-Bayes
hazard per spot pool (streams.core.hazard: pool -> group -> global shrinkage, the Spot Advisor band a prior
of bounded weight), the same shaped by the pool's up-time ("duration-hazard"), a logistic model on the
offer's features, and "hazard-logit", a logistic recalibration of the duration-shaped hazard by the pool's
recent history (streams.core.risk). They are scored in time, over the hours
each was in force while its offer had capacity (streams.core.risk, which says why), and the one with the
lowest running log-loss per hour is published.

Cost: `observe()` is the per-offer path and is O(1): it keeps the offer's state, its bad events and the
hazard's exposure, and marks the offer dirty. The work is done per batch by `flush()` (the market stage
calls it once per consumed batch; `observe()` calls it itself when the event time has moved BUCKET_S past
the oldest dirty offer): first every prediction whose horizon has passed by the batch's earliest event is
scored and learned from, then the dirty offers that are due a prediction (per offer and horizon at most
every horizon/12 of event time) are predicted together in numpy (features, scaling, the models of their
groups), then what matured by the batch's latest event is scored. Learning is mini-batch SGD over the
matured predictions of each group (streams.core.learners.sgd). The features are `features()`'s, computed for
the whole batch at once (streams.core.learners.feature_matrix). A forecast made by a flush is in `latest` and
returned by `flush()`; `observe()` returns the offer's forecast in force (None before its first).
Scoring labels a prediction with the price in force at its horizon (a change at exactly t+h counts).

Bad input never raises: a non-finite feature, a price <= 0, or a clock that went backwards skips the
sample (counted in `cloudarb_forecast_samples_skipped_total{reason}`), and the forecast falls back to
naive with `model: naive`. `Forecaster` is plain Python + numpy, used by the market stage and the
back-tester; its reading side (promotions, champions, weights, scores, summary) is
streams.core.forecast_reports.

>>> f = Forecaster(horizons_s=(3600,))
>>> st = {"usd_per_hour": 2.0, "price_t": 0.0, "ewma": 2.0, "hist": [[0.0, 2.0]]}
>>> f.observe("gcp|r||a|L4|1|spot", st, now_t=0.0) is None   # nothing in force yet: made by the flush
True
>>> [(fc.usd_per_hour[3600], fc.model[3600]) for fc in f.flush()]
[(2.0, 'naive')]
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client import Counter

from schemas.events import ModelPromoted
from schemas.offers import Market
from streams.core import windows
from streams.core.forecast_events import Forecast
from streams.core.forecast_reports import MIN_SCORED, ForecasterReports
from streams.core.hazard import Hazard
from streams.core.learners import (
    FEATURES,
    D,
    Linear,
    Pending,
    Scaler,
    chosen,
    concat,
    dicts,
    feature_matrix,
    feature_rows,
    features,
    num,
    sgd,
    subset,
)
from streams.core.price_models import CANDIDATES, MAX_LOG_MOVE, PriceScores, candidate_moves, history_terms
from streams.core.risk import RISK_CANDIDATES, RiskScores

__all__ = ["CANDIDATES", "FEATURES", "MIN_SCORED", "D", "Forecaster", "features"]

HORIZONS_S: tuple[int, ...] = (3600, 86_400)
RISK_HORIZON_S = 3600
REFRESH_S = 3600.0  # `refresh()`: an offer without an event for this long is re-forecast in its last state
BUCKET_S = 300.0    # observe() flushes by itself once the event time is this far past the oldest dirty offer
SKIPPED = Counter("cloudarb_forecast_samples_skipped_total",
                  "forecaster samples skipped (the forecast falls back to naive)", ["reason"])


def _group(offer_key: str) -> str:
    provider, _, _, _, gpu, _, market = offer_key.split("|")
    return f"{provider}|{gpu}|{market}"


def _price_at(hist: Any, t: float) -> float:
    if hist and hist[-1][0] <= t:
        return float(hist[-1][1])
    p = windows.price_at(hist or [], t)
    return math.nan if p is None else float(p)


def _bad_within(bad: Any, start: float, end: float) -> bool:
    return bool(bad) and any(start < t <= end for t in bad)


class Forecaster(ForecasterReports):
    """Online learners per offer group: `observe()` after each state update, `flush()` once per batch."""

    def __init__(self, horizons_s: tuple[int, ...] = HORIZONS_S, max_pending: int = 200_000) -> None:
        self.horizons = tuple(horizons_s)
        self.groups: dict[str, int] = {}       # group name -> its row in the arrays below
        self.group_names: list[str] = []
        nh = len(self.horizons)
        self._scaler = Scaler()                # per group: the features' means and variances
        self._price = [Linear() for _ in self.horizons]
        self._risk = Linear()
        self._ps = PriceScores(nh)   # the price candidates' scores per horizon and group
        self._rs = RiskScores()   # the risk candidates' scores per group, and the risk in force per offer
        self.pending: list[tuple[float, int, Pending]] = []  # heap of (earliest due time, sequence, chunk)
        self._n_pending = 0
        self._made = np.zeros((0, len(self.horizons) + 1))   # per offer index: when each horizon (and, last,
        # risk) was last predicted; and per price horizon the forecast it replaced then and when
        self._prev_made, self._prev_end = np.zeros((0, nh)), np.zeros((0, nh))
        # per offer and price horizon: the move published when it was last due, and its candidate: a
        # horizon not due keeps them (its forecast stays in force, applied to the new price)
        self._pub_move, self._pub_code = np.zeros((0, nh)), np.zeros((0, nh), dtype=np.int64)
        self.latest: dict[str, Forecast] = {}
        self._state: dict[str, Mapping[str, Any]] = {}   # offer -> its last state
        self.hazard = Hazard()
        self.max_pending = max_pending
        self._seq = 0
        self.scored = 0
        self.made = 0          # forecasts made
        self.skipped: dict[str, int] = {}
        self._last_t = np.zeros(0)   # per offer index: its last event time
        self._spot = np.zeros(0, dtype=bool)   # per offer index: a spot offer (`refresh`)
        self._event_t = np.zeros(0)   # per offer index: its last event time (`_last_t`: or refresh)
        self._by_offer: dict[str, tuple[str, int, int]] = {}   # offer key -> its group and index
        self._keys: list[str] = []                             # offer index -> its key
        self._champion: dict[tuple[str, str], str] = {}   # (group, target) -> the published candidate
        self.promotions: list[ModelPromoted] = []         # drained by the caller (drain_promotions)
        self._dirty: dict[str, tuple[Mapping[str, Any], float]] = {}
        self._bucket_end = math.inf
        self._max_t = -math.inf
        self._fresh: dict[str, Forecast] = {}
        self._obs: list[tuple[str, str, int, float, float, float, bool, bool]] = []   # queued by observe()

    def _group_of(self, offer_key: str) -> tuple[str, int, int]:
        """(group name, group index, offer index) of an offer."""
        hit = self._by_offer.get(offer_key)
        if hit is None:
            name = _group(offer_key)
            if name not in self.groups:
                self._add_group(name)
            n = len(self._by_offer)
            if n >= len(self._made):
                k = max(64, n)
                self._made = np.concatenate([self._made, np.full((k, len(self.horizons) + 1), -np.inf)])
                self._prev_made = np.concatenate([self._prev_made, np.full((k, len(self.horizons)), -np.inf)])
                self._prev_end = np.concatenate([self._prev_end, np.full((k, len(self.horizons)), -np.inf)])
                self._pub_move = np.concatenate([self._pub_move, np.zeros((k, len(self.horizons)))])
                self._pub_code = np.concatenate([self._pub_code, np.zeros((k, len(self.horizons)), dtype=np.int64)])
                self._last_t = np.concatenate([self._last_t, np.full(k, -np.inf)])
                self._spot = np.concatenate([self._spot, np.zeros(k, dtype=bool)])
                self._event_t = np.concatenate([self._event_t, np.full(k, -np.inf)])
                self._rs.grow_offers(k)
            hit = self._by_offer[offer_key] = (name, self.groups[name], n)
            self._keys.append(offer_key)
            self._spot[n] = name.endswith(f"|{Market.SPOT.value}")   # (the market: a key's last field)
        return hit

    def _add_group(self, name: str) -> None:
        n = len(self.group_names) + 1
        if n > len(self._rs.rn):   # grow every per-group array (doubling), then publish the name
            cap = max(8, 2 * len(self._rs.rn))
            self._scaler.grow(cap)
            for m in (*self._price, self._risk):
                m.grow(cap)
            self._ps.grow(cap)
            self._rs.grow_groups(cap)
        self.groups[name] = n - 1
        self.group_names.append(name)

    def _skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n
        SKIPPED.labels(reason).inc(n)

    def observe(self, offer_key: str, s: Mapping[str, Any], now_t: float) -> Forecast | None:
        """Take the offer's new state (O(1): the prediction is made by the next flush, when it is due);
        returns the offer's forecast in force (None before its first, or for a skipped sample)."""
        return self._observe(offer_key, s, now_t, True)

    def _observe(self, offer_key: str, s: Mapping[str, Any], now_t: float, auto_flush: bool) -> Forecast | None:
        if not (isinstance(now_t, int | float) and math.isfinite(now_t)):
            self._skip("clock")
            return None
        gname, _, oi = self._by_offer.get(offer_key) or self._group_of(offer_key)
        if now_t < self._last_t[oi]:   # a clock jump backwards: learn nothing from it
            self._skip("clock")
            return None
        if auto_flush and (self._dirty or self._obs) and now_t >= self._bucket_end:
            self._work()
        last = float(self._last_t[oi])
        self._last_t[oi] = self._event_t[oi] = now_t
        if now_t > self._max_t:
            self._max_t = now_t
        new_bad = self._new_bad(offer_key, s)
        prev = self._state.get(offer_key)
        exposed = prev is not None and bool(prev.get("available", True))
        self._state[offer_key] = s       # (its history and bad events label the predictions when they mature)
        if not (self._dirty or self._obs):
            self._bucket_end = now_t + BUCKET_S
        # the hazard's exposure and the scores of the risk in force: queued, applied in numpy by the flush
        # (nothing reads them before; one call per event cost ~50 us of numpy overhead)
        self._obs.append((offer_key, gname, oi, last, now_t, float(new_bad), exposed,
                          new_bad == 0 and bool(s.get("available", True))))
        if len(self._obs) >= 4096:
            self._apply_obs()
        if "usd_per_hour" in s:
            self._dirty[offer_key] = (s, now_t)
        return self.latest.get(offer_key)

    def _apply_obs(self) -> None:
        """The observations queued by `observe()`, in order, in runs where each offer appears once."""
        obs, self._obs = self._obs, []
        start, seen = 0, set[int]()
        for i, o in enumerate(obs):
            if o[2] in seen:
                self._apply_run(obs[start:i])
                start, seen = i, set()
            seen.add(o[2])
        self._apply_run(obs[start:])

    def _apply_run(self, run: list[tuple[str, str, int, float, float, float, bool, bool]]) -> None:
        if not run:
            return
        keys, gnames, oi, last, now, bad, exposed, avail = zip(*run, strict=True)
        now_a, bad_a, exposed_a = np.array(now), np.array(bad), np.array(exposed, dtype=bool)
        self.hazard.observe_many(list(keys), list(gnames), now_a, bad_a, exposed_a, np.array(avail, dtype=bool))
        self._rs.score_in_force(np.array(oi, dtype=np.int64), np.array(last), now_a, exposed_a, bad_a)

    def _new_bad(self, offer_key: str, s: Mapping[str, Any]) -> int:
        """Bad events in the state that the offer's previous state did not have (it keeps the last few)."""
        bad = s.get("bad_t")
        if not bad:
            return 0
        prev = self._state.get(offer_key)
        seen = prev.get("bad_t") if prev else None
        last_bad = seen[-1] if seen else -math.inf
        return sum(1 for t in bad if t > last_bad)

    def observe_many(self, updates: Sequence[tuple[str, Mapping[str, Any], float]]) -> list[Forecast]:
        """`observe` each (offer key, state, event time) of a batch, one per offer, then `flush`: the
        market stage's call per consumed batch (not split by event time; the per-offer work in numpy)."""
        if self._obs:   # (observations queued by observe() come first)
            self._apply_obs()
        if not updates:
            return self.flush()
        keys_t, states_t, times = zip(*updates, strict=True)
        keys, states = list(keys_t), list(states_t)
        if len(set(keys)) != len(keys):   # (one update per offer is the contract; else one at a time)
            for key, s, t in updates:
                self._observe(key, s, t, False)
            return self.flush()
        try:
            ts = np.array(times, dtype=float)
        except (TypeError, ValueError):
            ts = np.array([num(t) for t in times])
        info = [self._by_offer.get(k) or self._group_of(k) for k in keys]
        oi = np.array([i[2] for i in info], dtype=np.int64)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(ts) & (ts >= self._last_t[oi])   # (a clock jump backwards: learn nothing from it)
        if not ok.all():
            self._skip("clock", int((~ok).sum()))
            keys, states, info = chosen(keys, ok), chosen(states, ok), chosen(info, ok)
            ts, oi = ts[ok], oi[ok]
        if keys:
            last = self._last_t[oi]
            self._last_t[oi] = self._event_t[oi] = ts
            self._max_t = max(self._max_t, float(ts.max()))
            new_bad = np.zeros(len(keys))
            for i in [i for i, s in enumerate(states) if s.get("bad_t")]:
                new_bad[i] = self._new_bad(keys[i], states[i])
            st = self._state
            exposed = np.array([(p := st.get(k)) is not None and bool(p.get("available", True)) for k in keys])
            st.update(zip(keys, states, strict=True))
            # (capacity now: the state's, and none just after a loss, as a preemption that left it listed)
            avail = np.array([bool(s.get("available", True)) for s in states]) & (new_bad == 0)
            self.hazard.observe_many(keys, [i[0] for i in info], ts, new_bad, exposed, avail)
            self._rs.score_in_force(oi, last, ts, exposed, new_bad)
            self._dirty.update((k, (s, t)) for k, s, t in zip(keys, states, ts.tolist(), strict=True)
                               if "usd_per_hour" in s)
        return self.flush()

    def refresh(self, watermark_t: float, stale_s: float = REFRESH_S,
                eligible: Callable[[str], bool] | None = None) -> list[Forecast]:
        """Re-forecast, at event time `watermark_t`, every spot offer (`eligible`, default all) whose last
        forecast is at least `stale_s` old and at least half as old as its last event, as if it had been
        observed again in its last state then; returns the forecasts made since the last flush (also in
        `latest`), as `flush()` does. With hourly calls an offer is refreshed 1, 2, 4, 8, 16... hours after
        its event: what moves its forecast (the time since a loss, the smoothed levels) moves on a log scale
        of that time. (An on-demand offer has no interruption risk to refresh, and its price forecast in
        force keeps being applied to the current price.)

        Without it a forecast is made only at its offer's events, so an offer quoted once a day kept the
        risk of the hour after its quote all day, while the hazard's time since the pool's last loss, the
        group's rate and the price's smoothed levels moved on. The caller guarantees that no event of an
        eligible offer older than `watermark_t` is still to come (the back-tester: every event up to it is
        applied; the market stage: the offer's partition has passed it), since such an event would then
        be skipped as a clock going backwards. No event since its last means no loss in between either:
        losses are events, so the hazard's exposure and the risk in force are scored up to `watermark_t`
        with none.

        >>> f = Forecaster(horizons_s=(3600,))
        >>> st = {"usd_per_hour": 2.0, "price_t": 0.0, "hist": [[0.0, 2.0]]}
        >>> _ = f.observe_many([("gcp|r||a|L4|1|spot", st, 0.0)])
        >>> [round(fc.made_t) for fc in f.refresh(7200.0)], f.refresh(7200.0)   # once: now fresh
        ([7200], [])
        """
        if not (isinstance(watermark_t, int | float) and math.isfinite(watermark_t)):
            return []
        n = len(self._keys)
        since = watermark_t - self._last_t[:n]           # since the last event or refresh
        since_event = watermark_t - self._event_t[:n]    # since the last event
        stale = np.flatnonzero((since >= stale_s) & (2 * since >= since_event) & self._spot[:n]).tolist()
        st, keys = self._state, self._keys
        chosen_i = [i for i in stale if keys[i] in st and (eligible is None or eligible(keys[i]))]
        if not chosen_i:
            return []
        idx = np.array(chosen_i, dtype=np.int64)
        event_t = self._event_t[idx]
        out = self.observe_many([(keys[i], st[keys[i]], float(watermark_t)) for i in chosen_i])
        self._event_t[idx] = event_t   # (a refresh is not an event)
        return out

    def flush(self) -> list[Forecast]:
        """Predict for the dirty offers that are due (see the module docstring); the forecasts made since
        the last call, one per offer (its latest)."""
        self._work()
        out = list(self._fresh.values())
        self._fresh.clear()
        return out

    def _work(self) -> None:
        self._bucket_end = math.inf
        if self._obs:
            self._apply_obs()
        if self._dirty:
            items, self._dirty = self._dirty, {}
            self.advance(min(t for _, t in items.values()))
            self._predict(items)
        self.advance(self._max_t)

    def _predict(self, items: Mapping[str, tuple[Mapping[str, Any], float]]) -> None:
        nh = len(self.horizons)
        keys = list(items)
        vals = list(items.values())
        states = [v[0] for v in vals]
        ts = np.array([v[1] for v in vals])
        info = [self._by_offer[k] for k in keys]   # (group name, group index, offer index)
        g = np.array([i[1] for i in info], dtype=np.int64)
        oi = np.array([i[2] for i in info], dtype=np.int64)
        try:
            p0 = np.array([s["usd_per_hour"] for s in states], dtype=float)
        except (TypeError, ValueError):
            p0 = np.array([num(s["usd_per_hour"]) for s in states])
        made = self._made[oi]
        every = np.array([h / 12 for h in self.horizons] + [RISK_HORIZON_S / 12])   # at most this often
        dues = ts[:, None] - made >= every
        any_due = dues.any(axis=1)
        with np.errstate(invalid="ignore"):
            ok = (p0 > 0) & (p0 < math.inf)
        bad_price = int((any_due & ~ok).sum())
        if bad_price:
            self._skip("price", bad_price)
        rows = any_due & ok
        if not rows.all():
            if not rows.any():
                return
            keys, states = chosen(keys, rows), chosen(states, rows)
            ts, g, oi, p0, dues, made = ts[rows], g[rows], oi[rows], p0[rows], dues[rows], made[rows]
        self._made[oi] = np.where(dues, ts[:, None], made)
        replaced = dues[:, :nh] & np.isfinite(made[:, :nh])   # (the forecast in force until now, per horizon)
        self._prev_made[oi] = np.where(replaced, made[:, :nh], self._prev_made[oi])
        self._prev_end[oi] = np.where(replaced, ts[:, None], self._prev_end[oi])
        hists = [s.get("hist") or [] for s in states]
        try:   # (once for the features and the price candidates)
            flat: windows.Flat | None = windows.flatten(hists)
        except (ValueError, TypeError):   # (a history that is not numbers: each path below copes alone)
            flat = None
        try:
            X, still = feature_matrix(keys, states, ts, p0, hists, flat)
        except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError):
            X, still = feature_rows(keys, states, ts)
        valid = np.isfinite(X).all(axis=1)
        if not valid.all():
            self._skip("feature", int((~valid).sum()))
        z = self._scaler.scale(g, X, valid)
        groups, first = np.unique(g, return_index=True)
        first_t = dict(zip(groups.tolist(), ts[first].tolist(), strict=True))   # a promotion's time
        prices, p10s, p90s = [], [], []
        code = np.zeros(len(keys), dtype=np.int64)   # per row: the published candidate per horizon, as digits
        try:
            terms = history_terms(hists, ts, self.horizons, flat)
        except (ValueError, TypeError):   # (a history that is not numbers: the feature path skipped it too)
            zero = np.zeros(len(keys))
            terms = {h: {"level": zero, "fast": zero, "gap": zero, "week": zero, "rate": zero} for h in self.horizons}
        naive = still | ~valid
        idx = np.arange(len(keys))
        for j, h in enumerate(self.horizons):
            champ = self._ps.champions(j, groups, MIN_SCORED)
            champ_of = np.zeros(len(self._rs.rn), dtype=np.int64)
            champ_of[groups] = champ
            for gg, c in zip(groups.tolist(), champ.tolist(), strict=True):
                self._note_champion(self.group_names[gg], f"price_{h}s", CANDIDATES[c], first_t[gg],
                                    "mae", functools.partial(self._ps.scores, j, gg))
            y_hat = np.where(valid, np.clip(self._price[j].predict(g, z), -MAX_LOG_MOVE, MAX_LOG_MOVE), 0.0)
            moves = candidate_moves(y_hat, terms[h], h, naive, valid)
            due = dues[:, j]
            cj = np.where(naive, 0, np.where(due, champ_of[g], self._pub_code[oi, j]))
            move = np.where(naive, 0.0, np.where(due, moves[idx, cj], self._pub_move[oi, j]))
            self._pub_code[oi[due], j], self._pub_move[oi[due], j] = cj[due], move[due]
            price = np.where(move != 0, p0 * np.exp(move), p0)
            change = np.where(still, 0.0, np.minimum(1.0, h * terms[h]["rate"]))   # P(a change within h), at most
            y10, y90 = self._ps.band(j, g, groups, move, change)
            band = np.c_[np.minimum(move, np.maximum(-MAX_LOG_MOVE, y10)),
                         np.maximum(move, np.minimum(MAX_LOG_MOVE, y90))]   # (around the median; NaN: none)
            on = self._ps.band_beats_none(j, g, MIN_SCORED) & np.isfinite(band).all(axis=1)   # (else: the median)
            p10 = np.where(on, p0 * np.exp(np.where(on, band[:, 0], 0.0)), price)
            p90 = np.where(on, p0 * np.exp(np.where(on, band[:, 1], 0.0)), price)
            prices.append(price.tolist())
            p10s.append(p10.tolist())
            p90s.append(p90.tolist())
            code = code * len(CANDIDATES) + cj
            sel = due
            if sel.any():   # (every candidate of a still offer publishes p0, and is scored so)
                m = int(sel.sum())
                self._push(Pending(j, chosen(keys, sel), g[sel], ts[sel] + h, z[sel], valid[sel], p0[sel],
                                   moves[sel], move[sel], None, oi[sel], ts[sel], ts[sel], np.ones(m), np.zeros(m),
                                   band[sel]))
        cand = self._rs.candidates(self.hazard, self._risk, keys, [self._by_offer[k][0] for k in keys], states,
                                   g, z, valid, RISK_HORIZON_S / 3600)
        rchamp = self._rs.champions(groups, MIN_SCORED)
        rch_g = np.zeros(len(self._rs.rn), dtype=np.int64)
        rch_g[groups] = rchamp
        for gg, c in zip(groups.tolist(), rchamp.tolist(), strict=True):
            self._note_champion(self.group_names[gg], "risk_1h", RISK_CANDIDATES[c], first_t[gg], "logloss",
                                functools.partial(self._rs.scores, gg))
        p_risk = cand[np.arange(len(keys)), rch_g[g]]
        self._rs.set_in_force(oi, cand, p_risk, g)
        sel = dues[:, nh]
        if sel.any():
            self._push(Pending(-1, chosen(keys, sel), g[sel],
                              ts[sel] + RISK_HORIZON_S, z[sel], valid[sel], p0[sel], np.zeros((int(sel.sum()), 0)),
                              p_risk[sel], cand[sel]))
        self._publish(keys, ts, p0, g, groups, prices, p10s, p90s, code, p_risk, rch_g)

    def _publish(self, keys: list[str], ts: Any, p0: Any, g: Any, groups: Any, prices: list[list[float]],
                 p10s: list[list[float]], p90s: list[list[float]], code: Any, p_risk: Any,
                 rch_g: Any) -> None:
        hs = self.horizons
        shared: dict[int, tuple[Any, ...]] = {}   # the group's running scores, one set of dicts per group
        ps = self._ps
        for gg in groups.tolist():
            w = [float(ps.n[j, gg]) for j in range(len(hs))]
            rn = self._rs.rn[gg]
            shared[gg] = ({h: float(ps.pub[j, gg] / w[j]) if w[j] else None for j, h in enumerate(hs)},
                          {h: float(ps.mae[j, gg, 0] / w[j]) if w[j] else None for j, h in enumerate(hs)},
                          {h: int(min(x, 2**32 - 1)) for h, x in zip(hs, w, strict=True)},
                          float(self._rs.llpub[gg] / rn) if rn else None,
                          float(self._rs.ll[gg, 0] / rn) if rn else None,
                          RISK_CANDIDATES[int(rch_g[gg])])
        codes, inverse = np.unique(code, return_inverse=True)
        by_code = []   # per distinct code: (model_used, model) dicts, shared by its rows
        for c in codes.tolist():
            nm = {}
            for h in reversed(hs):
                c, digit = divmod(c, len(CANDIDATES))
                nm[h] = CANDIDATES[digit]
            nm = {h: nm[h] for h in hs}
            by_code.append(({h: x != "naive" for h, x in nm.items()}, nm))
        used = [by_code[i] for i in inverse.tolist()]
        sh = [shared[gg] for gg in g.tolist()]
        latest, fresh = self.latest, self._fresh
        for k, t, p, pr, u, (mae_m, mae_n, n_sc, ll_m, ll_n, rname), usd, lo, hi in zip(
                keys, ts.tolist(), p0.tolist(), p_risk.tolist(), used, sh, dicts(hs, prices), dicts(hs, p10s),
                dicts(hs, p90s), strict=True):
            latest[k] = fresh[k] = Forecast(k, t, usd, pr, u[0], rname != "base-rate", mae_m, mae_n, n_sc, ll_m,
                                            ll_n, p, lo, hi, u[1], rname)   # (the fields in order)
        self.made += len(keys)

    def _push(self, c: Pending) -> None:
        self._seq += 1
        heapq.heappush(self.pending, (float(c.due.min()), self._seq, c))
        self._n_pending += len(c.keys)
        while self._n_pending > self.max_pending and len(self.pending) > 1:  # bounded memory: drop the oldest-due
            self._n_pending -= len(heapq.heappop(self.pending)[2].keys)

    def advance(self, now_t: float) -> int:
        """Score and learn from every prediction whose horizon has passed by event time `now_t` (per
        target, all of them together; again for the samples of forecasts in force that this queues and that
        are already due)."""
        n = 0
        while self.pending and self.pending[0][0] <= now_t:
            ready: dict[int, list[Pending]] = {}
            while self.pending and self.pending[0][0] <= now_t:
                _, _, c = heapq.heappop(self.pending)
                self._n_pending -= len(c.keys)
                sel = c.due <= now_t
                if not sel.all():
                    self._push(subset(c, ~sel))
                    c = subset(c, sel)
                ready.setdefault(c.target, []).append(c)
            for target, cs in ready.items():
                c = cs[0] if len(cs) == 1 else concat(cs)
                n += self._score_price(c) if target >= 0 else self._score_risk(c)
        self.scored += n
        return n

    def _score_price(self, c: Pending) -> int:
        """Score matured price samples (streams.core.price_models: a forecast at age 0, and while it stays in
        force at ages h, 2h, 4h, ...), learn from the forecasts themselves, and queue the next sample of
        those still in force (only where some candidate moves: otherwise every candidate errs alike)."""
        j, h = c.target, float(self.horizons[c.target])
        made_now = self._made[c.oi, j]
        fresh = c.age == 0
        # an older sample counts only if its forecast was still in force (dropped before its price is looked
        # up: where a newer forecast replaced it, a newer price usually did too, the dear look-up below)
        live = fresh | (made_now == c.made)
        if not live.all():
            c, made_now, fresh = subset(c, live), made_now[live], fresh[live]
        st = self._state
        hists = [st[k].get("hist") for k in c.keys]
        actual = np.array([hh[-1][1] if hh and hh[-1][0] <= d else _price_at(hh, d)   # (mostly: the last price)
                           for hh, d in zip(hists, c.due.tolist(), strict=True)], dtype=float)
        p0 = c.p0
        if not fresh.all():   # the price in force when an older sample was taken
            p0 = p0.copy()
            for i in np.flatnonzero(~fresh).tolist():
                p0[i] = _price_at(hists[i], float(c.at[i]))
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(actual) & (actual > 0) & np.isfinite(p0) & (p0 > 0)
        if not ok.all():
            c, actual, p0, made_now, fresh = subset(c, ok), actual[ok], p0[ok], made_now[ok], fresh[ok]
        if not len(c.keys):
            return 0
        # weight of a forecast at age 0: the part of [0, h) it was in force (replaced since: until then)
        prev_made, prev_end = self._prev_made[c.oi, j], self._prev_end[c.oi, j]
        on = made_now == c.made
        life = np.where(on, h, np.where(prev_made == c.made, prev_end - c.made, 0.5 * (prev_made - c.made)))
        w = np.where(fresh, np.clip(life / h, 0.0, 1.0), c.w)
        self._ps.add(j, c.g, w, actual, p0, c.moves, c.published, float(c.due.max()), np.floor(c.due / h))
        if fresh.any():
            f = np.flatnonzero(fresh)
            y = np.clip(np.log(actual[f] / p0[f]), -MAX_LOG_MOVE, MAX_LOG_MOVE)
            moved = y != 0   # (the band's parts: streams.core.price_models)
            self._ps.add_residuals(j, c.g[f][moved], (y - c.published[f])[moved])
            if c.band is not None:
                self._ps.add_band(j, c.g[f], y, c.band[f], float(c.due.max()))
            lv = c.valid[f]
            if lv.any():
                sgd(self._price[j], c.g[f][lv], c.z[f][lv], y[lv], "price")
        on &= (c.moves != 0).any(axis=1)   # still in force, and some candidate moves: its next sample, at
        if on.any():                        # age h (after 0) or twice its age
            nxt = subset(c, on)
            age = np.where(nxt.age == 0, h, 2 * nxt.age)
            n = len(nxt.keys)
            nxt.at, nxt.age, nxt.w = nxt.made + age, age, age / h
            nxt.due, nxt.p0 = nxt.at + h, np.full(n, math.nan)
            nxt.z, nxt.valid = np.zeros((n, D)), np.zeros(n, dtype=bool)
            self._push(nxt)
        return len(c.keys)

    def _score_risk(self, c: Pending) -> int:
        st = self._state
        bads = [st[k].get("bad_t") for k in c.keys]
        label = np.array([_bad_within(b, d - RISK_HORIZON_S, d) if b else False
                          for b, d in zip(bads, c.due.tolist(), strict=True)], dtype=bool)
        y = label.astype(float)   # (the logistic model learns per prediction; scores are kept in time)
        if c.valid.any():
            sgd(self._risk, c.g[c.valid], c.z[c.valid], y[c.valid], "risk")
        return len(c.keys)

"""The price forecast's candidate families and their scores (streams.core.forecast publishes the best per
group and horizon).

Every candidate predicts the log-move y = log(p(t+h) / p(t)) of an offer's price over the horizon h; the
published forecast is p(t)·exp(move). A still offer (its price never moved) moves 0 under every candidate.

    naive                          0 (the last value)
    quantile-linear x s            s·ŷ, ŷ the group's linear quantile model (streams.core.learners.sgd) on
                                   the window features, s in (0.25, 0.5, 1): shrunk toward "no change"
    quantile-linear life-damped    ŷ·h / (h + gap)
    smoothed-level                 L_h - x   (simple exponential smoothing of x = log p in time: the level)
    smoothed-level life-damped     (L_h - x)·h / (h + gap)
    damped-trend                   L_f + b·(τ_f + h·(1 - 1/e)) - x   (Holt's linear trend, damped)
    seasonal-naive-week            log p(t + h - 7 d) - log p(t - 7 d)   (the same hours a week ago; 0
                                   where the history does not reach back)

where x = log p(t) and, over the offer's piecewise-constant price history (a price holds until the next
quote), L_τ = ∫ x(u) e^{-(t-u)/τ} du / τ is the level smoothed with time constant τ (the history's first
price extends to -∞, so the weights e^{-(t-t_{i+1})/τ} - e^{-(t-t_i)/τ} of its segments sum to 1);
τ_f = h/4, τ_s = h; b = (L_f - L_s) / (τ_s - τ_f) is the trend slope (a trend of slope b makes an EWMA
of constant τ lag by b·τ, hence the difference of two lags); the damped trend adds b·τ_d·(1 - e^{-h/τ_d})
with τ_d = h (a trend that fades over the horizon) to the fast level brought up to date (L_f + b·τ_f).
gap = 7 d / (price changes in the last 7 d) (7 d without one) is the offer's mean time between changes:
a forecast stays in force until the offer's next event, so where that is much longer than h the
"life-damped" candidates keep only h / (h + gap) of the move. Moves are clipped to ±MAX_LOG_MOVE.

A quiet offer moves 0 under every candidate. With its price changing at a rate r, the chance of any change
within h is 1 - e^{-h·r}. Where that is below 1/2 (h·r < ln 2: at 24 h, fewer than five changes in a week),
the log-move is exactly 0 with probability above 1/2, so its median, the forecast that minimises absolute
error, is no change, whatever size the moves that do happen may have. A group's model learns from its
active offers; without the rule it moved the forecasts of its quiet ones too. r is the larger of the
week's changes / 7 d and the changes among the history's newest DENSE points / the time they span (a
history past MAX_POINTS is thinned, so the week's count falls short for a busy offer; the newest points
never are): the rule holds back a move only where the offer is clearly quiet.

p10 and p90 (`PriceScores.band`) are the quantiles of the log-move as a mixture: no change with probability
1 - c, and otherwise the published move plus a residual drawn from the group's recent residuals of forecasts
whose price did change (the last RESID_KEEP; F their distribution). With A = c·F(-move), the chance of a
change to below the price now, the τ-quantile is move + F⁻¹(τ / c) for τ <= A, 0 (the price now) for
A < τ <= A + 1 - c, and move + F⁻¹((τ - 1 + c) / c) above. c = min(1, h·r), r the change rate above: the
chance of a change within h for a price changed on a schedule of period 1 / r, and a bound on it for any
timing (P(a change) <= the expected changes), so the band errs wide where it errs. (With the random timing's
1 - e^{-h·r} instead, a price quoted daily had 16 % of its outcomes above p90 at 24 h. One band from all of
a group's residuals was too wide for its quiet offers and too narrow for its busy ones: its pinball loss was
above the no-change band's at 24 h in two datasets.) As a median is published only while it beats no change,
so is a band: each group's bands at age 0 are scored by the pinball loss, rho_0.1(y - lo) + rho_0.9(y - hi)
with rho_tau(u) = u·(tau - [u < 0]), against the no-change band's (lo = hi = 0: |y|), both decayed as the
scores are, and where the band's is not lower (or fewer than MIN_SCORED are scored) p10 = p90 = the median.

Scores (`PriceScores`), per group and horizon: every candidate's summed absolute error in USD and the
published forecast's, scored as the forecast is used: a forecast stays in force (the engine applies its
move to the price of the moment) until the offer's next prediction for that horizon, so besides the
forecast itself (at age 0, weight min(1, life / h)) it is scored at ages h, 2h, 4h, 8h, ... while still in
force, each such sample weighted by the span of ages it stands for (age a: [a, 2a), weight a / h): its move
applied to the price at t0 + a, against the price at t0 + a + h. The candidate with the lowest weighted MAE
is published among those whose lead over naive is clear. With d = |error| - |naive's error| per sample and
weights w (in units of h), the mean lead is -d̄ = -Σwd / W, W = Σw. Samples are not independent: those whose
outcomes fall in one h-long stretch of time share its price moves (a forecast scored at several ages, the
offers of a group moving together). So the standard error is clustered by that stretch (floor(outcome
time / h)): se² = C / (C - 1) · Σ_c (S_c - W_c·d̄)² / W², with S_c = Σwd and W_c = Σw over cluster c of C,
or the per-sample se² = Σw(d - d̄)² / W² where that is larger (few clusters miss the noise within them). The
lead must exceed Z_LEAD = 2 standard errors, taken as Student's t with C - 1 degrees of freedom (2.32 at
C = 10, 2.13 at 21: the small-sample correction of a clustered standard error), once MIN_SCORED samples
are scored, W >= MIN_WEIGHT = 10 and C >= MIN_CLUSTERS = 10 (a standard error from fewer independent
outcomes is itself too uncertain). Naive is published otherwise: with nine candidates, the best of them on a
short or signal-free stream is often ahead by luck alone (or by the luck of a few stretches), and without the
test it is published and then loses to the last value. The test reads these sums decayed with a half-life of
SCORE_HALF_LIFE_S (4 weeks) of event time, as the hazard's counts are: markets change regime, and a lead
banked months ago says little about the next day (the whole-span sums are kept for the reports).

>>> terms = history_terms([[[0.0, 1.0], [3600.0, 2.0]]] * 9, [7200.0] * 9, (3600, 86_400))
>>> round(float(terms[3600]["level"][0]), 6) == round(-math.log(2) * math.exp(-1), 6)   # (relative to log p)
True
>>> float(terms[86_400]["gap"][0])   # one change in the week: 7 days between changes
604800.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from streams.core.learners import grow
from streams.core.windows import MAX_POINTS, Flat, flatten

__all__ = ["CANDIDATES", "MAX_LOG_MOVE", "PriceScores", "candidate_moves", "history_terms"]

CANDIDATES: tuple[str, ...] = ("naive", "quantile-linear x0.25", "quantile-linear x0.5", "quantile-linear",
                               "quantile-linear life-damped", "smoothed-level", "smoothed-level life-damped",
                               "damped-trend", "seasonal-naive-week")
K = len(CANDIDATES)
LINEAR = (1, 2, 3, 4)    # the candidates built on the linear model (0 where its features are not valid)
SHRINKS = (0.25, 0.5, 1.0)
MAX_LOG_MOVE = 0.7       # clip predicted log-ratios (a 2x move) against divergence on outliers
WEEK_S = 7 * 86_400.0
Z_LEAD = 2.0             # a candidate is published only while it leads naive by this many standard errors
MIN_WEIGHT = 10.0        # ... and once scored over this many horizons' worth of time in force
MIN_CLUSTERS = 10.0      # ... in this many horizon-long stretches of time (decayed as the weight is)
QUIET_LN2 = math.log(2.0)   # an offer whose P(a change within h) = 1 - e^{-h·rate} is below 1/2 moves 0
DENSE = MAX_POINTS // 2     # a history's newest points that are never thinned
SCORE_HALF_LIFE_S = 28 * 86_400.0   # the champions' scores forget at this half-life of event time
RESID_KEEP = 512         # recent log-residuals per group and horizon kept for p10/p90


def history_terms(hists: Sequence[Any], now: Any, horizons: Sequence[int],
                  flat: Flat | None = None) -> dict[int, dict[str, Any]]:
    """Per horizon h, arrays over the offers: the smoothed levels `level` (τ = h) and `fast` (τ = h/4) of
    the log price, `gap` (s between price changes) and `week` (the seasonal-naive move), from each offer's
    price history at its time `now` (see the module docstring). NaN where a history is empty or has a price
    <= 0. `flat`: the histories' `streams.core.windows.flatten()`, when the caller has it."""
    n = len(hists)
    now_a = np.asarray(now, dtype=float)
    pts, lens, off, seg = flat or flatten(list(hists))
    total = len(pts)
    nan = np.full(n, math.nan)
    if not total:
        return {h: {"level": nan, "fast": nan, "gap": np.full(n, WEEK_S), "week": np.zeros(n), "rate": np.zeros(n)}
                for h in horizons}
    nowp = now_a[seg]
    ts = np.minimum(pts[:, 0], nowp)    # (a point after now holds from now: weight 0)
    ps = pts[:, 1]
    with np.errstate(all="ignore"):
        lp = np.where(ps > 0, np.log(ps), math.nan)
    nonempty = lens > 0
    last = np.where(nonempty, off + lens - 1, 0)
    first = np.zeros(total, dtype=bool)
    first[off[nonempty]] = True
    prev_p = np.empty(total)
    prev_p[0], prev_p[1:] = math.nan, ps[:-1]
    moved = ~first & (ps != prev_p)
    n_changes = np.bincount(seg, weights=moved & (ts > nowp - WEEK_S), minlength=n)
    gap = WEEK_S / np.maximum(n_changes, 1.0)
    # the change rate, also over the newest DENSE points (never thinned: streams.core.windows), where the
    # week's count of a thinned history falls short
    s0 = off + np.maximum(lens - DENSE, 0)
    n_dense = np.bincount(seg, weights=moved & (np.arange(total) > s0[seg]), minlength=n)
    span = now_a - np.where(nonempty, pts[np.minimum(s0, total - 1), 0], now_a)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.maximum(n_changes / WEEK_S, np.where(span > 0, n_dense / span, 0.0))
    x_now = lp[last]
    out: dict[int, dict[str, Any]] = {}
    taus = sorted({float(h) for h in horizons} | {h / 4 for h in horizons})
    # every tau at once: e[i, k] = e^{-(now - t_i)/tau_k} (0 at a history's first point), e_next its successor's
    e = np.exp(np.multiply.outer(ts - nowp, 1.0 / np.array(taus)))
    e[first] = 0.0
    e_next = np.empty_like(e)
    e_next[:-1], e_next[-1] = e[1:], 1.0
    e_next[last[nonempty]] = 1.0
    with np.errstate(invalid="ignore"):
        lev = np.add.reduceat(np.where(e_next > e, (e_next - e) * lp[:, None], 0.0), off[nonempty], axis=0)
    levels: dict[float, Any] = {}
    for k, tau in enumerate(taus):
        full = nan.copy()
        full[nonempty] = lev[:, k]
        levels[tau] = full
    for h in horizons:
        # the seasonal naive: the prices in force at t - 7 d and t + h - 7 d (the last point at or before)
        week = np.zeros(n)
        at = [np.bincount(seg, weights=pts[:, 0] <= nowp - WEEK_S + d, minlength=n).astype(np.int64)
              for d in (0.0, float(h))]
        ok = nonempty & (at[0] > 0)
        if ok.any():
            i0, i1 = off + np.maximum(at[0], 1) - 1, off + np.maximum(at[1], 1) - 1
            with np.errstate(invalid="ignore"):
                week = np.where(ok, lp[np.where(ok, i1, 0)] - lp[np.where(ok, i0, 0)], 0.0)
        week[~np.isfinite(week)] = 0.0
        x = np.where(nonempty, x_now, math.nan)
        out[h] = {"level": levels[float(h)] - x, "fast": levels[h / 4] - x, "gap": gap, "week": week,
                  "rate": rate}
    return out


def candidate_moves(y_hat: Any, terms: dict[str, Any], h: int, still: Any, valid: Any) -> Any:
    """The n x K matrix of every candidate's log-move (CANDIDATES order; see the module docstring), from the
    linear model's clipped prediction `y_hat` and `history_terms(...)[h]` (levels relative to the price
    now); 0 for a still offer, and for the linear candidates where the features are not valid."""
    n = len(y_hat)
    m = np.zeros((n, K))
    lin = np.where(valid, y_hat, 0.0)
    damp = h / (h + terms["gap"])
    for c, s in zip(LINEAR, SHRINKS, strict=False):
        m[:, c] = s * lin
    m[:, 4] = lin * damp
    level, fast = terms["level"], terms["fast"]
    m[:, 5] = level
    m[:, 6] = level * damp
    tf, ts_ = h / 4, float(h)
    b = (fast - level) / (ts_ - tf)
    m[:, 7] = fast + b * (tf + h * (1 - math.exp(-1.0)))
    m[:, 8] = terms["week"]
    m[~np.isfinite(m)] = 0.0
    np.clip(m, -MAX_LOG_MOVE, MAX_LOG_MOVE, out=m)
    m[still | (h * terms["rate"] < QUIET_LN2)] = 0.0   # (a quiet offer: its median move is none)
    return m


def t_critical(z: float, dof: Any) -> Any:
    """Student's t quantile at the normal's quantile `z` for `dof` degrees of freedom (> 0), by its
    Cornish-Fisher expansion (within 0.01 of the exact value from 9 degrees of freedom: 2.316 vs 2.320
    at z = 2).

    >>> round(float(t_critical(2.0, 20)), 3), round(float(t_critical(2.0, 1e9)), 3)
    (2.133, 2.0)
    """
    nu = np.maximum(dof, 1.0)
    return z + (z ** 3 + z) / (4 * nu) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * nu * nu)


def _kept(age_s: Any) -> Any:
    """The share of a sum kept after `age_s` of event time (SCORE_HALF_LIFE_S; none lost to a negative age)."""
    return np.exp2(-np.maximum(age_s, 0.0) / SCORE_HALF_LIFE_S)


class PriceScores:
    """Per horizon and group (rows grown with `grow`): each candidate's weighted sum of absolute errors
    (`mae`), the published forecast's (`pub`), the weight scored (`n`) and the samples (`cnt`); the
    candidates' sums decayed for the champion's test (`rmae`, the weight `rn`, decayed up to `r_t`; the
    leads' cluster sums `c_*` and the open cluster `o_*`); and the recent log-residuals of the published
    forecasts at age 0 whose price changed (a ring of RESID_KEEP per group, `resid`; sorted, `srt`)."""

    def __init__(self, nh: int) -> None:
        self.nh = nh
        self.mae, self.n, self.pub = np.zeros((nh, 0, K)), np.zeros((nh, 0)), np.zeros((nh, 0))
        self.cnt = np.zeros((nh, 0))
        self.resid, self.n_resid = np.zeros((nh, 0, RESID_KEEP)), np.zeros((nh, 0))
        self.srt, self.q_at = np.zeros((nh, 0, RESID_KEEP)), np.zeros((nh, 0))   # (sorted, as of n_resid)
        # the band's pinball loss and the no-change band's (|y|), and the samples: decayed up to `b_t`
        self.bl, self.b_t = np.zeros((nh, 0, 3)), np.zeros((nh, 0))
        self.rmae, self.rn, self.r_t = np.zeros((nh, 0, K)), np.zeros((nh, 0)), np.zeros((nh, 0))
        self.rd2 = np.zeros((nh, 0, K))   # Σ w·d², d a sample's lead over naive
        # the leads' clusters (samples whose outcomes fall in one horizon-long bucket of time): over the
        # closed ones Σ S², Σ S·W and Σ W² (S: a cluster's Σ w·d per candidate, W: its Σ w), and the open one
        self.c_ss, self.c_sw, self.c_ww = np.zeros((nh, 0, K)), np.zeros((nh, 0, K)), np.zeros((nh, 0))
        self.c_n = np.zeros((nh, 0))   # the closed clusters (decayed as the weight is)
        self.o_s, self.o_w, self.o_b = np.zeros((nh, 0, K)), np.zeros((nh, 0)), np.full((nh, 0), -np.inf)

    def grow(self, cap: int) -> None:
        self.mae, self.n, self.pub = grow(self.mae, cap, 1), grow(self.n, cap, 1), grow(self.pub, cap, 1)
        self.cnt = grow(self.cnt, cap, 1)
        self.resid, self.n_resid = grow(self.resid, cap, 1), grow(self.n_resid, cap, 1)
        self.srt, self.q_at = grow(self.srt, cap, 1), grow(self.q_at, cap, 1)
        self.bl, self.b_t = grow(self.bl, cap, 1), grow(self.b_t, cap, 1)
        self.rmae, self.rn, self.r_t = grow(self.rmae, cap, 1), grow(self.rn, cap, 1), grow(self.r_t, cap, 1)
        self.rd2 = grow(self.rd2, cap, 1)
        self.c_ss, self.c_sw, self.c_ww = grow(self.c_ss, cap, 1), grow(self.c_sw, cap, 1), grow(self.c_ww, cap, 1)
        self.c_n = grow(self.c_n, cap, 1)
        self.o_s, self.o_w = grow(self.o_s, cap, 1), grow(self.o_w, cap, 1)
        b = np.full((self.nh, cap), -np.inf)
        b[:, :self.o_b.shape[1]] = self.o_b
        self.o_b = b

    def champions(self, j: int, groups: Any, min_scored: int) -> Any:
        """Per group, the candidate with the lowest weighted MAE among those that lead naive clearly (see the
        module docstring; naive, 0, otherwise and on ties)."""
        n = np.maximum(self.rn[j, groups], 1e-12)[:, None]
        m = self.rmae[j, groups] / n
        lead = m[:, :1] - m                       # the mean lead over naive (d̄ = -lead)
        o_s, o_w = self.o_s[j, groups], self.o_w[j, groups][:, None]
        ss, sw = self.c_ss[j, groups] + o_s * o_s, self.c_sw[j, groups] + o_s * o_w
        ww = self.c_ww[j, groups][:, None] + o_w * o_w
        nc = (self.c_n[j, groups] + (self.o_w[j, groups] > 0))[:, None]   # C clusters
        var = np.maximum(ss + 2 * lead * sw + lead * lead * ww, 0.0) * nc / np.maximum(nc - 1, 1.0)
        se = np.maximum(np.sqrt(var) / n,   # sqrt(C / (C - 1) · Σ_c (S_c - W_c·d̄)²) / W, and per sample:
                        np.sqrt(np.maximum(self.rd2[j, groups] / n - lead * lead, 0.0) / n))   # sqrt(Σw(d - d̄)²) / W
        enough = (self.cnt[j, groups] >= min_scored) & (self.rn[j, groups] >= MIN_WEIGHT)
        ok = enough[:, None] & (nc >= MIN_CLUSTERS) & (lead > t_critical(Z_LEAD, nc - 1) * se) & (lead > 0)
        ok[:, 0] = True
        return np.argmin(np.where(ok, m, np.inf), axis=1)   # (the first on ties: naive before the others)

    def scores(self, j: int, gg: int) -> dict[str, tuple[float, int]]:
        """Per candidate, the weighted MAE and weight the champion is chosen on (decayed: recent)."""
        n = float(self.rn[j, gg])
        return {name: (float(self.rmae[j, gg, c]) / max(n, 1e-12), int(min(n, 2**32 - 1)))   # (a UInt32 column)
                for c, name in enumerate(CANDIDATES)}

    def add(self, j: int, g: Any, w: Any, actual: Any, p0: Any, moves: Any, published: Any,
            now_t: float = 0.0, bucket: Any = None) -> None:
        """Score samples of horizon j: group, weight, the price at the horizon, the price the moves apply
        to, every candidate's move (n x K) and the published move; `now_t` the event time they are scored at,
        `bucket` each sample's cluster (its outcome's time // h; default: each sample alone)."""
        err = np.abs(actual[:, None] - p0[:, None] * np.exp(moves))
        we = w[:, None] * err
        np.add.at(self.mae[j], g, we)
        gs = np.unique(g)
        keep = _kept(now_t - self.r_t[j, gs])[:, None]
        for a, f in ((self.rmae, keep), (self.rd2, keep), (self.o_s, keep), (self.c_ss, keep * keep),
                     (self.c_sw, keep * keep)):   # (sums of squared weights decay as the square)
            a[j, gs] *= f
        for v, f in ((self.rn, keep), (self.o_w, keep), (self.c_n, keep), (self.c_ww, keep * keep)):
            v[j, gs] *= f[:, 0]
        self.r_t[j, gs] = np.maximum(self.r_t[j, gs], now_t)
        d = err - err[:, :1]   # each candidate's error over naive's
        wd = w[:, None] * d
        np.add.at(self.rmae[j], g, we)
        np.add.at(self.rd2[j], g, wd * d)
        np.add.at(self.rn[j], g, w)
        self._cluster(j, g, np.full(len(g), np.inf) if bucket is None else bucket, wd, w)
        np.add.at(self.n[j], g, w)
        np.add.at(self.cnt[j], g, 1.0)
        np.add.at(self.pub[j], g, w * np.abs(actual - p0 * np.exp(published)))

    def _cluster(self, j: int, g: Any, b: Any, wd: Any, w: Any) -> None:
        """Add the samples' leads to their clusters: a group's samples of its open bucket join it; its latest
        later bucket closes it and opens; any other bucket (earlier, or later but not the latest; and an
        infinite one: a sample alone) is closed at once."""
        alone = np.isinf(b)
        if alone.any():
            self._close(j, g[alone], wd[alone], w[alone])
            g, b, wd, w = g[~alone], b[~alone], wd[~alone], w[~alone]
        if not len(g):
            return
        order = np.lexsort((b, g))
        g, b, wd, w = g[order], b[order], wd[order], w[order]
        starts = np.flatnonzero(np.r_[True, (g[1:] != g[:-1]) | (b[1:] != b[:-1])])
        cg, cb = g[starts], b[starts]
        cs, cw = np.add.reduceat(wd, starts, axis=0), np.add.reduceat(w, starts)
        ob = self.o_b[j, cg]
        last = np.r_[cg[1:] != cg[:-1], True]   # (sorted: a group's last cluster is its latest bucket)
        same, opens = cb == ob, last & (cb > ob)
        self.o_s[j, cg[same]] += cs[same]   # (one cluster per group and bucket: no repeated index)
        self.o_w[j, cg[same]] += cw[same]
        og = cg[opens]
        full = self.o_w[j, og] > 0
        self._close(j, og[full], self.o_s[j, og[full]], self.o_w[j, og[full]])
        closed = ~same & ~opens
        self._close(j, cg[closed], cs[closed], cw[closed])
        self.o_s[j, og], self.o_w[j, og], self.o_b[j, og] = cs[opens], cw[opens], cb[opens]

    def _close(self, j: int, g: Any, s: Any, wc: Any) -> None:
        """Close clusters of groups `g` (repeats allowed) with lead sums `s` (n x K) and weights `wc`."""
        if len(g):
            np.add.at(self.c_ss[j], g, s * s)
            np.add.at(self.c_sw[j], g, s * wc[:, None])
            np.add.at(self.c_ww[j], g, wc * wc)
            np.add.at(self.c_n[j], g, 1.0)

    def add_residuals(self, j: int, g: Any, resid: Any) -> None:
        """Log-residuals of published forecasts whose price changed within the horizon (each group's, in
        order, into its ring)."""
        if not len(g):
            return
        order = np.argsort(g, kind="stable")
        gs = g[order]
        first = np.flatnonzero(np.r_[True, gs[1:] != gs[:-1]])
        rank = np.arange(len(gs)) - np.repeat(first, np.diff(np.r_[first, len(gs)]))
        pos = ((self.n_resid[j, gs] + rank) % RESID_KEEP).astype(np.int64)
        self.resid[j, gs, pos] = resid[order]
        np.add.at(self.n_resid[j], gs, 1.0)

    def add_band(self, j: int, g: Any, y: Any, band: Any, now_t: float) -> None:
        """Score the bands of forecasts at age 0 (log-moves of p10 and p90, n x 2; NaN: none) against their
        log-moves `y`, and the no-change band alike, by the pinball loss (sums decayed as the scores are)."""
        ok = np.isfinite(band).all(axis=1) & np.isfinite(y)
        if not ok.any():
            return
        g, y, band = g[ok], y[ok], band[ok]
        gs = np.unique(g)
        self.bl[j, gs] *= _kept(now_t - self.b_t[j, gs])[:, None]
        self.b_t[j, gs] = np.maximum(self.b_t[j, gs], now_t)
        lo, hi = y - band[:, 0], y - band[:, 1]
        loss = lo * (0.1 - (lo < 0)) + hi * (0.9 - (hi < 0))
        np.add.at(self.bl[j], g, np.c_[loss, np.abs(y), np.ones(len(g))])

    def band_beats_none(self, j: int, g: Any, min_scored: int) -> Any:
        """Per row: its group's band has a lower recent pinball loss than the no-change band's, over at least
        `min_scored` samples (else the band published is the median itself).

        >>> ps = PriceScores(1); ps.grow(2)
        >>> y = np.random.default_rng(0).normal(0.0, 0.1, 400)
        >>> g = np.r_[np.zeros(200, dtype=np.int64), np.ones(200, dtype=np.int64)]
        >>> band = np.tile([-0.13, 0.13], (400, 1))   # the right width for group 0's moves; group 1's: none
        >>> ps.add_band(0, g, np.where(g == 0, y, 0.0), band, now_t=0.0)
        >>> ps.band_beats_none(0, np.array([0, 1]), 30).tolist(), ps.band_beats_none(0, np.array([0]), 300).tolist()
        ([True, False], [False])
        """
        bl = self.bl[j, g]
        return (bl[:, 2] >= min_scored) & (bl[:, 0] < bl[:, 1])

    def band(self, j: int, g: Any, groups: Any, move: Any, change: Any) -> tuple[Any, Any]:
        """The log-moves of p10 and p90 per row: the quantiles of the mixture of "no change" (probability
        1 - `change`) and, given a change, the published `move` plus a residual drawn from the row's group's
        recent ones (see the module docstring); NaN where its group has none. The sorted residuals are
        recomputed per group after each new one while it keeps fewer than 64, then only after max(16, a
        quarter of those kept) new ones.

        >>> ps = PriceScores(1); ps.grow(1)
        >>> ps.add_residuals(0, np.zeros(5, dtype=np.int64), np.array([-0.2, -0.1, 0.1, 0.2, 0.3]))
        >>> lo, hi = ps.band(0, np.zeros(3, dtype=np.int64), np.array([0]), np.zeros(3), np.array([1.0, 0.5, 0.1]))
        >>> lo.round(3).tolist(), hi.round(3).tolist()   # sure to change; even odds; rarely: no change
        ([-0.2, -0.1, 0.0], [0.3, 0.2, 0.0])
        """
        n_all = self.n_resid[j, groups]
        kept = np.minimum(n_all, RESID_KEEP).astype(np.int64)
        stale = (n_all > 0) & (n_all - self.q_at[j, groups] >= np.where(kept < 64, 1, np.maximum(16, kept // 4)))
        for gg, m, n in zip(groups[stale].tolist(), kept[stale].tolist(), n_all[stale].tolist(), strict=True):
            self.srt[j, gg, :m] = np.sort(self.resid[j, gg, :m])
            self.q_at[j, gg] = n
        lo, hi = np.full(len(g), math.nan), np.full(len(g), math.nan)
        c = np.clip(np.nan_to_num(change), 0.0, 1.0)
        for gg in groups[n_all > 0].tolist():
            rows = np.flatnonzero(g == gg)
            m = int(min(self.n_resid[j, gg], RESID_KEEP))
            srt, mv, cr = self.srt[j, gg, :m], move[rows], c[rows]
            below = cr * np.searchsorted(srt, -mv, side="left") / m   # P(a change to below the price now)
            for tau, out in ((0.1, lo), (0.9, hi)):
                with np.errstate(divide="ignore", invalid="ignore"):
                    u = np.where(tau <= below, tau / cr, (tau - (1 - cr)) / cr)
                    at = np.rint(np.clip(np.nan_to_num(u), 0.0, 1.0) * (m - 1)).astype(np.int64)
                out[rows] = np.where((tau > below) & (tau <= below + 1 - cr), 0.0, mv + srt[at])
        return lo, hi

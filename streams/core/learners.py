"""The forecaster's learners, in numpy over batches (streams.core.forecast uses them): the features of many
offers at once, a per-group feature scaler and per-group linear models learned by SGD.

>>> import numpy as np
>>> rng, m = np.random.default_rng(0), Linear()
>>> m.grow(1)
>>> for _ in range(100):   # the median of y = 0.1 + 0.5 x0 (+ noise), from batches of 64
...     z = rng.normal(size=(64, D))
...     sgd(m, np.zeros(64, dtype=np.int64), z, 0.1 + 0.5 * z[:, 0] + rng.laplace(size=64) * 0.01, "price")
>>> round(float(m.b[0]), 2), round(float(m.w[0, 0]), 2)
(0.1, 0.5)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.core import windows

# scaled features are clipped to ±MAX_Z: a rare move of many standard deviations (a feature whose
# variance is tiny, e.g. the 1 h return of a price that almost never changes) otherwise makes one SGD
# step overshoot, and the weights diverge (seen on the 2022-2025 GCP history: weights ~1e10)
MAX_Z = 5.0
WEEK_S = 7 * 86_400
MINIBATCH = 16      # SGD: matured predictions of one group learned from per step (see sgd)
FEATURES = ("dev_ewma", *(f"{k}_{w}" for w in windows.WINDOWS_S for k in ("ret", "vol", "pos")), "spot",
            "available", "interrupt_p", "bad_24h", "since_bad_h", "hod_sin", "hod_cos", "how_sin", "how_cos")
D = len(FEATURES)



def bad_features(s: Mapping[str, Any], now_t: float) -> tuple[float, float]:
    bad = [t for t in s.get("bad_t", []) if t <= now_t]
    return (float(sum(1 for t in bad if now_t - t <= 86_400)),
            min(168.0, (now_t - bad[-1]) / 3600) / 168 if bad else 1.0)


def features(offer_key: str, s: Mapping[str, Any], now_t: float) -> dict[str, float]:
    """Model inputs from an offer's state (see streams.core.state): the definition `feature_matrix` computes
    for many offers at once."""
    p = float(s["usd_per_hour"])
    x: dict[str, float] = {"dev_ewma": math.log(p / float(s.get("ewma", p)))}
    for name, (ret, vol, lo, hi) in windows.window_features(s.get("hist", []), now_t).items():
        x[f"ret_{name}"] = ret
        x[f"vol_{name}"] = vol
        x[f"pos_{name}"] = (p - lo) / (hi - lo) if hi > lo else 0.5
    x["spot"] = 1.0 if offer_key.endswith("|spot") else 0.0
    x["available"] = 1.0 if s.get("available", True) else 0.0
    x["interrupt_p"] = float(s.get("interruption_p", 0.0))
    x["bad_24h"], x["since_bad_h"] = bad_features(s, now_t)
    hour = (now_t % 86_400) / 86_400 * 2 * math.pi
    week = (now_t % WEEK_S) / WEEK_S * 2 * math.pi
    x["hod_sin"], x["hod_cos"] = math.sin(hour), math.cos(hour)
    x["how_sin"], x["how_cos"] = math.sin(week), math.cos(week)
    return x


def feature_matrix(keys: Sequence[str], states: Sequence[Mapping[str, Any]], ts: Any,
                   p: Any, hists: list[windows.History] | None = None,
                   flat: windows.Flat | None = None) -> tuple[Any, Any]:
    """`features()` of many offers as rows (columns in FEATURES order; NaN where undefined), and whether
    each offer's price never moved. `hists`, `flat`: the states' histories and their `windows.flatten()`,
    when the caller has them."""
    n = len(keys)
    X = np.empty((n, D))
    # ewma (default: the price), available, interruption probability; a value that is not a number fails
    # here and the caller falls back to one offer at a time
    other = np.array([(s.get("ewma", p_i), s.get("available", True), s.get("interruption_p", 0.0))
                      for s, p_i in zip(states, p.tolist(), strict=True)], dtype=float).reshape(n, 3)
    with np.errstate(all="ignore"):
        X[:, 0] = np.log(p / other[:, 0])
        if hists is None:
            hists = [s.get("hist") or [] for s in states]
        wins, still = windows.window_features_many(hists, ts, flat)
        c = 1
        for ret, vol, lo, hi in wins.values():
            X[:, c], X[:, c + 1] = ret, vol
            X[:, c + 2] = np.where(hi > lo, (p - lo) / (hi - lo), 0.5)
            c += 3
    X[:, c] = [k.endswith("|spot") for k in keys]
    X[:, c + 1] = other[:, 1] != 0
    X[:, c + 2] = other[:, 2]
    X[:, c + 3], X[:, c + 4] = 0.0, 1.0
    for i, s in enumerate(states):
        if s.get("bad_t"):
            X[i, c + 3], X[i, c + 4] = bad_features(s, float(ts[i]))
    hour = (ts % 86_400) / 86_400 * 2 * np.pi
    week = (ts % WEEK_S) / WEEK_S * 2 * np.pi
    X[:, c + 5], X[:, c + 6], X[:, c + 7], X[:, c + 8] = np.sin(hour), np.cos(hour), np.sin(week), np.cos(week)
    return X, still


def num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def logloss(label: Any, p: Any) -> Any:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return -np.log(np.where(label, p, 1 - p))


class Linear:
    """Linear models of one target for every group (rows of W), learned by SGD (see `sgd`)."""

    def __init__(self) -> None:
        self.w = np.zeros((0, D))
        self.b = np.zeros(0)
        self.steps = np.zeros(0)

    def grow(self, n: int) -> None:
        k = n - len(self.b)
        if k > 0:
            self.w = np.vstack([self.w, np.zeros((k, D))])
            self.b, self.steps = np.concatenate([self.b, np.zeros(k)]), np.concatenate([self.steps, np.zeros(k)])

    def predict(self, g: Any, z: Any) -> Any:
        return np.einsum("ij,ij->i", z, self.w[g]) + self.b[g]


# SGD over a batch of matured predictions (one step per sample, as River did per sample, but the samples
# of a group are taken MINIBATCH at a time with the weights as they were before that mini-batch):
#   price (pinball loss at 0.5, the median):  g_i = dL/dŷ = 0.5 if ŷ_i > y_i else -0.5
#       w <- w - η_t (g_i z_i + l2 w),  b <- b - η_t g_i,   η_t = 0.01 / sqrt(t + 1), t = steps so far
#       (the gradient's size is 0.5 whatever the error, so a constant step would oscillate around the
#       median by a step; the steps shrink as 1/sqrt(t)), l2 = 1e-5
#   risk (log loss, logistic):  g_i = sigmoid(ŷ_i) - y_i,  w <- w - 0.005 (g_i z_i + l2 w),  b <- b - 0.01 g_i,
#       l2 = 1e-3
# Inputs are the group's standardised features clipped to ±MAX_Z, so one step moves ŷ by a bounded amount.
def sgd(m: Linear, g: Any, z: Any, y: Any, kind: str) -> None:
    order = np.argsort(g, kind="stable")
    g, z, y = g[order], z[order], y[order]
    n = len(g)
    first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    rank = np.arange(n) - np.repeat(first, np.diff(np.r_[first, n]))
    t0 = m.steps[g]
    for r0 in range(0, int(rank.max()) + 1, MINIBATCH):
        sel = (rank >= r0) & (rank < r0 + MINIBATCH)
        gi, zi, yi = g[sel], z[sel], y[sel]
        pred = m.predict(gi, zi)
        if kind == "price":
            grad = np.where(pred > yi, 0.5, -0.5)
            lr = 0.01 / np.sqrt(t0[sel] + rank[sel] + 1)
            ilr, l2 = lr, 1e-5
        else:
            grad = 1 / (1 + np.exp(-np.clip(pred, -30, 30))) - yi
            lr, ilr, l2 = np.full(len(gi), 0.005), np.full(len(gi), 0.01), 1e-3
        np.add.at(m.w, gi, -(lr * grad)[:, None] * zi - (lr * l2)[:, None] * m.w[gi])
        np.add.at(m.b, gi, -ilr * grad)
    np.add.at(m.steps, g, 1)


def grow(a: Any, n: int, axis: int = 0) -> Any:
    k = n - a.shape[axis]
    if k <= 0:
        return a
    shape = list(a.shape)
    shape[axis] = k
    return np.concatenate([a, np.zeros(shape)], axis=axis)




class Scaler:
    """Running mean and variance of the features, per group (rows)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = np.zeros(0), np.zeros((0, D)), np.zeros((0, D))

    def grow(self, cap: int) -> None:
        self.n, self.mean, self.m2 = grow(self.n, cap), grow(self.mean, cap), grow(self.m2, cap)

    def scale(self, g: Any, X: Any, valid: Any) -> Any:
        """Learn each group's feature means and variances from the valid rows (batched Welford/Chan merge),
        then standardise every row with its group's, clipped to ±MAX_Z (0 where a feature has no spread)."""
        if valid.any():
            gv, xv = g[valid], X[valid]
            ug, inv = np.unique(gv, return_inverse=True)
            nb = np.bincount(inv).astype(float)
            sums = np.zeros((len(ug), D))
            np.add.at(sums, inv, xv)
            mean_b = sums / nb[:, None]
            m2_b = np.zeros((len(ug), D))
            np.add.at(m2_b, inv, (xv - mean_b[inv]) ** 2)
            na = self.n[ug]
            nt = na + nb
            delta = mean_b - self.mean[ug]
            self.mean[ug] += delta * (nb / nt)[:, None]
            self.m2[ug] += m2_b + delta ** 2 * (na * nb / nt)[:, None]
            self.n[ug] = nt
        n = np.maximum(self.n[g], 1.0)
        var = self.m2[g] / n[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(var > 1e-18, (X - self.mean[g]) / np.sqrt(var), 0.0)
        z = np.clip(z, -MAX_Z, MAX_Z)
        z[~valid] = 0.0
        return z




def feature_rows(keys: Sequence[str], states: Sequence[Mapping[str, Any]], ts: Any) -> tuple[Any, Any]:
    """`feature_matrix`, one offer at a time (when a batch has an input it cannot take): NaN rows for
    the offers whose features fail."""
    X = np.full((len(keys), D), math.nan)
    still = np.zeros(len(keys), dtype=bool)
    for i, (k, s) in enumerate(zip(keys, states, strict=True)):
        try:
            x = features(k, s, float(ts[i]))
            X[i] = [x[c] for c in FEATURES]
        except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError):
            pass
        still[i] = len({round(num(p), 9) for _, p in (s.get("hist") or [])}) <= 1
    return X, still


@dataclass(slots=True)
class Pending:
    """Predictions made by one flush for one target (a price horizon's index, or -1 for risk), as arrays;
    for price also the samples of forecasts still in force (streams.core.price_models: age > 0)."""

    target: int
    keys: list[str]
    g: Any            # group index per prediction
    due: Any          # event time at which it is scored
    z: Any            # scaled features (rows of invalid samples are not learned from)
    valid: Any
    p0: Any           # the price the moves apply to (NaN: the price in force at `at`, looked up when scored)
    moves: Any        # price: every candidate's log-move (n x K); risk: unused (n x 0)
    published: Any    # price: the published log-move; risk: the published probability
    cand: Any = None  # risk: each candidate's probability (n x 3)
    oi: Any = None    # price: offer index, when the forecast was made, the sample's time, weight and age
    made: Any = None
    at: Any = None
    w: Any = None
    age: Any = None
    band: Any = None   # price: the log-moves of the band's p10 and p90 (n x 2), published or not


_ARRAYS = ("g", "due", "z", "valid", "p0", "moves", "published", "cand", "oi", "made", "at", "w", "age", "band")


def dicts(hs: tuple[int, ...], cols: list[list[float]]) -> list[dict[int, float]]:
    """Per row, {horizon: value} from one column per horizon (a dict display where it can: 4x faster)."""
    if len(hs) == 1:
        return [{hs[0]: a} for a in cols[0]]
    if len(hs) == 2:
        h0, h1 = hs
        return [{h0: a, h1: b} for a, b in zip(cols[0], cols[1], strict=True)]
    return [dict(zip(hs, r, strict=True)) for r in zip(*cols, strict=True)]


def chosen(keys: list[Any], sel: Any) -> list[Any]:
    return keys if sel.all() else [k for k, d in zip(keys, sel.tolist(), strict=True) if d]


def concat(cs: list[Pending]) -> Pending:
    out = Pending(cs[0].target, [k for c in cs for k in c.keys], *([None] * 7))
    for f in _ARRAYS:
        v = getattr(cs[0], f)
        setattr(out, f, None if v is None else np.concatenate([getattr(c, f) for c in cs]))
    return out


def subset(c: Pending, sel: Any) -> Pending:
    out = Pending(c.target, [k for k, s in zip(c.keys, sel.tolist(), strict=True) if s], *([None] * 7))
    for f in _ARRAYS:
        v = getattr(c, f)
        setattr(out, f, None if v is None else v[sel])
    return out

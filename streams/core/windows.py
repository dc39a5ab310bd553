"""Rolling price statistics over 1 h, 24 h and 7 d, from a compact change history.

Quotes arrive as changes (a price holds until the next change), so a window's statistics come from the
changes inside it plus the price in force at its start. The history keeps the changes of the longest
window plus one older point as [t, price] pairs (whole seconds, 6 significant digits) so it serialises
compactly inside the offer's table value (it is written to the changelog on every update). Past
`MAX_POINTS` changes, the older half is thinned (every other point dropped, keeping the extremes of
each dropped pair's neighbourhood approximately): statistics stay exact for sparse markets and become
approximate only for offers that change more than ~64 times a week.

>>> h = []
>>> for t, p in [(0, 1.0), (1800, 1.2), (3600, 0.9)]:
...     h = push(h, t, p)
>>> s = window_stats(h, now_t=3600, window_s=3600)
>>> s["min"], s["max"], s["n"]
(0.9, 1.2, 3)
"""

from __future__ import annotations

import bisect
import itertools
import math
from typing import Any, NamedTuple

WINDOWS_S: dict[str, int] = {"1h": 3600, "24h": 86_400, "7d": 7 * 86_400}
MAX_POINTS = 64
SMALL = 8   # window_features_many: up to this many histories, one at a time
_LONGEST = max(WINDOWS_S.values())

History = list[list[float]]


def push(hist: History, t: float, price: float) -> History:
    """A new history with (t, price) appended; points older than the 7 d window (but the last one
    before it) are dropped. Out-of-order points are ignored (the state layer already filters them)."""
    t = float(int(t))
    price = float(f"{price:.6g}")
    if hist and t < hist[-1][0]:
        return hist
    out = [*hist, [t, price]] if not hist or t > hist[-1][0] else [*hist[:-1], [t, price]]
    horizon = t - _LONGEST
    if len(out) > 1 and out[1][0] < horizon:  # something older than the one point kept before the window
        first_inside = next((i for i, (ts, _) in enumerate(out) if ts >= horizon), len(out))
        out = out[max(0, first_inside - 1):]
    if len(out) > MAX_POINTS:
        half = len(out) // 2
        old = out[:half]
        # thin the older half: of each pair keep the point further from the pair's mean (keeps extremes)
        thinned = [_extreme(old[i:i + 2]) for i in range(0, len(old), 2)]
        out = thinned + out[half:]
    return out


def _extreme(pair: History) -> list[float]:
    """Of one or two points, the one further from their mean price."""
    mean = sum(p for _, p in pair) / len(pair)
    return max(pair, key=lambda pt: abs(pt[1] - mean))


def window_stats(hist: History, now_t: float, window_s: float) -> dict[str, Any]:
    """min, max, last, start price, log-return and volatility (std of log returns between changes)."""
    if not hist:
        return {"n": 0}
    lo = now_t - window_s
    inside = [p for ts, p in hist if lo <= ts <= now_t]
    before = [p for ts, p in hist if ts < lo]
    pts = ([before[-1]] if before else []) + inside
    if not pts:
        pts = [hist[-1][1]]
    log_return, vol, lo_p, hi_p = _features(pts)
    return {"n": len(pts), "min": lo_p, "max": hi_p, "start": pts[0], "last": pts[-1],
            "log_return": log_return, "volatility": vol}


def window_features(hist: History, now_t: float) -> dict[str, tuple[float, float, float, float]]:
    """Per window name: (log_return, volatility, min, max), as `window_stats` computes them, in one pass
    over the history (the forecaster calls this on every forecast).

    >>> h = [[0.0, 1.0], [1800.0, 1.2], [3600.0, 0.9]]
    >>> f = window_features(h, 3600.0)["1h"]
    >>> s = window_stats(h, 3600.0, 3600)
    >>> f == (s["log_return"], s["volatility"], s["min"], s["max"])
    True
    """
    if not hist:
        return {name: (0.0, 0.0, math.nan, math.nan) for name in WINDOWS_S}
    ts = [p[0] for p in hist]
    end = bisect.bisect_right(ts, now_t)  # points at or before now
    prices = [p[1] for p in hist]
    # the windows nest and end together: the log returns of the longest one, sliced for the others
    starts = {name: max(0, bisect.bisect_left(ts, now_t - w) - 1) for name, w in WINDOWS_S.items()}
    s0 = min(starts.values())
    pts_all = prices[s0:end]
    if not pts_all or min(pts_all) <= 0:
        return {name: _features(prices[s:end] or [prices[-1]]) for name, s in starts.items()}
    rets_all = [math.log(b / a) for a, b in itertools.pairwise(pts_all)]
    out: dict[str, tuple[float, float, float, float]] = {}
    for name, s in starts.items():
        pts, rets = pts_all[s - s0:], rets_all[s - s0:]
        out[name] = (math.log(pts[-1] / pts[0]), _vol(rets), min(pts), max(pts))
    return out


def _features(pts: list[float]) -> tuple[float, float, float, float]:
    """(log_return, volatility, min, max) of a window's prices, as `window_stats` computes them."""
    rets = [math.log(b / a) for a, b in itertools.pairwise(pts) if a > 0 and b > 0]
    return math.log(pts[-1] / pts[0]) if pts[0] > 0 else 0.0, _vol(rets), min(pts), max(pts)


def _vol(rets: list[float]) -> float:
    """Volatility: the root mean square of log returns (0 without any)."""
    return math.sqrt(sum(r * r for r in rets) / len(rets)) if rets else 0.0


def all_windows(hist: History, now_t: float) -> dict[str, dict[str, Any]]:
    return {name: window_stats(hist, now_t, w) for name, w in WINDOWS_S.items()}


def price_at(hist: History, t: float) -> float | None:
    """The price in force at time t (the last change at or before t), if the history reaches back.

    >>> h = [[0.0, 1.0], [10.0, 2.0]]
    >>> price_at(h, -1.0), price_at(h, 0.0), price_at(h, 9.9), price_at(h, 99.0)
    (None, 1.0, 1.0, 2.0)
    """
    i = bisect.bisect_right(hist, t, key=lambda pt: pt[0])
    return hist[i - 1][1] if i else None


class Flat(NamedTuple):
    """Histories laid end to end (`flatten`): every point as a row (t, price), and per history its length and
    the offset of its first row, and per row its history's index."""

    pts: Any    # total x 2 float array
    lens: Any   # n int64
    off: Any    # n int64
    seg: Any    # total int64


def flatten(hists: list[History]) -> Flat:
    """The histories as one array (raises ValueError or TypeError where a point is not two numbers). The
    forecaster flattens a batch's histories once for its features and its price candidates: walking ~5,000
    lists of lists is most of what either costs.

    >>> f = flatten([[[0.0, 1.0], [5.0, 2.0]], [], [[1.0, 3.0]]])
    >>> f.pts.tolist(), f.lens.tolist(), f.off.tolist(), f.seg.tolist()
    ([[0.0, 1.0], [5.0, 2.0], [1.0, 3.0]], [2, 0, 1], [0, 2, 2], [0, 0, 2])
    """
    import numpy as np

    n = len(hists)
    lens = np.fromiter(map(len, hists), dtype=np.int64, count=n)
    total = int(lens.sum())
    pts = np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(hists)), dtype=float,
                      count=2 * total).reshape(total, 2)
    off = np.zeros(n, dtype=np.int64)
    np.cumsum(lens[:-1], out=off[1:])
    return Flat(pts, lens, off, np.repeat(np.arange(n), lens))


def window_features_many(hists: list[History], now: Any,
                         flat: Flat | None = None) -> tuple[dict[str, tuple[Any, Any, Any, Any]], Any]:
    """`window_features` of many histories at once (numpy arrays over the offers, `now` one time per
    history), and whether each history's price never moved. All histories are laid end to end; a window
    of one history is its points in [start, end) with end = the points at or before now and start = the
    last point before the window's start (or the first point), as `window_features` slices them. The
    forecaster computes its features for a whole batch of offers this way (one pass in numpy instead of
    one Python loop per offer). A history with a price <= 0 is left to `window_features`. `flat`: the
    histories' `flatten()`, when the caller has it.

    >>> h = [[0.0, 1.0], [1800.0, 1.2], [3600.0, 0.9]]
    >>> many, still = window_features_many([h, [[0.0, 2.0]]] * 5, [3600.0, 5.0] * 5)   # (10: in numpy)
    >>> ret, vol, lo, hi = (float(a[0]) for a in many["1h"])
    >>> (round(ret, 12), round(vol, 12), lo, hi) == tuple(round(x, 12) for x in window_features(h, 3600.0)["1h"])
    True
    >>> still.tolist()[:2]
    [False, True]
    """
    import numpy as np

    n = len(hists)
    now_a = np.asarray(now, dtype=float)
    if n <= SMALL:   # a few: numpy's cost per call outweighs the loop
        rows = [window_features(h, float(t)) for h, t in zip(hists, now_a.tolist(), strict=True)]
        small: dict[str, tuple[Any, Any, Any, Any]] = {}
        for name in WINDOWS_S:
            cols = [np.array([r[name][i] for r in rows]) for i in range(4)]
            small[name] = (cols[0], cols[1], cols[2], cols[3])
        return small, np.array([len({p for _, p in h}) <= 1 for h in hists], dtype=bool)
    pts, lens, off, seg = flat or flatten(hists)
    total = len(pts)
    if not total:
        return _empty_many(n)
    ts, ps = pts[:, 0], pts[:, 1]
    nonempty = lens > 0
    last_i = np.where(nonempty, off + lens - 1, 0)
    nowp = now_a[seg]
    end = off + np.bincount(seg, weights=ts <= nowp, minlength=n).astype(np.int64)
    bad = np.bincount(seg, weights=ps <= 0, minlength=n) > 0
    lp = np.log(np.where(ps > 0, ps, 1.0))
    r = np.empty(total)
    if total:
        r[0] = 0.0
        np.subtract(lp[1:], lp[:-1], out=r[1:])
    r2 = np.append(r * r, 0.0)
    ps_lo, ps_hi = np.append(ps, np.inf), np.append(ps, -np.inf)
    lo_all, hi_all = np.minimum.reduceat(ps_lo, off), np.maximum.reduceat(ps_hi, off)
    still = ~nonempty | (lo_all == hi_all)
    last_p = ps[last_i]
    some = end > off   # a point at or before now: else the window is the last point alone
    e1 = np.maximum(end - 1, 0)
    out: dict[str, tuple[Any, Any, Any, Any]] = {}
    pairs = np.empty(2 * n, dtype=np.int64)   # [start, end) of each window, for ufunc.reduceat
    for name, w in WINDOWS_S.items():
        before = np.bincount(seg, weights=ts < nowp - w, minlength=n).astype(np.int64)
        start = np.minimum(off + np.maximum(0, before - 1), total - 1)
        pairs[0::2], pairs[1::2] = start, end
        lo, hi = np.minimum.reduceat(ps_lo, pairs)[0::2], np.maximum.reduceat(ps_hi, pairs)[0::2]
        cnt = end - start - 1                  # log returns inside the window: points start+1 .. end-1
        pairs[0::2] = start + 1
        sq = np.where(cnt > 0, np.add.reduceat(r2, pairs)[0::2], 0.0)
        vol = np.sqrt(sq / np.maximum(cnt, 1))
        out[name] = (np.where(some, lp[e1] - lp[start], 0.0), np.where(some, vol, 0.0),
                     np.where(some, lo, last_p), np.where(some, hi, last_p))
    for i in np.flatnonzero(bad | ~nonempty):   # rare: the exact Python path
        for name, vals in window_features(hists[i], float(now_a[i])).items():
            for arr, v in zip(out[name], vals, strict=True):
                arr[i] = v
    return out, still


def _empty_many(n: int) -> tuple[dict[str, tuple[Any, Any, Any, Any]], Any]:
    """`window_features_many` of n empty histories."""
    import numpy as np

    nan = np.full(n, math.nan)
    return {name: (np.zeros(n), np.zeros(n), nan, nan) for name in WINDOWS_S}, np.ones(n, dtype=bool)

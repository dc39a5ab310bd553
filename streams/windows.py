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
from typing import Any

WINDOWS_S: dict[str, int] = {"1h": 3600, "24h": 86_400, "7d": 7 * 86_400}
MAX_POINTS = 64
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

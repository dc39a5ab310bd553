"""Pricing for column generation: reduced costs of every candidate pair against the master's duals.

For a pair column x_wo (see the model in solvers/portfolio/__init__.py) with row duals y:

    rc_wo = c_wo - g_o (y_min,w + y_max,w + y_grp,G(o) + y_tot) - p_o y_bud,w - (s_o - S_w) g_o y_spot,w - y_cap,o

A pair with rc_wo < 0 (beyond a tolerance) improves the restricted master: column generation adds the most
negative few per workload; none left means the restricted LP's optimum is the full LP's. Computed in numpy
over flat pair arrays, never per element in Python (~1.2-1.6 M pairs at 1,000 x 10,000).

Partial pricing is exact: the cache holds rc without the total-GPU row's term (its dual moves with most
re-solves and shifts every pair by -g_o y_tot, applied on the way out); after a re-solve only the pairs of
workloads, groups and capacity rows whose duals moved, and the pairs whose costs or coefficients changed
(`mark_dirty`), are re-priced. Interruptible: with `stop`, pricing runs in chunks of PRICE_CHUNK pairs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from solvers.instance import F64, I64
from solvers.portfolio.pairs import Pairs

PRICE_CHUNK = 100_000  # pairs re-priced between `stop()` checks in an interruptible pricing (a few ms)


class Pricing:
    """The pricing half of `solvers.portfolio.master.Master` (a mixin: it reads the master's rows, duals and
    per-pair copies of costs and coefficients)."""

    pairs: Pairs
    y: F64
    cost: F64
    r_min: I64
    r_max: I64
    r_bud: I64
    r_spot: I64
    r_cap: I64
    r_grp: I64
    r_tot: int
    grp_pair: I64
    spot_coef: F64
    price_pair: F64
    seg_len: I64
    by_group: I64
    group_ptr: I64
    _rc: F64 | None
    _y_rc: F64
    _dirty: list[I64]
    partial_pricings: int

    def reduced_costs(self, sel: I64 | slice = slice(None), with_total: bool = True) -> F64:
        """rc = c - a^T y for pairs (in the master or not), in numpy. `with_total=False` leaves out the
        total-GPU row's term (-g * its dual), which shifts every pair alike."""
        if isinstance(sel, slice):   # all pairs
            return self._rc_workloads(0, self.seg_len.size, with_total)
        P, y = self.pairs, self.y
        yw = y[self.r_min] + y[self.r_max]
        yg = y[self.r_grp] + (y[self.r_tot] if with_total else 0.0)
        ybud = y[self.r_bud]

        def dual(rows: I64) -> F64:   # the dual of each row; 0 where there is no row (-1)
            return np.where(rows >= 0, y[np.maximum(rows, 0)], 0.0)

        w, o = P.w[sel], P.o[sel]   # a few pairs: only their rows' duals
        rc = (self.cost[sel] - P.g[sel] * (yw[w] + yg[self.grp_pair[sel]])
              - self.price_pair[sel] * ybud[w] - self.spot_coef[sel] * dual(self.r_spot[w]) - dual(self.r_cap[o]))
        return np.asarray(rc, dtype=np.float64)

    def _rc_workloads(self, w0: int, w1: int, with_total: bool = True) -> F64:
        """`reduced_costs` of the pairs of workloads w0..w1-1 (contiguous: pairs are sorted by workload),
        with the per-workload terms by repeat; the same arithmetic per pair as over all of them."""
        P, y = self.pairs, self.y
        p0, p1 = int(P.ptr[w0]), int(P.ptr[w1])
        yw = y[self.r_min[w0:w1]] + y[self.r_max[w0:w1]]
        yg = y[self.r_grp] + (y[self.r_tot] if with_total else 0.0)
        ybud = y[self.r_bud[w0:w1]]
        r_spot = self.r_spot[w0:w1]
        ysp = np.where(r_spot >= 0, y[np.maximum(r_spot, 0)], 0.0)
        ycap = np.where(self.r_cap >= 0, y[np.maximum(self.r_cap, 0)], 0.0)
        L = self.seg_len[w0:w1]
        rc = np.repeat(yw, L)              # in place from here: ~1.6M pairs at 1,000 x 10,000
        rc += yg[self.grp_pair[p0:p1]]
        rc *= P.g[p0:p1]
        np.subtract(self.cost[p0:p1], rc, out=rc)
        t = np.repeat(ybud, L)
        t *= self.price_pair[p0:p1]
        rc -= t
        if (ysp != 0).any():
            t = np.repeat(ysp, L)
            t *= self.spot_coef[p0:p1]
            rc -= t
        if (ycap != 0).any():
            rc -= ycap[P.o[p0:p1]]
        return rc

    def mark_dirty(self, pidx: I64) -> None:
        self._dirty.append(np.asarray(pidx, np.int64))

    def price(self, stop: Callable[[], bool] | None = None) -> F64 | None:
        """Reduced costs of all pairs; re-prices only pairs whose duals or costs moved (partial
        pricing is exact: rc = c - a^T y is recomputed for every pair touched by a changed dual). The
        cached prices leave out the total-GPU row, whose dual moves with most re-solves: it is applied
        to all pairs at once on the way out. With `stop`, pricing (up to ~17 ms at 1,000 x 10,000) runs in
        chunks and gives up once `stop()` is true: None, and the cache stays consistent for the next call."""
        y = self.y
        if self._rc is None or self._y_rc.size != y.size:
            return self._full_price(stop)
        d = y != self._y_rc
        d[self.r_tot] = False
        P = self.pairs
        dw = d[self.r_min] | d[self.r_max] | d[self.r_bud] | np.where(self.r_spot >= 0, d[np.maximum(self.r_spot, 0)],
                                                                     False)
        dG = np.nonzero(d[self.r_grp])[0]
        dcap = np.nonzero(np.where(self.r_cap >= 0, d[np.maximum(self.r_cap, 0)], False))[0]
        W = dw.size
        if dw.sum() > W // 4 or dG.size > max(4, self.r_grp.size // 4):
            return self._full_price(stop)
        parts = list(self._dirty)
        for w in np.nonzero(dw)[0].tolist():
            parts.append(np.arange(P.ptr[w], P.ptr[w + 1], dtype=np.int64))
        for G in dG.tolist():
            parts.append(self.by_group[self.group_ptr[G]:self.group_ptr[G + 1]])
        for o in dcap.tolist():
            parts.append(P.by_offer[P.offer_ptr[o]:P.offer_ptr[o + 1]])
        if parts:
            mark = np.zeros(P.size, bool)
            for part in parts:
                mark[part] = True
            sel = np.flatnonzero(mark)
            if sel.size > P.size // 3:
                return self._full_price(stop)
            for i in range(0, sel.size, PRICE_CHUNK):
                if i and stop is not None and stop():
                    # the pairs re-priced so far are marked dirty (re-priced again next time: their duals
                    # may move back to the cached ones'), the others are still covered by the dual changes
                    self._dirty.append(sel[:i])
                    return None
                part = sel[i:i + PRICE_CHUNK]
                self._rc[part] = self.reduced_costs(part, with_total=False)
        self._dirty = []
        self._y_rc = y.copy()
        self.partial_pricings += 1
        return self._with_total(self._rc)

    def _full_price(self, stop: Callable[[], bool] | None = None, chunks: int = 8) -> F64 | None:
        W = self.seg_len.size
        if stop is None:
            rc = self._rc_workloads(0, W, with_total=False)
        else:
            rc = np.empty(self.pairs.size)
            ptr, step = self.pairs.ptr, max(1, -(-W // chunks))
            for w0 in range(0, W, step):
                if stop():
                    return None
                w1 = min(W, w0 + step)
                rc[int(ptr[w0]):int(ptr[w1])] = self._rc_workloads(w0, w1, with_total=False)
        self._rc = rc
        self._y_rc = self.y.copy()
        self._dirty = []
        return self._with_total(self._rc)

    def _with_total(self, rc: F64) -> F64:
        yt = float(self.y[self.r_tot])
        return rc - self.pairs.g * yt if yt != 0.0 else rc.copy()

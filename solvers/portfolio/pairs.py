"""Candidate pairs (w, o): the columns the master LP may use, as flat numpy arrays sorted by workload.

A pair exists only where it can ever be part of a valid plan (solvers/placement.py): an accepted GPU model
m(o) (throughput t_wm > 0), an allowed provider, g_o <= U_w, no spot offer when S_w = 0, the interconnect for
one instance of o, and, for replicas with a replica size r_w, g_o = r_w. Per pair:

    ratio_wo    = t*_w / t_w,m(o)          (USD per hour of the workload's best GPU: throughput-normalised)
    n_single_wo = ceil(L_w / g_o)          (instances of a single-offer plan on o)
    c_wo        = p^_wo * ratio_wo * (1 + lambda * pi_o * m_wo * h_w) + lambda * mu_w * g_o   (`pair_costs`)

with p^_wo the planning price (the p90 forecast for a risk-averse w, else the median), m_wo the instances an
interruption stops (n_single_wo for a gang, 1 for replicas) and h_w the hours it wastes (restart + state copy):
see `Instance.unit_costs` in solvers/instance.py.

`single_fits` marks pairs whose single-offer plan fits U_w, the spot share and the interconnect for its
n_single instances (and is not a replicas plan with provider/region shares, which is never one offer). It is
static: offer sizes and markets and the workloads' specs change only with a rebuild.

A plan is `rows`: ((offer, instances), ...) sorted by offer; `rows_metric` prices it with the per-pair
metric (the unit cost plus the LP's concentration price, see integer.py).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from solvers import placement as pl
from solvers.instance import F64, I64, Instance

Rows = tuple[tuple[int, int], ...]   # a plan: ((offer index, instances), ...), sorted by offer


@dataclass
class Pairs:
    """Candidate columns (w, o), sorted by workload, ptr[w]:ptr[w+1] is w's segment."""

    w: I64
    o: I64
    ptr: I64
    g: F64            # GPUs per instance
    ratio: F64        # t*_w / t_wo
    n_single: F64     # ceil(L_w / g): instances of a single-offer plan
    by_offer: I64     # pair indices sorted by offer
    offer_ptr: I64
    # a single-offer plan on the pair fits the workload's GPU count and spot share (static: the offers'
    # sizes and markets and the workloads' specs do not change without a rebuild)
    single_fits: npt.NDArray[np.bool_]

    @property
    def size(self) -> int:
        return int(self.w.size)


def build_pairs(inst: Instance) -> Pairs:
    n_models = inst.tput.shape[1]
    offers_of_model = [np.nonzero(inst.model == m)[0] for m in range(n_models)]
    ws: list[I64] = []
    os_: list[I64] = []
    for w in range(inst.n_workloads):
        ms = np.nonzero(inst.tput[w] > 0)[0]
        if not ms.size:
            continue
        o = np.concatenate([offers_of_model[m] for m in ms]) if ms.size > 1 else offers_of_model[ms[0]]
        keep = inst.allowed[w, inst.provider[o]] & (inst.gpus[o] <= inst.max_gpus[w]) & pl.pair_possible(inst, w, o)
        if inst.spot_share[w] <= 0:
            keep &= ~inst.spot[o]
        o = np.sort(o[keep])
        ws.append(np.full(o.size, w, np.int64))
        os_.append(o.astype(np.int64))
    pw = np.concatenate(ws) if ws else np.zeros(0, np.int64)
    po = np.concatenate(os_) if os_ else np.zeros(0, np.int64)
    ptr = np.searchsorted(pw, np.arange(inst.n_workloads + 1)).astype(np.int64)
    g = inst.gpus[po].astype(np.float64)
    ratio = inst.ref_tput[pw] / inst.tput[pw, inst.model[po]] if po.size else np.zeros(0)
    n_single = np.ceil(inst.min_gpus[pw] / g) if po.size else np.zeros(0)
    by_offer = np.argsort(po, kind="stable").astype(np.int64)
    offer_ptr = np.searchsorted(po[by_offer], np.arange(inst.n_offers + 1)).astype(np.int64)
    single_fits = (n_single * g <= inst.max_gpus[pw]) & ((inst.spot_share[pw] >= 1.0) | ~inst.spot[po])
    if po.size:
        # placement rules: the interconnect for the plan's instance count (a gang's n instances; a replica's
        # one), and a replicas plan with provider/region shares is never on one offer
        n_ic = np.where(inst.gang[pw], n_single, 1.0)
        linked = inst.nvlink[po] | ((inst.gpus[po] == 1) & (n_ic == 1))
        need = inst.need_ic[pw]
        ic = (need == 0) | ((need == 1) & linked) | ((need == 2) & linked & ((n_ic == 1) | inst.ib[po]))
        spread = ~inst.gang[pw] & ((inst.share_provider[pw] < 1.0) | (inst.share_region[pw] < 1.0))
        single_fits &= ic & ~spread
    return Pairs(pw, po, ptr, g, ratio, n_single, by_offer, offer_ptr, single_fits)


def pair_costs(inst: Instance, pairs: Pairs, mu: F64, sel: I64 | slice = slice(None)) -> F64:
    lam = inst.params.risk_lambda
    w, o = pairs.w[sel], pairs.o[sel]
    return np.asarray(inst.unit_costs(w, o, pairs.ratio[sel]) + lam * mu[w] * pairs.g[sel], dtype=np.float64)


def segments(pairs: Pairs, ws: I64) -> I64:
    """The pair indices of workloads `ws`, segment after segment.

    >>> P = Pairs(*(np.zeros(5, np.int64),) * 2, np.array([0, 2, 2, 5]), *(np.zeros(5),) * 3,
    ...            np.zeros(5, np.int64), np.zeros(1, np.int64), np.ones(5, np.bool_))
    >>> segments(P, np.array([2, 0])).tolist()
    [2, 3, 4, 0, 1]
    """
    start, n = pairs.ptr[ws], pairs.ptr[ws + 1] - pairs.ptr[ws]
    out: I64 = np.repeat(start - np.concatenate([[0], np.cumsum(n)[:-1]]), n) + np.arange(int(n.sum()))
    return out


def sorted_member(x: I64, sorted_codes: I64) -> npt.NDArray[np.bool_]:
    """`np.isin(x, sorted_codes)` for a sorted, unique `sorted_codes` (a binary search per element, where
    `isin` sorts both arrays on every call).

    >>> sorted_member(np.array([3, 5, 9]), np.array([1, 3, 9])).tolist()
    [True, False, True]
    """
    if not sorted_codes.size:
        return np.zeros(x.size, np.bool_)
    i = np.minimum(np.searchsorted(sorted_codes, x), sorted_codes.size - 1)
    return sorted_codes[i] == x


def rows_metric(P: Pairs, w: int, rows: Rows, metric_unit: F64, lam_mu: float | None = None) -> float:
    """The metric of w's plan `rows` (whole instances per offer): sum of instances x metric_unit over its
    pairs; with `lam_mu`, without the migration term (lam_mu per GPU). inf for no rows."""
    if not rows:
        return math.inf
    s, e = int(P.ptr[w]), int(P.ptr[w + 1])
    tot = 0.0
    for o, n in rows:
        j = bisect_left(P.o, o, s, e)
        tot += n * float(metric_unit[j])
        if lam_mu is not None:
            tot -= n * lam_mu * float(P.g[j])
    return tot

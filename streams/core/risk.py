"""The interruption-risk candidates' scores, kept in time (streams.core.forecast publishes the best).

The engine holds a pool for hours on the risk in force, so the candidates are scored in time, not per
prediction: each offer's candidates in force are scored over every hour it had capacity until its next
event (hours without a loss count as negatives, a loss that ends the period as a positive), by log-loss and
Brier (`RiskScores.score_in_force`). Scored per prediction instead, a pool that keeps losing and regaining
capacity (events at every flip, and a prediction made while it has no capacity can only be "no loss")
rewards a candidate that says ~1 % while it loses capacity every few hours it holds it. The candidate with
the lowest running log-loss per hour is published (`RiskScores.champions`).

"duration-hazard" is the pool hazard shaped by how long the pool has held capacity (proportional hazards
with a pooled, piecewise-constant shape: streams.core.hazard). "hazard-logit" recalibrates it with the
pool's recent history, per group, by a logistic model of the hourly loss probability (the model and its
learning: `RiskScores.learn`). It starts as the duration-shaped hazard itself (weight 1 on its log-odds, 0
elsewhere), so it is never worse than that before it has learnt.

>>> rs = RiskScores()
>>> rs.grow_groups(1); rs.grow_offers(1)
>>> rs.set_in_force(np.array([0]), np.array([[0.5, 0.1, 0.5, 0.5, 0.5]]), np.array([0.5]), np.array([0]))
>>> rs.score_in_force(np.array([0]), np.array([0.0]), np.array([7200.0]), np.array([True]), np.array([0.0]))
>>> float(rs.rn[0]), rs.champions(np.array([0]), min_scored=1).tolist()   # 2 hours without a loss: 10 % wins
(2.0, [1])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streams.core.hazard import Hazard
from streams.core.learners import Linear, grow, num

__all__ = ["MAX_IN_FORCE_S", "RISK_CANDIDATES", "RiskScores"]

RISK_CANDIDATES = ("base-rate", "eb-hazard", "logistic", "hazard-logit", "duration-hazard")
MAX_IN_FORCE_S = 7 * 86_400.0   # a risk in force is scored over at most a week without news of its offer
RISK_FEATURES = ("hazard_logit", "since_loss", "quiet_week", "losses_24h", "since_regained", "last_up_run",
                 "last_down_run", "down_24h")
NF = len(RISK_FEATURES)
LOGIT_LR = 0.15        # AdaGrad step of the hazard-logit model's weights shared by every group
LOGIT_LR_GROUP = 0.02  # ... and of each group's own offsets to them
LOGIT_G0 = 1e4         # the shared sums of squared gradients start here: damped first steps (a group scored
#                        cumulatively keeps the candidate that was not wild while it learnt)
LOGIT_CLIP = 12.0   # log-odds are clipped to +-this (p in ~[6e-6, 1 - 6e-6])
WEEK_H = 168.0
DAY_S = 86_400.0


def risk_features(states: Sequence[Mapping[str, Any]], eb: np.ndarray, now_t: float) -> np.ndarray:
    """One row per offer state, the columns of RISK_FEATURES:

        hazard_logit   = logit(eb), the pool hazard's log-odds (clipped to +-LOGIT_CLIP; `candidates` passes
                         the duration-shaped one)
        since_loss     = log(1 + min(hours since its last loss, 168)) / log(169)   (1: none in a week)
        quiet_week     = 1 if no loss in the last 7 days, else 0
        losses_24h     = log(1 + losses in the last 24 h)   (of the last MAX_BAD_EVENTS kept in the state)
        since_regained = log(1 + min(hours since capacity came back, 168)) / log(169)   (1: never lost)
        last_up_run    = log(1 + min(hours it held capacity before its last loss, 168)) / log(169)   (1: none)
        last_down_run  = log(1 + min(hours it was without capacity before it came back, 168)) / log(169)
                         (0: never lost, or not back since its last loss)
        down_24h       = the share of the last 24 h it was without capacity (from the state's last
                         MAX_BAD_EVENTS availability flips; 0 without any)

    Non-finite inputs give the neutral value (no loss, never lost), so a row is always finite."""
    x = np.zeros((len(states), NF))
    x[:, [1, 2, 4, 5]] = 1.0   # the row of a pool never lost (most offers), as the loop below computes it
    with np.errstate(divide="ignore", invalid="ignore"):
        pe = np.clip(np.nan_to_num(np.asarray(eb, dtype=float), nan=0.5), 1e-9, 1 - 1e-9)
        x[:, 0] = np.clip(np.log(pe / (1 - pe)), -LOGIT_CLIP, LOGIT_CLIP)
    scale = math.log1p(WEEK_H)
    for i, s in enumerate(states):
        if not s.get("bad_t") and s.get("regained_t") is None and s.get("up_run_s") is None:
            continue
        bad = [b for b in (num(t) for t in (s.get("bad_t") or ())) if math.isfinite(b) and b <= now_t]
        since = (now_t - bad[-1]) / 3600 if bad else WEEK_H
        x[i, 1] = math.log1p(min(max(since, 0.0), WEEK_H)) / scale
        x[i, 2] = float(since >= WEEK_H)
        x[i, 3] = math.log1p(sum(1 for b in bad if now_t - b <= 86_400))
        rg = num(s.get("regained_t", math.nan))
        up = (now_t - rg) / 3600 if math.isfinite(rg) else WEEK_H
        x[i, 4] = math.log1p(min(max(up, 0.0), WEEK_H)) / scale
        run = num(s.get("up_run_s", math.nan)) / 3600
        x[i, 5] = math.log1p(min(max(run, 0.0), WEEK_H) if math.isfinite(run) else WEEK_H) / scale
        if bad and math.isfinite(rg) and rg >= bad[-1]:
            x[i, 6] = math.log1p(min((rg - bad[-1]) / 3600, WEEK_H)) / scale
        x[i, 7] = down_share(s.get("flips"), now_t, DAY_S)
    return x


def down_share(flips: Any, now_t: float, window_s: float) -> float:
    """The share of (now_t - window_s, now_t] without capacity, from availability flips [[t, available], ...]
    (in time order; the state after the last holds until now). 0 without flips, or where they are not
    numbers.

    >>> down_share([[0.0, 0], [3600.0, 1], [80_000.0, 0]], 86_400.0, 86_400.0)   # 1 h, then the last 6400 s
    0.115741
    """
    if not flips:
        return 0.0
    try:
        down, end, start = 0.0, now_t, now_t - window_s
        for t, available in reversed(flips):
            t = float(t)
            if t >= end:
                continue
            if not available:
                down += end - max(t, start)
            if t <= start:
                break
            end = t
        return round(min(max(down / window_s, 0.0), 1.0), 6)
    except (TypeError, ValueError):
        return 0.0


class RiskScores:
    """Per group (rows, grown with `grow_groups`): each candidate's running log-loss and Brier sums (`ll`,
    `br`), the published risk's (`llpub`, `brpub`), the hours scored (`rn`, the trials) and the losses
    (`base`). Per offer (grown with `grow_offers`): the risk in force, each candidate's (`cand`) and the
    published one's (`pub`), and its group (`g`, -1: none yet)."""

    def __init__(self) -> None:
        nc = len(RISK_CANDIDATES)
        self.ll, self.br = np.zeros((0, nc)), np.zeros((0, nc))
        self.rn, self.base = np.zeros(0), np.zeros(0)
        self.llpub, self.brpub = np.zeros(0), np.zeros(0)
        self.cand, self.pub = np.zeros((0, nc)), np.zeros(0)
        self.g = np.zeros(0, dtype=np.int64)
        self.feat = np.zeros((0, NF))          # per offer: the hazard-logit features of its risk in force
        self._last_feat: np.ndarray | None = None
        self.ws = np.r_[1.0, np.zeros(NF)]     # the hazard-logit weights shared by all groups, the intercept last
        self.g2s = np.full(NF + 1, LOGIT_G0)   # ... their AdaGrad sums of squared gradients (from LOGIT_G0)
        self.w = np.zeros((0, NF + 1))         # per group: its offsets to them
        self.g2 = np.zeros((0, NF + 1))        # ... and theirs

    def grow_groups(self, cap: int) -> None:
        self.ll, self.br, self.rn, self.base = grow(self.ll, cap), grow(self.br, cap), grow(self.rn, cap), \
            grow(self.base, cap)
        self.llpub, self.brpub = grow(self.llpub, cap), grow(self.brpub, cap)
        self.w, self.g2 = grow(self.w, cap), grow(self.g2, cap)

    def grow_offers(self, k: int) -> None:
        """Room for `k` more offers."""
        self.cand = np.concatenate([self.cand, np.zeros((k, len(RISK_CANDIDATES)))])
        self.pub = np.concatenate([self.pub, np.zeros(k)])
        self.g = np.concatenate([self.g, np.full(k, -1, dtype=np.int64)])
        self.feat = np.concatenate([self.feat, np.zeros((k, NF))])

    def set_in_force(self, oi: np.ndarray, cand: np.ndarray, pub: np.ndarray, g: np.ndarray) -> None:
        """Offers `oi`'s new risk: in force until their next event (the features: those `candidates` last
        computed, for these offers)."""
        self.cand[oi], self.pub[oi], self.g[oi] = cand, pub, g
        if self._last_feat is not None and len(self._last_feat) == len(oi):
            self.feat[oi] = self._last_feat
        self._last_feat = None

    def candidates(self, hazard: Hazard, model: Linear, keys: list[str], gnames: list[str],
                   states: Sequence[Mapping[str, Any]], g: np.ndarray, z: np.ndarray, valid: np.ndarray,
                   horizon_h: float) -> np.ndarray:
        """Each candidate's probability of a loss within `horizon_h` for offers `keys` (of groups `gnames`,
        rows `g`, scaled features `z`), one column per RISK_CANDIDATES: the group's base rate, the pool's
        empirical-Bayes hazard (with its Spot Advisor band `band_p` as a prior of bounded weight), the logistic
        `model` of the price features (the base rate until its group has been scored, or without valid
        features), the hazard-logit model (`learn`) and the pool hazard shaped by its up-time
        (`Hazard.duration_factor_many`)."""
        base = hazard.group_probability_many(gnames, horizon_h)
        band = np.array([num(s.get("band_p", math.nan)) for s in states])
        eb = hazard.probability_many(keys, gnames, horizon_h, band)
        # the pool hazard over the next hours of its up-time: its constant rate times the pooled duration shape
        shape = hazard.duration_factor_many(keys, hazard.now_t, horizon_h)
        dur = -np.expm1(shape * np.log1p(-np.minimum(eb, 1 - 1e-12)))
        lr = 1 / (1 + np.exp(-np.clip(model.predict(g, z), -30, 30)))
        lr = np.where(valid & (self.rn[g] > 0), lr, base)
        x = risk_features(states, dur, hazard.now_t)
        self._last_feat = x
        w = self.w[g] + self.ws
        eta = np.clip((x * w[:, :NF]).sum(axis=1) + w[:, NF], -LOGIT_CLIP, LOGIT_CLIP)
        hl = 1 / (1 + np.exp(-eta))
        if horizon_h != 1.0:   # (the model is of one hour; another horizon at its rate)
            hl = 1 - (1 - hl) ** horizon_h
        return np.stack([base, eb, lr, hl, dur], axis=1)

    def score_in_force(self, oi: np.ndarray, last: np.ndarray, now: np.ndarray, exposed: np.ndarray,
                       losses: np.ndarray) -> None:
        """Score the risk in force of offers `oi` over (last, now]: every hour with capacity is a trial, the
        new losses its positives (a loss ends the period: the offer's event). Per candidate c with
        probability p, k losses over H hours with capacity:

            log-loss += k·(-log p) + max(H - k, 0)·(-log(1 - p)),   Brier += k·(1 - p)² + max(H - k, 0)·p²

        over max(H, k) trials: what an hourly check of the forecast in force would add up to."""
        g = self.g[oi]
        has = g >= 0
        with np.errstate(invalid="ignore"):
            ok = has & exposed & (now > last) & np.isfinite(last)
            hours = np.where(ok, np.minimum(now - last, MAX_IN_FORCE_S) / 3600, 0.0)
        k = np.where(has, losses, 0.0)
        trials = np.maximum(hours, k)
        sel = trials > 0
        if not sel.any():
            return
        g, k, neg, trials = g[sel], k[sel], np.maximum(hours[sel] - k[sel], 0.0), trials[sel]
        cand = np.clip(self.cand[oi[sel]], 1e-6, 1 - 1e-6)
        pub = np.clip(self.pub[oi[sel]], 1e-6, 1 - 1e-6)
        np.add.at(self.ll, g, k[:, None] * -np.log(cand) + neg[:, None] * -np.log1p(-cand))
        np.add.at(self.br, g, k[:, None] * (1 - cand) ** 2 + neg[:, None] * cand ** 2)
        np.add.at(self.llpub, g, k * -np.log(pub) + neg * -np.log1p(-pub))
        np.add.at(self.brpub, g, k * (1 - pub) ** 2 + neg * pub ** 2)
        np.add.at(self.rn, g, trials)
        np.add.at(self.base, g, k)
        self.learn(g, self.feat[oi[sel]], cand[:, RISK_CANDIDATES.index("hazard-logit")], k, trials)

    def learn(self, g: np.ndarray, x: np.ndarray, p: np.ndarray, k: np.ndarray, trials: np.ndarray) -> None:
        """One AdaGrad step of the hazard-logit weights of groups `g` from risks in force (features `x`,
        probability `p`) that saw `k` losses over `trials` hours. The model of an hour with capacity:

            P(loss) = sigmoid(w . x + b),  loss of a period = -[k log p + (n - k) log(1 - p)],  n = trials,

        whose gradient in (w, b) is -(k - n p) (x, 1); summed per group, each weight steps by
        LOGIT_LR * grad / sqrt(sum of its squared gradients) (AdaGrad: large early steps, then smaller)."""
        r = (k - trials * p)[:, None] * np.c_[x, np.ones(len(x))]
        gs = r.sum(axis=0)
        self.g2s += gs ** 2
        self.ws += LOGIT_LR * gs / np.sqrt(self.g2s + 1e-12)
        grad = np.zeros_like(self.w)
        np.add.at(grad, g, r)
        ug = np.unique(g)
        self.g2[ug] += grad[ug] ** 2
        self.w[ug] += LOGIT_LR_GROUP * grad[ug] / np.sqrt(self.g2[ug] + 1e-12)

    def champions(self, groups: np.ndarray, min_scored: int) -> np.ndarray:
        """Per group of `groups`: the candidate (index) with the lowest running log-loss per hour; one other
        than the base rate only once `min_scored` hours were scored."""
        n = self.rn[groups]
        m = self.ll[groups] / np.maximum(n, 1)[:, None]
        best = np.zeros(len(groups), dtype=np.int64)
        rows = np.arange(len(groups))
        for c in range(1, len(RISK_CANDIDATES)):
            best = np.where((n >= min_scored) & (m[:, c] < m[rows, best]), c, best)
        return best

    def scores(self, gg: int) -> dict[str, tuple[float, int]]:
        """Group `gg`'s candidates: name -> (running log-loss per hour, hours scored)."""
        n = int(self.rn[gg])
        return {c: (float(self.ll[gg, i]) / max(n, 1), n) for i, c in enumerate(RISK_CANDIDATES)}

"""What a `streams.core.forecast.Forecaster` tells about itself: its promotions (`ModelPromoted`, an A/B
outcome per group and target), the published candidate per group, a group's weights and running scores,
and the summary over all groups (published vs naive) that reports and the metrics thread read."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np

from schemas.events import ModelPromoted, deterministic_id
from streams.core.learners import Linear
from streams.core.price_models import CANDIDATES, PriceScores
from streams.core.risk import RISK_CANDIDATES, RiskScores

MIN_SCORED = 30     # a candidate other than naive is published only once scored this often (and best)


class ForecasterReports:
    """The reading side of `Forecaster` (its state is set by `Forecaster.__init__`)."""

    horizons: tuple[int, ...]
    groups: dict[str, int]
    group_names: list[str]
    skipped: dict[str, int]
    promotions: list[ModelPromoted]
    _champion: dict[tuple[str, str], str]
    _ps: PriceScores
    _rs: RiskScores
    _price: list[Linear]
    _risk: Linear

    def _note_champion(self, group: str, target: str, name: str, now_t: float, metric: str,
                       scores_of: Callable[[], Mapping[str, tuple[float, int]]]) -> None:
        """Record a promotion when the group's best candidate for `target` changes (an A/B outcome);
        `scores_of()`: candidate -> (running score, n scored)."""
        prev = self._champion.get((group, target))
        if prev is None:
            naive = "naive" if metric == "mae" else "base-rate"
            prev = self._champion[(group, target)] = naive
        if prev == name:
            return
        self._champion[(group, target)] = name
        scores = scores_of()
        (new_m, new_n), (old_m, old_n) = scores[name], scores[prev]
        if not (new_n and old_n):
            return
        self.promotions.append(ModelPromoted(
            event_id=deterministic_id("promoted", group, target, name, now_t), group=group, target=target,
            champion=name, previous=prev, metric=metric, score_champion=float(new_m),
            score_previous=float(old_m), n_scored=int(new_n),
            promoted_at=datetime.fromtimestamp(now_t, UTC)))
        del self.promotions[:-1000]

    def drain_promotions(self) -> list[ModelPromoted]:
        out = list(self.promotions)
        self.promotions.clear()
        return out

    def champions(self) -> dict[str, dict[str, str]]:
        """The published candidate per group: per horizon for price, and for risk."""
        out: dict[str, dict[str, str]] = {}
        for name in sorted(self.group_names):
            gg = np.array([self.groups[name]])
            out[name] = {**{f"{h}s": CANDIDATES[int(self._ps.champions(j, gg, MIN_SCORED)[0])]
                            for j, h in enumerate(self.horizons)},
                         "risk_1h": RISK_CANDIDATES[int(self._rs.champions(gg, MIN_SCORED)[0])]}
        return out

    def weights(self, group: str) -> dict[str, list[float]]:
        """A group's model weights per target (`price_<h>s`, `risk_1h`), the intercept last."""
        gg = self.groups[group]
        out = {f"price_{h}s": [*self._price[j].w[gg].tolist(), float(self._price[j].b[gg])]
               for j, h in enumerate(self.horizons)}
        out["risk_1h"] = [*self._risk.w[gg].tolist(), float(self._risk.b[gg])]
        return out

    def group_scores(self, group: str) -> dict[str, Any]:
        """One group's running scores: per horizon the published and naive MAE and how many were scored,
        and the risk's base rate and published log-loss."""
        gg = self.groups[group]
        out: dict[str, Any] = {}
        for j, h in enumerate(self.horizons):
            n = float(self._ps.n[j, gg])
            out[f"{h}s"] = {"n": n, "mae_model": self._ps.pub[j, gg] / n if n else None,
                            "mae_naive": self._ps.mae[j, gg, 0] / n if n else None}
        rn = float(self._rs.rn[gg])
        out["risk_1h"] = {"n": int(rn), "base_rate": self._rs.base[gg] / rn if rn else None,
                          "logloss_model": self._rs.llpub[gg] / rn if rn else None}
        return out

    def summary(self) -> dict[str, Any]:
        """Running errors per horizon over all groups (published vs naive), for reports. (Reads only: the
        metrics thread calls it while the market stage's thread works.)"""
        ng = len(self.group_names)
        n_all, pub, mae = self._ps.n, self._ps.pub, self._ps.mae
        out: dict[str, Any] = {}
        for j, h in enumerate(self.horizons):
            n = float(n_all[j, :ng].sum())
            if not n:
                out[f"{h}s"] = {"n": 0}
                continue
            out[f"{h}s"] = {"n": n, "mae_model": float(pub[j, :ng].sum()) / n,
                            "mae_naive": float(mae[j, :ng, 0].sum()) / n}
        rn, ll, br, llpub, brpub = self._rs.rn, self._rs.ll, self._rs.br, self._rs.llpub, self._rs.brpub
        n = float(rn[:ng].sum())
        if n:
            out["risk_1h"] = {"n": n, "logloss_model": float(llpub[:ng].sum()) / n,
                              "logloss_naive": float(ll[:ng, 0].sum()) / n,
                              "brier_model": float(brpub[:ng].sum()) / n, "brier_naive": float(br[:ng, 0].sum()) / n}
        if self.skipped:
            out["skipped"] = dict(self.skipped)
        return out

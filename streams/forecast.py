"""Online forecasts that earn their place: price at a few horizons (median and p10/p90) and the chance of
losing capacity or being interrupted in the next hour, each published only as far as it beats naive.

One model per offer group (provider, GPU model, market): single offers change too rarely to learn alone.

Price, per group and horizon h: a River linear model of the change y = log(p(t+h) / p(t)) under the
loss we are scored by (absolute error -> the median: quantile loss at 0.5), from the offer's rolling state
and calendar features (hour of day and of week). The published forecast is p(t)·exp(s·ŷ) with a shrink
s toward "no change" chosen online among SHRINKS = (0, 0.25, 0.5, 1): every candidate is scored on the
same stream when its horizon passes (progressive validation), and the one with the lowest running MAE is
published (s = 0 is the naive last value, so the model is published only while it beats naive). p10 and
p90 add the group's running quantiles of the published forecast's log-residuals. An offer whose price
has never moved forecasts itself exactly (median and quantiles).

Risk: candidates for P(capacity lost or interruption in (t, t+1 h]) are the group's base rate (naive),
an empirical-Bayes hazard per spot pool (streams.hazard: pool -> group -> global shrinkage, with the Spot
Advisor band as the pool's prior), and a River logistic model; all are scored by log-loss and Brier when
the hour has passed, and the one with the lowest running log-loss is published.

Bad input never raises: a non-finite feature, a price <= 0, or a clock that went backwards skips the
sample (counted in `cloudarb_forecast_samples_skipped_total{reason}`), and the forecast falls back to
naive with `model: naive`. Predictions per offer and horizon are made at most every horizon/12 of event
time, so cost stays bounded at high event rates. `Forecaster` is plain Python, used by the market stage
and the back-tester.

>>> f = Forecaster(horizons_s=(3600,))
>>> st = {"usd_per_hour": 2.0, "price_t": 0.0, "ewma": 2.0, "hist": [[0.0, 2.0]]}
>>> out = f.observe("gcp|r||a|L4|1|spot", st, now_t=0.0)
>>> out.usd_per_hour[3600], out.model[3600]
(2.0, 'naive')
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter
from pydantic_core import to_json
from river import linear_model, optim, preprocessing, stats

from schemas.events import ModelPromoted, PriceForecasted, deterministic_id
from schemas.offers import OfferKey
from streams import windows
from streams.hazard import Hazard

HORIZONS_S: tuple[int, ...] = (3600, 86_400)
RISK_HORIZON_S = 3600
MAX_LOG_MOVE = 0.7  # clip predicted log-ratios (a 2x move) against divergence on outliers
SCALER_WARMUP, SCALER_EVERY = 500, 8  # the feature scaler learns from every forecast, then from every 8th
# scaled features are clipped to ±MAX_Z: a rare move of many standard deviations (a feature whose
# variance is tiny, e.g. the 1 h return of a price that almost never changes) otherwise makes one SGD
# step overshoot, and the weights diverge (seen on the 2022-2025 GCP history: weights ~1e10)
MAX_Z = 5.0
MIN_SCORED = 30     # a candidate other than naive is published only once scored this often (and best)
SHRINKS: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)   # published move = shrink x the model's predicted move
RISK_CANDIDATES = ("base-rate", "eb-hazard", "river-logreg")
WEEK_S = 7 * 86_400

SKIPPED = Counter("cloudarb_forecast_samples_skipped_total",
                  "forecaster samples skipped (the forecast falls back to naive)", ["reason"])


def _group(offer_key: str) -> str:
    provider, _, _, _, gpu, _, market = offer_key.split("|")
    return f"{provider}|{gpu}|{market}"


def features(offer_key: str, s: Mapping[str, Any], now_t: float) -> dict[str, float]:
    """Model inputs from an offer's state (see streams.state)."""
    p = float(s["usd_per_hour"])
    x: dict[str, float] = {"dev_ewma": math.log(p / float(s.get("ewma", p)))}
    for name, (ret, vol, lo, hi) in windows.window_features(s.get("hist", []), now_t).items():
        x[f"ret_{name}"] = ret
        x[f"vol_{name}"] = vol
        x[f"pos_{name}"] = (p - lo) / (hi - lo) if hi > lo else 0.5
    x["spot"] = 1.0 if offer_key.endswith("|spot") else 0.0
    x["available"] = 1.0 if s.get("available", True) else 0.0
    x["interrupt_p"] = float(s.get("interruption_p", 0.0))
    bad = [t for t in s.get("bad_t", []) if t <= now_t]
    x["bad_24h"] = float(sum(1 for t in bad if now_t - t <= 86_400))
    x["since_bad_h"] = min(168.0, (now_t - bad[-1]) / 3600) / 168 if bad else 1.0
    hour = (now_t % 86_400) / 86_400 * 2 * math.pi
    week = (now_t % WEEK_S) / WEEK_S * 2 * math.pi
    x["hod_sin"], x["hod_cos"] = math.sin(hour), math.cos(hour)
    x["how_sin"], x["how_cos"] = math.sin(week), math.cos(week)
    return x


def _logloss(label: bool, p: float) -> float:
    p = min(1 - 1e-6, max(1e-6, p))
    return -math.log(p if label else 1 - p)


def _price_model() -> Any:
    # quantile-loss gradients are +-0.5 whatever the error: a constant step would oscillate around the
    # median by a step's size, so the steps shrink as 1/sqrt(n)
    return linear_model.LinearRegression(optimizer=optim.SGD(optim.schedulers.InverseScaling(0.01, 0.5)),
                                         loss=optim.losses.Quantile(0.5), l2=1e-5, clip_gradient=1.0,
                                         intercept_lr=optim.schedulers.InverseScaling(0.01, 0.5))


def _risk_model() -> Any:
    return linear_model.LogisticRegression(optimizer=optim.SGD(0.005), l2=1e-3, clip_gradient=1.0)


def _never_moved(s: Mapping[str, Any]) -> bool:
    hist = s.get("hist") or []
    return len({round(float(p), 9) for _, p in hist}) <= 1


def shrink_name(s: float) -> str:
    return "naive" if s == 0 else ("river-quantile-linreg" if s == 1 else f"river-quantile-linreg x{s:g}")


@dataclass
class HorizonScores:
    """Progressive-validation scores of one group's price candidates at one horizon."""

    model: Any = field(default_factory=_price_model)
    mae: dict[float, Any] = field(default_factory=lambda: {s: stats.Mean() for s in SHRINKS})
    published: Any = field(default_factory=stats.Mean)    # MAE of what was published
    resid_q: dict[float, Any] = field(default_factory=lambda: {q: stats.Quantile(q) for q in (0.1, 0.9)})

    def champion(self) -> float:
        naive = self.mae[0.0]
        best = 0.0
        for s in SHRINKS[1:]:
            m = self.mae[s]
            if m.n >= MIN_SCORED and m.get() < (self.mae[best].get() if best else naive.get()):
                best = s
        return best


@dataclass
class GroupModels:
    """A group's models share one feature scaler (learned on every forecast's features, so inputs are
    scaled once per forecast rather than once per model)."""

    scaler: Any = field(default_factory=preprocessing.StandardScaler)
    seen: int = 0
    horizons: dict[int, HorizonScores] = field(default_factory=dict)
    risk: Any = field(default_factory=_risk_model)
    risk_base: Any = field(default_factory=stats.Mean)
    logloss: dict[str, Any] = field(default_factory=lambda: {c: stats.Mean() for c in RISK_CANDIDATES})
    brier: dict[str, Any] = field(default_factory=lambda: {c: stats.Mean() for c in RISK_CANDIDATES})
    logloss_published: Any = field(default_factory=stats.Mean)
    brier_published: Any = field(default_factory=stats.Mean)

    def for_horizon(self, h: int) -> HorizonScores:
        if h not in self.horizons:
            self.horizons[h] = HorizonScores()
        return self.horizons[h]

    def risk_champion(self) -> str:
        best = "base-rate"
        for c in RISK_CANDIDATES[1:]:
            m = self.logloss[c]
            if m.n >= MIN_SCORED and m.get() < self.logloss[best].get():
                best = c
        return best


@dataclass(frozen=True, slots=True)
class Forecast:
    offer_key: str
    made_t: float
    usd_per_hour: dict[int, float]                  # horizon_s -> published median forecast
    interruption_probability_next_hour: float
    model_used: dict[int, bool]                     # horizon_s -> True when a model (not naive) was published
    risk_model_used: bool
    mae_model: dict[int, float | None]              # running MAE of the published forecasts
    mae_naive: dict[int, float | None]
    n_scored: dict[int, int]
    risk_logloss_model: float | None                # of the published risk
    risk_logloss_naive: float | None
    p0_usd_per_hour: float | None = None            # the offer's price when the forecast was made
    p10_usd_per_hour: dict[int, float] = field(default_factory=dict)
    p90_usd_per_hour: dict[int, float] = field(default_factory=dict)
    model: dict[int, str] = field(default_factory=dict)   # horizon_s -> the published candidate's name
    risk_model: str = "base-rate"

    def model_name(self, h: int) -> str:
        return self.model.get(h) or ("model" if self.model_used.get(h) else "naive")


@dataclass(slots=True)
class _Pending:
    kind: str              # "price" | "risk"
    offer_key: str
    horizon: int
    x: dict[str, float] | None   # scaled features (None: not learnable, e.g. non-finite)
    p0: float
    y_hat: float           # price: the model's raw log-move; risk: unused
    published: float       # price: the published forecast; risk: the published probability
    risk_p: dict[str, float] = field(default_factory=dict)   # risk: each candidate's probability


class Forecaster:
    """Online learners per offer group; `observe()` after each state update, `advance()` as time passes."""

    def __init__(self, horizons_s: tuple[int, ...] = HORIZONS_S, max_pending: int = 200_000) -> None:
        self.horizons = horizons_s
        self.groups: dict[str, GroupModels] = {}
        self.pending: list[tuple[float, int, _Pending]] = []  # heap of (due time, sequence, prediction)
        self.last_made: dict[tuple[str, int], float] = {}
        self.latest: dict[str, Forecast] = {}
        self.hist: dict[str, list[list[float]]] = {}
        self.bad: dict[str, list[float]] = {}
        self.hazard = Hazard()
        self.max_pending = max_pending
        self._seq = 0
        self.scored = 0
        self.skipped: dict[str, int] = {}
        self._last_t: dict[str, float] = {}
        self._by_offer: dict[str, tuple[str, GroupModels]] = {}   # offer key -> its group (a cache)
        self._champion: dict[tuple[str, str], str] = {}   # (group, target) -> the published candidate
        self.promotions: deque[ModelPromoted] = deque(maxlen=1000)   # drained by the caller (drain_promotions)

    def _models(self, offer_key: str) -> GroupModels:
        return self._group_of(offer_key)[1]

    def _group_of(self, offer_key: str) -> tuple[str, GroupModels]:
        hit = self._by_offer.get(offer_key)
        if hit is None:
            g = _group(offer_key)
            if g not in self.groups:
                self.groups[g] = GroupModels()
            hit = self._by_offer[offer_key] = (g, self.groups[g])
        return hit

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        SKIPPED.labels(reason).inc()

    def observe(self, offer_key: str, s: Mapping[str, Any], now_t: float) -> Forecast | None:
        """Update with the offer's new state; returns a fresh forecast when one is due, else None."""
        if not math.isfinite(now_t):
            self._skip("clock")
            return None
        last = self._last_t.get(offer_key)
        if last is not None and now_t < last:   # a clock jump backwards: learn nothing from it
            self._skip("clock")
            return None
        self._last_t[offer_key] = now_t
        seen = self.bad.get(offer_key)
        last_bad = seen[-1] if seen else -math.inf
        self.hist[offer_key] = s.get("hist", [])
        self.bad[offer_key] = list(s.get("bad_t", []))   # (the state keeps the last few: count the new ones)
        gname, g = self._group_of(offer_key)
        self.hazard.observe(offer_key, gname, now_t, sum(1 for t in self.bad[offer_key] if t > last_bad))
        self.advance(now_t)
        if "usd_per_hour" not in s:
            return None
        due = [h for h in self.horizons if now_t - self.last_made.get((offer_key, h), -math.inf) >= h / 12]
        if not due:
            return None
        p0 = float(s["usd_per_hour"])
        if not (math.isfinite(p0) and p0 > 0):
            self._skip("price")
            return None
        try:
            raw_x: dict[str, float] | None = features(offer_key, s, now_t)
        except (ValueError, ZeroDivisionError, TypeError, KeyError):
            raw_x = None
        if raw_x is None or not all(math.isfinite(v) for v in raw_x.values()):
            self._skip("feature")
            x = None
        else:
            g.seen += 1
            if g.seen <= SCALER_WARMUP or g.seen % SCALER_EVERY == 0:  # statistics settle: subsample after warm-up
                g.scaler.learn_one(raw_x)
            x = {k: max(-MAX_Z, min(MAX_Z, v)) for k, v in g.scaler.transform_one(raw_x).items()}
        still = _never_moved(s)
        prices: dict[int, float] = {}
        p10: dict[int, float] = {}
        p90: dict[int, float] = {}
        names: dict[int, str] = {}
        for h in self.horizons:
            hs = g.for_horizon(h)
            y_hat = 0.0
            if x is not None:
                y_hat = max(-MAX_LOG_MOVE, min(MAX_LOG_MOVE, float(hs.model.predict_one(x) or 0.0)))
            champ_s = hs.champion()
            if self._champion.get((gname, f"price_{h}s"), "naive") != shrink_name(champ_s):   # (rare)
                self._note_champion(gname, f"price_{h}s", shrink_name(champ_s), now_t, "mae",
                                    {shrink_name(k): m for k, m in hs.mae.items()})
            shrink = 0.0 if (still or x is None) else champ_s
            move = shrink * y_hat
            prices[h] = p0 * math.exp(move) if move else p0
            names[h] = shrink_name(shrink)
            q10, q90 = hs.resid_q[0.1].get(), hs.resid_q[0.9].get()
            p10[h] = prices[h] if still or q10 is None else p0 * math.exp(max(-MAX_LOG_MOVE, move + min(0.0, q10)))
            p90[h] = prices[h] if still or q90 is None else p0 * math.exp(min(MAX_LOG_MOVE, move + max(0.0, q90)))
            if h in due:   # (every candidate of a still offer publishes p0, and is scored so)
                self.last_made[(offer_key, h)] = now_t
                self._push(now_t + h, _Pending("price", offer_key, h, x, p0, 0.0 if still else y_hat, prices[h]))
        risk_p = self._risk_candidates(offer_key, gname, g, s, x)
        champ = g.risk_champion()
        self._note_champion(gname, "risk_1h", champ, now_t, "logloss", g.logloss)
        p_risk = risk_p[champ]
        if RISK_HORIZON_S in due or (offer_key, -1) not in self.last_made:
            self.last_made[(offer_key, -1)] = now_t
            self._push(now_t + RISK_HORIZON_S, _Pending("risk", offer_key, RISK_HORIZON_S, x, p0, 0.0, p_risk,
                                                        risk_p))
        f = Forecast(
            offer_key=offer_key, made_t=now_t, usd_per_hour=prices, interruption_probability_next_hour=p_risk,
            model_used={h: names[h] != "naive" for h in self.horizons}, risk_model_used=champ != "base-rate",
            mae_model={h: _get(g.for_horizon(h).published) for h in self.horizons},
            mae_naive={h: _get(g.for_horizon(h).mae[0.0]) for h in self.horizons},
            n_scored={h: int(g.for_horizon(h).published.n) for h in self.horizons},
            risk_logloss_model=_get(g.logloss_published), risk_logloss_naive=_get(g.logloss["base-rate"]),
            p0_usd_per_hour=p0, p10_usd_per_hour=p10, p90_usd_per_hour=p90, model=names, risk_model=champ,
        )
        self.latest[offer_key] = f
        return f

    def _note_champion(self, group: str, target: str, name: str, now_t: float, metric: str,
                       scores: Mapping[str, Any]) -> None:
        """Record a promotion when the group's best candidate for `target` changes (an A/B outcome)."""
        prev = self._champion.get((group, target))
        if prev is None:
            naive = "naive" if metric == "mae" else "base-rate"
            prev = self._champion[(group, target)] = naive
        if prev == name:
            return
        self._champion[(group, target)] = name
        new_m, old_m = scores[name], scores[prev]
        if not (new_m.n and old_m.n):
            return
        from datetime import UTC, datetime

        self.promotions.append(ModelPromoted(
            event_id=deterministic_id("promoted", group, target, name, now_t), group=group, target=target,
            champion=name, previous=prev, metric=metric, score_champion=float(new_m.get()),
            score_previous=float(old_m.get()), n_scored=int(new_m.n),
            promoted_at=datetime.fromtimestamp(now_t, UTC)))

    def drain_promotions(self) -> list[ModelPromoted]:
        out = list(self.promotions)
        self.promotions.clear()
        return out

    def _risk_candidates(self, offer_key: str, gname: str, g: GroupModels, s: Mapping[str, Any],
                         x: dict[str, float] | None) -> dict[str, float]:
        base = g.risk_base.get() if g.risk_base.n else 0.0
        band = s.get("interruption_p")
        try:
            band_p = float(band) if band is not None else None
        except (TypeError, ValueError):
            band_p = None
        eb = self.hazard.probability(offer_key, gname, RISK_HORIZON_S / 3600,
                                     band_p if band_p is not None and math.isfinite(band_p) else None)
        lr = float(g.risk.predict_proba_one(x).get(True, 0.0)) if (x is not None and g.logloss["river-logreg"].n) \
            else base
        return {"base-rate": base, "eb-hazard": eb, "river-logreg": lr}

    def _push(self, due_t: float, item: _Pending) -> None:
        self._seq += 1
        heapq.heappush(self.pending, (due_t, self._seq, item))
        if len(self.pending) > self.max_pending:  # bounded memory: drop the oldest-due
            heapq.heappop(self.pending)

    def advance(self, now_t: float) -> int:
        """Score and learn from every prediction whose horizon has passed by event time `now_t`."""
        n = 0
        while self.pending and self.pending[0][0] <= now_t:
            due_t, _, it = heapq.heappop(self.pending)
            g = self._models(it.offer_key)
            if it.kind == "price":
                actual = windows.price_at(self.hist.get(it.offer_key, []), due_t)
                if actual is None or not (actual > 0 and math.isfinite(actual)):
                    continue
                hs = g.for_horizon(it.horizon)
                y = max(-MAX_LOG_MOVE, min(MAX_LOG_MOVE, math.log(actual / it.p0)))
                for sh in SHRINKS:
                    hs.mae[sh].update(abs(actual - it.p0 * math.exp(sh * it.y_hat)))
                hs.published.update(abs(actual - it.published))
                hs.resid_q[0.1].update(y - math.log(it.published / it.p0))
                hs.resid_q[0.9].update(y - math.log(it.published / it.p0))
                if it.x is not None:
                    hs.model.learn_one(it.x, y)
            else:
                start = due_t - RISK_HORIZON_S
                label = any(start < t <= due_t for t in self.bad.get(it.offer_key, []))
                for c, p in it.risk_p.items():
                    g.logloss[c].update(_logloss(label, p))
                    g.brier[c].update((p - (1.0 if label else 0.0)) ** 2)
                g.logloss_published.update(_logloss(label, it.published))
                g.brier_published.update((it.published - (1.0 if label else 0.0)) ** 2)
                g.risk_base.update(1.0 if label else 0.0)
                if it.x is not None:
                    g.risk.learn_one(it.x, label)
            n += 1
        self.scored += n
        return n

    def champions(self) -> dict[str, dict[str, str]]:
        """The published candidate per group: per horizon for price, and for risk."""
        return {name: {**{f"{h}s": shrink_name(hs.champion()) for h, hs in sorted(g.horizons.items())},
                       "risk_1h": g.risk_champion()} for name, g in sorted(self.groups.items())}

    def summary(self) -> dict[str, Any]:
        """Running errors per horizon over all groups (published vs naive), for reports."""
        out: dict[str, Any] = {}
        for h in self.horizons:
            hs = [g.horizons[h] for g in self.groups.values() if h in g.horizons]
            n = sum(x.published.n for x in hs)
            if not n:
                out[f"{h}s"] = {"n": 0}
                continue
            out[f"{h}s"] = {"n": n, "mae_model": sum(x.published.get() * x.published.n for x in hs) / n,
                            "mae_naive": sum(x.mae[0.0].get() * x.mae[0.0].n for x in hs) / n}
        n = sum(g.logloss_published.n for g in self.groups.values())
        if n:
            def avg(attr: str, cand: str | None = None) -> float:
                vals = [(getattr(g, attr) if cand is None else getattr(g, attr)[cand]) for g in self.groups.values()]
                return sum(v.get() * v.n for v in vals if v.n) / max(1, sum(v.n for v in vals))

            out["risk_1h"] = {"n": n, "logloss_model": avg("logloss_published"),
                              "logloss_naive": avg("logloss", "base-rate"),
                              "brier_model": avg("brier_published"), "brier_naive": avg("brier", "base-rate")}
        if self.skipped:
            out["skipped"] = dict(self.skipped)
        return out


def _get(m: Any) -> float | None:
    return float(m.get()) if m.n else None


def forecast_events(offer: OfferKey, f: Forecast, now: Any) -> list[PriceForecasted]:
    """One PriceForecasted per horizon, with the group's running errors (model vs last-value naive)."""
    from datetime import UTC, datetime

    made = datetime.fromtimestamp(f.made_t, UTC)
    # built from already-valid values (the model's output is clipped and finite): skip re-validation
    return [
        PriceForecasted.model_construct(
            event_id=deterministic_id("forecast", f.offer_key, f.made_t, h), offer=offer, forecast_at=made,
            horizon_s=h, usd_per_hour=f.usd_per_hour[h],
            interruption_probability_next_hour=f.interruption_probability_next_hour,
            model=f.model_name(h), mae_model=f.mae_model[h], mae_naive=f.mae_naive[h], n_scored=f.n_scored[h],
            usd_per_hour_p10=f.p10_usd_per_hour.get(h), usd_per_hour_p90=f.p90_usd_per_hour.get(h),
        )
        for h in sorted(f.usd_per_hour)
    ]


def forecast_records(offer_json: str, f: Forecast) -> list[bytes]:
    """`forecast_events(...)` as JSON, encoded directly: the same bytes as each event's `model_dump_json()`
    at ~1/20 of the cost (building and serialising the models was a fifth of the market stage's time in
    a replay). `offer_json` is the offer's `model_dump_json()` (callers cache it per offer).

    >>> o = OfferKey(provider="gcp", region="r", instance_type="a", gpu_model="L4", gpus_per_instance=1,
    ...              market="spot")
    >>> f = Forecaster(horizons_s=(3600,)).observe(o.key, {"usd_per_hour": 2.0, "price_t": 0.0}, now_t=0.0)
    >>> forecast_records(o.model_dump_json(), f) == [e.model_dump_json().encode() for e in forecast_events(o, f, None)]
    True
    """
    made = _utc_iso(f.made_t)
    head = f'"event_type":"PriceForecasted","offer":{offer_json},"forecast_at":"{made}",'.encode()
    out = []
    for h in sorted(f.usd_per_hour):
        rest = to_json({
            "horizon_s": h, "usd_per_hour": f.usd_per_hour[h],
            "interruption_probability_next_hour": f.interruption_probability_next_hour,
            "model": f.model_name(h), "mae_model": f.mae_model[h], "mae_naive": f.mae_naive[h],
            "n_scored": f.n_scored[h], "usd_per_hour_p10": f.p10_usd_per_hour.get(h),
            "usd_per_hour_p90": f.p90_usd_per_hour.get(h),
        }, inf_nan_mode="null")   # (as pydantic writes a model)
        out.append(b'{"event_id":"%s",%s%s' % (deterministic_id("forecast", f.offer_key, f.made_t, h).encode(), head,
                                                rest[1:]))
    return out


def _utc_iso(t: float) -> str:
    """A UNIX time as pydantic serialises a UTC datetime ('Z', microseconds only when not zero)."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")

"""Online forecasts with River: price at a few horizons, and the chance of losing capacity or being
interrupted in the next hour, each scored online against a naive baseline.

One model per offer group (provider, GPU model, market): single offers change too rarely to learn alone.

Price: the model predicts the log-ratio y = log(p(t+h) / p(t)) from features of the offer's rolling
state; the forecast is p(t)·exp(ŷ). The naive baseline is the last value, p(t). When event time passes
t+h, the true p(t+h) (the price in force then) is known, the model learns from (x, y), and both
absolute errors are added to the group's running MAE.

Risk: a logistic model predicts P(capacity lost or interruption in (t, t+1 h]); the baseline is the
group's running base rate. Both are scored by log-loss when the hour has passed.

Predictions per offer and horizon are made at most every horizon/12 of event time, so cost stays
bounded at high event rates. `Forecaster` is plain Python, used by the Faust agent and the back-tester.

>>> f = Forecaster(horizons_s=(3600,))
>>> st = {"usd_per_hour": 2.0, "price_t": 0.0, "ewma": 2.0, "hist": [[0.0, 2.0]]}
>>> out = f.observe("gcp|r||a|L4|1|spot", st, now_t=0.0)
>>> out.usd_per_hour[3600] > 0
True
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import to_json
from river import linear_model, optim, preprocessing, stats

from schemas.events import PriceForecasted, deterministic_id
from schemas.offers import OfferKey
from streams import windows

HORIZONS_S: tuple[int, ...] = (3600, 86_400)
RISK_HORIZON_S = 3600
MAX_LOG_MOVE = 0.7  # clip predicted log-ratios (a 2x move) against divergence on outliers
SCALER_WARMUP, SCALER_EVERY = 500, 8  # the feature scaler learns from every forecast, then from every 8th
# scaled features are clipped to ±MAX_Z: a rare move of many standard deviations (a feature whose
# variance is tiny, e.g. the 1 h return of a price that almost never changes) otherwise makes one SGD
# step overshoot, and the weights diverge (seen on the 2022-2025 GCP history: weights ~1e10)
MAX_Z = 5.0
MIN_SCORED = 30     # a model's forecast is used only once it has been scored this often and beats its baseline


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
    x["hod_sin"], x["hod_cos"] = math.sin(hour), math.cos(hour)
    return x


def _logloss(label: bool, p: float) -> float:
    p = min(1 - 1e-6, max(1e-6, p))
    return -math.log(p if label else 1 - p)


def _price_model() -> Any:
    return linear_model.LinearRegression(optimizer=optim.SGD(0.001), l2=1e-3, intercept_lr=0.001, clip_gradient=1.0)


def _risk_model() -> Any:
    return linear_model.LogisticRegression(optimizer=optim.SGD(0.005), l2=1e-3, clip_gradient=1.0)


@dataclass
class GroupModels:
    """A group's models share one feature scaler (learned on every forecast's features, so inputs are
    scaled once per forecast rather than once per model)."""

    scaler: Any = field(default_factory=preprocessing.StandardScaler)
    seen: int = 0
    price: dict[int, Any] = field(default_factory=dict)
    mae_model: dict[int, Any] = field(default_factory=dict)
    mae_naive: dict[int, Any] = field(default_factory=dict)
    risk: Any = field(default_factory=_risk_model)
    risk_base: Any = field(default_factory=stats.Mean)
    logloss_model: Any = field(default_factory=stats.Mean)
    logloss_naive: Any = field(default_factory=stats.Mean)

    def for_horizon(self, h: int) -> Any:
        if h not in self.price:
            self.price[h], self.mae_model[h], self.mae_naive[h] = _price_model(), stats.Mean(), stats.Mean()
        return self.price[h]


@dataclass(frozen=True, slots=True)
class Forecast:
    offer_key: str
    made_t: float
    usd_per_hour: dict[int, float]                  # horizon_s -> forecast (model, or naive while it loses)
    interruption_probability_next_hour: float
    model_used: dict[int, bool]                     # horizon_s -> True when the model (not naive) was used
    risk_model_used: bool
    mae_model: dict[int, float | None]
    mae_naive: dict[int, float | None]
    n_scored: dict[int, int]
    risk_logloss_model: float | None
    risk_logloss_naive: float | None
    p0_usd_per_hour: float | None = None            # the offer's price when the forecast was made


@dataclass(slots=True)
class _Pending:
    kind: str              # "price" | "risk"
    offer_key: str
    horizon: int
    x: dict[str, float]    # scaled features
    p0: float
    y_hat: float


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
        self.max_pending = max_pending
        self._seq = 0
        self.scored = 0
        self._by_offer: dict[str, GroupModels] = {}   # offer key -> its group's models (a cache)

    def _models(self, offer_key: str) -> GroupModels:
        models = self._by_offer.get(offer_key)
        if models is None:
            g = _group(offer_key)
            if g not in self.groups:
                self.groups[g] = GroupModels()
            models = self._by_offer[offer_key] = self.groups[g]
        return models

    def observe(self, offer_key: str, s: Mapping[str, Any], now_t: float) -> Forecast | None:
        """Update with the offer's new state; returns a fresh forecast when one is due, else None."""
        self.hist[offer_key] = s.get("hist", [])
        self.bad[offer_key] = list(s.get("bad_t", []))
        self.advance(now_t)
        if "usd_per_hour" not in s:
            return None
        due = [h for h in self.horizons if now_t - self.last_made.get((offer_key, h), -math.inf) >= h / 12]
        if not due:
            return None
        g = self._models(offer_key)
        raw_x = features(offer_key, s, now_t)
        g.seen += 1
        if g.seen <= SCALER_WARMUP or g.seen % SCALER_EVERY == 0:  # its statistics settle: subsample after warm-up
            g.scaler.learn_one(raw_x)
        x = {k: max(-MAX_Z, min(MAX_Z, v)) for k, v in g.scaler.transform_one(raw_x).items()}
        p0 = float(s["usd_per_hour"])
        prices: dict[int, float] = {}
        used: dict[int, bool] = {}
        for h in self.horizons:
            y_hat = max(-MAX_LOG_MOVE, min(MAX_LOG_MOVE, float(g.for_horizon(h).predict_one(x) or 0.0)))
            mm, mn = g.mae_model[h], g.mae_naive[h]
            used[h] = mm.n >= MIN_SCORED and mm.get() < mn.get()
            prices[h] = p0 * math.exp(y_hat) if used[h] else p0
            if h in due:
                self.last_made[(offer_key, h)] = now_t
                self._push(now_t + h, _Pending("price", offer_key, h, x, p0, y_hat))
        p_model = float(g.risk.predict_proba_one(x).get(True, 0.0)) if g.logloss_model.n else 0.0
        base = g.risk_base.get() if g.risk_base.n else 0.0
        risk_used = g.logloss_model.n >= MIN_SCORED and g.logloss_model.get() < g.logloss_naive.get()
        p_risk = p_model if risk_used else base
        if RISK_HORIZON_S in due or (offer_key, -1) not in self.last_made:
            self.last_made[(offer_key, -1)] = now_t
            self._push(now_t + RISK_HORIZON_S, _Pending("risk", offer_key, RISK_HORIZON_S, x, p0, p_model))
        f = Forecast(
            offer_key=offer_key, made_t=now_t, usd_per_hour=prices, interruption_probability_next_hour=p_risk,
            model_used=used, risk_model_used=risk_used,
            mae_model={h: (g.mae_model[h].get() if g.mae_model[h].n else None) for h in self.horizons},
            mae_naive={h: (g.mae_naive[h].get() if g.mae_naive[h].n else None) for h in self.horizons},
            n_scored={h: int(g.mae_model[h].n) for h in self.horizons},
            risk_logloss_model=g.logloss_model.get() if g.logloss_model.n else None,
            risk_logloss_naive=g.logloss_naive.get() if g.logloss_naive.n else None,
            p0_usd_per_hour=p0,
        )
        self.latest[offer_key] = f
        return f

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
                if actual is None or actual <= 0:
                    continue
                y = max(-MAX_LOG_MOVE, min(MAX_LOG_MOVE, math.log(actual / it.p0)))
                g.mae_model[it.horizon].update(abs(actual - it.p0 * math.exp(it.y_hat)))
                g.mae_naive[it.horizon].update(abs(actual - it.p0))
                g.price[it.horizon].learn_one(it.x, y)
            else:
                start = due_t - RISK_HORIZON_S
                label = any(start < t <= due_t for t in self.bad.get(it.offer_key, []))
                base = g.risk_base.get() if g.risk_base.n else 0.0
                g.logloss_model.update(_logloss(label, it.y_hat))
                g.logloss_naive.update(_logloss(label, base))
                g.risk_base.update(1.0 if label else 0.0)
                g.risk.learn_one(it.x, label)
            n += 1
        self.scored += n
        return n

    def summary(self) -> dict[str, Any]:
        """Running errors per horizon over all groups (model vs naive), for reports."""
        out: dict[str, Any] = {}
        for h in self.horizons:
            n = sum(g.mae_model[h].n for g in self.groups.values() if h in g.mae_model)
            if not n:
                out[f"{h}s"] = {"n": 0}
                continue
            mm = sum(g.mae_model[h].get() * g.mae_model[h].n for g in self.groups.values() if h in g.mae_model) / n
            mn = sum(g.mae_naive[h].get() * g.mae_naive[h].n for g in self.groups.values() if h in g.mae_naive) / n
            out[f"{h}s"] = {"n": n, "mae_model": mm, "mae_naive": mn}
        n = sum(g.logloss_model.n for g in self.groups.values())
        if n:
            out["risk_1h"] = {
                "n": n,
                "logloss_model": sum(g.logloss_model.get() * g.logloss_model.n for g in self.groups.values()) / n,
                "logloss_naive": sum(g.logloss_naive.get() * g.logloss_naive.n for g in self.groups.values()) / n,
            }
        return out


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
            model="river-linreg" if f.model_used[h] else "naive-last-value (model not yet better)",
            mae_model=f.mae_model[h], mae_naive=f.mae_naive[h], n_scored=f.n_scored[h],
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
            "model": "river-linreg" if f.model_used[h] else "naive-last-value (model not yet better)",
            "mae_model": f.mae_model[h], "mae_naive": f.mae_naive[h], "n_scored": f.n_scored[h],
        }, inf_nan_mode="null")   # (as pydantic writes a model)
        out.append(b'{"event_id":"%s",%s%s' % (deterministic_id("forecast", f.offer_key, f.made_t, h).encode(), head,
                                                rest[1:]))
    return out


def _utc_iso(t: float) -> str:
    """A UNIX time as pydantic serialises a UTC datetime ('Z', microseconds only when not zero)."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")

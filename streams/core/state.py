"""Per-offer market state, as plain dicts (Faust table values), and the materiality test.

Updates are idempotent and order-safe: an event older than (or equal to) the last one applied for
its offer is ignored, so replaying a partition after a crash reproduces the same state.

>>> from datetime import datetime, UTC
>>> from schemas import OfferKey, Market, PriceObserved
>>> o = OfferKey(provider="gcp", region="r", instance_type="a", gpu_model="L4", gpus_per_instance=1,
...              market=Market.SPOT)
>>> t = datetime(2025, 1, 1, tzinfo=UTC)
>>> e = PriceObserved(event_id="1", offer=o, usd_per_hour=1.0, quoted_at=t, observed_at=t, source="x")
>>> s, m = apply_event({}, e)
>>> m, s["usd_per_hour"]
('new offer', 1.0)
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from schemas.events import CapacityObserved, InterruptionObserved, PriceObserved
from schemas.market import OfferQuote
from schemas.offers import OfferKey
from streams.core import windows

PRICE_MOVE_THRESHOLD = 0.02   # a 2 % move of the price the engine last saw is material
EWMA_ALPHA = 0.2
# a preemption or warning raises the offer's hourly interruption probability (`interruption_p`, what the engine
# sees without a forecast) to at least this until the next band; the risk forecasts do not read it: their prior
# is `band_p` (the band alone), and their recency is streams.core.risk's features of `bad_t` and `regained_t`
INTERRUPTION_FLOOR = 0.3
# a refreshed forecast (no new quote) is sent to the engine when its risk moved this much, absolutely and
# relatively (`forecast_moved`): an offer quoted once a day would otherwise keep the risk of its quote's hour
RISK_MOVE_ABS = 0.01
RISK_MOVE_REL = 0.25
FORECAST_REFRESHED = "forecast refreshed"   # the reason such a change carries
MAX_BAD_EVENTS = 32  # recent capacity-lost / interruption times kept per offer (for forecasts)

State = dict[str, Any]


def _ts(t: Any) -> float:
    return float(t.timestamp())


def apply_event(state: State, e: PriceObserved | CapacityObserved | InterruptionObserved,
                threshold: float = PRICE_MOVE_THRESHOLD, held: bool = False,
                t: float | None = None) -> tuple[State, str | None]:
    """Return (new state, material-change reason or None). `state` is not mutated; an event it already
    holds, or older than what it holds, returns `state` itself.

    `held`: the offer carries a current placement. Then any price change is material, so a move below the
    threshold can never leave a placement over its budget unnoticed. `t`: `event_t(e)`, when the caller has it.
    """
    if t is None:
        t = event_t(e)
    if isinstance(e, PriceObserved):
        if t < state.get("price_t", -math.inf) or e.event_id == state.get("price_event_id"):
            return state, None
        s = dict(state)
        p = e.usd_per_hour
        first = "usd_per_hour" not in s
        s.update(usd_per_hour=p, price_t=t, observed_t=_ts(e.observed_at), price_event_id=e.event_id,
                 n=int(s.get("n", 0)) + 1)
        s["ewma"] = p if first else EWMA_ALPHA * p + (1 - EWMA_ALPHA) * float(s["ewma"])
        s["min"] = min(p, s.get("min", p))
        s["max"] = max(p, s.get("max", p))
        s["hist"] = windows.push(s.get("hist", []), t, p)
        if first:
            s["engine_usd_per_hour"] = p
            return s, "new offer"
        seen = float(s.get("engine_usd_per_hour", p))
        if abs(p - seen) / seen >= threshold or (held and p != seen):
            s["engine_usd_per_hour"] = p
            return s, f"price {'rose' if p > seen else 'fell'} {abs(p - seen) / seen:.1%}" + (
                " on a held offer" if abs(p - seen) / seen < threshold else "")
        return s, None
    if isinstance(e, CapacityObserved):
        if t < state.get("capacity_t", -math.inf) or e.event_id == state.get("capacity_event_id"):
            return state, None
        s = dict(state)
        before = s.get("available", True)
        s.update(available=e.available, capacity_instances=e.available_instances, capacity_t=t,
                 capacity_event_id=e.event_id)
        if before != e.available:
            # (streams.core.risk: the share of the last day without capacity)
            s["flips"] = [*s.get("flips", []), [t, int(e.available)]][-MAX_BAD_EVENTS:]
            if not e.available:
                s["bad_t"] = [*s.get("bad_t", []), t][-MAX_BAD_EVENTS:]
                if "regained_t" in s:
                    s["up_run_s"] = t - float(s["regained_t"])   # how long it held capacity this time
            else:
                s["regained_t"] = t   # (streams.core.risk: how long the pool has held capacity again)
            return s, "capacity regained" if e.available else "capacity lost"
        return s, None
    # InterruptionObserved
    if t < state.get("interruption_t", -math.inf) or e.event_id == state.get("interruption_event_id"):
        return state, None
    s = dict(state)
    s.update(interruption_t=t, interruption_event_id=e.event_id)
    prev = float(s.get("interruption_p", 0.0))
    if e.interruption_probability_per_hour is not None:
        s["interruption_p"] = e.interruption_probability_per_hour
        s["band_p"] = e.interruption_probability_per_hour   # the published band alone (the risk model's prior)
    elif e.kind.value in ("preempted", "warning"):
        s["interruption_p"] = max(prev, INTERRUPTION_FLOOR)
    s["interruptions"] = int(s.get("interruptions", 0)) + (e.kind.value != "frequency")
    if e.kind.value != "frequency":
        s["bad_t"] = [*s.get("bad_t", []), t][-MAX_BAD_EVENTS:]
    if e.kind.value != "frequency" or abs(s.get("interruption_p", 0.0) - prev) > 0.02:
        return s, f"interruption ({e.kind.value})"
    return s, None


def event_t(e: PriceObserved | CapacityObserved | InterruptionObserved) -> float:
    """The event's own time (quote time, or when the interruption happened), as a UNIX timestamp."""
    return _ts(e.occurred_at if isinstance(e, InterruptionObserved) else e.quoted_at)


def rolling_stats(s: State, now_t: float) -> dict[str, dict[str, Any]]:
    """min / max / volatility / log-return over 1 h, 24 h and 7 d (see streams.core.windows)."""
    return windows.all_windows(s.get("hist", []), now_t)


def engine_view(s: State, forecast: Any = None) -> State:
    """What the decision stage needs of an offer: its quote, capacity, risk and 1 h forecast
    (`forecast` is a streams.core.forecast_events.Forecast or None).

    A forecast is made at most every 5 min of event time (streams.core.forecast), while quotes may change more
    often: the forecast's predicted move (forecast / price when it was made) is applied to the current
    price, so the engine never plans on a price older than the quote. (The naive forecast, used while the
    model is not better, is then the current price, as a last-value forecast should be.)

    >>> from types import SimpleNamespace as F
    >>> f = F(usd_per_hour={3600: 2.2}, p90_usd_per_hour={3600: 2.4}, p0_usd_per_hour=2.0,
    ...       interruption_probability_next_hour=0.0)
    >>> v = engine_view({"usd_per_hour": 3.0}, f)
    >>> round(v["forecast_usd_per_hour"], 6), round(v["forecast_usd_per_hour_p90"], 6)   # the p90: risk-averse plans
    (3.3, 3.6)
    """
    keep = ("usd_per_hour", "price_t", "available", "capacity_instances", "interruption_p")
    view = {k: s[k] for k in keep if k in s}
    if forecast is not None:
        f1h = forecast.usd_per_hour.get(3600)
        p0 = forecast.p0_usd_per_hour
        if f1h is not None and p0 and "usd_per_hour" in s:
            f1h = float(s["usd_per_hour"]) * (f1h / p0)
        view["forecast_usd_per_hour"] = f1h
        hi = getattr(forecast, "p90_usd_per_hour", {}).get(3600)
        if hi is not None and p0 and "usd_per_hour" in s:
            hi = float(s["usd_per_hour"]) * (hi / p0)
        if hi is not None:
            view["forecast_usd_per_hour_p90"] = hi
        view["interruption_p"] = max(float(view.get("interruption_p", 0.0)),
                                     forecast.interruption_probability_next_hour)
    return view


def forecast_moved(sent: State | None, view: State, threshold: float = PRICE_MOVE_THRESHOLD) -> bool:
    """Whether a refreshed forecast (streams.core.forecast.Forecaster.refresh: no new quote) changes what the
    engine plans on materially, against the view the engine was last sent (`sent`; None: none was): the
    risk moved by at least RISK_MOVE_ABS per hour and RISK_MOVE_REL of the larger of the two, or the 1 h
    forecast price by `threshold` of the one sent.

    >>> sent = {"interruption_p": 0.02}
    >>> forecast_moved(sent, {"interruption_p": 0.05}), forecast_moved(sent, {"interruption_p": 0.025})
    (True, False)
    """
    if sent is None:
        return True
    r0, r1 = float(sent.get("interruption_p", 0.0)), float(view.get("interruption_p", 0.0))
    if abs(r1 - r0) >= max(RISK_MOVE_ABS, RISK_MOVE_REL * max(r0, r1)):
        return True
    f0, f1 = sent.get("forecast_usd_per_hour"), view.get("forecast_usd_per_hour")
    if f0 is None or f1 is None:
        return (f0 is None) != (f1 is None)
    return bool(f0) and abs(float(f1) / float(f0) - 1.0) >= threshold


@lru_cache(maxsize=200_000)
def parse_offer_key(key: str) -> OfferKey:
    """`OfferKey.from_key`, cached (keys are immutable; parsing validates, which costs ~10 µs each)."""
    return OfferKey.from_key(key)


def quote_from_state(offer_key: str, s: State, now_t: float | None = None) -> OfferQuote | None:
    """The engine's view of an offer (None until a price is known)."""
    if "usd_per_hour" not in s:
        return None
    age = max(0.0, now_t - float(s["price_t"])) if now_t is not None else 0.0
    return OfferQuote(
        offer=parse_offer_key(offer_key), usd_per_hour=float(s["usd_per_hour"]),
        forecast_usd_per_hour=s.get("forecast_usd_per_hour"),
        forecast_usd_per_hour_p90=s.get("forecast_usd_per_hour_p90"), available=bool(s.get("available", True)),
        capacity_instances=s.get("capacity_instances"),
        interruption_probability_per_hour=float(s.get("interruption_p", 0.0)), quote_age_s=age,
    )

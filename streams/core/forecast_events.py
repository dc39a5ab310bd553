"""A published forecast (`Forecast`, one offer's, made by streams.core.forecast.Forecaster) and its encodings:
`PriceForecasted` events (`forecast_events`) and their JSON bytes written directly (`forecast_records`, what
the market stage produces)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_json

from schemas.events import PriceForecasted, deterministic_id
from schemas.offers import OfferKey

__all__ = ["Forecast", "forecast_events", "forecast_records"]


@dataclass(slots=True)
class Forecast:
    """One offer's forecast (made by `Forecaster.flush`; treat it as immutable: `dataclasses.replace`
    for a changed copy). Not frozen: a frozen dataclass costs 5x as much to build, and a flush builds one
    per offer due."""

    offer_key: str
    made_t: float
    usd_per_hour: dict[int, float]                  # horizon_s -> published median forecast
    interruption_probability_next_hour: float
    model_used: dict[int, bool]                     # horizon_s -> True when a model (not naive) was published
    risk_model_used: bool
    mae_model: dict[int, float | None]              # running MAE of the published forecasts, as used
    # (weighted by time in force: streams.core.price_models)
    mae_naive: dict[int, float | None]
    n_scored: dict[int, int]                        # the time in force scored, in horizons
    risk_logloss_model: float | None                # of the published risk
    risk_logloss_naive: float | None
    p0_usd_per_hour: float | None = None            # the offer's price when the forecast was made
    p10_usd_per_hour: dict[int, float] = field(default_factory=dict)
    p90_usd_per_hour: dict[int, float] = field(default_factory=dict)
    model: dict[int, str] = field(default_factory=dict)   # horizon_s -> the published candidate's name
    risk_model: str = "base-rate"

    def model_name(self, h: int) -> str:
        return self.model.get(h) or ("model" if self.model_used.get(h) else "naive")


def forecast_events(offer: OfferKey, f: Forecast, now: Any) -> list[PriceForecasted]:
    """One PriceForecasted per horizon, with the group's running errors (model vs last-value naive)."""
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
    >>> from streams.core.forecast import Forecaster
    >>> fc = Forecaster(horizons_s=(3600,))
    >>> _ = fc.observe(o.key, {"usd_per_hour": 2.0, "price_t": 0.0}, now_t=0.0)
    >>> [f] = fc.flush()
    >>> forecast_records(o.model_dump_json(), f) == [e.model_dump_json().encode() for e in forecast_events(o, f, None)]
    True
    """
    made = _utc_iso(f.made_t)
    head = f'"event_type":"PriceForecasted","offer":{offer_json},"forecast_at":"{made}",'.encode()
    # deterministic_id("forecast", key, made_t, h)'s input, hashed up to h once
    id_of = hashlib.blake2b(f"forecast\x1f{f.offer_key}\x1f{f.made_t}\x1f".encode(), digest_size=16)
    out = []
    for h in sorted(f.usd_per_hour):
        rest = to_json({
            "horizon_s": h, "usd_per_hour": f.usd_per_hour[h],
            "interruption_probability_next_hour": f.interruption_probability_next_hour,
            "model": f.model_name(h), "mae_model": f.mae_model[h], "mae_naive": f.mae_naive[h],
            "n_scored": f.n_scored[h], "usd_per_hour_p10": f.p10_usd_per_hour.get(h),
            "usd_per_hour_p90": f.p90_usd_per_hour.get(h),
        }, inf_nan_mode="null")   # (as pydantic writes a model)
        ih = id_of.copy()
        ih.update(str(h).encode())
        event_id = ih.hexdigest()
        out.append(b'{"event_id":"%s",%s%s' % (event_id.encode(), head, rest[1:]))
    return out


_ISO: dict[float, str] = {}
_MINUTE: dict[int, str] = {}   # UNIX minute -> "YYYY-MM-DDTHH:MM:" (the last few thousand)
_FAST_END_S = 4_102_444_800    # 2100-01-01: times in [0, this) are formatted by arithmetic


def _utc_iso(t: float) -> str:
    """A UNIX time as pydantic serialises a UTC datetime ('Z', microseconds only when not zero); the last
    few thousand are cached (offers of one market snapshot share their time). Between 1970 and 2100 it is
    formatted from a cached minute's prefix, the microseconds rounded as `datetime.fromtimestamp` rounds
    them (half to even): a third of the cost of building the datetime (tests/streams/test_forecast.py's
    records test holds the two equal).

    >>> _utc_iso(0.5), _utc_iso(1_700_000_000.0), _utc_iso(-0.5)
    ('1970-01-01T00:00:00.500000Z', '2023-11-14T22:13:20Z', '1969-12-31T23:59:59.500000Z')
    """
    iso = _ISO.get(t)
    if iso is None:
        if len(_ISO) >= 4096:
            _ISO.clear()
        if 0 <= t < _FAST_END_S:
            frac, whole = math.modf(t)
            us = round(frac * 1e6)
            s = int(whole) + (us >= 1_000_000)
            us %= 1_000_000
            minute, sec = divmod(s, 60)
            head = _MINUTE.get(minute)
            if head is None:
                if len(_MINUTE) >= 4096:
                    _MINUTE.clear()
                head = _MINUTE[minute] = datetime.fromtimestamp(minute * 60, UTC).isoformat()[:17]
            iso = f"{head}{sec:02d}.{us:06d}Z" if us else f"{head}{sec:02d}Z"
        else:
            iso = datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
        _ISO[t] = iso
    return iso

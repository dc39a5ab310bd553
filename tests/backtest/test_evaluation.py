"""The forecast evaluation on hand-computed markets, price sources, and `naive_forecasts` (what the engine sees)."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from backtest import BacktestConfig, build_report, headline
from backtest.evaluation import ForecastEvaluation, headline_line, html_section
from backtest.sim import MarketEvent, Simulation
from schemas.events import PriceObserved, deterministic_id
from schemas.market import AllocationEngine, OfferQuote
from solvers.registry import engine_factory
from streams.core import state
from tests.backtest.conftest import T0, capacity, offer, one_workload, price

H = 3600.0
SA = offer("spot-a")
SB = offer("spot-b")
OD = offer("od", "on_demand")


def fc(ratio: float, p0: float, risk: float, made_h: float | None = None,
       band: tuple[float, float] | None = None) -> Any:
    """A published forecast: `ratio` x p0 in an hour, and p10 / p90 at `band` x p0 when given."""
    q = {} if band is None else {"p10_usd_per_hour": {3600: band[0] * p0}, "p90_usd_per_hour": {3600: band[1] * p0}}
    return SimpleNamespace(usd_per_hour={3600: ratio * p0}, p0_usd_per_hour=p0, interruption_probability_next_hour=risk,
                           made_t=math.nan if made_h is None else T0.timestamp() + made_h * H, **q)


def feed(ev: ForecastEvaluation, states: dict[str, dict[str, Any]], e: MarketEvent, f: Any) -> None:
    t = state.event_t(e)
    ev.advance(t)
    old = states.get(e.offer.key, {})
    new, _ = state.apply_event(old, e)
    states[e.offer.key] = new
    ev.observe(e, old, new, t)
    ev.published(e.offer.key, f)


def hand_market(warmup_s: float = 0.0, span_end_h: float = 10.0) -> dict[str, Any]:
    """Spot A at $1.0 from 0 h, $1.2 from 1.5 h, capacity lost at 2.5 h; the published forecast always says
    +10 % in an hour, risk 0.2. Ticks at 0, 1, 2, 3 h are judged up to 4 h."""
    t0 = T0.timestamp()
    ev = ForecastEvaluation((3600,), H, t0, warmup_s, {"test": (t0, t0 + span_end_h * H)})
    st: dict[str, dict[str, Any]] = {}
    feed(ev, st, price(SA, 1.0, 0), fc(1.1, 1.0, 0.2, made_h=0))
    feed(ev, st, price(SA, 1.2, 1.5), fc(1.1, 1.2, 0.2, made_h=1.5))
    feed(ev, st, capacity(SA, False, 2.5), fc(1.1, 1.2, 0.2, made_h=2.5))
    ev.advance(t0 + 4 * H + 1)
    return ev.report()


def test_price_and_risk_scores_by_hand() -> None:
    rep = hand_market()
    g = rep["groups"]["gcp|L4|spot"]
    p = g["price"]["3600s"]
    # predictions at 0,1,2,3 h: 1.1, 1.1, 1.32, 1.32 vs actual 1.0, 1.2, 1.2, 1.2; naive 1.0, 1.0, 1.2, 1.2
    assert p["n"] == 4
    assert p["mae_model"] == pytest.approx((0.1 + 0.1 + 0.12 + 0.12) / 4)
    assert p["mae_naive"] == pytest.approx((0 + 0.2 + 0 + 0) / 4)
    assert p["ratio"] == pytest.approx(2.2)
    # fresh: forecasts made within the hour before the tick (0 h: made 0; 2 h: made 1.5 h; 3 h: made 2.5 h)
    assert p["fresh"]["n"] == 3
    assert p["fresh"]["mae_model"] == pytest.approx((0.1 + 0.12 + 0.12) / 3, rel=1e-5)
    assert p["fresh"]["mae_naive"] == 0.0 and p["fresh"]["ratio"] is None
    assert rep["goals"]["price_groups_worse_than_naive"]["3600s"] == ["gcp|L4|spot"]
    r = g["risk_1h"]
    # risk at 0, 1, 2 h (unavailable from 2.5 h): labels 0, 0, 1; base rate known then: none yet -> 0, 1/0
    # resolved -> (0 + .5)/(1 + 1), 2/0 -> .5/3
    assert (r["n"], r["events"]) == (3, 1)
    assert r["logloss_model"] == pytest.approx((-2 * math.log(0.8) - math.log(0.2)) / 3, rel=1e-5)
    assert r["logloss_base_rate"] == pytest.approx((-math.log(1 - 1e-6) - math.log(0.75) - math.log(0.5 / 3)) / 3,
                                                   rel=1e-5)
    assert r["brier_model"] == pytest.approx((0.04 + 0.04 + 0.64) / 3, rel=1e-5)
    assert r["brier_base_rate"] == pytest.approx((0 + 0.0625 + (1 - 0.5 / 3) ** 2) / 3, rel=1e-5)
    rel = {b["bin"]: b for b in g["reliability_model"]}
    assert rel["[0.2, 0.5)"]["n"] == 3 and rel["[0.2, 0.5)"]["observed"] == pytest.approx(1 / 3, rel=1e-5)
    assert g["champion"] == {"price_3600s": "naive", "risk_1h": "base-rate"}


def test_quantile_coverage_by_hand() -> None:
    """The published p10 / p90 are applied to the price in force as the median is, the outcomes outside
    them counted and their pinball losses summed: prices 1.0 then 1.2 from 1.5 h, a band of x0.95 .. x1.15
    always."""
    t0 = T0.timestamp()
    ev = ForecastEvaluation((3600,), H, t0, 0.0, {"test": (t0, t0 + 10 * H)})
    st: dict[str, dict[str, Any]] = {}
    feed(ev, st, price(SA, 1.0, 0), fc(1.0, 1.0, 0.2, made_h=0, band=(0.95, 1.15)))
    feed(ev, st, price(SA, 1.2, 1.5), fc(1.0, 1.2, 0.2, made_h=1.5, band=(0.95, 1.15)))
    ev.advance(t0 + 4 * H + 1)
    p = ev.report()["groups"]["gcp|L4|spot"]["price"]["3600s"]
    # ticks 0..3 h: bands [0.95, 1.15], [0.95, 1.15], [1.14, 1.38], [1.14, 1.38] vs outcomes 1.0, 1.2, 1.2, 1.2
    assert p["n"] == 4 and p["below_p10"] == 0.0 and p["above_p90"] == 0.25
    assert "below p10 0.0, above p90 0.25" in headline_line(ev.report())
    # their pinball losses: 0.005 + 0.015, 0.025 + 0.045, then 0.006 + 0.018 twice; naive |outcome - price|:
    # 0, 0.2, 0, 0
    assert p["quantile_loss_model"] == pytest.approx((0.02 + 0.07 + 0.024 + 0.024) / 4, rel=1e-5)
    assert p["quantile_loss_naive"] == pytest.approx(0.05, rel=1e-5)
    assert p["quantile_loss_ratio"] == pytest.approx(0.0345 / 0.05, rel=1e-5)
    assert "below_p10" not in hand_market()["groups"]["gcp|L4|spot"]["price"]["3600s"]   # none published


def test_warmup_and_dataset_end_limit_what_is_scored() -> None:
    # warm-up 1 h: the tick at 0 h is not judged
    assert hand_market(warmup_s=H)["groups"]["gcp|L4|spot"]["price"]["3600s"]["n"] == 3
    # the dataset ends at 2 h: only outcomes up to 2 h are known (ticks 0 and 1 h)
    short = hand_market(span_end_h=2.0)["groups"]["gcp|L4|spot"]
    assert short["price"]["3600s"]["n"] == 2
    assert short["risk_1h"]["n"] == 2


def test_price_sources_and_overlap() -> None:
    t0 = T0.timestamp()
    ev = ForecastEvaluation((3600,), H, t0 + 2 * H, 0.0, {"a": (t0, t0 + 9 * H), "b": (t0, t0 + 9 * H)})
    st: dict[str, dict[str, Any]] = {}

    def src(o: Any, usd: float, h: float, source: str) -> PriceObserved:
        t = T0 + timedelta(hours=h)
        return PriceObserved(event_id=deterministic_id("p", o.key, h, usd), offer=o, usd_per_hour=usd, quoted_at=t,
                             observed_at=t, source=source)

    feed(ev, st, src(SA, 1.0, 0, "replay:a x"), None)   # in force at the window start (2 h): counts
    feed(ev, st, src(SB, 1.0, 0, "replay:a x"), None)
    feed(ev, st, src(SB, 2.0, 1, "replay:b y"), None)   # replaced before the window: b alone
    feed(ev, st, src(SA, 1.1, 3, "replay:b y"), None)
    ev.advance(t0 + 5 * H)
    ps = ev.price_sources()
    assert ps["per_offer"] == {SA.key: ["a", "b"], SB.key: ["b"]}
    assert ps["offers_by_dataset"] == {"a": 1, "b": 2}
    assert ps["offers_priced_by_several"] == 1
    assert ps["price_events_in_window_by_dataset"] == {"b": 1}


class LoudForecaster:
    """A forecaster double with the published interface the back-tester reads: last value and no risk for
    every offer, except spot A: a 50 % price rise and a 0.9 chance of losing it within the hour."""

    def __init__(self) -> None:
        self.latest: dict[str, Any] = {}

    def observe(self, offer_key: str, s: Any, now_t: float) -> Any:
        p = s.get("usd_per_hour")
        if p is not None:
            loud = offer_key == SA.key
            self.latest[offer_key] = fc(1.5 if loud else 1.0, p, 0.9 if loud else 0.0)
        return self.latest.get(offer_key)

    def refresh(self, watermark_t: float, stale_s: float) -> list[Any]:
        return []   # (its forecasts never age)

    def drain_promotions(self) -> list[Any]:
        return []

    def summary(self) -> dict[str, Any]:
        return {}


def run_seen(naive: bool) -> tuple[list[OfferQuote], Any]:
    seen: list[OfferQuote] = []

    def factory() -> AllocationEngine:
        eng = engine_factory("portfolio")()
        orig = eng.upsert_offers

        def rec(quotes: Any) -> None:
            seen.extend(quotes)
            orig(quotes)

        eng.upsert_offers = rec  # type: ignore[method-assign]
        return eng

    evs: list[MarketEvent] = [price(OD, 2.0, 0), price(SA, 0.5, 0), price(SB, 0.6, 0)]
    cfg = BacktestConfig(data_dir=Path("/nonexistent"), start=T0, end=T0 + timedelta(hours=6), naive_forecasts=naive,
                         strategies=("cloudarb", "greedy_spot"))
    sim = Simulation(cfg, one_workload(), factory, events=evs)
    sim.forecaster = LoudForecaster()  # type: ignore[assignment]
    return seen, sim.run()


def test_naive_forecasts_change_what_the_engine_sees_and_decides() -> None:
    seen, r = run_seen(naive=False)
    a = [q for q in seen if q.offer.key == SA.key]
    assert a and all(q.forecast_usd_per_hour == pytest.approx(0.75) for q in a)
    assert all(q.interruption_probability_per_hour == pytest.approx(0.9) for q in a)
    assert {h.key for h in r.ledgers["cloudarb"].holdings["w"]} == {SB.key}   # avoids the risky, rising A
    seen_n, rn = run_seen(naive=True)
    a = [q for q in seen_n if q.offer.key == SA.key]
    assert a and all(q.forecast_usd_per_hour == pytest.approx(0.5) for q in a)
    assert all(q.interruption_probability_per_hour == pytest.approx(0.0) for q in a)   # no loss seen: rate 0
    assert {h.key for h in rn.ledgers["cloudarb"].holdings["w"]} == {SA.key}
    # the evaluation still judges the published (loud) forecasts, whatever the engine planned on
    assert rn.forecast_evaluation == r.forecast_evaluation
    rep = build_report(rn)
    assert rep["assumptions"]["naive_forecasts"] is True
    assert rep["price_sources"]["offers_by_dataset"] == {"test": 3}
    assert "forecast evaluation" in headline(rep)
    assert "<table" in html_section(rep["forecast_evaluation"], rep["price_sources"])

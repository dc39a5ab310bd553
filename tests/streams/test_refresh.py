"""Forecasts refreshed between an offer's events (Forecaster.refresh, track.refresh_forecasts), without Kafka."""

from __future__ import annotations

from datetime import timedelta

from pydantic_core import from_json

from schemas import Market
from streams.core import state, track
from streams.core.forecast import Forecaster
from streams.core.track import Msg, TrackOutput, track_batch
from tests.streams.helpers import T0, offer, preempted, price

H = 3600.0
A, B, C = (offer(region=r, market=Market.SPOT) for r in ("a", "b", "c"))
D = offer(region="d")   # on demand
NOW = T0 + timedelta(days=30)


def _states() -> dict[str, state.State]:
    return {}


def _none(_key: str) -> state.State | None:
    return None


def _msgs(events: list, partition: int = 0) -> list[Msg]:
    return [Msg(e.model_dump_json().encode(), "prices", partition, i, None) for i, e in enumerate(events)]


def _tracked(events: list, f: Forecaster, states: dict[str, state.State], partition: int = 0) -> TrackOutput:
    out = track_batch(_msgs(events, partition), states.get, set(), f, now=NOW)
    states.update({k: s for k, (s, _) in out.updated.items()})
    return out


def test_refresh_reforecasts_only_the_stale_eligible_spot_offers_once_at_the_watermark() -> None:
    f, states = Forecaster(), _states()
    _tracked([price(A, 1.0), price(B, 2.0), price(D, 4.0)], f, states)
    _tracked([price(C, 3.0, minutes=170)], f, states)
    wm = T0.timestamp() + 3 * H
    got = f.refresh(wm, eligible=lambda k: k != B.key)
    assert [(fc.offer_key, fc.made_t) for fc in got] == [(A.key, wm)]   # C had an event 10 min ago
    assert f.latest[A.key].made_t == wm and f.latest[B.key].made_t == T0.timestamp()
    assert [fc.offer_key for fc in f.refresh(wm)] == [B.key] and not f.refresh(wm)   # B; not D (on demand)
    assert f.refresh(float("nan")) == []


def test_an_event_older_than_a_refresh_is_skipped_as_a_clock_going_backwards() -> None:
    f, states = Forecaster(), _states()
    _tracked([price(A, 1.0)], f, states)
    f.refresh(T0.timestamp() + 5 * H)
    before = f.skipped.get("clock", 0)
    _tracked([price(A, 1.2, minutes=120)], f, states)   # (the caller's watermark promised no such event)
    assert f.skipped.get("clock", 0) == before + 1


def test_a_pool_risk_refreshed_after_its_loss_decays_as_the_quiet_hours_pass() -> None:
    f, states = Forecaster(), _states()
    _tracked([price(A, 1.0), price(B, 1.0)], f, states)
    _tracked([preempted(A, minutes=60), price(B, 1.0, minutes=60)], f, states)
    risk = [f.latest[A.key].interruption_probability_next_hour]
    for hours in (6, 24, 72):
        f.refresh(T0.timestamp() + hours * H)
        risk.append(f.latest[A.key].interruption_probability_next_hour)
    assert risk == sorted(risk, reverse=True) and risk[-1] < risk[0]   # without a refresh it stays risk[0]


def test_refreshed_forecasts_go_out_with_a_change_only_where_the_engine_view_moved() -> None:
    f, states = Forecaster(), _states()
    first = _tracked([price(A, 1.0), price(B, 2.0)], f, states, partition=0)
    assert set(first.views) == {A.key, B.key} and first.partition_t == {("prices", 0): T0.timestamp()}
    sent = dict(first.views)
    sent[B.key] = {**sent[B.key], "interruption_p": 0.5}   # as if B's last view had a high risk
    out = TrackOutput()
    parts = {A.key: 0, B.key: 0, C.key: 1}
    track.refresh_forecasts(f, {0: T0.timestamp() + 2 * H}, states.get, parts, sent, out)
    assert {k for k, _ in out.forecasts} == {A.key.encode(), B.key.encode()}
    changes = [from_json(c) for c in out.changes]
    assert [(c["offer_key"], c["reason"], c["event_id"]) for c in changes] == [(B.key, state.FORECAST_REFRESHED, "")]
    assert set(out.views) == {B.key}


def test_the_partition_watermark_is_the_latest_valid_event_time_per_partition() -> None:
    a = track_batch(_msgs([price(A, 1.0, minutes=5), price(B, 1.0, minutes=1)], 2), _none, set(), Forecaster(),
                    now=NOW)
    b = track_batch([*_msgs([price(C, 1.0, minutes=9)], 3), Msg(b"{", "prices", 3, 9, None)], _none, set(),
                    Forecaster(), now=NOW)
    t = T0.timestamp()
    assert a.then(b).partition_t == {("prices", 2): t + 300, ("prices", 3): t + 540}


def test_the_market_stage_refreshes_a_partition_once_per_hour_of_its_own_event_time() -> None:
    from streams.runtime.market import MarketConfig, MarketStage

    f, states = Forecaster(), _states()
    stage = MarketStage(MarketConfig("127.0.0.1:9", "t", "changes"), ["prices"], f)   # (never started)
    first = _tracked([price(A, 1.0), price(B, 1.0)], f, states)
    stage.store.data.update(states)
    stage.store.partition_of.update({A.key: 0, B.key: 1})
    t = T0.timestamp()
    assert set(stage._refresh(first)) == {0}   # first sight of partition 0: due (nothing stale yet)
    stage._next_refresh.update({0: t + H})
    later = TrackOutput(partition_t={("prices", 0): t + 2 * H + 600, ("prices", 1): t + 30})   # partition 1 lags
    due = stage._refresh(later)
    assert due == {0: t + 3 * H, 1: t}   # (1: its first sight, 270 s before the hour)
    assert {k for k, _ in later.forecasts} == {A.key.encode()}   # B's partition has not passed an hour since B


def test_a_market_topic_with_unread_messages_holds_its_partition_back() -> None:
    from streams.runtime.market import MarketConfig, MarketStage

    stage = MarketStage(MarketConfig("127.0.0.1:9", "t", "changes"), ["prices", "capacity"], Forecaster())
    t = T0.timestamp()
    stage._partition_t.update({("prices", 0): t + 5 * H, ("capacity", 0): t + H, ("prices", 1): t + 5 * H})
    assert stage._watermarks() == {0: t + 5 * H - track.REFRESH_LAG_S, 1: t + 5 * H - track.REFRESH_LAG_S}
    stage.lag = {("capacity", 0): 40, ("capacity", 1): 3}   # capacity behind on both; never seen on 1
    assert stage._watermarks() == {0: t + H - track.REFRESH_LAG_S}


def test_an_offer_updated_in_the_batch_is_not_refreshed_with_its_stored_state() -> None:
    f, states = Forecaster(), _states()
    _tracked([price(A, 1.0)], f, states)
    f.refresh(T0.timestamp() + 5 * H)   # (a watermark past a late event)
    out = _tracked([price(A, 2.0, minutes=60)], f, states)   # skipped by the forecaster as too old
    assert f.skipped.get("clock") and A.key in out.updated
    track.refresh_forecasts(f, {0: T0.timestamp() + 10 * H}, {A.key: {"usd_per_hour": 1.0}}.get, {A.key: 0}, {}, out)
    assert all(from_json(c)["state"]["usd_per_hour"] == 2.0 for c in out.changes)   # never the stale 1.0


def test_hourly_refreshes_come_as_the_forecast_age_doubles_after_the_event() -> None:
    f, states = Forecaster(), _states()
    _tracked([price(A, 1.0)], f, states)
    t = T0.timestamp()
    hours = [k for k in range(1, 25) if f.refresh(t + k * H)]
    assert hours == [1, 2, 4, 8, 16]
    _tracked([price(A, 1.1, minutes=24 * 60 + 30)], f, states)   # a new event starts the schedule again
    assert [k for k in range(26, 30) if f.refresh(t + k * H)] == [26, 28]   # (1.5 h and 3.5 h after it)

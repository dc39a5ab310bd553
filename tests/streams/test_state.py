from __future__ import annotations

from streams.core.state import INTERRUPTION_FLOOR, apply_event, quote_from_state
from tests.streams.helpers import capacity, offer, preempted, price

OFF = offer()


def test_first_price_is_material_and_small_moves_are_not() -> None:
    s, why = apply_event({}, price(OFF, 1.0, 0))
    assert why == "new offer"
    s, why = apply_event(s, price(OFF, 1.01, 10))
    assert why is None and s["usd_per_hour"] == 1.01
    s, why = apply_event(s, price(OFF, 1.03, 20))  # 3 % from the 1.00 the engine saw
    assert why is not None and "rose" in why
    assert s["min"] == 1.0 and s["max"] == 1.03


def test_updates_are_idempotent_and_ignore_older_events() -> None:
    s1, _ = apply_event({}, price(OFF, 1.0, 0))
    s2, _ = apply_event(s1, price(OFF, 2.0, 10))
    again, why = apply_event(s2, price(OFF, 2.0, 10))
    assert again is s2 and why is None
    older, why = apply_event(s2, price(OFF, 5.0, 5))
    assert older is s2 and why is None


def test_capacity_flip_and_interruption_are_material() -> None:
    s, _ = apply_event({}, price(OFF, 1.0))
    s, why = apply_event(s, capacity(OFF, False, 1))
    assert why == "capacity lost" and s["available"] is False
    s, why = apply_event(s, capacity(OFF, False, 2))
    assert why is None
    s, why = apply_event(s, capacity(OFF, True, 3))
    assert why == "capacity regained"
    s, why = apply_event(s, preempted(OFF, 4))
    assert why is not None and s["interruption_p"] >= INTERRUPTION_FLOOR


def test_quote_from_state() -> None:
    assert quote_from_state(OFF.key, {}) is None
    s, _ = apply_event({}, price(OFF, 2.0))
    q = quote_from_state(OFF.key, s, now_t=s["price_t"] + 60)
    assert q is not None and q.offer == OFF and q.usd_per_hour == 2.0 and q.quote_age_s == 60


def test_any_move_on_a_held_offer_is_material() -> None:
    s, _ = apply_event({}, price(OFF, 1.0, 0))
    _, why = apply_event(s, price(OFF, 1.005, 10))
    assert why is None
    s3, why = apply_event(s, price(OFF, 1.005, 10), held=True)
    assert why is not None and "held offer" in why and s3["engine_usd_per_hour"] == 1.005

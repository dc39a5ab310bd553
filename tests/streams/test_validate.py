from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from streams.core.validate import MAX_BYTES, Rejected, dead_letter, validate
from tests.streams.helpers import T0, offer, price

MARKET = ("PriceObserved", "CapacityObserved", "InterruptionObserved")
NOW = T0 + timedelta(days=1)


def raw(**changes: object) -> bytes:
    d = json.loads(price(offer(), 1.0).model_dump_json())
    d.update(changes)
    return json.dumps(d).encode()


def test_valid_event_passes() -> None:
    e = validate(raw(), MARKET, NOW)
    assert not isinstance(e, Rejected) and e.event_id


@pytest.mark.parametrize(("payload", "reason"), [
    (None, "empty"),
    (b"{not json", "not JSON"),
    (b"x" * (MAX_BYTES + 1), "exceeds"),
    (raw(usd_per_hour=-1), "usd_per_hour"),
    (raw(usd_per_hour="NaN"), "usd_per_hour"),
    (raw(usd_per_hour="cheap"), "usd_per_hour"),
    (raw(event_type="WorkloadCancelled"), "invalid"),
    (raw(quoted_at="2025-06-01T00:00:00"), "quoted_at"),
])
def test_invalid_events_are_rejected_with_a_reason(payload: bytes | None, reason: str) -> None:
    r = validate(payload, MARKET, NOW)
    assert isinstance(r, Rejected) and reason in r.reason, r


def test_wrong_topic_unknown_provider_and_future_timestamps() -> None:
    assert "not allowed" in validate(raw(), ("WorkloadRequested",), NOW).reason  # type: ignore[union-attr]
    d = json.loads(raw())
    d["offer"]["provider"] = "mycloud"
    r = validate(json.dumps(d).encode(), MARKET, NOW)
    assert isinstance(r, Rejected) and "unknown provider" in r.reason
    future = (NOW + timedelta(hours=1)).isoformat()
    r = validate(raw(quoted_at=future, observed_at=future), MARKET, NOW)
    assert isinstance(r, Rejected) and "future" in r.reason


def test_dead_letter_keeps_the_original_bytes_and_is_deterministic() -> None:
    a = dead_letter(b"\x00abc", "bad", "cloudarb.prices.v1", 3, 42, "streams.track_offers", datetime.now(UTC))
    b = dead_letter(b"\x00abc", "bad", "cloudarb.prices.v1", 3, 42, "streams.track_offers", datetime.now(UTC))
    assert base64.b64decode(a.original_b64) == b"\x00abc"
    assert a.event_id == b.event_id and a.reason == "bad"

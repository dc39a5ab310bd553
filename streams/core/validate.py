"""Validation of inbound events: decode, type for the topic, sanity ranges, known identity.

Returns the event or a `Rejected(reason)`; never raises. The agent sends rejections to the DLQ.

>>> validate(b"{", ("PriceObserved",)).reason.startswith("not JSON")
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from schemas.events import (
    MAX_EVENT_BYTES,
    CapacityObserved,
    DeadLettered,
    Event,
    InterruptionObserved,
    PriceObserved,
    dead_letter_of,
    decode_event,
)
from schemas.offers import KNOWN_PROVIDERS

MAX_CLOCK_SKEW = timedelta(minutes=5)
# the market events' classes (a tuple: isinstance against a union is slower, on a per-event path)
MARKET_EVENTS = (PriceObserved, CapacityObserved, InterruptionObserved)
MAX_BYTES = MAX_EVENT_BYTES


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str


def _short(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts)


def validate(raw: bytes | None, allowed: tuple[str, ...], now: datetime | None = None) -> Event | Rejected:
    if raw is None:
        return Rejected("empty message")
    if len(raw) > MAX_BYTES:
        return Rejected(f"payload of {len(raw)} bytes exceeds {MAX_BYTES}")
    try:
        event = decode_event(raw)
    except ValidationError as exc:
        return Rejected(f"invalid: {_short(exc)}")
    except ValueError as exc:
        return Rejected(str(exc)[:500])
    return check(event, allowed, now or datetime.now(UTC))


def validate_many(raws: Sequence[bytes | None], allowed: tuple[str, ...],
                  now: datetime | None = None) -> list[Event | Rejected]:
    """`[validate(r, allowed, now) for r in raws]`, with one `now` for the batch. (One pydantic call over
    the batch joined as a JSON array, each message first parsed to check it is one object, measured 30 %
    slower than a call per message with pydantic 2.14.)

    >>> [type(x).__name__ for x in validate_many([b"{", None], ("PriceObserved",))]
    ['Rejected', 'Rejected']
    """
    now = now or datetime.now(UTC)
    return [validate(r, allowed, now) for r in raws]


def check(event: Event, allowed: tuple[str, ...], now: datetime) -> Event | Rejected:
    """The checks beyond the schema: allowed on this topic, known provider, not in the future, finite."""
    if event.__class__.__name__ not in allowed:
        return Rejected(f"event_type {event.__class__.__name__} not allowed on this topic (expects {list(allowed)})")
    if isinstance(event, MARKET_EVENTS):
        if event.offer.provider not in KNOWN_PROVIDERS:
            return Rejected(f"unknown provider {event.offer.provider!r}")
        t = event.quoted_at if not isinstance(event, InterruptionObserved) else event.occurred_at
        latest = now + MAX_CLOCK_SKEW
        for name, ts in (("event time", t), ("observed_at", event.observed_at)):
            if ts > latest:
                return Rejected(f"{name} {ts.isoformat()} is in the future (now {now.isoformat()})")
    if isinstance(event, PriceObserved) and not math.isfinite(event.usd_per_hour):
        return Rejected("price is not finite")
    return event


def dead_letter(raw: bytes | None, reason: str, topic: str, partition: int | None, offset: int | None,
                stage: str, now: datetime | None = None) -> DeadLettered:
    """The DLQ record for a rejected message (`schemas.events.dead_letter_of`: capped, deterministic id)."""
    return dead_letter_of(raw or b"", reason, topic, partition, offset, stage, now)

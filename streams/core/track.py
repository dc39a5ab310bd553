"""The market stage as one plain function over a batch: validate -> state -> forecast -> trigger.

`track_batch` is what the market stage (streams.runtime.market) runs on each consumed batch; it reads the offers
table through `lookup` and returns everything the stage must write (no Kafka here, so it is tested
directly). Per offer, the batch's events are folded into one new state (one table write per offer per
batch); the forecaster takes the batch's final states together (`Forecaster.observe_many`: a forecast at
most once per offer per batch, where due, all predicted in one pass).

>>> from datetime import UTC, datetime
>>> from schemas import OfferKey, Market, PriceObserved
>>> from streams.core.forecast import Forecaster
>>> o = OfferKey(provider="gcp", region="r", instance_type="a", gpu_model="L4", gpus_per_instance=1,
...              market=Market.SPOT)
>>> t = datetime(2025, 1, 1, tzinfo=UTC)
>>> e = PriceObserved(event_id="1", offer=o, usd_per_hour=1.0, quoted_at=t, observed_at=t, source="x")
>>> out = track_batch([Msg(e.model_dump_json().encode(), "p", 0, 0, None), Msg(b"{", "p", 0, 1, None)],
...                   lambda k: None, set(), Forecaster(), now=t)
>>> out.valid, len(out.dead_letters), len(out.changes), out.updated[o.key][0]["usd_per_hour"]
(1, 1, 1, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from pydantic_core import from_json, to_json

from schemas.events import DeadLettered
from schemas.offers import OfferKey
from streams.core import state
from streams.core.forecast import Forecaster
from streams.core.forecast_events import forecast_records
from streams.core.validate import MARKET_EVENTS, Rejected, dead_letter, validate

MARKET_TYPES = ("PriceObserved", "CapacityObserved", "InterruptionObserved")
STAGE = "streams.track_offers"


class Msg(NamedTuple):
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: float | None  # producer timestamp, seconds


@dataclass
class TrackOutput:
    valid: int = 0
    dead_letters: list[DeadLettered] = field(default_factory=list)
    updated: dict[str, tuple[state.State, int]] = field(default_factory=dict)  # key -> (state, partition)
    forecasts: list[tuple[bytes, bytes]] = field(default_factory=list)       # (key, PriceForecasted JSON)
    changes: list[bytes] = field(default_factory=list)                       # market-change records
    promotions: list[tuple[bytes, bytes]] = field(default_factory=list)     # (key, ModelPromoted JSON)
    dead_letters_failed: int = 0  # dead letters the DLQ did not take (set by the market stage; skipped)
    views: dict[str, state.State] = field(default_factory=dict)     # key -> the engine view its change carries
    # (topic, partition) -> the latest valid event time seen in it
    partition_t: dict[tuple[str, int], float] = field(default_factory=dict)

    def then(self, later: TrackOutput) -> TrackOutput:
        """This output followed by `later`'s (of the messages after this one's)."""
        part = dict(self.partition_t)
        for p, t in later.partition_t.items():
            part[p] = max(t, part.get(p, t))
        return TrackOutput(self.valid + later.valid, self.dead_letters + later.dead_letters,
                           {**self.updated, **later.updated}, self.forecasts + later.forecasts,
                           self.changes + later.changes, self.promotions + later.promotions,
                           views={**self.views, **later.views}, partition_t=part)


PACK_MAX_BYTES = 256 * 1024  # well below Kafka's default 1 MB message limit


def pack_changes(records: Sequence[bytes], max_bytes: int = PACK_MAX_BYTES) -> list[bytes]:
    """Market-change records packed into as few messages as fit `max_bytes` each. The decision stage then
    reads one message per market batch instead of one per change (Faust's per-message cost, ~100 us,
    would otherwise bound how fast it drains a backlog of changes).

    >>> packed = pack_changes([b'{"offer_key":"a"}', b'{"offer_key":"b"}'])
    >>> packed, [c["offer_key"] for c in unpack_changes(packed[0])]
    ([b'{"changes":[{"offer_key":"a"},{"offer_key":"b"}]}'], ['a', 'b'])
    """
    out: list[bytes] = []
    part: list[bytes] = []
    size = 0
    for r in records:
        if part and size + len(r) + 1 > max_bytes:
            out.append(b'{"changes":[' + b",".join(part) + b"]}")
            part, size = [], 0
        part.append(r)
        size += len(r) + 1
    if part:
        out.append(b'{"changes":[' + b",".join(part) + b"]}")
    return out


def unpack_changes(value: bytes) -> list[dict[str, Any]]:
    """The change records of one message of the market-changes topic (packed, or one bare record as
    written before packing existed)."""
    rec = from_json(value)
    return list(rec["changes"]) if "changes" in rec else [rec]


_OFFER_JSON: dict[str, str] = {}


def _offer_json(key: str, offer: OfferKey) -> str:
    """The offer's JSON, cached by its key (bounded: cleared when it holds 200,000 offers)."""
    js = _OFFER_JSON.get(key)
    if js is None:
        if len(_OFFER_JSON) >= 200_000:
            _OFFER_JSON.clear()
        js = _OFFER_JSON[key] = offer.model_dump_json()
    return js


def track_batch(msgs: Sequence[Msg], lookup: Callable[[str], state.State | None], held: Container[str],
                forecaster: Forecaster, threshold: float = state.PRICE_MOVE_THRESHOLD,
                now: datetime | None = None) -> TrackOutput:
    """Fold a batch of raw market messages into per-offer state; see the module docstring."""
    now = now or datetime.now(UTC)
    out = TrackOutput()
    # offer key -> the offer and the time of its last event in the batch that changed its state (the event
    # itself is not kept: each is dropped once applied, which keeps the batch's working memory small)
    last_event: dict[str, tuple[OfferKey, float]] = {}
    material: list[tuple[str, str, str, float | None]] = []  # (offer key, reason, event id, producer ts)
    partition_t = out.partition_t
    for m in msgs:
        result = validate(m.value, MARKET_TYPES, now)
        if isinstance(result, Rejected):
            out.dead_letters.append(dead_letter(m.value, result.reason, m.topic, m.partition, m.offset, STAGE, now))
            continue
        assert isinstance(result, MARKET_EVENTS)
        out.valid += 1
        t = state.event_t(result)
        tp = (m.topic, m.partition)
        if t > partition_t.get(tp, -math.inf):
            partition_t[tp] = t
        key = result.offer.key
        old = out.updated[key][0] if key in out.updated else lookup(key)
        new, reason = state.apply_event(old or {}, result, threshold, held=key in held, t=t)
        if new is old:
            continue
        out.updated[key] = (new, m.partition)
        last_event[key] = (result.offer, t)
        if reason and "usd_per_hour" in new:
            material.append((key, reason, result.event_id, m.timestamp))
    for fc in forecaster.observe_many([(key, out.updated[key][0], t) for key, (_, t) in last_event.items()]):
        key = fc.offer_key
        kb = key.encode()
        out.forecasts += [(kb, r) for r in forecast_records(_offer_json(key, last_event[key][0]), fc)]
    out.promotions += [(f"{p.group}|{p.target}".encode(), p.model_dump_json().encode())
                       for p in forecaster.drain_promotions()]
    # each change carries the offer's state at the end of the batch (the decision stage keeps the last one)
    views: dict[str, state.State] = {}
    for key, reason, event_id, ts in material:
        if key not in views:
            views[key] = state.engine_view(out.updated[key][0], forecaster.latest.get(key))
        out.changes.append(to_json({"offer_key": key, "state": views[key], "reason": reason,
                                    "event_id": event_id, "msg_ts": ts}))
    out.views.update(views)
    return out



def track_isolated(msgs: Sequence[Msg], lookup: Callable[[str], state.State | None], held: Container[str],
                   forecaster: Forecaster, threshold: float = state.PRICE_MOVE_THRESHOLD,
                   now: datetime | None = None) -> TrackOutput:
    """`track_batch`, with poison-pill isolation: should it raise on a batch, the batch is split in halves
    (the second read on top of the first's states) down to the messages that make it raise, and each of
    those is dead-lettered with the exception as its reason. The stage goes on with the rest.

    >>> class Boom(Forecaster):
    ...     def observe_many(self, updates):
    ...         if any(st.get("usd_per_hour") == 13.0 for _, st, _ in updates):
    ...             raise ZeroDivisionError("unlucky")
    ...         return super().observe_many(updates)
    >>> from datetime import UTC, datetime
    >>> from schemas import OfferKey, Market, PriceObserved
    >>> t = datetime(2025, 1, 1, tzinfo=UTC)
    >>> def msg(i, p):
    ...     o = OfferKey(provider="gcp", region="r", instance_type=f"a{i}", gpu_model="L4", gpus_per_instance=1,
    ...                  market=Market.SPOT)
    ...     e = PriceObserved(event_id=str(i), offer=o, usd_per_hour=p, quoted_at=t, observed_at=t, source="x")
    ...     return Msg(e.model_dump_json().encode(), "p", 0, i, None)
    >>> out = track_isolated([msg(0, 1.0), msg(1, 13.0), msg(2, 2.0)], lambda k: None, set(), Boom(), now=t)
    >>> out.valid, [(d.source_offset, d.reason) for d in out.dead_letters]
    (2, [(1, 'the market stage raised ZeroDivisionError: unlucky')])
    """
    try:
        return track_batch(msgs, lookup, held, forecaster, threshold, now)
    except Exception as exc:
        if len(msgs) == 1:
            m = msgs[0]
            out = TrackOutput()
            out.dead_letters.append(dead_letter(m.value, f"the market stage raised {type(exc).__name__}: {exc}",
                                                m.topic, m.partition, m.offset, STAGE, now))
            return out
    mid = len(msgs) // 2
    first = track_isolated(msgs[:mid], lookup, held, forecaster, threshold, now)

    def after_first(key: str) -> state.State | None:
        return first.updated[key][0] if key in first.updated else lookup(key)

    return first.then(track_isolated(msgs[mid:], after_first, held, forecaster, threshold, now))


CATCH_UP_REASON = "price moved while a placement on it was decided"


def catch_up(newly_held: Mapping[str, float], lookup: Callable[[str], state.State | None],
             partition_of: Mapping[str, int], forecaster: Forecaster, out: TrackOutput) -> None:
    """Forward the price of offers that just became held (`newly_held`: offer key -> when the step that
    placed a workload on it began, from streams.core.held) where it moved below the threshold in a quote
    observed since then: the offer was not held yet, so the move was not forwarded, although any move on
    a held offer is material. The state then records the price as forwarded. Offers this stage does not
    own (another worker's partitions) are skipped. (A drift quoted before the step is left to the offer's
    next quote: forwarding it added re-solves and latency, see ARCHITECTURE.md.)

    >>> st = {"usd_per_hour": 1.01, "engine_usd_per_hour": 1.0, "observed_t": 10.0}
    >>> out = TrackOutput()
    >>> catch_up({"k": 9.0}, {"k": st}.get, {"k": 3}, Forecaster(), out)
    >>> out.updated["k"][0]["engine_usd_per_hour"], out.updated["k"][1], len(out.changes)
    (1.01, 3, 1)
    """
    for key, since_t in newly_held.items():
        old = out.updated[key][0] if key in out.updated else lookup(key)
        partition = out.updated[key][1] if key in out.updated else partition_of.get(key)
        if not old or partition is None or "usd_per_hour" not in old:
            continue
        if (old["usd_per_hour"] == old.get("engine_usd_per_hour")
                or float(old.get("observed_t", -math.inf)) < since_t):
            continue
        new = {**old, "engine_usd_per_hour": old["usd_per_hour"]}
        out.updated[key] = (new, partition)
        out.views[key] = view = state.engine_view(new, forecaster.latest.get(key))
        out.changes.append(to_json({"offer_key": key, "state": view, "reason": CATCH_UP_REASON,
                                    "event_id": new.get("price_event_id", ""), "msg_ts": None}))


REFRESH_LAG_S = 300.0   # events of one partition may arrive this much out of event-time order


def refresh_forecasts(forecaster: Forecaster, watermarks: Mapping[int, float],
                      lookup: Callable[[str], state.State | None], partition_of: Mapping[str, int],
                      sent: Mapping[str, state.State], out: TrackOutput,
                      threshold: float = state.PRICE_MOVE_THRESHOLD) -> None:
    """Re-forecast the offers of each partition in `watermarks` (partition -> event time it has passed)
    that had no event for an hour (`Forecaster.refresh`): their forecast records go out, and a change
    (reason state.FORECAST_REFRESHED) where the engine view moved materially from the one last `sent`
    (`state.forecast_moved`; an offer never sent counts as moved). Offers with an event in this batch
    (`out.updated`) are not stale; the views carry the stage's current state of the offer.

    >>> from streams.core.forecast import Forecaster
    >>> f, k = Forecaster(horizons_s=(3600,)), "gcp|r||a|L4|1|spot"
    >>> st = {"usd_per_hour": 2.0, "price_t": 0.0, "hist": [[0.0, 2.0]]}
    >>> _ = f.observe_many([(k, st, 0.0)])
    >>> out = TrackOutput()
    >>> refresh_forecasts(f, {0: 7200.0}, {k: st}.get, {k: 0}, {}, out)
    >>> len(out.forecasts), [from_json(c)["reason"] for c in out.changes]
    (1, ['forecast refreshed'])
    """
    for p, wm in sorted(watermarks.items()):
        for fc in forecaster.refresh(wm, eligible=lambda key, p=p: (partition_of.get(key) == p  # type: ignore[misc]
                                                                     and key not in out.updated)):
            key = fc.offer_key
            if key in out.updated:   # (a forecast of this batch's own, returned by the same flush)
                continue
            offer_json = _offer_json(key, state.parse_offer_key(key))
            out.forecasts += [(key.encode(), r) for r in forecast_records(offer_json, fc)]
            s = lookup(key)
            if not s or "usd_per_hour" not in s:
                continue
            view = state.engine_view(s, fc)
            if state.forecast_moved(sent.get(key), view, threshold):
                out.views[key] = view
                out.changes.append(to_json({"offer_key": key, "state": view, "reason": state.FORECAST_REFRESHED,
                                            "event_id": "", "msg_ts": None}))

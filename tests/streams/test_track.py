"""The market stage's batch function and batch validation, without Kafka."""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import Market
from streams.core import state, track
from streams.core.forecast import Forecaster
from streams.core.track import Msg, track_batch
from streams.core.validate import Rejected, validate, validate_many
from tests.streams.helpers import T0, capacity, offer, preempted, price

MARKET = ("PriceObserved", "CapacityObserved", "InterruptionObserved")
NOW = T0 + timedelta(days=1)
A, B = offer(), offer(gpu="H100-80GB", n=8, market=Market.SPOT)


def _raw(e: object) -> bytes:
    return e.model_dump_json().encode()  # type: ignore[attr-defined]


def _same(a: object, b: object) -> bool:
    if isinstance(a, Rejected) or isinstance(b, Rejected):
        return isinstance(a, Rejected) and isinstance(b, Rejected) and a.reason == b.reason
    return a == b


def test_validate_many_equals_one_by_one_on_a_clean_batch_and_on_a_mixed_one() -> None:
    good = [_raw(price(A, 1.0 + i / 100, minutes=i)) for i in range(20)]
    assert all(_same(x, y) for x, y in zip(validate_many(good, MARKET, NOW), [validate(r, MARKET, NOW) for r in good],
                                           strict=True))
    d = json.loads(good[3])
    d["usd_per_hour"] = -1
    mixed = [*good[:3], json.dumps(d).encode(), None, b"[1]", *good[4:]]
    got = validate_many(mixed, MARKET, NOW)
    assert all(_same(x, validate(r, MARKET, NOW)) for x, r in zip(got, mixed, strict=True))
    assert [isinstance(x, Rejected) for x in got][3:6] == [True, True, True]


def test_validate_many_cannot_be_misaligned_by_messages_that_merge_or_split_when_joined() -> None:
    e1, e2 = _raw(price(A, 1.0, eid="one")), _raw(price(A, 2.0, minutes=1, eid="two"))
    # "a" + "," + "b" joined would be one object; "c" alone is two objects: counts would still match
    merged_head, merged_tail = e1[:-1] + b',"x":"', b'"}'
    split = e2 + b"," + e2
    got = validate_many([merged_head, merged_tail, split], MARKET, NOW)
    assert all(isinstance(x, Rejected) for x in got)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), st.just(_raw(price(A, 1.0)))), min_size=2, max_size=6))
def test_validate_many_agrees_with_validate_on_arbitrary_bytes(raws: list[bytes]) -> None:
    assert all(_same(x, validate(r, MARKET, NOW)) for x, r in zip(validate_many(raws, MARKET, NOW), raws,
                                                                    strict=True))


def test_track_batch_folds_a_batch_into_one_state_per_offer_like_the_event_by_event_fold() -> None:
    events = [price(A, 1.0), price(B, 20.0), price(A, 1.5, minutes=5), capacity(B, False, minutes=6),
              preempted(B, minutes=7), price(A, 1.51, minutes=8)]
    msgs = [Msg(_raw(e), "t", i % 2, i, 1.0) for i, e in enumerate(events)] + [Msg(b"{", "t", 0, 99, None)]
    out = track_batch(msgs, lambda k: None, set(), Forecaster(), now=NOW)
    want: dict[str, state.State] = {}
    for e in events:
        want[e.offer.key], _ = state.apply_event(want.get(e.offer.key, {}), e)
    assert {k: v for k, (v, _) in out.updated.items()} == want
    assert out.valid == 6 and len(out.dead_letters) == 1 and out.dead_letters[0].source_offset == 99
    reasons = [json.loads(c)["reason"] for c in out.changes]
    # new A, new B, A +50 %, B capacity lost, B interruption; A's +0.7 % move of 1.5 is not material
    assert reasons == ["new offer", "new offer", "price rose 50.0%", "capacity lost", "interruption (preempted)"]
    # every change carries the offer's state at the end of the batch
    last_a = [json.loads(c)["state"] for c in out.changes if json.loads(c)["offer_key"] == A.key]
    assert all(s["usd_per_hour"] == 1.51 for s in last_a)
    assert {k for k, _ in out.forecasts} == {A.key.encode(), B.key.encode()}


def test_track_batch_reads_state_through_lookup_and_ignores_replayed_events() -> None:
    first = track_batch([Msg(_raw(price(A, 1.0)), "t", 0, 0, None)], lambda k: None, set(), Forecaster(), now=NOW)
    table = {k: v for k, (v, _) in first.updated.items()}
    again = track_batch([Msg(_raw(price(A, 1.0)), "t", 0, 0, None)], table.get, set(), Forecaster(), now=NOW)
    assert again.valid == 1 and not again.updated and not again.changes
    # a held offer: any move is material
    held = track_batch([Msg(_raw(price(A, 1.001, minutes=1)), "t", 0, 1, None)], table.get, {A.key}, Forecaster(),
                       now=NOW)
    assert [json.loads(c)["reason"] for c in held.changes] == ["price rose 0.1% on a held offer"]


def test_changes_are_packed_into_messages_under_the_size_limit_and_unpacked_in_order():
    recs = [json.dumps({"offer_key": f"k{i}", "state": {"pad": "x" * 100}}).encode() for i in range(50)]
    packed = track.pack_changes(recs, max_bytes=1000)
    assert len(packed) > 1 and all(len(p) <= 1000 + len(b'{"changes":[]}') for p in packed)
    assert [c["offer_key"] for p in packed for c in track.unpack_changes(p)] == [f"k{i}" for i in range(50)]
    assert track.unpack_changes(recs[0]) == [json.loads(recs[0])]   # a bare record, as written before packing
    assert track.pack_changes([]) == []


def test_catch_up_forwards_a_move_quoted_during_the_step_on_an_offer_it_newly_holds() -> None:
    """The offer was not held when the move came, so it was not material then; once held, it is."""
    table: dict[str, state.State] = {}
    early, other = offer(region="early"), offer(region="other")
    out = track_batch([Msg(_raw(price(o, 1.0)), "t", 2, i, None) for i, o in enumerate((A, B, early, other))],
                      table.get, set(), Forecaster(), now=NOW)
    table.update({k: s for k, (s, _) in out.updated.items()})
    # sub-threshold moves (1 %), not held: not forwarded; `early` moved before the step began (minute 1)
    moves = [price(A, 1.01, minutes=10, eid="p2"), price(early, 1.01, minutes=1), price(other, 1.01, minutes=10)]
    out = track_batch([Msg(_raw(e), "t", 2, 10 + i, None) for i, e in enumerate(moves)], table.get, set(),
                      Forecaster(), now=NOW)
    assert out.changes == []
    table.update({k: s for k, (s, _) in out.updated.items()})
    step_t = (T0 + timedelta(minutes=5)).timestamp()
    newly = {A.key: step_t, B.key: step_t, early.key: step_t, other.key: step_t, offer(region="unknown").key: 0.0}
    owned = {A.key: 2, B.key: 2, early.key: 2}   # `other` is another worker's
    res = track.TrackOutput()
    track.catch_up(newly, table.get, owned, Forecaster(), res)
    recs = [json.loads(c) for c in res.changes]
    assert [(r["offer_key"], r["state"]["usd_per_hour"], r["event_id"], r["reason"]) for r in recs] == [
        (A.key, 1.01, "p2", track.CATCH_UP_REASON)]
    assert res.updated == {A.key: ({**table[A.key], "engine_usd_per_hour": 1.01}, 2)}
    # once forwarded, it is what the engine has seen: the next catch-up finds nothing to forward
    table[A.key] = res.updated[A.key][0]
    again = track.TrackOutput()
    track.catch_up(newly, table.get, owned, Forecaster(), again)
    assert again.changes == [] and again.updated == {}


def test_catch_up_reads_the_state_the_same_batch_left() -> None:
    """A batch that moved the offer below the threshold and the plan that newly holds it, seen together."""
    table: dict[str, state.State] = {}
    out = track_batch([Msg(_raw(price(A, 1.0)), "t", 4, 0, None)], table.get, set(), Forecaster(), now=NOW)
    table.update({k: s for k, (s, _) in out.updated.items()})
    out = track_batch([Msg(_raw(price(A, 1.005, minutes=10)), "t", 4, 1, None)], table.get, set(), Forecaster(),
                      now=NOW)
    track.catch_up({A.key: T0.timestamp()}, table.get, {}, Forecaster(), out)
    assert [json.loads(c)["reason"] for c in out.changes] == [track.CATCH_UP_REASON]
    assert out.updated[A.key][0]["engine_usd_per_hour"] == 1.005 and out.updated[A.key][1] == 4


def test_a_market_batch_makes_no_reference_cycles() -> None:
    """The market stage freezes what survives each batch (streams.core.heap.FrozenHeap): a reference cycle a
    batch left before the collector's next run would be frozen with it and wait for the next full
    collection. A batch, rejected messages, forecasts and scoring included, leaves none."""
    import gc

    offers = [offer(region=f"r{i}", market=Market.SPOT) for i in range(40)]
    events = [e for m in range(0, 600, 10) for i, o in enumerate(offers)
              for e in ([price(o, 1.0 + (m + i) % 7 / 10, minutes=m)] +
                        ([capacity(o, m % 20 == 0, minutes=m)] if i % 5 == 0 else []) +
                        ([preempted(o, minutes=m)] if i % 13 == 0 and m % 60 == 0 else []))]
    raws = [_raw(e) for e in events] + [b"{", b"[1]", json.dumps({"event_type": "PriceObserved"}).encode(), None]
    msgs = [Msg(r, "prices.v1", 0, i, None) for i, r in enumerate(raws)]

    def run(f: Forecaster) -> int:
        states: dict[str, state.State] = {}
        dead = 0
        for i in range(0, len(msgs), 500):
            out = track_batch(msgs[i:i + 500], states.get, set(), f, now=NOW)
            states.update((k, s) for k, (s, _) in out.updated.items())
            dead += len(out.dead_letters)
        return dead

    run(Forecaster())   # (first calls: caches, lazy imports)
    gc.collect()
    f = Forecaster()
    gc.disable()
    try:
        dead = run(f)
        garbage = gc.collect()
    finally:
        gc.enable()
    assert dead == 4 and f.made > 0 and f.scored > 0
    assert garbage == 0

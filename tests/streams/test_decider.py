"""The decision stage without Kafka: `Decider` in process, and the same calls through its child process."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from schemas.events import ChangeAction, WorkloadCancelled, WorkloadRequested
from solvers import GreedyEngine
from streams.core.decider import Decider
from streams.runtime.remote import RemoteDecider, RemoteError
from tests.streams.helpers import T0, offer, workload

L4A, L4B = offer(region="a"), offer(region="b")


def change(o: Any, usd: float, eid: str, msg_ts: float | None = None) -> dict[str, Any]:
    return {"offer_key": o.key, "state": {"usd_per_hour": usd, "price_t": T0.timestamp()}, "reason": "new offer",
            "event_id": eid, "msg_ts": msg_ts}


def requested(wid: str) -> WorkloadRequested:
    return WorkloadRequested(event_id=f"r-{wid}", spec=workload(wid), requested_at=T0)


def test_step_places_migrates_and_terminates_with_writes_in_order() -> None:
    d = Decider(GreedyEngine, {}, {}, {})
    out = d.step([change(L4A, 1.0, "e1", time.time() - 0.05), change(L4B, 2.0, "e2")], [requested("w")])
    assert {(t, k) for t, k, _ in out.state_writes} == {("market", L4A.key), ("market", L4B.key), ("workloads", "w")}
    (dec,) = out.decisions
    assert dec.changes[0].action is ChangeAction.LAUNCH and dec.assignments[0].offer == L4A
    assert dec.latency_ms is not None and dec.latency_ms >= 50 and set(dec.trigger_event_ids) == {"e1", "e2", "r-w"}
    assert out.plan_writes == [("plans", "w", {"decision_id": dec.event_id,
                                               "assignments": [dec.assignments[0].model_dump(mode="json")]})]
    # a price rise that does not change the plan: state is written, no decision
    same = d.step([change(L4B, 3.0, "e3")], [])
    assert same.decisions == [] and same.state_writes == [("market", L4B.key, change(L4B, 3.0, "e3")["state"])]
    moved = d.step([change(L4B, 0.5, "e4")], [])
    assert moved.decisions[0].changes[0].action is ChangeAction.MIGRATE
    gone = d.step([], [WorkloadCancelled(event_id="c-w", workload_id="w", cancelled_at=T0)])
    assert gone.decisions[0].changes[0].action is ChangeAction.TERMINATE
    assert gone.plan_writes == [("plans", "w", None)]


def test_a_decision_carries_the_quote_age_of_every_offer_it_places_on() -> None:
    """Including an offer that did not change in this step (its age comes from the market view)."""
    d = Decider(GreedyEngine, {}, {}, {})
    t = time.time()
    d.step([{"offer_key": L4A.key, "state": {"usd_per_hour": 1.0, "price_t": t - 30}, "reason": "new offer",
             "event_id": "e1", "msg_ts": None},
            {"offer_key": L4B.key, "state": {"usd_per_hour": 2.0, "price_t": t - 300}, "reason": "new offer",
             "event_id": "e2", "msg_ts": None}], [requested("w")])
    # A's price rises above B's: the workload moves to B, whose quote did not change in this step
    out = d.step([{"offer_key": L4A.key, "state": {"usd_per_hour": 5.0, "price_t": t - 10}, "reason": "price rose",
                   "event_id": "e3", "msg_ts": None}], [])
    (dec,) = out.decisions
    assert dec.assignments[0].offer == L4B and set(dec.quote_age_s) == {L4B.key}
    assert 299 <= dec.quote_age_s[L4B.key] <= 310


def test_a_step_that_rebuilds_the_engine_re_decides_every_workload_then_later_steps_stay_incremental() -> None:
    """A workload event rebuilds the portfolio engine's model, which drops its cached decisions. The step
    re-decides every workload then; otherwise the first market change to reach them re-decides them all
    (the step after the benchmark's initial placement re-decided ~600 workloads, ~300 ms)."""
    from functools import partial

    from solvers import PortfolioEngine

    d = Decider(partial(PortfolioEngine, cg_budget_s=0.03), {}, {}, {})
    d.step([change(L4A, 1.0, "e1"), change(L4B, 2.0, "e2")], [requested("w1"), requested("w2")])
    eng = d.engine()
    assert isinstance(eng, PortfolioEngine)
    assert eng.last_timings["redecided"] == 2 and not eng.rebuild_pending
    d.step([], [requested("w3")])
    assert eng.last_timings["redecided"] == 3   # w1 and w2 too, not only the new workload
    d.settle(stop=lambda: False)
    out = d.step([change(L4B, 2.5, "e3")], [])   # dearer, and no plan holds it: nothing to re-decide
    assert out.decisions == [] and eng.last_timings["redecided"] == 0
    d.step([], [WorkloadCancelled(event_id="c-w1", workload_id="w1", cancelled_at=T0)])   # a removal rebuilds too
    assert eng.last_timings["redecided"] == 2


def test_decider_rebuilt_from_tables_decides_like_the_original() -> None:
    a = Decider(GreedyEngine, {}, {}, {})
    first = a.step([change(L4A, 1.0, "e1"), change(L4B, 2.0, "e2")], [requested("w")])
    tables: dict[str, dict[str, Any]] = {"market": {}, "workloads": {}, "plans": {}}
    for t, k, v in [*first.state_writes, *first.plan_writes]:
        tables[t][k] = v
    b = Decider(GreedyEngine, tables["market"], tables["workloads"], tables["plans"])
    nxt = [change(L4B, 0.5, "e3")]
    assert [x.event_id for x in a.step(nxt, []).decisions] == [x.event_id for x in b.step(nxt, []).decisions]


def test_remote_decider_runs_the_same_steps_in_a_child_process() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        r = await loop.run_in_executor(None, lambda: RemoteDecider(GreedyEngine, {}, {}, {}))
        try:
            local = Decider(GreedyEngine, {}, {}, {})
            batch = ([change(L4A, 1.0, "e1"), change(L4B, 2.0, "e2")], [requested("w")])
            got, want = await r.step(*batch), local.step(*batch)
            assert [d.event_id for d in got.decisions] == [d.event_id for d in want.decisions]
            # the records come serialised from the child: the decision's id as key, its JSON as value
            assert [k for k, _ in got.decision_records] == [d.event_id.encode() for d in want.decisions]
            assert got.plan_writes == want.plan_writes
            assert r.pid != __import__("os").getpid()
            with pytest.raises(RemoteError, match="KeyError"):
                await r.step([{"no": "offer key"}], [])  # type: ignore[list-item]
        finally:
            r.close()
        assert not r._proc.is_alive()

    asyncio.run(run())


def test_handle_restarts_a_dead_decider_from_the_tables_and_retries_the_step() -> None:
    import os
    import signal

    from streams.runtime.remote import DeciderHandle

    tables: dict[str, dict[str, Any]] = {"market": {}, "workloads": {}, "plans": {}}
    started: list[RemoteDecider] = []

    async def start() -> RemoteDecider:
        loop = asyncio.get_running_loop()
        r = await loop.run_in_executor(None, lambda: RemoteDecider(
            GreedyEngine, tables["market"], tables["workloads"], tables["plans"]))
        started.append(r)
        return r

    def record(out: Any) -> None:
        for t, k, v in [*out.state_writes, *out.plan_writes]:
            tables[t][k] = v

    async def run() -> None:
        h = DeciderHandle(start)
        local = Decider(GreedyEngine, {}, {}, {})
        first = ([change(L4A, 1.0, "e1"), change(L4B, 2.0, "e2")], [requested("w")])
        record(await h.step(*first))
        local.step(*first)
        pid = started[0].pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        started[0]._proc.join(5)
        nxt = ([change(L4B, 0.5, "e3")], [])
        got = await h.step(*nxt)
        want = local.step(*nxt)
        assert h.restarts == 1 and len(started) == 2
        assert [d.event_id for d in got.decisions] == [d.event_id for d in want.decisions]
        assert got.decisions[0].changes[0].action is ChangeAction.MIGRATE
        with pytest.raises(RemoteError):
            await h.step([{"no": "offer key"}], [])
        assert len(started) == 2  # a failing input is not retried; the decider is discarded
        await h.step([], [])
        assert len(started) == 3
        h.reset()

    asyncio.run(run())


def test_the_decider_process_exits_when_the_worker_side_of_its_pipe_closes() -> None:
    """What happens when the worker dies (kill -9 included): the OS closes its end of the pipe."""
    r = RemoteDecider(GreedyEngine, {}, {}, {})
    assert r._proc.is_alive()
    r._conn.close()
    r._proc.join(10)
    assert not r._proc.is_alive() and r._proc.exitcode == 0


def test_a_redelivered_cancellation_terminates_a_plan_whose_spec_is_already_gone() -> None:
    """A failed delivery after the cancellation's table writes leaves the plan without its spec; the
    redelivered WorkloadCancelled must still terminate it."""
    d = Decider(GreedyEngine, {}, {}, {})
    first = d.step([change(L4A, 1.0, "e1")], [requested("w")])
    tables: dict[str, dict[str, Any]] = {"market": {}, "workloads": {}, "plans": {}}
    for t, k, v in [*first.state_writes, *first.plan_writes]:
        tables[t][k] = v
    del tables["workloads"]["w"]  # the cancellation's spec delete reached the table, its decision did not
    again = Decider(GreedyEngine, tables["market"], tables["workloads"], tables["plans"])
    out = again.step([], [WorkloadCancelled(event_id="c-w", workload_id="w", cancelled_at=T0)])
    assert out.decisions and out.decisions[0].changes[0].action is ChangeAction.TERMINATE
    assert out.plan_writes == [("plans", "w", None)]


def test_delivery_failures_are_charged_to_the_batch_that_produced_them() -> None:
    from streams.runtime.fastout import Batch, FastOutput

    mine, theirs = Batch(), Batch()

    class Msg:
        def topic(self) -> str:
            return "t"

    FastOutput._on_delivery(theirs, "broker said no", Msg())
    FastOutput._on_delivery(mine, None, Msg())
    assert (mine.errors, theirs.errors) == (0, 1)


class SlowEngine(GreedyEngine):
    """An engine whose solve hangs (module level: the decider's child process imports it by name)."""

    def solve(self, workload_ids: Any = None) -> Any:
        time.sleep(30)
        return super().solve(workload_ids)


def test_a_hung_decider_is_killed_at_the_step_timeout_restarted_and_the_step_retried_once() -> None:
    from streams.runtime.remote import DeciderHandle

    started: list[RemoteDecider] = []

    async def start() -> RemoteDecider:
        loop = asyncio.get_running_loop()
        r = await loop.run_in_executor(None, lambda: RemoteDecider(SlowEngine, {}, {}, {}, step_timeout_s=1.0))
        started.append(r)
        return r

    async def run() -> None:
        h = DeciderHandle(start)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await h.step([change(L4A, 1.0, "e1")], [requested("w")])
        assert len(started) == 2 and h.restarts == 1 and time.monotonic() - t0 < 20
        assert not any(r._proc.is_alive() for r in started)

    asyncio.run(run())


def test_a_released_handle_discards_its_decider_now_or_after_the_step_in_flight() -> None:
    """A rebalance gave the decision stage's inputs to another worker (streams.runtime.app): the next step here,
    should the inputs come back, rebuilds from the tables rather than resuming from a stale plan."""
    from streams.runtime.remote import DeciderHandle

    class Fake:
        def __init__(self) -> None:
            self.closed = False
            self.gate: asyncio.Event | None = None

        async def step(self, *args: Any) -> str:
            if self.gate is not None:
                await self.gate.wait()
            return "out"

        def close(self) -> None:
            self.closed = True

    made: list[Fake] = []

    async def start() -> Any:
        made.append(Fake())
        return made[-1]

    async def run() -> None:
        h = DeciderHandle(start)
        assert await h.step([], []) == "out" and len(made) == 1
        h.release()                                     # idle: discarded now
        assert made[0].closed
        made[0].closed = False
        assert await h.step([], []) == "out" and len(made) == 2 and not made[0].closed
        made[1].gate = asyncio.Event()
        running = asyncio.create_task(h.step([], []))
        await asyncio.sleep(0.01)
        h.release()                                     # a step in flight: discarded when it ends
        assert not made[1].closed
        made[1].gate.set()
        assert await running == "out" and made[1].closed
        await h.step([], [])
        assert len(made) == 3

    asyncio.run(run())

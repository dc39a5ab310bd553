"""The faust-streaming recovery race (streams.runtime.rebalance; upstream faust-streaming/faust#596), replayed
with Faust's own objects: a message delivered while recovery seeks must survive recovery's resume of the flow."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest
from faust.tables.manager import TableManager

from streams.runtime.rebalance import App, FlowWatch


async def _delivery_during_the_seek(app: faust.App) -> int:
    """Recovery's order of steps (faust/tables/recovery.py, on_recovery_completed), with one delivery made by the
    fetcher while the seek runs; returns what the stream queue holds afterwards."""
    queue: Any = app.FlowControlQueue(maxsize=100, clear_on_resume=True)   # as a stream's channel queue
    app.flow_control.resume()                 # recovery resumed the flow to read the changelogs
    await app.on_rebalance_complete.send()    # 1. recovery announces the rebalance complete

    async def deliver() -> None:              # the conductor's on_message: acquire the flow, then queue
        await app.flow_control.acquire()
        queue.put_nowait("message at the committed offset")

    delivery = asyncio.ensure_future(deliver())
    await asyncio.sleep(0.01)                 # 2. perform_seek(): the fetcher delivers meanwhile
    app.flow_control.resume()                 # 3. resume the flow (clears every stream queue)
    await asyncio.wait_for(delivery, 1.0)
    return int(queue.qsize())


def test_a_message_delivered_during_the_post_recovery_seek_is_kept() -> None:
    assert asyncio.run(_delivery_during_the_seek(App("t-rebalance"))) == 1


def test_without_the_workaround_faust_discards_it() -> None:
    """The bug the workaround exists for; when this starts failing, Faust fixed it: drop streams.runtime.rebalance."""
    assert asyncio.run(_delivery_during_the_seek(faust.App("t-rebalance-plain"))) == 0


@pytest.mark.parametrize("rebalancing, recovered, resumed", [(False, True, True), (True, True, False),
                                                             (False, False, False)])
def test_a_flow_left_suspended_after_recovery_is_resumed_at_the_second_check(
        rebalancing: bool, recovered: bool, resumed: bool) -> None:
    async def scenario() -> list[bool]:
        app = App("t-flow")
        if recovered:
            assert isinstance(app.tables, TableManager)
            app.tables.recovery.completed.set()
        app.rebalancing = rebalancing
        app.flow_control.suspend()
        watch = FlowWatch(app)
        return [watch.check(), watch.check(), app.flow_control.is_active()]

    assert asyncio.run(scenario()) == [False, resumed, resumed]

"""A workaround for a Faust (faust-streaming 0.15) recovery race that loses stream messages.

After a rebalance, `Recovery.on_recovery_completed` resumes the stream partitions, then awaits
`perform_seek()` (seek to committed offsets), and only then calls `app.flow_control.resume()`, which
*clears every stream queue*. Whatever the fetcher delivered during the seek is discarded although the
consumer's position has moved past it: those messages are never processed, the commit stops at the gap
(Faust commits only contiguous acknowledged offsets), and partitions that had no committed offset at
all (aiokafka's `seek_to_committed` skips them) are never re-read. Seen here in about 1 in 3 restarts
after a kill -9 under load: whole offers missing from the state and the group's lag stuck.

The fix: when the rebalance has ended (after the queues were cleared) seek the stream partitions again,
to their committed offsets, and those without one to the beginning (where `auto_offset_reset=earliest`
started them). Messages processed in between are processed again: every update in this pipeline is
idempotent, so at-least-once is kept and nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

log = logging.getLogger(__name__)


class App(faust.App):
    """faust.App with the re-seek after each rebalance (see the module docstring)."""

    _reseek: asyncio.Future[None] | None = None

    def on_rebalance_end(self) -> None:
        super().on_rebalance_end()
        self._reseek = asyncio.ensure_future(reseek_streams(self))


async def reseek_streams(app: Any) -> None:
    consumer = app.consumer
    changelogs = app.tables.changelog_topics
    stream_tps = {tp for tp in consumer.assignment() if tp.topic not in changelogs}
    if not stream_tps:
        return
    try:
        committed = await consumer.seek_to_committed()
        await consumer.perform_seek()  # also resets Faust's read and committed offsets
        fresh = [tp for tp in stream_tps if not committed.get(tp)]
        if app.conf.consumer_auto_offset_reset == "earliest":
            for tp in fresh:  # offset 0, or the log start if retention removed it (offset reset: earliest)
                await consumer.seek(tp, 0)
        log.info("re-seeked %d stream partitions after the rebalance (%d from the beginning)",
                 len(stream_tps), len(fresh))
    except Exception as exc:  # a new rebalance may have revoked them meanwhile: it seeks again itself
        log.warning("re-seek after rebalance failed: %r", exc)

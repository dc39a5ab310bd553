"""The one workaround for a faust-streaming bug: a recovery race that loses stream messages after a rebalance.

Upstream: https://github.com/faust-streaming/faust/issues/596 (open; seen here with faust-streaming 0.15.3).
After a rebalance, `Recovery.on_recovery_completed` sends `app.on_rebalance_complete`, resumes the stream
partitions, awaits `perform_seek()` (seek to committed offsets) and only then calls
`app.flow_control.resume()`, which *clears every stream queue*. The flow control is already active at
that point, so whatever the fetcher delivers during the seek is queued, then discarded, although the
consumer's position has moved past it. Those messages are never processed, and Faust's commit can then
skip past them. Seen here in about 1 in 3 restarts after a kill -9 (a decision input lost, the group's
lag stuck).

The fix: suspend the flow control when `on_rebalance_complete` fires. Deliveries then *wait* (the
conductor acquires the flow control before queueing) instead of being queued and cleared, and continue
in offset order once recovery resumes the flow. Should a recovery end without resuming it (Faust returns
early when a new rebalance starts), `FlowWatch.check()`, called by the worker's 10 s timer, resumes a
flow found suspended twice in a row after recovery completed, so this can never stall the worker.
tests/streams/test_rebalance.py fails without the fix.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import faust
from faust.tables.manager import TableManager

log = logging.getLogger(__name__)


class App(faust.App):
    """faust.App whose stream deliveries wait, rather than get discarded, during the post-recovery seek."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_rebalance_complete.connect(cast(Any, self._hold_deliveries))

    async def _hold_deliveries(self, sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        self.flow_control.suspend()


class FlowWatch:
    """Resumes a stream flow `App` suspended and recovery never resumed (`check()` every few seconds)."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self._suspended_last = False

    def check(self) -> bool:
        """True when it resumed the flow: suspended at this check and the one before, with recovery complete."""
        tables = self.app.tables   # (with no table, recovery completes right after each rebalance)
        recovered = tables.recovery.completed.is_set() if isinstance(tables, TableManager) else True
        if self.app.rebalancing or not recovered:
            self._suspended_last = False
            return False
        suspended = not self.app.flow_control.is_active()
        if suspended and self._suspended_last:
            log.warning("resuming the stream flow left suspended after recovery")
            self.app.flow_control.resume()
            self._suspended_last = False
            return True
        self._suspended_last = suspended
        return False

"""Keep Python's cyclic garbage collector out of the latency path of a process with a large long-lived heap.

The worker holds ~10k market states (dicts with history lists: ~500k tracked objects) and the decider
process ~400k (market view, plan, engine). CPython's full (generation 2) collection scans them all: it
took 190-310 ms in the worker at 1,000 events/s, about every 20 s, finding nothing to free (measured with
gc.callbacks during the latency benchmark); each one stalls every thread of the process (it holds the
GIL), so a decision in flight waits for it.

`FrozenHeap` freezes what survives each unit of work (`gc.freeze()`: moved out of the collector's reach;
objects still die by reference counting, only cycles among frozen objects are not found), and runs a full
collection (unfreeze, collect, freeze) only when the process is idle, at most every `full_every_s`, or when
the frozen set has doubled since the last one, bounding any cyclic garbage it holds. Counting the frozen
set walks it (~32 ms for ~370k objects), so it is counted when the process turns idle after work and, while
it never is, at most every `growth_check_s`.

>>> h = FrozenHeap()
>>> h.worked(); h.idle(); h.full_collections
1
"""

from __future__ import annotations

import gc
import time

IDLE_S = 1.0  # no work for this long: the process is idle (the time for `FrozenHeap.idle()`)


class FrozenHeap:
    def __init__(self, full_every_s: float = 600.0, growth_check_s: float = 30.0) -> None:
        self.full_every_s = full_every_s
        self.growth_check_s = growth_check_s
        now = time.monotonic()
        self._last_full, self._frozen_after, self._last_check, self._since_idle = now, 0, now, 0
        self.full_collections = 0

    def worked(self) -> None:
        """After a unit of work (a step, a batch): freeze what survived it."""
        gc.freeze()
        self._since_idle += 1
        if time.monotonic() - self._last_check > self.growth_check_s and self._grown():  # never idle, growing
            self.collect()

    def idle(self) -> None:
        """The process has nothing to do: the time for a full collection, now and then."""
        if time.monotonic() - self._last_full > self.full_every_s or (self._since_idle and self._grown()):
            self.collect()
        self._since_idle = 0

    def collect(self) -> None:
        """A full collection of everything, frozen or not; what survives is frozen again."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self._last_full, self._frozen_after = time.monotonic(), gc.get_freeze_count()
        self._last_check = self._last_full
        self.full_collections += 1

    def _grown(self) -> bool:
        """The frozen set has doubled since the last full collection, or none was made yet."""
        self._last_check = time.monotonic()
        return not self._frozen_after or gc.get_freeze_count() > 2 * self._frozen_after

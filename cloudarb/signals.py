"""SIGTERM is Ctrl-C: one handler for every long-running command.

`install()` (called once by `cloudarb.cli.main`) makes SIGTERM -- what systemd, Kubernetes and `docker stop`
send -- raise `KeyboardInterrupt` in the main thread, so every command's Ctrl-C clean-up (stopping the
broker, the worker subprocess, the sink and API threads, flushing producers) also runs on SIGTERM.
Only the first SIGTERM raises: a second one while the command is stopping is ignored (logged), so an
impatient supervisor cannot interrupt the clean-up itself and orphan a child; SIGKILL still ends it.
Ctrl-C keeps Python's own behaviour (every press raises).

A signal handler runs wherever the main thread is, and Python drops an exception raised inside a callback it
calls from C (a weakref callback, `__del__`, an import-lock clean-up), printing "Exception ignored in ...".
A SIGTERM that lands there would be lost and the command would run on, deaf to the next one. So
`install()` also hooks `sys.unraisablehook`: a dropped `Sigterm` re-arms the handler and, from a thread,
sends SIGTERM again, which raises at the main thread's next safe point.

A command whose loop stops gracefully on an event (`connectors run`) uses `sigterm_sets(event)` around it
instead. The Faust worker, once started, replaces the handler with its own in its event loop (SIGTERM and
SIGINT both shut the worker down; the decider child process ends with it).

Children that die with their parent (the local Kafka broker, the demo's worker): `embedded.children`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

_terminated = threading.Event()


class Sigterm(KeyboardInterrupt):
    """The KeyboardInterrupt a SIGTERM raises (every Ctrl-C clean-up catches it as one)."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if _terminated.is_set():
        log.warning("SIGTERM again: already stopping")
        return
    _terminated.set()
    raise Sigterm("SIGTERM")


def _redeliver_dropped(unraisable: Any) -> None:
    """`sys.unraisablehook`: a Sigterm Python dropped (raised inside a callback it ignores) is sent again."""
    if isinstance(unraisable.exc_value, Sigterm):
        log.warning("SIGTERM landed where Python drops exceptions; sending it again")
        _terminated.clear()
        # from a thread, shortly: sent from here, it would be handled inside this hook, which drops it too
        t = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM))
        t.daemon = True
        t.start()
        return
    _previous_unraisablehook(unraisable)


_previous_unraisablehook = sys.unraisablehook


def install() -> None:
    """Make SIGTERM raise `KeyboardInterrupt` in the main thread (once); a no-op outside the main thread."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
        sys.unraisablehook = _redeliver_dropped


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """`install()` for a block; the previous SIGTERM handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def sigterm_sets(stop: threading.Event) -> Iterator[None]:
    """For a block that stops gracefully when `stop` is set: SIGTERM sets it (instead of raising)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        _terminated.set()
        stop.set()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def terminated() -> bool:
    """True once a SIGTERM was turned into `KeyboardInterrupt`."""
    return _terminated.is_set()


def interrupted_exit_code() -> int:
    """The shell's convention for a command ended by a signal: 128 + SIGTERM (143) or + SIGINT (130)."""
    return 128 + (signal.SIGTERM if terminated() else signal.SIGINT)


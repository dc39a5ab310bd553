"""SIGTERM is Ctrl-C: one handler for every long-running command, and children that die with their parent.

`install()` (called once by `cloudarb.cli.main`) makes SIGTERM -- what systemd, Kubernetes and `docker stop`
send -- raise `KeyboardInterrupt` in the main thread, so every command's Ctrl-C clean-up (stopping the
broker, the worker subprocess, the sink and API threads, flushing producers) also runs on SIGTERM.
Only the first SIGTERM raises: a second one while the command is stopping is ignored (logged), so an
impatient supervisor cannot interrupt the clean-up itself and orphan a child; SIGKILL still ends it.
Ctrl-C keeps Python's own behaviour (every press raises).

A command whose loop stops gracefully on an event (`connectors run`) uses `sigterm_sets(event)` around it
instead. The Faust worker, once started, replaces the handler with its own in its event loop (SIGTERM and
SIGINT both shut the worker down; the decider child process ends with it).

`die_with_parent(cmd)` prefixes a command line so that, on Linux, the child gets SIGTERM when this process
dies, even by SIGKILL (`prctl(PR_SET_PDEATHSIG)` through util-linux's `setpriv`, which then execs the
command: the pid is the command's). Used for the local Kafka broker and the demo's worker.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from types import FrameType

log = logging.getLogger(__name__)

_terminated = threading.Event()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if _terminated.is_set():
        log.warning("SIGTERM again: already stopping")
        return
    _terminated.set()
    raise KeyboardInterrupt("SIGTERM")


def install() -> None:
    """Make SIGTERM raise `KeyboardInterrupt` in the main thread (once); a no-op outside the main thread."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


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


@functools.cache
def _setpriv() -> str | None:
    if not sys.platform.startswith("linux"):
        return None
    path = shutil.which("setpriv")
    if path is None:
        return None
    try:
        usage = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return path if "--pdeathsig" in usage else None


def die_with_parent(cmd: list[str], sig: str = "TERM") -> list[str]:
    """`cmd`, prefixed so that its process gets `sig` when this one dies (Linux with util-linux >= 2.33).

    Unchanged elsewhere, and when called outside the main thread: the kernel sends the signal when the
    *thread* that started the child exits, which for a helper thread would be long before this process.
    """
    setpriv = _setpriv()
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return cmd
    return [setpriv, f"--pdeathsig={sig}", "--", *cmd]

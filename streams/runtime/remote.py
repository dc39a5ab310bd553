"""Run a `streams.core.decider.Decider` in a child process, so a solve (100s of ms of CPU) never blocks the
worker's event loop: the market stage keeps consuming while the decision stage solves.

The child is started with the `spawn` method (the worker has threads; forking it is unsafe) and serves
calls over a pipe, one at a time. It exits when the pipe closes, so it never outlives the worker (also
after kill -9). An exception in the child is raised again in the caller (`RemoteError`). `DeciderHandle`
starts the decider from the caller's stores when first needed and, should the child die, starts a new one
from the stores and retries the step once (the stores hold everything up to the previous step).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from schemas.market import AllocationEngine
from streams.core.decider import DecideOutput, Decider, UserEvent
from streams.core.heap import IDLE_S, FrozenHeap

log = logging.getLogger(__name__)


class RemoteError(RuntimeError):
    """An exception raised in the decider's child process (its traceback is the message)."""


def _serve(conn: Any, engine_factory: Callable[[], AllocationEngine], loglevel: int) -> None:
    # Ctrl-C reaches the whole foreground process group: the worker shuts down, and this child stops with
    # it (multiprocessing terminates daemonic children at exit, with SIGTERM, which is left at its default)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=loglevel, format=f"[%(asctime)s] [{os.getpid()}] [%(levelname)s] %(message)s")
    decider: Decider | None = None
    heap = FrozenHeap()

    while True:
        try:
            if not conn.poll(IDLE_S):
                heap.idle()
                continue
            op, args = conn.recv()
        except (EOFError, OSError):  # the worker is gone
            return
        t_call = time.perf_counter()
        t_adopted = None
        try:
            if op == "init":
                decider = Decider(engine_factory, *args)
                result: Any = None
            elif op == "step":
                assert decider is not None, "step before init"
                result = decider.step(*args)
            else:
                raise ValueError(f"unknown op {op!r}")
            conn.send(("ok", result))
            t_reply = time.perf_counter()
        except Exception:
            conn.send(("err", traceback.format_exc()))
            t_reply = time.perf_counter()
        else:
            if op == "step" and decider is not None:
                try:
                    # the engine's deferred bookkeeping while the worker sends the result, then its
                    # preparation of the next solve until the next call arrives
                    decider.settle()
                    t_adopted = time.perf_counter()
                    decider.settle(stop=lambda: bool(conn.poll(0)))
                except Exception:   # the reply is sent: no other to send. A new child rebuilds from the stores
                    log.exception("decider settle failed: exiting")
                    os._exit(1)
        t_settled = time.perf_counter()
        # what survived the call is long-lived state (market view, plan, engine): out of the collector's way
        heap.worked()
        if log.isEnabledFor(logging.DEBUG):
            adopt_ms = ((t_adopted or t_reply) - t_reply) * 1000
            log.debug("decider %s: %.0f ms to reply, then %.0f ms settling (adopting the result %.0f ms, then "
                      "preparing), %.0f ms collecting", op, (t_reply - t_call) * 1000, (t_settled - t_reply) * 1000,
                      adopt_ms, (time.perf_counter() - t_settled) * 1000)


class RemoteDecider:
    """`Decider` behind a pipe; `await step(...)` waits in a thread, so the event loop stays free."""

    def __init__(self, engine_factory: Callable[[], AllocationEngine], market: Mapping[str, Any],
                 workloads: Mapping[str, Any], plans: Mapping[str, Any], quotas: Mapping[str, Any] | None = None,
                 step_timeout_s: float = 600.0) -> None:
        self.step_timeout_s = step_timeout_s
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, engine_factory, logging.getLogger().level),
                                 name="cloudarb-decider", daemon=True)
        self._proc.start()
        child.close()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="decider")
        self._call("init", (dict(market), dict(workloads), dict(plans), dict(quotas or {})))
        log.info("decider process %d started", self._proc.pid)

    def _call(self, op: str, args: tuple[Any, ...]) -> Any:
        self._conn.send((op, args))
        status, result = self._conn.recv()
        if status == "err":
            raise RemoteError(f"decider {op} failed in the child process:\n{result}")
        return result

    async def step(self, market_changes: Sequence[Mapping[str, Any]],
                   workload_events: Iterable[UserEvent]) -> DecideOutput:
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(self._pool, self._call, "step", (list(market_changes), list(workload_events)))
        out: DecideOutput = await asyncio.wait_for(call, self.step_timeout_s)  # a hung child: TimeoutError
        return out

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def close(self) -> None:
        """Stop the child (it holds nothing that is not in the stores), let a reader blocked on the pipe
        see its end, then close the pipe (closing it under a blocked reader could hand its file
        descriptor number to the next decider's pipe)."""
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join(5)
        self._pool.shutdown(wait=True)
        self._conn.close()


# the child died (a pipe error, or EOF, also mid-message) or hung past the step timeout
CHILD_GONE = (EOFError, OSError, TimeoutError)


class DeciderHandle:
    """The decision stage as the agent sees it: started lazily by `start()`, restarted when its process dies.

    A step that raises inside the decider (`RemoteError`) is not retried: the same input would fail again.
    After any failure the decider is discarded (it may have adopted a plan that was never recorded), so
    the next step starts a new one from the stores.
    """

    def __init__(self, start: Callable[[], Awaitable[RemoteDecider]]) -> None:
        self._start = start
        self._d: RemoteDecider | None = None
        self.restarts = 0
        self._stepping = False
        self._release_after_step = False

    async def step(self, market_changes: Sequence[Mapping[str, Any]],
                   workload_events: Sequence[UserEvent]) -> DecideOutput:
        self._stepping = True
        try:
            for attempt in (0, 1):
                if self._d is None:
                    self._d = await self._start()
                try:
                    return await self._d.step(market_changes, workload_events)
                except CHILD_GONE as exc:
                    self.reset()
                    if attempt:
                        raise
                    self.restarts += 1
                    log.warning("the decider process died (%r): starting a new one from the stores, retrying", exc)
                except BaseException:
                    self.reset()
                    raise
            raise AssertionError("unreachable")
        finally:
            self._stepping = False
            if self._release_after_step:
                self._release_after_step = False
                self.reset()

    def release(self) -> None:
        """This worker no longer runs the decision stage (a rebalance gave its input partitions to another
        worker): discard the decider, now or after the step in flight, so that it is rebuilt from the
        stores, which the other worker changes meanwhile, should the inputs come back."""
        if self._stepping:
            self._release_after_step = True
        else:
            self.reset()

    def reset(self) -> None:
        """Discard the decider (after a failure, or when the stores it was built from are replaced)."""
        if self._d is not None:
            d, self._d = self._d, None
            d.close()

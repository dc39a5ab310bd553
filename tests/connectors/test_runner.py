"""The runner: one dead or hanging provider never stalls the others; the circuit breaker; rate limiter;
credentials skipping with one line each."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any, ClassVar

from connectors.base import MarketEvent, RateLimiter, Reject, Source, SourceError
from connectors.registry import SOURCES
from connectors.runner import CircuitBreaker, Runner, select_sources
from schemas.offers import Market
from tests.connectors.conftest import NOW


class Good(Source):
    name = "good"
    provider = "runpod"
    price_value: ClassVar[float] = 1.0

    def fetch(self) -> Iterable[MarketEvent | Reject]:
        offer = self.offer(region="global", instance_type="x", gpu_model="L4", gpus=1, market=Market.ON_DEMAND)
        yield self.price(offer, self.price_value, None, "test")


class Dead(Source):
    name = "dead"
    provider = "lambda"

    def fetch(self) -> Iterable[MarketEvent | Reject]:
        raise SourceError("connection refused")


class Hangs(Source):
    name = "hangs"
    provider = "vastai"
    release = threading.Event()

    def fetch(self) -> Iterable[MarketEvent | Reject]:
        self.release.wait(30)
        return []


def test_once_isolates_dead_and_hanging_sources() -> None:
    got: list[Any] = []
    runner = Runner([Hangs(env={}), Dead(env={}), Good(env={}, clock=lambda: NOW)], got.append)
    t0 = time.monotonic()
    rep = runner.run_once(timeout_s=1.0)
    Hangs.release.set()
    assert time.monotonic() - t0 < 5
    assert rep["good"].status == "ok" and rep["good"].published == 1 and len(got) == 1
    assert rep["dead"].status == "failed" and "connection refused" in rep["dead"].detail
    assert rep["hangs"].status == "timed out"


def test_forever_opens_the_breaker_and_keeps_polling_the_healthy_source() -> None:
    got: list[Any] = []
    dead, good = Dead(env={}), Good(env={}, clock=lambda: NOW)
    runner = Runner([dead, good], got.append, failure_threshold=2, reset_timeout_s=60)
    stop = threading.Event()
    t = threading.Thread(target=runner.run_forever, args=(stop, {"dead": 0.01, "good": 0.01}))
    t.start()
    time.sleep(0.5)
    stop.set()
    t.join(10)
    assert not t.is_alive()
    assert dead.stats.polls == 2  # then the breaker is open for 60 s
    assert runner.breakers["dead"].state == "open"
    assert good.stats.polls > 5 and len(got) == 1  # polled on, but only the first (changed) price emitted


def test_circuit_breaker_half_open() -> None:
    now = [0.0]
    br = CircuitBreaker(failure_threshold=2, reset_timeout_s=10, clock=lambda: now[0])
    br.failure()
    assert br.allow()
    br.failure()
    assert br.state == "open" and not br.allow()
    now[0] = 11
    assert br.state == "half-open" and br.allow()
    br.failure()  # trial failed: open again
    assert br.state == "open" and br.opened_count == 2
    now[0] = 22
    br.success()
    assert br.state == "closed"


def test_rate_limiter_spaces_requests() -> None:
    t = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        t[0] += s

    rl = RateLimiter(2.0, burst=1, clock=lambda: t[0], sleep=sleep)
    for _ in range(5):
        rl.acquire()
    assert slept == [0.5, 0.5, 0.5, 0.5]


def test_missing_credentials_one_line_each() -> None:
    lines: list[str] = []
    srcs = select_sources(SOURCES, {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}, None, say=lines.append)
    assert sorted(s.name for s in srcs) == ["aws-spot-advisor", "azure-prices", "vastai"]  # public APIs
    assert len(lines) == len(SOURCES) - 3 and all(line.startswith("skipping ") for line in lines)
    assert any("LAMBDA_API_KEY" in line for line in lines)
    only = select_sources(SOURCES, {"RUNPOD_API_KEY": "k"}, ["runpod"], say=lines.append)
    assert [s.name for s in only] == ["runpod"]


def test_price_jump_rejected_once_but_a_confirmed_level_shift_is_accepted() -> None:
    class Jumpy(Good):
        name = "jumpy"

    src = Jumpy(env={}, clock=lambda: NOW)
    Jumpy.price_value = 1.0
    assert len(src.poll()) == 1
    Jumpy.price_value = 150.0
    assert src.poll() == [] and src.poll() == []
    assert src.stats.rejected["price_jump"] == 2
    assert [e.usd_per_hour for e in src.poll()] == [150.0]  # third consecutive poll: a real level shift
    Jumpy.price_value = 1.2  # and a one-off outlier between normal prices is dropped, not remembered
    assert src.poll() == []
    Jumpy.price_value = 150.0
    assert src.poll() == []  # unchanged from the accepted level

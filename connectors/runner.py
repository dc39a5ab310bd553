"""Runs sources side by side: one thread per source, each behind its own circuit breaker.

A source that hangs or keeps failing affects only itself: `run_once` waits at most `timeout_s` for all of
them together; `run_forever` polls each on its own cadence and, after `failure_threshold` consecutive
failed polls, opens its breaker for `reset_timeout_s` (then one trial poll: half-open).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.base import POLL_FAILURES, MarketEvent, Source, SourceStats

log = logging.getLogger(__name__)

Sink = Callable[[MarketEvent], None]


class CircuitBreaker:
    """closed -> (threshold consecutive failures) -> open -> (reset timeout) -> half-open -> closed | open."""

    def __init__(self, failure_threshold: int = 3, reset_timeout_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold, self.reset_timeout_s, self._clock = failure_threshold, reset_timeout_s, clock
        self.failures = 0
        self.opened_at: float | None = None
        self.opened_count = 0

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self._clock() - self.opened_at >= self.reset_timeout_s else "open"

    def allow(self) -> bool:
        return self.state != "open"

    def success(self) -> None:
        self.failures, self.opened_at = 0, None

    def failure(self) -> None:
        self.failures += 1
        if self.state == "half-open" or self.failures >= self.threshold:
            if self.opened_at is None or self.state == "half-open":
                self.opened_count += 1
            self.opened_at = self._clock()

    def seconds_until_retry(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.reset_timeout_s - (self._clock() - self.opened_at))


@dataclass
class SourceReport:
    name: str
    provider: str
    status: str = "pending"  # ok | failed | timed out | skipped
    detail: str = ""
    published: int = 0
    stats: SourceStats = field(default_factory=SourceStats)
    seconds: float = 0.0


class Runner:
    def __init__(self, sources: Sequence[Source], sink: Sink, *, failure_threshold: int = 3,
                 reset_timeout_s: float = 300.0) -> None:
        self.sources = list(sources)
        self.sink = sink
        self.breakers = {s.name: CircuitBreaker(failure_threshold, reset_timeout_s) for s in self.sources}
        self.reports = {s.name: SourceReport(s.name, s.provider, stats=s.stats) for s in self.sources}
        self._sink_lock = threading.Lock()

    def _poll(self, src: Source) -> None:
        rep = self.reports[src.name]
        t0 = time.monotonic()
        try:
            events = src.poll()
        except Exception as exc:  # a provider's failure is reported, never propagated to the others
            src.stats.failures += 1
            POLL_FAILURES.labels(src.provider).inc()
            self.breakers[src.name].failure()
            rep.status, rep.detail = "failed", f"{type(exc).__name__}: {exc}"[:300]
            log.warning("%s: poll failed: %s (breaker %s)", src.name, rep.detail, self.breakers[src.name].state)
            return
        finally:
            rep.seconds = time.monotonic() - t0
        self.breakers[src.name].success()
        with self._sink_lock:
            for e in events:
                self.sink(e)
                rep.published += 1
        rep.status, rep.detail = "ok", ""

    def run_once(self, timeout_s: float = 120.0) -> dict[str, SourceReport]:
        """One poll of every source in parallel; a source still running after `timeout_s` is reported as
        timed out and abandoned (daemon thread) so it cannot stall the rest."""
        threads = {s.name: threading.Thread(target=self._poll, args=(s,), daemon=True, name=f"src-{s.name}")
                   for s in self.sources}
        for t in threads.values():
            t.start()
        deadline = time.monotonic() + timeout_s
        for name, t in threads.items():
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                self.reports[name].status = "timed out"
                self.reports[name].detail = f"no answer within {timeout_s:g} s"
        return self.reports

    def run_forever(self, stop: threading.Event, intervals: Mapping[str, float] | None = None) -> None:
        """Poll each source on its cadence until `stop` is set."""
        def loop(src: Source) -> None:
            interval = (intervals or {}).get(src.name, src.poll_interval_s)
            br = self.breakers[src.name]
            while not stop.is_set():
                t0 = time.monotonic()
                if br.allow():
                    self._poll(src)
                wait = interval - (time.monotonic() - t0)
                if not br.allow():
                    wait = max(wait, br.seconds_until_retry())
                stop.wait(max(0.0, wait))

        threads = [threading.Thread(target=loop, args=(s,), daemon=True, name=f"src-{s.name}") for s in self.sources]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive() and not stop.is_set():
                t.join(1.0)
        for t in threads:
            t.join(5.0)
        for s in self.sources:
            s.close()


def select_sources(factories: Iterable[type[Source]], env: Mapping[str, str], providers: Iterable[str] | None,
                   say: Callable[[str], None] = print, **kw: object) -> list[Source]:
    """Instantiate the sources of the chosen providers whose credentials are present; for each one without
    credentials, print exactly one line saying what is missing."""
    wanted = {p.lower() for p in providers} if providers else None
    out: list[Source] = []
    for cls in factories:
        if wanted is not None and cls.provider not in wanted:
            continue
        missing = cls.missing_credentials(env)
        if missing:
            say(f"skipping {cls.name}: {missing}")
            continue
        factory: Any = cls
        out.append(factory(env=env, **kw))
    return out


CIRCUIT_STATES = ("closed", "open", "half-open")


class RunnerCollector:
    """The runner's per-source counters for Prometheus, read at scrape time (served by `cloudarb connectors
    run` when CLOUDARB_METRICS_PORT is set, see cloudarb.metrics). Families, labelled {source, provider}:
    cloudarb_connector_source_polls_total, _events_total, _published_total, _rejects_total, _retries_total,
    _failures_total, cloudarb_connector_circuit_opened_total and cloudarb_connector_circuit_state{state}
    (1 for the breaker's current state: closed, open or half-open)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def describe(self) -> Any:
        return iter(())

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["source", "provider"]

        def counter(name: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(f"cloudarb_connector_{name}", doc, labels=labels)

        polls = counter("source_polls", "polls of the source")
        events = counter("source_events", "events the source emitted")
        published = counter("source_published", "events handed to Kafka")
        rejects = counter("source_rejects", "vendor records rejected at the edge")
        retries = counter("source_retries", "retried requests (429, 5xx, transport)")
        failures = counter("source_failures", "polls that failed after retries")
        opened = counter("circuit_opened", "times the source's circuit breaker opened")
        state = GaugeMetricFamily("cloudarb_connector_circuit_state", "1 for the breaker's current state",
                                  labels=[*labels, "state"])
        for name, rep in sorted(self.runner.reports.items()):
            lv = [name, rep.provider]
            st = rep.stats
            polls.add_metric(lv, float(st.polls))
            events.add_metric(lv, float(_total(st.emitted)))
            published.add_metric(lv, float(rep.published))
            rejects.add_metric(lv, float(_total(st.rejected)))
            retries.add_metric(lv, float(st.retries))
            failures.add_metric(lv, float(st.failures))
            br = self.runner.breakers.get(name)
            if br is not None:
                opened.add_metric(lv, float(br.opened_count))
                now = br.state
                for s in CIRCUIT_STATES:
                    state.add_metric([*lv, s], 1.0 if s == now else 0.0)
        yield from (polls, events, published, rejects, retries, failures, opened, state)


def _total(counts: Mapping[str, int]) -> int:
    """sum(counts.values()), while the source's thread may add a key (then: try again)."""
    for _ in range(5):
        try:
            return sum(list(counts.values()))
        except RuntimeError:
            continue
    return 0

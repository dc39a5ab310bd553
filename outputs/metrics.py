"""Metrics of the output services (sink, alerts, executors), read at scrape time.

`OutputsCollector(stats, lag)` exposes what `outputs.server.pipeline_stats` already computes (the same
counters the API's /metrics shows as cloudarb_pipeline{stat}) as typed families, plus the consumer lag of the
services' groups (`GroupLag`, refreshed by a background thread, never per message):

- sink: cloudarb_sink_consumed_total, _written_total, _duplicates_total, _dead_lettered_total,
  _write_failures_total, cloudarb_sink_stalled (0/1);
- alerts: cloudarb_webhooks_delivered_total, _retries_total, _dead_total, cloudarb_webhooks_pending;
- executors: cloudarb_executor_decisions (handled), cloudarb_executor_instances, cloudarb_executor_usd_per_hour;
- cloudarb_consumer_lag{group,topic,partition}; a stat not listed here: cloudarb_pipeline{stat}.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from schemas.kafka import client_config
from schemas.metrics import consumer_lag_family

log = logging.getLogger(__name__)

# pipeline_stats key -> (family name, "counter" | "gauge", help)
FAMILIES: dict[str, tuple[str, str, str]] = {
    "sink_consumed": ("cloudarb_sink_consumed", "counter", "records consumed by the sink"),
    "sink_written": ("cloudarb_sink_written", "counter", "rows written to ClickHouse"),
    "sink_duplicates": ("cloudarb_sink_duplicates", "counter", "records already present (skipped)"),
    "sink_dead_lettered": ("cloudarb_sink_dead_lettered", "counter", "records ClickHouse refused, sent to the DLQ"),
    "sink_write_failures": ("cloudarb_sink_write_failures", "counter", "failed inserts (retried)"),
    "sink_stalled": ("cloudarb_sink_stalled", "gauge", "1 while a batch has waited without progress"),
    "webhooks_delivered": ("cloudarb_webhooks_delivered", "counter", "webhook deliveries that succeeded"),
    "webhooks_retries": ("cloudarb_webhooks_retries", "counter", "webhook delivery retries"),
    "webhooks_dead": ("cloudarb_webhooks_dead", "counter", "webhooks given up on (dead-lettered)"),
    "webhooks_pending": ("cloudarb_webhooks_pending", "gauge", "webhooks waiting for delivery"),
    "executor_decisions": ("cloudarb_executor_decisions", "gauge", "decisions the executors handled"),
    "executor_instances": ("cloudarb_executor_instances", "gauge", "instances the executors keep running"),
    "executor_usd_per_hour": ("cloudarb_executor_usd_per_hour", "gauge", "their cost, USD per hour"),
}


class GroupLag:
    """Committed offset vs high watermark of consumer groups, refreshed every `interval_s` in a daemon thread
    (a metadata, an offset-fetch and one watermark request per partition per round; the groups' own
    consumers are not touched). `lag`: {(group, topic, partition): messages}, replaced whole each round."""

    def __init__(self, bootstrap: str, groups: Mapping[str, Sequence[str]], interval_s: float = 15.0) -> None:
        self.bootstrap, self.groups, self.interval_s = bootstrap, {g: list(t) for g, t in groups.items()}, interval_s
        self.lag: dict[tuple[str, str, int], int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumers: dict[str, Any] = {}

    def start(self) -> GroupLag:
        self._thread = threading.Thread(target=self._run, name="metrics-lag", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self.refresh()
                except Exception as exc:   # metrics only: the broker may be down; keep the last values
                    log.debug("consumer lag refresh failed: %s", exc)
                self._stop.wait(self.interval_s)
        finally:
            for c in self._consumers.values():
                c.close()

    def refresh(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        lag: dict[tuple[str, str, int], int] = {}
        for group, topics in self.groups.items():
            c = self._consumers.get(group)
            if c is None:
                c = self._consumers[group] = Consumer({**client_config(self.bootstrap), "group.id": group,
                                                       "enable.auto.commit": False, "log_level": 3})
            meta = c.list_topics(timeout=10).topics
            tps = [TopicPartition(t, p) for t in topics if t in meta for p in sorted(meta[t].partitions)]
            if not tps:
                continue
            for tp in c.committed(tps, timeout=10):
                low, high = c.get_watermark_offsets(tp, timeout=10)
                if high < 0:
                    continue
                lag[(group, tp.topic, tp.partition)] = max(0, high - (tp.offset if tp.offset >= 0 else low))
        self.lag = lag


class OutputsCollector:
    """`stats`: outputs.server.pipeline_stats(handle) (a callable returning {stat: value}); `lag`: a GroupLag."""

    def __init__(self, stats: Callable[[], Mapping[str, float]], lag: GroupLag | None = None) -> None:
        self.stats, self.lagger = stats, lag

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        try:
            values = dict(self.stats())
        except Exception as exc:
            log.warning("pipeline stats failed: %s", type(exc).__name__)
            values = {}
        other = GaugeMetricFamily("cloudarb_pipeline", "other counters of the output services", labels=["stat"])
        for key, v in sorted(values.items()):
            fam = FAMILIES.get(key)
            if fam is None:
                other.add_metric([key], float(v))
                continue
            name, kind, doc = fam
            yield (CounterMetricFamily(name, doc, value=float(v)) if kind == "counter"
                   else GaugeMetricFamily(name, doc, value=float(v)))
        if other.samples:
            yield other
        yield consumer_lag_family(self.lagger.lag if self.lagger is not None else {})


def service_groups(group_prefix: str, sink: bool = False, alerts: bool = False,
                   executors: bool = False) -> dict[str, list[str]]:
    """The consumer groups (and their topics) of the output services started with `group_prefix`, as
    outputs.server names them (start_outputs; the `alerts run` / `executors run` commands), for `GroupLag`."""
    from outputs.sink import SINK_TOPICS
    from schemas.topics import ALERTS, CAPACITY, DECISIONS, FORECASTS, INTERRUPTIONS, PRICES, WORKLOADS

    out: dict[str, list[str]] = {}
    if sink:
        out[f"{group_prefix}-sink"] = list(SINK_TOPICS)
    if alerts:
        out[f"{group_prefix}-alerts-rules"] = [WORKLOADS.name, DECISIONS.name, PRICES.name, CAPACITY.name,
                                               INTERRUPTIONS.name, FORECASTS.name]
        out[f"{group_prefix}-alerts-webhooks"] = [ALERTS.name]
    if executors:
        out[f"{group_prefix}-executors"] = [DECISIONS.name]
    return out

"""Each process's collector reads its counters at scrape time (cloudarb.metrics, streams.runtime.metrics,
outputs.metrics, connectors.runner.RunnerCollector); the shared server starts only when asked."""

from __future__ import annotations

import urllib.request
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from cloudarb.metrics import metrics_address, register, start_metrics_server, unregister
from connectors.base import SourceStats
from connectors.runner import CircuitBreaker, RunnerCollector, SourceReport
from outputs.metrics import GroupLag, OutputsCollector, service_groups
from outputs.server import ServiceHandle, pipeline_stats
from outputs.sink import SinkStats
from streams.runtime.app import Counters
from streams.runtime.metrics import SolveTimes, WorkerCollector


def samples(collector: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in collector.collect() for s in f.samples}


def value(collector: Any, name: str, **labels: str) -> float:
    return samples(collector)[(name, tuple(sorted(labels.items())))]


def test_worker_collector_reads_the_counters_at_scrape_time() -> None:
    c = Counters(market_in=10, market_valid=8, dead_lettered=2, dlq_skipped=1, material=5, forecasts=7,
                 decisions=3, solves=4, step_failures=1, fenced=2)
    c.solve_seconds.observe(0.02)
    c.solve_seconds.observe(3.0)
    stage = SimpleNamespace(batches=6, failures=1, cfg=SimpleNamespace(app_id="app"),
                            lag={("cloudarb.prices.v1", 0): 12, ("cloudarb.prices.v1", 1): 0})
    forecaster = SimpleNamespace(summary=lambda: {"300s": {"n": 40, "mae_model": 0.01, "mae_naive": 0.02},
                                                  "3600s": {"n": 0}, "skipped": {"nan": 3}})
    col = WorkerCollector(c, stage, forecaster)
    assert value(col, "cloudarb_worker_events_in_total") == 10
    assert value(col, "cloudarb_worker_events_valid_total") == 8
    assert value(col, "cloudarb_worker_dead_lettered_total") == 2
    assert value(col, "cloudarb_worker_dlq_skipped_total") == 1
    assert value(col, "cloudarb_worker_material_changes_total") == 5
    assert value(col, "cloudarb_worker_forecasts_total") == 7
    assert value(col, "cloudarb_worker_decisions_total") == 3
    assert value(col, "cloudarb_worker_solves_total") == 4
    assert value(col, "cloudarb_worker_step_failures_total") == 1
    assert value(col, "cloudarb_worker_steps_fenced_total") == 2
    assert value(col, "cloudarb_worker_market_batches_total") == 6
    assert value(col, "cloudarb_worker_solve_seconds_count") == 2
    assert value(col, "cloudarb_worker_solve_seconds_bucket", le="0.025") == 1
    assert value(col, "cloudarb_worker_solve_seconds_bucket", le="+Inf") == 2
    assert value(col, "cloudarb_worker_solve_seconds_sum") == pytest.approx(3.02)
    assert value(col, "cloudarb_consumer_lag", group="app-market", topic="cloudarb.prices.v1", partition="0") == 12
    assert value(col, "cloudarb_forecast_mae", horizon_s="300", model="model") == 0.01
    assert value(col, "cloudarb_forecast_mae", horizon_s="300", model="naive") == 0.02
    assert value(col, "cloudarb_forecast_scored", horizon_s="3600") == 0
    c.market_in += 5   # no prometheus object is touched per event: the next scrape reads the int
    assert value(col, "cloudarb_worker_events_in_total") == 15


def test_worker_collector_without_a_stage_or_forecaster_yields_the_families() -> None:
    names = {f.name for f in WorkerCollector(Counters()).collect()}
    assert {"cloudarb_worker_events_in", "cloudarb_worker_solve_seconds", "cloudarb_consumer_lag",
            "cloudarb_forecast_mae"} <= names


def test_worker_collector_survives_a_failing_forecaster() -> None:
    def boom() -> dict[str, Any]:
        raise RuntimeError("dictionary changed size during iteration")

    fams = {f.name: f for f in WorkerCollector(Counters(), None, SimpleNamespace(summary=boom)).collect()}
    assert fams["cloudarb_forecast_mae"].samples == []


def test_solve_times_buckets() -> None:
    t = SolveTimes(buckets=(0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 2.0):
        t.observe(v)
    assert t.cumulative() == [("0.1", 2.0), ("1.0", 3.0), ("+Inf", 4.0)]


def test_sink_collector_reuses_pipeline_stats() -> None:
    writer = SimpleNamespace(stats=SinkStats(consumed=9, written=7, duplicates=1, write_failures=2, dead_lettered=1))
    lag = GroupLag("127.0.0.1:1", {})
    lag.lag = {("cloudarb-sink", "cloudarb.decisions.v1", 0): 4}
    col = OutputsCollector(pipeline_stats(ServiceHandle(objects={"sink_writer": writer})), lag)
    assert value(col, "cloudarb_sink_consumed_total") == 9
    assert value(col, "cloudarb_sink_written_total") == 7
    assert value(col, "cloudarb_sink_duplicates_total") == 1
    assert value(col, "cloudarb_sink_write_failures_total") == 2
    assert value(col, "cloudarb_sink_dead_lettered_total") == 1
    assert value(col, "cloudarb_sink_stalled") == 0
    assert value(col, "cloudarb_consumer_lag", group="cloudarb-sink", topic="cloudarb.decisions.v1",
                 partition="0") == 4
    writer.stats.waiting_since, writer.stats.progress_t = 0.0, 0.0   # a batch waiting forever
    assert value(col, "cloudarb_sink_stalled") == 1


def test_alerts_and_executors_collector() -> None:
    dispatcher = SimpleNamespace(stats=SimpleNamespace(delivered=5, retries=2, dead=1), pending=lambda: 3)
    runner = SimpleNamespace(handled={"d1", "d2"}, running=lambda: (4, 12.5))
    col = OutputsCollector(pipeline_stats(ServiceHandle(objects={"dispatcher": dispatcher,
                                                                 "executor_runner": runner})))
    assert value(col, "cloudarb_webhooks_delivered_total") == 5
    assert value(col, "cloudarb_webhooks_retries_total") == 2
    assert value(col, "cloudarb_webhooks_dead_total") == 1
    assert value(col, "cloudarb_webhooks_pending") == 3
    assert value(col, "cloudarb_executor_decisions") == 2
    assert value(col, "cloudarb_executor_instances") == 4
    assert value(col, "cloudarb_executor_usd_per_hour") == 12.5
    odd = OutputsCollector(lambda: {"new_stat": 1.0})
    assert value(odd, "cloudarb_pipeline", stat="new_stat") == 1


def test_service_groups_match_the_services() -> None:
    g = service_groups("cloudarb", sink=True, alerts=True, executors=True)
    assert set(g) == {"cloudarb-sink", "cloudarb-alerts-rules", "cloudarb-alerts-webhooks", "cloudarb-executors"}


class _Runner:
    def __init__(self) -> None:
        st = SourceStats(polls=3, retries=1, failures=2)
        st.emitted.update({"PriceObserved": 5})
        st.rejected.update({"bad_price": 2})
        self.reports = {"aws-spot": SourceReport("aws-spot", "aws", published=5, stats=st)}
        br = CircuitBreaker(failure_threshold=1, clock=lambda: 0.0)
        br.failure()
        self.breakers = {"aws-spot": br}


def test_connectors_collector_per_source() -> None:
    col = RunnerCollector(_Runner())  # type: ignore[arg-type]
    lv = {"source": "aws-spot", "provider": "aws"}
    assert value(col, "cloudarb_connector_source_polls_total", **lv) == 3
    assert value(col, "cloudarb_connector_source_events_total", **lv) == 5
    assert value(col, "cloudarb_connector_source_published_total", **lv) == 5
    assert value(col, "cloudarb_connector_source_rejects_total", **lv) == 2
    assert value(col, "cloudarb_connector_source_retries_total", **lv) == 1
    assert value(col, "cloudarb_connector_source_failures_total", **lv) == 2
    assert value(col, "cloudarb_connector_circuit_opened_total", **lv) == 1
    assert value(col, "cloudarb_connector_circuit_state", state="open", **lv) == 1
    assert value(col, "cloudarb_connector_circuit_state", state="closed", **lv) == 0


def test_metrics_address_defaults() -> None:
    assert metrics_address({}) is None
    assert metrics_address({"CLOUDARB_METRICS_PORT": ""}) is None
    assert metrics_address({"CLOUDARB_METRICS_PORT": "9108"}) == ("127.0.0.1", 9108)
    assert metrics_address({"CLOUDARB_METRICS_PORT": "9108", "CLOUDARB_METRICS_ADDR": "0.0.0.0"}) == ("0.0.0.0", 9108)
    with pytest.raises(SystemExit):
        metrics_address({"CLOUDARB_METRICS_PORT": "http"})


def test_server_serves_the_registry_and_stops() -> None:
    reg = CollectorRegistry()
    register("t", WorkerCollector(Counters(market_in=42)), reg)
    register("t", WorkerCollector(Counters(market_in=43)), reg)   # once per process: replaced, not doubled
    assert start_metrics_server({}, reg) is None
    ms = start_metrics_server({"CLOUDARB_METRICS_PORT": "0"}, reg)
    assert ms is not None
    try:
        body = urllib.request.urlopen(ms.url, timeout=5).read().decode()
        assert "cloudarb_worker_events_in_total 43.0" in body
    finally:
        ms.stop()
    unregister("t", reg)
    assert b"cloudarb_worker" not in generate_latest(reg)

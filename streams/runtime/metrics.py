"""The worker's metrics, read at scrape time from the plain counters the stages keep (nothing is incremented
on a prometheus object per event): `WorkerCollector(counters, stage, forecaster)`.

Served by `cloudarb worker` when CLOUDARB_METRICS_PORT is set (cloudarb.metrics). Families:

- cloudarb_worker_events_in_total, _events_valid_total, _dead_lettered_total, _dlq_skipped_total,
  _material_changes_total, _forecasts_total, _decisions_total, _solves_total, _step_failures_total,
  _steps_fenced_total
  (streams.runtime.app.Counters), _market_batches_total, _market_batch_failures_total (the market stage);
- cloudarb_worker_solve_seconds: histogram of the decision steps' solve time (`SolveTimes`);
- cloudarb_consumer_lag{group,topic,partition}: messages behind the high watermark, per partition of the
  market stage (refreshed by the stage every few seconds from librdkafka's cached watermarks);
- cloudarb_forecast_mae{horizon_s,model="model"|"naive"} and cloudarb_forecast_scored{horizon_s}: the
  forecaster's running MAE of the published forecasts against naive's, per horizon (Forecaster.summary).
  Its skipped samples are the prometheus counter cloudarb_forecast_samples_skipped_total (streams.core.forecast).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from schemas.metrics import consumer_lag_family

log = logging.getLogger(__name__)

SOLVE_BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

COUNTER_FIELDS: dict[str, tuple[str, str]] = {   # Counters field -> (family name, help)
    "market_in": ("cloudarb_worker_events_in", "market events consumed by the market stage"),
    "market_valid": ("cloudarb_worker_events_valid", "market events that passed validation"),
    "dead_lettered": ("cloudarb_worker_dead_lettered", "records sent to the DLQ (market and decision stages)"),
    "dlq_skipped": ("cloudarb_worker_dlq_skipped", "dead letters the DLQ refused (logged, skipped)"),
    "material": ("cloudarb_worker_material_changes", "material market changes sent to the decision stage"),
    "forecasts": ("cloudarb_worker_forecasts", "forecasts published"),
    "decisions": ("cloudarb_worker_decisions", "allocation decisions published"),
    "solves": ("cloudarb_worker_solves", "workloads solved by the decision stage"),
    "step_failures": ("cloudarb_worker_step_failures", "decision steps that failed (retried or isolated)"),
    "fenced": ("cloudarb_worker_steps_fenced", "decision steps refused: another worker took the stage over"),
}


@dataclass
class SolveTimes:
    """A histogram kept as plain ints (observed once per decision step, not per event)."""

    buckets: tuple[float, ...] = SOLVE_BUCKETS_S
    counts: list[int] = field(default_factory=list)   # per bucket, non-cumulative; last one: +Inf
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.total += seconds
        self.n += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out, acc = [], 0
        for b, c in zip((*self.buckets, float("inf")), list(self.counts), strict=True):
            acc += c
            out.append(("+Inf" if b == float("inf") else repr(float(b)), float(acc)))
        return out


class WorkerCollector:
    """`counters`: streams.runtime.app.Counters; `stage`: the streams.runtime.market.MarketStage (or None);
    `forecaster`: its streams.core.forecast.Forecaster (or None)."""

    def __init__(self, counters: Any, stage: Any = None, forecaster: Any = None) -> None:
        self.counters, self.stage, self.forecaster = counters, stage, forecaster

    def describe(self) -> Iterator[Metric]:   # names without touching the counters (registration)
        return iter(())

    def collect(self) -> Iterator[Metric]:
        c = self.counters
        for attr, (name, doc) in COUNTER_FIELDS.items():
            yield CounterMetricFamily(name, doc, value=float(getattr(c, attr, 0)))
        st = self.stage
        yield CounterMetricFamily("cloudarb_worker_market_batches", "market batches processed",
                                  value=float(getattr(st, "batches", 0)))
        yield CounterMetricFamily("cloudarb_worker_market_batch_failures", "market batches failed and retried",
                                  value=float(getattr(st, "failures", 0)))
        times: SolveTimes | None = getattr(c, "solve_seconds", None)
        if times is not None:
            yield HistogramMetricFamily("cloudarb_worker_solve_seconds", "solve time of a decision step",
                                        buckets=times.cumulative(), sum_value=times.total)
        group = getattr(getattr(st, "cfg", None), "app_id", None)
        lags = dict(getattr(st, "lag", None) or {})
        yield consumer_lag_family({(f"{group}-market", t, p): v for (t, p), v in lags.items()})
        yield from self._forecast()

    def _forecast(self) -> Iterator[Metric]:
        mae = GaugeMetricFamily("cloudarb_forecast_mae", "running MAE of the published price forecasts (model) "
                                "and of the naive last value, per horizon", labels=["horizon_s", "model"])
        scored = GaugeMetricFamily("cloudarb_forecast_scored", "forecasts scored against the realised price, "
                                   "per horizon", labels=["horizon_s"])
        summary: dict[str, Any] = {}
        if self.forecaster is not None:
            for _ in range(3):   # the market stage's thread may add a group meanwhile: try again
                try:
                    summary = self.forecaster.summary()
                    break
                except RuntimeError:
                    continue
                except Exception as exc:   # a scrape never fails on it
                    log.warning("forecast summary failed: %s", type(exc).__name__)
                    break
        for h, row in summary.items():
            if not isinstance(row, dict) or not h.endswith("s") or not h[:-1].isdigit():
                continue
            scored.add_metric([h[:-1]], float(row.get("n", 0)))
            for model in ("model", "naive"):
                v = row.get(f"mae_{model}")
                if v is not None:
                    mae.add_metric([h[:-1], model], float(v))
        yield mae
        yield scored

# ruff: noqa: E501  (SQL panels read better unwrapped)
"""Generates infra/grafana/dashboards/*.json (Grafana 10+/11 schema): ClickHouse plugin queries, and the
Prometheus dashboard of the processes' own metrics (datasource uid cloudarb-prometheus).

Run: python infra/grafana/build_dashboards.py
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "grafana-clickhouse-datasource", "uid": "cloudarb-clickhouse"}
DB = "${database}"
GPU_COND = "$__conditionalAll(gpu_model IN (${gpu_model:singlequote}), $gpu_model)"

LATEST_OFFERS = f"""SELECT offer_key, any(provider) AS provider, any(region) AS region, any(gpu_model) AS gpu,
       any(market) AS market, argMax(usd_per_gpu_hour, quoted_at) AS usd_per_gpu_h, max(quoted_at) AS last_quote
FROM {DB}.prices
WHERE {GPU_COND}
GROUP BY offer_key"""

PANELS: dict[str, tuple[str, str, list[tuple[str, str, str]]]] = {
    "market-overview": ("CloudArb · Market overview", "Prices per GPU-hour, capacity and interruptions", [
        ("timeseries", "Cheapest $/GPU-h by GPU model", f"""SELECT $__timeInterval(hour) AS time, gpu_model, min(low) AS usd_per_gpu_hour
FROM {DB}.price_bars_hourly
WHERE $__timeFilter(hour) AND {GPU_COND}
GROUP BY time, gpu_model ORDER BY time"""),
        ("timeseries", "Median close $/GPU-h: spot vs on-demand", f"""SELECT time, market, median(close) AS usd_per_gpu_hour
FROM (SELECT $__timeInterval(hour) AS time, market, offer_key, argMaxMerge(close) AS close
      FROM {DB}.price_bars_hourly WHERE $__timeFilter(hour) AND {GPU_COND}
      GROUP BY time, market, offer_key)
GROUP BY time, market ORDER BY time"""),
        ("table", "Best current offers (by $/GPU-h)", f"""SELECT gpu, provider, region, market, round(usd_per_gpu_h, 4) AS usd_per_gpu_hour, last_quote
FROM ({LATEST_OFFERS})
ORDER BY usd_per_gpu_hour LIMIT 25"""),
        ("stat", "Offers with capacity now", f"""SELECT countIf(avail) AS offers_available, count() AS offers_tracked
FROM (SELECT offer_key, argMax(available, quoted_at) AS avail FROM {DB}.capacity
      WHERE {GPU_COND} GROUP BY offer_key)"""),
        ("barchart", "Interruption signals by provider and kind", f"""SELECT concat(provider, ' ', kind) AS what, count() AS events,
       round(avg(ifNull(interruption_probability_per_hour, 0)), 4) AS avg_p_per_hour
FROM {DB}.interruptions
WHERE $__timeFilter(occurred_at) AND {GPU_COND}
GROUP BY what ORDER BY events DESC"""),
    ]),
    "savings": ("CloudArb · Savings", "What the plan costs versus on-demand for the same GPUs", [
        ("timeseries", "Savings per decision ($/h)", f"""SELECT decided_at AS time, sum(savings_usd_per_hour) AS savings_usd_per_hour,
       sum(usd_per_hour) AS plan_usd_per_hour, sum(ondemand_usd_per_hour) AS ondemand_usd_per_hour
FROM {DB}.savings FINAL
WHERE $__timeFilter(decided_at)
GROUP BY time ORDER BY time"""),
        ("stat", "Current savings ($/h)", f"""SELECT round(sum(savings_usd_per_hour), 2) AS savings_usd_per_hour, round(sum(usd_per_hour), 2) AS plan_usd_per_hour
FROM {DB}.savings FINAL
WHERE (workload_id, decision_id) IN (
    SELECT wid, argMax(event_id, decided_at) FROM {DB}.decisions ARRAY JOIN workload_ids AS wid GROUP BY wid)"""),
        ("table", "Savings by workload (latest decision)", f"""SELECT workload_id, gpu_model, market, sum(gpus) AS gpus, round(sum(usd_per_hour), 2) AS plan_usd_per_hour,
       round(sum(ondemand_usd_per_hour), 2) AS ondemand_usd_per_hour, round(sum(savings_usd_per_hour), 2) AS savings_usd_per_hour
FROM {DB}.savings FINAL
WHERE (workload_id, decision_id) IN (
    SELECT wid, argMax(event_id, decided_at) FROM {DB}.decisions ARRAY JOIN workload_ids AS wid GROUP BY wid)
GROUP BY workload_id, gpu_model, market ORDER BY savings_usd_per_hour DESC"""),
        ("barchart", "Spend by market ($/h, all decisions)", f"""SELECT market, round(sum(usd_per_hour), 2) AS usd_per_hour
FROM {DB}.decision_assignments FINAL
WHERE $__timeFilter(decided_at)
GROUP BY market ORDER BY market"""),
    ]),
    "decisions": ("CloudArb · Decisions", "How often the plan changes, why, and how fast", [
        ("timeseries", "Decisions per interval", f"""SELECT $__timeInterval(hour) AS time, solver, uniqExactMerge(n) AS decisions
FROM {DB}.decision_counts_hourly
WHERE $__timeFilter(hour)
GROUP BY time, solver ORDER BY time"""),
        ("piechart", "Decision reasons", f"""SELECT reason_kind, uniqExactMerge(n) AS decisions
FROM {DB}.decision_counts_hourly
WHERE $__timeFilter(hour)
GROUP BY reason_kind ORDER BY decisions DESC"""),
        ("timeseries", "Decision latency p50 / p99 (ms)", f"""SELECT $__timeInterval(hour) AS time, quantilesMerge(0.5, 0.99)(latency_ms)[1] AS p50_ms,
       quantilesMerge(0.5, 0.99)(latency_ms)[2] AS p99_ms
FROM {DB}.decision_counts_hourly
WHERE $__timeFilter(hour)
GROUP BY time ORDER BY time"""),
        ("table", "Recent decisions and their reasons", f"""SELECT decided_at, arrayStringConcat(workload_ids, ', ') AS workloads, reason, solver,
       round(total_usd_per_hour, 2) AS usd_per_hour, n_changes, round(ifNull(latency_ms, 0), 1) AS latency_ms
FROM {DB}.decisions FINAL
WHERE $__timeFilter(decided_at)
ORDER BY decided_at DESC LIMIT 50"""),
        ("table", "Executor actions", f"""SELECT at, executor, action, workload_id, offer_key, instances, status, detail
FROM {DB}.executor_actions FINAL
ORDER BY at DESC LIMIT 50"""),
    ]),
    "forecast-accuracy": ("CloudArb · Forecast accuracy", "Forecast error: model versus naive, and realised", [
        ("timeseries", "MAE: model vs naive ($/h)", f"""SELECT $__timeInterval(hour) AS time, avgMerge(mae_model) AS mae_model, avgMerge(mae_naive) AS mae_naive
FROM {DB}.forecast_error_hourly
WHERE $__timeFilter(hour) AND {GPU_COND}
GROUP BY time ORDER BY time"""),
        ("stat", "Skill versus naive (1 - MAE ratio)", f"""SELECT round(1 - avgMerge(mae_model) / nullIf(avgMerge(mae_naive), 0), 3) AS skill, uniqExactMerge(n) AS forecasts
FROM {DB}.forecast_error_hourly
WHERE $__timeFilter(hour) AND {GPU_COND}"""),
        ("table", "Realised absolute error by GPU and model", f"""SELECT gpu_model, model, count() AS forecasts, round(avg(abs_error), 4) AS mae_usd_per_hour,
       round(quantile(0.9)(abs_error), 4) AS p90_usd_per_hour
FROM {DB}.forecast_realised
WHERE $__timeFilter(forecast_at) AND {GPU_COND}
GROUP BY gpu_model, model ORDER BY forecasts DESC"""),
        ("table", "Published model per group (online A/B champion)", f"""SELECT group_key AS group, target, argMax(champion, promoted_at) AS champion,
       argMax(metric, promoted_at) AS metric, round(argMax(score_champion, promoted_at), 5) AS score,
       round(argMax(score_previous, promoted_at), 5) AS previous_score, max(promoted_at) AS since
FROM {DB}.model_promotions FINAL
GROUP BY group_key, target ORDER BY group_key, target"""),
        ("table", "Model promotions", f"""SELECT promoted_at, group_key AS group, target, previous, champion, metric,
       round(score_previous, 5) AS score_previous, round(score_champion, 5) AS score_champion, n_scored
FROM {DB}.model_promotions FINAL
WHERE $__timeFilter(promoted_at)
ORDER BY promoted_at DESC LIMIT 100"""),
    ]),
    "pipeline-health": ("CloudArb · Pipeline health", "Ingest, staleness, dead letters, alerts", [
        ("timeseries", "Rows ingested per interval", f"""SELECT $__timeInterval(ingested_at) AS time, 'prices' AS table_name, count() AS rows FROM {DB}.prices
WHERE $__timeFilter(ingested_at) GROUP BY time
UNION ALL
SELECT $__timeInterval(ingested_at) AS time, 'decisions' AS table_name, count() AS rows FROM {DB}.decisions
WHERE $__timeFilter(ingested_at) GROUP BY time
ORDER BY time"""),
        ("table", "Quote staleness by source (observed - quoted, s)", f"""SELECT source, count() AS quotes,
       round(quantile(0.5)(dateDiff('millisecond', quoted_at, observed_at)) / 1000, 1) AS p50_s,
       round(max(dateDiff('millisecond', quoted_at, observed_at)) / 1000, 1) AS max_s
FROM {DB}.prices
WHERE $__timeFilter(quoted_at)
GROUP BY source ORDER BY quotes DESC"""),
        ("stat", "Dead letters", f"""SELECT count() AS dead_letters FROM {DB}.dead_letters"""),
        ("barchart", "Alerts by rule", f"""SELECT rule, count() AS alerts
FROM {DB}.alerts FINAL
WHERE $__timeFilter(raised_at)
GROUP BY rule ORDER BY alerts DESC"""),
        ("stat", "Decision latency p99 (ms)", f"""SELECT round(quantile(0.99)(ifNull(latency_ms, 0)), 1) AS p99_ms FROM {DB}.decisions
WHERE $__timeFilter(decided_at)"""),
    ]),
}


# Prometheus dashboards: the processes' own metrics (cloudarb.metrics; every `cloudarb_*` name an expr uses is
# one the collectors register: tests/outputs/test_grafana.py checks it). (kind, title, [(PromQL, legend)])
PROM_DS = {"type": "prometheus", "uid": "cloudarb-prometheus"}
RATE = "[$__rate_interval]"
PROM_PANELS: dict[str, tuple[str, str, list[tuple[str, str, list[tuple[str, str]]]]]] = {
    "pipeline-health-prometheus": ("CloudArb · Pipeline health (Prometheus)", "Lag, throughput, dead letters, solve time, sink and connectors, from the processes' /metrics", [
        ("timeseries", "Consumer lag per partition (messages)", [
            ("max by (group, topic, partition) (cloudarb_consumer_lag)", "{{group}} {{topic}}:{{partition}}")]),
        ("timeseries", "Market events/s: in vs dead-lettered", [
            (f"sum(rate(cloudarb_worker_events_in_total{RATE}))", "in"),
            (f"sum(rate(cloudarb_worker_events_valid_total{RATE}))", "valid"),
            (f"sum(rate(cloudarb_worker_dead_lettered_total{RATE}))", "dead-lettered (worker)"),
            (f"sum(rate(cloudarb_sink_dead_lettered_total{RATE}))", "dead-lettered (sink)")]),
        ("timeseries", "Decisions/s", [
            (f"sum(rate(cloudarb_worker_decisions_total{RATE}))", "decisions"),
            (f"sum(rate(cloudarb_worker_step_failures_total{RATE}))", "failed steps"),
            (f"sum(rate(cloudarb_worker_steps_fenced_total{RATE}))", "fenced steps (a zombie worker)")]),
        ("timeseries", "Solve time p99 (s)", [
            (f"histogram_quantile(0.99, sum by (le) (rate(cloudarb_worker_solve_seconds_bucket{RATE})))", "p99"),
            (f"histogram_quantile(0.5, sum by (le) (rate(cloudarb_worker_solve_seconds_bucket{RATE})))", "p50")]),
        ("stat", "Sink stalled", [("max(cloudarb_sink_stalled)", "stalled")]),
        ("timeseries", "Sink rows/s written vs write failures", [
            (f"sum(rate(cloudarb_sink_written_total{RATE}))", "written"),
            (f"sum(rate(cloudarb_sink_write_failures_total{RATE}))", "write failures")]),
        ("timeseries", "Connector failures (per 15 min) and open circuits", [
            ("sum by (source) (increase(cloudarb_connector_source_failures_total[15m]))", "{{source}} failures"),
            ('sum by (source) (cloudarb_connector_circuit_state{state="open"})', "{{source}} open")]),
        ("timeseries", "Forecast MAE: model vs naive", [
            ("avg by (horizon_s, model) (cloudarb_forecast_mae)", "{{horizon_s}} s {{model}}")]),
        ("timeseries", "Forecast samples skipped/s", [
            (f"sum by (reason) (rate(cloudarb_forecast_samples_skipped_total{RATE}))", "{{reason}}")]),
    ]),
}


def prom_dashboard(uid: str, title: str, description: str,
                   panels: list[tuple[str, str, list[tuple[str, str]]]]) -> dict[str, object]:
    out = []
    for i, (kind, ptitle, exprs) in enumerate(panels):
        out.append({"id": i + 1, "type": kind, "title": ptitle, "datasource": PROM_DS,
                    "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
                    "targets": [{"refId": chr(ord("A") + j), "datasource": PROM_DS, "expr": expr,
                                 "legendFormat": legend, "range": True} for j, (expr, legend) in enumerate(exprs)],
                    "options": {}, "fieldConfig": {"defaults": {}, "overrides": []}})
    return {"uid": f"cloudarb-{uid}", "title": title, "description": description, "tags": ["cloudarb", "prometheus"],
            "timezone": "utc", "schemaVersion": 39, "version": 1, "editable": False, "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"}, "templating": {"list": []}, "panels": out}


def variables(with_gpu: bool) -> list[dict[str, object]]:
    v: list[dict[str, object]] = [{"name": "database", "type": "constant", "query": "cloudarb", "hide": 2,
                                   "current": {"text": "cloudarb", "value": "cloudarb"}}]
    if with_gpu:
        v.append({"name": "gpu_model", "label": "GPU", "type": "query", "datasource": DS,
                  "query": f"SELECT DISTINCT gpu_model FROM {DB}.prices ORDER BY gpu_model",
                  "definition": f"SELECT DISTINCT gpu_model FROM {DB}.prices ORDER BY gpu_model",
                  "multi": True, "includeAll": True, "refresh": 1,
                  "current": {"text": ["All"], "value": ["$__all"]}})
    return v


def dashboard(uid: str, title: str, description: str, panels: list[tuple[str, str, str]]) -> dict[str, object]:
    out = []
    for i, (kind, ptitle, sql) in enumerate(panels):
        w = 24 if kind == "table" else 12
        fmt = 1 if kind == "table" else (0 if kind == "timeseries" else 1)
        out.append({"id": i + 1, "type": kind, "title": ptitle, "datasource": DS,
                    "gridPos": {"h": 8, "w": w, "x": 0 if w == 24 else (i % 2) * 12, "y": i * 8},
                    "targets": [{"refId": "A", "datasource": DS, "editorType": "sql", "queryType": "table"
                                 if fmt == 1 else "timeseries", "format": fmt, "rawSql": sql}],
                    "options": {}, "fieldConfig": {"defaults": {}, "overrides": []}})
    return {"uid": f"cloudarb-{uid}", "title": title, "description": description, "tags": ["cloudarb"],
            "timezone": "utc", "schemaVersion": 39, "version": 1, "editable": False, "refresh": "30s",
            "time": {"from": "now-30d", "to": "now"},
            "templating": {"list": variables(any("$gpu_model" in p[2] for p in panels))}, "panels": out}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for uid, (title, desc, panels) in PANELS.items():
        (OUT / f"{uid}.json").write_text(json.dumps(dashboard(uid, title, desc, panels), indent=2) + "\n")
    for uid, (title, desc, prom) in PROM_PANELS.items():
        (OUT / f"{uid}.json").write_text(json.dumps(prom_dashboard(uid, title, desc, prom), indent=2) + "\n")


if __name__ == "__main__":
    main()

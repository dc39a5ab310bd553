-- Analytics: forecasts, alerts, workloads, executor actions, webhook deliveries, API keys and
-- materialised views (hourly price bars, savings versus on-demand, forecast error, decision counts).
-- Same rules as 001: idempotent DDL, ';' alone on a line separates statements, {db} = database.
-- Aggregates count distinct event ids (uniqExact), so a redelivered event never inflates a bar.

CREATE TABLE IF NOT EXISTS {db}.forecasts
(
    event_id                            String,
    offer_key                           String,
    provider                            LowCardinality(String),
    region                              LowCardinality(String),
    gpu_model                           LowCardinality(String),
    market                              LowCardinality(String),
    gpus_per_instance                   UInt16,
    forecast_at                         DateTime64(3, 'UTC'),
    horizon_s                           UInt32,
    target_at                           DateTime64(3, 'UTC'),
    usd_per_hour                        Float64,
    interruption_probability_next_hour  Nullable(Float64),
    model                               LowCardinality(String),
    mae_model                           Nullable(Float64),
    mae_naive                           Nullable(Float64),
    n_scored                            UInt32,
    ingested_at                         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(forecast_at)
ORDER BY (offer_key, forecast_at, event_id)
;
CREATE TABLE IF NOT EXISTS {db}.alerts
(
    event_id     String,
    rule         LowCardinality(String),
    severity     LowCardinality(String),
    message      String,
    raised_at    DateTime64(3, 'UTC'),
    offer_key    String,
    workload_id  String,
    value        Nullable(Float64),
    threshold    Nullable(Float64),
    ingested_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(raised_at)
ORDER BY (raised_at, event_id)
;
CREATE TABLE IF NOT EXISTS {db}.workloads
(
    event_id             String,
    workload_id          String,
    kind                 LowCardinality(String),
    at                   DateTime64(3, 'UTC'),
    budget_usd_per_hour  Nullable(Float64),
    min_gpus             Nullable(UInt32),
    max_gpus             Nullable(UInt32),
    spec                 String,
    ingested_at          DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (workload_id, at, event_id)
;
CREATE TABLE IF NOT EXISTS {db}.executor_actions
(
    action_id      String,
    decision_id    String,
    executor       LowCardinality(String),
    action         LowCardinality(String),
    workload_id    String,
    offer_key      String,
    instances      UInt32,
    usd_per_hour   Float64,
    status         LowCardinality(String),
    detail         String,
    resource_ids   Array(String),
    at             DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(at)
ORDER BY (decision_id, action_id)
;
CREATE TABLE IF NOT EXISTS {db}.webhook_deliveries
(
    delivery_id      String,
    alert_id         String,
    subscription_id  String,
    url_host         String,
    attempt          UInt16,
    status           LowCardinality(String),
    http_status      Nullable(UInt16),
    error            String,
    at               DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (alert_id, subscription_id, attempt, delivery_id)
;
CREATE TABLE IF NOT EXISTS {db}.webhook_subscriptions
(
    subscription_id  String,
    url              String,
    secret           String,
    rules            Array(String),
    active           Bool,
    created_at       DateTime64(3, 'UTC'),
    version          UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY subscription_id
;
CREATE TABLE IF NOT EXISTS {db}.api_keys
(
    key_id      String,
    key_sha256  String,
    role        LowCardinality(String),
    name        String,
    active      Bool,
    created_at  DateTime64(3, 'UTC'),
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY key_id
;
-- hourly OHLC price bars per offer ($ per GPU-hour)
CREATE TABLE IF NOT EXISTS {db}.price_bars_hourly
(
    offer_key   String,
    provider    LowCardinality(String),
    region      LowCardinality(String),
    gpu_model   LowCardinality(String),
    market      LowCardinality(String),
    hour        DateTime('UTC'),
    open        AggregateFunction(argMin, Float64, DateTime64(3, 'UTC')),
    high        SimpleAggregateFunction(max, Float64),
    low         SimpleAggregateFunction(min, Float64),
    close       AggregateFunction(argMax, Float64, DateTime64(3, 'UTC')),
    n           AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (gpu_model, offer_key, provider, region, market, hour)
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.price_bars_hourly_mv TO {db}.price_bars_hourly AS
SELECT offer_key, provider, region, gpu_model, market, toStartOfHour(quoted_at) AS hour,
       argMinState(_p.usd_per_gpu_hour, _p.quoted_at) AS open, max(_p.usd_per_gpu_hour) AS high,
       min(_p.usd_per_gpu_hour) AS low, argMaxState(_p.usd_per_gpu_hour, _p.quoted_at) AS close,
       uniqExactState(event_id) AS n
FROM {db}.prices AS _p
GROUP BY offer_key, provider, region, gpu_model, market, hour
;
-- latest on-demand $ per GPU-hour per GPU model (the reference that savings are measured against)
CREATE TABLE IF NOT EXISTS {db}.ondemand_reference
(
    gpu_model          LowCardinality(String),
    offer_key          String,
    usd_per_gpu_hour   AggregateFunction(argMax, Float64, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (gpu_model, offer_key)
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.ondemand_reference_mv TO {db}.ondemand_reference AS
SELECT gpu_model, offer_key, argMaxState(_p.usd_per_gpu_hour, _p.quoted_at) AS usd_per_gpu_hour
FROM {db}.prices AS _p
WHERE market = 'on_demand'
GROUP BY gpu_model, offer_key
;
-- savings of each decided assignment versus the median current on-demand price of the same GPU
CREATE TABLE IF NOT EXISTS {db}.savings
(
    decision_id               String,
    decided_at                DateTime64(3, 'UTC'),
    workload_id               String,
    offer_key                 String,
    gpu_model                 LowCardinality(String),
    market                    LowCardinality(String),
    gpus                      UInt32,
    usd_per_hour              Float64,
    ondemand_usd_per_hour     Float64,
    savings_usd_per_hour      Float64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(decided_at)
ORDER BY (workload_id, decided_at, decision_id, offer_key)
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.savings_mv TO {db}.savings AS
SELECT _a.decision_id AS decision_id, _a.decided_at AS decided_at, _a.workload_id AS workload_id,
       _a.offer_key AS offer_key, _a.gpu_model AS gpu_model, _a.market AS market,
       toUInt32(_a.instances * toUInt32OrZero(splitByChar('|', _a.offer_key)[6])) AS gpus,
       _a.usd_per_hour AS usd_per_hour,
       if(_r.ref > 0, gpus * _r.ref, _a.usd_per_hour) AS ondemand_usd_per_hour,
       greatest(ondemand_usd_per_hour - _a.usd_per_hour, -1e9) AS savings_usd_per_hour
FROM {db}.decision_assignments AS _a
LEFT JOIN (
    SELECT gpu_model, quantileExact(0.5)(od_price) AS ref
    FROM (SELECT gpu_model, offer_key, argMaxMerge(usd_per_gpu_hour) AS od_price
          FROM {db}.ondemand_reference GROUP BY gpu_model, offer_key)
    GROUP BY gpu_model
) AS _r ON _a.gpu_model = _r.gpu_model
;
-- forecast accuracy reported by the forecaster, per model and GPU, hourly
CREATE TABLE IF NOT EXISTS {db}.forecast_error_hourly
(
    hour        DateTime('UTC'),
    model       LowCardinality(String),
    gpu_model   LowCardinality(String),
    horizon_s   UInt32,
    mae_model   AggregateFunction(avg, Float64),
    mae_naive   AggregateFunction(avg, Float64),
    n           AggregateFunction(uniqExact, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (model, gpu_model, horizon_s, hour)
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.forecast_error_hourly_mv TO {db}.forecast_error_hourly AS
SELECT toStartOfHour(forecast_at) AS hour, model, gpu_model, horizon_s,
       avgState(ifNull(_f.mae_model, nan)) AS mae_model, avgState(ifNull(_f.mae_naive, nan)) AS mae_naive,
       uniqExactState(event_id) AS n
FROM {db}.forecasts AS _f
WHERE _f.mae_model IS NOT NULL
GROUP BY hour, model, gpu_model, horizon_s
;
-- realised error: each forecast against the last observed price at or before its target time
CREATE VIEW IF NOT EXISTS {db}.forecast_realised AS
SELECT _f.event_id AS event_id, _f.offer_key AS offer_key, _f.gpu_model AS gpu_model, _f.model AS model,
       _f.forecast_at AS forecast_at, _f.target_at AS target_at, _f.horizon_s AS horizon_s,
       _f.usd_per_hour AS forecast_usd_per_hour, _p.usd_per_hour AS actual_usd_per_hour,
       abs(_f.usd_per_hour - _p.usd_per_hour) AS abs_error, _p.quoted_at AS actual_quoted_at
FROM {db}.forecasts AS _f
ASOF INNER JOIN (SELECT offer_key, quoted_at, usd_per_hour FROM {db}.prices) AS _p
    ON _f.offer_key = _p.offer_key AND _f.target_at >= _p.quoted_at
;
-- decisions per hour, solver and reason kind (first clause of the reason)
CREATE TABLE IF NOT EXISTS {db}.decision_counts_hourly
(
    hour          DateTime('UTC'),
    solver        LowCardinality(String),
    reason_kind   LowCardinality(String),
    n             AggregateFunction(uniqExact, String),
    latency_ms    AggregateFunction(quantiles(0.5, 0.99), Float64),
    usd_per_hour  AggregateFunction(avg, Float64)
)
ENGINE = AggregatingMergeTree
ORDER BY (solver, reason_kind, hour)
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.decision_counts_hourly_mv TO {db}.decision_counts_hourly AS
SELECT toStartOfHour(decided_at) AS hour, solver,
       substring(trim(BOTH ' ' FROM splitByRegexp('[:;,(]', reason)[1]), 1, 60) AS reason_kind,
       uniqExactState(event_id) AS n, quantilesState(0.5, 0.99)(ifNull(_d.latency_ms, 0)) AS latency_ms,
       avgState(_d.total_usd_per_hour) AS usd_per_hour
FROM {db}.decisions AS _d
GROUP BY hour, solver, reason_kind
;
-- the latest quote, availability and interruption probability per offer: one row per offer after merges,
-- so "current best offers" never scans the price history. Fed by three MVs; backfilled once (below).
CREATE TABLE IF NOT EXISTS {db}.offer_latest
(
    offer_key      String,
    usd_per_hour   AggregateFunction(argMax, Float64, DateTime64(3, 'UTC')),
    quoted_at      SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    available      AggregateFunction(argMax, Bool, DateTime64(3, 'UTC')),
    avail_n        AggregateFunction(argMax, Nullable(UInt32), DateTime64(3, 'UTC')),
    cap_seen       SimpleAggregateFunction(max, UInt8),
    p_int          AggregateFunction(argMax, Float64, DateTime64(3, 'UTC')),
    int_seen       SimpleAggregateFunction(max, UInt8)
)
ENGINE = AggregatingMergeTree
ORDER BY offer_key
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.offer_latest_prices_mv TO {db}.offer_latest AS
SELECT offer_key, argMaxState(_p.usd_per_hour, _p.quoted_at) AS usd_per_hour, max(_p.quoted_at) AS quoted_at
FROM {db}.prices AS _p GROUP BY offer_key
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.offer_latest_capacity_mv TO {db}.offer_latest AS
SELECT offer_key, argMaxState(_c.available, _c.quoted_at) AS available,
       argMaxState(_c.available_instances, _c.quoted_at) AS avail_n, toUInt8(1) AS cap_seen
FROM {db}.capacity AS _c GROUP BY offer_key
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.offer_latest_interruptions_mv TO {db}.offer_latest AS
SELECT offer_key, argMaxState(assumeNotNull(_i.interruption_probability_per_hour), _i.occurred_at) AS p_int,
       toUInt8(1) AS int_seen
FROM {db}.interruptions AS _i WHERE _i.interruption_probability_per_hour IS NOT NULL GROUP BY offer_key
;
-- backfill for a database created before offer_latest existed (a no-op once it holds anything)
INSERT INTO {db}.offer_latest (offer_key, usd_per_hour, quoted_at)
SELECT offer_key, argMaxState(usd_per_hour, quoted_at), max(quoted_at) FROM {db}.prices
WHERE (SELECT count() FROM {db}.offer_latest) = 0 GROUP BY offer_key
;
INSERT INTO {db}.offer_latest (offer_key, available, avail_n, cap_seen)
SELECT offer_key, argMaxState(available, quoted_at), argMaxState(available_instances, quoted_at), toUInt8(1)
FROM {db}.capacity
WHERE (SELECT countIf(cap_seen = 1) FROM {db}.offer_latest) = 0 GROUP BY offer_key
;
INSERT INTO {db}.offer_latest (offer_key, p_int, int_seen)
SELECT offer_key, argMaxState(assumeNotNull(interruption_probability_per_hour), occurred_at), toUInt8(1)
FROM {db}.interruptions
WHERE interruption_probability_per_hour IS NOT NULL AND (SELECT countIf(int_seen = 1) FROM {db}.offer_latest) = 0
GROUP BY offer_key

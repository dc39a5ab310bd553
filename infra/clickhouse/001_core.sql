-- Core event tables. Applied idempotently at start by outputs/clickhouse.py (apply_ddl).
-- Every table is a ReplacingMergeTree whose sorting key contains event_id: a redelivered event
-- collapses onto its first copy; the sink also skips ids it already wrote (see outputs/sink.py).
-- Statements are separated by a line holding only ';'. {db} is replaced by the database name.

CREATE DATABASE IF NOT EXISTS {db}
;
CREATE TABLE IF NOT EXISTS {db}.prices
(
    event_id          String,
    offer_key         String,
    provider          LowCardinality(String),
    region            LowCardinality(String),
    zone              LowCardinality(String),
    instance_type     LowCardinality(String),
    gpu_model         LowCardinality(String),
    gpus_per_instance UInt16,
    market            LowCardinality(String),
    usd_per_hour      Float64,
    usd_per_gpu_hour  Float64,
    quoted_at         DateTime64(3, 'UTC'),
    observed_at       DateTime64(3, 'UTC'),
    source            LowCardinality(String),
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(quoted_at)
ORDER BY (gpu_model, offer_key, quoted_at, event_id)
;
CREATE TABLE IF NOT EXISTS {db}.capacity
(
    event_id            String,
    offer_key           String,
    provider            LowCardinality(String),
    region              LowCardinality(String),
    gpu_model           LowCardinality(String),
    market              LowCardinality(String),
    available           Bool,
    available_instances Nullable(UInt32),
    capacity_score      Nullable(Float64),
    quoted_at           DateTime64(3, 'UTC'),
    observed_at         DateTime64(3, 'UTC'),
    source              LowCardinality(String),
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(quoted_at)
ORDER BY (offer_key, quoted_at, event_id)
;
CREATE TABLE IF NOT EXISTS {db}.interruptions
(
    event_id                           String,
    offer_key                          String,
    provider                           LowCardinality(String),
    region                             LowCardinality(String),
    gpu_model                          LowCardinality(String),
    market                             LowCardinality(String),
    kind                               LowCardinality(String),
    interruption_probability_per_hour  Nullable(Float64),
    frequency_band                     Nullable(UInt8),
    instance_id                        Nullable(String),
    occurred_at                        DateTime64(3, 'UTC'),
    observed_at                        DateTime64(3, 'UTC'),
    source                             LowCardinality(String),
    ingested_at                        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (offer_key, occurred_at, event_id)
;
CREATE TABLE IF NOT EXISTS {db}.decisions
(
    event_id            String,
    decided_at          DateTime64(3, 'UTC'),
    workload_ids        Array(String),
    reason              String,
    total_usd_per_hour  Float64,
    latency_ms          Nullable(Float64),
    n_assignments       UInt32,
    n_changes           UInt32,
    solver              LowCardinality(String),
    payload             String,
    ingested_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(decided_at)
ORDER BY (decided_at, event_id)
;
CREATE TABLE IF NOT EXISTS {db}.decision_assignments
(
    decision_id     String,
    decided_at      DateTime64(3, 'UTC'),
    workload_id     String,
    offer_key       String,
    provider        LowCardinality(String),
    region          LowCardinality(String),
    gpu_model       LowCardinality(String),
    market          LowCardinality(String),
    instances       UInt32,
    usd_per_hour    Float64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(decided_at)
ORDER BY (workload_id, decided_at, decision_id, offer_key)
;
CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    event_id          String,
    source_topic      LowCardinality(String),
    source_partition  Nullable(Int32),
    source_offset     Nullable(Int64),
    stage             LowCardinality(String),
    reason            String,
    original_b64      String,
    dead_lettered_at  DateTime64(3, 'UTC'),
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (dead_lettered_at, event_id)

-- What the user gives (the GPU quotas in force: QuotasSet on cloudarb.quotas.v1, the latest set_at wins)
-- and what the forecasters decide (promotions). Same rules as 001: idempotent DDL, ';' alone on a line, {db}.

CREATE TABLE IF NOT EXISTS {db}.quotas
(
    event_id     String,
    set_at       DateTime64(3, 'UTC'),
    n_quotas     UInt32,
    quotas       String,
    ingested_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (set_at, event_id)
;
-- Online A/B of the forecasters: every promotion of a group's published model (ModelPromoted on
-- cloudarb.models.v1), with both candidates' progressive-validation scores.
CREATE TABLE IF NOT EXISTS {db}.model_promotions
(
    event_id         String,
    group_key        LowCardinality(String),
    target           LowCardinality(String),
    champion         LowCardinality(String),
    previous         LowCardinality(String),
    metric           LowCardinality(String),
    score_champion   Float64,
    score_previous   Float64,
    n_scored         UInt32,
    promoted_at      DateTime64(3, 'UTC'),
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (group_key, target, promoted_at, event_id)

-- Placement facts the user gives: the GPU quotas in force (QuotasSet on cloudarb.quotas.v1; the latest
-- set_at wins). Same rules as 001: idempotent DDL, ';' alone on a line separates statements, {db} = database.

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

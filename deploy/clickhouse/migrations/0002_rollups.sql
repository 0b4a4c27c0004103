-- Rollups for the dashboard and reports, fed by materialized views on every insert into
-- the raw tables. Readers aggregate (sum(clicks), uniqMerge(unique_clicks), sum(conversions)
-- ...) so results never depend on background merges. A rollup row is never deduplicated:
-- the sink inserts each raw row exactly once, which keeps them exact.

-- Revenue of the previous conversion version, so a status change moves revenue too.
ALTER TABLE conversions ADD COLUMN previous_revenue_micros Int64 AFTER revenue_micros;

CREATE TABLE IF NOT EXISTS clicks_hourly
(
    hour DateTime,
    flow_id UInt32,
    country String,
    source String,
    sub_id String,
    device String,
    os String,
    browser String,
    clicks UInt64,
    bots UInt64,
    unique_clicks AggregateFunction(uniq, String),
    cost_micros Int64
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, flow_id, country, source, sub_id, device, os, browser);

CREATE MATERIALIZED VIEW IF NOT EXISTS clicks_hourly_mv TO clicks_hourly AS
SELECT
    toStartOfHour(ts) AS hour,
    flow_id, country, source, sub_id, device, os, browser,
    count() AS clicks,
    sum(toUInt64(is_bot)) AS bots,
    uniqState(visitor_id) AS unique_clicks,
    sum(cost_micros) AS cost_micros
FROM clicks
GROUP BY hour, flow_id, country, source, sub_id, device, os, browser;

-- One row per conversion version and status it touches: +1 and its revenue to its
-- status, and -1 and the previous revenue from the previous status (two views, as
-- ClickHouse 18.16 cannot alias an ARRAY JOIN of both to the source's column names).
CREATE TABLE IF NOT EXISTS conversions_hourly
(
    hour DateTime,
    flow_id UInt32,
    country String,
    source String,
    sub_id String,
    goal String,
    status String,
    conversions Int64,
    revenue_micros Int64
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, flow_id, country, source, sub_id, goal, status);

CREATE MATERIALIZED VIEW IF NOT EXISTS conversions_hourly_mv TO conversions_hourly AS
SELECT
    toStartOfHour(created_at) AS hour,
    flow_id, country, source, sub_id, goal, status,
    toInt64(1) AS conversions,
    revenue_micros
FROM conversions
WHERE status != '';

CREATE MATERIALIZED VIEW IF NOT EXISTS conversions_hourly_previous_mv TO conversions_hourly AS
SELECT
    toStartOfHour(created_at) AS hour,
    flow_id, country, source, sub_id, goal,
    previous_status AS status,
    toInt64(-1) AS conversions,
    -previous_revenue_micros AS revenue_micros
FROM conversions
WHERE previous_status != '';

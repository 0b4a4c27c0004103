-- Hourly rollups for the dashboard and reports, fed by materialized views on insert.
-- clicks_hourly: every click counted in `clicks`, bot clicks also in `bots`; unique
-- clicks as uniq states of visitor_id (read with uniqMerge).
-- conversions_hourly: +1/-1 rows per status as conversions change, so sum() gives the
-- current state; hour is the hour the conversion was created.
-- Runs on ClickHouse 18.16 and current releases.

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
ORDER BY (flow_id, hour, country, source, sub_id, device, os, browser);

CREATE MATERIALIZED VIEW IF NOT EXISTS clicks_hourly_mv TO clicks_hourly AS
SELECT
    toStartOfHour(ts) AS hour,
    flow_id, country, source, sub_id, device, os, browser,
    count() AS clicks,
    countIf(is_bot = 1) AS bots,
    uniqState(visitor_id) AS unique_clicks,
    sum(cost_micros) AS cost_micros
FROM clicks
GROUP BY hour, flow_id, country, source, sub_id, device, os, browser;

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
ORDER BY (flow_id, hour, country, source, sub_id, goal, status);

-- Two views: every conversion version adds +1 to its status, and every version that
-- follows another takes 1 away from the status before it. (Old servers resolve an alias
-- that shadows a column anywhere in the query, so one view cannot rename `status` and
-- still compare against it.)
CREATE MATERIALIZED VIEW IF NOT EXISTS conversions_hourly_added_mv TO conversions_hourly AS
SELECT
    toStartOfHour(created_at) AS hour,
    flow_id, country, source, sub_id, goal, status,
    toInt64(1) AS conversions,
    revenue_micros
FROM conversions;

CREATE MATERIALIZED VIEW IF NOT EXISTS conversions_hourly_replaced_mv TO conversions_hourly AS
SELECT
    toStartOfHour(created_at) AS hour,
    flow_id, country, source, sub_id, goal,
    previous_status AS status,
    toInt64(-1) AS conversions,
    -revenue_micros AS revenue_micros
FROM conversions
WHERE version > 1 AND previous_status != '';

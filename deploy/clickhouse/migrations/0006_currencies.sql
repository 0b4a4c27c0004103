-- Exchange rates, and conversions and costs by currency for the reporting currency.
--
-- A rate says how many units of `currency` one unit of `base` buys on `day` (the ECB
-- layout: base EUR, `USD 1.0841`). Rates are data written through the API; a rewrite of
-- the same day, base and currency replaces the older value (the latest `updated_at`
-- wins, and readers take argMax so the answer never waits for a merge).
--
-- The rows already stored reach the two new rollups through a rebuild that runs after
-- these statements (`REBUILDS` in crates/traffsure-clickhouse: each month recomputed
-- from the raw table and swapped in whole, so a second run or a run after a crash
-- counts nothing twice).
CREATE TABLE IF NOT EXISTS exchange_rates
(
    day Date,
    base String,
    currency String,
    rate Float64,
    updated_at DateTime
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (base, currency, day);

-- conversions_hourly with the currency the advertiser sent as a key: revenue is summed
-- per currency and converted to the reporting currency when it is read, at the rate of
-- its day, so a rate that arrives later converts older conversions by itself.
CREATE TABLE IF NOT EXISTS conversions_hourly_currency
(
    hour DateTime,
    flow_id UInt32,
    country String,
    source String,
    sub_id String,
    goal String,
    status String,
    currency String,
    conversions Int64,
    revenue_micros Int64
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, flow_id, country, source, sub_id, goal, status, currency);

CREATE MATERIALIZED VIEW IF NOT EXISTS conversions_hourly_currency_mv TO conversions_hourly_currency AS
SELECT
    toStartOfHour(created_at) AS hour,
    flow_id, country, source, sub_id, goal, status, currency,
    toInt64(1) AS conversions,
    revenue_micros
FROM conversions
WHERE status != '';

CREATE MATERIALIZED VIEW IF NOT EXISTS conversions_hourly_currency_previous_mv TO conversions_hourly_currency AS
SELECT
    toStartOfHour(created_at) AS hour,
    flow_id, country, source, sub_id, goal,
    previous_status AS status,
    currency,
    toInt64(-1) AS conversions,
    -previous_revenue_micros AS revenue_micros
FROM conversions
WHERE previous_status != '';

-- The currency of a click's cost (the tracking link's `cost_currency`); empty: the
-- reporting currency, as every cost written before this column.
ALTER TABLE clicks ADD COLUMN cost_currency String AFTER cost_micros;

-- Costs by currency, converted when read like revenue. clicks_hourly keeps its cost
-- column for what already reads it; reports take cost from here.
CREATE TABLE IF NOT EXISTS clicks_cost_hourly
(
    hour DateTime,
    flow_id UInt32,
    country String,
    source String,
    sub_id String,
    device String,
    os String,
    browser String,
    cost_currency String,
    cost_micros Int64
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, flow_id, country, source, sub_id, device, os, browser, cost_currency);

CREATE MATERIALIZED VIEW IF NOT EXISTS clicks_cost_hourly_mv TO clicks_cost_hourly AS
SELECT
    toStartOfHour(ts) AS hour,
    flow_id, country, source, sub_id, device, os, browser, cost_currency,
    sum(cost_micros) AS cost_micros
FROM clicks
GROUP BY hour, flow_id, country, source, sub_id, device, os, browser, cost_currency;

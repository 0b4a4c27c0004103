-- Exchange rates, and conversions and costs by currency for the reporting currency.
--
-- A rate says how many units of `currency` one unit of `base` buys on `day` (the ECB
-- layout: base EUR, `USD 1.0841`). Rates are data written through the API; a rewrite of
-- the same day, base and currency replaces the older value (the latest `updated_at`
-- wins, and readers take argMax so the answer never waits for a merge).
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

-- The conversions already stored when the views below start: the backfill copies these
-- (by Kafka position) and the views everything after, so no row is counted twice even
-- if the sink writes while this migration runs.
CREATE TABLE IF NOT EXISTS conversions_currency_backfill ENGINE = TinyLog AS
SELECT kafka_partition, max(kafka_offset) AS backfill_offset, toUInt8(1) AS backfill_found
FROM conversions GROUP BY kafka_partition;

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

INSERT INTO conversions_hourly_currency
SELECT toStartOfHour(created_at), flow_id, country, source, sub_id, goal, status, currency,
    toInt64(1), revenue_micros
FROM conversions ANY LEFT JOIN conversions_currency_backfill USING kafka_partition
WHERE status != '' AND backfill_found = 1 AND kafka_offset <= backfill_offset;

INSERT INTO conversions_hourly_currency
SELECT toStartOfHour(created_at), flow_id, country, source, sub_id, goal, previous_status, currency,
    toInt64(-1), -previous_revenue_micros
FROM conversions ANY LEFT JOIN conversions_currency_backfill USING kafka_partition
WHERE previous_status != '' AND backfill_found = 1 AND kafka_offset <= backfill_offset;

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

CREATE TABLE IF NOT EXISTS clicks_cost_backfill ENGINE = TinyLog AS
SELECT kafka_partition, max(kafka_offset) AS backfill_offset, toUInt8(1) AS backfill_found
FROM clicks GROUP BY kafka_partition;

CREATE MATERIALIZED VIEW IF NOT EXISTS clicks_cost_hourly_mv TO clicks_cost_hourly AS
SELECT
    toStartOfHour(ts) AS hour,
    flow_id, country, source, sub_id, device, os, browser, cost_currency,
    sum(cost_micros) AS cost_micros
FROM clicks
GROUP BY hour, flow_id, country, source, sub_id, device, os, browser, cost_currency;

INSERT INTO clicks_cost_hourly
SELECT toStartOfHour(ts) AS h, flow_id, country, source, sub_id, device, os, browser, cost_currency,
    sum(cost_micros)
FROM clicks ANY LEFT JOIN clicks_cost_backfill USING kafka_partition
WHERE cost_micros != 0 AND backfill_found = 1 AND kafka_offset <= backfill_offset
GROUP BY h, flow_id, country, source, sub_id, device, os, browser, cost_currency;

-- Impressions (topic `impressions`, one row per `GET /i/{flow}`): the raw table, its sink
-- checkpoint view, and an hourly rollup that reports read impressions and impression cost
-- from. Columns as the clicks table's where they mean the same; `impression_id` is the id
-- a click names with `imp=` (clicks.impression_id).

CREATE TABLE IF NOT EXISTS impressions
(
    impression_id String,
    flow_id UInt32,
    ts DateTime,
    ts_ms Int64,
    routing_key UInt16,
    visitor_id String,
    ip String,
    country String,
    user_agent String,
    device String,
    os String,
    browser String,
    browser_family String,
    os_family String,
    device_family String,
    device_brand String,
    device_model String,
    referrer String,
    sub_id String,
    source String,
    sub1 String, sub2 String, sub3 String, sub4 String, sub5 String,
    sub6 String, sub7 String, sub8 String, sub9 String, sub10 String,
    cost_micros Int64,
    cost_currency String,
    is_bot UInt8,
    bot_reason String,
    asn UInt32,
    as_org String,
    datacenter UInt8,
    traffic_source_id UInt32,
    external_id String,
    extra String,
    kafka_partition UInt16,
    kafka_offset UInt64,
    kafka_fingerprint UInt64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(ts)
ORDER BY (flow_id, ts, impression_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS impressions_checkpoint_mv TO sink_checkpoints AS
SELECT 'impressions' AS source_table, kafka_partition, max(kafka_offset) AS max_offset,
    argMax(kafka_fingerprint, kafka_offset) AS fingerprint, now() AS written_at
FROM impressions GROUP BY kafka_partition;

-- Impressions per hour by the dimensions reports group clicks by; cost per currency,
-- converted when read, as clicks_funnel_hourly's.
CREATE TABLE IF NOT EXISTS impressions_hourly
(
    hour DateTime,
    flow_id UInt32,
    traffic_source_id UInt32,
    country String,
    source String,
    sub_id String,
    device String,
    os String,
    browser String,
    cost_currency String,
    impressions UInt64,
    bots UInt64,
    cost_micros Int64
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, flow_id, traffic_source_id, country, source, sub_id, device, os, browser, cost_currency);

CREATE MATERIALIZED VIEW IF NOT EXISTS impressions_hourly_mv TO impressions_hourly AS
SELECT
    toStartOfHour(ts) AS hour,
    flow_id, traffic_source_id, country, source, sub_id, device, os, browser, cost_currency,
    count() AS impressions,
    sum(toUInt64(is_bot)) AS bots,
    sum(cost_micros) AS cost_micros
FROM impressions
GROUP BY hour, flow_id, traffic_source_id, country, source, sub_id, device, os, browser,
    cost_currency;

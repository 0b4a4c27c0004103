-- Where an impression's cost came from (docs/impressions.md): the pixel's own `cost`
-- parameter, or the flow's cpm model per impression. `cost_source` is CostSource's number
-- (0 no cost, 1 the pixel, 2 the flow's model). Rows written before read as 0.
ALTER TABLE impressions ADD COLUMN cost_source UInt8;

-- Impression cost by hour, impressions_hourly's key and the cost source, that reports
-- read impression cost from. Impressions without a cost (cost source 0: the sink gives
-- every cost a source) are left out; 18.16 would read `cost_micros` in the view's WHERE
-- as the sum's alias. The rows already stored reach it through a rebuild (`REBUILDS`),
-- an impression of before with a cost counted as the pixel's.
CREATE TABLE IF NOT EXISTS impression_costs_hourly
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
    cost_source UInt8,
    impressions UInt64,
    cost_micros Int64
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, flow_id, traffic_source_id, country, source, sub_id, device, os, browser, cost_currency, cost_source);

CREATE MATERIALIZED VIEW IF NOT EXISTS impression_costs_hourly_mv TO impression_costs_hourly AS
SELECT
    toStartOfHour(ts) AS hour,
    flow_id, traffic_source_id, country, source, sub_id, device, os, browser, cost_currency,
    cost_source,
    count() AS impressions,
    sum(cost_micros) AS cost_micros
FROM impressions
WHERE cost_source != 0
GROUP BY hour, flow_id, traffic_source_id, country, source, sub_id, device, os, browser,
    cost_currency, cost_source;

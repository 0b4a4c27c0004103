-- Cost models (docs/costs.md): where a click's cost came from, the cost a conversion
-- version carries under a cpa or revshare model, and rollups of both that reports read
-- cost from. `cost_source` is CostSource's number in clicks.proto (0 unknown, 1 the
-- tracking link, 2 the flow's model). Rows written before these columns read as 0 / empty.
ALTER TABLE clicks ADD COLUMN cost_source UInt8;
ALTER TABLE conversions ADD COLUMN cost_micros Int64;
ALTER TABLE conversions ADD COLUMN cost_currency String;
ALTER TABLE conversions ADD COLUMN previous_cost_micros Int64;

-- clicks_funnel_hourly's key and the cost source: visits (with bots) and cost by where the
-- cost came from. The rows already stored reach it through a rebuild (`REBUILDS`), a
-- click of before with a cost counted as the link's.
CREATE TABLE IF NOT EXISTS click_costs_hourly
(
    hour DateTime,
    flow_id UInt32,
    traffic_source_id UInt32,
    offer_id UInt32,
    lander_id UInt32,
    network_id UInt32,
    kind UInt8,
    country String,
    source String,
    sub_id String,
    device String,
    os String,
    browser String,
    cost_currency String,
    cost_source UInt8,
    clicks UInt64,
    cost_micros Int64
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, flow_id, traffic_source_id, offer_id, lander_id, network_id, kind, country, source, sub_id, device, os, browser, cost_currency, cost_source);

CREATE MATERIALIZED VIEW IF NOT EXISTS click_costs_hourly_mv TO click_costs_hourly AS
SELECT
    toStartOfHour(ts) AS hour,
    flow_id, traffic_source_id, offer_id, lander_id, network_id, kind,
    country, source, sub_id, device, os, browser, cost_currency, cost_source,
    count() AS clicks,
    sum(cost_micros) AS cost_micros
FROM clicks
GROUP BY hour, flow_id, traffic_source_id, offer_id, lander_id, network_id, kind,
    country, source, sub_id, device, os, browser, cost_currency, cost_source;

-- Conversions' model cost (+ for a version's cost, - for the cost it replaces, as
-- revenue moves in conversions_funnel_hourly), by the hour of the conversion's creation.
CREATE TABLE IF NOT EXISTS conversion_costs_hourly
(
    hour DateTime,
    flow_id UInt32,
    traffic_source_id UInt32,
    offer_id UInt32,
    lander_id UInt32,
    network_id UInt32,
    country String,
    source String,
    sub_id String,
    goal String,
    cost_currency String,
    cost_micros Int64
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, flow_id, traffic_source_id, offer_id, lander_id, network_id, country, source, sub_id, goal, cost_currency);

CREATE MATERIALIZED VIEW IF NOT EXISTS conversion_costs_hourly_mv TO conversion_costs_hourly AS
SELECT
    toStartOfHour(created_at) AS hour,
    flow_id, traffic_source_id, offer_id, lander_id, network_id,
    country, source, sub_id, goal, cost_currency,
    cost_micros
FROM conversions
WHERE cost_micros != 0;

CREATE MATERIALIZED VIEW IF NOT EXISTS conversion_costs_hourly_previous_mv TO conversion_costs_hourly AS
SELECT
    toStartOfHour(created_at) AS hour,
    flow_id, traffic_source_id, offer_id, lander_id, network_id,
    country, source, sub_id, goal, cost_currency,
    -previous_cost_micros AS cost_micros
FROM conversions
WHERE previous_cost_micros != 0;

-- The payout rollup (docs/caps.md): conversions_funnel_hourly's keys with the payout's
-- currency, and the payout moved with status as revenue is there (+ for a version's
-- status, - from its previous status). Reports read payout from here, converted to the
-- reporting currency as revenue is. A conversion from before payouts (empty
-- payout_currency) pays its revenue.

CREATE TABLE IF NOT EXISTS conversions_payout_hourly
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
    status String,
    currency String,
    payout_micros Int64
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, flow_id, traffic_source_id, offer_id, lander_id, network_id, country, source, sub_id, goal, status, currency);

CREATE MATERIALIZED VIEW IF NOT EXISTS conversions_payout_hourly_mv TO conversions_payout_hourly AS
SELECT
    toStartOfHour(created_at) AS hour,
    flow_id, traffic_source_id, offer_id, lander_id, network_id,
    country, source, sub_id, goal, status,
    if(payout_currency = '', currency, payout_currency) AS currency,
    if(payout_currency = '', revenue_micros, payout_micros) AS payout_micros
FROM conversions
WHERE status != '';

CREATE MATERIALIZED VIEW IF NOT EXISTS conversions_payout_hourly_previous_mv TO conversions_payout_hourly AS
SELECT
    toStartOfHour(created_at) AS hour,
    flow_id, traffic_source_id, offer_id, lander_id, network_id,
    country, source, sub_id, goal,
    previous_status AS status,
    if(payout_currency = '', currency, payout_currency) AS currency,
    -if(payout_currency = '', previous_revenue_micros, previous_payout_micros) AS payout_micros
FROM conversions
WHERE previous_status != '';

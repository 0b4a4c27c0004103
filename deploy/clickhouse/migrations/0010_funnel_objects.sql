-- The objects a media buyer works with (traffic sources, affiliate networks, offers,
-- landers) on clicks and conversions, their names for reports, and rollups keyed by them.
--
-- A click row is a visit (`kind` 0, through /c/; 2, recorded by the direct-tracking
-- script) or a lander click-through to an offer (`kind` 1, through /lp/click, with its
-- visit's hash in `parent_click_hash`). The `kind` numbers are ClickKind's in
-- clicks.proto. Rows written before these columns read as visits without objects
-- (`kind` 0, ids 0, empty strings), which is what they were.
ALTER TABLE clicks ADD COLUMN kind UInt8;
ALTER TABLE clicks ADD COLUMN parent_click_hash String;
ALTER TABLE clicks ADD COLUMN traffic_source_id UInt32;
ALTER TABLE clicks ADD COLUMN lander_id UInt32;
ALTER TABLE clicks ADD COLUMN offer_id UInt32;
ALTER TABLE clicks ADD COLUMN network_id UInt32;
ALTER TABLE clicks ADD COLUMN external_id String;

ALTER TABLE conversions ADD COLUMN traffic_source_id UInt32;
ALTER TABLE conversions ADD COLUMN lander_id UInt32;
ALTER TABLE conversions ADD COLUMN offer_id UInt32;
ALTER TABLE conversions ADD COLUMN network_id UInt32;
ALTER TABLE conversions ADD COLUMN external_id String;

-- Every version of every object from the compacted `objects` topic; readers take each
-- object's highest revision with argMax, so a rename shows before any merge. `kind` is
-- ObjectKind's number in objects.proto (1 traffic source, 2 affiliate network, 3 offer,
-- 4 lander).
CREATE TABLE IF NOT EXISTS tracker_objects
(
    kind UInt8,
    id UInt32,
    revision UInt64,
    name String,
    archived UInt8,
    created_at DateTime,
    updated_at DateTime,
    spec_json String,
    kafka_partition UInt16,
    kafka_offset UInt64,
    kafka_fingerprint UInt64
)
ENGINE = ReplacingMergeTree(revision)
ORDER BY (kind, id);

CREATE MATERIALIZED VIEW IF NOT EXISTS tracker_objects_checkpoint_mv TO sink_checkpoints AS
SELECT 'tracker_objects' AS source_table, kafka_partition, max(kafka_offset) AS max_offset,
    argMax(kafka_fingerprint, kafka_offset) AS fingerprint, now() AS written_at
FROM tracker_objects GROUP BY kafka_partition;

-- clicks_hourly and clicks_cost_hourly keyed by the objects and the click kind as well:
-- reports read clicks (visits), lander views and clicks, offer clicks and cost from here,
-- so a lander click-through never counts as a click. The rows already stored reach it
-- through a rebuild after these statements (`REBUILDS` in crates/traffsure-clickhouse).
CREATE TABLE IF NOT EXISTS clicks_funnel_hourly
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
    clicks UInt64,
    bots UInt64,
    unique_clicks AggregateFunction(uniq, String),
    cost_micros Int64
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, flow_id, traffic_source_id, offer_id, lander_id, network_id, kind, country, source, sub_id, device, os, browser, cost_currency);

CREATE MATERIALIZED VIEW IF NOT EXISTS clicks_funnel_hourly_mv TO clicks_funnel_hourly AS
SELECT
    toStartOfHour(ts) AS hour,
    flow_id, traffic_source_id, offer_id, lander_id, network_id, kind,
    country, source, sub_id, device, os, browser, cost_currency,
    count() AS clicks,
    sum(toUInt64(is_bot)) AS bots,
    uniqState(visitor_id) AS unique_clicks,
    sum(cost_micros) AS cost_micros
FROM clicks
GROUP BY hour, flow_id, traffic_source_id, offer_id, lander_id, network_id, kind,
    country, source, sub_id, device, os, browser, cost_currency;

-- conversions_hourly_currency keyed by the objects as well (+1 for a version's status,
-- -1 for the status it replaces, as there), rebuilt from the stored conversions.
CREATE TABLE IF NOT EXISTS conversions_funnel_hourly
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
    conversions Int64,
    revenue_micros Int64
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, flow_id, traffic_source_id, offer_id, lander_id, network_id, country, source, sub_id, goal, status, currency);

CREATE MATERIALIZED VIEW IF NOT EXISTS conversions_funnel_hourly_mv TO conversions_funnel_hourly AS
SELECT
    toStartOfHour(created_at) AS hour,
    flow_id, traffic_source_id, offer_id, lander_id, network_id,
    country, source, sub_id, goal, status, currency,
    toInt64(1) AS conversions,
    revenue_micros
FROM conversions
WHERE status != '';

CREATE MATERIALIZED VIEW IF NOT EXISTS conversions_funnel_hourly_previous_mv TO conversions_funnel_hourly AS
SELECT
    toStartOfHour(created_at) AS hour,
    flow_id, traffic_source_id, offer_id, lander_id, network_id,
    country, source, sub_id, goal,
    previous_status AS status,
    currency,
    toInt64(-1) AS conversions,
    -previous_revenue_micros AS revenue_micros
FROM conversions
WHERE previous_status != '';

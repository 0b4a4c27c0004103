-- Raw event tables. Every row carries the Kafka partition and offset it came from: the
-- sink resumes each partition after the highest offset already stored ("the table is
-- the checkpoint"), and ReplacingMergeTree folds any replayed row on merge.
-- Runs on ClickHouse 18.16 and current releases: no LowCardinality, TTL, DateTime64,
-- Map or JSON types.

CREATE TABLE IF NOT EXISTS clicks
(
    click_hash String,
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
    referrer String,
    sub_id String,
    source String,
    sub1 String, sub2 String, sub3 String, sub4 String, sub5 String,
    sub6 String, sub7 String, sub8 String, sub9 String, sub10 String,
    cost_micros Int64,
    destination_url String,
    is_bot UInt8,
    extra String,
    kafka_partition UInt16,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(ts)
ORDER BY (flow_id, ts, click_hash);

CREATE TABLE IF NOT EXISTS conversions
(
    conversion_id String,
    version UInt32,
    click_hash String,
    flow_id UInt32,
    goal String,
    status String,
    previous_status String,
    revenue_micros Int64,
    currency String,
    uid String,
    postback_id String,
    click_ts DateTime,
    created_at DateTime,
    updated_at DateTime,
    updated_at_ms Int64,
    disable_postbacks UInt8,
    country String,
    source String,
    sub_id String,
    sub1 String, sub2 String, sub3 String, sub4 String, sub5 String,
    sub6 String, sub7 String, sub8 String, sub9 String, sub10 String,
    device String,
    os String,
    browser String,
    kafka_partition UInt16,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(created_at)
ORDER BY (flow_id, created_at, conversion_id, version);

CREATE TABLE IF NOT EXISTS postback_log
(
    postback_id String,
    received_at DateTime,
    received_at_ms Int64,
    flow_id UInt32,
    click_hash String,
    goal String,
    response_status UInt16,
    reason String,
    message String,
    ip String,
    method String,
    content_type String,
    path String,
    param_names Array(String),
    param_values Array(String),
    params_truncated UInt8,
    delta_ms Int64,
    kafka_partition UInt16,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(received_at)
ORDER BY (flow_id, received_at, postback_id);

CREATE TABLE IF NOT EXISTS postback_results
(
    postback_id String,
    click_hash String,
    flow_id UInt32,
    outcome String,
    conversion_id String,
    message String,
    decided_at DateTime,
    kafka_partition UInt16,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(decided_at)
ORDER BY (flow_id, decided_at, postback_id);

CREATE TABLE IF NOT EXISTS flows
(
    id UInt32,
    revision UInt64,
    slug String,
    name String,
    status String,
    destination_url String,
    default_goal String,
    updated_at DateTime,
    kafka_partition UInt16,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree(revision)
ORDER BY id;

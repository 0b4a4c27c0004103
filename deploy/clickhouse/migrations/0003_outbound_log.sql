-- Every outbound postback attempt (OutboundAttempt in proto/traffsure/events/v1/outbound.proto).
-- Runs on ClickHouse 18.16 and current releases.

CREATE TABLE IF NOT EXISTS outbound_log
(
    attempt_id String,
    conversion_id String,
    conversion_version UInt32,
    outbound_id String,
    flow_id UInt32,
    click_hash String,
    goal String,
    status String,
    revenue_micros Int64,
    currency String,
    method String,
    url String,
    request_body String,
    http_status UInt16,
    error String,
    response_snippet String,
    latency_ms UInt32,
    attempt UInt32,
    state String,
    attempted_at DateTime,
    attempted_at_ms Int64,
    next_attempt_at_ms Int64,
    manual UInt8,
    kafka_partition UInt16,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(attempted_at)
ORDER BY (flow_id, attempted_at, attempt_id);

-- The sink's checkpoints, kept small so reading them costs nothing however large the raw
-- tables grow. Every raw row carries a fingerprint of its Kafka message (key and
-- payload); a materialized view on each raw table records, for every inserted block and
-- Kafka partition, the highest offset and the fingerprint of the message at it. The view
-- runs inside the INSERT that writes the rows, so a checkpoint exists exactly when its
-- rows were written. On assignment the sink compares the fingerprint with the message
-- the topic now holds at that offset, which tells a deleted and recreated topic from the
-- one the rows came from. The latest checkpoint (by written_at, then offset) of each
-- table and partition wins; merges keep only that one.

ALTER TABLE clicks ADD COLUMN kafka_fingerprint UInt64 AFTER kafka_offset;
ALTER TABLE conversions ADD COLUMN kafka_fingerprint UInt64 AFTER kafka_offset;
ALTER TABLE postback_log ADD COLUMN kafka_fingerprint UInt64 AFTER kafka_offset;
ALTER TABLE postback_results ADD COLUMN kafka_fingerprint UInt64 AFTER kafka_offset;
ALTER TABLE outbound_log ADD COLUMN kafka_fingerprint UInt64 AFTER kafka_offset;
ALTER TABLE flows ADD COLUMN kafka_fingerprint UInt64 AFTER kafka_offset;

CREATE TABLE IF NOT EXISTS sink_checkpoints
(
    source_table String,
    kafka_partition UInt16,
    max_offset UInt64,
    fingerprint UInt64,
    written_at DateTime
)
ENGINE = ReplacingMergeTree(written_at)
ORDER BY (source_table, kafka_partition);

CREATE MATERIALIZED VIEW IF NOT EXISTS clicks_checkpoint_mv TO sink_checkpoints AS
SELECT 'clicks' AS source_table, kafka_partition, max(kafka_offset) AS max_offset,
    argMax(kafka_fingerprint, kafka_offset) AS fingerprint, now() AS written_at
FROM clicks GROUP BY kafka_partition;

CREATE MATERIALIZED VIEW IF NOT EXISTS conversions_checkpoint_mv TO sink_checkpoints AS
SELECT 'conversions' AS source_table, kafka_partition, max(kafka_offset) AS max_offset,
    argMax(kafka_fingerprint, kafka_offset) AS fingerprint, now() AS written_at
FROM conversions GROUP BY kafka_partition;

CREATE MATERIALIZED VIEW IF NOT EXISTS postback_log_checkpoint_mv TO sink_checkpoints AS
SELECT 'postback_log' AS source_table, kafka_partition, max(kafka_offset) AS max_offset,
    argMax(kafka_fingerprint, kafka_offset) AS fingerprint, now() AS written_at
FROM postback_log GROUP BY kafka_partition;

CREATE MATERIALIZED VIEW IF NOT EXISTS postback_results_checkpoint_mv TO sink_checkpoints AS
SELECT 'postback_results' AS source_table, kafka_partition, max(kafka_offset) AS max_offset,
    argMax(kafka_fingerprint, kafka_offset) AS fingerprint, now() AS written_at
FROM postback_results GROUP BY kafka_partition;

CREATE MATERIALIZED VIEW IF NOT EXISTS outbound_log_checkpoint_mv TO sink_checkpoints AS
SELECT 'outbound_log' AS source_table, kafka_partition, max(kafka_offset) AS max_offset,
    argMax(kafka_fingerprint, kafka_offset) AS fingerprint, now() AS written_at
FROM outbound_log GROUP BY kafka_partition;

CREATE MATERIALIZED VIEW IF NOT EXISTS flows_checkpoint_mv TO sink_checkpoints AS
SELECT 'flows' AS source_table, kafka_partition, max(kafka_offset) AS max_offset,
    argMax(kafka_fingerprint, kafka_offset) AS fingerprint, now() AS written_at
FROM flows GROUP BY kafka_partition;

-- Rows written before this migration: their checkpoints, without a fingerprint (0: the
-- sink then recognises a recreated topic only when it holds fewer messages).
INSERT INTO sink_checkpoints SELECT 'clicks', kafka_partition, max(kafka_offset), 0, now() FROM clicks GROUP BY kafka_partition;
INSERT INTO sink_checkpoints SELECT 'conversions', kafka_partition, max(kafka_offset), 0, now() FROM conversions GROUP BY kafka_partition;
INSERT INTO sink_checkpoints SELECT 'postback_log', kafka_partition, max(kafka_offset), 0, now() FROM postback_log GROUP BY kafka_partition;
INSERT INTO sink_checkpoints SELECT 'postback_results', kafka_partition, max(kafka_offset), 0, now() FROM postback_results GROUP BY kafka_partition;
INSERT INTO sink_checkpoints SELECT 'outbound_log', kafka_partition, max(kafka_offset), 0, now() FROM outbound_log GROUP BY kafka_partition;
INSERT INTO sink_checkpoints SELECT 'flows', kafka_partition, max(kafka_offset), 0, now() FROM flows GROUP BY kafka_partition;

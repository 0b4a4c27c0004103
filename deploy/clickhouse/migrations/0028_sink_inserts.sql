-- The sink's record of each insert, written before the insert is sent, so that a sink
-- killed after an INSERT was cut between its parts (the raw rows and the checkpoint
-- stored, a rollup not) leaves the cut where its successor reads it. One row per Kafka
-- partition of the insert's block; every row describes the whole block (its partitions,
-- per partition the lowest and highest offset and the row count), so the latest row of
-- one partition is enough to check the whole insert. `writer` names the sink process
-- (a new one at every start) and `insert_id` grows with each of its inserts: an insert
-- followed by a later one of the same writer was settled before that one was sent. The
-- latest row (by insert_id) of each table and partition wins; merges keep only that one,
-- so the table stays as small as sink_checkpoints.

CREATE TABLE IF NOT EXISTS sink_inserts
(
    source_table String,
    kafka_partition UInt16,
    insert_id UInt64,
    writer String,
    partitions Array(UInt16),
    low_offsets Array(UInt64),
    high_offsets Array(UInt64),
    row_counts Array(UInt64),
    written_at DateTime
)
ENGINE = ReplacingMergeTree(insert_id)
ORDER BY (source_table, kafka_partition);

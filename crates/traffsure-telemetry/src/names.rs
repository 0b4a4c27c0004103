//! Names of metrics that dashboards and the runbook rely on and that services register in
//! their own crates: one spelling for the code, `deploy/observability` and the docs.

/// Rows per ClickHouse insert, per table (histogram, registered by the sink).
pub const SINK_BATCH_ROWS: &str = "traffsure_sink_batch_rows";
/// Seconds per ClickHouse insert, per table (histogram, registered by the sink).
pub const SINK_INSERT_SECONDS: &str = "traffsure_sink_insert_seconds";
/// Records in an attribution partition's state by `kind` and `partition` (gauge,
/// registered by conversion-attribution).
pub const ATTRIBUTION_STATE_RECORDS: &str = "traffsure_attribution_state_records";
/// Bytes of an attribution partition's state file by `partition` (gauge, registered by
/// conversion-attribution).
pub const ATTRIBUTION_STATE_BYTES: &str = "traffsure_attribution_state_bytes";

//! The sink's Prometheus metrics, all labelled by table.

use std::sync::OnceLock;

use traffsure_telemetry::prometheus::{HistogramVec, IntCounterVec};

pub fn insert_errors() -> &'static IntCounterVec {
    static METRIC: OnceLock<IntCounterVec> = OnceLock::new();
    METRIC.get_or_init(|| {
        traffsure_telemetry::counter_vec(
            "traffsure_sink_insert_errors_total",
            "Failed ClickHouse inserts by table (each is retried)",
            &["table"],
        )
    })
}

/// Messages by outcome: `row` (queued for its table), `already_stored` (a replay),
/// `dead_letter` (undecodable or refused by ClickHouse).
pub fn messages() -> &'static IntCounterVec {
    static METRIC: OnceLock<IntCounterVec> = OnceLock::new();
    METRIC.get_or_init(|| {
        traffsure_telemetry::counter_vec(
            "traffsure_sink_messages_total",
            "Messages by table and outcome",
            &["table", "outcome"],
        )
    })
}

pub fn rows_inserted() -> &'static IntCounterVec {
    static METRIC: OnceLock<IntCounterVec> = OnceLock::new();
    METRIC.get_or_init(|| {
        traffsure_telemetry::counter_vec(
            "traffsure_sink_rows_inserted_total",
            "Rows ClickHouse acknowledged and the checkpoint confirmed, by table",
            &["table"],
        )
    })
}

pub fn batch_rows() -> &'static HistogramVec {
    static METRIC: OnceLock<HistogramVec> = OnceLock::new();
    METRIC.get_or_init(|| {
        traffsure_telemetry::histogram_vec_with_buckets(
            "traffsure_sink_batch_rows",
            "Messages per insert (a record of several clicks counts once), by table",
            &["table"],
            vec![
                1.0, 10.0, 100.0, 1_000.0, 5_000.0, 10_000.0, 25_000.0, 50_000.0, 100_000.0,
                200_000.0,
            ],
        )
    })
}

pub fn insert_seconds() -> &'static HistogramVec {
    static METRIC: OnceLock<HistogramVec> = OnceLock::new();
    METRIC.get_or_init(|| {
        traffsure_telemetry::histogram_vec(
            "traffsure_sink_insert_seconds",
            "Time of one insert with its checkpoint read and confirmation, by table",
            &["table"],
        )
    })
}

/// Checkpoint reads by table and reason: `assign` (a partition's first message),
/// `insert` (before and after each insert).
pub fn checkpoint_reads() -> &'static IntCounterVec {
    static METRIC: OnceLock<IntCounterVec> = OnceLock::new();
    METRIC.get_or_init(|| {
        traffsure_telemetry::counter_vec(
            "traffsure_sink_checkpoint_reads_total",
            "Checkpoint reads by table and reason",
            &["table", "reason"],
        )
    })
}

/// Partitions whose topic was found recreated, so their old checkpoint was set aside.
pub fn recreated_topics() -> &'static IntCounterVec {
    static METRIC: OnceLock<IntCounterVec> = OnceLock::new();
    METRIC.get_or_init(|| {
        traffsure_telemetry::counter_vec(
            "traffsure_sink_recreated_partitions_total",
            "Partitions found recreated in Kafka (their stored checkpoint did not match)",
            &["table"],
        )
    })
}

/// Views of an insert cut between its parts, by table, view target and result:
/// `repaired` (the missing parts written), `unresolved` (the gap matched no set of the
/// insert's views: left as it is), `unchecked` (a target the sink cannot check),
/// `failed` (the server kept refusing the repair's queries), `partial_raw` (only some
/// of the raw rows stored).
pub fn view_repairs() -> &'static IntCounterVec {
    static METRIC: OnceLock<IntCounterVec> = OnceLock::new();
    METRIC.get_or_init(|| {
        traffsure_telemetry::counter_vec(
            "traffsure_sink_view_repairs_total",
            "Materialized views' parts of cut inserts, by table, target and result",
            &["table", "target", "result"],
        )
    })
}

/// Partitions' latest insert markers settled when the partition came to this sink, by
/// table and result: `none`, `own`, `followed` (a later insert of the same sink came
/// after it), `checked` (the last insert of another sink process, checked and its
/// missing views' parts written), `checkpoint_checked` (only its checkpoint part, by
/// the owner of one of its other partitions), `failed`.
pub fn marker_checks() -> &'static IntCounterVec {
    static METRIC: OnceLock<IntCounterVec> = OnceLock::new();
    METRIC.get_or_init(|| {
        traffsure_telemetry::counter_vec(
            "traffsure_sink_insert_markers_total",
            "Insert markers settled on a partition's assignment, by table and result",
            &["table", "result"],
        )
    })
}

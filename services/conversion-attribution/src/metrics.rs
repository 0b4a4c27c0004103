//! The state metrics of conversion-attribution: what each owned partition holds, how long
//! its loads take, how often trims and compactions run, and how often a failed
//! transaction was recovered from.

use std::sync::OnceLock;

use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};

pub struct StateMetrics {
    /// `kind`: clicks, visitors, conversions, held_postbacks.
    pub entries: IntGaugeVec,
    pub file_bytes: IntGaugeVec,
    /// `source`: file (the local log) or topic (what the log lacked, from Kafka).
    pub restore_seconds: HistogramVec,
    pub compactions: IntCounterVec,
    /// `kind`: clicks, visitors, conversions dropped from memory by the retention rule.
    pub trimmed: IntCounterVec,
    /// `after`: failed_commit (the consumer starts over from the committed positions),
    /// consumer_fatal (the same, after a fatal consumer error such as a fenced static
    /// member), failed_abort (a new producer takes the transactional id over) or fenced
    /// (the producer was fenced: a new one takes the id over, the consumer starts over).
    pub recoveries: IntCounterVec,
}

pub fn metrics() -> &'static StateMetrics {
    static METRICS: OnceLock<StateMetrics> = OnceLock::new();
    METRICS.get_or_init(|| StateMetrics {
        entries: traffsure_telemetry::gauge_vec(
            "traffsure_attribution_state_entries",
            "entries held in memory per owned partition",
            &["partition", "kind"],
        ),
        file_bytes: traffsure_telemetry::gauge_vec(
            "traffsure_attribution_state_file_bytes",
            "size of the partition's state log",
            &["partition"],
        ),
        restore_seconds: traffsure_telemetry::histogram_vec_with_buckets(
            "traffsure_attribution_restore_seconds",
            "time to load a newly owned partition's state",
            &["source"],
            vec![
                0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
            ],
        ),
        compactions: traffsure_telemetry::counter_vec(
            "traffsure_attribution_compactions_total",
            "state logs rewritten to their live records",
            &["partition"],
        ),
        trimmed: traffsure_telemetry::counter_vec(
            "traffsure_attribution_trimmed_total",
            "state entries dropped once out of the attribution window or session",
            &["kind"],
        ),
        recoveries: traffsure_telemetry::counter_vec(
            "traffsure_attribution_recoveries_total",
            "transactions that failed and were recovered from without a restart",
            &["after"],
        ),
    })
}

pub const ENTRY_KINDS: [&str; 4] = ["clicks", "visitors", "conversions", "held_postbacks"];

/// Sets the gauges of one partition.
pub fn report_partition(partition: i32, counts: [usize; 4], file_bytes: u64) {
    let m = metrics();
    let p = partition.to_string();
    for (kind, count) in ENTRY_KINDS.iter().zip(counts) {
        m.entries
            .with_label_values(&[p.as_str(), kind])
            .set(count as i64);
    }
    m.file_bytes
        .with_label_values(&[p.as_str()])
        .set(file_bytes as i64);
}

/// Removes the gauges of a partition no longer owned.
pub fn forget_partition(partition: i32) {
    let m = metrics();
    let p = partition.to_string();
    for kind in ENTRY_KINDS {
        let _ = m.entries.remove_label_values(&[p.as_str(), kind]);
    }
    let _ = m.file_bytes.remove_label_values(&[p.as_str()]);
}

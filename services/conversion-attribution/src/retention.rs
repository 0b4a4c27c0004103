//! What a partition's state keeps: clicks within their flow's attribution window and a
//! grace, and the conversions of those clicks. Trimming drops the rest and compacts the
//! logs dead records dominate; when to trim is the processor's call.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use traffsure_core::now_ms;
use traffsure_kafka::FlowRegistry;

use crate::attribute;
use crate::metrics;
use crate::store::PartitionState;

/// Which clicks the state keeps: those within their flow's attribution window and a grace,
/// at one moment. Windows are looked up once per flow.
pub struct Retention {
    registry: Arc<FlowRegistry>,
    grace_ms: i64,
    now_ms: i64,
    windows: HashMap<u32, i64>,
}

impl Retention {
    /// The rule as of now.
    pub fn new(registry: Arc<FlowRegistry>, grace_secs: u64) -> Self {
        Self {
            registry,
            grace_ms: (grace_secs as i64).saturating_mul(1000),
            now_ms: now_ms(),
            windows: HashMap::new(),
        }
    }

    pub fn keeps(&mut self, click_ts_ms: i64, flow_id: u32) -> bool {
        let registry = &self.registry;
        let window = *self
            .windows
            .entry(flow_id)
            .or_insert_with(|| attribute::window_ms(registry.get(flow_id).as_deref()));
        self.now_ms - click_ts_ms <= window + self.grace_ms
    }
}

/// Drops what `retention` no longer keeps from one partition's state and compacts its log
/// when dead records dominate. The state must match its file (no transaction open).
pub fn trim(
    partition: i32,
    state: &mut PartitionState,
    retention: &mut Retention,
) -> anyhow::Result<()> {
    let m = metrics::metrics();
    let started = Instant::now();
    let trimmed = state.trim(retention.now_ms, &mut |ts, flow| retention.keeps(ts, flow));
    if trimmed.clicks + trimmed.visitors + trimmed.conversions > 0 {
        tracing::info!(
            partition,
            clicks = trimmed.clicks,
            visitors = trimmed.visitors,
            conversions = trimmed.conversions,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "state trimmed"
        );
    }
    for (kind, count) in [
        ("clicks", trimmed.clicks),
        ("visitors", trimmed.visitors),
        ("conversions", trimmed.conversions),
    ] {
        m.trimmed.with_label_values(&[kind]).inc_by(count as u64);
    }
    if state.needs_compaction() {
        let started = Instant::now();
        let before = state.file_bytes();
        state
            .compact()
            .with_context(|| format!("compact the state of partition {partition}"))?;
        m.compactions
            .with_label_values(&[partition.to_string().as_str()])
            .inc();
        tracing::info!(
            partition,
            before,
            after = state.file_bytes(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "state log compacted"
        );
    }
    Ok(())
}

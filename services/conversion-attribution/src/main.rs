//! conversion-attribution: joins postbacks to their clicks and publishes conversions.
//!
//! A consume-transform-produce loop over the co-partitioned `clicks` and `postbacks`
//! topics (see `processor`): per partition, a persistent state store (`store`) of clicks,
//! visitors and conversions; conversions, postback results and the consumed positions are
//! committed together in one Kafka transaction, so a crash or a rebalance never emits a
//! conversion twice nor loses one. A postback whose click has not arrived yet is held until
//! the click comes or the hold timeout passes.

mod attribute;
mod caps;
mod metrics;
mod processor;
mod restore;
mod retention;
mod store;
mod visitor;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use traffsure_config::{HttpSettings, KafkaSettings, TelemetrySettings};
use traffsure_kafka::Topics;
use traffsure_telemetry::Health;

#[derive(Debug, Deserialize)]
// Unknown top-level sections are ignored: one environment may configure several services.
#[serde(default)]
pub struct Settings {
    pub http: HttpSettings,
    pub kafka: KafkaSettings,
    pub telemetry: TelemetrySettings,
    /// Consumer group of the clicks and postbacks consumer.
    pub group_id: String,
    /// How long a postback waits for its click before it is reported as not found.
    pub hold_timeout_secs: u64,
    /// This instance's name, unique among running instances and kept across restarts:
    /// the transactional id is `<group_id>-<instance_id>`.
    pub instance_id: String,
    /// Where the per-partition state logs are kept.
    pub state_dir: String,
    /// How long a transaction collects work before it commits: longer means fewer commits
    /// (more throughput) and later visibility downstream.
    pub commit_interval_ms: u64,
    /// How long past its flow's attribution window a click stays in the state, so that a
    /// postback received inside the window but processed late still finds it.
    pub window_grace_secs: u64,
    /// How often clicks, sessions and conversions out of retention are dropped (and the
    /// state logs compacted when dead records dominate).
    pub trim_interval_secs: u64,
    /// A partition's state log is rewritten to its live records once it is at least this
    /// large and dead records make up more than half of it.
    pub compact_min_bytes: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::on("127.0.0.1:9101"),
            kafka: KafkaSettings::default(),
            telemetry: TelemetrySettings::default(),
            group_id: "traffsure-attribution".into(),
            hold_timeout_secs: 120,
            instance_id: "0".into(),
            state_dir: ".local/attribution".into(),
            commit_interval_ms: 250,
            window_grace_secs: 24 * 60 * 60,
            trim_interval_secs: 60,
            compact_min_bytes: 4 << 20,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = traffsure_config::load("conversion-attribution")?;
    let _telemetry = traffsure_telemetry::init("conversion-attribution", &settings.telemetry)?;
    let health = Health::new();
    let ops = traffsure_telemetry::serve_ops(&settings.http.bind, health.clone())?;
    let ops_handle = ops.handle();
    tokio::spawn(ops);

    let topics = Topics::new(&settings.kafka.topic_prefix);
    traffsure_kafka::ensure_topics(&settings.kafka, &topics)
        .await
        .context("create topics")?;
    let registry = traffsure_kafka::follow_flows(&settings.kafka, &topics.flows, &health)
        .await
        .context("follow flows topic")?;
    registry.loaded().await;
    traffsure_kafka::metrics::spawn_group_lag_reporter(
        &settings.kafka,
        settings.group_id.clone(),
        vec![topics.clicks.clone(), topics.postbacks.clone()],
        Duration::from_secs(5),
    )?;

    // Conversion caps count what every instance published (docs/caps.md).
    let cap_counter = traffsure_kafka::caps::SharedCounter::default();
    traffsure_kafka::caps::follow_counts(
        &settings.kafka,
        &topics.conversions,
        traffsure_kafka::caps::Counted::Conversions,
        registry.clone(),
        cap_counter.clone(),
    )
    .await
    .context("follow conversions for caps")?;

    let processor_ready = health.register("processor");
    let shutdown = Arc::new(AtomicBool::new(false));
    let stop = shutdown.clone();
    let mut worker = tokio::task::spawn_blocking(move || {
        let processor =
            processor::Processor::new(settings, topics, registry, stop)?.with_caps(cap_counter);
        processor_ready.set_ready(true);
        tracing::info!("attribution running");
        processor.run()
    });
    let result = tokio::select! {
        result = &mut worker => result,
        _ = traffsure_telemetry::shutdown_signal() => {
            shutdown.store(true, Ordering::SeqCst);
            worker.await
        }
    };
    ops_handle.stop(true).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    result.context("attribution loop panicked")?
}

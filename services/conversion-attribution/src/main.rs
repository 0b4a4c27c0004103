//! conversion-attribution: joins postbacks to their clicks and publishes conversions.
//!
//! Clicks and past conversions are read in full into memory at start, then followed;
//! postbacks are consumed in a group and their offsets stored only after the conversion
//! (or the postback result) is acknowledged by the broker. A postback whose click has not
//! arrived yet is held and retried until the click comes or the hold timeout passes.

mod attribute;
mod state;

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
    /// Consumer group of the postback consumer.
    pub group_id: String,
    /// How long a postback waits for its click before it is reported as not found.
    pub hold_timeout_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::on("127.0.0.1:9101"),
            kafka: KafkaSettings::default(),
            telemetry: TelemetrySettings::default(),
            group_id: "traffsure-attribution".into(),
            hold_timeout_secs: 120,
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
    let flows_ready = health.register("flows");
    let (flows_loaded_tx, flows_loaded) = tokio::sync::oneshot::channel();
    let registry = traffsure_kafka::follow_flows(&settings.kafka, &topics.flows, move || {
        flows_ready.set_ready(true);
        let _ = flows_loaded_tx.send(());
    })
    .await
    .context("follow flows topic")?;
    let state_ready = health.register("state");

    let state = Arc::new(state::State::default());
    let clicks_loaded =
        state::spawn_click_follower(&settings.kafka, &topics.clicks, state.clone()).await?;
    state::restore_conversions(&settings.kafka, &topics.conversions, &state).await?;
    let _ = flows_loaded.await;
    let _ = clicks_loaded.await;
    state_ready.set_ready(true);
    tracing::info!(clicks = state.click_count(), "attribution state loaded");

    let processor = state::Processor::new(&settings, topics, registry, state)?;
    tokio::select! {
        result = processor.run() => result?,
        _ = traffsure_telemetry::shutdown_signal() => {}
    }
    ops_handle.stop(true).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}

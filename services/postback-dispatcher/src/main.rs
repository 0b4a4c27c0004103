//! postback-dispatcher: sends the outbound postbacks of each conversion to traffic
//! sources and affiliates, and keeps trying until they arrive or are declared dead.
//!
//! Conversions are consumed in a group; every delivery is recorded on a compacted topic
//! before the conversion's offset is stored, every attempt goes to `outbound-log`, and
//! `POST /replay` on the HTTP port schedules dead (or any) deliveries again.

mod attempt;
mod breaker;
mod clicks;
mod consume;
mod converted;
mod deliveries;
mod dispatcher;
mod guard;
mod records;
mod render;
mod replay;

use std::time::Duration;

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use serde::Deserialize;
use traffsure_config::{
    ClickHouseSettings, CurrencySettings, HttpSettings, KafkaSettings, TelemetrySettings,
};
use traffsure_kafka::Topics;
use traffsure_telemetry::Health;

use crate::breaker::Backoff;
use crate::dispatcher::Dispatcher;

#[derive(Debug, Deserialize)]
// Unknown top-level sections are ignored: one environment may configure several services.
#[serde(default)]
pub struct Settings {
    pub http: HttpSettings,
    pub kafka: KafkaSettings,
    pub telemetry: TelemetrySettings,
    /// Consumer group of the conversions consumer.
    pub group_id: String,
    pub outbound: OutboundSettings,
    /// Where exchange rates are read for `{revenue_converted}`.
    pub clickhouse: ClickHouseSettings,
    /// The reporting currency of `{revenue_converted}`.
    pub currency: CurrencySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::on("127.0.0.1:9103"),
            kafka: KafkaSettings::default(),
            telemetry: TelemetrySettings::default(),
            group_id: "traffsure-dispatcher".into(),
            outbound: OutboundSettings::default(),
            clickhouse: ClickHouseSettings::default(),
            currency: CurrencySettings::default(),
        }
    }
}

/// How outbound postbacks are sent (`TRAFFSURE__OUTBOUND__…`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundSettings {
    /// Send to private, loopback and link-local addresses (off: such targets are refused).
    pub allow_private_targets: bool,
    pub connect_timeout_ms: u64,
    /// The whole request, answer included.
    pub request_timeout_ms: u64,
    /// Attempts before a delivery is dead (counted again from a manual replay).
    pub max_attempts: u32,
    /// Waits between attempts, comma-separated milliseconds (e.g. `60000,600000,3600000`;
    /// the last repeats); empty: doubling from `retry_base_ms` up to `retry_max_ms`.
    pub retry_schedule_ms: String,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Each wait is moved by a random share up to this (0.2 = ±20 %).
    pub retry_jitter: f64,
    /// Requests in flight at once, over all hosts.
    pub max_in_flight: usize,
    /// Requests in flight at once to one host (host:port).
    pub per_host_in_flight: usize,
    /// Consecutive failures that open a host's circuit.
    pub breaker_failures: u32,
    /// How long an open circuit holds deliveries before one probe goes.
    pub breaker_open_ms: u64,
    /// Bytes of each answer kept in the outbound log.
    pub response_snippet_bytes: usize,
    /// How long a conversion of a flow not loaded yet waits for the flow.
    pub flow_wait_ms: u64,
}

impl Default for OutboundSettings {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            connect_timeout_ms: 3_000,
            request_timeout_ms: 10_000,
            // 10 s doubling up to 4 h: the 12th attempt comes about 20 h after the first.
            max_attempts: 12,
            retry_schedule_ms: String::new(),
            retry_base_ms: 10_000,
            retry_max_ms: 4 * 3_600_000,
            retry_jitter: 0.2,
            max_in_flight: 1024,
            per_host_in_flight: 64,
            breaker_failures: 5,
            breaker_open_ms: 30_000,
            response_snippet_bytes: 512,
            flow_wait_ms: 10_000,
        }
    }
}

impl OutboundSettings {
    pub fn backoff(&self) -> anyhow::Result<Backoff> {
        let schedule = self
            .retry_schedule_ms
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<u64>().map(Duration::from_millis).map_err(|_| {
                    anyhow::anyhow!(
                        "configuration error: outbound.retry_schedule_ms: {s:?} is not a number of milliseconds"
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if !(0.0..=1.0).contains(&self.retry_jitter) {
            anyhow::bail!("configuration error: outbound.retry_jitter must be between 0 and 1");
        }
        if self.max_attempts == 0 {
            anyhow::bail!("configuration error: outbound.max_attempts must be at least 1");
        }
        Ok(Backoff {
            schedule,
            base: Duration::from_millis(self.retry_base_ms),
            max: Duration::from_millis(self.retry_max_ms.max(self.retry_base_ms)),
            jitter: self.retry_jitter,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = traffsure_config::load("postback-dispatcher")?;
    settings.outbound.backoff()?;
    let _telemetry = traffsure_telemetry::init("postback-dispatcher", &settings.telemetry)?;
    let health = Health::new();
    let topics = Topics::new(&settings.kafka.topic_prefix);
    traffsure_kafka::ensure_topics(&settings.kafka, &topics)
        .await
        .context("create topics")?;
    traffsure_clickhouse::check_access(&settings.clickhouse).await?;
    let deliveries_ready = health.register("deliveries");
    let registry = traffsure_kafka::follow_flows(&settings.kafka, &topics.flows, &health)
        .await
        .context("follow flows topic")?;

    let dispatcher = Dispatcher::new(&settings, topics, registry.clone())?;
    let server = {
        let dispatcher = web::Data::from(dispatcher.clone());
        let health = health.clone();
        HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(
                    traffsure_telemetry::http_metrics,
                ))
                .app_data(dispatcher.clone())
                .app_data(web::PayloadConfig::new(64 * 1024))
                .configure(traffsure_telemetry::ops_routes(health.clone()))
                .configure(replay::routes)
        })
        .workers(settings.http.workers.clamp(1, 2))
        .disable_signals()
        .bind(&settings.http.bind)
        .with_context(|| format!("bind {}", settings.http.bind))?
        .run()
    };
    let server_handle = server.handle();
    tokio::spawn(server);

    let unfinished = dispatcher
        .restore()
        .await
        .context("restore delivery records")?;
    tracing::info!(unfinished, "delivery records restored");
    // Conversions wait for the flows: without its flow a conversion would fire nothing.
    registry.loaded().await;
    deliveries_ready.set_ready(true);

    tokio::spawn(dispatcher.clone().schedule());
    // A producer that failed for good writes no delivery record: stop, so that the
    // restart resumes from the committed positions with a new one.
    let fatal = traffsure_kafka::until_producer_fails(dispatcher.producer.clone());
    let result = tokio::select! {
        consumed = dispatcher.clone().consume() => consumed,
        reason = fatal => Err(anyhow::anyhow!(reason)),
    };
    server_handle.stop(true).await;
    result
}

//! postback-ingest: the S2S postback edge. Verifies each postback, publishes accepted
//! ones to `postbacks`, logs every request to `postback-log`, and answers 200 only once
//! the broker has acknowledged.

mod params;
mod postback;

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use serde::Deserialize;
use traffsure_config::{ClickHashSettings, HttpSettings, KafkaSettings, TelemetrySettings};
use traffsure_core::ClickHashKeys;
use traffsure_kafka::Topics;
use traffsure_telemetry::Health;

#[derive(Debug, Deserialize)]
// Unknown top-level sections are ignored: one environment may configure several services.
#[serde(default)]
struct Settings {
    http: HttpSettings,
    kafka: KafkaSettings,
    telemetry: TelemetrySettings,
    click_hash: ClickHashSettings,
    /// Largest accepted request body in bytes (413 above).
    max_body_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::on("127.0.0.1:8081"),
            kafka: KafkaSettings::default(),
            telemetry: TelemetrySettings::default(),
            click_hash: ClickHashSettings::default(),
            max_body_bytes: 64 * 1024,
        }
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = traffsure_config::load("postback-ingest")?;
    let _telemetry = traffsure_telemetry::init("postback-ingest", &settings.telemetry)?;
    let keys = ClickHashKeys::parse(&settings.click_hash.keys, settings.click_hash.active_key)
        .context("click_hash.keys")?;
    let topics = Topics::new(&settings.kafka.topic_prefix);
    traffsure_kafka::ensure_topics(&settings.kafka, &topics)
        .await
        .context("create topics")?;
    let producer = traffsure_kafka::producer(&settings.kafka)?;

    let health = Health::new();
    let flows_ready = health.register("flows");
    let registry = traffsure_kafka::follow_flows(&settings.kafka, &topics.flows, move || {
        flows_ready.set_ready(true)
    })
    .await
    .context("follow flows topic")?;

    let state = web::Data::new(postback::Edge {
        registry,
        keys,
        producer: producer.clone(),
        topics,
        max_body_bytes: settings.max_body_bytes,
    });
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(traffsure_telemetry::ops_routes(health.clone()))
            .service(
                web::resource(["/postback", "/pb", "/pb/"])
                    .route(web::get().to(postback::receive))
                    .route(web::post().to(postback::receive)),
            )
    })
    .shutdown_timeout(10)
    .bind(&settings.http.bind)
    .with_context(|| format!("bind {}", settings.http.bind))?;
    if settings.http.workers > 0 {
        server = server.workers(settings.http.workers);
    }
    tracing::info!(bind = %settings.http.bind, "postback-ingest listening");
    server.run().await?;
    use rdkafka::producer::Producer as _;
    let _ = producer.flush(std::time::Duration::from_secs(10));
    Ok(())
}

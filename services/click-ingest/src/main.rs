//! click-ingest: the tracking-link edge. Answers `GET /c/{flow}` with a redirect to the
//! flow's destination (macros filled in) and publishes a click event to Kafka without
//! waiting for the broker.

mod click;
mod geo;

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
    geoip: GeoSettings,
    /// Where an unknown, paused or archived flow's visitors go; empty answers 404.
    unknown_flow_url: String,
    /// Name of the first-party visitor cookie.
    visitor_cookie: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct GeoSettings {
    /// MaxMind-format country database (MMDB); empty disables GeoIP.
    database: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::on("127.0.0.1:8080"),
            kafka: KafkaSettings::default(),
            telemetry: TelemetrySettings::default(),
            click_hash: ClickHashSettings::default(),
            geoip: GeoSettings::default(),
            unknown_flow_url: String::new(),
            visitor_cookie: "ts_vid".into(),
        }
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = traffsure_config::load("click-ingest")?;
    let _telemetry = traffsure_telemetry::init("click-ingest", &settings.telemetry)?;
    let keys = ClickHashKeys::parse(&settings.click_hash.keys, settings.click_hash.active_key)
        .context("click_hash.keys")?;
    if !settings.unknown_flow_url.is_empty() {
        traffsure_core::flow::validate_url_template(
            "unknown_flow_url",
            &settings.unknown_flow_url,
            &[],
        )
        .context("unknown_flow_url")?;
    }
    let geo = geo::GeoIp::open(&settings.geoip.database).context("geoip.database")?;

    let topics = Topics::new(&settings.kafka.topic_prefix);
    traffsure_kafka::ensure_topics(&settings.kafka, &topics)
        .await
        .context("create topics")?;
    let publisher = click::Publisher::new(&settings.kafka, topics.clicks.clone())?;

    let health = Health::new();
    let flows_ready = health.register("flows");
    let registry = traffsure_kafka::follow_flows(&settings.kafka, &topics.flows, move || {
        flows_ready.set_ready(true)
    })
    .await
    .context("follow flows topic")?;

    let state = web::Data::new(click::Edge {
        registry,
        keys,
        geo,
        publisher: publisher.clone(),
        unknown_flow_url: settings.unknown_flow_url.clone(),
        visitor_cookie: settings.visitor_cookie.clone(),
    });
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(traffsure_telemetry::ops_routes(health.clone()))
            .route("/c/{flow}", web::get().to(click::track))
    })
    .shutdown_timeout(10)
    .bind(&settings.http.bind)
    .with_context(|| format!("bind {}", settings.http.bind))?;
    if settings.http.workers > 0 {
        server = server.workers(settings.http.workers);
    }
    tracing::info!(bind = %settings.http.bind, "click-ingest listening");
    server.run().await?;
    // The server has drained its requests: hand every queued click to the broker.
    publisher.flush();
    Ok(())
}

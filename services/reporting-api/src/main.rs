//! reporting-api: the JSON API under `/api/v1`, flow management, and the admin panel.
//! Reads aggregates from ClickHouse; writes flows and objects to the compacted `flows`
//! and `objects` topics and reads its own writes from the in-memory registries. Every
//! route but health, login and the OpenAPI document needs an admin session or an API key (`auth`).

mod api;
mod audit;
mod auth;
mod currency;
mod error;
mod filters;
mod login_limit;
mod object_names;
mod openapi;
mod panel;
mod routes;
mod session;
mod sql;
mod state;
mod users;

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use serde::Deserialize;
use traffsure_config::{
    ClickHouseSettings, ClientIpSettings, CurrencySettings, HttpSettings, KafkaSettings,
    TelemetrySettings,
};
use traffsure_core::client_ip::ClientIpResolver;
use traffsure_kafka::retry::{self, Backoff};
use traffsure_kafka::Topics;
use traffsure_telemetry::Health;

#[derive(Debug, Deserialize)]
// Unknown top-level sections are ignored: one environment may configure several services.
#[serde(default)]
struct Settings {
    http: HttpSettings,
    kafka: KafkaSettings,
    clickhouse: ClickHouseSettings,
    telemetry: TelemetrySettings,
    /// Public base URL of click-ingest, for the tracking links the API shows.
    tracking_base_url: String,
    /// Public base URL of postback-ingest, for the postback URLs the API shows.
    postback_base_url: String,
    /// The first admin (username and password or argon2 hash).
    admin: auth::AdminSettings,
    /// API keys, comma-separated (16 characters or more each).
    api_keys: String,
    /// How long an admin session lasts without logging in again.
    session_hours: u64,
    /// The key that signs session cookies.
    session: session::SessionSettings,
    /// Limits on failed logins.
    login: login_limit::LoginSettings,
    /// Who the client is behind a proxy, for the per-address login limit.
    client_ip: ClientIpSettings,
    /// Base URL of the postback dispatcher's HTTP port (manual replays); empty = off.
    dispatcher_url: String,
    /// The reporting currency and where exchange rates are fetched from.
    currency: CurrencySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::on("127.0.0.1:8082"),
            kafka: KafkaSettings::default(),
            clickhouse: ClickHouseSettings::default(),
            telemetry: TelemetrySettings::default(),
            tracking_base_url: "http://127.0.0.1:8080".into(),
            postback_base_url: "http://127.0.0.1:8081".into(),
            admin: auth::AdminSettings::default(),
            api_keys: String::new(),
            session_hours: 12,
            session: session::SessionSettings::default(),
            login: login_limit::LoginSettings::default(),
            client_ip: ClientIpSettings::default(),
            dispatcher_url: String::new(),
            currency: CurrencySettings::default(),
        }
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = traffsure_config::load("reporting-api")?;
    let _telemetry = traffsure_telemetry::init("reporting-api", &settings.telemetry)?;
    let clickhouse = traffsure_clickhouse::reader(&settings.clickhouse);
    let sessions = session::Sessions::new(
        &settings.session,
        std::time::Duration::from_secs(settings.session_hours.max(1) * 3600),
        clickhouse.clone(),
    )?;
    let client_ip = ClientIpResolver::new(
        &settings.client_ip.header,
        &settings.client_ip.trusted_proxies,
    )
    .context("client_ip settings")?;
    let auth = web::Data::new(
        auth::Auth::new(
            &settings.admin,
            &settings.api_keys,
            sessions,
            login_limit::LoginLimiter::new(settings.login.clone()),
            client_ip,
            users::UserStore::new(clickhouse.clone()),
        )
        .context("admin and API key settings")?,
    );
    let reporting_currency = settings.currency.reporting_currency()?;
    traffsure_clickhouse::check_access(&settings.clickhouse).await?;
    migrate(&settings.clickhouse).await;
    let topics = Topics::new(&settings.kafka.topic_prefix);
    traffsure_kafka::ensure_topics(&settings.kafka, &topics)
        .await
        .context("create topics")?;

    let health = Health::new();
    let clickhouse_ready = health.register("clickhouse");
    let registry = traffsure_kafka::follow_flows(&settings.kafka, &topics.flows, &health)
        .await
        .context("follow flows topic")?;
    let objects = traffsure_kafka::follow_objects(&settings.kafka, &topics.objects, &health)
        .await
        .context("follow objects topic")?;
    {
        let clickhouse = clickhouse.clone();
        tokio::spawn(async move {
            loop {
                clickhouse_ready.set_ready(traffsure_clickhouse::ping(&clickhouse).await);
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        });
    }

    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .context("http client")?;
    let rates_url = settings.currency.rates_url.trim();
    if !rates_url.is_empty() {
        tokio::spawn(api::exchange_rates::fetch_forever(
            clickhouse.clone(),
            http.clone(),
            rates_url.to_string(),
            std::time::Duration::from_secs(settings.currency.fetch_minutes.max(1) * 60),
        ));
    }
    let producer = traffsure_kafka::producer(&settings.kafka)?;
    traffsure_kafka::metrics::spawn_future_producer_queue_reporter(
        producer.clone(),
        "reporting-api".into(),
        std::time::Duration::from_secs(1),
    );
    let state = web::Data::new(state::AppState {
        registry,
        objects,
        writes: tokio::sync::Mutex::new(()),
        clickhouse,
        producer: producer.clone(),
        topics,
        tracking_base_url: settings.tracking_base_url.trim_end_matches('/').to_string(),
        postback_base_url: settings.postback_base_url.trim_end_matches('/').to_string(),
        dispatcher_url: Some(settings.dispatcher_url.trim().trim_end_matches('/'))
            .filter(|u| !u.is_empty())
            .map(String::from),
        http,
        reporting_currency,
    });
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(auth::require_auth))
            .wrap(actix_web::middleware::from_fn(error::api_error_bodies))
            .wrap(actix_web::middleware::from_fn(
                traffsure_telemetry::http_metrics,
            ))
            .app_data(state.clone())
            .app_data(auth.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(256 * 1024)
                    .error_handler(error::json_error),
            )
            .app_data(web::PathConfig::default().error_handler(error::path_error))
            .app_data(web::QueryConfig::default().error_handler(error::query_error))
            .configure(traffsure_telemetry::ops_routes(health.clone()))
            .configure(routes::routes)
    })
    .shutdown_timeout(10)
    .bind(&settings.http.bind)
    .with_context(|| format!("bind {}", settings.http.bind))?;
    if settings.http.workers > 0 {
        server = server.workers(settings.http.workers);
    }
    tracing::info!(bind = %settings.http.bind, "reporting-api listening");
    let server = server.run();
    // A producer that failed for good takes no flow or object change: stop, so that
    // the restart takes them with a new one.
    let fatal =
        traffsure_telemetry::stop_when(&server, traffsure_kafka::until_producer_fails(producer));
    server.await?;
    match fatal.get() {
        Some(reason) => anyhow::bail!("{reason}"),
        None => Ok(()),
    }
}

/// Applies the schema migrations (the sink does the same; both are idempotent), retrying
/// while ClickHouse starts or another service migrates at the same moment.
async fn migrate(settings: &ClickHouseSettings) {
    retry::forever("clickhouse migrations", &Backoff::default(), || {
        traffsure_clickhouse::migrate(settings)
    })
    .await
}

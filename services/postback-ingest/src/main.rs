//! postback-ingest: the S2S postback edge. Verifies each postback, publishes accepted
//! ones to `postbacks`, logs every request to `postback-log`, and answers 200 only once
//! the broker has acknowledged.

mod answer;
mod params;
mod postback;
mod security;

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use serde::Deserialize;
use traffsure_config::{
    ClickHashSettings, ClientIpSettings, HttpSettings, KafkaSettings, TelemetrySettings,
};
use traffsure_core::client_ip::ClientIpResolver;
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
    /// Clicks older than this many days are answered 404 (`click_not_found`).
    click_retention_days: u32,
    /// Who the client is behind a proxy (`TRAFFSURE__CLIENT_IP__*`, as for click-ingest).
    client_ip: ClientIpSettings,
    /// Name of the visitor cookie click-ingest sets, read by the pixel and iframe.
    visitor_cookie: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::on("127.0.0.1:8081"),
            kafka: KafkaSettings::default(),
            telemetry: TelemetrySettings::default(),
            click_hash: ClickHashSettings::default(),
            max_body_bytes: 64 * 1024,
            click_retention_days: 365,
            client_ip: ClientIpSettings::default(),
            visitor_cookie: "ts_vid".into(),
        }
    }
}

/// The postback and browser-conversion routes; what none of the service's routes takes
/// (an unknown path, a method a path does not take) is answered with the error body, as
/// every error of this service is (docs/api.md#errors).
fn routes(cfg: &mut web::ServiceConfig) {
    use traffsure_telemetry::method_not_allowed;
    cfg.default_service(web::to(traffsure_telemetry::unknown_route))
        .service(
            web::resource(["/postback", "/pb", "/pb/"])
                .route(web::get().to(answer::receive))
                .route(web::post().to(answer::receive))
                .default_service(method_not_allowed("GET, POST")),
        )
        .service(
            web::resource(["/pixel.gif", "/pixel"])
                .route(web::get().to(answer::pixel))
                .default_service(method_not_allowed("GET")),
        )
        .route("/iframe", web::get().to(answer::iframe))
        .route("/ts.js", web::get().to(answer::tag));
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = traffsure_config::load("postback-ingest")?;
    let _telemetry = traffsure_telemetry::init("postback-ingest", &settings.telemetry)?;
    let keys = ClickHashKeys::parse(&settings.click_hash.keys, settings.click_hash.active_key)
        .context("click_hash.keys")?;
    let client_ip = ClientIpResolver::new(
        &settings.client_ip.header,
        &settings.client_ip.trusted_proxies,
    )
    .context("client_ip")?;
    let client_ip_header =
        actix_web::http::header::HeaderName::from_bytes(client_ip.header().as_bytes())
            .context("client_ip.header")?;
    if settings.click_retention_days == 0 {
        anyhow::bail!("click_retention_days must be at least 1");
    }
    let topics = Topics::new(&settings.kafka.topic_prefix);
    traffsure_kafka::ensure_topics(&settings.kafka, &topics)
        .await
        .context("create topics")?;
    // Every answer waits for its acknowledgement, so the batching delay is paid by each
    // postback: 1 ms instead of the shared 5, batches still fill while requests are in flight.
    let producer: rdkafka::producer::FutureProducer =
        traffsure_kafka::producer_config(&settings.kafka)
            .set("linger.ms", "1")
            .create()
            .context("kafka producer")?;
    traffsure_kafka::metrics::spawn_future_producer_queue_reporter(
        producer.clone(),
        "postback-ingest".into(),
        std::time::Duration::from_secs(1),
    );

    let health = Health::new();
    let registry = traffsure_kafka::follow_flows(&settings.kafka, &topics.flows, &health)
        .await
        .context("follow flows topic")?;

    let state = web::Data::new(postback::Edge {
        registry,
        keys,
        producer: producer.clone(),
        topics,
        max_body_bytes: settings.max_body_bytes,
        click_retention_ms: i64::from(settings.click_retention_days) * 86_400_000,
        client_ip,
        client_ip_header,
        visitor_cookie: settings.visitor_cookie,
    });
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(
                traffsure_telemetry::http_metrics,
            ))
            .app_data(state.clone())
            .configure(traffsure_telemetry::ops_routes(health.clone()))
            .configure(routes)
    })
    .shutdown_timeout(10)
    .bind(&settings.http.bind)
    .with_context(|| format!("bind {}", settings.http.bind))?;
    if settings.http.workers > 0 {
        server = server.workers(settings.http.workers);
    }
    tracing::info!(bind = %settings.http.bind, "postback-ingest listening");
    let server = server.run();
    // A producer that failed for good makes every postback "not durable" (503): stop,
    // so that the restart answers with a new one.
    let fatal = traffsure_telemetry::stop_when(
        &server,
        traffsure_kafka::until_producer_fails(producer.clone()),
    );
    server.await?;
    use rdkafka::producer::Producer as _;
    let _ = producer.flush(std::time::Duration::from_secs(10));
    match fatal.get() {
        Some(reason) => anyhow::bail!("{reason}"),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use actix_web::http::header;
    use actix_web::{test, App};
    use traffsure_core::ErrorBody;

    /// What no route takes answers the shared error body, not an empty 404 or 405.
    #[actix_web::test]
    async fn unknown_paths_and_methods_answer_the_error_body() {
        let app = test::init_service(App::new().configure(super::routes)).await;
        for (request, status, code, allow) in [
            (
                test::TestRequest::put().uri("/postback"),
                405,
                "method_not_allowed",
                Some("GET, POST"),
            ),
            (
                test::TestRequest::delete().uri("/pb/"),
                405,
                "method_not_allowed",
                Some("GET, POST"),
            ),
            (
                test::TestRequest::post().uri("/pixel.gif"),
                405,
                "method_not_allowed",
                Some("GET"),
            ),
            (
                test::TestRequest::post().uri("/iframe"),
                405,
                "method_not_allowed",
                None,
            ),
            (
                test::TestRequest::get().uri("/nosuch"),
                404,
                "not_found",
                None,
            ),
            (test::TestRequest::get().uri("/"), 404, "not_found", None),
        ] {
            let request = request.to_request();
            let (method, path) = (request.method().to_string(), request.path().to_string());
            let what = format!("{method} {path}");
            let response = test::call_service(&app, request).await;
            assert_eq!(response.status().as_u16(), status, "{what}");
            assert_eq!(
                response
                    .headers()
                    .get(header::ALLOW)
                    .map(|v| v.to_str().unwrap()),
                allow,
                "{what}"
            );
            let body: ErrorBody = test::read_body_json(response).await;
            assert_eq!((body.status, body.code.as_str()), (status, code), "{what}");
            assert!(
                body.message.contains(&method) && body.message.contains(&path),
                "{what}: {}",
                body.message
            );
        }
    }
}

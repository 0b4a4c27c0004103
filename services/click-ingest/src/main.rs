//! click-ingest: the tracking-link edge. Answers `GET /c/{flow}` with a redirect to the
//! flow's destination, lander or offer (rules, rotation and bot routing applied, macros
//! filled in), lander click-throughs (`GET /lp/click`) with a redirect to an offer, and
//! `GET /v/{flow}` (a direct visit, no redirect) with the click hash, `GET /i/{flow}` (an
//! impression pixel) with a GIF or the impression id, and publishes a
//! click event to Kafka without waiting for the broker. Each click event is
//! written to a local click log before the redirect is answered, so neither a broker
//! outage nor a crash of click-ingest loses one.

mod asn;
mod attributes;
mod caps;
mod click;
mod clicklog;
mod direct;
mod event;
mod geo;
mod hosting;
mod impression;
mod lander;
mod publisher;
mod rate;
mod recovery;
mod refresh;
mod signals;
mod user_agents;

use std::path::PathBuf;
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use serde::Deserialize;
use traffsure_config::{
    ClickHashSettings, ClientIpSettings, HttpSettings, KafkaSettings, TelemetrySettings,
};
use traffsure_core::cidr::CidrList;
use traffsure_core::client_ip::ClientIpResolver;
use traffsure_core::ClickHashKeys;
use traffsure_kafka::Topics;
use traffsure_telemetry::Health;

// Fewer and cheaper allocations per click than the system allocator (measured in
// BENCHMARKS.md); librdkafka keeps the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    client_ip: ClientIpSettings,
    bots: BotSettings,
    user_agents: UserAgentSettings,
    spill: SpillSettings,
    click_log: ClickLogSettings,
    producer: ProducerSettings,
    fraud: signals::FraudSettings,
}

/// How click events are batched for Kafka: bigger batches mean fewer produce requests,
/// fewer thread wake-ups and less broker CPU per click, for a delay that no visitor
/// waits for. Under load batches fill (`batch_bytes`) long before `linger_ms`, which then
/// matters for another reason: librdkafka's broker thread polls without sleeping while
/// the oldest queued click is older than `linger_ms` and the partition's produce request
/// is still in flight. With 100 ms a broker slowed by shared cores made that happen
/// often; 500 ms halved librdkafka's CPU per click, and 1 s did no better
/// (BENCHMARKS.md). The linger is also what a click waits at low traffic, and what a
/// hard kill of the process can lose.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ProducerSettings {
    /// `linger.ms`: how long a batch waits to fill up.
    linger_ms: u32,
    /// `batch.num.messages`: most click events in one batch.
    batch_num_messages: u32,
    /// `batch.size`: most bytes in one batch.
    batch_bytes: u32,
    /// `compression.type`: `none`, `lz4`, `snappy` or `gzip` (librdkafka is built without zstd).
    compression: String,
    /// Most clicks in one Kafka record (a `ClickBatch` of one partition's clicks, sent
    /// full or 20 ms after its first click); 1 sends each click as a record of its own.
    /// Kafka's per-record costs, paid once per batch, were about 10 % of click-ingest's
    /// CPU per redirect (BENCHMARKS.md).
    clicks_per_record: usize,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        Self {
            linger_ms: 500,
            batch_num_messages: 10_000,
            batch_bytes: 1_000_000,
            compression: "lz4".into(),
            clicks_per_record: 32,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct BotSettings {
    /// Comma-separated addresses or CIDR blocks whose clicks are bots.
    ips: String,
    /// Comma-separated user-agent fragments (case-insensitive) that mark bots, beyond the crawler list.
    user_agents: String,
    /// Whether a click without a user agent is a bot.
    empty_user_agent: bool,
}

/// The user-agent data files `deploy/local/install.sh` installs (docs/visitors.md).
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct UserAgentSettings {
    /// uap-core's regexes.yaml.
    regexes: String,
    /// crawler-user-agents' crawler-user-agents.json; empty: no crawler list.
    crawlers: String,
    /// How often the files' modification times are checked (a change reloads them).
    reload_check_secs: u64,
}

impl Default for UserAgentSettings {
    fn default() -> Self {
        Self {
            regexes: ".local/user-agents/regexes.yaml".into(),
            crawlers: ".local/user-agents/crawler-user-agents.json".into(),
            reload_check_secs: 10,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SpillSettings {
    /// The click log's directory under its earlier name; `click_log.path` wins.
    path: String,
    /// `queue.buffering.max.messages`: click events held in memory for Kafka before
    /// they wait in the click log.
    max_queued: u32,
}

impl Default for SpillSettings {
    fn default() -> Self {
        Self {
            path: String::new(),
            max_queued: 50_000,
        }
    }
}

/// The click log every click is written to before its redirect (docs/configuration.md).
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ClickLogSettings {
    /// Directory of the log's segments; empty = `spill.path`, else
    /// `.local/click-log/<topic prefix>clicks`.
    path: String,
    /// `never` (the page cache survives any crash of the process, not of the machine) or
    /// milliseconds between `fsync`s of the log.
    fsync: String,
    /// Bytes the log may hold; past them clicks are answered 503 instead of redirected.
    max_bytes: u64,
}

impl Default for ClickLogSettings {
    fn default() -> Self {
        Self {
            path: String::new(),
            fsync: "never".into(),
            max_bytes: 1 << 30,
        }
    }
}

fn cidr_list(key: &str, text: &str) -> anyhow::Result<CidrList> {
    let items: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    CidrList::parse(&items).with_context(|| key.to_string())
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
            client_ip: ClientIpSettings::default(),
            bots: BotSettings::default(),
            user_agents: UserAgentSettings::default(),
            spill: SpillSettings::default(),
            click_log: ClickLogSettings::default(),
            producer: ProducerSettings::default(),
            fraud: signals::FraudSettings::default(),
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
    let cookie_name_ok = !settings.visitor_cookie.is_empty()
        && settings
            .visitor_cookie
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !cookie_name_ok {
        anyhow::bail!(
            "visitor_cookie: {:?} is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)",
            settings.visitor_cookie
        );
    }
    let geo = geo::GeoIp::open(&settings.geoip.database).context("geoip.database")?;
    let signals = signals::Signals::open(&settings.fraud)?;
    let client_ip = click::ClientIp::new(
        ClientIpResolver::new(
            &settings.client_ip.header,
            &settings.client_ip.trusted_proxies,
        )
        .context("client_ip")?,
    )
    .context("client_ip.header")?;
    let bots = click::BotFilter {
        ips: cidr_list("bots.ips", &settings.bots.ips)?,
        user_agent_markers: traffsure_core::bots::markers_from_list(&settings.bots.user_agents),
        empty_user_agent: settings.bots.empty_user_agent,
    };
    let ua_files = user_agents::UaFiles {
        regexes: PathBuf::from(&settings.user_agents.regexes),
        crawlers: PathBuf::from(&settings.user_agents.crawlers),
    };
    let ua_data = user_agents::load(&ua_files).context("user_agents")?;
    if settings.user_agents.reload_check_secs > 0 {
        user_agents::watch(
            ua_data.clone(),
            ua_files,
            Duration::from_secs(settings.user_agents.reload_check_secs),
        )
        .context("user-agent data watch")?;
    }
    let log_dir = if !settings.click_log.path.is_empty() {
        PathBuf::from(&settings.click_log.path)
    } else if !settings.spill.path.is_empty() {
        PathBuf::from(&settings.spill.path)
    } else {
        PathBuf::from(format!(
            ".local/click-log/{}clicks",
            settings.kafka.topic_prefix
        ))
    };
    let fsync: clicklog::FsyncPolicy = settings
        .click_log
        .fsync
        .parse()
        .map_err(|e: String| anyhow::anyhow!("click_log.fsync: {e}"))?;

    let topics = Topics::new(&settings.kafka.topic_prefix);
    traffsure_kafka::ensure_topics(&settings.kafka, &topics)
        .await
        .context("create topics")?;
    let publisher = publisher::Publisher::start(
        &settings.kafka,
        topics.clicks.clone(),
        &publisher::LogOptions {
            dir: &log_dir,
            max_bytes: settings.click_log.max_bytes,
            fsync,
            gauges: true,
            per_record: settings.producer.clicks_per_record,
        },
        settings.spill.max_queued,
        &settings.producer,
    )
    .context("click event producer")?;
    // Impressions keep a log of their own inside the click log's directory, on the same
    // terms.
    let impression_dir = impression_log_dir(&log_dir);
    let impressions = publisher::Publisher::start(
        &settings.kafka,
        topics.impressions.clone(),
        &publisher::LogOptions {
            dir: &impression_dir,
            max_bytes: settings.click_log.max_bytes,
            fsync,
            gauges: false,
            per_record: 1,
        },
        settings.spill.max_queued,
        &settings.producer,
    )
    .context("impression event producer")?;
    traffsure_kafka::metrics::spawn_queue_reporter(
        publisher.producer(),
        "clicks".into(),
        Duration::from_secs(1),
    );

    let health = Health::new();
    let registry = traffsure_kafka::follow_flows(&settings.kafka, &topics.flows, &health)
        .await
        .context("follow flows topic")?;

    let cap_counter = traffsure_kafka::caps::SharedCounter::default();
    {
        // Caps count what every instance published, once the flows say what is capped.
        let (kafka, registry, counter) = (
            settings.kafka.clone(),
            registry.clone(),
            cap_counter.clone(),
        );
        let topics = topics.clone();
        tokio::spawn(async move {
            registry.loaded().await;
            for (topic, counted) in [
                (&topics.clicks, traffsure_kafka::caps::Counted::Clicks),
                (
                    &topics.conversions,
                    traffsure_kafka::caps::Counted::Conversions,
                ),
            ] {
                let followed = traffsure_kafka::caps::follow_counts(
                    &kafka,
                    topic,
                    counted,
                    registry.clone(),
                    counter.clone(),
                )
                .await;
                if let Err(error) = followed {
                    tracing::error!(topic, %error, "caps count not followed");
                }
            }
        });
    }
    let hop_keys = web::Data::new(keys.clone());
    let state = web::Data::new(click::Edge {
        registry,
        keys,
        signals,
        geo,
        publisher: publisher.clone(),
        impressions: impressions.clone(),
        unknown_flow_url: settings.unknown_flow_url.clone(),
        visitor_cookie: settings.visitor_cookie.clone(),
        client_ip,
        bots,
        user_agents: ua_data,
        trace_clicks: !settings.telemetry.otlp_endpoint.is_empty(),
        caps: cap_counter,
    });
    let mut server = HttpServer::new(move || {
        // Tracking links time themselves (route `/c`) and keep their counts in the
        // worker thread; this task (one per worker, started where the app is built)
        // hands them over even when traffic stops.
        actix_web::rt::spawn(async {
            let mut tick = actix_web::rt::time::interval(traffsure_telemetry::LOCAL_FLUSH);
            loop {
                tick.tick().await;
                traffsure_telemetry::flush_local_metrics();
            }
        });
        App::new()
            .app_data(state.clone())
            .app_data(hop_keys.clone())
            .configure(routes(health.clone()))
    })
    .shutdown_timeout(10)
    .bind(&settings.http.bind)
    .with_context(|| format!("bind {}", settings.http.bind))?;
    if settings.http.workers > 0 {
        server = server.workers(settings.http.workers);
    }
    tracing::info!(bind = %settings.http.bind, "click-ingest listening");
    let server = server.run();
    // A producer that failed for good takes no event: only a new one, at the next start,
    // can send what the logs hold. Meanwhile redirects go on, their clicks logged.
    let fatal = {
        let publishers = [publisher.clone(), impressions.clone()];
        traffsure_telemetry::stop_when(
            &server,
            traffsure_kafka::until_failed(move || {
                publishers.iter().find_map(publisher::Publisher::fatal)
            }),
        )
    };
    server.await?;
    // The server has drained its requests: hand every queued click to the broker, and
    // whatever it cannot take stays in the click log.
    publisher.shutdown(Duration::from_secs(10));
    impressions.shutdown(Duration::from_secs(10));
    match fatal.get() {
        Some(reason) => anyhow::bail!(
            "kafka producer failed fatally ({reason}); every click it did not deliver is in \
             the click log, and the next start sends it"
        ),
        None => Ok(()),
    }
}

/// Every route of the edge. Tracking links (`/c/…`) and the second hop (`/r/…`) answer
/// any path under them themselves (an unknown flow redirects) and time themselves; the
/// rest go through the metrics middleware, and what none of them takes (an unknown path,
/// a method a path does not take) is answered with the error body (docs/api.md#errors).
fn routes(health: Health) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.default_service(web::to(traffsure_telemetry::unknown_route))
            .service(web::scope("/c").default_service(web::to(click::track)))
            .service(web::scope("/r").default_service(web::to(refresh::second_hop)))
            .service(
                web::scope("")
                    .wrap(actix_web::middleware::from_fn(
                        traffsure_telemetry::http_metrics,
                    ))
                    .route("/lp/click", web::get().to(lander::click_through))
                    .route("/lp/click/{n}", web::get().to(lander::click_through))
                    .configure(direct::routes)
                    .configure(impression::routes)
                    .configure(traffsure_telemetry::ops_routes(health)),
            );
    }
}

/// The impression log's directory: `impressions/` inside the click log's, so it lives on
/// the same volume (the click log reads only its own segment files).
fn impression_log_dir(click_log: &std::path::Path) -> PathBuf {
    click_log.join("impressions")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use actix_web::{test, App};
    use traffsure_core::ErrorBody;
    use traffsure_telemetry::Health;

    /// What no route outside the tracking links takes answers the shared error body, not
    /// an empty 404.
    #[actix_web::test]
    async fn unknown_paths_and_methods_answer_the_error_body() {
        let app = test::init_service(App::new().configure(super::routes(Health::new()))).await;
        for (request, status, code) in [
            (test::TestRequest::get().uri("/nosuch"), 404, "not_found"),
            (test::TestRequest::get().uri("/"), 404, "not_found"),
            (
                test::TestRequest::post().uri("/lp/click"),
                405,
                "method_not_allowed",
            ),
            (
                test::TestRequest::put().uri("/lp/click/2"),
                405,
                "method_not_allowed",
            ),
            (
                test::TestRequest::post().uri("/healthz"),
                405,
                "method_not_allowed",
            ),
            (
                test::TestRequest::post().uri("/v/some-flow"),
                405,
                "method_not_allowed",
            ),
        ] {
            let request = request.to_request();
            let what = format!("{} {}", request.method(), request.path());
            let response = test::call_service(&app, request).await;
            assert_eq!(response.status().as_u16(), status, "{what}");
            let body: ErrorBody = test::read_body_json(response).await;
            assert_eq!((body.status, body.code.as_str()), (status, code), "{what}");
        }
    }
}

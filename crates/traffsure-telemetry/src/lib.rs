//! Logs, traces, metrics and health for every service.
//!
//! `init` sets up tracing (text or JSON) and, when an endpoint is configured, OTLP trace
//! export. `Health` gathers the readiness of a service's components; `ops_routes` mounts
//! `/healthz`, `/readyz` and `/metrics` on any actix-web app, and `serve_ops` runs them on
//! a port of their own for services without an HTTP edge. `unknown_route` and
//! `method_not_allowed` answer what no route takes with the shared error body.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use actix_web::{web, HttpResponse};
use opentelemetry::trace::TracerProvider as _;
use prometheus::{Encoder, TextEncoder};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};
use traffsure_config::TelemetrySettings;

pub use prometheus;

mod http;
pub use http::{flush_local_metrics, http_metrics, inc_local, record_request, LOCAL_FLUSH};
mod unknown_route;
pub use unknown_route::{method_not_allowed, unknown_route};

/// Keeps the trace exporter alive; flushes it when dropped.
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

static OTLP_ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether traces are exported: callers skip building spans and trace headers otherwise,
/// so a service without an OTLP endpoint pays nothing for tracing.
pub fn otlp_enabled() -> bool {
    OTLP_ENABLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Installs the global tracing subscriber for `service`.
pub fn init(service: &str, settings: &TelemetrySettings) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_level))
        .map_err(|e| anyhow::anyhow!("telemetry.log_level {:?}: {e}", settings.log_level))?;
    // Checked here, so a bad format fails before anything is installed.
    fmt_layer::<tracing_subscriber::Registry>(&settings.log_format)?;
    let mut provider = None;
    let otel = if settings.otlp_endpoint.is_empty() {
        None
    } else {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!(
                "{}/v1/traces",
                settings.otlp_endpoint.trim_end_matches('/')
            ))
            .build()?;
        let sdk = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service.to_string())
                    .build(),
            )
            .build();
        let tracer = sdk.tracer(service.to_string());
        opentelemetry::global::set_tracer_provider(sdk.clone());
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        provider = Some(sdk);
        OTLP_ENABLED.store(true, std::sync::atomic::Ordering::Relaxed);
        // Spans of the project's own code are exported, and library spans (the ClickHouse
        // client's per query, say) only inside one of them, never as traces of their own.
        let own = service.replace('-', "_");
        let exported = tracing_subscriber::filter::dynamic_filter_fn(move |meta, cx| {
            *meta.level() <= tracing::Level::INFO
                && (!meta.is_span()
                    || meta.target().starts_with("traffsure_")
                    || meta.target().starts_with(own.as_str())
                    || cx.lookup_current().is_some())
        });
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(exported),
        )
    };
    match otel {
        None => tracing_subscriber::registry()
            .with(filter)
            .with(fmt_layer(&settings.log_format)?)
            .try_init()?,
        // The log level filters the logs only: spans are exported whatever it is.
        Some(otel) => tracing_subscriber::registry()
            .with(fmt_layer(&settings.log_format)?.with_filter(filter))
            .with(otel)
            .try_init()?,
    }
    Ok(TelemetryGuard { provider })
}

/// The log layer: text or JSON lines.
fn fmt_layer<S>(format: &str) -> anyhow::Result<Box<dyn Layer<S> + Send + Sync>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    Ok(match format {
        "json" => tracing_subscriber::fmt::layer()
            .json()
            .with_target(true)
            .boxed(),
        // Colours only on a terminal: log files and CI output stay plain text.
        "text" => tracing_subscriber::fmt::layer()
            .with_target(true)
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
        other => anyhow::bail!("telemetry.log_format must be text or json, not {other:?}"),
    })
}

/// Readiness of a service's components: the service is ready when every registered
/// component has reported ready.
#[derive(Clone, Default)]
pub struct Health {
    components: Arc<Mutex<BTreeMap<String, bool>>>,
}

/// One component's handle for reporting its readiness.
#[derive(Clone)]
pub struct HealthHandle {
    name: String,
    health: Health,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a component, not ready until it says so.
    pub fn register(&self, name: &str) -> HealthHandle {
        self.lock().insert(name.to_string(), false);
        HealthHandle {
            name: name.to_string(),
            health: self.clone(),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.lock().values().all(|ready| *ready)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, bool>> {
        self.components
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn snapshot(&self) -> BTreeMap<String, bool> {
        self.lock().clone()
    }
}

impl HealthHandle {
    pub fn set_ready(&self, ready: bool) {
        self.health.lock().insert(self.name.clone(), ready);
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "alive"}))
}

async fn readyz(health: web::Data<Health>) -> HttpResponse {
    let components = health.snapshot();
    let ready = components.values().all(|r| *r);
    let body = serde_json::json!({"ready": ready, "components": components});
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics() -> HttpResponse {
    let mut buffer = Vec::new();
    let families = prometheus::gather();
    if let Err(e) = TextEncoder::new().encode(&families, &mut buffer) {
        return HttpResponse::InternalServerError().body(format!("encode metrics: {e}"));
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(buffer)
}

/// Mounts `/healthz`, `/readyz` and `/metrics`.
pub fn ops_routes(health: Health) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(health))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics));
    }
}

/// Serves the ops routes alone on `bind`, for services without an HTTP edge.
pub fn serve_ops(bind: &str, health: Health) -> anyhow::Result<actix_web::dev::Server> {
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new().configure(ops_routes(health.clone()))
    })
    .workers(1)
    .disable_signals()
    .bind(bind)
    .map_err(|e| anyhow::anyhow!("bind ops port {bind}: {e}"))?
    .run();
    Ok(server)
}

/// Registers a counter vector in the default registry.
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::IntCounterVec {
    let counter = prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    // A second registration (tests starting a service twice) keeps the first one.
    let _ = prometheus::register(Box::new(counter.clone()));
    counter
}

/// Registers a histogram vector (seconds) in the default registry.
pub fn histogram_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::HistogramVec {
    histogram_vec_with_buckets(
        name,
        help,
        labels,
        vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ],
    )
}

/// Registers a histogram vector with its own bucket bounds in the default registry.
pub fn histogram_vec_with_buckets(
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> prometheus::HistogramVec {
    let histogram = prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new(name, help).buckets(buckets),
        labels,
    )
    .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    let _ = prometheus::register(Box::new(histogram.clone()));
    histogram
}

/// Registers a gauge vector in the default registry.
pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::IntGaugeVec {
    let gauge = prometheus::IntGaugeVec::new(prometheus::Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    let _ = prometheus::register(Box::new(gauge.clone()));
    gauge
}

/// Stops `server`, draining its requests, once `failed` resolves with why the service
/// cannot go on (a Kafka producer that failed for good, say); the reason is logged and
/// kept, for the service to exit with it and its supervisor to start it again.
pub fn stop_when(
    server: &actix_web::dev::Server,
    failed: impl std::future::Future<Output = String> + Send + 'static,
) -> Arc<std::sync::OnceLock<String>> {
    let reason = Arc::new(std::sync::OnceLock::new());
    let (handle, noted) = (server.handle(), reason.clone());
    tokio::spawn(async move {
        let why = failed.await;
        tracing::error!(reason = why, "stopping: the service cannot go on");
        let _ = noted.set(why);
        handle.stop(true).await;
    });
    reason
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown requested");
}

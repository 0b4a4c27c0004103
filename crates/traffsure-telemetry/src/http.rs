//! Request metrics for every actix-web app: `traffsure_http_requests_total{route,status}`
//! and `traffsure_http_request_duration_seconds{route}`. `route` is the matched route
//! pattern (such as `/c/{flow}`), never the raw path, so label values stay few.

use std::sync::OnceLock;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

struct HttpMetrics {
    requests: prometheus::IntCounterVec,
    duration: prometheus::HistogramVec,
}

fn metrics() -> &'static HttpMetrics {
    static METRICS: OnceLock<HttpMetrics> = OnceLock::new();
    METRICS.get_or_init(|| HttpMetrics {
        requests: crate::counter_vec(
            "traffsure_http_requests_total",
            "HTTP requests by route pattern and status code",
            &["route", "status"],
        ),
        duration: crate::histogram_vec_with_buckets(
            "traffsure_http_request_duration_seconds",
            "HTTP request handling time by route pattern",
            &["route"],
            vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0,
            ],
        ),
    })
}

/// Middleware recording every request; mount with
/// `App::new().wrap(actix_web::middleware::from_fn(traffsure_telemetry::http_metrics))`.
pub async fn http_metrics(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let result = next.call(req).await;
    let elapsed = start.elapsed().as_secs_f64();
    let (route, status) = match &result {
        Ok(response) => {
            let status = response.status().as_u16();
            let request = response.request();
            let route = request
                .match_pattern()
                .or_else(|| default_service_route(request.path(), status));
            (route, status)
        }
        Err(error) => (None, error.as_response_error().status_code().as_u16()),
    };
    let route = route.unwrap_or_else(|| "unmatched".to_string());
    let m = metrics();
    m.requests
        .with_label_values(&[route.as_str(), status_text(status)])
        .inc();
    m.duration
        .with_label_values(&[route.as_str()])
        .observe(elapsed);
    result
}

/// A request answered by a scope's default service (such as the tracking edge's `/c/…`)
/// has no route pattern: it is labelled by its first path segment, `/c`, unless nothing
/// handled it (404), so unknown paths cannot add label values.
fn default_service_route(path: &str, status: u16) -> Option<String> {
    if status == 404 {
        return None;
    }
    let segment = path.trim_start_matches('/').split('/').next()?;
    (!segment.is_empty() && path.len() > segment.len() + 1).then(|| format!("/{segment}"))
}

/// The status code as text without allocating for the common ones.
fn status_text(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        204 => "204",
        302 => "302",
        303 => "303",
        307 => "307",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        413 => "413",
        414 => "414",
        422 => "422",
        429 => "429",
        500 => "500",
        503 => "503",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use actix_web::{test, web, App, HttpResponse};

    #[actix_web::test]
    async fn counts_by_route_pattern_and_status() {
        let app = test::init_service(
            App::new()
                .wrap(actix_web::middleware::from_fn(super::http_metrics))
                .route(
                    "/c/{flow}",
                    web::get().to(|| async { HttpResponse::Found().finish() }),
                )
                .service(
                    web::scope("/d")
                        .default_service(web::to(|| async { HttpResponse::Found().finish() })),
                ),
        )
        .await;
        let before = super::metrics()
            .requests
            .with_label_values(&["/c/{flow}", "302"])
            .get();
        for path in ["/c/a", "/c/b", "/nowhere", "/d/x", "/d/y"] {
            let _ = test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        }
        let m = super::metrics();
        assert_eq!(
            m.requests.with_label_values(&["/c/{flow}", "302"]).get() - before,
            2
        );
        assert!(m.requests.with_label_values(&["unmatched", "404"]).get() >= 1);
        assert_eq!(m.requests.with_label_values(&["/d", "302"]).get(), 2);
        assert!(
            m.duration
                .with_label_values(&["/c/{flow}"])
                .get_sample_count()
                >= 2
        );
    }
}

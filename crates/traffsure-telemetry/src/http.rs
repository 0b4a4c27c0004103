//! Request metrics for every actix-web app: `traffsure_http_requests_total{route,status}`
//! and `traffsure_http_request_duration_seconds{route}`. `route` is the matched route
//! pattern (such as `/c/{flow}`), never the raw path, so label values stay few.

use std::borrow::Cow;
use std::cell::RefCell;
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

/// The counter and histogram of one (route, status) pair: the shared ones
/// (`IntCounter`, `Histogram`), or thread-local shares of them for [`record_request`],
/// whose counts and observations stay in the thread and are added to the shared metrics
/// at most every [`LOCAL_FLUSH`], so a hot path touches no memory another core writes.
struct Handles<C, H> {
    route: Box<str>,
    status: u16,
    requests: C,
    duration: H,
}

type SharedHandles = Handles<prometheus::IntCounter, prometheus::Histogram>;
type LocalHandles = Handles<prometheus::local::LocalIntCounter, prometheus::local::LocalHistogram>;

/// The handles of (`route`, `status`) in `handles`, resolved on first use with `wrap`
/// applied to the shared counter and histogram: an app has a handful of routes, so a
/// short list beats hashing the labels on every request.
fn handles_for<'a, C, H>(
    handles: &'a mut Vec<Handles<C, H>>,
    route: &str,
    status: u16,
    wrap: impl FnOnce(prometheus::IntCounter, prometheus::Histogram) -> (C, H),
) -> &'a Handles<C, H> {
    let index = match handles
        .iter()
        .position(|h| h.status == status && &*h.route == route)
    {
        Some(index) => index,
        None => {
            let m = metrics();
            let (requests, duration) = wrap(
                m.requests.with_label_values(&[route, status_text(status)]),
                m.duration.with_label_values(&[route]),
            );
            handles.push(Handles {
                route: route.into(),
                status,
                requests,
                duration,
            });
            handles.len() - 1
        }
    };
    &handles[index]
}

thread_local! {
    /// Per worker thread, the handles already resolved.
    static HANDLES: RefCell<Vec<SharedHandles>> = const { RefCell::new(Vec::new()) };
}

/// How long [`record_request`] keeps counts in the thread before adding them up.
pub const LOCAL_FLUSH: std::time::Duration = std::time::Duration::from_millis(100);

thread_local! {
    static LOCAL: RefCell<(Vec<LocalHandles>, Option<Instant>)> = const { RefCell::new((Vec::new(), None)) };
    /// Thread-local shares of counters bumped through [`inc_local`], by the counter's address.
    static COUNTERS: RefCell<Vec<(usize, prometheus::local::LocalIntCounter)>> = const { RefCell::new(Vec::new()) };
}

/// Increments `counter` (a counter that lives for the whole process, such as one held in
/// a `static`) in this thread's share, handed over with the HTTP metrics: by
/// [`record_request`] at most every [`LOCAL_FLUSH`], and by [`flush_local_metrics`].
pub fn inc_local(counter: &'static prometheus::IntCounter) {
    let key = counter as *const prometheus::IntCounter as usize;
    COUNTERS.with_borrow_mut(|counters| match counters.iter().find(|(k, _)| *k == key) {
        Some((_, local)) => local.inc(),
        None => {
            let local = counter.local();
            local.inc();
            counters.push((key, local));
        }
    });
}

/// Records one request as [`http_metrics`] does, for a hot handler that times itself
/// (from `started`) instead of going through the middleware, which looks the route
/// pattern up on every request. `route` must be a pattern or fixed prefix, never a raw
/// path. Counts reach the shared metrics within [`LOCAL_FLUSH`] while requests keep
/// coming; a thread that records must also call [`flush_local_metrics`] periodically so
/// the last ones are not held back when traffic stops.
pub fn record_request(route: &str, status: u16, started: Instant) {
    let now = Instant::now();
    let elapsed = now.saturating_duration_since(started).as_secs_f64();
    LOCAL.with_borrow_mut(|(handles, last_flush)| {
        let h = handles_for(handles, route, status, |c, d| (c.local(), d.local()));
        h.requests.inc();
        h.duration.observe(elapsed);
        let last = *last_flush.get_or_insert(now);
        if now.saturating_duration_since(last) >= LOCAL_FLUSH {
            flush(handles);
            *last_flush = Some(now);
        }
    });
}

fn flush(handles: &[LocalHandles]) {
    for h in handles {
        h.requests.flush();
        h.duration.flush();
    }
    COUNTERS.with_borrow(|counters| {
        for (_, local) in counters {
            local.flush();
        }
    });
}

/// Adds what [`record_request`] holds in this thread to the shared metrics.
pub fn flush_local_metrics() {
    LOCAL.with_borrow(|(handles, _)| flush(handles));
}

fn record(route: &str, status: u16, elapsed: f64) {
    HANDLES.with_borrow_mut(|handles| {
        let h = handles_for(handles, route, status, |c, d| (c, d));
        h.requests.inc();
        h.duration.observe(elapsed);
    });
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
                .map(Cow::Owned)
                .or_else(|| default_service_route(request.path(), status));
            (route, status)
        }
        Err(error) => (None, error.as_response_error().status_code().as_u16()),
    };
    record(route.as_deref().unwrap_or("unmatched"), status, elapsed);
    result
}

/// A request answered by a scope's default service (such as the tracking edge's `/c/…`)
/// has no route pattern: it is labelled by its first path segment, `/c`, unless nothing
/// handled it (404), so unknown paths cannot add label values.
fn default_service_route(path: &str, status: u16) -> Option<Cow<'_, str>> {
    if status == 404 {
        return None;
    }
    let trimmed = path.trim_start_matches('/');
    let segment = trimmed.split('/').next()?;
    if segment.is_empty() || path.len() <= segment.len() + 1 {
        return None;
    }
    // Borrow `/segment` from the path itself when it is there, as it nearly always is.
    let start = path.len() - trimmed.len();
    Some(match start.checked_sub(1) {
        Some(slash) => Cow::Borrowed(&path[slash..start + segment.len()]),
        None => Cow::Owned(format!("/{segment}")),
    })
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

    #[actix_web::test]
    async fn a_default_service_is_labelled_by_its_first_segment() {
        use super::default_service_route as route;
        assert_eq!(route("/c/some-flow", 302).as_deref(), Some("/c"));
        assert_eq!(route("//c/x", 302).as_deref(), Some("/c"));
        assert_eq!(route("c/x", 302).as_deref(), Some("/c"));
        assert_eq!(route("/c/x", 404), None);
        assert_eq!(route("/c", 302), None);
        assert_eq!(route("/", 302), None);
    }
}

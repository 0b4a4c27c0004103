//! W3C trace context in Kafka headers, so that a click's or a postback's trace continues
//! through attribution, the sink and the dispatcher. Uses the global propagator, which
//! `traffsure_telemetry::init` installs when OTLP export is on; otherwise nothing is
//! written or read, and a span without trace context costs one check.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Writes each field the propagator sets straight into the message headers.
struct HeaderInjector(Option<OwnedHeaders>);

impl Injector for HeaderInjector {
    fn set(&mut self, key: &str, value: String) {
        self.0 = self.0.take().map(|headers| {
            headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        });
    }
}

struct HeaderExtractor<'a, H: Headers>(&'a H);

impl<H: Headers> Extractor for HeaderExtractor<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(key))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}

/// Adds the current span's trace context (`traceparent`, `tracestate`) to `headers`.
pub fn inject_trace(headers: OwnedHeaders) -> OwnedHeaders {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return headers;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return headers;
    }
    let mut injector = HeaderInjector(Some(headers));
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut injector));
    injector.0.unwrap_or_default()
}

/// Headers holding only the current span's trace context.
pub fn trace_headers() -> OwnedHeaders {
    inject_trace(OwnedHeaders::new())
}

/// Makes `span` continue the trace whose context a consumed message carries, if any.
pub fn continue_trace<H: Headers>(span: &tracing::Span, headers: Option<&H>) {
    let Some(headers) = headers else {
        return;
    };
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let _ = span.set_parent(parent);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn trace_context_survives_a_round_trip_through_headers() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let producer_span = tracing::info_span!("produce");
            let headers = producer_span.in_scope(trace_headers);
            let sent = producer_span.context().span().span_context().trace_id();
            let traceparent = headers
                .iter()
                .find(|h| h.key == "traceparent")
                .and_then(|h| h.value)
                .map(|v| String::from_utf8(v.to_vec()).unwrap())
                .unwrap();
            assert!(traceparent.contains(&sent.to_string()), "{traceparent}");

            let consumer_span = tracing::info_span!("consume");
            continue_trace(&consumer_span, Some(&headers));
            let received = consumer_span.context().span().span_context().trace_id();
            assert_eq!(received, sent);
        });
    }
}

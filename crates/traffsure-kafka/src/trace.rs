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

/// The current span's trace context as headers when traces are exported; `None` (and
/// no work) otherwise.
pub fn headers_if_traced() -> Option<OwnedHeaders> {
    (traffsure_telemetry::otlp_enabled() && !tracing::Span::current().is_none()).then(trace_headers)
}

/// A span continuing the trace a consumed message carries, when traces are exported and
/// the message has a trace context; `Span::none()` (and no work) otherwise.
pub fn span_from_headers<H: Headers>(name: &'static str, headers: Option<&H>) -> tracing::Span {
    if !traffsure_telemetry::otlp_enabled() || !has_trace(headers) {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("kafka message", otel.name = name);
    continue_trace(&span, headers);
    span
}

/// Whether a message carries a trace context.
pub fn has_trace<H: Headers>(headers: Option<&H>) -> bool {
    headers.is_some_and(|h| h.iter().any(|h| h.key.eq_ignore_ascii_case("traceparent")))
}

/// The OpenTelemetry context a consumed message carries (for span links).
pub fn context_from_headers<H: Headers>(headers: &H) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// The trace contexts of the messages gathered into one batch, for a single span per
/// batch instead of one per message: the span continues the first message's trace and
/// links the others'.
#[derive(Default)]
pub struct BatchTraces {
    contexts: Vec<opentelemetry::Context>,
}

/// Links kept per batch span; later messages of a batch are left out of it.
const MAX_BATCH_LINKS: usize = 64;

impl BatchTraces {
    /// Notes a consumed message's trace context, if traces are exported and it has one.
    pub fn observe<H: Headers>(&mut self, headers: Option<&H>) {
        if self.contexts.len() >= MAX_BATCH_LINKS || !traffsure_telemetry::otlp_enabled() {
            return;
        }
        if let Some(headers) = headers.filter(|h| has_trace(Some(*h))) {
            self.contexts.push(context_from_headers(headers));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.contexts.is_empty()
    }

    /// A span for the batch (`Span::none()` when no message was traced); the gathered
    /// contexts are cleared.
    pub fn take_span(&mut self, name: &'static str) -> tracing::Span {
        use opentelemetry::trace::TraceContextExt as _;
        let mut contexts = std::mem::take(&mut self.contexts).into_iter();
        let Some(first) = contexts.next() else {
            return tracing::Span::none();
        };
        let span = tracing::info_span!("batch", otel.name = name, messages = contexts.len() + 1);
        let _ = span.set_parent(first);
        for context in contexts {
            span.add_link(context.span().span_context().clone());
        }
        span
    }
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

//! A producer that failed for good: librdkafka's fatal error, after which an idempotent
//! producer takes no message. A service notices it (`until_producer_fails`, or
//! `until_failed` over its own check: click-ingest's publishers), stops, and exits with
//! the cause; its restart, with a new producer, resumes.

use std::time::Duration;

/// Why `client`'s producer failed for good, if it has: librdkafka's fatal error, after
/// which an idempotent producer takes no message. The service must stop; its restart,
/// with a new producer, resumes.
pub fn fatal_error<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
) -> Option<String> {
    client
        .fatal_error()
        .map(|(code, reason)| format!("{code:?}: {reason}"))
}

/// Resolves once `producer` has failed for good, with `kafka producer failed fatally
/// (<cause>)`: what a service that stops for it exits with.
pub fn until_producer_fails(
    producer: rdkafka::producer::FutureProducer,
) -> impl std::future::Future<Output = String> + Send + 'static {
    until_failed(move || {
        fatal_error(rdkafka::producer::Producer::client(&producer))
            .map(|cause| format!("kafka producer failed fatally ({cause})"))
    })
}

/// Resolves, with the reason, once `failed` says why the service cannot go on (asked
/// every 200 ms): a producer's `fatal_error`, say.
pub async fn until_failed(failed: impl Fn() -> Option<String>) -> String {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(reason) = failed() {
            return reason;
        }
    }
}

/// Fault injection for the tests, in debug builds only: with
/// `TRAFFSURE_TEST_PRODUCER_FATAL_AFTER=N` in a service's environment, its producer is
/// made to fail fatally, with librdkafka's own test hook, before its N-th event is sent
/// through here. Release builds have no such hook.
#[cfg(debug_assertions)]
#[allow(unsafe_code)]
pub fn fault_point<C: rdkafka::ClientContext>(client: &rdkafka::client::Client<C>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static AFTER: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    static SENT: AtomicU64 = AtomicU64::new(0);
    let Some(after) = *AFTER.get_or_init(|| {
        std::env::var("TRAFFSURE_TEST_PRODUCER_FATAL_AFTER")
            .ok()
            .and_then(|n| n.parse().ok())
    }) else {
        return;
    };
    if SENT.fetch_add(1, Ordering::Relaxed) + 1 != after {
        return;
    }
    let reason = c"injected by TRAFFSURE_TEST_PRODUCER_FATAL_AFTER";
    // SAFETY: a live client's handle and a NUL-terminated reason; librdkafka copies the
    // reason and allows the call from any thread.
    unsafe {
        rdkafka::bindings::rd_kafka_test_fatal_error(
            client.native_ptr(),
            rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
            reason.as_ptr(),
        );
    }
}

//! click-ingest's observability on the real Kafka: with OTLP tracing on, each click event
//! carries the W3C trace context of its `click` span in a `traceparent` header; with it
//! off, click events carry no headers at all. `/metrics` shows the producer queue.

use std::time::Duration;

use rdkafka::message::Headers;
use rdkafka::Message;
use serde_json::json;
use traffsure_tests::kafka_topic::{publish_flow, read_messages};
use traffsure_tests::{eventually, free_port, Stack, StackOptions};

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";

/// A record of the clicks topic: its headers as (name, value) pairs, and its clicks.
type Record = (Vec<(String, String)>, usize);

/// The headers as (name, value) pairs of each record of the clicks topic and how many
/// clicks it holds (untraced clicks may go several to a record), once `count` clicks were
/// read.
fn event_headers(brokers: &str, topic: &str, count: usize) -> anyhow::Result<Vec<Record>> {
    let clicks = |records: &[Record]| -> usize { records.iter().map(|(_, clicks)| clicks).sum() };
    let records = read_messages(
        brokers,
        topic,
        Duration::from_secs(30),
        Duration::ZERO,
        |records| clicks(records) >= count,
        |message| {
            let headers = message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| {
                            let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                            (h.key.to_string(), value.into_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            let held = traffsure_events::clicks_of(message.payload().unwrap_or_default())?.len();
            Ok((headers, held))
        },
    )?;
    anyhow::ensure!(
        clicks(&records) == count,
        "{} of {count} click events in {topic}",
        clicks(&records)
    );
    Ok(records)
}

/// Starts click-ingest (OTLP tracing on or off), makes one flow, sends `clicks` clicks and
/// returns the headers of the click events' records in Kafka, with each record's clicks.
async fn clicks_with(otlp: bool, clicks: usize) -> anyhow::Result<Vec<Record>> {
    let mut options = StackOptions::default().services(&["click-ingest"]);
    if otlp {
        // Nothing listens there: spans are made and exported in vain, which is enough
        // for the trace context to travel with the click events.
        options = options.env(
            "click-ingest",
            "TRAFFSURE__TELEMETRY__OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", free_port()?),
        );
    }
    let stack = Stack::start_with(options).await?;
    let result = async {
        let slug = format!("t-{}", stack.id);
        publish_flow(
            &stack.options.kafka_brokers,
            &format!("{}flows", stack.topic_prefix),
            1,
            json!({"name": "Trace", "slug": slug, "destination_url": "https://offer.test/?c={click}"}),
            None,
        )
        .await?;
        let track = stack.url("click-ingest", &format!("/c/{slug}"));
        eventually(Duration::from_secs(10), || async {
            let status = stack.http.get(&track).send().await?.status();
            anyhow::ensure!(status == 302, "answered {status}");
            Ok(Some(()))
        })
        .await?;
        for _ in 1..clicks {
            let response = stack
                .http
                .get(&track)
                .header("user-agent", CHROME)
                .send()
                .await?;
            anyhow::ensure!(response.status() == 302, "answered {}", response.status());
        }
        let metrics = stack
            .http
            .get(stack.url("click-ingest", "/metrics"))
            .send()
            .await?
            .text()
            .await?;
        anyhow::ensure!(
            metrics.contains("traffsure_kafka_producer_queue_messages{producer=\"clicks\"}"),
            "no producer queue gauge in /metrics"
        );
        let (brokers, topic) = (
            stack.options.kafka_brokers.clone(),
            format!("{}clicks", stack.topic_prefix),
        );
        tokio::task::spawn_blocking(move || event_headers(&brokers, &topic, clicks)).await?
    }
    .await;
    stack.print_failure(&result);
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_events_carry_trace_context_only_when_tracing_is_on() -> anyhow::Result<()> {
    let traced = clicks_with(true, 5).await?;
    let mut trace_ids = std::collections::HashSet::new();
    for (headers, clicks) in &traced {
        // A click with trace context goes to Kafka alone, its context in the headers.
        anyhow::ensure!(*clicks == 1, "{clicks} traced clicks in one record");
        let traceparent = headers
            .iter()
            .find(|(k, _)| k == "traceparent")
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| anyhow::anyhow!("click event without traceparent: {headers:?}"))?;
        // W3C: version-traceid-parentid-flags, 00-<32 hex>-<16 hex>-<2 hex>.
        let parts: Vec<&str> = traceparent.split('-').collect();
        anyhow::ensure!(
            parts.len() == 4
                && parts[0] == "00"
                && parts[1].len() == 32
                && parts[2].len() == 16
                && parts[1..]
                    .iter()
                    .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
                && parts[1].bytes().any(|b| b != b'0'),
            "not a W3C traceparent: {traceparent:?}"
        );
        trace_ids.insert(parts[1].to_string());
    }
    // Each click is a trace of its own.
    assert_eq!(trace_ids.len(), traced.len(), "{traced:?}");

    let untraced = clicks_with(false, 3).await?;
    assert!(
        untraced.iter().all(|(headers, _)| headers.is_empty()),
        "headers without tracing: {untraced:?}"
    );
    Ok(())
}

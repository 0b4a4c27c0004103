//! A spill caused by a full producer queue, not by an outage: click-ingest gets a tiny
//! queue on the shared broker and a load of concurrent clicks, so the queue fills and
//! clicks go through the spill file while the broker is up. Every redirected click must
//! reach the `clicks` topic exactly once, the spill file must drain to empty, and clicks
//! must go straight to the queue again afterwards.

use std::time::Duration;

use serde_json::json;
use traffsure_tests::kafka_topic::{expect_clicks_once, publish_flow};
use traffsure_tests::{eventually, kafka_brokers, send_clicks, Stack, StackOptions};

/// Concurrent visitors, and clicks each sends.
const VISITORS: usize = 16;
const CLICKS_EACH: usize = 150;
/// Kafka records the producer queue holds before new clicks spill: a record is a batch of
/// up to 32 clicks (one when replayed), and this load makes about 75 of them and more.
const MAX_QUEUED: u32 = 10;

async fn metric(stack: &Stack, name: &str) -> anyhow::Result<f64> {
    stack.metric("click-ingest", name).await
}

fn deliveries(result: &str) -> String {
    format!("traffsure_click_deliveries_total{{result=\"{result}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_spills_under_load_and_every_click_arrives_once() -> anyhow::Result<()> {
    let spill_dir = std::env::temp_dir().join(format!(
        "traffsure-spill-load-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    let options = StackOptions::default()
        .services(&["click-ingest"])
        .env(
            "click-ingest",
            "TRAFFSURE__SPILL__PATH",
            spill_dir.join("clicks.spill").display().to_string(),
        )
        .env(
            "click-ingest",
            "TRAFFSURE__SPILL__MAX_QUEUED",
            MAX_QUEUED.to_string(),
        )
        // A batch waits up to `linger.ms` to fill, so the live queue moves at most
        // MAX_QUEUED events a second, which this load exceeds. The replay must not wait
        // out the linger (it flushes): at MAX_QUEUED / 2 events a second it would take
        // most of a minute to drain this load.
        .env("click-ingest", "TRAFFSURE__PRODUCER__LINGER_MS", "1000");
    let stack = Stack::start_with(options).await?;
    let result = tokio::time::timeout(Duration::from_secs(50), run(&stack)).await;
    if !matches!(result, Ok(Ok(()))) {
        eprintln!("{}", stack.logs());
    }
    let _ = std::fs::remove_dir_all(&spill_dir);
    result.map_err(|_| anyhow::anyhow!("spill under load took over 50 s"))?
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let slug = format!("spill-load-{}", stack.id);
    publish_flow(
        &kafka_brokers(),
        &format!("{}flows", stack.topic_prefix),
        1,
        json!({"name": "Spill under load", "slug": slug, "destination_url": "https://offer.example/?c={click}"}),
        None,
    )
    .await?;
    let track = stack.url("click-ingest", &format!("/c/{slug}?sub_id=load"));
    eventually(Duration::from_secs(15), || async {
        Ok((stack.http.get(&track).send().await?.status() == 302).then_some(()))
    })
    .await?;

    let (mut expected, _) = send_clicks(stack, &track, VISITORS, CLICKS_EACH).await?;
    let spilled = metric(stack, &deliveries("spilled")).await?;
    anyhow::ensure!(spilled > 0.0, "the full queue spilled nothing");
    // The HTTP workers hand their `queued` counts over every 100 ms: a load this short
    // can end before the first hand-over.
    eventually(Duration::from_secs(2), || async {
        let queued = metric(stack, &deliveries("queued")).await?;
        Ok((queued > 0.0).then_some(()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("no click went straight to the queue: {e}"))?;

    // The spill file drains while the broker is up, and clicks go to the queue again.
    eventually(Duration::from_secs(20), || async {
        let pending = metric(stack, "traffsure_click_spill_pending_bytes").await?;
        let replayed = metric(stack, &deliveries("replayed")).await?;
        Ok((pending == 0.0 && replayed == spilled).then_some(()))
    })
    .await?;
    assert_eq!(metric(stack, &deliveries("lost")).await?, 0.0);
    // Clicks go straight to the queue again once the file is empty.
    let queued_before = metric(stack, &deliveries("queued")).await?;
    let mut resumed = false;
    for _ in 0..20 {
        expected.extend(send_clicks(stack, &track, 1, 1).await?.0);
        if metric(stack, &deliveries("queued")).await? > queued_before {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resumed, "clicks still spill after the spill file drained");

    let topic = format!("{}clicks", stack.topic_prefix);
    expect_clicks_once(
        &kafka_brokers(),
        &topic,
        &expected,
        Duration::from_secs(20),
        Duration::from_secs(1),
    )
    .await?;
    let total = expected.len();
    eprintln!("{total} clicks, {spilled} through the spill file, each once in the topic");
    Ok(())
}

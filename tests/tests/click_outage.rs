//! No click is lost while Kafka is away: a private broker is stopped in the middle of a
//! load of clicks and started again; later it goes away once more while click-ingest is
//! stopped with SIGTERM. Every redirected click must reach the `clicks` topic exactly
//! once, counted by click hash.

use std::time::{Duration, Instant};

use serde_json::json;
use traffsure_tests::kafka_topic::{expect_clicks_once, publish_flow};
use traffsure_tests::private_kafka::PrivateKafka;
use traffsure_tests::{eventually, send_clicks, Stack, StackOptions};

/// Concurrent visitors, and clicks each sends per phase.
const VISITORS: usize = 8;
const CLICKS_PER_PHASE: usize = 60;

/// Sends `VISITORS × CLICKS_PER_PHASE` clicks concurrently; returns their click hashes
/// and the slowest redirect.
async fn load(stack: &Stack, track: &str) -> anyhow::Result<(Vec<String>, Duration)> {
    send_clicks(stack, track, VISITORS, CLICKS_PER_PHASE).await
}

async fn metric(stack: &Stack, name: &str) -> anyhow::Result<f64> {
    stack.metric("click-ingest", name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_redirected_click_reaches_kafka_exactly_once_across_broker_outages(
) -> anyhow::Result<()> {
    let mut kafka = PrivateKafka::start().await?;
    let log_dir = std::env::temp_dir().join(format!("traffsure-click-log-{}", uuid_like()));
    let mut options = StackOptions::default().services(&["click-ingest"]).env(
        "click-ingest",
        "TRAFFSURE__CLICK_LOG__PATH",
        log_dir.display().to_string(),
    );
    options.kafka_brokers = kafka.brokers();
    let mut stack = Stack::start_with(options).await?;
    let result = run(&mut stack, &mut kafka, &log_dir).await;
    stack.print_failure(&result);
    let _ = std::fs::remove_dir_all(&log_dir);
    result
}

/// Bytes of the click log's segments in `dir`.
fn log_bytes(dir: &std::path::Path) -> anyhow::Result<u64> {
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(".log") {
            bytes += entry.metadata()?.len();
        }
    }
    Ok(bytes)
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}

async fn run(
    stack: &mut Stack,
    kafka: &mut PrivateKafka,
    log_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let slug = format!("outage-{}", stack.id);
    publish_flow(
        &kafka.brokers(),
        &format!("{}flows", stack.topic_prefix),
        1,
        json!({"name": "Outage", "slug": slug, "destination_url": "https://offer.example/?c={click}"}),
        None,
    )
    .await?;
    let track = stack.url("click-ingest", &format!("/c/{slug}?sub_id=outage"));
    eventually(Duration::from_secs(15), || async {
        Ok((stack.http.get(&track).send().await?.status() == 302).then_some(()))
    })
    .await?;
    // The probe clicks above are real clicks too; the count below is of the load only,
    // so it checks its own hashes and nothing else of this flow.
    let mut expected = Vec::new();

    // Phase 1: broker up.
    let (hashes, _) = load(stack, &track).await?;
    expected.extend(hashes);

    // Phase 2: the broker dies; redirects go on, without waiting for it.
    kafka.stop().await?;
    let (hashes, slowest) = load(stack, &track).await?;
    expected.extend(hashes);
    assert!(
        slowest < Duration::from_secs(2),
        "a redirect waited {slowest:?} for the missing broker"
    );
    // Let librdkafka notice the outage, then click on: these wait in the click log.
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(
        stack,
        "traffsure_click_deliveries_total{result=\"spilled\"}",
    )
    .await?
        == 0.0
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no click was spilled during the outage"
        );
        let (hashes, _) = load(stack, &track).await?;
        expected.extend(hashes);
    }
    assert!(log_bytes(log_dir)? > 0, "nothing in the click log");

    // Phase 3: the broker returns; the click log is replayed while clicks go on.
    kafka.resume().await?;
    let (hashes, _) = load(stack, &track).await?;
    expected.extend(hashes);
    eventually(Duration::from_secs(60), || async {
        Ok((metric(stack, "traffsure_click_spill_pending_bytes").await? == 0.0).then_some(()))
    })
    .await?;

    // Phase 4: the broker dies again and click-ingest is stopped with SIGTERM: what the
    // broker could not take stays in the click log, and is replayed after a restart.
    kafka.stop().await?;
    let (hashes, _) = load(stack, &track).await?;
    expected.extend(hashes);
    stack.terminate("click-ingest").await?;
    assert!(
        log_bytes(log_dir)? > 0,
        "SIGTERM left nothing in the click log"
    );
    kafka.resume().await?;
    stack.restart("click-ingest").await?;
    let (hashes, _) = load(stack, &track).await?;
    expected.extend(hashes);

    // Count the clicks topic by click hash.
    let topic = format!("{}clicks", stack.topic_prefix);
    let events = expect_clicks_once(
        &kafka.brokers(),
        &topic,
        &expected,
        Duration::from_secs(90),
        Duration::from_secs(2),
    )
    .await?;
    let total = expected.len();
    eprintln!("{total} redirected clicks, {events} events in the topic, each once");
    Ok(())
}

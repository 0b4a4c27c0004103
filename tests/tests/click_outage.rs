//! No click is lost while Kafka is away: a private broker is stopped in the middle of a
//! load of clicks and started again; later it goes away once more while click-ingest is
//! stopped with SIGTERM. Every redirected click must reach the `clicks` topic exactly
//! once, counted by click hash.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use traffsure_events::Click;
use traffsure_tests::kafka_topic::{publish_flow, read_events};
use traffsure_tests::private_kafka::PrivateKafka;
use traffsure_tests::{click_hash_of, eventually, Stack, StackOptions};

/// Concurrent visitors, and clicks each sends per phase.
const VISITORS: usize = 8;
const CLICKS_PER_PHASE: usize = 60;

/// Sends `VISITORS × CLICKS_PER_PHASE` clicks concurrently; returns their click hashes
/// and the slowest redirect.
async fn load(stack: &Stack, track: &str) -> anyhow::Result<(Vec<String>, Duration)> {
    let track = Arc::new(track.to_string());
    let mut tasks = Vec::new();
    for _ in 0..VISITORS {
        let http = stack.http.clone();
        let track = track.clone();
        tasks.push(tokio::spawn(async move {
            let mut hashes = Vec::new();
            let mut slowest = Duration::ZERO;
            for _ in 0..CLICKS_PER_PHASE {
                let started = Instant::now();
                let response = http.get(track.as_str()).send().await?;
                slowest = slowest.max(started.elapsed());
                anyhow::ensure!(response.status() == 302, "answered {}", response.status());
                let location = response.headers()["location"].to_str()?.to_string();
                hashes.push(click_hash_of(&location));
            }
            anyhow::Ok((hashes, slowest))
        }));
    }
    let mut hashes = Vec::new();
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let (h, s) = task.await??;
        hashes.extend(h);
        slowest = slowest.max(s);
    }
    Ok((hashes, slowest))
}

async fn metric(stack: &Stack, name: &str) -> anyhow::Result<f64> {
    stack.metric("click-ingest", name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_redirected_click_reaches_kafka_exactly_once_across_broker_outages(
) -> anyhow::Result<()> {
    let mut kafka = PrivateKafka::start().await?;
    let spill_dir = std::env::temp_dir().join(format!("traffsure-spill-{}", uuid_like()));
    let spill_path = spill_dir.join("clicks.spill");
    let mut options = StackOptions::default().services(&["click-ingest"]).env(
        "click-ingest",
        "TRAFFSURE__SPILL__PATH",
        spill_path.display().to_string(),
    );
    options.kafka_brokers = kafka.brokers();
    let mut stack = Stack::start_with(options).await?;
    let result = run(&mut stack, &mut kafka, &spill_path).await;
    if result.is_err() {
        eprintln!("{}", stack.logs());
    }
    let _ = std::fs::remove_dir_all(&spill_dir);
    result
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
    spill_path: &std::path::Path,
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
    // Let librdkafka notice the outage, then click on: these go to the spill file.
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
    assert!(std::fs::metadata(spill_path)?.len() > 0, "nothing spilled");

    // Phase 3: the broker returns; the spill file is replayed while clicks go on.
    kafka.resume().await?;
    let (hashes, _) = load(stack, &track).await?;
    expected.extend(hashes);
    eventually(Duration::from_secs(60), || async {
        Ok((metric(stack, "traffsure_click_spill_pending_bytes").await? == 0.0).then_some(()))
    })
    .await?;

    // Phase 4: the broker dies again and click-ingest is stopped with SIGTERM: what the
    // broker could not take is flushed to the spill file, and replayed after a restart.
    kafka.stop().await?;
    let (hashes, _) = load(stack, &track).await?;
    expected.extend(hashes);
    stack.terminate("click-ingest").await?;
    assert!(
        std::fs::metadata(spill_path)?.len() > 0,
        "SIGTERM left nothing in the spill file"
    );
    kafka.resume().await?;
    stack.restart("click-ingest").await?;
    let (hashes, _) = load(stack, &track).await?;
    expected.extend(hashes);

    // Count the clicks topic by click hash.
    let topic = format!("{}clicks", stack.topic_prefix);
    let brokers = kafka.brokers();
    let wanted: std::collections::HashSet<String> = expected.iter().cloned().collect();
    assert_eq!(wanted.len(), expected.len(), "click hashes must be unique");
    let total = expected.len();
    let events: Vec<Click> = tokio::task::spawn_blocking(move || {
        let linger = Duration::from_secs(2);
        read_events::<Click>(
            &brokers,
            &topic,
            Duration::from_secs(90),
            linger,
            |events| {
                events
                    .iter()
                    .filter(|c| wanted.contains(&c.click_hash))
                    .count()
                    >= total
            },
        )
    })
    .await??;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for click in &events {
        *counts.entry(click.click_hash.as_str()).or_default() += 1;
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|h| !counts.contains_key(h.as_str()))
        .collect();
    let doubled: Vec<(&&str, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty(),
        "{} of {total} redirected clicks missing from the topic, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert!(doubled.is_empty(), "clicks published twice: {doubled:?}");
    eprintln!(
        "{total} redirected clicks, {} events in the topic, each once",
        events.len()
    );
    Ok(())
}

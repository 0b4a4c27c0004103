//! A crash of click-ingest loses no redirected click and counts none twice: 200,000
//! clicks sent as fast as a loopback client can while click-ingest is killed with SIGKILL
//! five times; at the end every click whose 302 the client received is in ClickHouse
//! `clicks` exactly once, no click hash is there twice, and `clicks_hourly` adds up to
//! the raw table.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use traffsure_tests::kafka_topic::publish_flow;
use traffsure_tests::{click_hash_of, eventually, kafka_brokers, Stack, StackOptions};

const CLICKS: usize = 200_000;
/// Concurrent loopback clients.
const CLIENTS: usize = 32;
const KILLS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_and_doubles_no_redirected_click() -> anyhow::Result<()> {
    let log_dir = std::env::temp_dir().join(format!(
        "traffsure-click-crash-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    let mut stack = Stack::start_with(
        StackOptions::default()
            .services(&["click-ingest", "sink"])
            .env(
                "click-ingest",
                "TRAFFSURE__CLICK_LOG__PATH",
                log_dir.display().to_string(),
            )
            .env("sink", "TRAFFSURE__BATCH_INTERVAL_MS", "300"),
    )
    .await?;
    let result = tokio::time::timeout(Duration::from_secs(240), run(&mut stack))
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the crash test took over 240 s")));
    stack.print_failure(&result);
    drop(stack);
    let _ = std::fs::remove_dir_all(&log_dir);
    result
}

async fn run(stack: &mut Stack) -> anyhow::Result<()> {
    let slug = format!("crash-{}", stack.id);
    publish_flow(
        &kafka_brokers(),
        &format!("{}flows", stack.topic_prefix),
        1,
        json!({"name": "Crash", "slug": slug, "destination_url": "https://offer.example/?c={click}"}),
        None,
    )
    .await?;
    let track = Arc::new(stack.url("click-ingest", &format!("/c/{slug}?sub_id=crash")));
    eventually(Duration::from_secs(15), || async {
        Ok((stack.http.get(track.as_str()).send().await?.status() == 302).then_some(()))
    })
    .await?;

    // Clients send until CLICKS redirects came back; a request the kill cut off is
    // simply sent again once the edge answers.
    let redirected = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let http = stack.http.clone();
        let track = track.clone();
        let redirected = redirected.clone();
        clients.push(tokio::spawn(async move {
            let mut hashes = Vec::new();
            let mut refused = 0usize;
            while redirected.load(Ordering::Relaxed) < CLICKS {
                let response = match http.get(track.as_str()).send().await {
                    Ok(response) => response,
                    Err(_) => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                if response.status() != 302 {
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let location = response.headers()["location"].to_str()?.to_string();
                hashes.push(click_hash_of(&location));
                redirected.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok((hashes, refused))
        }));
    }

    // Kill the edge at even steps of the load, and start it again at once.
    for kill in 1..=KILLS {
        let at = CLICKS * kill / (KILLS + 1);
        while redirected.load(Ordering::Relaxed) < at {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stack.kill("click-ingest").await?;
        stack.restart("click-ingest").await?;
    }
    let mut expected = Vec::with_capacity(CLICKS + CLIENTS);
    let mut refused = 0;
    for client in clients {
        let (hashes, r) = client.await??;
        expected.extend(hashes);
        refused += r;
    }
    anyhow::ensure!(refused > 0, "no request was cut off by a kill");
    // The last start found clicks in doubt, some of which Kafka held already.
    let in_doubt = stack
        .metric("click-ingest", "traffsure_click_log_in_doubt")
        .await?;
    let skipped = stack
        .metric(
            "click-ingest",
            "traffsure_click_deliveries_total{result=\"skipped\"}",
        )
        .await?;
    assert!(in_doubt > 0.0, "the last kill left nothing in doubt");
    assert!(skipped > 0.0, "no click in doubt was found in kafka");
    let unique: std::collections::HashSet<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(
        unique.len(),
        expected.len(),
        "the edge gave one click hash twice"
    );

    // Every redirected click reaches ClickHouse; a click whose 302 the kill cut off may
    // be there too, once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let stored = stored_clicks(stack).await?;
        let missing = expected.iter().filter(|h| !stored.contains_key(*h)).count();
        if missing == 0 {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{missing} of {} redirected clicks missing from clicks",
            expected.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // A moment more, so a late duplicate would show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stored = stored_clicks(stack).await?;
    let doubled: Vec<&String> = stored
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(h, _)| h)
        .collect();
    let raw = stack
        .clickhouse("SELECT count(), uniqExact(click_hash) FROM clicks")
        .await?;
    let (count, uniq) = raw.split_once('\t').unwrap_or_default();
    assert!(
        doubled.is_empty(),
        "{} click hashes stored twice",
        doubled.len()
    );
    assert_eq!(count, uniq, "a click stored twice");
    assert_eq!(
        stack
            .clickhouse("SELECT sum(clicks) FROM clicks_hourly")
            .await?,
        count,
        "clicks_hourly against clicks"
    );
    eprintln!(
        "{} redirected clicks across {KILLS} kills, {} stored (the rest cut off before their 302), {refused} requests refused",
        expected.len(),
        count
    );
    Ok(())
}

/// Rows of `clicks` by click hash.
async fn stored_clicks(stack: &Stack) -> anyhow::Result<HashMap<String, u64>> {
    let text = stack
        .clickhouse("SELECT click_hash, count() FROM clicks GROUP BY click_hash FORMAT TSV")
        .await?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(hash, n)| (hash.to_string(), n.parse().unwrap_or(0)))
        .collect())
}

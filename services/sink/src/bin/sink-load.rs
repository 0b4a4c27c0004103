//! sink-load: the load generator of `bench/sink.sh`. Writes synthetic clicks straight to
//! the `clicks` topic, either as a backlog as fast as Kafka takes them, or as a paced
//! stream with probe clicks whose arrival in ClickHouse it times.
//!
//! Usage:
//!   sink-load backlog BROKERS PREFIX COUNT
//!   sink-load stream BROKERS PREFIX RATE SECONDS CLICKHOUSE_URL DATABASE
//! `stream` prints "probes p50_ms p95_ms p99_ms max_ms missing".

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use prost::Message;
use rdkafka::producer::FutureProducer;
use traffsure_config::KafkaSettings;
use traffsure_events::Click;
use traffsure_kafka::Topics;

fn click(i: u64, hash: String, now_ms: i64) -> Click {
    Click {
        click_hash: hash,
        flow_id: 1 + (i % 20) as u32,
        ts_ms: now_ms,
        routing_key: (i % 65_536) as u32,
        visitor_id: format!("v{}", i % 100_000),
        ip: "203.0.113.7".into(),
        country: ["US", "DE", "FR", "BR"][(i % 4) as usize].into(),
        user_agent: "Mozilla/5.0 (Linux; Android 14) Chrome/120".into(),
        device: "mobile".into(),
        os: "Android".into(),
        browser: "Chrome".into(),
        sub_id: format!("s{}", i % 50),
        source: "push".into(),
        cost_micros: 1_500,
        destination_url: "https://offer.example/land".into(),
        ..Click::default()
    }
}

async fn send_all(
    producer: &FutureProducer,
    topic: &str,
    clicks: Vec<Click>,
) -> anyhow::Result<()> {
    let messages: Vec<_> = clicks
        .iter()
        .map(|c| {
            (
                traffsure_kafka::routing_key_bytes(c.routing_key as u16),
                c.encode_to_vec(),
            )
        })
        .collect();
    traffsure_kafka::send_all(producer, topic, &messages)
        .await
        .context("send clicks")
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct Probe {
    click_hash: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| {
        args.get(i)
            .cloned()
            .context("missing argument (see the usage in the source)")
    };
    let settings = KafkaSettings {
        brokers: arg(1)?,
        topic_prefix: arg(2)?,
        ..KafkaSettings::default()
    };
    let topics = Topics::new(&settings.topic_prefix);
    traffsure_kafka::ensure_topics(&settings, &topics).await?;
    let producer = traffsure_kafka::producer(&settings)?;
    match arg(0)?.as_str() {
        "backlog" => {
            let count: u64 = arg(3)?.parse()?;
            let now = traffsure_core::now_ms();
            let mut i = 0;
            while i < count {
                let end = (i + 50_000).min(count);
                let clicks = (i..end)
                    .map(|j| click(j, format!("b{j:012}"), now))
                    .collect();
                send_all(&producer, &topics.clicks, clicks).await?;
                i = end;
            }
            println!("{count}");
        }
        "stream" => {
            let rate: u64 = arg(3)?.parse()?;
            let seconds: u64 = arg(4)?.parse()?;
            let client = clickhouse::Client::default()
                .with_url(arg(5)?)
                .with_database(arg(6)?)
                .with_compression(clickhouse::Compression::None)
                .with_validation(false);
            // Every 10 ms a tick of rate/100 clicks; the first click of every tenth tick
            // is a probe.
            let per_tick = (rate / 100).max(1);
            let mut sent: HashMap<String, Instant> = HashMap::new();
            let mut latencies = Vec::new();
            let started = Instant::now();
            let mut i = 0u64;
            let mut deliveries = Vec::new();
            for tick in 0..seconds * 100 {
                tokio::time::sleep_until((started + Duration::from_millis(tick * 10)).into()).await;
                let clicks: Vec<Click> = (0..per_tick)
                    .map(|k| {
                        let n = i + k;
                        let hash = if k == 0 && tick % 10 == 0 {
                            format!("probe{tick:08}")
                        } else {
                            format!("s{n:012}")
                        };
                        click(n, hash, traffsure_core::now_ms())
                    })
                    .collect();
                i += per_tick;
                if tick % 10 == 0 {
                    sent.insert(format!("probe{tick:08}"), Instant::now());
                }
                let producer = producer.clone();
                let topic = topics.clicks.clone();
                deliveries.push(tokio::spawn(async move {
                    send_all(&producer, &topic, clicks).await
                }));
                if tick % 10 == 5 {
                    let found: Vec<Probe> = client
                        .query("SELECT click_hash FROM clicks WHERE click_hash LIKE 'probe%'")
                        .fetch_all()
                        .await?;
                    record(&mut sent, &found, &mut latencies);
                }
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while !sent.is_empty() && Instant::now() < deadline {
                let found: Vec<Probe> = client
                    .query("SELECT click_hash FROM clicks WHERE click_hash LIKE 'probe%'")
                    .fetch_all()
                    .await?;
                record(&mut sent, &found, &mut latencies);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for d in deliveries {
                d.await??;
            }
            if latencies.is_empty() {
                bail!("no probe reached ClickHouse");
            }
            latencies.sort_unstable();
            let pct = |p: f64| {
                latencies
                    [((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
            };
            println!(
                "{} {} {} {} {} {}",
                latencies.len(),
                pct(0.50),
                pct(0.95),
                pct(0.99),
                latencies[latencies.len() - 1],
                sent.len()
            );
        }
        other => bail!("unknown mode {other}: backlog or stream"),
    }
    Ok(())
}

/// Moves every probe now visible from `sent` to `latencies` (ms since it was sent).
fn record(sent: &mut HashMap<String, Instant>, found: &[Probe], latencies: &mut Vec<u64>) {
    for p in found {
        if let Some(at) = sent.remove(&p.click_hash) {
            latencies.push(at.elapsed().as_millis() as u64);
        }
    }
}

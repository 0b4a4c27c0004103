//! Load generator for `bench/attribution.sh`: produces clicks and postbacks straight to
//! Kafka and waits for the attribution group to commit past them.
//!
//! Usage (environment `BROKERS`, `PREFIX`, `GROUP`; `CLICK_AGE_MS` dates clicks back):
//!   attribution_load clicks FROM COUNT       produce clicks FROM..FROM+COUNT
//!   attribution_load postbacks COUNT STEP    one approved postback per STEP-th click
//!   attribution_load wait TOPIC SECONDS      until GROUP committed the end of TOPIC
//! Each command prints the seconds it took.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use traffsure_config::KafkaSettings;
use traffsure_events::{Click, ConversionStatus, Postback};
use traffsure_kafka::Topics;

fn routing_key(n: u64) -> u16 {
    (n.wrapping_mul(2_654_435_761) % 65_536) as u16
}

fn send(producer: &BaseProducer, topic: &str, key: u16, payload: &[u8]) -> anyhow::Result<()> {
    let key = traffsure_kafka::routing_key_bytes(key);
    let mut record = BaseRecord::to(topic).key(&key[..]).payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(5));
            }
            Err((error, _)) => return Err(error.into()),
        }
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> anyhow::Result<T> {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("argument {i} missing or invalid"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let kafka = KafkaSettings {
        brokers: std::env::var("BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
        topic_prefix: std::env::var("PREFIX").context("PREFIX is required")?,
        ..KafkaSettings::default()
    };
    let topics = Topics::new(&kafka.topic_prefix);
    traffsure_kafka::ensure_topics(&kafka, &topics).await?;
    let started = Instant::now();
    let now = traffsure_core::now_ms();
    match args.get(1).map(String::as_str) {
        Some("clicks") => {
            let (from, count): (u64, u64) = (arg(&args, 2)?, arg(&args, 3)?);
            // Older clicks, e.g. to see them leave the attribution window.
            let click_age_ms: i64 = std::env::var("CLICK_AGE_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let producer: BaseProducer = traffsure_kafka::producer_config(&kafka).create()?;
            for n in from..from + count {
                let click = Click {
                    click_hash: format!("click-{n:012}"),
                    flow_id: 1,
                    ts_ms: now - click_age_ms,
                    routing_key: u32::from(routing_key(n)),
                    visitor_id: format!("v{n}"),
                    country: "DE".into(),
                    source: "push".into(),
                    sub_id: format!("s{}", n % 100),
                    device: "mobile".into(),
                    os: "Android".into(),
                    browser: "Chrome".into(),
                    ..Click::default()
                };
                send(
                    &producer,
                    &topics.clicks,
                    routing_key(n),
                    &click.encode_to_vec(),
                )?;
            }
            producer.flush(Duration::from_secs(120))?;
        }
        Some("postbacks") => {
            let (count, step): (u64, u64) = (arg(&args, 2)?, arg(&args, 3)?);
            let producer: BaseProducer = traffsure_kafka::producer_config(&kafka).create()?;
            for j in 0..count {
                let n = j * step;
                let mut postback = Postback {
                    postback_id: format!("pb-{j}"),
                    received_at_ms: now,
                    click_hash: format!("click-{n:012}"),
                    flow_id: 1,
                    routing_key: u32::from(routing_key(n)),
                    goal: "sale".into(),
                    has_revenue: true,
                    revenue_micros: 1_500_000,
                    ..Postback::default()
                };
                postback.set_status(ConversionStatus::Approved);
                send(
                    &producer,
                    &topics.postbacks,
                    routing_key(n),
                    &postback.encode_to_vec(),
                )?;
            }
            producer.flush(Duration::from_secs(120))?;
        }
        Some("wait") => {
            let topic = format!("{}{}", kafka.topic_prefix, args.get(2).context("topic")?);
            let limit = Duration::from_secs(arg(&args, 3)?);
            let group = std::env::var("GROUP").context("GROUP is required")?;
            let consumer: BaseConsumer = traffsure_kafka::client_config(&kafka)
                .set("group.id", &group)
                .create()?;
            let partitions = kafka.partitions;
            loop {
                let mut list = TopicPartitionList::new();
                for p in 0..partitions {
                    list.add_partition(&topic, p);
                }
                let committed = consumer.committed_offsets(list, Duration::from_secs(10))?;
                let mut behind = 0;
                for p in 0..partitions {
                    let (_, high) =
                        consumer.fetch_watermarks(&topic, p, Duration::from_secs(10))?;
                    let done = match committed.find_partition(&topic, p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => o,
                        _ => 0,
                    };
                    behind += (high - done).max(0);
                }
                if behind == 0 {
                    break;
                }
                if started.elapsed() > limit {
                    bail!("{topic}: {behind} messages not committed after {limit:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        _ => bail!(
            "usage: attribution_load clicks FROM COUNT | postbacks COUNT STEP | wait TOPIC SECONDS"
        ),
    }
    println!("{:.3}", started.elapsed().as_secs_f64());
    Ok(())
}

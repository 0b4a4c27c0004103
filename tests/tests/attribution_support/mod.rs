//! Shared by the attribution tests: topics created ahead of the service, events produced
//! straight to Kafka with a batching producer, conversions read back with read_committed,
//! and extra attribution instances started beside the harness's one.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::process::{Child, Command};
use traffsure_config::KafkaSettings;
use traffsure_events::{
    Click, Conversion, ConversionStatus, DuplicatePolicy, Flow, Goal, Postback, PostbackOutcome,
    PostbackResult,
};
use traffsure_kafka::Topics;
use traffsure_tests::{kafka_brokers, StackOptions};

pub const PARTITIONS: i32 = 4;

/// A topic prefix of its own, its topics created, and harness options that use it.
pub struct Setup {
    pub prefix: String,
    pub topics: Topics,
    pub kafka: KafkaSettings,
    pub state_root: PathBuf,
}

impl Setup {
    pub async fn new() -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let prefix = format!("test-attr-{id}.");
        let kafka = KafkaSettings {
            brokers: kafka_brokers(),
            topic_prefix: prefix.clone(),
            partitions: PARTITIONS,
            ..KafkaSettings::default()
        };
        let topics = Topics::new(&prefix);
        traffsure_kafka::ensure_topics(&kafka, &topics).await?;
        let state_root = std::env::temp_dir().join(format!("traffsure-attribution-{id}"));
        Ok(Self {
            prefix,
            topics,
            kafka,
            state_root,
        })
    }

    /// Options starting the attribution service alone on this setup's topics.
    pub fn options(&self) -> StackOptions {
        StackOptions::default()
            .services(&["conversion-attribution"])
            .env("*", "TRAFFSURE__KAFKA__TOPIC_PREFIX", self.prefix.clone())
            .env("*", "TRAFFSURE__KAFKA__PARTITIONS", PARTITIONS.to_string())
            .env(
                "conversion-attribution",
                "TRAFFSURE__STATE_DIR",
                self.state_root.join("a").display().to_string(),
            )
            .env("conversion-attribution", "TRAFFSURE__INSTANCE_ID", "a")
    }

    pub fn producer(&self) -> anyhow::Result<BaseProducer> {
        Ok(traffsure_kafka::producer_config(&self.kafka).create()?)
    }

    /// The committed conversions, once `expected` arrived and `settle` passed (a minute at most).
    pub fn conversions(
        &self,
        expected: usize,
        settle: Duration,
    ) -> anyhow::Result<Vec<Conversion>> {
        read_committed(
            &self.kafka,
            &self.topics.conversions,
            expected,
            settle,
            Duration::from_secs(60),
        )
    }

    /// The committed postback results, as `conversions`.
    pub fn results(
        &self,
        expected: usize,
        settle: Duration,
    ) -> anyhow::Result<Vec<PostbackResult>> {
        read_committed(
            &self.kafka,
            &self.topics.postback_results,
            expected,
            settle,
            Duration::from_secs(60),
        )
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state_root);
    }
}

/// Sends every event and waits until all are acknowledged.
pub fn produce<M: prost::Message>(
    producer: &BaseProducer,
    topic: &str,
    events: impl IntoIterator<Item = (u16, M)>,
) -> anyhow::Result<()> {
    for (routing_key, event) in events {
        let key = traffsure_kafka::routing_key_bytes(routing_key);
        let payload = event.encode_to_vec();
        let mut record = BaseRecord::to(topic).key(&key[..]).payload(&payload[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(())
}

pub fn routing_key(n: u64) -> u16 {
    (n.wrapping_mul(2_654_435_761) % 65_536) as u16
}

pub fn click(n: u64) -> (u16, Click) {
    let routing_key = routing_key(n);
    (
        routing_key,
        Click {
            click_hash: format!("click-{n:09}"),
            flow_id: 1,
            ts_ms: traffsure_core_now() - 60_000,
            routing_key: u32::from(routing_key),
            visitor_id: format!("visitor-{n}"),
            country: "DE".into(),
            source: "push".into(),
            sub_id: format!("s{}", n % 7),
            ..Click::default()
        },
    )
}

pub fn postback(
    id: &str,
    click: u64,
    goal: &str,
    uid: &str,
    status: ConversionStatus,
    revenue_micros: Option<i64>,
) -> (u16, Postback) {
    let routing_key = routing_key(click);
    let mut p = Postback {
        postback_id: id.into(),
        received_at_ms: traffsure_core_now(),
        click_hash: format!("click-{click:09}"),
        flow_id: 1,
        routing_key: u32::from(routing_key),
        goal: goal.into(),
        has_revenue: revenue_micros.is_some(),
        revenue_micros: revenue_micros.unwrap_or(0),
        uid: uid.into(),
        ..Postback::default()
    };
    p.set_status(status);
    (routing_key, p)
}

pub fn traffsure_core_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Flow 1: `lead` converts once (1.00 EUR), `sale` once per uid (20.00), `event` every time.
pub fn flow() -> (u16, Flow) {
    let goal = |key: &str, payout: i64, policy| {
        let mut g = Goal {
            key: key.into(),
            payout_micros: payout,
            currency: "EUR".into(),
            ..Goal::default()
        };
        g.set_duplicate_policy(policy);
        g
    };
    (
        0,
        Flow {
            id: 1,
            slug: "attribution".into(),
            name: "Attribution".into(),
            default_goal: "lead".into(),
            goals: vec![
                goal("lead", 1_000_000, DuplicatePolicy::Once),
                goal("sale", 20_000_000, DuplicatePolicy::PerUid),
                goal("event", 500_000, DuplicatePolicy::Every),
            ],
            attribution_window_days: 30,
            revision: 1,
            ..Flow::default()
        },
    )
}

/// Reads every committed event of `topic` until `expected` arrived, then `settle` longer
/// to catch any extra, or fails after `timeout`.
pub fn read_committed<M: prost::Message + Default>(
    kafka: &KafkaSettings,
    topic: &str,
    expected: usize,
    settle: Duration,
    timeout: Duration,
) -> anyhow::Result<Vec<M>> {
    let consumer: BaseConsumer = traffsure_kafka::client_config(kafka)
        .set("group.id", "attribution-test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + timeout;
    let mut settle_until: Option<Instant> = None;
    let mut events = Vec::new();
    loop {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            let payload = message.payload().unwrap_or_default();
            events.push(M::decode(payload).context("decode event")?);
        }
        if events.len() >= expected && settle_until.is_none() {
            settle_until = Some(Instant::now() + settle);
        }
        if settle_until.is_some_and(|t| Instant::now() > t) {
            return Ok(events);
        }
        if Instant::now() > deadline {
            bail!(
                "{topic}: {} of {expected} events after {timeout:?}",
                events.len()
            );
        }
    }
}

/// The sum of the end offsets of `topic`'s partitions (transaction markers included).
pub fn end_offsets(kafka: &KafkaSettings, topic: &str) -> anyhow::Result<i64> {
    let consumer: BaseConsumer = traffsure_kafka::client_config(kafka)
        .set("group.id", "attribution-test-reader")
        .create()?;
    let mut total = 0;
    for partition in 0..PARTITIONS {
        total += consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))?
            .1;
    }
    Ok(total)
}

/// What a conversion version is, without the ids and times that differ per run.
pub type Version = (String, String, String, u32, i32, i64, i32, i64);

pub fn version(c: &Conversion) -> Version {
    (
        c.click_hash.clone(),
        c.goal.clone(),
        c.uid.clone(),
        c.version,
        c.status,
        c.revenue_micros,
        c.previous_status,
        c.previous_revenue_micros,
    )
}

/// How many results have each of `wanted`'s outcomes, in its order.
pub fn count_outcomes(results: &[PostbackResult], wanted: &[PostbackOutcome]) -> Vec<usize> {
    wanted
        .iter()
        .map(|o| results.iter().filter(|r| r.outcome == *o as i32).count())
        .collect()
}

/// Counts the results per outcome.
pub fn outcomes(results: &[PostbackResult]) -> HashMap<i32, usize> {
    let mut counts = HashMap::new();
    for r in results {
        *counts.entry(r.outcome).or_default() += 1;
    }
    counts
}

/// A second attribution instance on the same topics and group as the harness's one.
pub struct ExtraInstance {
    pub child: Child,
    pub log: PathBuf,
}

impl ExtraInstance {
    pub async fn start(setup: &Setup, group: &str, name: &str) -> anyhow::Result<Self> {
        let bin = std::env::var("TRAFFSURE_BIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug"))
            .join("conversion-attribution");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        std::fs::create_dir_all(&setup.state_root)?;
        let log = setup.state_root.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(&bin)
            .env("TRAFFSURE__HTTP__BIND", format!("127.0.0.1:{port}"))
            .env("TRAFFSURE__KAFKA__BROKERS", &setup.kafka.brokers)
            .env("TRAFFSURE__KAFKA__TOPIC_PREFIX", &setup.prefix)
            .env("TRAFFSURE__KAFKA__PARTITIONS", PARTITIONS.to_string())
            .env("TRAFFSURE__GROUP_ID", group)
            .env("TRAFFSURE__INSTANCE_ID", name)
            .env(
                "TRAFFSURE__STATE_DIR",
                setup.state_root.join(name).display().to_string(),
            )
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let instance = Self { child, log };
        let url = format!("http://127.0.0.1:{port}/readyz");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(response) = reqwest::get(&url).await {
                if response.status().is_success() {
                    return Ok(instance);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} not ready: {}",
                    std::fs::read_to_string(&instance.log)?
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn terminate(&mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()?;
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
        }
        Ok(())
    }
}

//! Reading a test's topic directly, to check what a service published (through the
//! broker's secured listener when the address is one).

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::secured::kafka_settings;

/// Reads the clicks `topic` until every click hash of `expected` (unique) is there or
/// `timeout` passes, then `linger` longer so a late duplicate would show; fails unless
/// each of them is there exactly once. Returns the number of events read.
pub async fn expect_clicks_once(
    brokers: &str,
    topic: &str,
    expected: &[String],
    timeout: Duration,
    linger: Duration,
) -> anyhow::Result<usize> {
    let wanted: std::collections::HashSet<String> = expected.iter().cloned().collect();
    anyhow::ensure!(
        wanted.len() == expected.len(),
        "click hashes must be unique"
    );
    let total = expected.len();
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    let events: Vec<traffsure_events::Click> = tokio::task::spawn_blocking(move || {
        read_clicks(&brokers, &topic, timeout, linger, |events| {
            events
                .iter()
                .filter(|c| wanted.contains(&c.click_hash))
                .count()
                >= total
        })
    })
    .await??;
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for click in &events {
        *counts.entry(click.click_hash.as_str()).or_default() += 1;
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|h| !counts.contains_key(h.as_str()))
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "{} of {total} clicks missing from the topic, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    let doubled: Vec<(&&str, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    anyhow::ensure!(doubled.is_empty(), "clicks published twice: {doubled:?}");
    Ok(events.len())
}

/// Reads `topic` from the beginning until `done(events so far)` says stop or `timeout`
/// passes, then `linger` longer (so a late duplicate would show), decoding each message
/// as `M`. The clicks topic has records of several clicks: [`read_clicks`] reads it.
pub fn read_events<M: prost::Message + Default>(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    linger: Duration,
    done: impl FnMut(&[M]) -> bool,
) -> anyhow::Result<Vec<M>> {
    read_messages(brokers, topic, timeout, linger, done, |message| {
        let payload = message.payload().context("message without payload")?;
        Ok(M::decode(payload)?)
    })
}

/// Reads the clicks `topic` like [`read_events`], taking every click of a record: its one
/// click, or each click of a `ClickBatch`, in order.
pub fn read_clicks(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    linger: Duration,
    done: impl FnMut(&[traffsure_events::Click]) -> bool,
) -> anyhow::Result<Vec<traffsure_events::Click>> {
    read_each_message(brokers, topic, timeout, linger, done, |message| {
        let payload = message.payload().context("message without payload")?;
        Ok(traffsure_events::clicks_of(payload)?)
    })
}

/// Reads `topic` from the beginning like [`read_events`], turning each message into a `T`
/// with `read` (its headers, say).
pub fn read_messages<T>(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    linger: Duration,
    done: impl FnMut(&[T]) -> bool,
    mut read: impl FnMut(&BorrowedMessage<'_>) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<T>> {
    read_each_message(brokers, topic, timeout, linger, done, |message| {
        Ok(vec![read(message)?])
    })
}

/// Reads `topic` like [`read_messages`], turning each message into any number of `T`.
fn read_each_message<T>(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    linger: Duration,
    mut done: impl FnMut(&[T]) -> bool,
    mut read: impl FnMut(&BorrowedMessage<'_>) -> anyhow::Result<Vec<T>>,
) -> anyhow::Result<Vec<T>> {
    let consumer: BaseConsumer = traffsure_kafka::client_config(&kafka_settings(brokers))
        .set("group.id", "traffsure-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            assignment.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + timeout;
    let mut events = Vec::new();
    let mut stop_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if stop_at.is_some_and(|t| now > t) || now > deadline {
            return Ok(events);
        }
        if stop_at.is_none() && done(&events) {
            stop_at = Some(now + linger);
        }
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            events.extend(read(&message?)?);
        }
    }
}

/// Writes a flow to a `flows` topic the way the reporting API does (key = flow id), built
/// from the same JSON a `POST /api/v1/flows` takes, and returns it. Publishing again with
/// `previous` set stores the next revision of that flow.
pub async fn publish_flow(
    brokers: &str,
    topic: &str,
    id: u32,
    spec: serde_json::Value,
    previous: Option<&traffsure_events::Flow>,
) -> anyhow::Result<traffsure_events::Flow> {
    let spec: traffsure_core::flow::FlowSpec = serde_json::from_value(spec)?;
    let mut flow = previous.cloned().unwrap_or(traffsure_events::Flow {
        id,
        ..Default::default()
    });
    spec.apply(&mut flow, traffsure_core::now_ms())
        .map_err(|e| anyhow::anyhow!("invalid flow: {e}"))?;
    let producer: rdkafka::producer::FutureProducer =
        traffsure_kafka::client_config(&kafka_settings(brokers))
            .set("message.timeout.ms", "30000")
            .create()?;
    let payload = prost::Message::encode_to_vec(&flow);
    let key = flow.id.to_string();
    producer
        .send(
            rdkafka::producer::FutureRecord::to(topic)
                .key(&key)
                .payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("publish flow: {e}"))?;
    Ok(flow)
}

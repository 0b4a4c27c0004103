//! Shared by the postback tests: reading the `postbacks` and `postback-log` topics of a
//! test stack back from Kafka, and sending raw postbacks.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::Message;
use serde_json::Value;
use traffsure_config::KafkaSettings;
use traffsure_events::{Postback, PostbackLogEntry};
use traffsure_kafka::reader::PartitionReader;
use traffsure_tests::{kafka_brokers, Stack};

/// A reader of one topic from its beginning, collecting events by postback ID.
pub struct TopicReader<M> {
    reader: PartitionReader,
    seen: HashMap<String, M>,
    id: fn(&M) -> String,
    /// The events of one record: one, except of the clicks topic (`clicks`).
    decode: fn(&[u8]) -> anyhow::Result<Vec<M>>,
}

/// A record of one event.
fn decode_one<M: prost::Message + Default>(payload: &[u8]) -> anyhow::Result<Vec<M>> {
    Ok(vec![M::decode(payload)?])
}

fn settings(stack: &Stack) -> KafkaSettings {
    KafkaSettings {
        brokers: stack.options.kafka_brokers.clone(),
        topic_prefix: stack.topic_prefix.clone(),
        ..KafkaSettings::default()
    }
}

impl<M: prost::Message + Default + Clone> TopicReader<M> {
    pub async fn open(stack: &Stack, topic: &str, id: fn(&M) -> String) -> anyhow::Result<Self> {
        let (settings, name) = (settings(stack), format!("{}{topic}", stack.topic_prefix));
        let reader =
            tokio::task::spawn_blocking(move || PartitionReader::open_all(&settings, &name))
                .await?
                .with_context(|| format!("read {topic} from {}", kafka_brokers()))?;
        Ok(Self {
            reader,
            seen: HashMap::new(),
            id,
            decode: decode_one::<M>,
        })
    }

    /// Waits until every ID in `ids` has been read, and returns their events.
    pub async fn wait_for(&mut self, ids: &[String]) -> anyhow::Result<Vec<M>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while ids.iter().any(|id| !self.seen.contains_key(id)) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let missing: Vec<_> = ids
                    .iter()
                    .filter(|id| !self.seen.contains_key(*id))
                    .collect();
                bail!("events not read back within 30 s: {missing:?}");
            }
            self.read_one().await?;
        }
        Ok(ids.iter().map(|id| self.seen[id].clone()).collect())
    }

    /// Waits until at least `n` events read so far satisfy `matches`, and returns them.
    pub async fn wait_matching(
        &mut self,
        n: usize,
        matches: impl Fn(&M) -> bool,
    ) -> anyhow::Result<Vec<M>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found: Vec<M> = self.seen.values().filter(|m| matches(m)).cloned().collect();
            if found.len() >= n {
                return Ok(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "only {} of {n} matching events read back within 30 s",
                    found.len()
                );
            }
            self.read_one().await?;
        }
    }

    /// Waits for one event.
    pub async fn one(&mut self, id: &str) -> anyhow::Result<M> {
        Ok(self.wait_for(&[id.to_string()]).await?.remove(0))
    }

    /// Reads whatever arrives for `period`, then says whether `id` was among all read.
    pub async fn seen_after(&mut self, id: &str, period: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + period;
        while Instant::now() < deadline {
            self.read_one().await?;
        }
        Ok(self.seen.contains_key(id))
    }

    /// Reads the next event if one comes within a short blocking poll (the reader follows
    /// the topic past the end it had at open).
    async fn read_one(&mut self) -> anyhow::Result<()> {
        match self.reader.poll(Duration::from_millis(50)) {
            Some(message) => {
                for event in (self.decode)(message?.payload().unwrap_or_default())? {
                    self.seen.insert((self.id)(&event), event);
                }
            }
            None => tokio::task::yield_now().await,
        }
        Ok(())
    }

    /// How many distinct events have been read so far.
    pub fn count(&self) -> usize {
        self.seen.len()
    }
}

pub async fn clicks(stack: &Stack) -> anyhow::Result<TopicReader<traffsure_events::Click>> {
    let mut reader = TopicReader::open(stack, "clicks", |c: &traffsure_events::Click| {
        c.click_hash.clone()
    })
    .await?;
    // A record of the clicks topic may hold a batch of clicks.
    reader.decode = |payload| Ok(traffsure_events::clicks_of(payload)?);
    Ok(reader)
}

pub async fn postbacks(stack: &Stack) -> anyhow::Result<TopicReader<Postback>> {
    TopicReader::open(stack, "postbacks", |p: &Postback| p.postback_id.clone()).await
}

pub async fn postback_log(stack: &Stack) -> anyhow::Result<TopicReader<PostbackLogEntry>> {
    TopicReader::open(stack, "postback-log", |p: &PostbackLogEntry| {
        p.postback_id.clone()
    })
    .await
}

/// A postback answer: HTTP status, reason code, the parameter at fault (refusals only)
/// and postback ID.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub code: String,
    pub field: Option<String>,
    pub message: String,
    pub postback_id: String,
}

/// Reads an answer; a refusal must have the shared error shape `{status, code, field,
/// message}` (plus `postback_id`), with `status` the HTTP status.
pub async fn reply(response: reqwest::Response) -> anyhow::Result<Reply> {
    let status = response.status().as_u16();
    let text = response.text().await?;
    let body: Value =
        serde_json::from_str(&text).with_context(|| format!("answer is not JSON: {text:?}"))?;
    if status != 200 {
        let keys: Vec<&str> = body
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        if sorted != ["code", "field", "message", "postback_id", "status"] {
            bail!("refusal is not an error body: {text}");
        }
        if body["status"].as_u64() != Some(u64::from(status)) {
            bail!("refusal's status is not the HTTP status {status}: {text}");
        }
    }
    Ok(Reply {
        status,
        code: body["code"].as_str().unwrap_or_default().to_string(),
        field: body["field"].as_str().map(str::to_string),
        message: body["message"].as_str().unwrap_or_default().to_string(),
        postback_id: body["postback_id"].as_str().unwrap_or_default().to_string(),
    })
}

/// `GET` on postback-ingest with a path and query written as is.
pub async fn get(stack: &Stack, path_and_query: &str) -> anyhow::Result<Reply> {
    let url = stack.url("postback-ingest", path_and_query);
    reply(stack.http.get(url).send().await?).await
}

/// Sends bytes as they are over TCP (for requests an HTTP client would refuse to build)
/// and returns the status line's code and the body.
pub async fn raw_request(stack: &Stack, request: &[u8]) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let base = &stack.services["postback-ingest"].base_url;
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.write_all(request).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await??;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The logged parameters as (name, value, truncated).
pub fn logged_params(entry: &PostbackLogEntry) -> Vec<(String, String, bool)> {
    entry
        .params
        .iter()
        .map(|p| (p.name.clone(), p.value.clone(), p.truncated))
        .collect()
}

/// A click hash the test stack's postback-ingest accepts, made a few seconds ago.
pub fn click_hash(flow_id: u32, routing_key: u16) -> String {
    let keys = traffsure_core::ClickHashKeys::parse(traffsure_tests::CLICK_HASH_KEYS, 1)
        .unwrap_or_else(|e| panic!("test keys: {e}"));
    keys.generate(traffsure_core::now_ms() - 5_000, flow_id, routing_key)
}

pub fn flow_id(flow: &Value) -> u32 {
    flow["id"].as_u64().unwrap_or_default() as u32
}

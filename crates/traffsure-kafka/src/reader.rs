//! Reading partitions to their end, outside any consumer group: the one reader for
//! state a service rebuilds from a topic (the flows registry, the dispatcher's delivery
//! records, attribution's partition restore).
//!
//! A reader is assigned the partitions it is asked for, notes where each one ends when it
//! opens, and reads committed data up to those ends. It never joins a group and never
//! commits. It is blocking: call it from a thread of its own or `spawn_blocking`. What to
//! do with each message, and what to do after the end, is the caller's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use traffsure_config::KafkaSettings;

use crate::client_config;

/// How long a metadata or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `open_all` waits for a topic created a moment ago to get its leaders.
const NEW_TOPIC_WAIT: Duration = Duration::from_secs(30);

/// Keeps the reader's end-of-partition events out of the logs.
pub struct QuietEof;

impl ClientContext for QuietEof {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        if fac != "FETCH" {
            rdkafka::client::DefaultClientContext.log(level, fac, log_message);
        }
    }
}

impl ConsumerContext for QuietEof {}

/// A consumer outside any group that reads some partitions of one topic to the ends they
/// had when it opened.
pub struct PartitionReader {
    consumer: BaseConsumer<QuietEof>,
    topic: String,
    /// Partition → offset one past its last message at open.
    ends: HashMap<i32, i64>,
    /// Partition → the offset it was asked to start from, for error messages.
    starts: HashMap<i32, Offset>,
    /// Partitions not yet read to their end.
    remaining: HashMap<i32, i64>,
}

impl PartitionReader {
    /// A reader of `topic` from the given offset of each partition. Partitions that hold
    /// nothing at or past their start are done from the outset.
    pub fn open(
        settings: &KafkaSettings,
        topic: &str,
        starts: &[(i32, Offset)],
    ) -> Result<Self, KafkaError> {
        let consumer: BaseConsumer<QuietEof> = client_config(settings)
            .set("group.id", "traffsure-reader") // required by librdkafka; never joined, never committed
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "50")
            .set("fetch.message.max.bytes", "4194304")
            .create_with_context(QuietEof)?;
        let mut reader = Self {
            consumer,
            topic: topic.to_string(),
            ends: HashMap::new(),
            starts: HashMap::new(),
            remaining: HashMap::new(),
        };
        let mut assignment = TopicPartitionList::new();
        for &(partition, start) in starts {
            let (low, high) =
                reader
                    .consumer
                    .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)?;
            reader.ends.insert(partition, high);
            reader.starts.insert(partition, start);
            let first = match start {
                Offset::Beginning => low,
                Offset::Offset(offset) if offset < low => {
                    // The topic's retention removed what this reader was to start from:
                    // the caller's state lacks those messages for good.
                    tracing::warn!(
                        topic,
                        partition,
                        from = offset,
                        first_held = low,
                        "messages removed by the topic's retention before they were read"
                    );
                    low
                }
                Offset::Offset(offset) => offset,
                Offset::End | Offset::Stored | Offset::Invalid | Offset::OffsetTail(_) => high,
            };
            if first < high {
                reader.remaining.insert(partition, high);
            }
            let start = match start {
                Offset::Offset(_) => Offset::Offset(first.min(high)),
                other => other,
            };
            assignment.add_partition_offset(topic, partition, start)?;
        }
        reader.consumer.assign(&assignment)?;
        Ok(reader)
    }

    /// A reader of every partition of `topic` from the beginning (state every instance
    /// rebuilds in full). A topic created a moment ago may have no leader yet: this waits
    /// a while for it.
    pub fn open_all(settings: &KafkaSettings, topic: &str) -> Result<Self, KafkaError> {
        let deadline = Instant::now() + NEW_TOPIC_WAIT;
        loop {
            let attempt = Self::partitions_of(settings, topic).and_then(|partitions| {
                let starts: Vec<_> = partitions
                    .into_iter()
                    .map(|p| (p, Offset::Beginning))
                    .collect();
                Self::open(settings, topic, &starts)
            });
            match attempt {
                Ok(reader) => return Ok(reader),
                Err(error) if Instant::now() < deadline => {
                    tracing::debug!(topic, %error, "topic not ready yet, retrying");
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn partitions_of(settings: &KafkaSettings, topic: &str) -> Result<Vec<i32>, KafkaError> {
        let consumer: BaseConsumer = client_config(settings).create()?;
        let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
        let mut partitions = Vec::new();
        for t in metadata.topics() {
            if let Some(error) = t.error() {
                return Err(KafkaError::MetadataFetch(error.into()));
            }
            partitions.extend(t.partitions().iter().map(|p| p.id()));
        }
        if partitions.is_empty() {
            return Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownTopicOrPartition,
            ));
        }
        Ok(partitions)
    }

    /// Partition → the offset one past its last message when the reader opened.
    pub fn ends(&self) -> &HashMap<i32, i64> {
        &self.ends
    }

    /// Whether every partition was read to its end.
    pub fn is_done(&self) -> bool {
        self.remaining.is_empty()
    }

    /// Hands every message up to the ends to `apply`, in order per partition. Fails when
    /// `limit` passes first, when a partition no longer holds the offset it was to start
    /// from, or when `apply` fails.
    pub fn read_to_end(
        &mut self,
        limit: Duration,
        mut apply: impl FnMut(&BorrowedMessage<'_>) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        while !self.remaining.is_empty() {
            if Instant::now() > deadline {
                anyhow::bail!(
                    "{}: partitions {:?} not read to their end within {} s",
                    self.topic,
                    self.remaining.keys().collect::<Vec<_>>(),
                    limit.as_secs()
                );
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    let (partition, offset) = (message.partition(), message.offset());
                    if self.remaining.contains_key(&partition) {
                        apply(&message)?;
                        self.observe(partition, offset + 1);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    // Reached the end a transaction marker hides from the offsets.
                    self.remaining.remove(&partition);
                }
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange))) => {
                    let starts: Vec<_> = self
                        .remaining
                        .keys()
                        .map(|p| (p, self.starts.get(p)))
                        .collect();
                    anyhow::bail!(
                        "{}: a partition no longer holds its start offset (partition, start): {starts:?}",
                        self.topic
                    )
                }
                Some(Err(error)) => {
                    tracing::warn!(topic = self.topic, %error, "catch-up read failed")
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Notes that `partition` was read up to `next` (exclusive).
    fn observe(&mut self, partition: i32, next: i64) {
        if self
            .remaining
            .get(&partition)
            .is_some_and(|&end| next >= end)
        {
            self.remaining.remove(&partition);
        }
    }

    /// The next message past the ends, for a caller that keeps following the topic.
    /// End-of-partition events are not messages and read as `None`.
    pub fn poll(&self, timeout: Duration) -> Option<Result<BorrowedMessage<'_>, KafkaError>> {
        match self.consumer.poll(timeout)? {
            Err(KafkaError::PartitionEOF(_)) => None,
            other => Some(other),
        }
    }
}

/// Every message of `topic` up to the end it has now, each turned into a value by
/// `decode` (`None` skips the message), read on a blocking thread. For callers that need
/// a topic's content once: tests, tools, load generators.
pub async fn collect_to_end<T: Send + 'static>(
    settings: &KafkaSettings,
    topic: &str,
    limit: Duration,
    mut decode: impl FnMut(&BorrowedMessage<'_>) -> anyhow::Result<Option<T>> + Send + 'static,
) -> anyhow::Result<Vec<T>> {
    let (settings, topic) = (settings.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let mut reader = PartitionReader::open_all(&settings, &topic)?;
        let mut values = Vec::new();
        reader.read_to_end(limit, |message| {
            values.extend(decode(message)?);
            Ok(())
        })?;
        Ok(values)
    })
    .await?
}

//! Recognises a Kafka topic that was deleted and recreated under the same name while
//! ClickHouse kept the rows of the old one (a new cluster, a wiped broker, a topic
//! recreated by hand).
//!
//! Offsets restart at 0 in a recreated topic, so a checkpoint from the old topic would
//! make the sink take the new messages for stored ones and skip them. Before trusting a
//! partition's checkpoint, the sink asks the topic for the message at the checkpoint
//! offset: the checkpoint stands only if that message is the one stored there (same
//! fingerprint). A topic that ends before the checkpoint is recreated as well; a topic
//! whose retention already removed the checkpoint offset is the old topic read late,
//! and its checkpoint stands (there is nothing below it left to skip), as it does when
//! compaction removed just that message.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use traffsure_config::KafkaSettings;

use crate::rows::fingerprint;

/// How long one check waits for the broker.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What the topic says about a stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The topic holds the stored message at the checkpoint offset, or no longer holds
    /// that offset at all: the checkpoint stands.
    Same,
    /// The topic is not the one the checkpoint came from: consume it from `low` (its
    /// first offset) and forget the checkpoint.
    Recreated { low: i64, reason: String },
}

/// Reads single messages by offset, outside the consumer group.
pub struct TopicIdentity {
    consumer: BaseConsumer,
}

impl TopicIdentity {
    pub fn new(settings: &KafkaSettings, group_id: &str) -> Result<Self, KafkaError> {
        let consumer = traffsure_kafka::client_config(settings)
            // A group id is required to create a consumer; this one never joins nor commits.
            .set("group.id", format!("{group_id}-identity"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.max.bytes", "1048576")
            // One message is wanted, and it is there: the broker need not wait for more.
            .set("fetch.wait.max.ms", "10")
            .create()?;
        Ok(Self { consumer })
    }

    /// Compares the checkpoint (`offset`, `stored` fingerprint, 0 when unknown) with the
    /// topic. Blocking: run it off the async threads.
    pub fn check(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        stored: u64,
    ) -> Result<Verdict, KafkaError> {
        let (low, high) = self.consumer.fetch_watermarks(topic, partition, TIMEOUT)?;
        if offset >= high {
            return Ok(Verdict::Recreated {
                low,
                reason: format!("the topic ends at offset {high}, the table holds offset {offset}"),
            });
        }
        if offset < low || stored == 0 {
            return Ok(Verdict::Same);
        }
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        self.consumer.assign(&assignment)?;
        let deadline = std::time::Instant::now() + TIMEOUT;
        let found = loop {
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => {
                    break Some((
                        message.offset(),
                        fingerprint(
                            message.key().unwrap_or_default(),
                            message.payload().unwrap_or_default(),
                        ),
                    ))
                }
                Some(Err(error)) => {
                    self.consumer.unassign()?;
                    return Err(error);
                }
                None if std::time::Instant::now() > deadline => break None,
                None => {}
            }
        };
        self.consumer.unassign()?;
        Ok(match found {
            // Nothing came back in time: a checkpoint is never dropped on a guess.
            None => {
                return Err(KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::RequestTimedOut,
                ))
            }
            Some((at, print)) if at == offset && print == stored => Verdict::Same,
            // No message at that offset any more: compaction (the `flows` topic) or a
            // transaction marker can leave such a gap in the same topic, so it proves
            // nothing and the checkpoint stands.
            Some((at, _)) if at != offset => Verdict::Same,
            Some(_) => Verdict::Recreated {
                low,
                reason: format!("the message at offset {offset} is not the one stored"),
            },
        })
    }
}

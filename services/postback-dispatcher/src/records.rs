//! Delivery records on the compacted `outbound-deliveries` topic: writing one, and
//! reading partitions back, the latest record per key.
//!
//! A record lives on the partition number of its conversion's `conversions` partition,
//! so whoever owns a conversions partition finds its deliveries on one partition here.
//! The topic itself is created with the other event topics (`traffsure_kafka::ensure_topics`).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use prost::Message as _;
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset};
use traffsure_events::OutboundDelivery;
use traffsure_kafka::reader::PartitionReader;
use traffsure_kafka::retry;

use crate::deliveries::schedulable;
use crate::dispatcher::Dispatcher;

/// How long reading every record back at start may take.
const RESTORE_LIMIT: Duration = Duration::from_secs(600);

/// How long reading the records of partitions taken over may take (then it is retried).
const TAKE_OVER_LIMIT: Duration = Duration::from_secs(120);

/// Delays between attempts to write a record or log an attempt.
pub(crate) fn write_backoff() -> retry::Backoff {
    retry::Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
}

/// The latest record of every key (with its partition) on the partitions a reader was
/// opened on; a tombstone forgets its key.
fn read_latest(
    mut reader: PartitionReader,
    limit: Duration,
) -> anyhow::Result<HashMap<String, (OutboundDelivery, i32)>> {
    let mut latest = HashMap::new();
    reader.read_to_end(limit, |message| {
        let partition = message.partition();
        match message.payload().map(OutboundDelivery::decode) {
            Some(Ok(record)) => {
                latest.insert(record.key.clone(), (record, partition));
            }
            Some(Err(error)) => {
                tracing::warn!(partition, offset = message.offset(), %error, "skipping undecodable delivery record")
            }
            None => {
                if let Some(key) = message.key() {
                    latest.remove(String::from_utf8_lossy(key).as_ref());
                }
            }
        }
        Ok(())
    })?;
    Ok(latest)
}

impl Dispatcher {
    /// Reads every delivery record back; unfinished deliveries are scheduled again.
    pub async fn restore(&self) -> anyhow::Result<usize> {
        let (kafka, topic) = (self.kafka.clone(), self.topics.outbound_deliveries.clone());
        let latest = tokio::task::spawn_blocking(move || {
            read_latest(PartitionReader::open_all(&kafka, &topic)?, RESTORE_LIMIT)
        })
        .await
        .context("read outbound-deliveries topic")?
        .context("read outbound-deliveries topic")?;
        let mut deliveries = self.lock();
        let mut unfinished = 0;
        for (_, (record, partition)) in latest {
            if schedulable(record.state()) {
                unfinished += 1;
            }
            deliveries.put(record, partition);
        }
        Ok(unfinished)
    }

    /// Writes a delivery record, retrying until the broker acknowledges it.
    pub(crate) async fn persist(&self, record: &OutboundDelivery, partition: i32) {
        let payload = record.encode_to_vec();
        retry::forever("write delivery record", &write_backoff(), || async {
            let kafka_record = FutureRecord::to(&self.topics.outbound_deliveries)
                .key(record.key.as_bytes())
                .payload(&payload)
                .partition(partition);
            self.producer
                .send(kafka_record, Duration::from_secs(5))
                .await
                .map_err(|(error, _)| {
                    traffsure_kafka::metrics::count_delivery_error("postback-dispatcher", &error);
                    error
                })
        })
        .await;
    }

    /// The latest delivery record of every key on some partitions of the deliveries
    /// topic, read until it succeeds (blocking).
    pub(crate) fn read_partitions(
        &self,
        partitions: &[i32],
    ) -> HashMap<String, (OutboundDelivery, i32)> {
        let starts: Vec<(i32, Offset)> = partitions
            .iter()
            .map(|&partition| (partition, Offset::Beginning))
            .collect();
        // Without its records a partition would send deliveries again: wait.
        retry::forever_blocking("read delivery records", &retry::Backoff::default(), || {
            let reader =
                PartitionReader::open(&self.kafka, &self.topics.outbound_deliveries, &starts)?;
            read_latest(reader, TAKE_OVER_LIMIT)
        })
    }
}

//! Delivery records on the compacted `outbound-deliveries` topic: writing one, and
//! reading a partition's back, the latest record per key.
//!
//! A record lives on the partition number of its conversion's `conversions` partition,
//! so whoever owns a conversions partition finds its deliveries on one partition here.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};
use traffsure_events::OutboundDelivery;

use crate::deliveries::schedulable;
use crate::dispatcher::Dispatcher;

/// The latest record of every key read so far, with its partition; a tombstone forgets
/// its key.
#[derive(Default)]
struct Latest(HashMap<String, (OutboundDelivery, i32)>);

impl Latest {
    fn read(&mut self, message: &impl Message) {
        let partition = message.partition();
        match message.payload().map(OutboundDelivery::decode) {
            Some(Ok(record)) => {
                self.0.insert(record.key.clone(), (record, partition));
            }
            Some(Err(error)) => {
                tracing::warn!(partition, offset = message.offset(), %error, "skipping undecodable delivery record")
            }
            None => {
                if let Some(key) = message.key() {
                    self.0.remove(String::from_utf8_lossy(key).as_ref());
                }
            }
        }
    }
}

impl Dispatcher {
    /// Creates the compacted deliveries topic if needed.
    pub async fn ensure_topic(&self) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            traffsure_kafka::client_config(&self.kafka).create()?;
        let topic = NewTopic::new(
            &self.deliveries_topic,
            self.kafka.partitions.max(1),
            TopicReplication::Fixed(self.kafka.replication_factor.max(1)),
        )
        .set("cleanup.policy", "compact");
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin.create_topics([&topic], &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
            }
        }
        Ok(())
    }

    /// Reads every delivery record back; unfinished deliveries are scheduled again.
    pub async fn restore(&self) -> anyhow::Result<usize> {
        let (consumer, mut catch_up) =
            traffsure_kafka::read_from_beginning(&self.kafka, &self.deliveries_topic)
                .await
                .context("read outbound-deliveries topic")?;
        let mut latest = Latest::default();
        while !catch_up.is_done() {
            let message = consumer
                .recv()
                .await
                .context("read outbound-deliveries topic")?;
            latest.read(&message);
            catch_up.observe(message.partition(), message.offset());
        }
        let mut deliveries = self.lock();
        let mut unfinished = 0;
        for (_, (record, partition)) in latest.0 {
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
        let mut wait = Duration::from_millis(100);
        loop {
            let kafka_record = FutureRecord::to(&self.deliveries_topic)
                .key(record.key.as_bytes())
                .payload(&payload)
                .partition(partition);
            match self
                .producer
                .send(kafka_record, Duration::from_secs(5))
                .await
            {
                Ok(_) => return,
                Err((error, _)) => {
                    traffsure_kafka::metrics::count_delivery_error("postback-dispatcher", &error);
                    tracing::warn!(key = %record.key, %error, "delivery record not written, retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The latest delivery record of every key on some partitions of the deliveries topic.
    pub(crate) fn read_partitions(
        &self,
        partitions: &[i32],
    ) -> anyhow::Result<HashMap<String, (OutboundDelivery, i32)>> {
        let reader: BaseConsumer = traffsure_kafka::client_config(&self.kafka)
            .set("group.id", "traffsure-reader") // never joined, never committed
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "50")
            .create()?;
        let timeout = Duration::from_secs(10);
        let mut ends = HashMap::new();
        let mut assignment = TopicPartitionList::new();
        for &partition in partitions {
            let (low, high) =
                reader.fetch_watermarks(&self.deliveries_topic, partition, timeout)?;
            if high > low {
                ends.insert(partition, high);
                assignment.add_partition_offset(
                    &self.deliveries_topic,
                    partition,
                    Offset::Beginning,
                )?;
            }
        }
        let mut latest = Latest::default();
        if ends.is_empty() {
            return Ok(latest.0);
        }
        reader.assign(&assignment)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !ends.is_empty() {
            if Instant::now() > deadline {
                anyhow::bail!("delivery records not read within 120 s");
            }
            let Some(message) = reader.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message?;
            latest.read(&message);
            let partition = message.partition();
            if ends
                .get(&partition)
                .is_some_and(|&end| message.offset() + 1 >= end)
            {
                ends.remove(&partition);
            }
        }
        Ok(latest.0)
    }
}

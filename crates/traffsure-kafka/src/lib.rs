//! Kafka for every service: topic names, producer and consumer setup (with the
//! connection's security), topic creation, and the in-memory registries that follow the
//! compacted `flows` and `objects` topics.
//!
//! Producers are idempotent with `acks=all`; callers decide whether to wait for the
//! delivery report. Group consumers store offsets only when the caller says an event is
//! done (`enable.auto.offset.store=false`), so nothing is skipped after a crash.

pub mod caps;
mod connect;
mod fatal;
mod flows;
pub mod metrics;
mod objects;
pub mod reader;
pub mod rebalance;
pub mod retry;
pub mod trace;
pub mod transaction;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use traffsure_config::KafkaSettings;

pub use connect::{check_brokers, ConnectError};
#[cfg(debug_assertions)]
pub use fatal::fault_point;
pub use fatal::{fatal_error, until_failed, until_producer_fails};
pub use flows::{follow_flows, FlowRegistry};
pub use objects::{follow_objects, ObjectRegistry};
pub use rdkafka;

/// The names of the event topics under a prefix.
#[derive(Debug, Clone)]
pub struct Topics {
    pub flows: String,
    pub clicks: String,
    pub postbacks: String,
    pub postback_log: String,
    pub conversions: String,
    pub postback_results: String,
    pub outbound_log: String,
    /// The dispatcher's delivery records (compacted, key = delivery key).
    pub outbound_deliveries: String,
    /// Traffic sources, affiliate networks, offers and landers (compacted, key `<kind>:<id>`).
    pub objects: String,
    /// Impression pixel requests (key = routing key, partitioned like `clicks`).
    pub impressions: String,
    prefix: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        let name = |topic: &str| format!("{prefix}{topic}");
        Self {
            flows: name("flows"),
            clicks: name("clicks"),
            postbacks: name("postbacks"),
            postback_log: name("postback-log"),
            conversions: name("conversions"),
            postback_results: name("postback-results"),
            outbound_log: name("outbound-log"),
            outbound_deliveries: name("outbound-deliveries"),
            objects: name("objects"),
            impressions: name("impressions"),
            prefix: prefix.to_string(),
        }
    }

    /// The dead-letter topic of one consumer.
    pub fn dead_letter(&self, consumer: &str) -> String {
        format!("{}dlq.{consumer}", self.prefix)
    }
}

/// Connection settings shared by producers, consumers and the admin client, security
/// included.
pub fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("socket.keepalive.enable", "true")
        .set("log_level", "4");
    connect::apply_security(&mut config, settings);
    config
}

/// An idempotent producer (`acks=all`) with lz4 batches.
pub fn producer(settings: &KafkaSettings) -> Result<FutureProducer, KafkaError> {
    producer_config(settings).create()
}

/// The settings of every producer, for callers that need their own producer context.
pub fn producer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = client_config(settings);
    config
        .set("enable.idempotence", "true") // exactly one copy per send, in order, per partition
        .set("acks", "all")
        .set("linger.ms", "5") // batch for up to 5 ms under load
        .set("compression.type", "lz4")
        .set(
            "message.timeout.ms",
            settings.message_timeout_ms.to_string(),
        )
        .set("queue.buffering.max.messages", "500000")
        .set("partitioner", "murmur2_random"); // the Java client's partitioner: same key, same partition
    config
}

/// The settings of every group consumer, for callers that need their own consumer context.
pub fn group_consumer_config(settings: &KafkaSettings, group: &str) -> ClientConfig {
    let mut config = client_config(settings);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false") // offsets move only after processing
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "10000")
        .set("partition.assignment.strategy", "cooperative-sticky")
        // Fetches of a batch of events rather than of each one (KafkaSettings says why).
        .set(
            "fetch.min.bytes",
            settings.fetch_min_bytes.max(1).to_string(),
        )
        .set("fetch.wait.max.ms", settings.fetch_wait_max_ms.to_string());
    config
}

/// Creates the event topics that do not exist yet. `clicks`, `postbacks` and
/// `conversions` get the same partition count, so a routing key maps to the same
/// partition in all three; `outbound-deliveries` too, so a conversion's delivery records
/// live on its partition number.
pub async fn ensure_topics(settings: &KafkaSettings, topics: &Topics) -> Result<(), ConnectError> {
    let partitions = settings.partitions.max(1);
    let mut new_topics = vec![
        TopicSpec::compacted(&topics.flows, 1),
        TopicSpec::compacted(&topics.objects, 1),
    ];
    for topic in [
        &topics.clicks,
        &topics.postbacks,
        &topics.conversions,
        &topics.postback_log,
        &topics.postback_results,
        &topics.outbound_log,
        &topics.impressions,
    ] {
        new_topics.push(TopicSpec::new(topic, partitions));
    }
    new_topics.push(TopicSpec::compacted(
        &topics.outbound_deliveries,
        partitions,
    ));
    ensure_topic_specs(settings, &new_topics).await
}

/// Creates one consumer's dead-letter topic unless it exists.
pub async fn ensure_dead_letter_topic(
    settings: &KafkaSettings,
    topics: &Topics,
    consumer: &str,
) -> Result<(), ConnectError> {
    let name = topics.dead_letter(consumer);
    ensure_topic_specs(settings, &[TopicSpec::new(&name, 1)]).await
}

/// A topic to create: name, partition count, and whether it is compacted.
#[derive(Debug, Clone, Copy)]
pub struct TopicSpec<'a> {
    pub name: &'a str,
    pub partitions: i32,
    pub compacted: bool,
}

impl<'a> TopicSpec<'a> {
    pub fn new(name: &'a str, partitions: i32) -> Self {
        Self {
            name,
            partitions,
            compacted: false,
        }
    }

    pub fn compacted(name: &'a str, partitions: i32) -> Self {
        Self {
            compacted: true,
            ..Self::new(name, partitions)
        }
    }
}

/// Creates the topics that do not exist yet (brokers need not create topics on first
/// use), with the settings' replication factor. An existing topic is left as it is.
/// Every service does this first, so a refused password or certificate ends its start
/// here, with the cause.
pub async fn ensure_topic_specs(
    settings: &KafkaSettings,
    specs: &[TopicSpec<'_>],
) -> Result<(), ConnectError> {
    check_brokers(settings).await?;
    let admin: AdminClient<DefaultClientContext> = client_config(settings).create()?;
    let replication = settings.replication_factor.max(1);
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|spec| {
            let topic = NewTopic::new(
                spec.name,
                spec.partitions.max(1),
                TopicReplication::Fixed(replication),
            );
            if spec.compacted {
                topic
                    .set("cleanup.policy", "compact")
                    .set("min.compaction.lag.ms", "0")
            } else {
                topic
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                tracing::error!(topic, %code, "cannot create topic");
                return Err(KafkaError::AdminOp(code).into());
            }
        }
    }
    Ok(())
}

/// The Kafka key of an event routed by `routing_key`: every event of one click uses it,
/// so clicks, postbacks and conversions of a click share a partition number.
pub fn routing_key_bytes(routing_key: u16) -> [u8; 2] {
    routing_key.to_be_bytes()
}

/// Sends one Protobuf event and waits for the broker's acknowledgement.
pub async fn send_event<M: prost::Message>(
    producer: &FutureProducer,
    topic: &str,
    key: &[u8],
    event: &M,
) -> Result<(i32, i64), KafkaError> {
    send_event_with_headers(producer, topic, key, event, None).await
}

/// Sends keyed payloads to `topic` as fast as the producer's queue takes them (waiting
/// while it is full), then waits for every acknowledgement. For load generators and
/// tests that write a stream of events straight to a topic.
pub async fn send_all<K: AsRef<[u8]>, P: AsRef<[u8]>>(
    producer: &FutureProducer,
    topic: &str,
    messages: &[(K, P)],
) -> Result<(), KafkaError> {
    let mut pending = Vec::with_capacity(messages.len());
    for (key, payload) in messages {
        let mut record = FutureRecord::to(topic)
            .key(key.as_ref())
            .payload(payload.as_ref());
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }
    for delivery in pending {
        delivery
            .await
            .map_err(|_| KafkaError::Canceled)?
            .map_err(|(error, _)| error)?;
    }
    Ok(())
}

/// Sends one Protobuf event with headers (such as a trace context) and waits for the
/// broker's acknowledgement.
pub async fn send_event_with_headers<M: prost::Message>(
    producer: &FutureProducer,
    topic: &str,
    key: &[u8],
    event: &M,
    headers: Option<rdkafka::message::OwnedHeaders>,
) -> Result<(i32, i64), KafkaError> {
    let payload = event.encode_to_vec();
    let mut record = FutureRecord::to(topic).key(key).payload(&payload);
    if let Some(headers) = headers {
        record = record.headers(headers);
    }
    #[cfg(debug_assertions)]
    fatal::fault_point(rdkafka::producer::Producer::client(producer));
    let delivery = producer
        .send_result(record)
        .map_err(|(error, _)| error)?
        .await
        .map_err(|_| KafkaError::Canceled)?;
    delivery
        .map(|d| (d.partition, d.offset))
        .map_err(|(error, _)| error)
}

/// Whether a Kafka error may pass if the same operation is tried again.
pub fn is_transient(error: &KafkaError) -> bool {
    match error.rdkafka_error_code() {
        Some(code) => !matches!(
            code,
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::InvalidConfig
        ),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_consumers_fetch_by_the_settings_batch() {
        let config = group_consumer_config(&KafkaSettings::default(), "group");
        assert_eq!(config.get("fetch.min.bytes"), Some("65536"));
        assert_eq!(config.get("fetch.wait.max.ms"), Some("100"));
        let settings = KafkaSettings {
            fetch_min_bytes: 0,
            fetch_wait_max_ms: 500,
            ..KafkaSettings::default()
        };
        let config = group_consumer_config(&settings, "group");
        // 0 is not a size librdkafka takes: the smallest fetch is one byte.
        assert_eq!(config.get("fetch.min.bytes"), Some("1"));
        assert_eq!(config.get("fetch.wait.max.ms"), Some("500"));
    }
}

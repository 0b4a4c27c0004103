//! Kafka client gauges for `/metrics`: consumer lag per assigned partition and the number
//! of messages a producer still holds (queued or in flight).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::producer::{Producer, ProducerContext};
use rdkafka::Offset;

fn lag_gauge() -> &'static prometheus::IntGaugeVec {
    static GAUGE: OnceLock<prometheus::IntGaugeVec> = OnceLock::new();
    GAUGE.get_or_init(|| {
        traffsure_telemetry::gauge_vec(
            "traffsure_kafka_consumer_lag",
            "Messages between a consumer group's position and the partition's end",
            &["group", "topic", "partition"],
        )
    })
}

fn queue_gauge() -> &'static prometheus::IntGaugeVec {
    static GAUGE: OnceLock<prometheus::IntGaugeVec> = OnceLock::new();
    GAUGE.get_or_init(|| {
        traffsure_telemetry::gauge_vec(
            "traffsure_kafka_producer_queue_messages",
            "Messages a producer holds that the broker has not acknowledged yet",
            &["producer"],
        )
    })
}

/// Labels of the partitions whose lag was last published, per group, so partitions that
/// moved to another instance stop being reported here.
fn published() -> &'static Mutex<BTreeSet<(String, String, i32)>> {
    static SET: OnceLock<Mutex<BTreeSet<(String, String, i32)>>> = OnceLock::new();
    SET.get_or_init(Mutex::default)
}

/// Publishes the lag of every partition assigned to `consumer`. Blocking (it asks the
/// broker for high watermarks): call it from a blocking task.
pub fn record_consumer_lag<C, X>(consumer: &C, group: &str)
where
    C: Consumer<X>,
    X: ConsumerContext,
{
    let Ok(positions) = consumer.position() else {
        return;
    };
    let mut now = BTreeSet::new();
    for element in positions.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        let Ok((_, high)) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(5))
        else {
            continue;
        };
        let lag = match element.offset() {
            Offset::Offset(position) => (high - position).max(0),
            // Nothing consumed yet on this partition: everything up to the end is pending.
            _ => high.max(0),
        };
        lag_gauge()
            .with_label_values(&[group, topic, &partition.to_string()])
            .set(lag);
        now.insert((group.to_string(), topic.to_string(), partition));
    }
    forget_unassigned(group, &now);
}

/// Publishes how many messages `producer` still holds.
pub fn record_producer_queue<P, X>(producer: &P, name: &str)
where
    P: Producer<X>,
    X: ProducerContext,
{
    queue_gauge()
        .with_label_values(&[name])
        .set(i64::from(producer.in_flight_count()));
}

/// Publishes a consumer's lag every `interval` until the consumer is dropped elsewhere.
pub fn spawn_lag_reporter<C, X>(consumer: Arc<C>, group: String, interval: Duration)
where
    C: Consumer<X> + Send + Sync + 'static,
    X: ConsumerContext + 'static,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        loop {
            ticker.tick().await;
            if Arc::strong_count(&consumer) == 1 {
                return;
            }
            let (c, g) = (Arc::clone(&consumer), group.clone());
            let _ = tokio::task::spawn_blocking(move || record_consumer_lag(&*c, &g)).await;
        }
    });
}

/// Publishes a producer's queue size every `interval` until the producer is dropped
/// elsewhere.
pub fn spawn_queue_reporter<P, X>(producer: Arc<P>, name: String, interval: Duration)
where
    P: Producer<X> + Send + Sync + 'static,
    X: ProducerContext + 'static,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        loop {
            ticker.tick().await;
            if Arc::strong_count(&producer) == 1 {
                return;
            }
            record_producer_queue(&*producer, &name);
        }
    });
}

fn delivery_errors() -> &'static prometheus::IntCounterVec {
    static COUNTER: OnceLock<prometheus::IntCounterVec> = OnceLock::new();
    COUNTER.get_or_init(|| {
        traffsure_telemetry::counter_vec(
            "traffsure_kafka_producer_errors_total",
            "Messages a producer could not deliver (each may be retried by its caller)",
            &["producer", "kind"],
        )
    })
}

/// Counts one message `producer` could not deliver, labelled `transient` or `permanent`
/// by whether sending it again may pass.
pub fn count_delivery_error(producer: &str, error: &rdkafka::error::KafkaError) {
    let kind = if crate::is_transient(error) {
        "transient"
    } else {
        "permanent"
    };
    delivery_errors().with_label_values(&[producer, kind]).inc();
}

/// Publishes the lag of a consumer group from its committed offsets, every `interval`,
/// on a thread of its own: end of each partition of `topics` minus the group's committed
/// position. For consumers owned by a loop that should not be interrupted (the lag is as
/// fresh as the last commit). Every instance of the group reports every partition, so
/// dashboards take the maximum per partition.
pub fn spawn_group_lag_reporter(
    settings: &traffsure_config::KafkaSettings,
    group: String,
    topics: Vec<String>,
    interval: Duration,
) -> Result<(), rdkafka::error::KafkaError> {
    // Never subscribes, so it asks for the group's offsets without joining it.
    let reader: rdkafka::consumer::BaseConsumer = crate::client_config(settings)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()?;
    let spawned = std::thread::Builder::new()
        .name("kafka-lag".into())
        .spawn(move || loop {
            record_group_lag(&reader, &group, &topics);
            std::thread::sleep(interval);
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "consumer lag reporter not started");
    }
    Ok(())
}

fn record_group_lag(reader: &rdkafka::consumer::BaseConsumer, group: &str, topics: &[String]) {
    let timeout = Duration::from_secs(5);
    let mut list = rdkafka::TopicPartitionList::new();
    for topic in topics {
        let Ok(metadata) = reader.fetch_metadata(Some(topic), timeout) else {
            return;
        };
        for t in metadata.topics() {
            for p in t.partitions() {
                list.add_partition(topic, p.id());
            }
        }
    }
    let Ok(committed) = reader.committed_offsets(list, timeout) else {
        return;
    };
    let mut now = BTreeSet::new();
    for element in committed.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        let Ok((low, high)) = reader.fetch_watermarks(topic, partition, timeout) else {
            continue;
        };
        let lag = match element.offset() {
            Offset::Offset(position) => (high - position).max(0),
            // Nothing committed yet: everything still on the partition is pending.
            _ => (high - low).max(0),
        };
        lag_gauge()
            .with_label_values(&[group, topic, &partition.to_string()])
            .set(lag);
        now.insert((group.to_string(), topic.to_string(), partition));
    }
    forget_unassigned(group, &now);
}

/// Removes the lag of partitions of `group` that are no longer in `now`.
fn forget_unassigned(group: &str, now: &BTreeSet<(String, String, i32)>) {
    let Ok(mut published) = published().lock() else {
        return;
    };
    let gone: Vec<_> = published
        .iter()
        .filter(|(g, _, _)| g == group)
        .filter(|key| !now.contains(*key))
        .cloned()
        .collect();
    for (g, topic, partition) in gone {
        let _ = lag_gauge().remove_label_values(&[&g, &topic, &partition.to_string()]);
        published.remove(&(g, topic, partition));
    }
    published.extend(now.iter().cloned());
}

/// Publishes the queue of a producer that lives as long as the process (a
/// `FutureProducer` is a cheap handle: its clones share one client).
pub fn spawn_future_producer_queue_reporter(
    producer: rdkafka::producer::FutureProducer,
    name: String,
    interval: Duration,
) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        loop {
            ticker.tick().await;
            record_producer_queue(&producer, &name);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_errors_are_split_by_whether_a_retry_may_pass() {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        count_delivery_error(
            "test",
            &KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
        );
        count_delivery_error(
            "test",
            &KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        );
        count_delivery_error(
            "test",
            &KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
        );
        let counter = delivery_errors();
        assert_eq!(counter.with_label_values(&["test", "transient"]).get(), 1);
        assert_eq!(counter.with_label_values(&["test", "permanent"]).get(), 2);
    }

    #[test]
    fn lag_of_partitions_no_longer_assigned_is_removed() {
        let group = "forget-test";
        lag_gauge().with_label_values(&[group, "t", "0"]).set(5);
        lag_gauge().with_label_values(&[group, "t", "1"]).set(7);
        let both: BTreeSet<_> = [
            (group.to_string(), "t".to_string(), 0),
            (group.to_string(), "t".to_string(), 1),
        ]
        .into_iter()
        .collect();
        forget_unassigned(group, &both);
        let one: BTreeSet<_> = [(group.to_string(), "t".to_string(), 1)]
            .into_iter()
            .collect();
        forget_unassigned(group, &one);
        let families = prometheus::gather();
        let partitions: Vec<String> = families
            .iter()
            .filter(|f| f.name() == "traffsure_kafka_consumer_lag")
            .flat_map(|f| f.get_metric().iter())
            .filter(|m| m.get_label().iter().any(|l| l.value() == group))
            .flat_map(|m| m.get_label().iter())
            .filter(|l| l.name() == "partition")
            .map(|l| l.value().to_string())
            .collect();
        assert_eq!(partitions, vec!["1".to_string()]);
    }
}

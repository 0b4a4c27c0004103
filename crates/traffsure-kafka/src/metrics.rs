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
    published.extend(now);
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

//! The sink's dead-letter topic: messages that cannot be decoded, and rows ClickHouse
//! refuses as bad data, go there with where they came from and why, so they never
//! block a partition. A message's offset is stored only once it is there.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use traffsure_kafka::retry;

use crate::metrics;
use crate::tables::RefusedMessage;
use crate::SINK_BACKOFF;

pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetters {
    pub fn new(producer: FutureProducer, topic: String) -> Self {
        Self { producer, topic }
    }

    /// Publishes a refused message, retrying until the broker takes it: a failed
    /// publish is retried, never passed over.
    pub async fn publish(&self, refused: &RefusedMessage) {
        let (topic, r) = (refused.topic.as_str(), &refused.message);
        metrics::messages()
            .with_label_values(&[refused.table, "dead_letter"])
            .inc();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "topic",
                value: Some(topic),
            })
            .insert(Header {
                key: "partition",
                value: Some(&r.partition.to_string()),
            })
            .insert(Header {
                key: "offset",
                value: Some(&r.offset.to_string()),
            })
            .insert(Header {
                key: "reason",
                value: Some(&r.reason),
            });
        let what = format!(
            "dead-letter publish of {topic} partition {} offset {}",
            r.partition, r.offset
        );
        #[cfg(debug_assertions)]
        traffsure_kafka::fault_point(rdkafka::producer::Producer::client(&self.producer));
        retry::forever(&what, &SINK_BACKOFF, || async {
            let record = FutureRecord::<(), [u8]>::to(&self.topic)
                .payload(&r.payload)
                .headers(headers.clone());
            self.producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(error, _)| {
                    traffsure_kafka::metrics::count_delivery_error("sink", &error);
                    error
                })
        })
        .await;
    }
}

//! Writing events straight to a test stack's Kafka topics, for tests that drive the sink
//! without the edges in front of it.

use anyhow::Context;
use prost::Message;
use rdkafka::producer::FutureProducer;
use traffsure_config::KafkaSettings;
use traffsure_kafka::Topics;

use crate::Stack;

/// A producer on the stack's Kafka with its topic names.
pub struct Producer {
    pub topics: Topics,
    producer: FutureProducer,
}

impl Producer {
    pub fn new(stack: &Stack) -> anyhow::Result<Self> {
        let settings = KafkaSettings {
            topic_prefix: stack.topic_prefix.clone(),
            ..crate::secured::kafka_settings(&stack.options.kafka_brokers)
        };
        Ok(Self {
            topics: Topics::new(&stack.topic_prefix),
            producer: traffsure_kafka::producer(&settings)?,
        })
    }

    /// Sends raw payloads to `topic`, each keyed, and waits for every acknowledgement.
    pub async fn send_raw(
        &self,
        topic: &str,
        messages: &[(Vec<u8>, Vec<u8>)],
    ) -> anyhow::Result<()> {
        traffsure_kafka::send_all(&self.producer, topic, messages)
            .await
            .context("send to kafka")
    }

    /// Sends Protobuf events to `topic`, keyed by the routing key each one maps to.
    pub async fn send<M: Message>(&self, topic: &str, events: &[(u16, M)]) -> anyhow::Result<()> {
        let messages: Vec<(Vec<u8>, Vec<u8>)> = events
            .iter()
            .map(|(key, event)| {
                (
                    traffsure_kafka::routing_key_bytes(*key).to_vec(),
                    event.encode_to_vec(),
                )
            })
            .collect();
        self.send_raw(topic, &messages).await
    }
}

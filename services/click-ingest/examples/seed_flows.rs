//! Writes N benchmark flows (slugs `bench-0`…) to a `flows` topic, each with a weighted
//! default set, two rules and a bot URL, as the reporting API would store them.
//! Usage: seed_flows BROKERS TOPIC_PREFIX COUNT

use std::time::Duration;

use anyhow::Context;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use traffsure_core::flow::FlowSpec;
use traffsure_events::Flow;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, brokers, prefix, count] = args.as_slice() else {
        anyhow::bail!("usage: seed_flows BROKERS TOPIC_PREFIX COUNT");
    };
    let count: u32 = count.parse().context("COUNT")?;
    let settings = traffsure_config::KafkaSettings {
        brokers: brokers.clone(),
        topic_prefix: prefix.clone(),
        ..Default::default()
    };
    let topics = traffsure_kafka::Topics::new(prefix);
    traffsure_kafka::ensure_topics(&settings, &topics).await?;
    let producer: FutureProducer = traffsure_kafka::producer_config(&settings).create()?;
    let now = traffsure_core::now_ms();
    let mut pending = Vec::new();
    for id in 1..=count {
        let spec: FlowSpec = serde_json::from_value(serde_json::json!({
            "name": format!("Bench {id}"),
            "slug": format!("bench-{}", id - 1),
            "destination_url": "https://offer.example/fallback?c={click}",
            "destinations": [
                {"url": "https://offer.example/a?c={click}&s={sub_id}&src={source}&co={country}&d={device}", "weight": 3},
                {"url": "https://offer.example/b?c={click}&s={sub_id}&src={source}&co={country}&d={device}", "weight": 1}
            ],
            "rules": [
                {"conditions": [{"field": "country", "values": ["DE", "AT", "CH"]}, {"field": "device", "values": ["mobile"]}],
                 "destinations": [{"url": "https://offer.example/dach?c={click}"}]},
                {"conditions": [{"field": "ip", "values": ["10.0.0.0/8"]}],
                 "destinations": [{"url": "https://offer.example/office?c={click}"}]}
            ],
            "bot_url": "https://offer.example/bots?c={click}"
        }))?;
        let mut flow = Flow {
            id,
            ..Flow::default()
        };
        spec.apply(&mut flow, now)
            .map_err(|e| anyhow::anyhow!("flow {id}: {e}"))?;
        let payload = prost::Message::encode_to_vec(&flow);
        let key = id.to_string();
        let producer = producer.clone();
        let topic = topics.flows.clone();
        pending.push(tokio::spawn(async move {
            producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| anyhow::anyhow!("flow {id}: {e}"))
        }));
    }
    for task in pending {
        task.await??;
    }
    producer.flush(Duration::from_secs(30))?;
    println!("{count} flows written to {}", topics.flows);
    Ok(())
}

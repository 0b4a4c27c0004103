//! Load and measurement tool for `bench/dispatcher.sh`.
//!
//! ```text
//! dispatcher-load produce BROKERS PREFIX N URL [URL...]   flow 1 with outbound o1, o2… → URLs, then N conversions
//! dispatcher-load measure BROKERS PREFIX N OUTBOUND_ID TIMEOUT_S   waits for N delivered attempts, prints the rate
//! dispatcher-load hang PORT                              accepts connections and never answers
//! ```

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use prost::Message as _;
use rdkafka::producer::FutureRecord;
use rdkafka::Message as _;
use traffsure_config::KafkaSettings;
use traffsure_events::{
    Conversion, ConversionStatus, Flow, FlowStatus, Goal, OutboundAttempt, OutboundPostback,
    OutboundState,
};
use traffsure_kafka::reader::PartitionReader;
use traffsure_kafka::Topics;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("produce") if args.len() >= 5 => {
            produce(&args[1], &args[2], args[3].parse()?, &args[4..]).await
        }
        Some("measure") if args.len() == 6 => {
            measure(
                &args[1],
                &args[2],
                args[3].parse()?,
                &args[4],
                args[5].parse()?,
            )
            .await
        }
        Some("hang") if args.len() == 2 => hang(args[1].parse()?).await,
        _ => bail!("usage: see the header of examples/dispatcher-load.rs"),
    }
}

fn settings(brokers: &str, prefix: &str) -> KafkaSettings {
    KafkaSettings {
        brokers: brokers.into(),
        topic_prefix: prefix.into(),
        ..KafkaSettings::default()
    }
}

async fn produce(brokers: &str, prefix: &str, n: usize, urls: &[String]) -> anyhow::Result<()> {
    let settings = settings(brokers, prefix);
    let topics = Topics::new(prefix);
    traffsure_kafka::ensure_topics(&settings, &topics).await?;
    let producer = traffsure_kafka::producer(&settings)?;
    let mut flow = Flow {
        id: 1,
        slug: "bench".into(),
        name: "Bench".into(),
        destination_url: "https://offer.test/?c={click}".into(),
        default_goal: "sale".into(),
        goals: vec![Goal {
            key: "sale".into(),
            ..Goal::default()
        }],
        revision: 1,
        outbound_postbacks: urls
            .iter()
            .enumerate()
            .map(|(i, url)| OutboundPostback {
                id: format!("o{}", i + 1),
                url: url.clone(),
                method: "GET".into(),
                body_format: "form".into(),
                on_status: "any".into(),
                enabled: true,
                ..OutboundPostback::default()
            })
            .collect(),
        ..Flow::default()
    };
    flow.set_status(FlowStatus::Active);
    traffsure_kafka::send_event(&producer, &topics.flows, b"1", &flow).await?;
    let started = Instant::now();
    let mut acks = Vec::with_capacity(n);
    for i in 0..n {
        let mut conversion = Conversion {
            conversion_id: format!("bench-{i}"),
            version: 1,
            click_hash: format!("click{i}"),
            flow_id: 1,
            goal: "sale".into(),
            revenue_micros: 2_500_000,
            currency: "USD".into(),
            uid: format!("tx{i}"),
            sub_id: format!("s{i}"),
            routing_key: (i % 65_536) as u32,
            created_at_ms: traffsure_core::now_ms(),
            updated_at_ms: traffsure_core::now_ms(),
            ..Conversion::default()
        };
        conversion.set_status(ConversionStatus::Approved);
        let payload = conversion.encode_to_vec();
        let key = traffsure_kafka::routing_key_bytes(i as u16);
        let record = FutureRecord::to(&topics.conversions)
            .key(&key)
            .payload(&payload);
        acks.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| anyhow::anyhow!("enqueue conversion: {e}"))?,
        );
    }
    for ack in acks {
        ack.await
            .context("producer closed")?
            .map_err(|(e, _)| anyhow::anyhow!("conversion not acknowledged: {e}"))?;
    }
    eprintln!(
        "produced {n} conversions in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Reads `outbound-log` until `n` attempts of `outbound_id` were delivered; prints
/// "delivered seconds per_second" from the first to the last delivered attempt.
async fn measure(
    brokers: &str,
    prefix: &str,
    n: usize,
    outbound_id: &str,
    timeout_s: u64,
) -> anyhow::Result<()> {
    let settings = settings(brokers, prefix);
    let topics = Topics::new(prefix);
    // Nothing else runs meanwhile: the reader may block this thread.
    let reader = PartitionReader::open_all(&settings, &topics.outbound_log)?;
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    let (mut delivered, mut first, mut last, mut other) = (0usize, i64::MAX, 0i64, 0usize);
    while delivered < n {
        if Instant::now() >= deadline {
            break;
        }
        let Some(message) = reader.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?;
        let Some(Ok(attempt)) = message.payload().map(OutboundAttempt::decode) else {
            continue;
        };
        if attempt.outbound_id != outbound_id {
            other += 1;
            continue;
        }
        if attempt.state() == OutboundState::Delivered {
            delivered += 1;
            let done = attempt.attempted_at_ms + i64::from(attempt.latency_ms);
            first = first.min(attempt.attempted_at_ms);
            last = last.max(done);
        }
    }
    let seconds = (last - first).max(1) as f64 / 1000.0;
    eprintln!("{delivered} of {n} delivered, {other} attempts of other outbound postbacks");
    println!("{delivered} {seconds:.3} {:.0}", delivered as f64 / seconds);
    Ok(())
}

/// An endpoint that hangs: accepts connections, reads nothing, answers nothing.
async fn hang(port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let mut open = Vec::new();
    loop {
        let (socket, _) = listener.accept().await?;
        open.push(socket);
    }
}

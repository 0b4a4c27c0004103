//! sink: writes every event topic to its ClickHouse table.
//!
//! Rows are batched per table (by count and by age) and inserted as RowBinary, one
//! insert per table at a time while the next batch fills; a batch's Kafka offsets are
//! stored only after ClickHouse acknowledged the insert and its checkpoint showed the
//! rows. Each row keeps its partition, offset and message fingerprint, so on start or
//! after a rebalance every partition resumes past the checkpoint its table holds, unless
//! the topic was recreated meanwhile (see `table` and `identity`). With several
//! ClickHouse shards, partition `p`'s rows go to shard `p mod N` (`shards`).
//! Undecodable messages, and rows ClickHouse refuses as bad data, go to the dead-letter
//! topic and never block a partition. While ClickHouse is down the insert is retried and the loop reads no
//! more than the next batch, so Kafka holds the backlog and memory stays bounded. Old
//! partitions are dropped per table on a schedule (`retention`).
//!
//! This file holds the settings and the wiring; the batching policy lives with the
//! tables (`tables`), the loop in `consume`, the dead-letter topic in `dead_letter`.

mod consume;
mod dead_letter;
mod identity;
mod markers;
mod metrics;
mod repair;
mod retention;
mod rows;
mod shards;
mod table;
mod tables;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{Consumer, StreamConsumer};
use serde::Deserialize;
use traffsure_config::{ClickHouseSettings, HttpSettings, KafkaSettings, TelemetrySettings};
use traffsure_kafka::rebalance::RebalanceContext;
use traffsure_kafka::retry::{self, Backoff};
use traffsure_kafka::Topics;
use traffsure_telemetry::Health;

use consume::Sink;
use dead_letter::DeadLetters;
use identity::TopicIdentity;
use retention::RetentionSettings;
use shards::Shards;
use table::InsertsInFlight;
use tables::{BatchPolicy, Tables};

/// How the sink retries what must not be passed over (an insert, a checkpoint read, a
/// dead letter): from 200 ms, doubling to 5 s.
const SINK_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(5),
};

#[derive(Debug, Deserialize)]
// Unknown top-level sections are ignored: one environment may configure several services.
#[serde(default)]
struct Settings {
    http: HttpSettings,
    kafka: KafkaSettings,
    clickhouse: ClickHouseSettings,
    telemetry: TelemetrySettings,
    group_id: String,
    /// A table's batch is inserted when it holds this many rows...
    batch_rows: usize,
    /// ...or when its oldest row has waited this long.
    batch_interval_ms: u64,
    retention: RetentionSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::on("127.0.0.1:9102"),
            kafka: KafkaSettings::default(),
            clickhouse: ClickHouseSettings::default(),
            telemetry: TelemetrySettings::default(),
            group_id: "traffsure-sink".into(),
            batch_rows: 200_000,
            batch_interval_ms: 1_000,
            retention: RetentionSettings::default(),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = traffsure_config::load("sink")?;
    let _telemetry = traffsure_telemetry::init("sink", &settings.telemetry)?;
    let health = Health::new();
    let schema_ready = health.register("clickhouse_schema");
    let ops = traffsure_telemetry::serve_ops(&settings.http.bind, health.clone())?;
    let ops_handle = ops.handle();
    tokio::spawn(ops);

    let topics = Topics::new(&settings.kafka.topic_prefix);
    traffsure_kafka::ensure_topics(&settings.kafka, &topics)
        .await
        .context("create topics")?;
    traffsure_kafka::ensure_dead_letter_topic(&settings.kafka, &topics, "sink")
        .await
        .context("create the dead-letter topic")?;
    traffsure_clickhouse::check_access(&settings.clickhouse).await?;
    let shards = Shards::new(
        traffsure_clickhouse::shards::clients(&settings.clickhouse)
            .map_err(|why| anyhow::anyhow!("clickhouse.shards: {why}"))?,
    );
    retry::forever("clickhouse migrations", &Backoff::default(), || {
        traffsure_clickhouse::migrate(&settings.clickhouse)
    })
    .await;
    schema_ready.set_ready(true);

    // Each shard drops its own expired partitions.
    for client in shards.all() {
        tokio::spawn(retention::enforce(
            client.clone(),
            settings.retention.clone(),
        ));
    }

    let inserts: Arc<InsertsInFlight> = Arc::default();
    let (context, moves) = consume::rebalances(inserts.clone())?;
    let consumer: StreamConsumer<RebalanceContext> =
        traffsure_kafka::group_consumer_config(&settings.kafka, &settings.group_id)
            // What librdkafka prefetches per partition while the loop waits: bounds memory.
            .set("queued.max.messages.kbytes", "8192")
            .set("max.partition.fetch.bytes", "8388608")
            .set("fetch.max.bytes", "33554432")
            .create_with_context(context)?;
    let policy = BatchPolicy {
        rows: settings.batch_rows.max(1),
        interval: Duration::from_millis(settings.batch_interval_ms),
    };
    let mut tables = Tables::new(&topics, policy);
    let topic_names = tables.topics();
    consumer.subscribe(&topic_names.iter().map(String::as_str).collect::<Vec<_>>())?;
    traffsure_kafka::metrics::spawn_group_lag_reporter(
        &settings.kafka,
        settings.group_id.clone(),
        topic_names.clone(),
        Duration::from_secs(5),
    )?;
    let producer = traffsure_kafka::producer(&settings.kafka)?;
    traffsure_kafka::metrics::spawn_future_producer_queue_reporter(
        producer.clone(),
        "sink".into(),
        Duration::from_secs(1),
    );
    let sink = Sink {
        consumer,
        moves,
        shards: shards.clone(),
        identity: Arc::new(TopicIdentity::new(&settings.kafka, &settings.group_id)?),
        inserts,
        tables,
        dead_letters: DeadLetters::new(producer.clone(), topics.dead_letter("sink")),
    };
    tracing::info!(shards = shards.len(), "sink running");
    // A producer that failed for good takes no dead letter, and the batch waiting on one
    // would wait for ever: stop, so that the restart resumes from the committed
    // positions (and the insert markers) with a new producer.
    let fatal = traffsure_kafka::until_producer_fails(producer);
    let result = tokio::select! {
        ran = sink.run() => ran,
        reason = fatal => Err(anyhow::anyhow!(reason)),
    };
    ops_handle.stop(true).await;
    result
}

//! sink: writes every event topic to its ClickHouse table.
//!
//! Rows are batched per table (by count and by age) and inserted as RowBinary; a batch's
//! Kafka offsets are stored only after ClickHouse acknowledged the insert and the rows
//! were counted back. Each row keeps its partition and offset, so on start or after a
//! rebalance every partition resumes past the highest offset its table already holds.
//! Undecodable messages go to the dead-letter topic and never block a partition.

mod rows;
mod table;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clickhouse::Client;
use rdkafka::consumer::{Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde::Deserialize;
use traffsure_config::{ClickHouseSettings, HttpSettings, KafkaSettings, TelemetrySettings};
use traffsure_kafka::Topics;
use traffsure_telemetry::prometheus::IntCounterVec;
use traffsure_telemetry::Health;

use table::{Accepted, TableSink};

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
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::on("127.0.0.1:9102"),
            kafka: KafkaSettings::default(),
            clickhouse: ClickHouseSettings::default(),
            telemetry: TelemetrySettings::default(),
            group_id: "traffsure-sink".into(),
            batch_rows: 50_000,
            batch_interval_ms: 1_000,
        }
    }
}

fn rows_total() -> &'static IntCounterVec {
    static METRIC: std::sync::OnceLock<IntCounterVec> = std::sync::OnceLock::new();
    METRIC.get_or_init(|| {
        traffsure_telemetry::counter_vec(
            "traffsure_sink_messages_total",
            "Messages by table and outcome",
            &["table", "outcome"],
        )
    })
}

/// Counts rebalances, so the loop knows when partitions may have moved.
struct RebalanceCounter(Arc<AtomicU64>);

impl ClientContext for RebalanceCounter {}

impl ConsumerContext for RebalanceCounter {
    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if !matches!(rebalance, Rebalance::Error(_)) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

struct Tables {
    /// The rebalance count the pending batches belong to.
    generation: u64,
    clicks: TableSink<rows::ClickRow>,
    conversions: TableSink<rows::ConversionRow>,
    postback_log: TableSink<rows::PostbackLogRow>,
    postback_results: TableSink<rows::PostbackResultRow>,
    flows: TableSink<rows::FlowRow>,
}

/// Runs `$body` with `$t` bound to each table in turn.
macro_rules! each_table {
    ($tables:expr, $t:ident => $body:expr) => {{
        {
            let $t = &mut $tables.clicks;
            $body
        }
        {
            let $t = &mut $tables.conversions;
            $body
        }
        {
            let $t = &mut $tables.postback_log;
            $body
        }
        {
            let $t = &mut $tables.postback_results;
            $body
        }
        {
            let $t = &mut $tables.flows;
            $body
        }
    }};
}

impl Tables {
    fn new(topics: &Topics) -> Self {
        Self {
            generation: 0,
            clicks: TableSink::new("clicks", topics.clicks.clone(), rows::click_row),
            conversions: TableSink::new(
                "conversions",
                topics.conversions.clone(),
                rows::conversion_row,
            ),
            postback_log: TableSink::new(
                "postback_log",
                topics.postback_log.clone(),
                rows::postback_log_row,
            ),
            postback_results: TableSink::new(
                "postback_results",
                topics.postback_results.clone(),
                rows::postback_result_row,
            ),
            flows: TableSink::new("flows", topics.flows.clone(), rows::flow_row),
        }
    }

    fn topics(&mut self) -> Vec<String> {
        let mut topics = Vec::new();
        each_table!(self, t => topics.push(t.topic.clone()));
        topics
    }

    async fn accept(
        &mut self,
        client: &Client,
        topic: &str,
        partition: i32,
        offset: i64,
        payload: &[u8],
    ) -> anyhow::Result<(&'static str, Accepted)> {
        each_table!(self, t => if t.topic == topic {
            return Ok((t.table, t.accept(client, partition, offset, payload).await?));
        });
        anyhow::bail!("message from unexpected topic {topic}")
    }

    /// After a rebalance, drops pending batches and checkpoints: their partitions may
    /// belong to another instance now, which replays them from the stored offsets.
    fn forget_moved_partitions(&mut self, rebalances: &AtomicU64) {
        let current = rebalances.load(Ordering::SeqCst);
        if current != self.generation {
            self.generation = current;
            each_table!(self, t => t.reset());
        }
    }
}

struct Sink {
    consumer: StreamConsumer<RebalanceCounter>,
    rebalances: Arc<AtomicU64>,
    producer: FutureProducer,
    client: Client,
    tables: Tables,
    dead_letter: String,
    batch_rows: usize,
    batch_interval: Duration,
}

impl Sink {
    async fn run(mut self) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                message = self.consumer.recv() => {
                    let message = match message {
                        Ok(m) => m,
                        Err(error) => {
                            tracing::warn!(%error, "consume failed");
                            continue;
                        }
                    };
                    self.tables.forget_moved_partitions(&self.rebalances);
                    let (topic, partition, offset) = (message.topic().to_string(), message.partition(), message.offset());
                    let payload = message.payload().unwrap_or_default();
                    let (table, accepted) = self.tables.accept(&self.client, &topic, partition, offset, payload).await?;
                    match accepted {
                        Accepted::Row => rows_total().with_label_values(&[table, "row"]).inc(),
                        Accepted::AlreadyStored => rows_total().with_label_values(&[table, "already_stored"]).inc(),
                        Accepted::Poison(reason) => {
                            rows_total().with_label_values(&[table, "dead_letter"]).inc();
                            tracing::warn!(topic, partition, offset, reason, "dead-lettering undecodable message");
                            self.dead_letter(&topic, partition, offset, payload, &reason).await?;
                        }
                    }
                    self.flush(false).await?;
                }
                _ = tick.tick() => self.flush(false).await?,
                _ = traffsure_telemetry::shutdown_signal() => {
                    self.flush(true).await?;
                    self.consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync)?;
                    return Ok(());
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        payload: &[u8],
        reason: &str,
    ) -> anyhow::Result<()> {
        use rdkafka::message::{Header, OwnedHeaders};
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "topic",
                value: Some(topic),
            })
            .insert(Header {
                key: "partition",
                value: Some(&partition.to_string()),
            })
            .insert(Header {
                key: "offset",
                value: Some(&offset.to_string()),
            })
            .insert(Header {
                key: "reason",
                value: Some(reason),
            });
        let record = rdkafka::producer::FutureRecord::<(), [u8]>::to(&self.dead_letter)
            .payload(payload)
            .headers(headers);
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("dead-letter publish failed: {e}"))?;
        Ok(())
    }

    /// Inserts every table batch that is full or old enough (all of them when `force`),
    /// retrying ClickHouse errors with backoff: rows are never skipped.
    async fn flush(&mut self, force: bool) -> anyhow::Result<()> {
        self.tables.forget_moved_partitions(&self.rebalances);
        let (batch_rows, batch_interval) = (self.batch_rows, self.batch_interval);
        let mut backoff = Duration::from_millis(200);
        let mut offsets = TopicPartitionList::new();
        each_table!(self.tables, t => {
            let due = force || t.len() >= batch_rows || t.oldest().is_some_and(|o| o.elapsed() >= batch_interval);
            if due {
                loop {
                    let started = Instant::now();
                    match t.flush(&self.client).await {
                        Ok(written) => {
                            if written > 0 {
                                tracing::debug!(table = t.table, rows = written, ms = started.elapsed().as_millis() as u64, "batch inserted");
                            }
                            break;
                        }
                        Err(error) => {
                            tracing::warn!(table = t.table, %error, retry_ms = backoff.as_millis() as u64, "insert failed, retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(10));
                        }
                    }
                }
            }
            // With nothing pending, every message read so far is stored or was skipped
            // (already stored, dead-lettered): its offset may move on.
            if t.len() == 0 {
                for (partition, next) in t.next_offsets() {
                    offsets.add_partition_offset(&t.topic, *partition, Offset::Offset(*next))?;
                }
            }
        });
        if offsets.count() > 0 {
            // A partition revoked this very moment refuses the store; its new owner
            // resumes from the table's checkpoint, so this is not an error.
            if let Err(error) = self.consumer.store_offsets(&offsets) {
                tracing::warn!(%error, "offsets not stored");
            }
        }
        Ok(())
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
    let mut delay = Duration::from_millis(500);
    loop {
        match traffsure_clickhouse::migrate(&settings.clickhouse).await {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(%error, retry_ms = delay.as_millis() as u64, "clickhouse migrations failed, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    schema_ready.set_ready(true);

    let rebalances = Arc::new(AtomicU64::new(0));
    let consumer: StreamConsumer<RebalanceCounter> =
        traffsure_kafka::group_consumer_config(&settings.kafka, &settings.group_id)
            .create_with_context(RebalanceCounter(rebalances.clone()))?;
    let mut tables = Tables::new(&topics);
    let topic_names = tables.topics();
    consumer.subscribe(&topic_names.iter().map(String::as_str).collect::<Vec<_>>())?;
    let sink = Sink {
        consumer,
        rebalances,
        producer: traffsure_kafka::producer(&settings.kafka)?,
        client: traffsure_clickhouse::client(&settings.clickhouse),
        tables,
        dead_letter: topics.dead_letter("sink"),
        batch_rows: settings.batch_rows.max(1),
        batch_interval: Duration::from_millis(settings.batch_interval_ms),
    };
    tracing::info!("sink running");
    let result = sink.run().await;
    ops_handle.stop(true).await;
    result
}

//! sink: writes every event topic to its ClickHouse table.
//!
//! Rows are batched per table (by count and by age) and inserted as RowBinary; a batch's
//! Kafka offsets are stored only after ClickHouse acknowledged the insert and the rows
//! were counted back. Each row keeps its partition and offset, so on start or after a
//! rebalance every partition resumes past the highest offset its table already holds
//! (see `table`). Undecodable messages, and rows ClickHouse refuses as bad data, go to the
//! dead-letter topic and never block a partition. While ClickHouse is down the loop
//! retries the insert and reads nothing more, so Kafka holds the backlog and memory stays
//! bounded. Old partitions are dropped per table on a schedule (`retention`).

mod rows;
mod table;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clickhouse::Client;
use rdkafka::consumer::{Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde::Deserialize;
use traffsure_clickhouse::retention;
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
    retention: RetentionSettings,
}

/// Days of data each table keeps (0: everything); older partitions are dropped.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RetentionSettings {
    clicks_days: u32,
    conversions_days: u32,
    postback_log_days: u32,
    postback_results_days: u32,
    outbound_log_days: u32,
    clicks_hourly_days: u32,
    conversions_hourly_days: u32,
    /// How often the partitions are checked.
    interval_secs: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            clicks_days: 0,
            conversions_days: 0,
            postback_log_days: 93,
            postback_results_days: 0,
            outbound_log_days: 93,
            clicks_hourly_days: 0,
            conversions_hourly_days: 0,
            interval_secs: 3600,
        }
    }
}

impl RetentionSettings {
    fn tables(&self) -> [(&'static str, u32); 7] {
        [
            ("clicks", self.clicks_days),
            ("conversions", self.conversions_days),
            ("postback_log", self.postback_log_days),
            ("postback_results", self.postback_results_days),
            ("outbound_log", self.outbound_log_days),
            ("clicks_hourly", self.clicks_hourly_days),
            ("conversions_hourly", self.conversions_hourly_days),
        ]
    }
}

/// Drops expired partitions now and then every `interval_secs`.
async fn enforce_retention(client: Client, settings: RetentionSettings) {
    let mut tick = tokio::time::interval(Duration::from_secs(settings.interval_secs.max(1)));
    loop {
        tick.tick().await;
        for (table, days) in settings.tables() {
            if let Err(error) =
                retention::drop_expired(&client, table, days, retention::today()).await
            {
                tracing::warn!(table, %error, "retention check failed");
            }
        }
    }
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
            retention: RetentionSettings::default(),
        }
    }
}

fn insert_errors() -> &'static IntCounterVec {
    static METRIC: std::sync::OnceLock<IntCounterVec> = std::sync::OnceLock::new();
    METRIC.get_or_init(|| {
        traffsure_telemetry::counter_vec(
            "traffsure_sink_insert_errors_total",
            "Failed ClickHouse inserts by table (each is retried)",
            &["table"],
        )
    })
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

/// Partitions (topic, partition) revoked from or assigned to this instance since the
/// loop last looked. Rebalance callbacks run inside the consumer's poll, which the loop
/// never runs during a flush, so a flush never races a moving partition.
type Moved = Arc<Mutex<Vec<(String, i32)>>>;

struct MovedPartitions(Moved);

impl MovedPartitions {
    fn record(&self, list: &TopicPartitionList) {
        let mut moved = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for e in list.elements() {
            moved.push((e.topic().to_string(), e.partition()));
        }
    }
}

impl ClientContext for MovedPartitions {}

impl ConsumerContext for MovedPartitions {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            self.record(list);
        }
    }

    fn post_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            self.record(list);
        }
    }
}

struct Tables {
    clicks: TableSink<rows::ClickRow>,
    conversions: TableSink<rows::ConversionRow>,
    postback_log: TableSink<rows::PostbackLogRow>,
    postback_results: TableSink<rows::PostbackResultRow>,
    outbound_log: TableSink<rows::OutboundRow>,
    flows: TableSink<rows::FlowRow>,
}

/// Runs `$body` with `$t` bound to each table in turn.
macro_rules! each_table {
    ($tables:expr, $t:ident => $body:expr) => {
        each_table!(@fields $tables, $t => $body;
            clicks conversions postback_log postback_results outbound_log flows)
    };
    (@fields $tables:expr, $t:ident => $body:expr; $($field:ident)*) => {{
        $({
            let $t = &mut $tables.$field;
            $body
        })*
    }};
}

impl Tables {
    fn new(topics: &Topics) -> Self {
        Self {
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
            outbound_log: TableSink::new(
                "outbound_log",
                topics.outbound_log.clone(),
                rows::outbound_row,
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

    /// Forgets the pending rows and checkpoints of partitions that moved: a revoked
    /// partition's new owner replays them from the stored offsets, and an assigned one
    /// resumes from what its table holds now.
    fn forget_moved_partitions(&mut self, moved: &Moved) {
        let moved = std::mem::take(&mut *moved.lock().unwrap_or_else(|e| e.into_inner()));
        for (topic, partition) in moved {
            each_table!(self, t => if t.topic == topic {
                t.forget(partition);
            });
        }
    }
}

/// Hands a message to its table, retrying while ClickHouse cannot tell the
/// partition's checkpoint (it is down, say): a message is never passed over.
async fn accept_retrying(
    tables: &mut Tables,
    client: &Client,
    topic: &str,
    partition: i32,
    offset: i64,
    payload: &[u8],
) -> anyhow::Result<(&'static str, Accepted)> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match tables
            .accept(client, topic, partition, offset, payload)
            .await
        {
            Err(error) if error.downcast_ref::<clickhouse::error::Error>().is_some() => {
                tracing::warn!(topic, partition, %error, retry_ms = backoff.as_millis() as u64, "checkpoint read failed, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// How long a SIGTERM waits for the pending rows to reach ClickHouse.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(20);

struct Sink {
    consumer: StreamConsumer<MovedPartitions>,
    moved: Moved,
    producer: FutureProducer,
    client: Client,
    tables: Tables,
    dead_letter: String,
    batch_rows: usize,
    batch_interval: Duration,
    /// Trace contexts of the rows waiting in each topic's batch.
    traced: HashMap<String, traffsure_kafka::trace::BatchTraces>,
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
                    self.tables.forget_moved_partitions(&self.moved);
                    let (topic, partition, offset) = (message.topic().to_string(), message.partition(), message.offset());
                    let payload = message.payload().unwrap_or_default();
                    if traffsure_telemetry::otlp_enabled() {
                        self.traced.entry(topic.clone()).or_default().observe(message.headers());
                    }
                    let (table, accepted) = accept_retrying(&mut self.tables, &self.client, &topic, partition, offset, payload).await?;
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
                    // Pending rows get a bounded time to reach ClickHouse; if it cannot take
                    // them, they are left to Kafka (their offsets were never stored) and
                    // the next start writes them.
                    if tokio::time::timeout(SHUTDOWN_FLUSH, self.flush(true)).await.is_err() {
                        tracing::warn!("clickhouse did not take the pending rows before shutdown; they will be replayed");
                    }
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
        // The message's offset is stored only once it is on the dead-letter topic, so a
        // failed publish is retried, never passed over.
        let mut backoff = Duration::from_millis(200);
        loop {
            let record = rdkafka::producer::FutureRecord::<(), [u8]>::to(&self.dead_letter)
                .payload(payload)
                .headers(headers.clone());
            match self.producer.send(record, Duration::from_secs(30)).await {
                Ok(_) => return Ok(()),
                Err((error, _)) => {
                    traffsure_kafka::metrics::count_delivery_error("sink", &error);
                    tracing::warn!(topic, partition, offset, %error, "dead-letter publish failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Inserts every table batch that is full or old enough (all of them when `force`),
    /// retrying ClickHouse errors with backoff until the rows are in: rows are never
    /// skipped. Then dead-letters what ClickHouse refused and stores the offsets of every
    /// table with nothing pending.
    async fn flush(&mut self, force: bool) -> anyhow::Result<()> {
        self.tables.forget_moved_partitions(&self.moved);
        let (batch_rows, batch_interval) = (self.batch_rows, self.batch_interval);
        let mut offsets = TopicPartitionList::new();
        let mut refused = Vec::new();
        each_table!(self.tables, t => {
            let due = force || t.len() >= batch_rows || t.oldest().is_some_and(|o| o.elapsed() >= batch_interval);
            if due {
                let span = self.traced.get_mut(&t.topic).map(|b| b.take_span("sink insert")).unwrap_or_else(tracing::Span::none);
                let mut backoff = Duration::from_millis(200);
                loop {
                    let started = Instant::now();
                    match t.flush(&self.client).await {
                        Ok(written) => {
                            tracing::debug!(table = t.table, rows = written, ms = started.elapsed().as_millis() as u64, "batch inserted");
                            break;
                        }
                        Err(error) => {
                            insert_errors().with_label_values(&[t.table]).inc();
                            tracing::warn!(table = t.table, %error, retry_ms = backoff.as_millis() as u64, "insert failed, retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
                drop(span);
                for r in t.take_refused() {
                    refused.push((t.topic.clone(), t.table, r));
                }
            }
            if let Some(next) = t.take_offsets() {
                for (partition, offset) in next {
                    offsets.add_partition_offset(&t.topic, partition, Offset::Offset(offset))?;
                }
            }
        });
        for (topic, table, r) in refused {
            rows_total()
                .with_label_values(&[table, "dead_letter"])
                .inc();
            self.dead_letter(&topic, r.partition, r.offset, &r.payload, &r.reason)
                .await?;
        }
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

/// Creates the sink's dead-letter topic unless it exists (brokers need not create
/// topics on first use).
async fn ensure_dead_letter_topic(settings: &KafkaSettings, topic: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    let admin: AdminClient<DefaultClientContext> =
        traffsure_kafka::client_config(settings).create()?;
    let replication = TopicReplication::Fixed(settings.replication_factor.max(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin
        .create_topics(&[NewTopic::new(topic, 1, replication)], &options)
        .await?
    {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(())
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
    ensure_dead_letter_topic(&settings.kafka, &topics.dead_letter("sink"))
        .await
        .context("create the dead-letter topic")?;
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

    tokio::spawn(enforce_retention(
        traffsure_clickhouse::client(&settings.clickhouse),
        settings.retention.clone(),
    ));

    let moved: Moved = Arc::default();
    let consumer: StreamConsumer<MovedPartitions> =
        traffsure_kafka::group_consumer_config(&settings.kafka, &settings.group_id)
            // What librdkafka prefetches per partition while a flush runs: bounds memory.
            .set("queued.max.messages.kbytes", "8192")
            .create_with_context(MovedPartitions(moved.clone()))?;
    let mut tables = Tables::new(&topics);
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
        moved,
        producer,
        client: traffsure_clickhouse::client(&settings.clickhouse),
        tables,
        dead_letter: topics.dead_letter("sink"),
        batch_rows: settings.batch_rows.max(1),
        batch_interval: Duration::from_millis(settings.batch_interval_ms),
        traced: HashMap::new(),
    };
    tracing::info!("sink running");
    let result = sink.run().await;
    ops_handle.stop(true).await;
    result
}

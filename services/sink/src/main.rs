//! sink: writes every event topic to its ClickHouse table.
//!
//! Rows are batched per table (by count and by age) and inserted as RowBinary, one
//! insert per table at a time while the next batch fills; a batch's Kafka offsets are
//! stored only after ClickHouse acknowledged the insert and its checkpoint showed the
//! rows. Each row keeps its partition, offset and message fingerprint, so on start or
//! after a rebalance every partition resumes past the checkpoint its table holds, unless
//! the topic was recreated meanwhile (see `table` and `identity`). Undecodable messages,
//! and rows ClickHouse refuses as bad data, go to the dead-letter topic and never block
//! a partition. While ClickHouse is down the insert is retried and the loop reads no
//! more than the next batch, so Kafka holds the backlog and memory stays bounded. Old
//! partitions are dropped per table on a schedule (`retention`).

mod identity;
mod metrics;
mod rows;
mod table;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clickhouse::Client;
use rdkafka::consumer::{Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use serde::Deserialize;
use traffsure_clickhouse::retention;
use traffsure_config::{ClickHouseSettings, HttpSettings, KafkaSettings, TelemetrySettings};
use traffsure_kafka::Topics;
use traffsure_telemetry::Health;

use identity::TopicIdentity;
use table::{Accepted, InsertsInFlight, TableSink};

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
            batch_rows: 200_000,
            batch_interval_ms: 1_000,
            retention: RetentionSettings::default(),
        }
    }
}

/// Partitions (topic, partition) revoked from or assigned to this instance since the
/// loop last looked.
type Moved = Arc<Mutex<Vec<(String, i32)>>>;

/// How long a revocation waits for the inserts in flight before it lets the partitions
/// go: an insert still running after that (ClickHouse down) may race the new owner's.
const REVOKE_WAIT: Duration = Duration::from_secs(30);

/// Rebalance callbacks run inside the consumer's poll. A revocation first waits for the
/// inserts in flight, so the partition's next owner reads a checkpoint that already
/// counts them.
struct MovedPartitions {
    moved: Moved,
    inserts: Arc<InsertsInFlight>,
}

impl MovedPartitions {
    fn record(&self, list: &TopicPartitionList) {
        let mut moved = self.moved.lock().unwrap_or_else(|e| e.into_inner());
        for e in list.elements() {
            moved.push((e.topic().to_string(), e.partition()));
        }
    }
}

impl ClientContext for MovedPartitions {}

impl ConsumerContext for MovedPartitions {
    fn pre_rebalance(&self, _: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let wait = || self.inserts.wait_idle(REVOKE_WAIT);
            // The callback runs on a runtime thread: other tasks move off it meanwhile.
            let idle = match tokio::runtime::Handle::try_current() {
                Ok(handle)
                    if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
                {
                    tokio::task::block_in_place(wait)
                }
                _ => wait(),
            };
            if !idle {
                tracing::warn!("partitions revoked while an insert still runs");
            }
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
        at: &CheckpointSources<'_>,
        topic: &str,
        partition: i32,
        offset: i64,
        key: &[u8],
        payload: &[u8],
    ) -> anyhow::Result<Option<(&'static str, Accepted)>> {
        each_table!(self, t => if t.topic == topic {
            let accepted = t.accept(at.client, at.identity, partition, offset, key, payload).await?;
            return Ok(Some((t.table, accepted)));
        });
        Ok(None)
    }

    /// Forgets the pending rows and checkpoints of partitions that moved: a revoked
    /// partition's new owner replays them from the stored offsets, and an assigned one
    /// resumes from what its table holds now.
    fn forget_moved_partitions(&mut self, moved: &Moved) {
        let moved = std::mem::take(&mut *moved.lock().unwrap_or_else(|e| e.into_inner()));
        for (topic, partition) in moved {
            self.forget(&topic, partition);
        }
    }

    fn forget(&mut self, topic: &str, partition: i32) {
        each_table!(self, t => if t.topic == topic {
            t.forget(partition);
        });
    }
}

/// What a table needs to read a partition's checkpoint.
struct CheckpointSources<'a> {
    client: &'a Client,
    identity: &'a Arc<TopicIdentity>,
}

/// Hands a message to its table, retrying while the partition's checkpoint cannot be
/// read or checked (ClickHouse or Kafka down, say): a message is never passed over.
async fn accept_retrying(
    tables: &mut Tables,
    at: &CheckpointSources<'_>,
    topic: &str,
    partition: i32,
    offset: i64,
    key: &[u8],
    payload: &[u8],
) -> Option<(&'static str, Accepted)> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match tables
            .accept(at, topic, partition, offset, key, payload)
            .await
        {
            Ok(accepted) => return accepted,
            Err(error) => {
                tracing::warn!(topic, partition, %error, retry_ms = backoff.as_millis() as u64, "checkpoint read failed, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
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
    identity: Arc<TopicIdentity>,
    inserts: Arc<InsertsInFlight>,
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
        // One listener for the whole run: a new one per message costs more than the
        // message, and a signal between two of them could be missed.
        let shutdown = traffsure_telemetry::shutdown_signal();
        tokio::pin!(shutdown);
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
                    let (key, payload) = (message.key().unwrap_or_default(), message.payload().unwrap_or_default());
                    let at = CheckpointSources { client: &self.client, identity: &self.identity };
                    let Some((table, accepted)) = accept_retrying(&mut self.tables, &at, &topic, partition, offset, key, payload).await else {
                        tracing::warn!(topic, partition, offset, "message from a topic the sink does not write");
                        continue;
                    };
                    if traffsure_telemetry::otlp_enabled() {
                        self.traced.entry(topic.clone()).or_default().observe(message.headers());
                    }
                    let messages = metrics::messages();
                    match accepted {
                        Accepted::Row => messages.with_label_values(&[table, "row"]).inc(),
                        Accepted::AlreadyStored => messages.with_label_values(&[table, "already_stored"]).inc(),
                        Accepted::Rewind { low } => {
                            drop(message);
                            if let Err(error) = self.consumer.seek(&topic, partition, Offset::Offset(low), Duration::from_secs(10)) {
                                // The partition is checked again on its next message.
                                tracing::warn!(topic, partition, %error, "cannot rewind a recreated partition, retrying");
                                self.tables.forget(&topic, partition);
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                            continue;
                        }
                    }
                    self.flush(false).await?;
                }
                _ = tick.tick() => self.flush(false).await?,
                _ = &mut shutdown => {
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

    /// Collects the inserts that finished, and starts one for every table whose batch
    /// is full or old enough (all of them when `force`, waiting for each). A table
    /// whose next batch is full while its insert runs waits for that insert: the
    /// loop reads no more meanwhile. Then dead-letters what ClickHouse refused and
    /// stores the offsets of every message now in a table, dead-lettered or a replay.
    async fn flush(&mut self, force: bool) -> anyhow::Result<()> {
        self.tables.forget_moved_partitions(&self.moved);
        let (batch_rows, batch_interval) = (self.batch_rows, self.batch_interval);
        let mut offsets = TopicPartitionList::new();
        let mut refused = Vec::new();
        let (client, inserts, traced) = (&self.client, &self.inserts, &mut self.traced);
        each_table!(self.tables, t => {
            let full = t.len() >= batch_rows;
            let due = force || full || t.oldest().is_some_and(|o| o.elapsed() >= batch_interval);
            let mut done = Vec::new();
            if t.insert_finished() || (t.inserting() && (force || full)) {
                done.push(t.finish().await?);
            }
            if due && !t.inserting() {
                let span = traced.get_mut(&t.topic).map(|b| b.take_span("sink insert")).unwrap_or_else(tracing::Span::none);
                t.start_insert(client, inserts, span);
                if force {
                    done.push(t.finish().await?);
                }
            }
            for d in done {
                for r in d.refused {
                    refused.push((t.topic.clone(), t.table, r));
                }
                for (partition, offset) in d.offsets {
                    offsets.add_partition_offset(&t.topic, partition, Offset::Offset(offset))?;
                }
            }
            if let Some(next) = t.take_idle_offsets() {
                for (partition, offset) in next {
                    offsets.add_partition_offset(&t.topic, partition, Offset::Offset(offset))?;
                }
            }
        });
        for (topic, table, r) in refused {
            metrics::messages()
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
    let inserts: Arc<InsertsInFlight> = Arc::default();
    let consumer: StreamConsumer<MovedPartitions> =
        traffsure_kafka::group_consumer_config(&settings.kafka, &settings.group_id)
            // What librdkafka prefetches per partition while the loop waits: bounds memory.
            .set("queued.max.messages.kbytes", "8192")
            .set("max.partition.fetch.bytes", "8388608")
            .set("fetch.max.bytes", "33554432")
            .create_with_context(MovedPartitions {
                moved: moved.clone(),
                inserts: inserts.clone(),
            })?;
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
        identity: Arc::new(TopicIdentity::new(&settings.kafka, &settings.group_id)?),
        inserts,
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

//! Click events to Kafka without ever making a redirect wait, and without losing or
//! doubling one, whether the broker is away or click-ingest itself is killed.
//!
//! Every event is first written to the click log (`clicklog`), then, normally, handed to
//! librdkafka's queue (idempotent, `acks=all`, no delivery timeout) with its log segment
//! as the delivery opaque: the delivery report settles it there, and a segment whose
//! records are all settled is deleted. When the queue is full, librdkafka reports every
//! broker down, or a delivery fails, the log is *replayed*: new events are only written
//! to it, and a replay thread sends them in log order from the replay position. Once it
//! comes within `CATCH_UP_BYTES` of the end, it sends the rest holding the log, so no
//! new event can pass them, and events go straight to the queue again.
//!
//! On start, what the last run left in the log is *in doubt*: Kafka may hold some of it
//! (delivered, but the report not seen before the kill). `recovery` reads the clicks
//! topic for it, and only events whose click hash is not there are replayed, so Kafka
//! receives each click once and nothing downstream has to tell copies apart. At
//! shutdown the producer is flushed; what the broker does not take in time stays in the
//! log for the next start.
//!
//! Under load, clicks go to Kafka several to a record: a `ClickBatch` of up to
//! `clicks_per_record` clicks of one partition (grouped with the producer's own
//! partitioner, so each lands where its routing key sends it), sent when it is full or
//! `BATCH_WAIT` after it was started. Kafka's per-record costs (librdkafka's queueing and
//! delivery reports, the broker thread's framing) are then paid once per batch instead of
//! once per click. A batch's delivery report settles all its clicks in the log; a batch
//! Kafka refuses is written back to the log click by click and replayed as single clicks.
//! Records with trace headers, replayed clicks and impressions go one to a record.
//!
//! A *fatal* producer error (librdkafka's idempotence state broken beyond repair, e.g. a
//! sequence gap the broker cannot accept) makes every later send fail. The publisher
//! notes it (`fatal`), stops replaying, and keeps writing events to the log; the service
//! then stops so that its restart, with a new producer, recovers the log as above.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use traffsure_config::KafkaSettings;
use traffsure_telemetry::prometheus::{IntCounter, IntCounterVec, IntGauge};

use crate::clicklog::{AppendError, ClickLog, FsyncPolicy, Position, Record, Segment};

/// Records the replay thread reads from the log at a time.
const REPLAY_READ: usize = 10_000;
/// Log bytes left to replay below which the replay sends the rest while holding the log
/// (about 2,700 clicks, a few milliseconds): waiting for the log to be exactly replayed
/// first would never end under load, clicks keep arriving while the replay sends.
const CATCH_UP_BYTES: u64 = 1 << 20;
/// How often settled segments are deleted and the log's gauges set.
const UPKEEP_EVERY: Duration = Duration::from_millis(100);
/// Longest a started batch of clicks waits for more before it is sent: little beside
/// what librdkafka then lingers with it (`linger_ms`, 500 ms by default) at low traffic.
/// A thread looks twice as often; each look costs a wake-up.
const BATCH_WAIT: Duration = Duration::from_millis(20);
/// A batch is sent before it grows past this many bytes (Kafka's default largest record
/// is 1 MB).
const BATCH_BYTES: usize = 256 << 10;
/// How often the clicks topic's partition count is read again (batches follow it).
const PARTITIONS_EVERY: Duration = Duration::from_secs(10);

/// `traffsure_click_deliveries_total` by result, the label values resolved once: a click
/// bumps one counter without hashing labels.
struct Deliveries {
    queued: IntCounter,
    replayed: IntCounter,
    spilled: IntCounter,
    skipped: IntCounter,
    refused: IntCounter,
}

fn deliveries() -> &'static Deliveries {
    static METRIC: std::sync::OnceLock<Deliveries> = std::sync::OnceLock::new();
    METRIC.get_or_init(|| {
        let total = traffsure_telemetry::counter_vec(
            "traffsure_click_deliveries_total",
            "Click events by way to Kafka: queued (handed to the producer), spilled (left in the click log for replay), replayed (sent from the log), skipped (in doubt after a crash and found in Kafka), refused (the log could not take it; answered 503)",
            &["result"],
        );
        Deliveries {
            queued: total.with_label_values(&["queued"]),
            replayed: total.with_label_values(&["replayed"]),
            spilled: total.with_label_values(&["spilled"]),
            skipped: total.with_label_values(&["skipped"]),
            refused: total.with_label_values(&["refused"]),
        }
    })
}

/// Failed deliveries by librdkafka error code (a fixed set of names); the events
/// themselves are replayed from the log.
fn delivery_errors() -> &'static IntCounterVec {
    static METRIC: std::sync::OnceLock<IntCounterVec> = std::sync::OnceLock::new();
    METRIC.get_or_init(|| {
        traffsure_telemetry::counter_vec(
            "traffsure_click_delivery_errors_total",
            "Click events Kafka did not take, by librdkafka error code",
            &["error"],
        )
    })
}

fn count_delivery_error(error: &KafkaError) {
    let code = error
        .rdkafka_error_code()
        .map_or_else(|| "Unknown".to_string(), |code| format!("{code:?}"));
    delivery_errors().with_label_values(&[code.as_str()]).inc();
}

fn gauge(name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric is malformed: {e}"));
    let _ = traffsure_telemetry::prometheus::register(Box::new(gauge.clone()));
    gauge
}

/// The click log's gauges.
struct LogGauges {
    bytes: IntGauge,
    segments: IntGauge,
    in_doubt: IntGauge,
    pending: IntGauge,
}

fn log_gauges() -> &'static LogGauges {
    static METRIC: std::sync::OnceLock<LogGauges> = std::sync::OnceLock::new();
    METRIC.get_or_init(|| LogGauges {
        bytes: gauge(
            "traffsure_click_log_bytes",
            "Bytes of the click log on disk",
        ),
        segments: gauge(
            "traffsure_click_log_segments",
            "Segment files of the click log",
        ),
        in_doubt: gauge(
            "traffsure_click_log_in_doubt",
            "Click events the last run left unacknowledged in the click log, found at start",
        ),
        pending: gauge(
            "traffsure_click_spill_pending_bytes",
            "Bytes of click events in the click log waiting to be replayed to Kafka",
        ),
    })
}

/// The log and where its replay stands, under one lock: whether an event goes to Kafka
/// or waits for the replay is decided where it is written.
struct LogState {
    log: ClickLog,
    /// The next record to replay; `None` while events go straight to Kafka.
    replay: Option<Position>,
    /// The batch being filled for each partition of the topic; none while the partition
    /// count is unknown (clicks then go one to a record).
    batches: Vec<Batch>,
    /// When the oldest click of a non-empty batch came.
    oldest_batched: Option<Instant>,
}

/// Clicks of one partition waiting to go to Kafka as one `ClickBatch` record.
#[derive(Default)]
struct Batch {
    /// The record as encoded so far (`push_batched_click` of each click).
    record: Vec<u8>,
    /// Each click's routing key, in order: the first is the record's key, and a record
    /// Kafka refuses is written back to the log click by click.
    keys: Vec<u16>,
    /// The log segments its clicks are in, and how many in each.
    segments: Vec<(Arc<Segment>, u64)>,
}

impl Batch {
    fn push(&mut self, routing_key: u16, payload: &[u8], segment: Arc<Segment>, per_record: usize) {
        if self.keys.is_empty() {
            // Room for the whole batch at once, not grown click by click.
            self.record.reserve(per_record * (payload.len() + 8));
            self.keys.reserve(per_record);
        }
        traffsure_events::push_batched_click(&mut self.record, payload);
        self.keys.push(routing_key);
        match self.segments.last_mut() {
            Some((last, count)) if Arc::ptr_eq(last, &segment) => *count += 1,
            _ => self.segments.push((segment, 1)),
        }
    }
}

/// What a record sent to Kafka carries to its delivery report: the log records to
/// settle.
pub enum Sent {
    /// One click (or impression), in this segment.
    One(Arc<Segment>),
    /// A `ClickBatch`: its clicks' routing keys, and the segments they are in.
    Batch {
        keys: Vec<u16>,
        segments: Vec<(Arc<Segment>, u64)>,
    },
}

impl Sent {
    fn settle(&self) {
        match self {
            Sent::One(segment) => segment.settle(),
            Sent::Batch { segments, .. } => {
                for (segment, count) in segments {
                    segment.settle_many(*count);
                }
            }
        }
    }

    fn clicks(&self) -> usize {
        match self {
            Sent::One(_) => 1,
            Sent::Batch { keys, .. } => keys.len(),
        }
    }
}

impl LogState {
    /// Writes records Kafka did not take again at the end of the log, to be replayed from
    /// there, and settles the originals. `payload` is the record as sent. If a write
    /// fails, the originals stay unsettled: the next start finds them in doubt and sends
    /// what Kafka lacks.
    fn write_again(&mut self, sent: &Sent, routing_key: u16, payload: &[u8]) {
        let clicks = match sent {
            Sent::One(_) => Ok(vec![(routing_key, payload)]),
            Sent::Batch { keys, .. } => match traffsure_events::click_payloads(payload) {
                Ok(clicks) if clicks.len() == keys.len() => {
                    Ok(keys.iter().copied().zip(clicks).collect())
                }
                Ok(clicks) => Err(format!("{} clicks for {} keys", clicks.len(), keys.len())),
                Err(error) => Err(error.to_string()),
            },
        };
        let clicks: Vec<(u16, &[u8])> = match clicks {
            Ok(clicks) => clicks,
            Err(error) => {
                // Cannot be: the batch was made here. Its clicks stay in doubt in the log.
                tracing::error!(%error, "click events left unsent in the click log until the next start");
                return;
            }
        };
        for (key, click) in clicks {
            match self.log.append(key, click, true) {
                Ok((_, position)) => {
                    if self.replay.is_none() {
                        self.replay = Some(position);
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "click event left unsent in the click log until the next start");
                    return;
                }
            }
        }
        sent.settle();
        deliveries().spilled.inc_by(sent.clicks() as u64);
    }
}

/// State shared by the request handlers, the delivery callback and the log's threads.
struct Shared {
    state: Mutex<LogState>,
    /// librdkafka said every broker is down, or a delivery failed; cleared by the replay
    /// thread once the broker answers.
    broker_down: AtomicBool,
    stop: AtomicBool,
    /// Why the producer failed fatally, once it has: it takes no event any more.
    fatal: OnceLock<String>,
    /// This log sets the click log's gauges (the impression log leaves them to clicks).
    gauges: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the producer's fatal error, once: from then on events wait in the log
    /// for the next start.
    fn note_fatal(&self, reason: String) {
        if self.fatal.set(reason.clone()).is_ok() {
            tracing::error!(
                reason,
                "kafka producer failed fatally: click events stay in the click log until a restart sends them"
            );
        }
    }
}

pub struct Context {
    shared: Arc<Shared>,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            if !self.shared.broker_down.swap(true, Ordering::SeqCst) {
                tracing::warn!(
                    reason,
                    "kafka unreachable, click events wait in the click log"
                );
            }
            let mut state = self.shared.state();
            if state.replay.is_none() {
                state.replay = Some(state.log.end());
            }
        } else {
            tracing::warn!(%error, reason, "librdkafka error");
        }
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = Box<Sent>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Sent>) {
        let message = match result {
            Ok(_) => {
                sent.settle();
                return;
            }
            Err((error, message)) => {
                count_delivery_error(error);
                tracing::debug!(%error, "click event not delivered, replaying it");
                message
            }
        };
        if self.shared.stop.load(Ordering::SeqCst) {
            // Purged at shutdown: it stays in the log for the next start.
            return;
        }
        self.shared.broker_down.store(true, Ordering::SeqCst);
        let key = message
            .key()
            .filter(|k| k.len() == 2)
            .map(|k| u16::from_be_bytes([k[0], k[1]]))
            .unwrap_or(0);
        self.shared
            .state()
            .write_again(&sent, key, message.payload().unwrap_or_default());
    }
}

/// Publishes click events; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    producer: Arc<ThreadedProducer<Context>>,
    shared: Arc<Shared>,
    topic: Arc<str>,
    /// The replay thread queues a record only while the producer holds fewer events
    /// than this: half of `queue.buffering.max.messages`.
    replay_queue_limit: i32,
    /// Most clicks in one record; 1: one click to a record.
    per_record: usize,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// How the click log is kept.
pub struct LogOptions<'a> {
    pub dir: &'a Path,
    pub max_bytes: u64,
    pub fsync: FsyncPolicy,
    /// Set the `traffsure_click_log_*` gauges from this log (the clicks' log does).
    pub gauges: bool,
    /// Most events in one Kafka record (a `ClickBatch`); 1 sends each on its own (the
    /// impressions' topic has no batches).
    pub per_record: usize,
}

impl Publisher {
    /// Opens the click log and the producer, sends what the last run left in the log
    /// and Kafka does not hold, and starts the log's threads. Blocks while it reads the
    /// clicks topic for in-doubt events.
    pub fn start(
        settings: &KafkaSettings,
        topic: String,
        log: &LogOptions<'_>,
        max_queued: u32,
        batching: &crate::ProducerSettings,
    ) -> anyhow::Result<Self> {
        let (mut click_log, recovered) = ClickLog::recover(log.dir, log.max_bytes)
            .map_err(|e| anyhow::anyhow!("click log {}: {e}", log.dir.display()))?;
        let recovery = crate::recovery::from_kafka(&mut click_log, &recovered, settings, &topic)
            .map_err(|e| anyhow::anyhow!("click log {}: {e:#}", log.dir.display()))?;
        if log.gauges {
            log_gauges().in_doubt.set(recovery.in_doubt as i64);
        }
        deliveries().skipped.inc_by(recovery.in_kafka as u64);
        if recovery.in_doubt > 0 {
            tracing::info!(
                in_doubt = recovery.in_doubt,
                in_kafka = recovery.in_kafka,
                to_send = recovery.to_send,
                path = %log.dir.display(),
                "click events left in the click log by the last run"
            );
        }
        let replay = (recovery.to_send > 0).then(|| Position {
            segment: click_log.end().segment,
            offset: 0,
        });
        let shared = Arc::new(Shared {
            state: Mutex::new(LogState {
                log: click_log,
                replay,
                batches: Vec::new(),
                oldest_batched: None,
            }),
            broker_down: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            fatal: OnceLock::new(),
            gauges: log.gauges,
        });
        let mut config = traffsure_kafka::producer_config(settings);
        config
            .set("message.timeout.ms", "0") // never expire a queued click: delivered exactly once, however late
            .set(
                "queue.buffering.max.messages",
                max_queued.max(1).to_string(),
            )
            .set("queue.buffering.max.kbytes", "32768") // bounds memory; beyond it, the click log
            .set("reconnect.backoff.max.ms", "1000") // notice a returning broker within a second
            .set("linger.ms", batching.linger_ms.to_string())
            .set(
                "batch.num.messages",
                batching.batch_num_messages.to_string(),
            )
            .set("batch.size", batching.batch_bytes.to_string())
            .set("compression.type", &batching.compression);
        let producer: ThreadedProducer<Context> = config.create_with_context(Context {
            shared: shared.clone(),
        })?;
        let publisher = Self {
            producer: Arc::new(producer),
            shared,
            topic: topic.into(),
            replay_queue_limit: replay_queue_limit(max_queued),
            per_record: log.per_record.max(1),
            threads: Arc::new(Mutex::new(Vec::new())),
        };
        if publisher.per_record > 1 {
            publisher.refresh_partitions();
        }
        let replayer = publisher.clone();
        let replay = std::thread::Builder::new()
            .name("click-log-replay".into())
            .spawn(move || replayer.replay_loop())?;
        let keeper = publisher.clone();
        let fsync = log.fsync;
        let upkeep = std::thread::Builder::new()
            .name("click-log-upkeep".into())
            .spawn(move || keeper.upkeep_loop(fsync))?;
        let mut threads = vec![replay, upkeep];
        if publisher.per_record > 1 {
            let batcher = publisher.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("click-batches".into())
                    .spawn(move || batcher.batch_loop())?,
            );
        }
        publisher
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(threads);
        Ok(publisher)
    }

    /// Why the producer failed fatally, if it has: the service must stop, and its next
    /// start sends what the log holds.
    /// librdkafka reports the error itself to the error callback under its own code,
    /// not as fatal, so this asks the producer too.
    pub fn fatal(&self) -> Option<String> {
        if let Some(reason) = self.shared.fatal.get() {
            return Some(reason.clone());
        }
        let reason = traffsure_kafka::fatal_error(self.producer.client())?;
        self.shared.note_fatal(reason);
        self.shared.fatal.get().cloned()
    }

    /// Notes a send's fatal error with librdkafka's own cause of it.
    fn check_fatal(&self, error: &KafkaError) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            let cause = traffsure_kafka::fatal_error(self.producer.client());
            self.shared
                .note_fatal(cause.unwrap_or_else(|| error.to_string()));
        }
    }

    /// The producer, for its queue gauge.
    pub fn producer(&self) -> Arc<ThreadedProducer<Context>> {
        Arc::clone(&self.producer)
    }

    /// Writes one encoded click to the click log, then hands it to Kafka's queue unless
    /// the log is being replayed. Never blocks on the network. Fails only when the log
    /// cannot take the click: the visitor must not be redirected then. `headers` (trace
    /// context) travel with the event to Kafka; the log keeps the event alone.
    pub fn publish(
        &self,
        routing_key: u16,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<(), AppendError> {
        let mut state = self.shared.state();
        let segment = match state.log.append(routing_key, payload, false) {
            Ok((segment, _)) => segment,
            Err(error) => {
                drop(state);
                deliveries().refused.inc();
                tracing::error!(%error, "click refused: the click log cannot take it");
                return Err(error);
            }
        };
        if state.replay.is_some() {
            drop(state);
            deliveries().spilled.inc();
            return Ok(());
        }
        if headers.is_none() && !state.batches.is_empty() {
            // Sent while the log is held, so a partition's batches go in log order.
            let partition = partition_of(routing_key, state.batches.len());
            let batch = &mut state.batches[partition];
            if !batch.keys.is_empty() && batch.record.len() + payload.len() > BATCH_BYTES {
                let full = std::mem::take(batch);
                self.send_batch(&mut state, full);
            }
            let batch = &mut state.batches[partition];
            batch.push(routing_key, payload, segment, self.per_record);
            if batch.keys.len() >= self.per_record {
                let full = std::mem::take(batch);
                self.send_batch(&mut state, full);
            } else if batch.keys.len() == 1 && state.oldest_batched.is_none() {
                state.oldest_batched = Some(Instant::now());
            }
            return Ok(());
        }
        drop(state);
        self.send_one(routing_key, payload, headers, segment);
        Ok(())
    }

    /// Hands one event to the producer's queue; one Kafka does not take is written again
    /// to the log for the replay.
    fn send_one(
        &self,
        routing_key: u16,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        segment: Arc<Segment>,
    ) {
        #[cfg(debug_assertions)]
        if self.shared.gauges {
            traffsure_kafka::fault_point(self.producer.client());
        }
        let key = traffsure_kafka::routing_key_bytes(routing_key);
        let mut record = BaseRecord::with_opaque_to(&self.topic, Box::new(Sent::One(segment)))
            .key(&key[..])
            .payload(payload);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        match self.producer.send(record) {
            Ok(()) => {
                // Counted in the HTTP worker's share (handed over every 100 ms).
                traffsure_telemetry::inc_local(&deliveries().queued);
            }
            Err((error, record)) => {
                self.not_queued(&error);
                self.shared
                    .state()
                    .write_again(&record.delivery_opaque, routing_key, payload);
            }
        }
    }

    /// Counts and reports a send the producer refused (a full queue is no error: the
    /// event waits in the log).
    fn not_queued(&self, error: &KafkaError) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::QueueFull) {
            tracing::error!(%error, "click event not queued, replaying it");
            count_delivery_error(error);
            self.check_fatal(error);
        }
    }

    /// Hands a batch to the producer's queue, with the log held (`state`): a batch of one
    /// click goes as that click. What Kafka does not take is written again to the log.
    fn send_batch(&self, state: &mut LogState, batch: Batch) {
        let Batch {
            record,
            keys,
            mut segments,
        } = batch;
        let Some(&first) = keys.first() else {
            return;
        };
        #[cfg(debug_assertions)]
        if self.shared.gauges {
            traffsure_kafka::fault_point(self.producer.client());
        }
        let (sent, payload) = if keys.len() == 1 {
            let payload = traffsure_events::click_payloads(&record)
                .ok()
                .and_then(|clicks| clicks.first().copied())
                .unwrap_or_default();
            let (segment, _) = segments.remove(0);
            (Sent::One(segment), payload)
        } else {
            (Sent::Batch { keys, segments }, record.as_slice())
        };
        let clicks = sent.clicks() as u64;
        let key = traffsure_kafka::routing_key_bytes(first);
        let message = BaseRecord::with_opaque_to(&self.topic, Box::new(sent))
            .key(&key[..])
            .payload(payload);
        match self.producer.send(message) {
            Ok(()) => deliveries().queued.inc_by(clicks),
            Err((error, message)) => {
                self.not_queued(&error);
                state.write_again(&message.delivery_opaque, first, payload);
            }
        }
    }

    /// Sends every batch that waited `BATCH_WAIT` (all of them when `all`).
    fn send_batches(&self, all: bool) {
        let mut state = self.shared.state();
        let due = state
            .oldest_batched
            .is_some_and(|oldest| all || oldest.elapsed() >= BATCH_WAIT);
        if due {
            self.send_all_batches(&mut state);
        }
    }

    fn send_all_batches(&self, state: &mut LogState) {
        state.oldest_batched = None;
        for partition in 0..state.batches.len() {
            let batch = std::mem::take(&mut state.batches[partition]);
            self.send_batch(state, batch);
        }
    }

    /// Sends batches as they come due, until shutdown.
    fn batch_loop(&self) {
        while !self.shared.stop.load(Ordering::SeqCst) {
            std::thread::sleep(BATCH_WAIT / 2);
            self.send_batches(false);
        }
    }

    /// Reads the topic's partition count from the broker and batches clicks by it; a
    /// change sends the batches made by the old count first. Unknown (the broker away):
    /// as it was.
    fn refresh_partitions(&self) {
        let count = self
            .producer
            .client()
            .fetch_metadata(Some(&self.topic), Duration::from_millis(1000))
            .ok()
            .and_then(|metadata| {
                metadata
                    .topics()
                    .first()
                    .filter(|t| t.error().is_none())
                    .map(|t| t.partitions().len())
            })
            .filter(|count| *count > 0);
        let Some(count) = count else {
            return;
        };
        let mut state = self.shared.state();
        if state.batches.len() == count {
            return;
        }
        self.send_all_batches(&mut state);
        state.batches.clear();
        state.batches.resize_with(count, Batch::default);
        tracing::debug!(
            partitions = count,
            "click batches follow the topic's partitions"
        );
    }

    /// Replays the log while there is a replay position, and ends the replay once it
    /// reaches the end of the log and the broker answers.
    fn replay_loop(&self) {
        let shared = &self.shared;
        while !shared.stop.load(Ordering::SeqCst) {
            if shared.fatal.get().is_some() {
                // No send can succeed: the log keeps the events for the next start.
                std::thread::sleep(Duration::from_millis(250));
                continue;
            }
            if shared.broker_down.load(Ordering::SeqCst) {
                if self.probe() {
                    tracing::info!("kafka reachable again");
                    shared.broker_down.store(false, Ordering::SeqCst);
                } else {
                    std::thread::sleep(Duration::from_millis(250));
                }
                continue;
            }
            match self.replay_step() {
                Ok(true) => {}
                Ok(false) => std::thread::sleep(Duration::from_millis(10)),
                Err(error) => {
                    tracing::error!(%error, "click log replay failed");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    /// True when the broker answers a metadata request for the clicks topic.
    fn probe(&self) -> bool {
        self.producer
            .client()
            .fetch_metadata(Some(&self.topic), Duration::from_millis(1000))
            .is_ok_and(|m| m.topics().iter().all(|t| t.error().is_none()))
    }

    /// Sends the next records of the replay; false when there was nothing to do.
    fn replay_step(&self) -> std::io::Result<bool> {
        let (position, segment, path, len) = {
            let mut state = self.shared.state();
            let Some(position) = state.replay else {
                return Ok(false);
            };
            let end = state.log.end();
            let Some((segment, path, len)) = state.log.segment(position.segment) else {
                // Deleted under the replay: cannot be, as trimming keeps it; go on.
                state.replay = state.log.next_segment(position).or(Some(end));
                return Ok(true);
            };
            if position.offset >= len {
                if position.segment == end.segment {
                    return Ok(false);
                }
                state.replay = state.log.next_segment(position);
                return Ok(true);
            }
            if position.segment == end.segment && len - position.offset <= CATCH_UP_BYTES {
                if !self.finish(&mut state, position, &segment, &path, len)? {
                    drop(state);
                    // The queue is full: send its batches now rather than after the
                    // linger, without holding the log.
                    flush_now(&self.producer, Duration::from_millis(10));
                }
                return Ok(true);
            }
            (position, segment, path, len)
        };
        let (records, stop, torn) =
            crate::clicklog::read_records(&path, position.offset, len, REPLAY_READ)?;
        let mut offset = position.offset;
        let mut sent = 0u64;
        for record in &records {
            if !self.send_replayed(&segment, record) {
                break;
            }
            offset += record.file_size();
            sent += 1;
        }
        if torn && offset == stop {
            tracing::warn!(
                bytes = len - stop,
                path = %path.display(),
                "skipping an unreadable click log record"
            );
            offset = len;
        }
        deliveries().replayed.inc_by(sent);
        let mut state = self.shared.state();
        if state.replay == Some(position) {
            state.replay = Some(Position {
                segment: position.segment,
                offset,
            });
        }
        Ok(true)
    }

    /// Sends the last records of the log while holding it, so none written meanwhile can
    /// pass them, and ends the replay. What the queue cannot take now stays to replay;
    /// false then.
    fn finish(
        &self,
        state: &mut LogState,
        position: Position,
        segment: &Arc<Segment>,
        path: &Path,
        len: u64,
    ) -> std::io::Result<bool> {
        let (records, _, _) =
            crate::clicklog::read_records(path, position.offset, len, usize::MAX)?;
        let mut offset = position.offset;
        let mut sent = 0u64;
        for record in &records {
            let key = traffsure_kafka::routing_key_bytes(record.routing_key);
            let message =
                BaseRecord::with_opaque_to(&self.topic, Box::new(Sent::One(segment.clone())))
                    .key(&key[..])
                    .payload(&record.payload);
            if let Err((error, _)) = self.producer.send(message) {
                self.check_fatal(&error);
                break;
            }
            offset += record.file_size();
            sent += 1;
        }
        deliveries().replayed.inc_by(sent);
        if sent as usize == records.len() && offset < len {
            tracing::warn!(bytes = len - offset, path = %path.display(), "skipping an unreadable click log record");
            offset = len;
        }
        if sent as usize == records.len() && offset == len {
            state.replay = None;
            tracing::debug!("click log replayed, click events go to kafka again");
            return Ok(true);
        }
        state.replay = Some(Position {
            segment: position.segment,
            offset,
        });
        Ok(false)
    }

    /// Queues one replayed record, waiting while the queue is half full; false when it
    /// could not be queued (a producer error, or shutdown).
    ///
    /// Keeping the queue below full is what makes replay cheap: an idempotent librdkafka
    /// producer keeps one produce request in flight per partition, and while a full batch
    /// waits behind it, its broker thread polls without sleeping. A queue kept full by
    /// replay made that thread cost 2–3 µs per click instead of about 0.8.
    fn send_replayed(&self, segment: &Arc<Segment>, record: &Record) -> bool {
        let shared = &self.shared;
        let key = traffsure_kafka::routing_key_bytes(record.routing_key);
        loop {
            if shared.stop.load(Ordering::SeqCst) || shared.broker_down.load(Ordering::Relaxed) {
                return false;
            }
            if self.producer.in_flight_count() >= self.replay_queue_limit {
                // Sends what is queued instead of letting it linger.
                flush_now(&self.producer, Duration::from_millis(1));
                continue;
            }
            let message =
                BaseRecord::with_opaque_to(&self.topic, Box::new(Sent::One(segment.clone())))
                    .key(&key[..])
                    .payload(&record.payload);
            match self.producer.send(message) {
                Ok(()) => return true,
                Err((error, _))
                    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => {
                    count_delivery_error(&error);
                    self.check_fatal(&error);
                    shared.broker_down.store(true, Ordering::SeqCst);
                    tracing::warn!(%error, "cannot queue a replayed click event");
                    return false;
                }
            }
        }
    }

    /// Flushes the producer at shutdown; what the broker does not take within `timeout`
    /// stays in the click log, synced to disk, for the next start.
    pub fn shutdown(&self, timeout: Duration) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for handle in threads {
            let _ = handle.join();
        }
        self.send_batches(true);
        let timeout = if self.shared.broker_down.load(Ordering::SeqCst)
            || self.shared.fatal.get().is_some()
        {
            Duration::from_millis(500)
        } else {
            timeout
        };
        if !flush_now(&self.producer, timeout) {
            tracing::warn!(
                queued = self.producer.in_flight_count(),
                "kafka did not take every click event in time, they stay in the click log"
            );
        }
        let mut state = self.shared.state();
        let keep = state.replay;
        state.log.trim(keep, true);
        for file in state.log.take_unsynced() {
            if let Err(error) = file.sync_data() {
                tracing::error!(%error, "click log not synced");
            }
        }
        set_gauges(&state);
        if state.log.bytes() > 0 {
            tracing::info!(bytes = state.log.bytes(), path = %state.log.dir().display(), "click events left in the click log for the next start");
        }
    }
}

/// Sends every queued event without waiting for `linger.ms`, and waits up to `timeout`
/// for all of them to be acknowledged (or failed); true when none is left.
///
/// The rdkafka crate's `flush` calls `rd_kafka_flush` with a zero timeout in a loop, so
/// librdkafka's "flushing" state (which makes queued batches ready at once) lasts only
/// for that call, and a broker thread woken after it still waits out the linger. This
/// calls it with the real timeout.
#[allow(unsafe_code)]
fn flush_now(producer: &ThreadedProducer<Context>, timeout: Duration) -> bool {
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the handle comes from a live producer (borrowed for the whole call), and
    // librdkafka allows `rd_kafka_flush` from any thread, beside the polling thread: it
    // serves delivery callbacks through the same context the polling thread uses.
    let result =
        unsafe { rdkafka::bindings::rd_kafka_flush(producer.client().native_ptr(), timeout_ms) };
    result == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        && producer.in_flight_count() == 0
}

/// How many events the producer may hold for the replay thread to queue one more: half
/// of `max_queued`, at least one.
fn replay_queue_limit(max_queued: u32) -> i32 {
    i32::try_from(max_queued / 2).unwrap_or(i32::MAX).max(1)
}

fn set_gauges(state: &LogState) {
    let gauges = log_gauges();
    gauges.bytes.set(state.log.bytes() as i64);
    gauges.segments.set(state.log.segment_count() as i64);
    gauges
        .pending
        .set(state.replay.map_or(0, |p| state.log.bytes_from(p)) as i64);
}

/// The partition librdkafka's `murmur2_random` partitioner (the Java client's) gives a
/// routing key's two bytes: the positive part of their murmur2 hash, modulo the count.
fn partition_of(routing_key: u16, partitions: usize) -> usize {
    let hash = murmur2(&traffsure_kafka::routing_key_bytes(routing_key)) & 0x7fff_ffff;
    hash as usize % partitions.max(1)
}

/// Kafka's murmur2 (seed 0x9747b28c), as librdkafka's `rd_murmur2` and the Java client
/// compute it.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

impl Publisher {
    /// Deletes settled segments, sets the log's gauges, syncs the log to disk as the
    /// fsync policy says (outside the lock: a sync never holds up a click), and follows
    /// the topic's partition count for the batches.
    fn upkeep_loop(&self, fsync: FsyncPolicy) {
        let shared = &*self.shared;
        let mut last_sync = Instant::now();
        let mut partitions_read = Instant::now();
        while !shared.stop.load(Ordering::SeqCst) {
            if self.per_record > 1 && partitions_read.elapsed() >= PARTITIONS_EVERY {
                partitions_read = Instant::now();
                self.refresh_partitions();
            }
            upkeep(shared, fsync, &mut last_sync);
        }
    }
}

/// One round of the upkeep: sleeps a tick, lets sealed segments go, makes the spare
/// segment, trims, syncs.
fn upkeep(shared: &Shared, fsync: FsyncPolicy, last_sync: &mut Instant) {
    let tick = match fsync {
        FsyncPolicy::Every(every) => every.min(UPKEEP_EVERY),
        FsyncPolicy::Never => UPKEEP_EVERY,
    };
    std::thread::sleep(tick);
    let sealed = shared.state().log.take_sealed();
    drop(sealed);
    // The next segment made ahead, outside the lock.
    let spare = shared.state().log.spare_wanted();
    if let Some(spare) = spare {
        let made = spare.make();
        shared.state().log.offer_spare(made);
    }
    let files = {
        let mut state = shared.state();
        let keep = state.replay;
        state.log.trim(keep, false);
        if shared.gauges {
            set_gauges(&state);
        }
        match fsync {
            FsyncPolicy::Every(every) if last_sync.elapsed() >= every => state.log.take_unsynced(),
            FsyncPolicy::Every(_) => Vec::new(),
            FsyncPolicy::Never => {
                // Sealed segments' files need no sync: let them close.
                drop(state.log.take_unsynced());
                Vec::new()
            }
        }
    };
    if !files.is_empty() {
        *last_sync = Instant::now();
        for file in files {
            if let Err(error) = file.sync_data() {
                tracing::error!(%error, "click log not synced");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::recovery::tests::click;

    #[test]
    fn replay_leaves_half_the_producer_queue_free() {
        assert_eq!(replay_queue_limit(50_000), 25_000);
        assert_eq!(replay_queue_limit(101), 50);
        // A queue of one still lets replay queue one event at a time.
        assert_eq!(replay_queue_limit(1), 1);
        assert_eq!(replay_queue_limit(0), 1);
        assert_eq!(replay_queue_limit(u32::MAX), i32::MAX);
    }

    #[test]
    fn a_batch_kafka_refused_is_written_again_click_by_click_and_settled() {
        let dir = std::env::temp_dir().join(format!("click-batch-again-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (log, _) = ClickLog::recover(&dir, u64::MAX).unwrap();
        let mut state = LogState {
            log,
            replay: None,
            batches: Vec::new(),
            oldest_batched: None,
        };
        let mut batch = Batch::default();
        for (key, hash) in [(7, "a"), (9, "b"), (7, "c")] {
            let (segment, _) = state.log.append(key, &click(hash), false).unwrap();
            batch.push(key, &click(hash), segment, 3);
        }
        assert_eq!(batch.segments.len(), 1, "one segment, counted");
        let end = state.log.end();
        let sent = Sent::Batch {
            keys: batch.keys.clone(),
            segments: batch.segments.clone(),
        };
        state.write_again(&sent, 7, &batch.record);
        assert_eq!(state.replay, Some(end), "replayed from the first copy");
        let (segment, path, len) = state.log.segment(end.segment).unwrap();
        assert_eq!(
            segment.unsettled(),
            3,
            "the originals settled, the copies not"
        );
        let (records, _, _) = crate::clicklog::read_records(&path, end.offset, len, 10).unwrap();
        let copies: Vec<(u16, Vec<u8>)> = records
            .into_iter()
            .map(|r| (r.routing_key, r.payload))
            .collect();
        assert_eq!(
            copies,
            vec![(7, click("a")), (9, click("b")), (7, click("c"))]
        );
        drop(segment);
        drop(state);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Batches must group clicks exactly as librdkafka's partitioner will place them.
    #[test]
    #[allow(unsafe_code)]
    fn partitions_as_librdkafka_does() {
        for partitions in [1, 3, 4, 12, 64] {
            for routing_key in 0..=u16::MAX {
                let key = traffsure_kafka::routing_key_bytes(routing_key);
                // SAFETY: a non-null key of its length; the partitioner reads nothing
                // else for one (no topic, no opaque).
                let theirs = unsafe {
                    rdkafka::bindings::rd_kafka_msg_partitioner_murmur2_random(
                        std::ptr::null(),
                        key.as_ptr().cast(),
                        key.len(),
                        partitions,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                };
                assert_eq!(
                    partition_of(routing_key, partitions as usize),
                    theirs as usize,
                    "key {routing_key}, {partitions} partitions"
                );
            }
        }
        // Kafka's own test vectors for murmur2 (the Java client's UtilsTest).
        assert_eq!(murmur2(b"21") as i32, -973_932_308);
        assert_eq!(murmur2(b"foobar") as i32, -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985_981_536);
        assert_eq!(
            murmur2(b"a-little-bit-longer-string") as i32,
            -1_486_304_829
        );
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58_897_971
        );
    }
}

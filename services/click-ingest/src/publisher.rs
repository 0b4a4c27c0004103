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

    /// Writes an event Kafka did not take again at the end of the log, to be replayed
    /// from there, and settles its first record. If that fails, the first record stays
    /// unsettled: the next start finds it in doubt and sends it.
    fn write_again(&self, segment: &Segment, routing_key: u16, payload: &[u8]) {
        let mut state = self.state();
        match state.log.append(routing_key, payload, true) {
            Ok((_, position)) => {
                if state.replay.is_none() {
                    state.replay = Some(position);
                }
                segment.settle();
                deliveries().spilled.inc();
            }
            Err(error) => {
                tracing::error!(%error, "click event left unsent in the click log until the next start");
            }
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
    type DeliveryOpaque = Arc<Segment>;

    fn delivery(&self, result: &DeliveryResult<'_>, segment: Arc<Segment>) {
        let message = match result {
            Ok(_) => {
                segment.settle();
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
            .write_again(&segment, key, message.payload().unwrap_or_default());
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
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// How the click log is kept.
pub struct LogOptions<'a> {
    pub dir: &'a Path,
    pub max_bytes: u64,
    pub fsync: FsyncPolicy,
    /// Set the `traffsure_click_log_*` gauges from this log (the clicks' log does).
    pub gauges: bool,
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
            threads: Arc::new(Mutex::new(Vec::new())),
        };
        let replayer = publisher.clone();
        let replay = std::thread::Builder::new()
            .name("click-log-replay".into())
            .spawn(move || replayer.replay_loop())?;
        let shared = publisher.shared.clone();
        let fsync = log.fsync;
        let upkeep = std::thread::Builder::new()
            .name("click-log-upkeep".into())
            .spawn(move || upkeep_loop(&shared, fsync))?;
        publisher
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([replay, upkeep]);
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
        drop(state);
        #[cfg(debug_assertions)]
        if self.shared.gauges {
            traffsure_kafka::fault_point(self.producer.client());
        }
        let key = traffsure_kafka::routing_key_bytes(routing_key);
        let mut record = BaseRecord::with_opaque_to(&self.topic, segment)
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
                if error.rdkafka_error_code() != Some(RDKafkaErrorCode::QueueFull) {
                    tracing::error!(%error, "click event not queued, replaying it");
                    count_delivery_error(&error);
                    self.check_fatal(&error);
                }
                self.shared
                    .write_again(&record.delivery_opaque, routing_key, payload);
            }
        }
        Ok(())
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
            let message = BaseRecord::with_opaque_to(&self.topic, segment.clone())
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
            let message = BaseRecord::with_opaque_to(&self.topic, segment.clone())
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

/// Deletes settled segments, sets the log's gauges, and syncs the log to disk as the
/// fsync policy says (outside the lock: a sync never holds up a click).
fn upkeep_loop(shared: &Shared, fsync: FsyncPolicy) {
    let mut last_sync = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        let tick = match fsync {
            FsyncPolicy::Every(every) => every.min(UPKEEP_EVERY),
            FsyncPolicy::Never => UPKEEP_EVERY,
        };
        std::thread::sleep(tick);
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
                FsyncPolicy::Every(every) if last_sync.elapsed() >= every => {
                    state.log.take_unsynced()
                }
                FsyncPolicy::Every(_) => Vec::new(),
                FsyncPolicy::Never => {
                    // Sealed segments' files need no sync: let them close.
                    drop(state.log.take_unsynced());
                    Vec::new()
                }
            }
        };
        if !files.is_empty() {
            last_sync = Instant::now();
            for file in files {
                if let Err(error) = file.sync_data() {
                    tracing::error!(%error, "click log not synced");
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn replay_leaves_half_the_producer_queue_free() {
        assert_eq!(replay_queue_limit(50_000), 25_000);
        assert_eq!(replay_queue_limit(101), 50);
        // A queue of one still lets replay queue one event at a time.
        assert_eq!(replay_queue_limit(1), 1);
        assert_eq!(replay_queue_limit(0), 1);
        assert_eq!(replay_queue_limit(u32::MAX), i32::MAX);
    }
}

//! Click events to Kafka without ever making a redirect wait, and without losing one
//! when the broker is away.
//!
//! Normally an event goes straight into librdkafka's queue (idempotent, `acks=all`, no
//! delivery timeout, so a queued event is delivered exactly once however long the broker
//! is gone). Delivery reports come back only for failures
//! (`delivery.report.only.error`): a delivered click costs no callback. When the queue
//! is full, or librdkafka reports every broker down, events go to the spill file instead,
//! and keep going there until a replay thread has sent the whole file back in order after
//! the broker returned. No live event is sent while spilling is on, so the replay thread
//! knows its records were acknowledged when the producer's queue is empty. Near the end
//! of the file new spilled clicks are held in memory; once the file is replayed and
//! acknowledged, they are queued ahead of new ones and spilling ends, even under
//! sustained load. At shutdown the producer is flushed; what the broker cannot take in
//! time is moved from the queue to the spill file, which the next start replays.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, PurgeConfig, ThreadedProducer};
use rdkafka::ClientContext;
use traffsure_config::KafkaSettings;
use traffsure_telemetry::prometheus::{IntCounter, IntCounterVec, IntGauge};

use crate::spill::{SpillFile, WriteError};

/// Delivery opaque of a click sent live from a request.
const LIVE: usize = 0;
/// Delivery opaque of a click replayed from the spill file.
const REPLAY: usize = 1;
/// Records the replay thread reads from the spill file at a time.
const REPLAY_READ: usize = 10_000;
/// Records the replay thread sends before it waits for the producer's queue to empty and
/// moves the replay position. Each wait costs about one broker round trip (the wait
/// flushes, so no batch lingers), so a big window keeps replay close to the broker's own
/// rate; a small one bounds what a crash in the middle would send twice.
const REPLAY_WINDOW: usize = 200_000;
/// Unreplayed bytes left in the file below which the replay holds new spilled clicks in
/// memory and finishes the file (about 2,700 clicks, 20 ms of a heavy load). Waiting to
/// find the file exactly empty first would never end under load: clicks keep arriving
/// while the replay sends the last ones.
const CATCH_UP_BYTES: u64 = 1 << 20;
/// How long a spilled click waits in memory before it is written to the spill file.
const SPILL_FLUSH_AFTER: Duration = Duration::from_millis(5);

/// `traffsure_click_deliveries_total` by result, the label values resolved once: a click
/// bumps one counter without hashing labels.
struct Deliveries {
    queued: IntCounter,
    replayed: IntCounter,
    spilled: IntCounter,
    lost: IntCounter,
}

fn deliveries() -> &'static Deliveries {
    static METRIC: std::sync::OnceLock<Deliveries> = std::sync::OnceLock::new();
    METRIC.get_or_init(|| {
        let total = traffsure_telemetry::counter_vec(
            "traffsure_click_deliveries_total",
            "Click events by way to Kafka: queued (handed to the producer), spilled, replayed (from the spill file), lost",
            &["result"],
        );
        Deliveries {
            queued: total.with_label_values(&["queued"]),
            replayed: total.with_label_values(&["replayed"]),
            spilled: total.with_label_values(&["spilled"]),
            lost: total.with_label_values(&["lost"]),
        }
    })
}

/// Failed deliveries by librdkafka error code (a fixed set of names); the events
/// themselves go to the spill file or are retried.
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

fn spill_pending_bytes() -> &'static IntGauge {
    static METRIC: std::sync::OnceLock<IntGauge> = std::sync::OnceLock::new();
    METRIC.get_or_init(|| {
        let gauge = IntGauge::new(
            "traffsure_click_spill_pending_bytes",
            "Bytes of click events in the spill file not yet replayed to Kafka",
        )
        .unwrap_or_else(|e| panic!("metric is malformed: {e}"));
        let _ = traffsure_telemetry::prometheus::register(Box::new(gauge.clone()));
        gauge
    })
}

/// State shared by the request handlers, the delivery callback, the replay thread and
/// the spill flush thread.
struct Shared {
    spill: Mutex<SpillFile>,
    /// Signalled when the spill file's buffer receives its first record, and at shutdown.
    spill_buffered: Condvar,
    /// New events go to the spill file (set on queue full, broker down or a failed
    /// delivery; cleared by the replay thread once the file is empty).
    spilling: AtomicBool,
    /// librdkafka said every broker is down, or a replayed event failed; cleared by the
    /// replay thread once the broker answers a metadata request.
    broker_down: AtomicBool,
    /// A replayed event was not delivered since the replay thread last cleared this.
    replay_failed: AtomicBool,
    stop: AtomicBool,
}

impl Shared {
    fn spill(&self) -> MutexGuard<'_, SpillFile> {
        self.spill.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn append(&self, routing_key: u16, payload: &[u8]) {
        let spill = self.spill();
        self.append_locked(spill, routing_key, payload);
    }

    fn append_locked(
        &self,
        mut spill: MutexGuard<'_, SpillFile>,
        routing_key: u16,
        payload: &[u8],
    ) {
        self.spilling.store(true, Ordering::SeqCst);
        let first = spill.buffered_since().is_none();
        let result = spill.append(routing_key, payload);
        deliveries().spilled.inc();
        if let Err(error) = result {
            spill_write_failed(&spill, &error);
        }
        spill_pending_bytes().set(spill.pending_bytes() as i64);
        drop(spill);
        if first {
            self.spill_buffered.notify_one();
        }
    }

    /// Writes the spill file's buffer; returns the file's length.
    fn flush_spill(spill: &mut SpillFile) -> Option<u64> {
        match spill.flushed_len() {
            Ok(len) => Some(len),
            Err(error) => {
                spill_write_failed(spill, &error);
                spill_pending_bytes().set(spill.pending_bytes() as i64);
                None
            }
        }
    }
}

fn spill_write_failed(spill: &SpillFile, error: &WriteError) {
    deliveries().lost.inc_by(error.lost as u64);
    tracing::error!(%error, path = %spill.path().display(), "click events lost: spill file not writable");
}

pub struct Context {
    shared: Arc<Shared>,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            if !self.shared.broker_down.swap(true, Ordering::SeqCst) {
                tracing::warn!(reason, "kafka unreachable, spilling click events to disk");
            }
            self.shared.spilling.store(true, Ordering::SeqCst);
        } else {
            tracing::warn!(%error, reason, "librdkafka error");
        }
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = usize;

    /// Called for failed deliveries only (`delivery.report.only.error`).
    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let Err((error, message)) = result else {
            return;
        };
        count_delivery_error(error);
        if opaque == LIVE {
            // Not delivered (purged at shutdown, or a fatal producer error): keep it.
            tracing::debug!(%error, "click event not delivered, spilling");
            let key = message
                .key()
                .filter(|k| k.len() == 2)
                .map(|k| u16::from_be_bytes([k[0], k[1]]))
                .unwrap_or(0);
            self.shared
                .append(key, message.payload().unwrap_or_default());
        } else {
            tracing::warn!(%error, "replayed click event not delivered, will retry");
            self.shared.replay_failed.store(true, Ordering::SeqCst);
        }
    }
}

/// Where a replay stopped by shutdown left off: records up to `end` were handed to the
/// producer but not yet known to be acknowledged.
#[derive(Clone, Copy)]
struct Unsettled {
    end: u64,
    torn: bool,
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
    replay: Arc<Mutex<Option<JoinHandle<Option<Unsettled>>>>>,
    flusher: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Publisher {
    /// Opens the spill file and the producer, and starts replaying what an earlier run
    /// left in the spill file.
    pub fn start(
        settings: &KafkaSettings,
        topic: String,
        spill_path: &Path,
        max_queued: u32,
        batching: &crate::ProducerSettings,
    ) -> anyhow::Result<Self> {
        let spill = SpillFile::open(spill_path)
            .map_err(|e| anyhow::anyhow!("spill file {}: {e}", spill_path.display()))?;
        let pending = spill.pending_bytes();
        if pending > 0 {
            tracing::info!(bytes = pending, path = %spill_path.display(), "replaying spilled click events");
        }
        spill_pending_bytes().set(pending as i64);
        let shared = Arc::new(Shared {
            spill: Mutex::new(spill),
            spill_buffered: Condvar::new(),
            spilling: AtomicBool::new(pending > 0),
            broker_down: AtomicBool::new(false),
            replay_failed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let mut config = traffsure_kafka::producer_config(settings);
        config
            .set("message.timeout.ms", "0") // never expire a queued click: delivered exactly once, however late
            .set("delivery.report.only.error", "true") // a delivered click costs no callback
            .set(
                "queue.buffering.max.messages",
                max_queued.max(1).to_string(),
            )
            .set("queue.buffering.max.kbytes", "32768") // bounds memory; beyond it, the spill file
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
            replay: Arc::new(Mutex::new(None)),
            flusher: Arc::new(Mutex::new(None)),
        };
        let replayer = publisher.clone();
        let handle = std::thread::Builder::new()
            .name("click-spill-replay".into())
            .spawn(move || replayer.replay_loop())?;
        *publisher.replay.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        let shared = publisher.shared.clone();
        let handle = std::thread::Builder::new()
            .name("click-spill-flush".into())
            .spawn(move || flush_loop(&shared))?;
        *publisher.flusher.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(publisher)
    }

    /// The producer, for its queue gauge.
    pub fn producer(&self) -> Arc<ThreadedProducer<Context>> {
        Arc::clone(&self.producer)
    }

    /// Hands one encoded click to Kafka's queue, or to the spill file when Kafka cannot
    /// take it now. Never blocks on the network. `headers` (trace context) travel with
    /// the event to Kafka; the spill file keeps the event alone.
    pub fn publish(&self, routing_key: u16, payload: &[u8], headers: Option<OwnedHeaders>) {
        if self.shared.spilling.load(Ordering::Relaxed) {
            let spill = self.shared.spill();
            // The replay may have handed the spill back to the queue while this waited.
            if self.shared.spilling.load(Ordering::SeqCst) {
                self.shared.append_locked(spill, routing_key, payload);
                return;
            }
        }
        let key = traffsure_kafka::routing_key_bytes(routing_key);
        let mut record = BaseRecord::with_opaque_to(&self.topic, LIVE)
            .key(&key[..])
            .payload(payload);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        match self.producer.send(record) {
            Ok(()) => {
                // Counted in the HTTP worker's share (handed over every 100 ms).
                traffsure_telemetry::inc_local(&deliveries().queued);
                return;
            }
            Err((error, _)) => {
                if error.rdkafka_error_code() != Some(RDKafkaErrorCode::QueueFull) {
                    tracing::error!(%error, "click event not queued, spilling");
                    count_delivery_error(&error);
                }
            }
        }
        self.shared.append(routing_key, payload);
    }

    /// Replays the spill file while there is one, and turns spilling off once it is empty
    /// and the broker answers. Returns where a replay interrupted by shutdown left off.
    fn replay_loop(&self) -> Option<Unsettled> {
        let shared = &self.shared;
        while !shared.stop.load(Ordering::SeqCst) {
            if shared.broker_down.load(Ordering::SeqCst) {
                if self.probe() {
                    tracing::info!("kafka reachable again");
                    shared.broker_down.store(false, Ordering::SeqCst);
                } else {
                    std::thread::sleep(Duration::from_millis(250));
                }
                continue;
            }
            if shared.spill().pending_bytes() == 0 {
                if shared.spilling.load(Ordering::SeqCst) {
                    let spill = shared.spill();
                    if spill.pending_bytes() == 0 && !shared.broker_down.load(Ordering::SeqCst) {
                        shared.spilling.store(false, Ordering::SeqCst);
                        tracing::debug!("spill file empty, click events go to kafka again");
                    }
                    continue;
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            match self.replay_window() {
                Ok(Some(unsettled)) => return Some(unsettled),
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(%error, "spill replay failed");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        None
    }

    /// True when the broker answers a metadata request for the clicks topic.
    fn probe(&self) -> bool {
        self.producer
            .client()
            .fetch_metadata(Some(&self.topic), Duration::from_millis(1000))
            .is_ok_and(|m| m.topics().iter().all(|t| t.error().is_none()))
    }

    /// Sends up to `REPLAY_WINDOW` records from the replay position on, in file order,
    /// without waiting between them; then waits until the producer's queue is empty (no
    /// live event is queued while spilling) and moves the replay position past them,
    /// unless one of them failed: then the broker is probed and the window sent again.
    /// Once the window comes within `CATCH_UP_BYTES` of the end of the file, new spilled
    /// clicks are held in memory while it sends the rest and waits; if the file is then
    /// empty, they go to the producer queue and spilling ends. Returns where it left off
    /// if shutdown interrupted the wait.
    fn replay_window(&self) -> std::io::Result<Option<Unsettled>> {
        let result = self.replay_window_held();
        self.shared.spill().release();
        result
    }

    fn replay_window_held(&self) -> std::io::Result<Option<Unsettled>> {
        let shared = &self.shared;
        shared.replay_failed.store(false, Ordering::SeqCst);
        let (path, start) = {
            let spill = shared.spill();
            (spill.path().to_path_buf(), spill.position())
        };
        let mut sent_end = start;
        let mut sent = 0usize;
        let mut torn = false;
        let mut caught_up = false;
        let mut held = false;
        'window: while sent < REPLAY_WINDOW {
            let file_end = {
                let mut spill = shared.spill();
                let file_end = if held {
                    // Held records stay in memory; the file grows only if the hold gave way.
                    spill.written_len()
                } else {
                    let Some(file_end) = Shared::flush_spill(&mut spill) else {
                        break;
                    };
                    file_end
                };
                if !held && file_end - sent_end <= CATCH_UP_BYTES {
                    spill.hold();
                    held = true;
                }
                if file_end == sent_end {
                    caught_up = true;
                    break;
                }
                file_end
            };
            let (records, end, stopped) = crate::spill::read_records(
                &path,
                sent_end,
                file_end,
                REPLAY_READ.min(REPLAY_WINDOW - sent),
            )?;
            for record in &records {
                if !self.send_replayed(record.routing_key, &record.payload) {
                    break 'window;
                }
                sent_end += record.file_size();
                sent += 1;
            }
            debug_assert_eq!(sent_end, end);
            if stopped {
                torn = true;
                break;
            }
        }
        // Every replayed record is acknowledged (or failed) once the queue is empty; the
        // producer never times a message out, so only shutdown bounds this wait. The
        // flush sends the last batches at once instead of letting them linger.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.producer.in_flight_count() > 0 {
            if shared.stop.load(Ordering::SeqCst) && Instant::now() > deadline {
                return Ok(Some(Unsettled {
                    end: sent_end,
                    torn,
                }));
            }
            flush_now(&self.producer, Duration::from_millis(10));
        }
        if shared.replay_failed.swap(false, Ordering::SeqCst) {
            shared.broker_down.store(true, Ordering::SeqCst);
            return Ok(None);
        }
        let mut spill = shared.spill();
        if sent_end != start || torn {
            spill.advance(sent_end, torn)?;
            deliveries().replayed.inc_by(sent as u64);
            tracing::debug!(events = sent, "spilled click events replayed");
        }
        if caught_up && spill.file_replayed() && !shared.stop.load(Ordering::SeqCst) {
            self.hand_back(&mut spill);
        }
        spill_pending_bytes().set(spill.pending_bytes() as i64);
        Ok(None)
    }

    /// The file is replayed: queues the clicks held in memory meanwhile, in order, and
    /// ends spilling (under the spill lock, so no click is queued before them). What
    /// the queue cannot take stays spilled, and spilling goes on.
    fn hand_back(&self, spill: &mut SpillFile) {
        let held = spill.take_buffered();
        let mut queued = 0usize;
        for record in &held {
            let key = traffsure_kafka::routing_key_bytes(record.routing_key);
            let message = BaseRecord::with_opaque_to(&self.topic, LIVE)
                .key(&key[..])
                .payload(&record.payload);
            if self.producer.send(message).is_err() {
                break;
            }
            queued += 1;
        }
        deliveries().replayed.inc_by(queued as u64);
        for record in &held[queued..] {
            if let Err(error) = spill.append(record.routing_key, &record.payload) {
                spill_write_failed(spill, &error);
            }
        }
        if queued == held.len() {
            self.shared.spilling.store(false, Ordering::SeqCst);
            tracing::debug!(
                events = queued,
                "spill file replayed, click events go to kafka again"
            );
        }
    }

    /// Queues one replayed record, waiting while the queue is half full; false when it
    /// could not be queued (a producer error, or shutdown), which fails the window.
    ///
    /// Keeping the queue below full is what makes replay cheap: an idempotent librdkafka
    /// producer keeps one produce request in flight per partition, and while a full batch
    /// waits behind it, its broker thread polls without sleeping. A queue kept full by
    /// replay made that thread cost 2–3 µs per click instead of about 0.8.
    fn send_replayed(&self, routing_key: u16, payload: &[u8]) -> bool {
        let shared = &self.shared;
        let key = traffsure_kafka::routing_key_bytes(routing_key);
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                return false;
            }
            if shared.replay_failed.load(Ordering::Relaxed) {
                return false;
            }
            if self.producer.in_flight_count() >= self.replay_queue_limit {
                // Sends what is queued instead of letting it linger: no live event is
                // queued while spilling, so the batches are the replay's own.
                flush_now(&self.producer, Duration::from_millis(1));
                continue;
            }
            let message = BaseRecord::with_opaque_to(&self.topic, REPLAY)
                .key(&key[..])
                .payload(payload);
            match self.producer.send(message) {
                Ok(()) => return true,
                Err((error, _))
                    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => {
                    count_delivery_error(&error);
                    shared.replay_failed.store(true, Ordering::SeqCst);
                    tracing::warn!(%error, "cannot queue a replayed click event");
                    return false;
                }
            }
        }
    }

    /// Flushes the producer at shutdown; what the broker does not take within `timeout`
    /// goes to the spill file, which is written and synced to disk.
    pub fn shutdown(&self, timeout: Duration) {
        {
            let _spill = self.shared.spill();
            self.shared.stop.store(true, Ordering::SeqCst);
        }
        self.shared.spill_buffered.notify_all();
        if let Some(handle) = self
            .flusher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = handle.join();
        }
        let unsettled = self
            .replay
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .and_then(|handle| handle.join().ok().flatten());
        let timeout = if self.shared.broker_down.load(Ordering::SeqCst) {
            Duration::from_millis(500)
        } else {
            timeout
        };
        if flush_now(&self.producer, timeout) {
            // The replay interrupted above has been acknowledged after all.
            if let Some(Unsettled { end, torn }) = unsettled {
                if !self.shared.replay_failed.load(Ordering::SeqCst) {
                    let mut spill = self.shared.spill();
                    if let Err(error) = spill.advance(end, torn) {
                        tracing::error!(%error, "spill replay position not saved");
                    }
                }
            }
        } else {
            let queued = self.producer.in_flight_count();
            tracing::warn!(
                queued,
                "kafka did not take every click event in time, spilling the rest"
            );
            self.producer.purge(PurgeConfig::default().queue());
            let _ = self.producer.flush(Duration::from_secs(1));
            if self.producer.in_flight_count() > 0 {
                self.producer
                    .purge(PurgeConfig::default().queue().inflight());
                let _ = self.producer.flush(Duration::from_secs(1));
            }
        }
        let mut spill = self.shared.spill();
        let _ = Shared::flush_spill(&mut spill);
        if let Err(error) = spill.sync() {
            tracing::error!(%error, "spill file not synced");
        }
        spill_pending_bytes().set(spill.pending_bytes() as i64);
        if spill.pending_bytes() > 0 {
            tracing::info!(bytes = spill.pending_bytes(), path = %spill.path().display(), "click events left in the spill file for the next start");
        }
    }
}

/// Sends every queued event without waiting for `linger.ms`, and waits up to `timeout`
/// for all of them to be acknowledged (or failed); true when none is left.
///
/// The rdkafka crate's `flush` calls `rd_kafka_flush` with a zero timeout in a loop, so
/// librdkafka's "flushing" state (which makes queued batches ready at once) lasts only
/// for that call, and a broker thread woken after it still waits out the linger (a
/// whole `linger.ms` per replay wait). This calls it with the real timeout.
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

/// Writes the spill file's buffer once its oldest record is `SPILL_FLUSH_AFTER` old (a
/// full buffer is written by the append that fills it); sleeps while it is empty.
fn flush_loop(shared: &Shared) {
    let mut spill = shared.spill();
    while !shared.stop.load(Ordering::SeqCst) {
        match spill.buffered_since() {
            None => {
                spill = shared
                    .spill_buffered
                    .wait(spill)
                    .unwrap_or_else(|p| p.into_inner());
            }
            Some(since) => {
                let due = since + SPILL_FLUSH_AFTER;
                let now = Instant::now();
                if now >= due && !spill.holding() {
                    Shared::flush_spill(&mut spill);
                } else {
                    let wait = if now >= due {
                        SPILL_FLUSH_AFTER
                    } else {
                        due - now
                    };
                    spill = shared
                        .spill_buffered
                        .wait_timeout(spill, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
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

    #[test]
    fn the_flush_thread_writes_buffered_records_within_milliseconds() {
        let dir = std::env::temp_dir().join(format!("spill-flush-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("clicks.spill");
        let shared = Arc::new(Shared {
            spill: Mutex::new(SpillFile::open(&path).unwrap()),
            spill_buffered: Condvar::new(),
            spilling: AtomicBool::new(false),
            broker_down: AtomicBool::new(false),
            replay_failed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let flusher = {
            let shared = shared.clone();
            std::thread::spawn(move || flush_loop(&shared))
        };
        let written = || std::fs::metadata(&path).unwrap().len();
        for round in 1..=2u64 {
            shared.append(7, b"a click");
            assert!(shared.spilling.load(Ordering::SeqCst));
            assert_eq!(shared.spill().pending_bytes(), 13 * round);
            let deadline = Instant::now() + Duration::from_secs(2);
            while written() < 13 * round {
                assert!(Instant::now() < deadline, "buffered record never written");
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(shared.spill().buffered_since().is_none());
        }
        {
            let _spill = shared.spill();
            shared.stop.store(true, Ordering::SeqCst);
        }
        shared.spill_buffered.notify_all();
        flusher.join().unwrap();
    }
}

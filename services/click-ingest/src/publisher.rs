//! Click events to Kafka without ever making a redirect wait, and without losing one
//! when the broker is away.
//!
//! Normally an event goes straight into librdkafka's queue (idempotent, `acks=all`, no
//! delivery timeout, so a queued event is delivered exactly once however long the broker
//! is gone). When the queue is full, or librdkafka reports every broker down, events go
//! to the spill file instead, and keep going there until a replay thread has sent the
//! whole file back in order after the broker returned. At shutdown the producer is
//! flushed; what the broker cannot take in time is moved from the queue to the spill file,
//! which the next start replays.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, PurgeConfig, ThreadedProducer};
use rdkafka::ClientContext;
use traffsure_config::KafkaSettings;
use traffsure_telemetry::prometheus::{IntCounter, IntCounterVec, IntGauge};

use crate::spill::SpillFile;

/// Delivery opaque of a click sent live from a request.
const LIVE: usize = 0;
/// Delivery opaque of a click replayed from the spill file.
const REPLAY: usize = 1;
/// Records the replay thread sends before waiting for their acknowledgements. Each batch
/// waits at least `linger.ms` (100 ms by default) for its acknowledgements, so this bounds
/// the replay rate (here ~150,000 events/s); it must stay well above the click rate, or a
/// spill that starts under load never drains while the load lasts.
const REPLAY_BATCH: usize = 20_000;

/// `traffsure_click_deliveries_total` by result, the label values resolved once: a click
/// bumps one counter without hashing labels.
struct Deliveries {
    delivered: IntCounter,
    replayed: IntCounter,
    spilled: IntCounter,
    lost: IntCounter,
}

fn deliveries() -> &'static Deliveries {
    static METRIC: std::sync::OnceLock<Deliveries> = std::sync::OnceLock::new();
    METRIC.get_or_init(|| {
        let total = traffsure_telemetry::counter_vec(
            "traffsure_click_deliveries_total",
            "Click events by Kafka delivery result",
            &["result"],
        );
        Deliveries {
            delivered: total.with_label_values(&["delivered"]),
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

/// State shared by the request handlers, the delivery callback and the replay thread.
struct Shared {
    spill: Mutex<SpillFile>,
    /// New events go to the spill file (set on queue full, broker down or a failed
    /// delivery; cleared by the replay thread once the file is empty).
    spilling: AtomicBool,
    /// librdkafka said every broker is down; cleared by a successful delivery or probe.
    broker_down: AtomicBool,
    replay_in_flight: AtomicI64,
    replay_failed: AtomicBool,
    stop: AtomicBool,
}

impl Shared {
    fn spill(&self) -> MutexGuard<'_, SpillFile> {
        self.spill.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn append(&self, routing_key: u16, payload: &[u8]) {
        let mut spill = self.spill();
        self.spilling.store(true, Ordering::SeqCst);
        match spill.append(routing_key, payload) {
            Ok(()) => deliveries().spilled.inc(),
            Err(error) => {
                deliveries().lost.inc();
                tracing::error!(%error, path = %spill.path().display(), "click event lost: spill file not writable");
            }
        }
        spill_pending_bytes().set(spill.pending_bytes() as i64);
    }
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

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        match (result, opaque) {
            (Ok(_), LIVE) => {
                self.shared.broker_down.store(false, Ordering::Relaxed);
                deliveries().delivered.inc();
            }
            (Ok(_), _) => {
                deliveries().replayed.inc();
                self.shared.replay_in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            (Err((error, message)), LIVE) => {
                // Not delivered (purged at shutdown, or a fatal producer error): keep it.
                tracing::debug!(%error, "click event not delivered, spilling");
                count_delivery_error(error);
                let key = message
                    .key()
                    .filter(|k| k.len() == 2)
                    .map(|k| u16::from_be_bytes([k[0], k[1]]))
                    .unwrap_or(0);
                self.shared
                    .append(key, message.payload().unwrap_or_default());
            }
            (Err((error, _)), _) => {
                tracing::warn!(%error, "replayed click event not delivered, will retry");
                count_delivery_error(error);
                self.shared.replay_failed.store(true, Ordering::SeqCst);
                self.shared.replay_in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// Publishes click events; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    producer: Arc<ThreadedProducer<Context>>,
    shared: Arc<Shared>,
    topic: Arc<str>,
    replay: Arc<Mutex<Option<JoinHandle<()>>>>,
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
            spilling: AtomicBool::new(pending > 0),
            broker_down: AtomicBool::new(false),
            replay_in_flight: AtomicI64::new(0),
            replay_failed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let mut config = traffsure_kafka::producer_config(settings);
        config
            .set("message.timeout.ms", "0") // never expire a queued click: delivered exactly once, however late
            .set(
                "queue.buffering.max.messages",
                max_queued.max(1).to_string(),
            )
            .set("queue.buffering.max.kbytes", "65536") // bounds memory; beyond it, the spill file
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
            replay: Arc::new(Mutex::new(None)),
        };
        let replayer = publisher.clone();
        let handle = std::thread::Builder::new()
            .name("click-spill-replay".into())
            .spawn(move || replayer.replay_loop())?;
        *publisher.replay.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
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
        if !self.shared.spilling.load(Ordering::Relaxed) {
            let key = traffsure_kafka::routing_key_bytes(routing_key);
            let mut record = BaseRecord::with_opaque_to(&self.topic, LIVE)
                .key(&key[..])
                .payload(payload);
            if let Some(headers) = headers {
                record = record.headers(headers);
            }
            match self.producer.send(record) {
                Ok(()) => return,
                Err((error, _)) => {
                    if error.rdkafka_error_code() != Some(RDKafkaErrorCode::QueueFull) {
                        tracing::error!(%error, "click event not queued, spilling");
                        count_delivery_error(&error);
                    }
                }
            }
        }
        self.shared.append(routing_key, payload);
    }

    fn replay_loop(&self) {
        let shared = &self.shared;
        while !shared.stop.load(Ordering::SeqCst) {
            let pending = shared.spill().pending_bytes();
            if pending == 0 {
                if shared.spilling.load(Ordering::SeqCst)
                    && !shared.broker_down.load(Ordering::SeqCst)
                {
                    let spill = shared.spill();
                    if spill.pending_bytes() == 0 {
                        shared.spilling.store(false, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            if shared.broker_down.load(Ordering::SeqCst) {
                if self.probe() {
                    tracing::info!("kafka reachable again, replaying spilled click events");
                    shared.broker_down.store(false, Ordering::SeqCst);
                } else {
                    std::thread::sleep(Duration::from_millis(250));
                    continue;
                }
            }
            if let Err(error) = self.replay_batch() {
                tracing::error!(%error, "spill replay failed");
                std::thread::sleep(Duration::from_millis(500));
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

    /// Sends one batch from the spill file and moves the replay position once the broker
    /// acknowledged all of it.
    fn replay_batch(&self) -> std::io::Result<()> {
        let shared = &self.shared;
        let (records, end, torn) = shared.spill().read_batch(REPLAY_BATCH)?;
        shared.replay_failed.store(false, Ordering::SeqCst);
        for record in &records {
            let key = traffsure_kafka::routing_key_bytes(record.routing_key);
            shared.replay_in_flight.fetch_add(1, Ordering::SeqCst);
            loop {
                let message = BaseRecord::with_opaque_to(&self.topic, REPLAY)
                    .key(&key[..])
                    .payload(&record.payload);
                match self.producer.send(message) {
                    Ok(()) => break,
                    Err((error, _))
                        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                    {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err((error, _)) => {
                        shared.replay_in_flight.fetch_sub(1, Ordering::SeqCst);
                        shared.replay_failed.store(true, Ordering::SeqCst);
                        tracing::warn!(%error, "cannot queue a replayed click event");
                        break;
                    }
                }
            }
            if shared.replay_failed.load(Ordering::SeqCst) {
                break;
            }
        }
        // Wait for the acknowledgements (the producer never times a message out).
        let deadline = Instant::now() + Duration::from_secs(5);
        while shared.replay_in_flight.load(Ordering::SeqCst) > 0 {
            if shared.stop.load(Ordering::SeqCst) && Instant::now() > deadline {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if shared.replay_failed.swap(false, Ordering::SeqCst) {
            shared.broker_down.store(true, Ordering::SeqCst);
            return Ok(());
        }
        let mut spill = shared.spill();
        spill.advance(end, torn)?;
        spill_pending_bytes().set(spill.pending_bytes() as i64);
        tracing::debug!(events = records.len(), "spilled click events replayed");
        Ok(())
    }

    /// Flushes the producer at shutdown; what the broker does not take within `timeout`
    /// goes to the spill file, which is synced to disk.
    pub fn shutdown(&self, timeout: Duration) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.replay.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = handle.join();
        }
        let timeout = if self.shared.broker_down.load(Ordering::SeqCst) {
            Duration::from_millis(500)
        } else {
            timeout
        };
        if self.producer.flush(timeout).is_err() {
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
        let spill = self.shared.spill();
        if let Err(error) = spill.sync() {
            tracing::error!(%error, "spill file not synced");
        }
        if spill.pending_bytes() > 0 {
            tracing::info!(bytes = spill.pending_bytes(), path = %spill.path().display(), "click events left in the spill file for the next start");
        }
    }
}

//! The delivery loop: conversions in, outbound postbacks out, every step recorded.
//!
//! A conversion version that fires an outbound postback becomes a delivery record on the
//! compacted `outbound-deliveries` topic before the conversion's offset is stored, so a
//! crash never loses one, and a conversion read again after a crash finds its deliveries
//! already recorded, so none is scheduled twice. Each attempt updates the record and goes
//! to `outbound-log`. At start the records are read back and unfinished ones resume.
//!
//! Several instances share the `conversions` partitions through their consumer group, and
//! the delivery records of a conversion live on the same partition number of
//! `outbound-deliveries`. An instance that loses a partition first lets its attempts and
//! recordings of that partition finish; an instance that gains one reads the partition's
//! records again before it reads a conversion of it, so a moved partition neither loses a
//! delivery nor schedules one twice.
//!
//! What is left to others: firing conditions and templates (`render`), the SSRF guard
//! (`guard`), circuit breakers, host limits and the retry schedule (`breaker`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{FuturesOrdered, StreamExt};
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use tokio::sync::{Notify, Semaphore};
use tracing::Instrument as _;
use traffsure_core::now_ms;
use traffsure_events::{Conversion, OutboundAttempt, OutboundDelivery, OutboundState};
use traffsure_kafka::{FlowRegistry, Topics};

use crate::breaker::{Admission, Backoff, Hosts, Transition};
use crate::guard::{check_url, GuardedResolver};
use crate::render::{build_request, firing};
use crate::{OutboundSettings, Settings};

/// Conversions read but whose delivery records are not acknowledged yet, at most.
const MAX_PENDING_CONVERSIONS: usize = 20_000;

/// The key of one delivery: a conversion version and one outbound postback of its flow.
pub fn delivery_key(conversion_id: &str, version: u32, outbound_id: &str) -> String {
    format!("{conversion_id}/{version}/{outbound_id}")
}

struct Entry {
    record: OutboundDelivery,
    partition: i32,
}

#[derive(Default)]
struct Deliveries {
    by_key: HashMap<String, Entry>,
    /// (due time, key); stale entries (the record moved on) are skipped when popped.
    due: BinaryHeap<Reverse<(i64, String)>>,
    in_flight: HashSet<String>,
    /// Partitions of `conversions` this instance owns; only their deliveries are sent,
    /// so several instances never send the same delivery. Empty until the first assignment.
    assigned: HashSet<i32>,
    /// Conversions per partition whose delivery records are being written.
    recording: HashMap<i32, usize>,
    /// The trace context of the conversion each unfinished delivery came from (kept in
    /// memory only, and only while traces are exported).
    traces: HashMap<String, OwnedHeaders>,
}

fn schedulable(state: OutboundState) -> bool {
    matches!(state, OutboundState::Unspecified | OutboundState::Retrying)
}

impl Deliveries {
    /// Adds a newly recorded delivery, unless one with its key is already known (the same
    /// conversion version read twice).
    fn put_new(&mut self, record: OutboundDelivery, partition: i32) {
        if !self.by_key.contains_key(&record.key) {
            self.put(record, partition);
        }
    }

    fn put(&mut self, record: OutboundDelivery, partition: i32) {
        if schedulable(record.state()) {
            self.due
                .push(Reverse((record.due_at_ms, record.key.clone())));
        }
        self.by_key
            .insert(record.key.clone(), Entry { record, partition });
    }
}

/// Which deliveries a manual replay selects.
#[derive(Debug, Clone)]
pub enum ReplaySelection {
    /// The latest version of one conversion, optionally one outbound postback.
    Conversion {
        conversion_id: String,
        outbound_id: Option<String>,
    },
    /// Every delivery of a flow in one state, optionally one outbound postback.
    Flow {
        flow_id: u32,
        state: OutboundState,
        outbound_id: Option<String>,
    },
}

pub struct Dispatcher {
    settings: OutboundSettings,
    kafka: traffsure_config::KafkaSettings,
    group_id: String,
    producer: FutureProducer,
    topics: Topics,
    deliveries_topic: String,
    registry: Arc<FlowRegistry>,
    deliveries: Mutex<Deliveries>,
    wake: Notify,
    hosts: Hosts,
    client: reqwest::Client,
    global: Arc<Semaphore>,
    backoff: Backoff,
    attempts: prometheus::IntCounterVec,
    circuits: prometheus::IntCounterVec,
    retries: prometheus::IntCounterVec,
    circuit_state: prometheus::IntGaugeVec,
    by_state: prometheus::IntGaugeVec,
}

/// Hands partition moves to the dispatcher while the consumer waits: revoked partitions
/// are released only when their work is recorded, assigned ones are loaded before any of
/// their conversions is read.
struct Rebalances {
    dispatcher: Arc<Dispatcher>,
}

impl ClientContext for Rebalances {}

impl ConsumerContext for Rebalances {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(list) => {
                let partitions = self.dispatcher.conversion_partitions(list);
                blocking(|| self.dispatcher.release(&partitions));
            }
            Rebalance::Assign(_) | Rebalance::Error(_) => {}
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions = self.dispatcher.conversion_partitions(list);
                blocking(|| self.dispatcher.take_over(&partitions));
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// Runs slow work from a rebalance callback, which runs inside the consumer's poll on a
/// runtime thread: the runtime moves its other tasks away meanwhile.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Counts a conversion whose records are being written until dropped.
struct Recording {
    dispatcher: Arc<Dispatcher>,
    partition: i32,
}

impl Drop for Recording {
    fn drop(&mut self) {
        let mut deliveries = self.dispatcher.lock();
        if let Some(count) = deliveries.recording.get_mut(&self.partition) {
            *count = count.saturating_sub(1);
        }
    }
}

impl Dispatcher {
    pub fn new(
        settings: &Settings,
        topics: Topics,
        registry: Arc<FlowRegistry>,
    ) -> anyhow::Result<Arc<Self>> {
        let out = settings.outbound.clone();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(out.connect_timeout_ms))
            .timeout(Duration::from_millis(out.request_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(out.per_host_in_flight)
            .user_agent("TraffSure-postback-dispatcher")
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: out.allow_private_targets,
            }))
            .build()
            .context("build http client")?;
        Ok(Arc::new(Self {
            kafka: settings.kafka.clone(),
            group_id: settings.group_id.clone(),
            producer: traffsure_kafka::producer(&settings.kafka)?,
            deliveries_topic: format!("{}outbound-deliveries", settings.kafka.topic_prefix),
            topics,
            registry,
            deliveries: Mutex::new(Deliveries::default()),
            wake: Notify::new(),
            hosts: Hosts::new(
                out.per_host_in_flight,
                out.breaker_failures,
                Duration::from_millis(out.breaker_open_ms),
            ),
            client,
            global: Arc::new(Semaphore::new(out.max_in_flight.max(1))),
            backoff: out.backoff()?,
            attempts: traffsure_telemetry::counter_vec(
                "traffsure_outbound_attempts_total",
                "Outbound postback attempts by resulting state",
                &["state"],
            ),
            circuits: traffsure_telemetry::counter_vec(
                "traffsure_outbound_circuit_transitions_total",
                "Per-host circuit breaker transitions",
                &["to"],
            ),
            retries: traffsure_telemetry::counter_vec(
                "traffsure_outbound_retries_total",
                "Outbound postback attempts that failed and were scheduled again, per host",
                &["host"],
            ),
            circuit_state: traffsure_telemetry::gauge_vec(
                "traffsure_outbound_circuit_state",
                "Circuit of each host: 0 closed, 1 half-open, 2 open",
                &["host"],
            ),
            by_state: traffsure_telemetry::gauge_vec(
                "traffsure_outbound_deliveries",
                "Deliveries this instance knows, by state",
                &["state"],
            ),
            settings: out,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Deliveries> {
        self.deliveries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates the compacted deliveries topic if needed.
    pub async fn ensure_topic(&self) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            traffsure_kafka::client_config(&self.kafka).create()?;
        let topic = NewTopic::new(
            &self.deliveries_topic,
            self.kafka.partitions.max(1),
            TopicReplication::Fixed(self.kafka.replication_factor.max(1)),
        )
        .set("cleanup.policy", "compact");
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin.create_topics([&topic], &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => anyhow::bail!("cannot create topic {topic}: {code}"),
            }
        }
        Ok(())
    }

    /// Reads every delivery record back; unfinished deliveries are scheduled again.
    pub async fn restore(&self) -> anyhow::Result<usize> {
        let (consumer, mut catch_up) =
            traffsure_kafka::read_from_beginning(&self.kafka, &self.deliveries_topic)
                .await
                .context("read outbound-deliveries topic")?;
        let mut latest: HashMap<String, (OutboundDelivery, i32)> = HashMap::new();
        while !catch_up.is_done() {
            let message = consumer
                .recv()
                .await
                .context("read outbound-deliveries topic")?;
            match message.payload().map(OutboundDelivery::decode) {
                Some(Ok(record)) => {
                    latest.insert(record.key.clone(), (record, message.partition()));
                }
                Some(Err(error)) => {
                    tracing::warn!(offset = message.offset(), %error, "skipping undecodable delivery record")
                }
                None => {
                    if let Some(key) = message.key() {
                        latest.remove(String::from_utf8_lossy(key).as_ref());
                    }
                }
            }
            catch_up.observe(message.partition(), message.offset());
        }
        let mut deliveries = self.lock();
        let mut unfinished = 0;
        for (_, (record, partition)) in latest {
            if schedulable(record.state()) {
                unfinished += 1;
            }
            deliveries.put(record, partition);
        }
        Ok(unfinished)
    }

    /// Writes a delivery record, retrying until the broker acknowledges it.
    async fn persist(&self, record: &OutboundDelivery, partition: i32) {
        let payload = record.encode_to_vec();
        let mut wait = Duration::from_millis(100);
        loop {
            let kafka_record = FutureRecord::to(&self.deliveries_topic)
                .key(record.key.as_bytes())
                .payload(&payload)
                .partition(partition);
            match self
                .producer
                .send(kafka_record, Duration::from_secs(5))
                .await
            {
                Ok(_) => return,
                Err((error, _)) => {
                    traffsure_kafka::metrics::count_delivery_error("postback-dispatcher", &error);
                    tracing::warn!(key = %record.key, %error, "delivery record not written, retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Writes one attempt to `outbound-log`, retrying until the broker acknowledges it.
    async fn log_attempt(&self, attempt: &OutboundAttempt) {
        let mut wait = Duration::from_millis(100);
        loop {
            match traffsure_kafka::send_event(
                &self.producer,
                &self.topics.outbound_log,
                attempt.conversion_id.as_bytes(),
                attempt,
            )
            .await
            {
                Ok(_) => return,
                Err(error) => {
                    traffsure_kafka::metrics::count_delivery_error("postback-dispatcher", &error);
                    tracing::warn!(conversion_id = %attempt.conversion_id, %error, "outbound attempt not logged, retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// The deliveries a conversion version owes that are not recorded yet. A conversion
    /// of a flow not loaded yet waits for it a while (the flow may be seconds old).
    async fn new_deliveries(&self, conversion: &Conversion) -> Vec<OutboundDelivery> {
        let deadline = Instant::now() + Duration::from_millis(self.settings.flow_wait_ms);
        let flow = loop {
            if let Some(flow) = self.registry.get(conversion.flow_id) {
                break flow;
            }
            if Instant::now() >= deadline {
                tracing::warn!(flow = conversion.flow_id, conversion_id = %conversion.conversion_id, "conversion of an unknown flow fires nothing");
                return Vec::new();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let known = self.lock();
        let since = conversion.updated_at_ms.max(conversion.created_at_ms);
        firing(&flow, conversion)
            .into_iter()
            .map(|outbound| {
                let key = delivery_key(&conversion.conversion_id, conversion.version, &outbound.id);
                (key, outbound)
            })
            .filter(|(key, _)| !known.by_key.contains_key(key))
            .map(|(key, outbound)| OutboundDelivery {
                key,
                conversion: Some(conversion.clone()),
                outbound_id: outbound.id.clone(),
                due_at_ms: since + i64::from(outbound.delay_seconds) * 1000,
                updated_at_ms: now_ms(),
                ..OutboundDelivery::default()
            })
            .collect()
    }

    /// Consumes conversions, records the deliveries they owe, and stores each offset only
    /// once everything before it is recorded.
    pub async fn consume(self: Arc<Self>) -> anyhow::Result<()> {
        let consumer: StreamConsumer<Rebalances> =
            traffsure_kafka::group_consumer_config(&self.kafka, &self.group_id)
                .create_with_context(Rebalances {
                    dispatcher: self.clone(),
                })?;
        consumer.subscribe(&[&self.topics.conversions])?;
        let consumer = Arc::new(consumer);
        traffsure_kafka::metrics::spawn_lag_reporter(
            consumer.clone(),
            self.group_id.clone(),
            Duration::from_secs(5),
        );
        let mut pending = FuturesOrdered::new();
        let shutdown = traffsure_telemetry::shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                message = consumer.recv(), if pending.len() < MAX_PENDING_CONVERSIONS => {
                    let message = match message {
                        Ok(m) => m,
                        Err(error) => {
                            tracing::warn!(%error, "conversions topic read failed");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    };
                    let (partition, offset) = (message.partition(), message.offset());
                    let conversion = match message.payload().map(Conversion::decode) {
                        Some(Ok(conversion)) => Some(conversion),
                        _ => {
                            tracing::warn!(partition, offset, "skipping undecodable conversion");
                            None
                        }
                    };
                    let span = traffsure_kafka::trace::span_from_headers("record deliveries", message.headers());
                    let trace = (!span.is_none())
                        .then(|| message.headers().map(|h| h.detach()))
                        .flatten();
                    *self.lock().recording.entry(partition).or_default() += 1;
                    let recording = Recording { dispatcher: self.clone(), partition };
                    let this = self.clone();
                    // A task of its own, so a revoked partition's recordings finish while
                    // the rebalance callback waits for them.
                    pending.push_back(tokio::spawn(async move {
                        let records = match conversion {
                            Some(conversion) => this.new_deliveries(&conversion).await,
                            None => Vec::new(),
                        };
                        futures::future::join_all(records.iter().map(|r| this.persist(r, partition))).await;
                        if let Some(trace) = trace {
                            let mut deliveries = this.lock();
                            for record in &records {
                                deliveries.traces.insert(record.key.clone(), trace.clone());
                            }
                        }
                        drop(recording);
                        (partition, offset, records)
                    }.instrument(span)));
                }
                Some(done) = pending.next(), if !pending.is_empty() => {
                    let (partition, offset, records) = done.context("recording deliveries panicked")?;
                    self.recorded(&*consumer, partition, offset, records);
                }
                _ = &mut shutdown => {
                    while let Some(done) = pending.next().await {
                        let (partition, offset, records) = done.context("recording deliveries panicked")?;
                        self.recorded(&*consumer, partition, offset, records);
                    }
                    match consumer.commit_consumer_state(CommitMode::Sync) {
                        Ok(()) => {}
                        // Nothing stored since the last automatic commit.
                        Err(error) if error.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {}
                        Err(error) => tracing::warn!(%error, "final offset commit failed"),
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Takes a conversion's recorded deliveries into the schedule and stores its offset.
    fn recorded<C: Consumer<X>, X: ConsumerContext>(
        &self,
        consumer: &C,
        partition: i32,
        offset: i64,
        records: Vec<OutboundDelivery>,
    ) {
        let mut deliveries = self.lock();
        // A partition that moved away meanwhile is its new owner's, who read these
        // records back when it took the partition.
        if !deliveries.assigned.contains(&partition) {
            return;
        }
        let any = !records.is_empty();
        for record in records {
            deliveries.put_new(record, partition);
        }
        drop(deliveries);
        if any {
            self.wake.notify_one();
        }
        let mut list = TopicPartitionList::new();
        let stored = list
            .add_partition_offset(
                &self.topics.conversions,
                partition,
                Offset::Offset(offset + 1),
            )
            .and_then(|()| consumer.store_offsets(&list));
        if let Err(error) = stored {
            // Revoked this very moment: the new owner reads the conversion again and
            // finds its deliveries recorded.
            tracing::debug!(partition, offset, %error, "conversion offset not stored");
        }
    }

    /// The partitions of `conversions` in a rebalance list.
    fn conversion_partitions(&self, list: &TopicPartitionList) -> Vec<i32> {
        list.elements_for_topic(&self.topics.conversions)
            .iter()
            .map(|e| e.partition())
            .collect()
    }

    /// Gives up partitions: no new attempt of theirs starts, and this returns once their
    /// attempts in flight and the recordings of their conversions are written (or after
    /// a bound, with a warning), so the next owner reads every record.
    fn release(&self, partitions: &[i32]) {
        if partitions.is_empty() {
            return;
        }
        {
            let mut deliveries = self.lock();
            for partition in partitions {
                deliveries.assigned.remove(partition);
            }
        }
        let bound = Duration::from_millis(
            self.settings.request_timeout_ms + self.settings.flow_wait_ms + 10_000,
        );
        let deadline = Instant::now() + bound;
        loop {
            let busy = {
                let deliveries = self.lock();
                let attempts = deliveries
                    .in_flight
                    .iter()
                    .filter(|key| {
                        deliveries
                            .by_key
                            .get(*key)
                            .is_some_and(|e| partitions.contains(&e.partition))
                    })
                    .count();
                let recordings: usize = partitions
                    .iter()
                    .filter_map(|p| deliveries.recording.get(p))
                    .sum();
                attempts + recordings
            };
            if busy == 0 {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    ?partitions,
                    busy,
                    "releasing partitions with work still in flight"
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        tracing::info!(?partitions, "conversions partitions released");
    }

    /// Takes partitions over: reads their delivery records back (another instance may have
    /// written them since this one last looked), then schedules what is unfinished.
    fn take_over(&self, partitions: &[i32]) {
        if partitions.is_empty() {
            return;
        }
        let started = Instant::now();
        let loaded = loop {
            match self.read_partitions(partitions) {
                Ok(loaded) => break loaded,
                Err(error) => {
                    // Without its records a partition would send deliveries again: wait.
                    tracing::warn!(?partitions, %error, "delivery records not read, retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        };
        let count = loaded.len();
        let mut deliveries = self.lock();
        let stale: Vec<String> = deliveries
            .by_key
            .iter()
            .filter(|(key, e)| {
                partitions.contains(&e.partition) && !deliveries.in_flight.contains(*key)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            deliveries.by_key.remove(&key);
        }
        for (record, partition) in loaded.into_values() {
            deliveries.put(record, partition);
        }
        deliveries.assigned.extend(partitions.iter().copied());
        drop(deliveries);
        self.wake.notify_one();
        tracing::info!(
            ?partitions,
            records = count,
            ms = started.elapsed().as_millis() as u64,
            "conversions partitions taken over"
        );
    }

    /// The latest delivery record of every key on some partitions of the deliveries topic.
    fn read_partitions(
        &self,
        partitions: &[i32],
    ) -> anyhow::Result<HashMap<String, (OutboundDelivery, i32)>> {
        let reader: BaseConsumer = traffsure_kafka::client_config(&self.kafka)
            .set("group.id", "traffsure-reader") // never joined, never committed
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "50")
            .create()?;
        let timeout = Duration::from_secs(10);
        let mut ends = HashMap::new();
        let mut assignment = TopicPartitionList::new();
        for &partition in partitions {
            let (low, high) =
                reader.fetch_watermarks(&self.deliveries_topic, partition, timeout)?;
            if high > low {
                ends.insert(partition, high);
                assignment.add_partition_offset(
                    &self.deliveries_topic,
                    partition,
                    Offset::Beginning,
                )?;
            }
        }
        let mut latest = HashMap::new();
        if ends.is_empty() {
            return Ok(latest);
        }
        reader.assign(&assignment)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !ends.is_empty() {
            if Instant::now() > deadline {
                anyhow::bail!("delivery records not read within 120 s");
            }
            let Some(message) = reader.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message?;
            let partition = message.partition();
            match message.payload().map(OutboundDelivery::decode) {
                Some(Ok(record)) => {
                    latest.insert(record.key.clone(), (record, partition));
                }
                Some(Err(error)) => {
                    tracing::warn!(partition, offset = message.offset(), %error, "skipping undecodable delivery record")
                }
                None => {
                    if let Some(key) = message.key() {
                        latest.remove(String::from_utf8_lossy(key).as_ref());
                    }
                }
            }
            if ends
                .get(&partition)
                .is_some_and(|&end| message.offset() + 1 >= end)
            {
                ends.remove(&partition);
            }
        }
        Ok(latest)
    }

    /// Starts every delivery that is due, and sleeps until the next one.
    pub async fn schedule(self: Arc<Self>) {
        let mut last_gauges = Instant::now();
        loop {
            let now = now_ms();
            let mut ready = Vec::new();
            let next = {
                let mut deliveries = self.lock();
                loop {
                    let Some(Reverse((due, _))) = deliveries.due.peek() else {
                        break None;
                    };
                    if *due > now {
                        break Some(*due);
                    }
                    let Some(Reverse((due, key))) = deliveries.due.pop() else {
                        break None;
                    };
                    let current = deliveries.by_key.get(&key).is_some_and(|e| {
                        e.record.due_at_ms == due
                            && schedulable(e.record.state())
                            && deliveries.assigned.contains(&e.partition)
                    });
                    if current && deliveries.in_flight.insert(key.clone()) {
                        ready.push(key);
                    }
                }
            };
            for key in ready {
                let span = match self.lock().traces.get(&key) {
                    Some(headers) => traffsure_kafka::trace::span_from_headers(
                        "outbound postback",
                        Some(headers),
                    ),
                    None => tracing::Span::none(),
                };
                tokio::spawn(self.clone().attempt(key).instrument(span));
            }
            if last_gauges.elapsed() >= Duration::from_secs(2) {
                last_gauges = Instant::now();
                self.publish_state_counts();
            }
            let sleep = next
                .map(|due| Duration::from_millis((due - now).clamp(1, 1000) as u64))
                .unwrap_or(Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Publishes how many deliveries this instance knows in each state.
    fn publish_state_counts(&self) {
        let mut counts: HashMap<&'static str, i64> = [
            OutboundState::Unspecified,
            OutboundState::Retrying,
            OutboundState::Delivered,
            OutboundState::Dead,
            OutboundState::Refused,
        ]
        .into_iter()
        .map(|state| (state_name(state), 0))
        .collect();
        for entry in self.lock().by_key.values() {
            *counts.entry(state_name(entry.record.state())).or_default() += 1;
        }
        for (state, count) in counts {
            self.by_state.with_label_values(&[state]).set(count);
        }
    }

    /// Puts a delivery back in the queue without an attempt (its circuit is open).
    fn postpone(&self, key: &str, until_ms: i64) {
        let mut deliveries = self.lock();
        deliveries.in_flight.remove(key);
        if let Some(entry) = deliveries.by_key.get_mut(key) {
            // Spread the waiting deliveries over a moment, so a closing circuit is not
            // hit by all of them at once.
            let due = until_ms + rand::random_range(0..250);
            entry.record.due_at_ms = due;
            deliveries.due.push(Reverse((due, key.to_string())));
        }
    }

    /// One attempt at one delivery; records the outcome and schedules what follows.
    async fn attempt(self: Arc<Self>, key: String) {
        let Some((record, partition)) = self
            .lock()
            .by_key
            .get(&key)
            .map(|e| (e.record.clone(), e.partition))
        else {
            return;
        };
        let conversion = record.conversion.clone().unwrap_or_default();
        let outbound = self.registry.get(conversion.flow_id).and_then(|flow| {
            flow.outbound_postbacks
                .iter()
                .find(|o| o.id == record.outbound_id)
                .cloned()
        });
        let mut attempt = OutboundAttempt {
            attempt_id: uuid::Uuid::now_v7().to_string(),
            conversion_id: conversion.conversion_id.clone(),
            conversion_version: conversion.version,
            outbound_id: record.outbound_id.clone(),
            flow_id: conversion.flow_id,
            click_hash: conversion.click_hash.clone(),
            goal: conversion.goal.clone(),
            status: conversion.status,
            revenue_micros: conversion.revenue_micros,
            currency: conversion.currency.clone(),
            attempt: record.attempt + 1,
            manual: record.manual,
            ..OutboundAttempt::default()
        };
        let outbound = match outbound {
            Some(o) if o.enabled => o,
            Some(_) => {
                let error = format!("outbound postback {} is disabled", record.outbound_id);
                return self.finish(record, partition, attempt, None, error).await;
            }
            None => {
                let error = format!(
                    "flow {} has no outbound postback {}",
                    conversion.flow_id, record.outbound_id
                );
                return self.finish(record, partition, attempt, None, error).await;
            }
        };
        let request = build_request(&outbound, &conversion);
        attempt.method = request.method.clone();
        attempt.url = request.url.clone();
        attempt.request_body = request.body.clone();
        let url = match check_url(&request.url, self.settings.allow_private_targets) {
            Ok(url) => url,
            Err(refused) => {
                return self
                    .finish(record, partition, attempt, None, refused.to_string())
                    .await
            }
        };
        let host_key = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        );
        let host = self.hosts.get(&host_key);
        let Ok(host_permit) = host.permits.clone().acquire_owned().await else {
            return;
        };
        let admission = {
            let mut breaker = host
                .breaker
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let admission = breaker.admit(now_ms());
            self.circuit_state
                .with_label_values(&[host_key.as_str()])
                .set(breaker.state_code());
            admission
        };
        if let Admission::WaitUntil(until) = admission {
            return self.postpone(&key, until);
        }
        let Ok(permit) = self.global.clone().acquire_owned().await else {
            return;
        };
        {
            // The partition may have moved while this attempt waited for a slot.
            let mut deliveries = self.lock();
            if !deliveries.assigned.contains(&partition) {
                deliveries.in_flight.remove(&key);
                return;
            }
        }
        let started = Instant::now();
        attempt.attempted_at_ms = now_ms();
        let mut builder = self
            .client
            .request(
                if request.method == "POST" {
                    reqwest::Method::POST
                } else {
                    reqwest::Method::GET
                },
                url,
            )
            .header("x-traffsure-delivery", &record.key);
        if let Some(content_type) = request.content_type {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(request.body);
        }
        let outcome = match builder.send().await {
            Ok(response) => {
                let status = response.status();
                let snippet = read_snippet(response, self.settings.response_snippet_bytes).await;
                Ok((status, snippet))
            }
            Err(error) => Err(error_text(&error)),
        };
        attempt.latency_ms = started.elapsed().as_millis().min(u128::from(u32::MAX)) as u32;
        let success = matches!(&outcome, Ok((status, _)) if status.is_success());
        let transition = {
            let mut breaker = host
                .breaker
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let transition = breaker.record(success, now_ms());
            self.circuit_state
                .with_label_values(&[host_key.as_str()])
                .set(breaker.state_code());
            transition
        };
        match transition {
            Some(Transition::Opened) => {
                self.circuits.with_label_values(&["open"]).inc();
                tracing::warn!(host = %host_key, "circuit opened");
            }
            Some(Transition::Closed) => {
                self.circuits.with_label_values(&["closed"]).inc();
                tracing::info!(host = %host_key, "circuit closed");
            }
            None => {}
        }
        let error = match outcome {
            Ok((status, snippet)) => {
                attempt.http_status = u32::from(status.as_u16());
                attempt.response_snippet = snippet;
                if success {
                    String::new()
                } else {
                    format!("http status {}", status.as_u16())
                }
            }
            Err(error) => error,
        };
        let sent = Some(success);
        if !success {
            self.retries.with_label_values(&[host_key.as_str()]).inc();
        }
        self.finish(record, partition, attempt, sent, error).await;
        // The slots are held until the outcome is recorded: a crash can then repeat at
        // most the host's slots worth of answered but unrecorded postbacks.
        drop(permit);
        drop(host_permit);
    }

    /// Records an attempt's outcome: `sent` is `None` when the request was refused
    /// before sending, else whether it was delivered.
    async fn finish(
        &self,
        mut record: OutboundDelivery,
        partition: i32,
        mut attempt: OutboundAttempt,
        sent: Option<bool>,
        error: String,
    ) {
        let now = now_ms();
        record.attempt += 1;
        record.round_attempt += 1;
        record.updated_at_ms = now;
        record.last_error = error.clone();
        let state = match sent {
            None => OutboundState::Refused,
            Some(true) => OutboundState::Delivered,
            Some(false) if record.round_attempt >= self.settings.max_attempts => {
                OutboundState::Dead
            }
            Some(false) => {
                let wait = self.backoff.delay(record.round_attempt);
                record.due_at_ms = now + wait.as_millis() as i64;
                attempt.next_attempt_at_ms = record.due_at_ms;
                OutboundState::Retrying
            }
        };
        record.set_state(state);
        attempt.set_state(state);
        attempt.error = error;
        if attempt.attempted_at_ms == 0 {
            attempt.attempted_at_ms = now;
        }
        self.attempts.with_label_values(&[state_name(state)]).inc();
        if state == OutboundState::Dead {
            tracing::warn!(key = %record.key, attempts = record.attempt, error = %attempt.error, "outbound postback dead");
        }
        futures::join!(self.log_attempt(&attempt), self.persist(&record, partition));
        let mut deliveries = self.lock();
        deliveries.in_flight.remove(&record.key);
        if !schedulable(state) {
            deliveries.traces.remove(&record.key);
        }
        deliveries.put(record, partition);
        drop(deliveries);
        if state == OutboundState::Retrying {
            self.wake.notify_one();
        }
    }

    /// Schedules the selected deliveries again at once; returns how many.
    pub async fn replay(&self, selection: &ReplaySelection) -> usize {
        let now = now_ms();
        let chosen: Vec<(OutboundDelivery, i32)> = {
            let deliveries = self.lock();
            let matches_outbound = |wanted: &Option<String>, record: &OutboundDelivery| {
                wanted.as_ref().is_none_or(|id| *id == record.outbound_id)
            };
            let mut chosen: Vec<&Entry> = match selection {
                ReplaySelection::Conversion {
                    conversion_id,
                    outbound_id,
                } => {
                    // The latest version of the conversion, per outbound postback.
                    let mut latest: HashMap<&str, &Entry> = HashMap::new();
                    for entry in deliveries.by_key.values() {
                        let record = &entry.record;
                        let Some(conversion) = &record.conversion else {
                            continue;
                        };
                        if conversion.conversion_id != *conversion_id
                            || !matches_outbound(outbound_id, record)
                        {
                            continue;
                        }
                        let newer = latest.get(record.outbound_id.as_str()).is_none_or(|e| {
                            e.record.conversion.as_ref().map(|c| c.version)
                                < Some(conversion.version)
                        });
                        if newer {
                            latest.insert(record.outbound_id.as_str(), entry);
                        }
                    }
                    latest.into_values().collect()
                }
                ReplaySelection::Flow {
                    flow_id,
                    state,
                    outbound_id,
                } => deliveries
                    .by_key
                    .values()
                    .filter(|e| {
                        e.record.state() == *state
                            && e.record.conversion.as_ref().map(|c| c.flow_id) == Some(*flow_id)
                            && matches_outbound(outbound_id, &e.record)
                    })
                    .collect(),
            };
            chosen.retain(|e| !deliveries.in_flight.contains(&e.record.key));
            chosen
                .into_iter()
                .map(|e| {
                    let mut record = e.record.clone();
                    record.set_state(OutboundState::Unspecified);
                    record.round_attempt = 0;
                    record.due_at_ms = now;
                    record.updated_at_ms = now;
                    record.manual = true;
                    (record, e.partition)
                })
                .collect()
        };
        futures::future::join_all(chosen.iter().map(|(r, p)| self.persist(r, *p))).await;
        let count = chosen.len();
        let mut deliveries = self.lock();
        for (record, partition) in chosen {
            deliveries.put(record, partition);
        }
        drop(deliveries);
        self.wake.notify_one();
        count
    }

    /// Whether any delivery matches, in any state (to tell "nothing to replay" from
    /// "unknown").
    pub fn knows(&self, selection: &ReplaySelection) -> bool {
        let deliveries = self.lock();
        deliveries.by_key.values().any(|e| match selection {
            ReplaySelection::Conversion {
                conversion_id,
                outbound_id,
            } => {
                e.record
                    .conversion
                    .as_ref()
                    .map(|c| c.conversion_id.as_str())
                    == Some(conversion_id.as_str())
                    && outbound_id
                        .as_ref()
                        .is_none_or(|id| *id == e.record.outbound_id)
            }
            ReplaySelection::Flow {
                flow_id,
                outbound_id,
                ..
            } => {
                e.record.conversion.as_ref().map(|c| c.flow_id) == Some(*flow_id)
                    && outbound_id
                        .as_ref()
                        .is_none_or(|id| *id == e.record.outbound_id)
            }
        })
    }

    /// Counts of deliveries by state, and hosts with an open circuit.
    pub fn summary(&self) -> serde_json::Value {
        let deliveries = self.lock();
        let mut by_state: HashMap<&'static str, usize> = HashMap::new();
        for entry in deliveries.by_key.values() {
            *by_state
                .entry(state_name(entry.record.state()))
                .or_default() += 1;
        }
        let in_flight = deliveries.in_flight.len();
        drop(deliveries);
        serde_json::json!({
            "deliveries": by_state,
            "in_flight": in_flight,
            "open_circuits": self.hosts.open_circuits(),
        })
    }
}

pub fn state_name(state: OutboundState) -> &'static str {
    match state {
        OutboundState::Unspecified => "scheduled",
        OutboundState::Delivered => "delivered",
        OutboundState::Retrying => "retrying",
        OutboundState::Dead => "dead",
        OutboundState::Refused => "refused",
    }
}

/// The first bytes of an answer, as text.
async fn read_snippet(mut response: reqwest::Response, limit: usize) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(limit);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A transport error with its causes ("connection refused", "operation timed out").
fn error_text(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timeout".to_string()
    } else if error.is_connect() {
        "connect failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

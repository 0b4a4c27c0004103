//! The consume-transform-produce loop: clicks and postbacks of the partitions this
//! instance owns go in, conversions and postback results come out, and both the output and
//! the consumed positions are committed in one Kafka transaction.
//!
//! The loop runs on its own thread with blocking clients. A partition's state is loaded
//! (`restore`) the first time one of its messages arrives, before any of its postbacks is
//! processed. On a rebalance or a failed transaction the open transaction is aborted and
//! every partition's state is dropped; the consumer resumes from the committed positions
//! and the state is reloaded, so what the state holds always matches what Kafka committed.
//! Between transactions the states are trimmed to what `retention` keeps.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use prost::Message as _;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::mpsc::UnboundedReceiver;
use traffsure_core::now_ms;
use traffsure_events::{Click, Conversion, Postback, PostbackOutcome, PostbackResult};
use traffsure_kafka::rebalance::{self, RebalanceContext, RebalanceEvent, RebalanceWait};
use traffsure_kafka::transaction::{self, Abort, TransactionError, TransactionalProducer};
use traffsure_kafka::{FlowRegistry, Topics};

use crate::attribute::{self, ClickInfo, Decision};
use crate::metrics;
use crate::restore;
use crate::retention::{self, Retention};
use crate::store::PartitionState;
use crate::Settings;
use traffsure_kafka::caps::SharedCounter;

/// More take-overs of the transactional id than this within `TAKE_OVER_WINDOW` stop the
/// service: another instance has the same `instance_id` (see `Processor::take_over`).
const MAX_TAKE_OVERS: usize = 5;
const TAKE_OVER_WINDOW: Duration = Duration::from_secs(60);
/// Initialisations a take-over tries (30 s each at most) while the coordinator is away.
const TAKE_OVER_ATTEMPTS: u32 = 6;

const EXPIRED_MESSAGE: &str = "click is older than the flow's attribution window";

/// Collects the offsets the transaction's conversions got, for the state checkpoints.
pub struct DeliveryContext {
    conversions_topic: String,
    conversion_ends: Mutex<HashMap<i32, i64>>,
    failed: AtomicBool,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) if message.topic() == self.conversions_topic => {
                let mut ends = self
                    .conversion_ends
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let end = ends.entry(message.partition()).or_insert(0);
                *end = (*end).max(message.offset() + 1);
            }
            Ok(_) => {}
            // An aborted transaction's events, purged on purpose: nothing was lost.
            Err((error, _)) if transaction::is_purged(error) => {}
            Err((error, _)) => {
                traffsure_kafka::metrics::count_delivery_error("conversion-attribution", error);
                tracing::warn!(%error, "event not delivered");
                self.failed.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// A postback waiting for its click.
struct Held {
    postback: Postback,
    offset: i64,
    deadline: Instant,
}

/// What the loop knows of one partition it owns.
struct Owned {
    state: PartitionState,
    /// Next offsets to commit, once something was read in this assignment.
    clicks_next: Option<i64>,
    postbacks_next: Option<i64>,
    held: Vec<Held>,
    /// Conversion versions published in the open transaction, written to the file on commit.
    uncommitted: Vec<Conversion>,
}

impl Owned {
    /// The postbacks position to commit: never past a held postback.
    fn postbacks_commit(&self) -> Option<i64> {
        let held = self.held.iter().map(|h| h.offset).min();
        match (held, self.postbacks_next) {
            (Some(h), Some(n)) => Some(h.min(n)),
            (h, n) => n.or(h),
        }
    }
}

pub struct Processor {
    settings: Settings,
    topics: Topics,
    registry: Arc<FlowRegistry>,
    consumer: BaseConsumer<RebalanceContext>,
    /// The consumer's rebalances, answered after each poll.
    rebalances: UnboundedReceiver<RebalanceEvent>,
    /// The partition numbers of the consumer's latest assignment.
    assigned: Vec<i32>,
    producer: TransactionalProducer<DeliveryContext>,
    partitions: HashMap<i32, Owned>,
    state_dir: PathBuf,
    hold_timeout: Duration,
    commit_interval: Duration,
    /// Counts consumers replaced after a failed transaction.
    recoveries: u64,
    /// When the producer was fenced and replaced, within the last `TAKE_OVER_WINDOW`.
    take_overs: Vec<Instant>,
    transaction_events: usize,
    trim_interval: Duration,
    last_trim: Instant,
    shutdown: Arc<AtomicBool>,
    /// The shared count behind conversion caps (`crate::caps`).
    caps: SharedCounter,
}

/// The group consumer of clicks and postbacks, and its rebalances: the callbacks do not
/// wait, the loop answers them after each poll.
fn group_consumer(
    settings: &Settings,
    topics: &Topics,
) -> anyhow::Result<(
    BaseConsumer<RebalanceContext>,
    UnboundedReceiver<RebalanceEvent>,
)> {
    let mut config = traffsure_kafka::group_consumer_config(&settings.kafka, &settings.group_id);
    config
        .set("enable.auto.commit", "false") // offsets are committed in the transaction
        // Range assigns the same partition numbers of clicks and postbacks to one member.
        .set("partition.assignment.strategy", "range")
        // Static membership: a restarted instance takes its partitions back at once
        // instead of waiting for the session of the crashed one to time out.
        .set(
            "group.instance.id",
            format!("{}-{}", settings.group_id, settings.instance_id),
        )
        .set("fetch.wait.max.ms", "50");
    let (context, rebalances) = rebalance::channel(RebalanceWait::No);
    let consumer: BaseConsumer<RebalanceContext> = config.create_with_context(context)?;
    consumer.subscribe(&[&topics.clicks, &topics.postbacks])?;
    Ok((consumer, rebalances))
}

/// The transactional producer of this instance. Initialising it fences any earlier
/// producer with the same transactional id and aborts that one's open transaction.
fn transactional_producer(
    settings: &Settings,
    topics: &Topics,
) -> anyhow::Result<TransactionalProducer<DeliveryContext>> {
    let mut config = traffsure_kafka::producer_config(&settings.kafka);
    config
        // A crashed instance's open transaction blocks read_committed readers until
        // it times out or the instance restarts.
        .set("transaction.timeout.ms", "10000")
        .set("message.timeout.ms", "10000"); // must not exceed the transaction timeout
    let conversions_topic = topics.conversions.clone();
    let producer = TransactionalProducer::new(
        config,
        &format!("{}-{}", settings.group_id, settings.instance_id),
        move || DeliveryContext {
            conversions_topic: conversions_topic.clone(),
            conversion_ends: Mutex::new(HashMap::new()),
            failed: AtomicBool::new(false),
        },
    )?;
    Ok(producer)
}

impl Processor {
    /// Connects, fences any earlier producer with this instance's transactional id and
    /// subscribes. Blocking.
    pub fn new(
        settings: Settings,
        topics: Topics,
        registry: Arc<FlowRegistry>,
        shutdown: Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        let producer = transactional_producer(&settings, &topics)?;
        let (consumer, rebalances) = group_consumer(&settings, &topics)?;
        let state_dir = PathBuf::from(&settings.state_dir).join(topics.clicks.replace('/', "_"));
        let settings_trim_interval = settings.trim_interval_secs.max(1);
        Ok(Self {
            hold_timeout: Duration::from_secs(settings.hold_timeout_secs),
            commit_interval: Duration::from_millis(settings.commit_interval_ms.max(1)),
            settings,
            topics,
            registry,
            consumer,
            rebalances,
            assigned: Vec::new(),
            producer,
            partitions: HashMap::new(),
            state_dir,
            recoveries: 0,
            take_overs: Vec::new(),
            transaction_events: 0,
            trim_interval: Duration::from_secs(settings_trim_interval),
            last_trim: Instant::now(),
            shutdown,
            caps: SharedCounter::default(),
        })
    }

    /// Marks conversions over cap by the counts of `caps` (see `crate::caps`).
    pub fn with_caps(mut self, caps: SharedCounter) -> Self {
        self.caps = caps;
        self
    }

    /// Consumes, attributes and commits until shutdown. A fenced producer is replaced
    /// (see `take_over`) rather than ending the service, unless it happens too often.
    pub fn run(mut self) -> anyhow::Result<()> {
        loop {
            match self.serve() {
                Err(error)
                    if traffsure_kafka::transaction::caused_by_fencing(&*error)
                        || self.producer.fenced() =>
                {
                    self.take_over(error)?;
                }
                done => return done,
            }
        }
    }

    /// After this producer was fenced: a new producer takes the transactional id over and
    /// the consumer starts again from the committed positions, as after a failed commit.
    /// Fenced without another instance holding the id: the transaction coordinator's
    /// broker died, and the coordinator that took over aborted the open transaction once
    /// it outlived `transaction.timeout.ms` and bumped the id's epoch (seen when the
    /// leader of a `clicks` partition was SIGKILLed under load). Fenced again and again:
    /// another running instance has this `instance_id`, and the two would take the id
    /// from each other for ever, so the service stops and says so.
    fn take_over(&mut self, error: anyhow::Error) -> anyhow::Result<()> {
        let now = Instant::now();
        self.take_overs
            .retain(|at| now.duration_since(*at) < TAKE_OVER_WINDOW);
        if self.take_overs.len() >= MAX_TAKE_OVERS {
            return Err(error.context(format!(
                "fenced {} times within {}s: is another instance running with instance_id {:?}?",
                self.take_overs.len() + 1,
                TAKE_OVER_WINDOW.as_secs(),
                self.settings.instance_id
            )));
        }
        self.take_overs.push(now);
        tracing::warn!(
            error = format!("{error:#}"),
            "producer fenced, taking the transactional id over"
        );
        self.producer.take_over(TAKE_OVER_ATTEMPTS)?;
        self.transaction_events = 0;
        self.restart_from_committed("fenced")
    }

    fn serve(&mut self) -> anyhow::Result<()> {
        let mut last_expiry = Instant::now();
        while !self.shutdown.load(Ordering::SeqCst) {
            let polled = match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(message)) => Some((
                    message.topic() == self.topics.clicks,
                    message.partition(),
                    message.offset(),
                    message.timestamp().to_millis(),
                    message.payload().unwrap_or_default().to_vec(),
                    traffsure_kafka::trace::span_from_headers("attribute", message.headers()),
                )),
                Some(Err(KafkaError::MessageConsumptionFatal(code))) => {
                    // A fatal consumer error (e.g. this static member fenced after its
                    // coordinator failed over) leaves the consumer unusable: abort what
                    // it fed the open transaction and start a new one from the committed
                    // positions.
                    self.replace_consumer(KafkaError::MessageConsumptionFatal(code))?;
                    continue;
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "consume failed");
                    None
                }
                None => None,
            };
            if self.take_rebalances() {
                self.rebalanced()?;
            }
            if let Some((is_click, partition, offset, timestamp_ms, payload, span)) = polled {
                // What this message produces carries its trace on (see `send`).
                let _traced = span.enter();
                if self.producer.is_open() && !self.partitions.contains_key(&partition) {
                    // A load can take longer than the transaction timeout: the broker would
                    // abort the open transaction and fence this producer.
                    let recoveries = self.recoveries;
                    self.commit()?;
                    if self.recoveries != recoveries {
                        continue; // the new consumer reads this message again
                    }
                }
                self.ensure_loaded(partition)?;
                self.begin()?;
                if is_click {
                    self.on_click(partition, offset, &payload)?;
                } else {
                    self.on_postback(partition, offset, timestamp_ms, &payload)?;
                }
                self.transaction_events += 1;
            }
            if last_expiry.elapsed() >= Duration::from_millis(250) {
                last_expiry = Instant::now();
                self.expire_held()?;
                self.report();
                traffsure_kafka::metrics::record_producer_queue(
                    self.producer.producer(),
                    "conversion-attribution",
                );
                if !self.producer.is_open() && self.last_trim.elapsed() >= self.trim_interval {
                    self.trim()?; // no transaction open: every state matches its file
                }
            }
            if self
                .producer
                .age()
                .is_some_and(|age| age >= self.commit_interval || self.transaction_events >= 50_000)
            {
                self.commit()?;
            }
        }
        if self.producer.is_open() {
            self.commit()?;
        }
        self.consumer.unsubscribe();
        tracing::info!("attribution stopped");
        Ok(())
    }

    fn begin(&mut self) -> anyhow::Result<()> {
        if self.producer.begin()? {
            self.transaction_events = 0;
            self.producer
                .producer()
                .context()
                .failed
                .store(false, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Notes the rebalances of the last poll; true when there were any. Revoked
    /// partitions stay until the next assignment says which are still ours.
    fn take_rebalances(&mut self) -> bool {
        let mut changed = false;
        // Nothing waits for the events' replies (`RebalanceWait::No`): dropping them is fine.
        while let Ok(event) = self.rebalances.try_recv() {
            changed = true;
            match &event {
                RebalanceEvent::Revoked { partitions, .. } => {
                    tracing::info!(partitions = partitions.len(), "partitions revoked");
                }
                RebalanceEvent::Assigned { partitions, .. } => {
                    tracing::info!(partitions = partitions.len(), "partitions assigned");
                    self.assigned = partitions.iter().map(|(_, p)| *p).collect();
                }
            }
        }
        changed
    }

    /// Answers a rebalance. An open transaction is aborted and every partition's state
    /// dropped (it may hold effects of the aborted work). Otherwise the state matches what
    /// is committed: partitions kept keep it, the others are forgotten. Either way the
    /// consumer resumes from the committed positions, so held postbacks come again.
    fn rebalanced(&mut self) -> anyhow::Result<()> {
        if self.producer.is_open() {
            tracing::info!("aborting the open transaction on a rebalance");
            self.partitions.clear();
            let abort = self.producer.abort()?;
            count_abort(abort);
            return Ok(());
        }
        let assigned = &self.assigned;
        for partition in self.partitions.keys() {
            if !assigned.contains(partition) {
                metrics::forget_partition(*partition);
            }
        }
        self.partitions.retain(|p, _| assigned.contains(p));
        for owned in self.partitions.values_mut() {
            owned.clicks_next = None;
            owned.postbacks_next = None;
            owned.held.clear();
            debug_assert!(owned.uncommitted.is_empty());
        }
        Ok(())
    }

    fn commit(&mut self) -> anyhow::Result<()> {
        let mut offsets = TopicPartitionList::new();
        for (&partition, owned) in &self.partitions {
            if let Some(next) = owned.clicks_next {
                offsets.add_partition_offset(
                    &self.topics.clicks,
                    partition,
                    Offset::Offset(next),
                )?;
            }
            if let Some(next) = owned.postbacks_commit() {
                offsets.add_partition_offset(
                    &self.topics.postbacks,
                    partition,
                    Offset::Offset(next),
                )?;
            }
        }
        let started = Instant::now();
        let group = self.consumer.group_metadata();
        let result = self.producer.commit(&offsets, group);
        tracing::debug!(
            events = self.transaction_events,
            commit_ms = started.elapsed().as_millis() as u64,
            "transaction committed"
        );
        match result {
            Ok(()) => {}
            Err(TransactionError::Failed { error, abort }) => {
                return self.recover(error, abort, "failed_commit")
            }
            Err(error) => return Err(error.into()),
        }
        let context = self.producer.producer().context();
        if context.failed.swap(false, Ordering::SeqCst) {
            anyhow::bail!("an event of a committed transaction was not delivered");
        }
        let ends = std::mem::take(
            &mut *context
                .conversion_ends
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for (partition, owned) in self.partitions.iter_mut() {
            for conversion in std::mem::take(&mut owned.uncommitted) {
                owned.state.record_conversion(&conversion)?;
            }
            if let Some(end) = ends.get(partition) {
                owned.state.record_conversions_checkpoint(*end)?;
            }
            owned.state.flush()?;
        }
        if self.last_trim.elapsed() >= self.trim_interval {
            self.trim()?;
        }
        Ok(())
    }

    fn retention(&self) -> Retention {
        Retention::new(self.registry.clone(), self.settings.window_grace_secs)
    }

    /// Drops what retention no longer keeps and compacts the logs dead records dominate.
    /// Runs right after a commit, when every state matches its file and Kafka.
    fn trim(&mut self) -> anyhow::Result<()> {
        self.last_trim = Instant::now();
        let mut retention = self.retention();
        for (&partition, owned) in self.partitions.iter_mut() {
            debug_assert!(owned.uncommitted.is_empty());
            retention::trim(partition, &mut owned.state, &mut retention)?;
        }
        Ok(())
    }

    /// Sets the state gauges of every owned partition.
    fn report(&self) {
        for (&partition, owned) in &self.partitions {
            let state = &owned.state;
            metrics::report_partition(
                partition,
                [
                    state.clicks.len(),
                    state.visitors.len(),
                    state.conversions.len(),
                    owned.held.len(),
                ],
                state.file_bytes(),
            );
        }
    }

    /// After a failed commit, which the producer aborted (or replaced a producer left
    /// unusable): drop the state and start the consumer over from the committed positions.
    fn recover(&mut self, error: KafkaError, abort: Abort, cause: &str) -> anyhow::Result<()> {
        tracing::warn!(%error, cause, "resuming from the committed positions");
        count_abort(abort);
        self.restart_from_committed(cause)
    }

    /// Drops every partition's state (it may hold effects of work that did not commit)
    /// and starts a new consumer from the committed positions; counts it under `cause`.
    fn restart_from_committed(&mut self, cause: &str) -> anyhow::Result<()> {
        self.partitions.clear();
        (self.consumer, self.rebalances) = group_consumer(&self.settings, &self.topics)?;
        self.assigned.clear();
        self.recoveries += 1;
        metrics::metrics()
            .recoveries
            .with_label_values(&[cause])
            .inc();
        Ok(())
    }

    /// After a fatal consumer error: abort the open transaction (its events came from the
    /// dead consumer), then the same as after a failed commit.
    fn replace_consumer(&mut self, error: KafkaError) -> anyhow::Result<()> {
        tracing::warn!(%error, "consumer failed fatally, replacing it");
        let abort = self.producer.abort()?;
        self.transaction_events = 0;
        self.recover(error, abort, "consumer_fatal")
    }

    /// Loads a newly owned partition's state (see `restore`) and moves the group consumer
    /// past what the state already holds.
    fn ensure_loaded(&mut self, partition: i32) -> anyhow::Result<()> {
        if self.partitions.contains_key(&partition) {
            return Ok(());
        }
        let mut retention = self.retention();
        let state = restore::restore(
            &self.settings,
            &self.topics,
            &self.state_dir,
            partition,
            &mut retention,
        )?;
        // The group consumer may start far behind the file; skip what is already in.
        let skipped = self
            .consumer
            .seek(
                &self.topics.clicks,
                partition,
                Offset::Offset(state.clicks_next),
                Duration::from_secs(1),
            )
            .is_ok();
        self.partitions.insert(
            partition,
            Owned {
                clicks_next: skipped.then_some(state.clicks_next),
                state,
                postbacks_next: None,
                held: Vec::new(),
                uncommitted: Vec::new(),
            },
        );
        Ok(())
    }

    /// Takes every click of a record: one, or a batch's in order.
    fn on_click(&mut self, partition: i32, offset: i64, payload: &[u8]) -> anyhow::Result<()> {
        let mut retention = self.retention();
        let Some(owned) = self.partitions.get_mut(&partition) else {
            return Ok(());
        };
        owned.clicks_next = Some(owned.clicks_next.unwrap_or(0).max(offset + 1));
        let clicks = match traffsure_events::clicks_of(payload) {
            Ok(clicks) => clicks,
            Err(error) => {
                tracing::warn!(partition, offset, %error, "skipping undecodable clicks");
                return Ok(());
            }
        };
        owned.state.add_clicks(offset, &clicks, |state, click| {
            let keep = retention.keeps(click.ts_ms, click.flow_id);
            (state.click_of(click), keep)
        })?;
        if owned.held.is_empty() {
            return Ok(());
        }
        let (ready, waiting) = released(std::mem::take(&mut owned.held), &clicks);
        owned.held = waiting;
        for held in ready {
            self.attribute(partition, held)?;
        }
        Ok(())
    }

    /// `timestamp_ms` is when the postback was written to Kafka: a postback read again after
    /// a crash or rebalance waits for its click only what is left of its hold timeout.
    fn on_postback(
        &mut self,
        partition: i32,
        offset: i64,
        timestamp_ms: Option<i64>,
        payload: &[u8],
    ) -> anyhow::Result<()> {
        let Some(owned) = self.partitions.get_mut(&partition) else {
            return Ok(());
        };
        owned.postbacks_next = Some(offset + 1);
        let waited = timestamp_ms
            .map(|ts| Duration::from_millis((now_ms() - ts).max(0) as u64))
            .unwrap_or_default();
        match Postback::decode(payload) {
            Ok(postback) => {
                let held = Held {
                    postback,
                    offset,
                    deadline: Instant::now() + self.hold_timeout.saturating_sub(waited),
                };
                self.attribute(partition, held)
            }
            Err(error) => {
                tracing::warn!(partition, offset, %error, "skipping undecodable postback");
                Ok(())
            }
        }
    }

    /// Decides the held postbacks whose click did not come in time: one with a click hash
    /// converts from what the hash carries (`click_missing`), in the open transaction like
    /// any conversion; one without (a visitor-based postback) is reported as not found.
    fn expire_held(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let mut expired = Vec::new();
        for (&partition, owned) in self.partitions.iter_mut() {
            if owned.held.iter().any(|h| h.deadline <= now) {
                let (gone, waiting): (Vec<Held>, Vec<Held>) = std::mem::take(&mut owned.held)
                    .into_iter()
                    .partition(|h| h.deadline <= now);
                owned.held = waiting;
                expired.extend(gone.into_iter().map(|h| (partition, h)));
            }
        }
        if expired.is_empty() {
            return Ok(());
        }
        self.begin()?;
        for (partition, held) in expired {
            match attribute::click_from_hash(&held.postback) {
                Some(click) => self.decide(partition, click, &held.postback, true)?,
                None => self.publish_result(
                    &held.postback,
                    PostbackOutcome::ClickNotFound,
                    "",
                    "click not found before the hold timeout",
                )?,
            }
        }
        Ok(())
    }

    /// Attributes a postback, or holds it while its click is not here yet.
    fn attribute(&mut self, partition: i32, held: Held) -> anyhow::Result<()> {
        let Some(owned) = self.partitions.get_mut(&partition) else {
            return Ok(());
        };
        let postback = &held.postback;
        if let Some(click) = owned
            .state
            .find_click(postback)
            .map(|c| owned.state.click_info(c))
        {
            return self.decide(partition, click, postback, false);
        }
        if let Some(click) = attribute::click_from_hash(postback) {
            // The click hash says when its click was: past the window the click is gone
            // from the state (or never kept) and the answer is known without waiting.
            let flow = self.registry.get(click.flow_id);
            if postback.received_at_ms - click.ts_ms > attribute::window_ms(flow.as_deref()) {
                return self.publish_result(
                    postback,
                    PostbackOutcome::Expired,
                    "",
                    EXPIRED_MESSAGE,
                );
            }
            // Its conversion was already made from the hash: the click is missing for good
            // and this postback is decided against that conversion without waiting.
            let id = attribute::conversion_id_for(&click, flow.as_deref(), postback);
            if owned.state.conversions.contains_key(&id) {
                return self.decide(partition, click, postback, true);
            }
        }
        tracing::debug!(postback_id = %postback.postback_id, "postback held for its click");
        owned.held.push(held);
        Ok(())
    }

    /// Decides a postback against its click (`missing`: the one its click hash describes)
    /// and publishes the conversion version and the result in the open transaction.
    fn decide(
        &mut self,
        partition: i32,
        click: ClickInfo,
        postback: &Postback,
        missing: bool,
    ) -> anyhow::Result<()> {
        let Some(owned) = self.partitions.get_mut(&partition) else {
            return Ok(());
        };
        let flow = self.registry.get(click.flow_id);
        let conversion_id = attribute::conversion_id_for(&click, flow.as_deref(), postback);
        let current = owned.state.conversions.get(&conversion_id);
        if current.is_some_and(|c| c.postback_ids.contains(&postback.postback_id)) {
            // Read again after a restart or rebalance: its version is already out.
            return Ok(());
        }
        let decision = attribute::attribute(
            &click,
            flow.as_deref(),
            postback,
            current.map(|c| &c.current),
            now_ms(),
        );
        let decision = if missing {
            attribute::mark_missing(decision)
        } else {
            decision
        };
        match decision {
            Decision::Emit(mut conversion, outcome) => {
                if conversion.version == 1 {
                    // Later versions keep what their first said.
                    conversion.follow_up = owned.state.click_converted(&conversion.click_hash);
                }
                if let Some(flow) = flow.as_deref() {
                    crate::caps::mark_and_count(&self.caps, flow, &mut conversion);
                }
                owned.state.insert_conversion((*conversion).clone());
                owned.uncommitted.push((*conversion).clone());
                let key = traffsure_kafka::routing_key_bytes(conversion.routing_key as u16);
                self.send(
                    &self.topics.conversions.clone(),
                    &key,
                    &conversion.encode_to_vec(),
                )?;
                let message = if outcome == PostbackOutcome::ClickMissing {
                    "click not seen within the hold timeout: converted from its click hash"
                } else {
                    ""
                };
                self.publish_result(postback, outcome, &conversion.conversion_id, message)?;
            }
            Decision::Duplicate { conversion_id } => self.publish_result(
                postback,
                PostbackOutcome::Duplicate,
                &conversion_id,
                "same status and revenue as before",
            )?,
            Decision::Expired => {
                self.publish_result(postback, PostbackOutcome::Expired, "", EXPIRED_MESSAGE)?
            }
        }
        Ok(())
    }

    fn publish_result(
        &self,
        postback: &Postback,
        outcome: PostbackOutcome,
        conversion_id: &str,
        message: &str,
    ) -> anyhow::Result<()> {
        let mut result = PostbackResult {
            postback_id: postback.postback_id.clone(),
            click_hash: postback.click_hash.clone(),
            flow_id: postback.flow_id,
            conversion_id: conversion_id.to_string(),
            message: message.to_string(),
            decided_at_ms: now_ms(),
            ..PostbackResult::default()
        };
        result.set_outcome(outcome);
        let key = traffsure_kafka::routing_key_bytes(postback.routing_key as u16);
        self.send(&self.topics.postback_results, &key, &result.encode_to_vec())
    }

    /// Queues one event in the open transaction, waiting while the local queue is full.
    fn send(&self, topic: &str, key: &[u8], payload: &[u8]) -> anyhow::Result<()> {
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
        if let Some(headers) = traffsure_kafka::trace::headers_if_traced() {
            record = record.headers(headers);
        }
        let producer = self.producer.producer();
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(20));
                }
                Err((error, _)) => return Err(error).context("queue event"),
            }
        }
    }
}

/// Counts a producer replaced because its transaction could not be aborted.
fn count_abort(abort: Abort) {
    if abort == Abort::ProducerReplaced {
        metrics::metrics()
            .recoveries
            .with_label_values(&["failed_abort"])
            .inc();
    }
}

/// The held postbacks that waited for one of `clicks` (ready to attribute), and the others.
fn released(held: Vec<Held>, clicks: &[Click]) -> (Vec<Held>, Vec<Held>) {
    held.into_iter().partition(|h| {
        clicks.iter().any(|c| {
            waits_for(
                &h.postback,
                &c.click_hash,
                &c.visitor_id,
                c.flow_id,
                c.offer_id,
            )
        })
    })
}

/// Whether a held postback waits for this click: its click hash, or (a visitor-based one)
/// a click of its visitor in its flow, of its offer when it names one (`p`).
fn waits_for(postback: &Postback, hash: &str, visitor: &str, flow: u32, offer: u32) -> bool {
    postback.click_hash == hash
        || (postback.click_hash.is_empty()
            && !visitor.is_empty()
            && postback.visitor_id == visitor
            && postback.flow_id == flow
            && (postback.offer_id == 0 || postback.offer_id == offer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_visitor_postback_waits_for_a_visit_of_its_offer() {
        let by_visitor = |offer_id| Postback {
            visitor_id: "v".into(),
            flow_id: 7,
            offer_id,
            ..Postback::default()
        };
        assert!(waits_for(&by_visitor(0), "h", "v", 7, 3));
        assert!(waits_for(&by_visitor(3), "h", "v", 7, 3));
        assert!(!waits_for(&by_visitor(4), "h", "v", 7, 3), "another offer");
        assert!(!waits_for(&by_visitor(0), "h", "v", 8, 3), "another flow");
        assert!(
            !waits_for(&by_visitor(0), "h", "", 7, 3),
            "a click without a visitor"
        );
        let by_hash = Postback {
            click_hash: "h".into(),
            ..Postback::default()
        };
        assert!(waits_for(&by_hash, "h", "", 7, 0));
        assert!(!waits_for(&by_hash, "g", "", 7, 0));
    }

    #[test]
    fn a_batch_releases_the_postbacks_held_for_any_of_its_clicks() {
        let held = |click_hash: &str, visitor_id: &str| Held {
            postback: Postback {
                click_hash: click_hash.into(),
                visitor_id: visitor_id.into(),
                flow_id: 7,
                ..Postback::default()
            },
            offset: 0,
            deadline: Instant::now(),
        };
        let click = |click_hash: &str, visitor_id: &str| Click {
            click_hash: click_hash.into(),
            visitor_id: visitor_id.into(),
            flow_id: 7,
            ..Click::default()
        };
        let batch = [click("a", ""), click("b", "v"), click("c", "")];
        let (ready, waiting) = released(
            vec![held("c", ""), held("", "v"), held("x", ""), held("", "w")],
            &batch,
        );
        let who = |held: &[Held]| -> Vec<(String, String)> {
            held.iter()
                .map(|h| (h.postback.click_hash.clone(), h.postback.visitor_id.clone()))
                .collect()
        };
        assert_eq!(
            who(&ready),
            [("c".into(), "".into()), ("".into(), "v".into())],
            "the last click's and the second's visitor's"
        );
        assert_eq!(
            who(&waiting),
            [("x".into(), "".into()), ("".into(), "w".into())]
        );
    }
}

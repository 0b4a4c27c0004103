//! Conversions in: the group consumer of `conversions` (and of `clicks` and
//! `impressions`, for click and impression postbacks: `clicks`), the deliveries each
//! event owes, and the partitions that move between instances.
//!
//! A conversion's deliveries are recorded before its offset is stored. A partition that
//! leaves this instance is released only once its attempts and recordings are written;
//! one that arrives is taken over (its records read back) before any of its conversions
//! is read, so a moved partition neither loses a delivery nor schedules one twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::Either;
use futures::stream::{FuturesOrdered, StreamExt};
use prost::Message as _;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::Instrument as _;
use traffsure_core::now_ms;
use traffsure_events::{Conversion, OutboundDelivery};
use traffsure_kafka::rebalance::{self, RebalanceContext, RebalanceEvent, RebalanceWait};

use crate::clicks::{self, Kind};
use crate::deliveries::delivery_key;
use crate::dispatcher::Dispatcher;
use crate::render::firing;
use traffsure_core::flow::postback_type_word;

/// Conversions read but whose delivery records are not acknowledged yet, at most.
const MAX_PENDING_CONVERSIONS: usize = 20_000;

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
                // "event" is kept on the record; a conversion postback's stays empty.
                postback_type: if postback_type_word(&outbound.r#type) == "event" {
                    "event".into()
                } else {
                    String::new()
                },
                ..OutboundDelivery::default()
            })
            .collect()
    }

    /// Consumes conversions, records the deliveries they owe, and stores each offset only
    /// once everything before it is recorded.
    pub async fn consume(self: Arc<Self>) -> anyhow::Result<()> {
        // The consumer's poll waits while a revoked partition's work is written and an
        // assigned partition's records are read back; a task of its own does both.
        // The callback waits for the reply: `release` gives up after its own bound;
        // `take_over` retries until the partitions' records are read, because a
        // conversion read before them would be delivered again.
        let (context, events) = rebalance::channel(RebalanceWait::UntilReply);
        tokio::spawn(self.clone().follow_rebalances(events));
        // The range assignor gives partition p of every topic to one member (the three
        // topics have the same partition count): a click's, an impression's and a
        // conversion's deliveries are recorded on, and sent from, the instance owning p.
        let consumer: StreamConsumer<RebalanceContext> =
            traffsure_kafka::group_consumer_config(&self.kafka, &self.group_id)
                .set("partition.assignment.strategy", "range")
                .create_with_context(context)?;
        consumer.subscribe(&[
            &self.topics.conversions,
            &self.topics.clicks,
            &self.topics.impressions,
        ])?;
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
                    let topic: Arc<str> = Arc::from(message.topic());
                    let kind = if message.topic() == self.topics.clicks {
                        Some(Kind::Click)
                    } else if message.topic() == self.topics.impressions {
                        Some(Kind::Impression)
                    } else {
                        None
                    };
                    if let Some(kind) = kind {
                        // Most events fire nothing: decided here, without a task.
                        let payload = message.payload().unwrap_or_default();
                        let mut records =
                            clicks::record_deliveries(kind, payload, |id| self.registry.get(id));
                        if !records.is_empty() {
                            // Read again after a restart: what is recorded stays as it is.
                            let known = self.lock();
                            records.retain(|r| !known.by_key.contains_key(&r.key));
                        }
                        if records.is_empty() {
                            pending.push_back(Either::Right(futures::future::ready(Ok((topic, partition, offset, records)))));
                            continue;
                        }
                        *self.lock().recording.entry(partition).or_default() += 1;
                        let recording = Recording { dispatcher: self.clone(), partition };
                        let this = self.clone();
                        pending.push_back(Either::Left(tokio::spawn(async move {
                            futures::future::join_all(records.iter().map(|r| this.persist(r, partition))).await;
                            drop(recording);
                            (topic, partition, offset, records)
                        })));
                        continue;
                    }
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
                    pending.push_back(Either::Left(tokio::spawn(async move {
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
                        (topic, partition, offset, records)
                    }.instrument(span))));
                }
                Some(done) = pending.next(), if !pending.is_empty() => {
                    let (topic, partition, offset, records) = done.context("recording deliveries panicked")?;
                    self.recorded(&*consumer, &topic, partition, offset, records);
                }
                _ = &mut shutdown => {
                    while let Some(done) = pending.next().await {
                        let (topic, partition, offset, records) = done.context("recording deliveries panicked")?;
                        self.recorded(&*consumer, &topic, partition, offset, records);
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

    /// Takes an event's recorded deliveries into the schedule and stores its offset.
    fn recorded<C: Consumer<X>, X: ConsumerContext>(
        &self,
        consumer: &C,
        topic: &str,
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
            .add_partition_offset(topic, partition, Offset::Offset(offset + 1))
            .and_then(|()| consumer.store_offsets(&list));
        if let Err(error) = stored {
            // Revoked this very moment: the new owner reads the conversion again and
            // finds its deliveries recorded.
            tracing::debug!(partition, offset, %error, "conversion offset not stored");
        }
    }

    /// Hands each partition move to `release` or `take_over`, which may block, and lets
    /// the rebalance go on once it is done.
    async fn follow_rebalances(self: Arc<Self>, mut events: UnboundedReceiver<RebalanceEvent>) {
        while let Some(event) = events.recv().await {
            let this = self.clone();
            let handled = tokio::task::spawn_blocking(move || {
                let partitions = event.partitions_of(&this.topics.conversions);
                match &event {
                    RebalanceEvent::Revoked { .. } => this.release(&partitions),
                    RebalanceEvent::Assigned { .. } => this.take_over(&partitions),
                }
                event.done();
            })
            .await;
            if let Err(error) = handled {
                tracing::error!(%error, "rebalance handling panicked");
            }
        }
    }

    /// How long a release waits for the work in flight on its partitions.
    fn release_bound(&self) -> Duration {
        Duration::from_millis(
            self.settings.request_timeout_ms + self.settings.flow_wait_ms + 10_000,
        )
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
        let deadline = Instant::now() + self.release_bound();
        loop {
            let busy = self.lock().busy(partitions);
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
        let loaded = self.read_partitions(partitions);
        let count = loaded.len();
        self.lock().take_over(partitions, loaded.into_values());
        self.wake.notify_one();
        tracing::info!(
            ?partitions,
            records = count,
            ms = started.elapsed().as_millis() as u64,
            "conversions partitions taken over"
        );
    }
}

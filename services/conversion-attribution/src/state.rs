//! Attribution state in memory and the postback processing loop around it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, TopicPartitionList};
use tokio::sync::{oneshot, Notify};
use traffsure_config::KafkaSettings;
use traffsure_core::now_ms;
use traffsure_events::{Click, Conversion, Postback, PostbackOutcome, PostbackResult};
use traffsure_kafka::{FlowRegistry, Topics};

use crate::attribute::{self, ClickInfo, Decision};
use crate::Settings;

#[derive(Default)]
struct Inner {
    clicks: HashMap<String, ClickInfo>,
    /// (visitor id, flow id) → the visitor's latest click in that flow.
    visitors: HashMap<(String, u32), (i64, String)>,
    conversions: HashMap<String, Conversion>,
}

#[derive(Default)]
pub struct State {
    inner: Mutex<Inner>,
    /// Woken on every new click, so held postbacks are retried at once.
    click_arrived: Notify,
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn click_count(&self) -> usize {
        self.lock().clicks.len()
    }

    fn add_click(&self, click: &Click) {
        let mut inner = self.lock();
        let info = ClickInfo::from(click);
        if !info.visitor_id.is_empty() {
            let key = (info.visitor_id.clone(), info.flow_id);
            let newer = inner
                .visitors
                .get(&key)
                .is_none_or(|(ts, _)| *ts <= info.ts_ms);
            if newer {
                inner
                    .visitors
                    .insert(key, (info.ts_ms, info.click_hash.clone()));
            }
        }
        inner.clicks.insert(info.click_hash.clone(), info);
    }

    fn find_click(&self, postback: &Postback) -> Option<ClickInfo> {
        let inner = self.lock();
        if !postback.click_hash.is_empty() {
            return inner.clicks.get(&postback.click_hash).cloned();
        }
        let (_, hash) = inner
            .visitors
            .get(&(postback.visitor_id.clone(), postback.flow_id))?;
        inner.clicks.get(hash).cloned()
    }
}

/// Follows the `clicks` topic into the state; the receiver fires when the clicks that
/// existed at start are all in.
pub async fn spawn_click_follower(
    settings: &KafkaSettings,
    topic: &str,
    state: Arc<State>,
) -> anyhow::Result<oneshot::Receiver<()>> {
    let (consumer, mut catch_up) = traffsure_kafka::read_from_beginning(settings, topic)
        .await
        .context("read clicks topic")?;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        loop {
            if catch_up.is_done() {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            }
            let message = match consumer.recv().await {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "clicks topic read failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            match message.payload().map(Click::decode) {
                Some(Ok(click)) => {
                    state.add_click(&click);
                    state.click_arrived.notify_waiters();
                }
                Some(Err(error)) => {
                    tracing::warn!(offset = message.offset(), %error, "skipping undecodable click")
                }
                None => {}
            }
            catch_up.observe(message.partition(), message.offset());
        }
    });
    Ok(rx)
}

/// Reads every conversion published so far, keeping the latest version of each.
pub async fn restore_conversions(
    settings: &KafkaSettings,
    topic: &str,
    state: &State,
) -> anyhow::Result<()> {
    let (consumer, mut catch_up) = traffsure_kafka::read_from_beginning(settings, topic)
        .await
        .context("read conversions topic")?;
    while !catch_up.is_done() {
        let message = consumer.recv().await.context("read conversions topic")?;
        if let Some(Ok(conversion)) = message.payload().map(Conversion::decode) {
            let mut inner = state.lock();
            let newer = inner
                .conversions
                .get(&conversion.conversion_id)
                .is_none_or(|c| c.version < conversion.version);
            if newer {
                inner
                    .conversions
                    .insert(conversion.conversion_id.clone(), conversion);
            }
        }
        catch_up.observe(message.partition(), message.offset());
    }
    Ok(())
}

struct Held {
    postback: Postback,
    partition: i32,
    offset: i64,
    deadline: Instant,
}

pub struct Processor {
    consumer: StreamConsumer,
    producer: FutureProducer,
    topics: Topics,
    registry: Arc<FlowRegistry>,
    state: Arc<State>,
    hold_timeout: Duration,
    held: VecDeque<Held>,
}

impl Processor {
    pub fn new(
        settings: &Settings,
        topics: Topics,
        registry: Arc<FlowRegistry>,
        state: Arc<State>,
    ) -> anyhow::Result<Self> {
        let consumer = traffsure_kafka::group_consumer(&settings.kafka, &settings.group_id)?;
        consumer.subscribe(&[&topics.postbacks])?;
        Ok(Self {
            consumer,
            producer: traffsure_kafka::producer(&settings.kafka)?,
            topics,
            registry,
            state,
            hold_timeout: Duration::from_secs(settings.hold_timeout_secs),
            held: VecDeque::new(),
        })
    }

    pub async fn run(mut self) -> anyhow::Result<()> {
        let mut retry = tokio::time::interval(Duration::from_millis(250));
        loop {
            let state = self.state.clone();
            tokio::select! {
                message = self.consumer.recv() => {
                    let message = match message {
                        Ok(m) => m,
                        Err(error) => {
                            tracing::warn!(%error, "postbacks topic read failed");
                            continue;
                        }
                    };
                    let (partition, offset) = (message.partition(), message.offset());
                    match message.payload().map(Postback::decode) {
                        Some(Ok(postback)) => {
                            let held = Held { postback, partition, offset, deadline: Instant::now() + self.hold_timeout };
                            if let Some(held) = self.try_attribute(held).await? {
                                tracing::debug!(postback_id = %held.postback.postback_id, "postback held for its click");
                                self.held.push_back(held);
                            }
                        }
                        _ => tracing::warn!(partition, offset, "skipping undecodable postback"),
                    }
                    self.store_offsets(partition, offset)?;
                }
                _ = state.click_arrived.notified() => self.retry_held().await?,
                _ = retry.tick() => self.retry_held().await?,
            }
        }
    }

    /// Stores the consumed position of `partition`, but never past a held postback.
    fn store_offsets(&self, partition: i32, offset: i64) -> anyhow::Result<()> {
        let next = self
            .held
            .iter()
            .filter(|h| h.partition == partition)
            .map(|h| h.offset)
            .min()
            .unwrap_or(offset + 1);
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(
            &self.topics.postbacks,
            partition,
            rdkafka::Offset::Offset(next),
        )?;
        self.consumer.store_offsets(&list)?;
        Ok(())
    }

    async fn retry_held(&mut self) -> anyhow::Result<()> {
        let mut still_held = VecDeque::new();
        let mut touched = Vec::new();
        while let Some(held) = self.held.pop_front() {
            let (partition, offset) = (held.partition, held.offset);
            match self.try_attribute(held).await? {
                Some(held) => still_held.push_back(held),
                None => touched.push((partition, offset)),
            }
        }
        self.held = still_held;
        for (partition, offset) in touched {
            self.store_offsets(partition, offset)?;
        }
        Ok(())
    }

    /// Attributes a postback; gives it back when its click is not here yet.
    async fn try_attribute(&mut self, held: Held) -> anyhow::Result<Option<Held>> {
        let postback = &held.postback;
        let Some(click) = self.state.find_click(postback) else {
            if Instant::now() < held.deadline {
                return Ok(Some(held));
            }
            self.publish_result(
                postback,
                PostbackOutcome::ClickNotFound,
                "",
                "click not found before the hold timeout",
            )
            .await?;
            return Ok(None);
        };
        let flow = self.registry.get(click.flow_id);
        let goal_id = attribute::conversion_id_for(&click, flow.as_deref(), postback);
        let current = self.state.lock().conversions.get(&goal_id).cloned();
        match attribute::attribute(
            &click,
            flow.as_deref(),
            postback,
            current.as_ref(),
            now_ms(),
        ) {
            Decision::Emit(conversion, outcome) => {
                let key = traffsure_kafka::routing_key_bytes(conversion.routing_key as u16);
                traffsure_kafka::send_event(
                    &self.producer,
                    &self.topics.conversions,
                    &key,
                    conversion.as_ref(),
                )
                .await
                .context("publish conversion")?;
                self.publish_result(postback, outcome, &conversion.conversion_id, "")
                    .await?;
                self.state
                    .lock()
                    .conversions
                    .insert(conversion.conversion_id.clone(), *conversion);
            }
            Decision::Duplicate { conversion_id } => {
                self.publish_result(
                    postback,
                    PostbackOutcome::Duplicate,
                    &conversion_id,
                    "same status and revenue as before",
                )
                .await?;
            }
            Decision::Expired => {
                self.publish_result(
                    postback,
                    PostbackOutcome::Expired,
                    "",
                    "click is older than the flow's attribution window",
                )
                .await?;
            }
        }
        Ok(None)
    }

    async fn publish_result(
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
        traffsure_kafka::send_event(&self.producer, &self.topics.postback_results, &key, &result)
            .await
            .context("publish postback result")?;
        Ok(())
    }
}

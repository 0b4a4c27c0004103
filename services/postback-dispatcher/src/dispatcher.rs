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
//! This module holds the dispatcher and its schedule loop, which starts each delivery when
//! it is due. What is left to others: the bookkeeping of deliveries and replay selection
//! (`deliveries`), delivery records (`records`), consuming conversions and partition moves
//! (`consume`), one HTTP attempt and its outcome (`attempt`), firing conditions and
//! templates (`render`), the reporting-currency amount (`converted`), the SSRF guard (`guard`), circuit breakers, host limits and the
//! retry schedule (`breaker`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::producer::FutureProducer;
use tokio::sync::{Notify, Semaphore};
use tracing::Instrument as _;
use traffsure_core::now_ms;
use traffsure_core::vocab::Vocabulary as _;
use traffsure_events::{OutboundDelivery, OutboundState};
use traffsure_kafka::{FlowRegistry, Topics};

use crate::breaker::{Backoff, Hosts};
use crate::converted::Converter;
use crate::deliveries::{replayed, Deliveries, ReplaySelection};
use crate::guard::GuardedResolver;
use crate::{OutboundSettings, Settings};

pub struct Dispatcher {
    pub(crate) settings: OutboundSettings,
    pub(crate) kafka: traffsure_config::KafkaSettings,
    pub(crate) group_id: String,
    pub(crate) producer: FutureProducer,
    pub(crate) topics: Topics,
    pub(crate) registry: Arc<FlowRegistry>,
    pub(crate) deliveries: Mutex<Deliveries>,
    pub(crate) wake: Notify,
    pub(crate) hosts: Hosts,
    pub(crate) client: reqwest::Client,
    pub(crate) global: Arc<Semaphore>,
    pub(crate) backoff: Backoff,
    pub(crate) attempts: prometheus::IntCounterVec,
    pub(crate) circuits: prometheus::IntCounterVec,
    pub(crate) retries: prometheus::IntCounterVec,
    pub(crate) circuit_state: prometheus::IntGaugeVec,
    pub(crate) by_state: prometheus::IntGaugeVec,
    pub(crate) converter: Converter,
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
            converter: Converter::new(
                traffsure_clickhouse::client(&settings.clickhouse),
                settings.currency.reporting_currency()?,
            ),
            kafka: settings.kafka.clone(),
            group_id: settings.group_id.clone(),
            producer: traffsure_kafka::producer(&settings.kafka)?,
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

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Deliveries> {
        self.deliveries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts every delivery that is due, and sleeps until the next one.
    pub async fn schedule(self: Arc<Self>) {
        let mut last_gauges = Instant::now();
        loop {
            let now = now_ms();
            let (ready, next) = self.lock().take_due(now);
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
        let mut counts: HashMap<&'static str, i64> = OutboundState::words()
            .into_iter()
            .map(|word| (word, 0))
            .collect();
        for entry in self.lock().by_key.values() {
            *counts
                .entry(OutboundState::word(entry.record.state()))
                .or_default() += 1;
        }
        for (state, count) in counts {
            self.by_state.with_label_values(&[state]).set(count);
        }
    }

    /// Schedules the selected deliveries again at once; returns how many.
    pub async fn replay(&self, selection: &ReplaySelection) -> usize {
        let now = now_ms();
        let chosen: Vec<(OutboundDelivery, i32)> = self
            .lock()
            .select(selection)
            .into_iter()
            .map(|e| (replayed(e.record.clone(), now), e.partition))
            .collect();
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
        self.lock().knows(selection)
    }

    /// Counts of deliveries by state, and hosts with an open circuit.
    pub fn summary(&self) -> serde_json::Value {
        let deliveries = self.lock();
        let mut by_state: HashMap<&'static str, usize> = HashMap::new();
        for entry in deliveries.by_key.values() {
            *by_state
                .entry(OutboundState::word(entry.record.state()))
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

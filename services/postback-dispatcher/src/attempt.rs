//! One attempt at one delivery: the HTTP request, the host's breaker and slots, and the
//! outcome recorded on `outbound-deliveries` and `outbound-log`.

use std::sync::Arc;
use std::time::Instant;

use traffsure_core::caps::over_cap_action;
use traffsure_core::flow::outbound_postbacks;
use traffsure_core::flow::postback_type_word;
use traffsure_core::now_ms;
use traffsure_core::objects::Scope;
use traffsure_core::vocab::{self, Vocabulary as _};
use traffsure_events::{
    Click, Conversion, ConversionStatus, Impression, OutboundAttempt, OutboundDelivery,
    OutboundPostback, OutboundState,
};
use traffsure_kafka::retry;

use crate::breaker::{Admission, Transition};
use crate::deliveries::schedulable;
use crate::dispatcher::Dispatcher;
use crate::guard::check_url;
use crate::records;
use crate::render::{
    build_request, build_request_with, click_macro_value, impression_macro_value, OutboundRequest,
};

impl Dispatcher {
    /// Writes one attempt to `outbound-log`, retrying until the broker acknowledges it.
    async fn log_attempt(&self, attempt: &OutboundAttempt) {
        retry::forever(
            "log outbound attempt",
            &records::write_backoff(),
            || async {
                traffsure_kafka::send_event(
                    &self.producer,
                    &self.topics.outbound_log,
                    log_key(attempt),
                    attempt,
                )
                .await
                .inspect_err(|error| {
                    traffsure_kafka::metrics::count_delivery_error("postback-dispatcher", error)
                })
            },
        )
        .await;
    }

    /// Puts a delivery back in the queue without an attempt (its circuit is open).
    fn postpone(&self, key: &str, until_ms: i64) {
        // Spread the waiting deliveries over a moment, so a closing circuit is not hit
        // by all of them at once.
        let due = until_ms + rand::random_range(0..250);
        self.lock().postpone(key, due);
    }

    /// One attempt at one delivery; records the outcome and schedules what follows.
    pub(crate) async fn attempt(self: Arc<Self>, key: String) {
        let Some((record, partition)) = self
            .lock()
            .by_key
            .get(&key)
            .map(|e| (e.record.clone(), e.partition))
        else {
            return;
        };
        let conversion = record.conversion.clone().unwrap_or_default();
        let (outbound, scope) = self
            .registry
            .get(conversion.flow_id)
            .and_then(|flow| {
                let outbound = outbound_postbacks(&flow)
                    .find(|o| o.id == record.outbound_id)?
                    .clone();
                let scope = Scope::of(&outbound, flow.traffic_source_id).label();
                Some((outbound, scope))
            })
            .unzip();
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
            traffic_source_id: conversion.traffic_source_id,
            offer_id: conversion.offer_id,
            reason: conversion.reason.clone(),
            integration: vocab::OUTBOUND_INTEGRATIONS[0].into(),
            postback_type: if record.postback_type.is_empty() {
                vocab::OUTBOUND_POSTBACK_TYPES[0].into()
            } else {
                record.postback_type.clone()
            },
            impression_id: record
                .impression
                .as_ref()
                .map(|i| i.impression_id.clone())
                .unwrap_or_default(),
            scope: scope.unwrap_or_default(),
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
        // An over-cap conversion's postbacks wait (hold) or are dropped (suppress) unless
        // a replay sends them (docs/caps.md).
        let over_cap = conversion.over_cap && !record.manual;
        let action = self
            .registry
            .get(conversion.flow_id)
            .filter(|_| over_cap)
            .and_then(|flow| over_cap_action(&flow, conversion.offer_id).logged());
        if let Some(action) = action {
            attempt.cap_action = action.into();
            let mut record = record;
            record.cap_action = action.into();
            let error = format!("conversion over cap: postback {action}");
            return self.finish(record, partition, attempt, None, error).await;
        }
        let request = if let Some(click) = &record.click {
            build_request_with(&outbound, &|name| click_macro_value(click, name))
        } else if let Some(impression) = &record.impression {
            build_request_with(&outbound, &|name| impression_macro_value(impression, name))
        } else {
            let converted = self.converter.convert(&conversion).await;
            build_request(&outbound, &conversion, &converted)
        };
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
        let builder = http_request(&self.client, url, &record.key, request, &outbound);
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
        self.attempts.with_label_values(&[state.word()]).inc();
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
}

/// The outbound log's key of an attempt: its conversion, else its click or impression.
fn log_key(attempt: &OutboundAttempt) -> &[u8] {
    [
        &attempt.conversion_id,
        &attempt.click_hash,
        &attempt.impression_id,
    ]
    .into_iter()
    .find(|id| !id.is_empty())
    .map_or(&[][..], |id| id.as_bytes())
}

/// The first bytes of an answer, as text.
/// The HTTP request for a filled-in outbound postback: its method, the delivery header,
/// its body (POST) and the outbound postback's own headers; a secret header's value is
/// marked sensitive, so no debug output of the request shows it.
fn http_request(
    client: &reqwest::Client,
    url: reqwest::Url,
    delivery: &str,
    request: OutboundRequest,
    outbound: &OutboundPostback,
) -> reqwest::RequestBuilder {
    let method = if request.method == "POST" {
        reqwest::Method::POST
    } else {
        reqwest::Method::GET
    };
    let mut builder = client
        .request(method, url)
        .header("x-traffsure-delivery", delivery);
    if let Some(content_type) = request.content_type {
        builder = builder
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(request.body);
    }
    for header in &outbound.headers {
        if let Ok(mut value) = reqwest::header::HeaderValue::from_str(&header.value) {
            value.set_sensitive(header.secret);
            builder = builder.header(header.name.as_str(), value);
        }
    }
    builder
}

impl Dispatcher {
    /// Sends one outbound postback of a flow once, for a made-up approved conversion of
    /// its default goal (1.00 USD), through the SSRF guard, outside the delivery queue and
    /// the outbound log; answers what the receiver said.
    pub(crate) async fn send_test(
        &self,
        flow_id: u32,
        outbound_id: &str,
    ) -> Result<serde_json::Value, String> {
        let flow = self
            .registry
            .get(flow_id)
            .ok_or_else(|| format!("flow {flow_id} not found"))?;
        let outbound = flow
            .outbound_postbacks
            .iter()
            .find(|o| o.id == outbound_id)
            .ok_or_else(|| format!("flow {flow_id} has no outbound postback {outbound_id}"))?;
        let now = now_ms();
        let mut conversion = Conversion {
            conversion_id: format!("test-{}", uuid::Uuid::now_v7()),
            version: 1,
            click_hash: "test".into(),
            flow_id,
            goal: flow.default_goal.clone(),
            revenue_micros: 1_000_000,
            currency: "USD".into(),
            uid: "test".into(),
            created_at_ms: now,
            updated_at_ms: now,
            ..Conversion::default()
        };
        conversion.set_status(ConversionStatus::Approved);
        // A click or impression postback is tried with a made-up click or impression.
        let request = match postback_type_word(&outbound.r#type) {
            "click" => {
                let click = Click {
                    click_hash: "test".into(),
                    flow_id,
                    ts_ms: now,
                    visitor_id: "test".into(),
                    ..Click::default()
                };
                build_request_with(outbound, &|name| click_macro_value(&click, name))
            }
            "impression" => {
                let impression = Impression {
                    impression_id: "test".into(),
                    flow_id,
                    ts_ms: now,
                    visitor_id: "test".into(),
                    ..Impression::default()
                };
                build_request_with(outbound, &|name| impression_macro_value(&impression, name))
            }
            _ => {
                let converted = self.converter.convert(&conversion).await;
                build_request(outbound, &conversion, &converted)
            }
        };
        let (method, url_sent) = (request.method.clone(), request.url.clone());
        let answer = |status: u16, response: String, error: String, latency_ms: u128| {
            serde_json::json!({
                "method": method,
                "url": url_sent,
                "http_status": status,
                "response": response,
                "error": error,
                "latency_ms": latency_ms,
            })
        };
        let url = match check_url(&request.url, self.settings.allow_private_targets) {
            Ok(url) => url,
            Err(refused) => return Ok(answer(0, String::new(), refused.to_string(), 0)),
        };
        let delivery = format!("{}/1/{outbound_id}", conversion.conversion_id);
        let builder = http_request(&self.client, url, &delivery, request, outbound);
        let started = Instant::now();
        Ok(match builder.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let snippet = read_snippet(response, self.settings.response_snippet_bytes).await;
                answer(
                    status,
                    snippet,
                    String::new(),
                    started.elapsed().as_millis(),
                )
            }
            Err(error) => answer(
                0,
                String::new(),
                error_text(&error),
                started.elapsed().as_millis(),
            ),
        })
    }
}

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

//! postback-dispatcher end to end: flows and conversions produced straight to Kafka, the
//! dispatcher alone running, and a receiver on 127.0.0.1 that records what arrives and
//! can be told to fail (500) or hang.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use anyhow::Context;
use prost::Message as _;
use traffsure_config::KafkaSettings;
use traffsure_core::vocab::Vocabulary;
use traffsure_core::ErrorBody;
use traffsure_events::{
    Conversion, ConversionStatus, Flow, FlowStatus, Goal, OutboundAttempt, OutboundPostback,
    OutboundState,
};
use traffsure_kafka::rdkafka::producer::FutureProducer;
use traffsure_kafka::rdkafka::Message as _;
use traffsure_kafka::Topics;
use traffsure_tests::{eventually, serve_local, Stack, StackOptions};

const DISPATCHER: &str = "postback-dispatcher";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Ok,
    Fail,
    Hang,
}

#[derive(Debug, Clone)]
struct Hit {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    body: String,
    delivery: String,
    at_ms: i64,
}

#[derive(Default)]
struct Recorded {
    mode: Option<Mode>,
    /// Every request, whatever the answer.
    hits: Vec<Hit>,
    /// Requests answered 200: what was delivered.
    delivered: Vec<Hit>,
}

/// A local HTTP endpoint standing in for traffic sources and affiliates.
#[derive(Clone)]
struct Receiver {
    port: u16,
    recorded: Arc<Mutex<Recorded>>,
}

impl Receiver {
    async fn start(mode: Mode) -> anyhow::Result<Self> {
        let recorded = Arc::new(Mutex::new(Recorded {
            mode: Some(mode),
            ..Recorded::default()
        }));
        let state = web::Data::new(recorded.clone());
        let port = serve_local(move |app| {
            app.app_data(state.clone())
                .default_service(web::to(receive));
        })?;
        Ok(Self { port, recorded })
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_mode(&self, mode: Mode) {
        self.lock().mode = Some(mode);
    }

    fn hits(&self) -> usize {
        self.lock().hits.len()
    }

    fn delivered(&self) -> Vec<Hit> {
        self.lock().delivered.clone()
    }
}

async fn receive(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<Mutex<Recorded>>>,
) -> HttpResponse {
    let hit = Hit {
        method: request.method().to_string(),
        path: request.path().to_string(),
        query: serde_urlencoded::from_str(request.query_string()).unwrap_or_default(),
        body: String::from_utf8_lossy(&body).into_owned(),
        delivery: request
            .headers()
            .get("x-traffsure-delivery")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        at_ms: traffsure_now_ms(),
    };
    let mode = {
        let mut recorded = state.lock().unwrap_or_else(|p| p.into_inner());
        recorded.hits.push(hit.clone());
        recorded.mode.unwrap_or(Mode::Ok)
    };
    match mode {
        Mode::Ok => {
            state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .delivered
                .push(hit);
            HttpResponse::Ok().body("ok")
        }
        Mode::Fail => HttpResponse::InternalServerError().body("receiver is failing on purpose"),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            HttpResponse::Ok().body("too late")
        }
    }
}

fn traffsure_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Kafka access for one test stack.
struct Bus {
    settings: KafkaSettings,
    topics: Topics,
    producer: FutureProducer,
}

impl Bus {
    fn new(stack: &Stack) -> anyhow::Result<Self> {
        let settings = KafkaSettings {
            brokers: stack.options.kafka_brokers.clone(),
            topic_prefix: stack.topic_prefix.clone(),
            ..KafkaSettings::default()
        };
        Ok(Self {
            producer: traffsure_kafka::producer(&settings)?,
            topics: Topics::new(&stack.topic_prefix),
            settings,
        })
    }

    async fn flow(&self, flow: &Flow) -> anyhow::Result<()> {
        traffsure_kafka::send_event(
            &self.producer,
            &self.topics.flows,
            flow.id.to_string().as_bytes(),
            flow,
        )
        .await
        .context("produce flow")?;
        Ok(())
    }

    async fn conversion(&self, conversion: &Conversion) -> anyhow::Result<()> {
        let key = traffsure_kafka::routing_key_bytes(conversion.routing_key as u16);
        traffsure_kafka::send_event(&self.producer, &self.topics.conversions, &key, conversion)
            .await
            .context("produce conversion")?;
        Ok(())
    }

    /// Every attempt in `outbound-log` so far.
    async fn attempts(&self) -> anyhow::Result<Vec<OutboundAttempt>> {
        let attempts = traffsure_kafka::reader::collect_to_end(
            &self.settings,
            &self.topics.outbound_log,
            Duration::from_secs(10),
            |message| {
                Ok(match message.payload() {
                    Some(payload) => Some(OutboundAttempt::decode(payload)?),
                    None => None,
                })
            },
        )
        .await?;
        Ok(attempts)
    }
}

fn outbound(id: &str, url: String) -> OutboundPostback {
    OutboundPostback {
        id: id.into(),
        url,
        method: "GET".into(),
        body_format: "form".into(),
        on_status: "any".into(),
        enabled: true,
        ..OutboundPostback::default()
    }
}

fn flow(id: u32, outbounds: Vec<OutboundPostback>) -> Flow {
    let mut flow = Flow {
        id,
        slug: format!("flow-{id}"),
        name: format!("Flow {id}"),
        destination_url: "https://offer.test/?c={click}".into(),
        default_goal: "sale".into(),
        goals: ["sale", "lead"]
            .iter()
            .map(|k| Goal {
                key: k.to_string(),
                ..Goal::default()
            })
            .collect(),
        revision: 1,
        outbound_postbacks: outbounds,
        ..Flow::default()
    };
    flow.set_status(FlowStatus::Active);
    flow
}

fn conversion(
    flow_id: u32,
    n: usize,
    version: u32,
    goal: &str,
    status: ConversionStatus,
) -> Conversion {
    let mut c = Conversion {
        conversion_id: format!("cv-{flow_id}-{n}"),
        version,
        click_hash: format!("click{n}"),
        flow_id,
        goal: goal.into(),
        revenue_micros: (n as i64 + 1) * 1_500_000,
        currency: "USD".into(),
        uid: format!("tx {n}"),
        sub_id: format!("sub-{n}"),
        subs: vec![format!("s1-{n}")],
        routing_key: (n * 7919 % 65_536) as u32,
        created_at_ms: traffsure_now_ms(),
        updated_at_ms: traffsure_now_ms(),
        ..Conversion::default()
    };
    c.set_status(status);
    c
}

/// A stack running only the dispatcher, allowed to send to 127.0.0.1, with fast retries.
async fn dispatcher_stack(extra: &[(&str, &str)]) -> anyhow::Result<Stack> {
    let mut options = StackOptions::default()
        .services(&[DISPATCHER])
        .env(
            DISPATCHER,
            "TRAFFSURE__OUTBOUND__ALLOW_PRIVATE_TARGETS",
            "true",
        )
        .env(
            DISPATCHER,
            "TRAFFSURE__OUTBOUND__RETRY_SCHEDULE_MS",
            "300,600,900",
        )
        .env(DISPATCHER, "TRAFFSURE__OUTBOUND__MAX_ATTEMPTS", "100")
        .env(
            DISPATCHER,
            "TRAFFSURE__OUTBOUND__REQUEST_TIMEOUT_MS",
            "1500",
        )
        .env(DISPATCHER, "TRAFFSURE__OUTBOUND__CONNECT_TIMEOUT_MS", "500")
        .env(DISPATCHER, "TRAFFSURE__OUTBOUND__BREAKER_FAILURES", "1000");
    for (key, value) in extra {
        options = options.env(DISPATCHER, key, *value);
    }
    Stack::start_with(options).await
}

/// Waits until exactly the `expected` delivery keys arrived, then a moment more, and
/// fails on a missing key, an unexpected one, or any key delivered twice.
async fn assert_exactly_once(
    receiver: &Receiver,
    expected: &BTreeSet<String>,
    stack: &Stack,
) -> anyhow::Result<Vec<Hit>> {
    let wanted = expected.len();
    let waited = eventually(Duration::from_secs(60), || async {
        Ok((receiver.delivered().len() >= wanted).then_some(()))
    })
    .await;
    if let Err(error) = waited {
        let got: BTreeSet<String> = receiver
            .delivered()
            .into_iter()
            .map(|h| h.delivery)
            .collect();
        let missing: Vec<_> = expected.difference(&got).collect();
        anyhow::bail!("{error}: missing {missing:?}\n{}", stack.logs());
    }
    // Late duplicates would arrive within a few retry periods.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delivered = receiver.delivered();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for hit in &delivered {
        *counts.entry(hit.delivery.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let got: BTreeSet<String> = counts.keys().map(|k| k.to_string()).collect();
    assert_eq!(&got, expected, "delivered set differs");
    Ok(delivered)
}

#[tokio::test]
async fn every_qualifying_conversion_arrives_exactly_once_after_retries() -> anyhow::Result<()> {
    let receiver = Receiver::start(Mode::Fail).await?;
    let stack = dispatcher_stack(&[]).await?;
    let bus = Bus::new(&stack)?;
    let mut source = outbound(
        "src",
        receiver.url("/src?click={click}&goal={goal}&status={status}&rev={revenue}&s1={sub1}&uid={uid}&cv={conversion}"),
    );
    source.on_status = "approved".into();
    let mut affiliate = outbound("aff", receiver.url("/aff"));
    affiliate.method = "POST".into();
    affiliate.body_format = "json".into();
    affiliate.body_template =
        r#"{"conversion":"{conversion}","status":"{status}","payout":{payout}}"#.into();
    affiliate.goals = vec!["lead".into()];
    let mut disabled = outbound("off", receiver.url("/off"));
    disabled.enabled = false;
    bus.flow(&flow(101, vec![source, affiliate, disabled]))
        .await?;

    let statuses = [
        ConversionStatus::Approved,
        ConversionStatus::Pending,
        ConversionStatus::Rejected,
    ];
    let mut conversions = Vec::new();
    for n in 0..30 {
        let goal = if n % 2 == 0 { "sale" } else { "lead" };
        let mut c = conversion(101, n, 1, goal, statuses[n % 3]);
        c.disable_postbacks = n == 3;
        conversions.push(c);
    }
    // A status change: conversion 1 (lead, pending) becomes approved in version 2.
    let mut upgraded = conversions[1].clone();
    upgraded.version = 2;
    upgraded.previous_status = upgraded.status;
    upgraded.set_status(ConversionStatus::Approved);
    conversions.push(upgraded);
    // The expectation, written from the flow's rules rather than the dispatcher's code.
    let mut expected = BTreeSet::new();
    for c in &conversions {
        if c.disable_postbacks {
            continue;
        }
        if c.status() == ConversionStatus::Approved {
            expected.insert(format!("{}/{}/src", c.conversion_id, c.version));
        }
        if c.goal == "lead" {
            expected.insert(format!("{}/{}/aff", c.conversion_id, c.version));
        }
    }
    for c in &conversions {
        bus.conversion(c).await?;
    }
    // The same versions again, as a redelivered batch would bring them.
    for c in conversions.iter().take(10) {
        bus.conversion(c).await?;
    }

    eventually(Duration::from_secs(30), || async {
        Ok((receiver.hits() >= expected.len() * 2).then_some(()))
    })
    .await
    .with_context(|| stack.logs())?;
    receiver.set_mode(Mode::Ok);
    let delivered = assert_exactly_once(&receiver, &expected, &stack).await?;

    for hit in &delivered {
        let key_conversion = hit.delivery.split('/').next().unwrap_or_default();
        let c = conversions
            .iter()
            .find(|c| c.conversion_id == key_conversion)
            .context("delivery of an unknown conversion")?;
        match hit.path.as_str() {
            "/src" => {
                assert_eq!(hit.method, "GET");
                assert_eq!(hit.query["cv"], c.conversion_id);
                assert_eq!(hit.query["status"], "approved");
                assert_eq!(hit.query["goal"], c.goal);
                assert_eq!(hit.query["uid"], c.uid);
                assert_eq!(hit.query["s1"], c.subs[0]);
                let rev: f64 = hit.query["rev"].parse()?;
                assert!((rev * 1e6 - c.revenue_micros as f64).abs() < 1.0, "{rev}");
            }
            "/aff" => {
                assert_eq!(hit.method, "POST");
                let body: serde_json::Value = serde_json::from_str(&hit.body)?;
                assert_eq!(body["conversion"], c.conversion_id.as_str());
                let version: u32 = hit.delivery.split('/').nth(1).unwrap_or("0").parse()?;
                let sent = conversions
                    .iter()
                    .find(|x| x.conversion_id == c.conversion_id && x.version == version)
                    .context("no such version")?;
                assert_eq!(body["status"], sent.status().word());
            }
            other => panic!("unexpected path {other}"),
        }
    }

    let attempts = eventually(Duration::from_secs(20), || async {
        let attempts = bus.attempts().await?;
        let delivered = attempts
            .iter()
            .filter(|a| a.state() == OutboundState::Delivered)
            .count();
        Ok((delivered == expected.len()).then_some(attempts))
    })
    .await?;
    let retrying: Vec<_> = attempts
        .iter()
        .filter(|a| a.state() == OutboundState::Retrying)
        .collect();
    assert!(retrying.len() >= expected.len(), "{}", retrying.len());
    assert!(retrying.iter().all(|a| a.http_status == 500
        && a.error == "http status 500"
        && a.next_attempt_at_ms > a.attempted_at_ms));
    assert!(retrying
        .iter()
        .any(|a| a.response_snippet.contains("failing on purpose")));
    for a in attempts
        .iter()
        .filter(|a| a.state() == OutboundState::Delivered)
    {
        assert!(a.attempt >= 2, "delivered at attempt {}", a.attempt);
        assert_eq!(a.http_status, 200);
        assert_eq!(a.flow_id, 101);
        assert!(a.url.starts_with(&receiver.url("/")), "{}", a.url);
    }
    Ok(())
}

#[tokio::test]
async fn a_delay_holds_the_postback_back() -> anyhow::Result<()> {
    let receiver = Receiver::start(Mode::Ok).await?;
    let stack = dispatcher_stack(&[]).await?;
    let bus = Bus::new(&stack)?;
    let mut delayed = outbound("later", receiver.url("/later?cv={conversion}"));
    delayed.delay_seconds = 3;
    let now = outbound("now", receiver.url("/now?cv={conversion}"));
    bus.flow(&flow(102, vec![delayed, now])).await?;
    let c = conversion(102, 1, 1, "sale", ConversionStatus::Approved);
    bus.conversion(&c).await?;
    let expected: BTreeSet<String> = ["cv-102-1/1/later", "cv-102-1/1/now"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let delivered = assert_exactly_once(&receiver, &expected, &stack).await?;
    let at = |path: &str| {
        delivered
            .iter()
            .find(|h| h.path == path)
            .map(|h| h.at_ms - c.updated_at_ms)
            .unwrap_or_default()
    };
    assert!(
        at("/now") < 2_500,
        "immediate postback took {} ms",
        at("/now")
    );
    assert!(
        at("/later") >= 3_000,
        "delayed postback came after {} ms",
        at("/later")
    );
    assert!(
        at("/later") < 8_000,
        "delayed postback came after {} ms",
        at("/later")
    );
    Ok(())
}

async fn circuit_metric(stack: &Stack, to: &str) -> anyhow::Result<u64> {
    let text = stack
        .http
        .get(stack.url(DISPATCHER, "/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let prefix = format!("traffsure_outbound_circuit_transitions_total{{to=\"{to}\"}} ");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

#[tokio::test]
async fn the_circuit_opens_while_an_endpoint_fails_and_closes_when_it_recovers(
) -> anyhow::Result<()> {
    let receiver = Receiver::start(Mode::Fail).await?;
    let stack = dispatcher_stack(&[
        ("TRAFFSURE__OUTBOUND__BREAKER_FAILURES", "3"),
        ("TRAFFSURE__OUTBOUND__BREAKER_OPEN_MS", "1500"),
        ("TRAFFSURE__OUTBOUND__RETRY_SCHEDULE_MS", "200"),
        ("TRAFFSURE__OUTBOUND__PER_HOST_IN_FLIGHT", "2"),
    ])
    .await?;
    let bus = Bus::new(&stack)?;
    bus.flow(&flow(
        103,
        vec![outbound("src", receiver.url("/pb?cv={conversion}"))],
    ))
    .await?;
    let mut expected = BTreeSet::new();
    for n in 0..20 {
        let c = conversion(103, n, 1, "sale", ConversionStatus::Approved);
        expected.insert(format!("{}/1/src", c.conversion_id));
        bus.conversion(&c).await?;
    }
    eventually(Duration::from_secs(30), || async {
        Ok((circuit_metric(&stack, "open").await? >= 1).then_some(()))
    })
    .await
    .with_context(|| stack.logs())?;
    let summary: serde_json::Value = stack
        .http
        .get(stack.url(DISPATCHER, "/deliveries"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        summary["open_circuits"][0],
        format!("127.0.0.1:{}", receiver.port),
        "{summary}"
    );
    // Failing for 4 s: 20 deliveries retried every 200 ms would hit the endpoint about
    // 400 times; the open circuit lets only a probe through every 1.5 s.
    let before = receiver.hits();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = receiver.hits() - before;
    assert!(
        during <= 12,
        "{during} requests reached a failing endpoint with an open circuit"
    );
    receiver.set_mode(Mode::Ok);
    assert_exactly_once(&receiver, &expected, &stack).await?;
    assert!(circuit_metric(&stack, "closed").await? >= 1);
    let summary: serde_json::Value = stack
        .http
        .get(stack.url(DISPATCHER, "/deliveries"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(summary["open_circuits"], serde_json::json!([]), "{summary}");
    assert_eq!(summary["deliveries"]["delivered"], 20, "{summary}");
    Ok(())
}

#[tokio::test]
async fn kill_9_mid_run_still_delivers_exactly_once() -> anyhow::Result<()> {
    let receiver = Receiver::start(Mode::Fail).await?;
    let mut stack = dispatcher_stack(&[("TRAFFSURE__OUTBOUND__RETRY_SCHEDULE_MS", "500")]).await?;
    let bus = Bus::new(&stack)?;
    let mut delayed = outbound("later", receiver.url("/later?cv={conversion}"));
    delayed.delay_seconds = 4;
    bus.flow(&flow(
        104,
        vec![
            outbound("now", receiver.url("/now?cv={conversion}")),
            delayed,
        ],
    ))
    .await?;
    let mut expected = BTreeSet::new();
    let mut produce = |range: std::ops::Range<usize>| {
        let mut batch = Vec::new();
        for n in range {
            let c = conversion(104, n, 1, "sale", ConversionStatus::Approved);
            expected.insert(format!("{}/1/now", c.conversion_id));
            expected.insert(format!("{}/1/later", c.conversion_id));
            batch.push(c);
        }
        batch
    };
    let first = produce(0..40);
    let second = produce(40..80);
    for c in &first {
        bus.conversion(c).await?;
    }
    // Every immediate postback tried at least once (and failed); delayed ones still waiting.
    eventually(Duration::from_secs(30), || async {
        Ok((receiver.hits() >= 40).then_some(()))
    })
    .await
    .with_context(|| stack.logs())?;
    stack.kill(DISPATCHER).await?;
    for c in &second {
        bus.conversion(c).await?;
    }
    receiver.set_mode(Mode::Ok);
    stack.restart(DISPATCHER).await?;
    // Halfway through the second run, crash again.
    eventually(Duration::from_secs(30), || async {
        Ok((receiver.delivered().len() >= 40).then_some(()))
    })
    .await
    .with_context(|| stack.logs())?;
    // Crash with no 2xx answer waiting to be recorded: the receiver starts failing, and
    // the dispatcher has recorded every postback the receiver accepted.
    receiver.set_mode(Mode::Fail);
    eventually(Duration::from_secs(20), || async {
        let summary: serde_json::Value = stack
            .http
            .get(stack.url(DISPATCHER, "/deliveries"))
            .send()
            .await?
            .json()
            .await?;
        let recorded = summary["deliveries"]["delivered"].as_u64().unwrap_or(0);
        Ok((recorded as usize >= receiver.delivered().len()).then_some(()))
    })
    .await?;
    stack.kill(DISPATCHER).await?;
    receiver.set_mode(Mode::Ok);
    stack.restart(DISPATCHER).await?;
    assert_exactly_once(&receiver, &expected, &stack).await?;
    Ok(())
}

/// A producer that fails for good (librdkafka's fatal error, injected with its test hook
/// through `TRAFFSURE_TEST_PRODUCER_FATAL_AFTER` in debug builds) stops the dispatcher
/// with the cause, and its restart delivers every postback once. The endpoint fails
/// until then, so no 2xx answer waits to be recorded when the fault comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_stops_the_dispatcher_and_the_restart_delivers_once(
) -> anyhow::Result<()> {
    const FAULT: &str = "TRAFFSURE_TEST_PRODUCER_FATAL_AFTER";
    let receiver = Receiver::start(Mode::Fail).await?;
    let mut stack = dispatcher_stack(&[(FAULT, "30")]).await?;
    let bus = Bus::new(&stack)?;
    bus.flow(&flow(
        105,
        vec![outbound("now", receiver.url("/now?cv={conversion}"))],
    ))
    .await?;
    let mut expected = BTreeSet::new();
    for n in 0..20 {
        let c = conversion(105, n, 1, "sale", ConversionStatus::Approved);
        expected.insert(format!("{}/1/now", c.conversion_id));
        bus.conversion(&c).await?;
    }
    eventually(Duration::from_secs(60), || async { Ok(stack.exited()) })
        .await
        .with_context(|| stack.logs())?;
    let log = std::fs::read_to_string(stack.log_dir.join(format!("{DISPATCHER}.log")))?;
    anyhow::ensure!(
        log.contains("Error: kafka producer failed fatally (OutOfOrderSequenceNumber"),
        "the dispatcher did not stop for its fatal producer error:\n{}",
        stack.logs()
    );
    stack
        .options
        .env
        .retain(|(_, variable, _)| variable != FAULT);
    receiver.set_mode(Mode::Ok);
    stack.restart(DISPATCHER).await?;
    assert_exactly_once(&receiver, &expected, &stack).await?;
    Ok(())
}

async fn replay(
    stack: &Stack,
    body: serde_json::Value,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let response = stack
        .http
        .post(stack.url(DISPATCHER, "/replay"))
        .json(&body)
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}

/// A refusal's body: exactly `{status, code, field, message}`, its status the answer's.
fn error_body(status: u16, body: serde_json::Value) -> anyhow::Result<ErrorBody> {
    let keys: Vec<&str> = body
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    anyhow::ensure!(
        keys == ["code", "field", "message", "status"],
        "not an error body: {body}"
    );
    let error: ErrorBody = serde_json::from_value(body)?;
    anyhow::ensure!(error.status == status, "{error:?} answered with {status}");
    Ok(error)
}

#[tokio::test]
async fn dead_postbacks_are_replayed_by_hand() -> anyhow::Result<()> {
    let receiver = Receiver::start(Mode::Fail).await?;
    let stack = dispatcher_stack(&[
        ("TRAFFSURE__OUTBOUND__MAX_ATTEMPTS", "2"),
        ("TRAFFSURE__OUTBOUND__RETRY_SCHEDULE_MS", "200"),
    ])
    .await?;
    let bus = Bus::new(&stack)?;
    bus.flow(&flow(
        105,
        vec![outbound("src", receiver.url("/pb?cv={conversion}"))],
    ))
    .await?;
    let mut expected = BTreeSet::new();
    for n in 0..5 {
        let c = conversion(105, n, 1, "sale", ConversionStatus::Approved);
        expected.insert(format!("{}/1/src", c.conversion_id));
        bus.conversion(&c).await?;
    }
    let dead = eventually(Duration::from_secs(30), || async {
        let attempts = bus.attempts().await?;
        let dead: Vec<_> = attempts
            .into_iter()
            .filter(|a| a.state() == OutboundState::Dead)
            .collect();
        Ok((dead.len() == 5).then_some(dead))
    })
    .await
    .with_context(|| stack.logs())?;
    assert!(dead
        .iter()
        .all(|a| a.attempt == 2 && a.next_attempt_at_ms == 0));
    assert_eq!(receiver.hits(), 10);

    let (status, body) =
        replay(&stack, serde_json::json!({"flow_id": 105, "state": "gone"})).await?;
    let error = error_body(status, body)?;
    assert_eq!(
        (status, error.code.as_str(), error.field.as_deref()),
        (422, "invalid_field", Some("state")),
        "{error:?}"
    );
    let (status, body) = replay(&stack, serde_json::json!({})).await?;
    let error = error_body(status, body)?;
    assert_eq!(
        (status, error.code.as_str(), error.field.as_deref()),
        (422, "invalid_field", Some("conversion_id")),
        "{error:?}"
    );
    let (status, body) = replay(&stack, serde_json::json!({"conversion_id": "nope"})).await?;
    let error = error_body(status, body)?;
    assert_eq!(
        (status, error.code.as_str(), error.field.as_deref()),
        (404, "not_found", None),
        "{error:?}"
    );
    assert!(error.message.contains("nope"), "{error:?}");
    let (status, body) = replay(&stack, serde_json::json!({"flow_id": 999})).await?;
    let error = error_body(status, body)?;
    assert_eq!(
        (status, error.code.as_str()),
        (404, "not_found"),
        "{error:?}"
    );

    receiver.set_mode(Mode::Ok);
    let (status, body) =
        replay(&stack, serde_json::json!({"flow_id": 105, "state": "dead"})).await?;
    assert_eq!(
        (status, body["replayed"].as_u64()),
        (200, Some(5)),
        "{body}"
    );
    assert_exactly_once(&receiver, &expected, &stack).await?;
    // Nothing dead is left to replay.
    let (status, body) = replay(&stack, serde_json::json!({"flow_id": 105})).await?;
    assert_eq!(
        (status, body["replayed"].as_u64()),
        (200, Some(0)),
        "{body}"
    );

    // One delivered postback sent again on request.
    let (status, body) = replay(
        &stack,
        serde_json::json!({"conversion_id": "cv-105-0", "outbound_id": "src"}),
    )
    .await?;
    assert_eq!(
        (status, body["replayed"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    eventually(Duration::from_secs(20), || async {
        Ok((receiver.delivered().len() == 6).then_some(()))
    })
    .await?;
    let attempts = eventually(Duration::from_secs(20), || async {
        let attempts = bus.attempts().await?;
        let manual: Vec<_> = attempts
            .into_iter()
            .filter(|a| a.manual && a.state() == OutboundState::Delivered)
            .collect();
        Ok((manual.len() == 6).then_some(manual))
    })
    .await?;
    assert!(attempts
        .iter()
        .any(|a| a.conversion_id == "cv-105-0" && a.attempt == 4));
    Ok(())
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() -> anyhow::Result<()> {
    let receiver = Receiver::start(Mode::Ok).await?;
    let stack = Stack::start_with(StackOptions::default().services(&[DISPATCHER])).await?;
    let bus = Bus::new(&stack)?;
    bus.flow(&flow(
        106,
        vec![
            outbound("loopback", receiver.url("/pb?cv={conversion}")),
            outbound(
                "metadata",
                "http://169.254.169.254/latest/meta-data?c={click}".into(),
            ),
            outbound("name", format!("http://localhost:{}/pb", receiver.port)),
        ],
    ))
    .await?;
    bus.conversion(&conversion(106, 1, 1, "sale", ConversionStatus::Approved))
        .await?;
    let attempts = eventually(Duration::from_secs(30), || async {
        let attempts = bus.attempts().await?;
        Ok((attempts.len() >= 3).then_some(attempts))
    })
    .await
    .with_context(|| stack.logs())?;
    let by_id: BTreeMap<&str, &OutboundAttempt> = attempts
        .iter()
        .map(|a| (a.outbound_id.as_str(), a))
        .collect();
    for id in ["loopback", "metadata"] {
        assert_eq!(by_id[id].state(), OutboundState::Refused, "{id}");
        assert!(by_id[id].error.contains("private"), "{}", by_id[id].error);
    }
    // A name that resolves to loopback fails at resolution and is retried, never sent.
    assert_eq!(by_id["name"].http_status, 0);
    assert!(
        by_id["name"].error.contains("public address"),
        "{}",
        by_id["name"].error
    );
    assert_eq!(receiver.hits(), 0);
    Ok(())
}

#[tokio::test]
async fn a_hanging_endpoint_times_out_without_holding_up_others() -> anyhow::Result<()> {
    let hanging = Receiver::start(Mode::Hang).await?;
    let healthy = Receiver::start(Mode::Ok).await?;
    let stack = dispatcher_stack(&[
        ("TRAFFSURE__OUTBOUND__REQUEST_TIMEOUT_MS", "1000"),
        ("TRAFFSURE__OUTBOUND__PER_HOST_IN_FLIGHT", "4"),
        ("TRAFFSURE__OUTBOUND__MAX_ATTEMPTS", "1"),
    ])
    .await?;
    let bus = Bus::new(&stack)?;
    bus.flow(&flow(
        107,
        vec![
            outbound("slow", hanging.url("/pb?cv={conversion}")),
            outbound("fast", healthy.url("/pb?cv={conversion}")),
        ],
    ))
    .await?;
    let mut expected = BTreeSet::new();
    for n in 0..40 {
        let c = conversion(107, n, 1, "sale", ConversionStatus::Approved);
        expected.insert(format!("{}/1/fast", c.conversion_id));
        bus.conversion(&c).await?;
    }
    let started = std::time::Instant::now();
    assert_exactly_once(&healthy, &expected, &stack).await?;
    // 40 hanging requests 4 at a time take 10 s; the healthy host must not wait for them.
    let first_last = {
        let delivered = healthy.delivered();
        delivered.iter().map(|h| h.at_ms).max().unwrap_or_default()
            - delivered.iter().map(|h| h.at_ms).min().unwrap_or_default()
    };
    assert!(
        first_last < 3_000,
        "healthy deliveries spread over {first_last} ms"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    let dead = eventually(Duration::from_secs(40), || async {
        let attempts = bus.attempts().await?;
        let dead: Vec<_> = attempts
            .into_iter()
            .filter(|a| a.outbound_id == "slow" && a.state() == OutboundState::Dead)
            .collect();
        Ok((dead.len() == 40).then_some(dead))
    })
    .await?;
    assert!(dead
        .iter()
        .all(|a| a.error.starts_with("timeout") && a.latency_ms >= 900));
    Ok(())
}

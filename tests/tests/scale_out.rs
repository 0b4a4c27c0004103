//! Two instances of every service share the work: the edges behind the test's own
//! round-robin, the consumers in their groups. A stream of clicks and postbacks runs
//! while one instance of each service is killed with SIGKILL and started again; at the
//! end the dashboard and the report by flow, read from both reporting-apis, show exactly
//! the clicks, conversions and revenue sent, and the receiver got every outbound postback.
//!
//! The one edge that is drained before its kill is click-ingest: its redirect does not
//! wait for Kafka, so a hard kill loses the clicks still in its producer queue (up to
//! `linger.ms` of traffic). It is taken out of the round-robin, as a load balancer would
//! before stopping it, and killed once its producer queue gauge reads empty.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use reqwest::Method;
use serde_json::{json, Value};
use traffsure_tests::{eventually, instance_name, serve_local, Stack, StackOptions};

const FLOWS: usize = 3;
/// Clicks sent at least (the stream goes on until every kill is done) and at most.
const MIN_CLICKS: usize = 20_000;
const MAX_CLICKS: usize = 40_000;
/// Every tenth click converts.
const CONVERTING_EVERY: usize = 10;
const WORKERS: usize = 24;
/// Outbound requests one dispatcher sends to one host at once: a killed dispatcher can
/// repeat at most its attempts in flight.
const PER_HOST_IN_FLIGHT: usize = 8;
const NO_EDGE: usize = usize::MAX;

/// Counts outbound postbacks by their `X-TraffSure-Delivery` key.
#[derive(Clone, Default)]
struct Receiver {
    deliveries: Arc<Mutex<HashMap<String, u32>>>,
}

impl Receiver {
    async fn start(&self) -> anyhow::Result<u16> {
        let state = web::Data::new(self.clone());
        serve_local(move |app| {
            app.app_data(state.clone())
                .default_service(web::to(receive));
        })
    }

    fn snapshot(&self) -> HashMap<String, u32> {
        self.deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

async fn receive(request: HttpRequest, receiver: web::Data<Receiver>) -> HttpResponse {
    let key = request
        .headers()
        .get("x-traffsure-delivery")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    *receiver
        .deliveries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default() += 1;
    HttpResponse::Ok().body("ok")
}

/// What the stream sent per flow, as the reports must show it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Expected {
    clicks: u64,
    approved: u64,
    pending: u64,
    rejected: u64,
    revenue_micros: u64,
    /// Conversion versions, each owing one outbound postback.
    versions: u64,
}

/// The edges the stream spreads requests over, and the one taken out of rotation.
struct Edges {
    clicks: Vec<String>,
    postbacks: Vec<String>,
    drained_click_edge: AtomicUsize,
}

struct Stream {
    http: reqwest::Client,
    edges: Edges,
    flows: Vec<(u32, String)>,
    next: AtomicUsize,
    sent: AtomicUsize,
    kills_done: AtomicBool,
    expected: Mutex<Vec<Expected>>,
    retried: AtomicUsize,
    /// Postbacks take turns over the edges.
    round_robin: AtomicUsize,
}

impl Stream {
    /// One click through the round-robin: another edge when one fails.
    async fn click(&self, i: usize, slug: &str) -> anyhow::Result<String> {
        for attempt in 0..200 {
            let mut edge = (i + attempt) % self.edges.clicks.len();
            if edge == self.edges.drained_click_edge.load(Ordering::SeqCst) {
                edge = (edge + 1) % self.edges.clicks.len();
            }
            let url = format!(
                "{}/c/{slug}?sub_id=s{}&source=scale",
                self.edges.clicks[edge],
                i % 7
            );
            match self.http.get(&url).send().await {
                Ok(response) if response.status() == 302 => {
                    let location = response.headers()["location"].to_str()?.to_string();
                    let hash = location
                        .split_once("c=")
                        .map(|(_, h)| h.split('&').next().unwrap_or_default().to_string())
                        .unwrap_or_default();
                    anyhow::ensure!(hash.len() == 40, "no click hash in {location}");
                    return Ok(hash);
                }
                _ => {
                    self.retried.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        anyhow::bail!("click {i} refused by every edge")
    }

    /// One postback, sent again (to the other edge) until one answers 200: the uid makes
    /// a repeat a duplicate, never a second conversion.
    async fn postback(&self, query: &str) -> anyhow::Result<()> {
        for _ in 0..400 {
            let edge =
                self.round_robin.fetch_add(1, Ordering::Relaxed) % self.edges.postbacks.len();
            let url = format!("{}/postback?{query}", self.edges.postbacks[edge]);
            match self.http.get(&url).send().await {
                Ok(response) if response.status() == 200 => return Ok(()),
                _ => {
                    self.retried.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        anyhow::bail!("postback {query} refused by every edge")
    }

    async fn worker(&self) -> anyhow::Result<()> {
        loop {
            let i = self.next.fetch_add(1, Ordering::SeqCst);
            if i >= MAX_CLICKS || (i >= MIN_CLICKS && self.kills_done.load(Ordering::SeqCst)) {
                return Ok(());
            }
            let flow = i % FLOWS;
            let hash = self.click(i, &self.flows[flow].1).await?;
            let mut outcome = Expected {
                clicks: 1,
                ..Expected::default()
            };
            if i.is_multiple_of(CONVERTING_EVERY) {
                let uid = format!("order-{i}");
                let base = format!("click={hash}&uid={uid}&goal=sale");
                match (i / CONVERTING_EVERY) % 4 {
                    // Approved at once.
                    0 => {
                        self.postback(&format!("{base}&revenue=2.5")).await?;
                        outcome.approved = 1;
                        outcome.revenue_micros = 2_500_000;
                        outcome.versions = 1;
                    }
                    // Pending, then approved: one conversion, two versions.
                    1 => {
                        self.postback(&format!("{base}&revenue=3&status=pending"))
                            .await?;
                        self.postback(&format!("{base}&revenue=3&status=approved"))
                            .await?;
                        outcome.approved = 1;
                        outcome.revenue_micros = 3_000_000;
                        outcome.versions = 2;
                    }
                    // The same postback twice: a duplicate changes nothing.
                    2 => {
                        self.postback(&format!("{base}&revenue=1.5")).await?;
                        self.postback(&format!("{base}&revenue=1.5")).await?;
                        outcome.approved = 1;
                        outcome.revenue_micros = 1_500_000;
                        outcome.versions = 1;
                    }
                    // Approved, then charged back.
                    _ => {
                        self.postback(&format!("{base}&revenue=4")).await?;
                        self.postback(&format!("{base}&revenue=4&status=chargeback"))
                            .await?;
                        outcome.rejected = 1;
                        outcome.versions = 2;
                    }
                }
            }
            let mut expected = self.expected.lock().unwrap_or_else(|p| p.into_inner());
            let e = &mut expected[flow];
            e.clicks += outcome.clicks;
            e.approved += outcome.approved;
            e.pending += outcome.pending;
            e.rejected += outcome.rejected;
            e.revenue_micros += outcome.revenue_micros;
            e.versions += outcome.versions;
            drop(expected);
            self.sent.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_of_every_service_survive_a_kill_each_and_count_exactly() -> anyhow::Result<()> {
    let receiver = Receiver::default();
    let receiver_port = receiver.start().await?;
    let mut stack = Stack::start_with(
        StackOptions::default()
            .instances("*", 2)
            .env("*", "TRAFFSURE__HTTP__WORKERS", "2")
            .env(
                "postback-dispatcher",
                "TRAFFSURE__OUTBOUND__ALLOW_PRIVATE_TARGETS",
                "true",
            )
            .env(
                "postback-dispatcher",
                "TRAFFSURE__OUTBOUND__PER_HOST_IN_FLIGHT",
                PER_HOST_IN_FLIGHT.to_string(),
            )
            .env(
                "postback-dispatcher",
                "TRAFFSURE__OUTBOUND__RETRY_BASE_MS",
                "300",
            ),
    )
    .await?;
    let mut result = run(&mut stack, &receiver, receiver_port).await;
    if result.is_ok() {
        // No instance died on the way, not even one whose work the other took over.
        result = stack.all_running();
    }
    stack.print_failure(&result);
    result
}

async fn run(stack: &mut Stack, receiver: &Receiver, receiver_port: u16) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut flows = Vec::new();
    for n in 0..FLOWS {
        let slug = format!("scale-{}-{n}", stack.id);
        let flow = stack
            .create_flow(json!({
                "name": format!("Scale out {n}"),
                "slug": slug,
                "destination_url": "https://offer.example/land?c={click}",
                "goals": [{"key": "sale", "payout": "1"}],
                "outbound_postbacks": [{
                    "id": "source",
                    "url": format!("http://127.0.0.1:{receiver_port}/ob?click={{click}}&status={{status}}&revenue={{revenue}}"),
                    "on_status": "any"
                }]
            }))
            .await?;
        let id = flow["id"].as_u64().unwrap_or_default() as u32;
        flows.push((id, slug));
    }
    let edges = |service: &'static str| -> Vec<String> {
        (1..=2)
            .map(|n| stack.services[instance_name(service, n)].base_url.clone())
            .collect()
    };
    let stream = Arc::new(Stream {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(WORKERS)
            .build()?,
        edges: Edges {
            clicks: edges("click-ingest"),
            postbacks: edges("postback-ingest"),
            drained_click_edge: AtomicUsize::new(NO_EDGE),
        },
        flows: flows.clone(),
        next: AtomicUsize::new(0),
        sent: AtomicUsize::new(0),
        kills_done: AtomicBool::new(false),
        expected: Mutex::new(vec![Expected::default(); FLOWS]),
        retried: AtomicUsize::new(0),
        round_robin: AtomicUsize::new(0),
    });
    // Both click edges know every flow before the stream starts.
    for edge in &stream.edges.clicks {
        for (_, slug) in &flows {
            let url = format!("{edge}/c/{slug}");
            let http = &stack.http;
            eventually(Duration::from_secs(20), || async {
                Ok((http.get(&url).send().await?.status() == 302).then_some(()))
            })
            .await?;
        }
    }
    // Those probe clicks count too.
    for e in stream
        .expected
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter_mut()
    {
        e.clicks += 2;
    }

    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let stream = stream.clone();
            tokio::spawn(async move { stream.worker().await })
        })
        .collect();

    // One instance of each service killed and restarted while the stream runs.
    let kills: [(&'static str, usize); 6] = [
        ("sink", 1),
        ("conversion-attribution", 2),
        ("postback-dispatcher", 1),
        ("postback-ingest", 2),
        ("reporting-api", 2),
        ("click-ingest", 2),
    ];
    wait_for_sent(&stream, 2_000).await;
    for (service, n) in kills {
        let name = instance_name(service, n);
        let drain = service == "click-ingest";
        if drain {
            stream
                .edges
                .drained_click_edge
                .store(n - 1, Ordering::SeqCst);
            // Its last clicks leave the producer queue once their batch's `linger.ms`
            // has passed and the broker has acknowledged them. The queue gauge is
            // sampled every second, so only a reading taken over a second after the
            // drain began (and its last requests ended) counts.
            let drained_at = Instant::now();
            eventually(Duration::from_secs(20), || async {
                let queued = stack
                    .metric(name, "traffsure_kafka_producer_queue_messages")
                    .await?;
                Ok(
                    (drained_at.elapsed() > Duration::from_millis(1300) && queued == 0.0)
                        .then_some(()),
                )
            })
            .await
            .map_err(|e| anyhow::anyhow!("{name} kept clicks in its producer queue: {e}"))?;
        }
        let before = stream.sent.load(Ordering::SeqCst);
        stack.kill(name).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stack.restart(name).await?;
        if drain {
            stream
                .edges
                .drained_click_edge
                .store(NO_EDGE, Ordering::SeqCst);
        }
        eprintln!(
            "{name} killed and restarted at {} clicks ({:.1} s)",
            before,
            started.elapsed().as_secs_f64()
        );
        wait_for_sent(&stream, stream.sent.load(Ordering::SeqCst) + 1_000).await;
    }
    stream.kills_done.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await??;
    }
    let expected = stream
        .expected
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let sent = stream.sent.load(Ordering::SeqCst);
    eprintln!(
        "stream done: {sent} clicks, {} requests sent again, {:.1} s",
        stream.retried.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    assert!(sent >= MIN_CLICKS, "{sent} clicks");

    // Totals the dashboard shows, on both reporting-apis.
    let total = |f: fn(&Expected) -> u64| expected.iter().map(f).sum::<u64>();
    let want_dashboard = json!({
        "clicks_today": total(|e| e.clicks),
        "conversions_today": total(|e| e.approved + e.pending),
        "revenue_today": decimal(total(|e| e.revenue_micros)),
    });
    let stack: &Stack = stack;
    let mut reads = 0usize;
    let apis: Vec<String> = (1..=2)
        .map(|n| instance_name("reporting-api", n).to_string())
        .collect();
    let dashboard = eventually(Duration::from_secs(90), || {
        reads += 1;
        let api = apis[reads % 2].clone();
        let want = want_dashboard.clone();
        async move {
            let d = get(stack, &api, "/api/v1/dashboard").await?;
            let got = json!({
                "clicks_today": d["clicks_today"],
                "conversions_today": d["conversions_today"],
                "revenue_today": d["revenue_today"],
            });
            Ok((got == want).then_some(d))
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("dashboard never showed {want_dashboard}: {e}"))?;
    eprintln!(
        "dashboard: {} clicks, {} conversions, revenue {}",
        dashboard["clicks_today"], dashboard["conversions_today"], dashboard["revenue_today"]
    );

    // The report by flow, per flow, from each reporting-api.
    let want_report: BTreeMap<String, Value> = flows
        .iter()
        .zip(&expected)
        .map(|((id, _), e)| {
            (
                id.to_string(),
                json!({
                    "clicks": e.clicks,
                    "approved": e.approved,
                    "pending": e.pending,
                    "rejected": e.rejected,
                    "revenue": decimal(e.revenue_micros),
                }),
            )
        })
        .collect();
    for api in &apis {
        let report = eventually(Duration::from_secs(30), || async {
            let r = get(stack, api, "/api/v1/reports?group_by=flow&sort=flow").await?;
            let got: BTreeMap<String, Value> = r["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|row| {
                    (
                        row["flow"].as_str().unwrap_or_default().to_string(),
                        json!({
                            "clicks": row["clicks"],
                            "approved": row["approved"],
                            "pending": row["pending"],
                            "rejected": row["rejected"],
                            "revenue": normalize(&row["revenue"]),
                        }),
                    )
                })
                .collect();
            Ok((got == want_report).then_some(got))
        })
        .await
        .map_err(|e| anyhow::anyhow!("{api}: report by flow never showed {want_report:?}: {e}"))?;
        assert_eq!(report.len(), FLOWS);
    }

    // Every conversion version reached the receiver; repeats only from the killed
    // dispatcher's attempts in flight.
    let versions = total(|e| e.versions) as usize;
    let deliveries = eventually(Duration::from_secs(60), || async {
        let d = receiver.snapshot();
        Ok((d.len() >= versions).then_some(d))
    })
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "receiver got {} of {versions} deliveries: {e}",
            receiver.snapshot().len()
        )
    })?;
    // Nothing beyond the expected versions arrives later either.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deliveries = receiver
        .snapshot()
        .into_iter()
        .chain(deliveries)
        .collect::<HashMap<_, _>>();
    assert_eq!(deliveries.len(), versions, "distinct deliveries");
    assert!(
        deliveries.keys().all(|k| k.split('/').count() == 3),
        "delivery keys"
    );
    let repeats: u32 = deliveries.values().map(|n| n - 1).sum();
    eprintln!(
        "outbound: {versions} deliveries, {repeats} sent twice, {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
    assert!(
        repeats as usize <= PER_HOST_IN_FLIGHT,
        "{repeats} repeated deliveries: more than one killed dispatcher had in flight"
    );

    // The Kafka gauges of every consumer and producer: attribution's lag on clicks and
    // postbacks drains to zero on every partition, the others report theirs.
    let attribution_lag = eventually(Duration::from_secs(30), || async {
        let text = metrics(stack, "conversion-attribution#2").await?;
        let lags = samples(&text, "traffsure_kafka_consumer_lag");
        let on_inputs: Vec<_> = lags
            .iter()
            .filter(|(labels, _)| labels.contains(".clicks\"") || labels.contains(".postbacks\""))
            .collect();
        let drained = on_inputs.len() == 8 && on_inputs.iter().all(|(_, v)| *v == 0.0);
        Ok(drained.then_some(on_inputs.len()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("attribution lag never drained: {e}"))?;
    assert_eq!(
        attribution_lag, 8,
        "4 partitions of clicks and of postbacks"
    );
    for (instance, wanted) in [
        ("sink#2", "traffsure_kafka_consumer_lag"),
        ("sink#2", "traffsure_kafka_producer_queue_messages"),
        (
            "conversion-attribution",
            "traffsure_kafka_producer_queue_messages",
        ),
        ("postback-dispatcher#2", "traffsure_kafka_consumer_lag"),
        ("postback-dispatcher#2", "traffsure_outbound_deliveries"),
        ("postback-dispatcher#2", "traffsure_outbound_circuit_state"),
        ("postback-ingest", "traffsure_kafka_producer_queue_messages"),
        ("reporting-api", "traffsure_kafka_producer_queue_messages"),
    ] {
        let text = metrics(stack, instance).await?;
        assert!(
            !samples(&text, wanted).is_empty(),
            "{instance} does not report {wanted}"
        );
    }
    Ok(())
}

async fn metrics(stack: &Stack, instance: &str) -> anyhow::Result<String> {
    Ok(stack
        .http
        .get(stack.url(instance, "/metrics"))
        .send()
        .await?
        .text()
        .await?)
}

/// The samples of one metric: (labels, value).
fn samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            Some((labels.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

async fn wait_for_sent(stream: &Stream, count: usize) {
    while stream.sent.load(Ordering::SeqCst) < count.min(MAX_CLICKS - WORKERS) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(stack: &Stack, api: &str, path: &str) -> anyhow::Result<Value> {
    let response = stack.api_at(api, Method::GET, path).send().await?;
    anyhow::ensure!(
        response.status() == 200,
        "{api}{path}: {}",
        response.status()
    );
    Ok(response.json().await?)
}

/// Micros as the API writes money: a decimal without trailing zeros.
fn decimal(micros: u64) -> Value {
    let text = format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
    Value::String(text.trim_end_matches('0').trim_end_matches('.').to_string())
}

fn normalize(value: &Value) -> Value {
    let micros = value
        .as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .map(|v| (v * 1e6).round() as u64)
        .unwrap_or(u64::MAX);
    decimal(micros)
}

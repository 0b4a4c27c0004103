//! The load of `make bench BENCH=pipeline` (bench/pipeline.sh): tracking links at a
//! constant rate for a bounded time, every Nth click converting through a real postback,
//! one probe click a second timed from its redirect until the reporting API lists it, and
//! the consumer groups' lag read from Kafka's committed offsets.
//!
//! Open loop, as wrk2 paces requests: the clicks due by now are sent whatever the answers
//! before them took, up to `LOAD_MAX_IN_FLIGHT` at once; a click that finds that many
//! still waiting is counted as dropped (the rate did not hold) and not sent.
//!
//! The requests go through `traffsure_tests::http1`, a minimal HTTP/1.1 client over
//! kept-alive connections, on one thread by default: the generator shares the cores with
//! what it measures, and a general-purpose client (reqwest) cost 3.3 times its CPU per
//! request (BENCHMARKS.md, "Pipeline").
//!
//! Settings (environment): LOAD_CLICK_URL (a tracking link), LOAD_POSTBACK_URL (the
//! postback endpoint), LOAD_PROBE_URL (the probe flow's tracking link), LOAD_API_URL (the
//! reporting API's base), LOAD_API_KEY, LOAD_PROBE_FLOW (the probe flow's id), LOAD_RATE
//! (clicks/s), LOAD_SECONDS, LOAD_CONVERT_EVERY (20), LOAD_MAX_IN_FLIGHT (512),
//! LOAD_UA_FILE (user agents one a line, sent Zipf-weighted as bench/lib.sh's ua_mix_lua
//! does; empty: one Chrome agent), LOAD_BROKERS, LOAD_GROUPS (`name=group:topic,topic;…`
//! with full topic names), LOAD_DRAIN_SECONDS (the longest wait after the load for the
//! groups to catch up, 120), LOAD_THREADS (1: the runtime's threads).
//!
//! Output, one line each: `SEC t clicks postbacks click_errors postback_errors dropped`
//! every second; `LAG t name=lag…` every two seconds; `PROBE t ms` per probe that became
//! queryable; at the end one `SUMMARY key=value…` line
//! (`cpu_ticks`: this process's own CPU, user + system, in clock ticks).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use traffsure_tests::click_hash_of;
use traffsure_tests::http1::{parse_url, Answer, Pool};

/// How long a request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";

fn var(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set"))
}

fn var_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}: cannot parse {v:?}")),
        _ => Ok(default),
    }
}

#[derive(Default)]
struct Counters {
    clicks: AtomicU64,
    postbacks: AtomicU64,
    click_errors: AtomicU64,
    postback_errors: AtomicU64,
    dropped: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> [u64; 5] {
        [
            self.clicks.load(Relaxed),
            self.postbacks.load(Relaxed),
            self.click_errors.load(Relaxed),
            self.postback_errors.load(Relaxed),
            self.dropped.load(Relaxed),
        ]
    }
}

/// User agents with the n-th sent with weight 1/n (Zipf), as ua_mix_lua in bench/lib.sh.
struct Agents {
    agents: Vec<String>,
    cumulative: Vec<f64>,
}

impl Agents {
    fn load(path: &str) -> anyhow::Result<Self> {
        let agents: Vec<String> = if path.is_empty() {
            vec![CHROME.to_string()]
        } else {
            std::fs::read_to_string(path)
                .with_context(|| format!("reading {path}"))?
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect()
        };
        anyhow::ensure!(!agents.is_empty(), "no user agents in {path}");
        let mut total = 0.0;
        let cumulative = (1..=agents.len())
            .map(|i| {
                total += 1.0 / i as f64;
                total
            })
            .collect();
        Ok(Self { agents, cumulative })
    }

    /// The index of the agent for a uniform number `u` in [0, 1).
    fn pick(&self, u: f64) -> usize {
        let target = u * self.cumulative[self.cumulative.len() - 1];
        let i = self.cumulative.partition_point(|&c| c < target);
        i.min(self.agents.len() - 1)
    }
}

/// A small xorshift generator: the load needs spread, not quality.
fn uniform(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

/// Seconds into the run, and each group's lag then.
type LagSample = (f64, Vec<(String, i64)>);

struct Group {
    name: String,
    consumer: BaseConsumer,
    partitions: TopicPartitionList,
}

/// Parses LOAD_GROUPS and finds each topic's partitions.
fn groups(brokers: &str, spec: &str) -> anyhow::Result<Vec<Group>> {
    let mut out = Vec::new();
    for part in spec.split(';').filter(|p| !p.is_empty()) {
        let (name, rest) = part
            .split_once('=')
            .context("LOAD_GROUPS: name=group:topics")?;
        let (group, topics) = rest.split_once(':').context("LOAD_GROUPS: group:topics")?;
        let settings = traffsure_config::KafkaSettings {
            brokers: brokers.to_string(),
            ..Default::default()
        };
        // Never subscribes nor commits: it only reads the group's committed offsets.
        let consumer: BaseConsumer = traffsure_kafka::client_config(&settings)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        let mut partitions = TopicPartitionList::new();
        for topic in topics.split(',').filter(|t| !t.is_empty()) {
            let metadata = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .with_context(|| format!("metadata of {topic}"))?;
            for t in metadata.topics() {
                for p in t.partitions() {
                    partitions.add_partition(topic, p.id());
                }
            }
        }
        out.push(Group {
            name: name.to_string(),
            consumer,
            partitions,
        });
    }
    Ok(out)
}

/// Messages between each group's committed offsets and the partitions' ends. Blocking.
fn lags(groups: &[Group]) -> Vec<(String, i64)> {
    groups
        .iter()
        .map(|g| {
            let committed = g
                .consumer
                .committed_offsets(g.partitions.clone(), Duration::from_secs(5))
                .unwrap_or_else(|_| g.partitions.clone());
            let mut lag = 0;
            for e in committed.elements() {
                let Ok((low, high)) =
                    g.consumer
                        .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(5))
                else {
                    continue;
                };
                // A partition the group never committed on: a topic this build of the
                // service does not read (counted once the group commits there).
                if let Offset::Offset(o) = e.offset() {
                    lag += (high - o.max(low)).max(0);
                }
            }
            (g.name.clone(), lag)
        })
        .collect()
}

/// CPU clock ticks (user + system) this process has used so far, from /proc/self/stat.
fn own_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    // utime and stime are the 14th and 15th fields, the 12th and 13th after the name.
    after_name
        .split(' ')
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Load {
    clicks: Arc<Pool>,
    click_path: String,
    postbacks: Arc<Pool>,
    postback_path: String,
    convert_every: u64,
    agents: Agents,
    counters: Counters,
    redirect_ms: Mutex<Vec<f32>>,
}

/// A request bounded in time: a stalled answer counts as an error.
async fn get(pool: &Pool, path: &str, headers: &[(&str, &str)], body: bool) -> Option<Answer> {
    tokio::time::timeout(REQUEST_TIMEOUT, pool.get(path, headers, body))
        .await
        .ok()?
        .ok()
}

impl Load {
    async fn click(&self, n: u64, agent: usize) {
        let started = Instant::now();
        let agent = self.agents.agents[agent].as_str();
        let answer = get(
            &self.clicks,
            &self.click_path,
            &[("User-Agent", agent)],
            false,
        )
        .await;
        let Some(location) = answer.filter(|a| a.status == 302).and_then(|a| a.location) else {
            self.counters.click_errors.fetch_add(1, Relaxed);
            return;
        };
        self.counters.clicks.fetch_add(1, Relaxed);
        if let Ok(mut all) = self.redirect_ms.lock() {
            all.push(started.elapsed().as_secs_f32() * 1000.0);
        }
        if !n.is_multiple_of(self.convert_every) {
            return;
        }
        let hash = click_hash_of(&location);
        let path = format!(
            "{}?click={hash}&goal=sale&revenue=1.50&uid=pl-{n}",
            self.postback_path
        );
        match get(&self.postbacks, &path, &[], false).await {
            Some(a) if a.status == 200 => self.counters.postbacks.fetch_add(1, Relaxed),
            _ => self.counters.postback_errors.fetch_add(1, Relaxed),
        };
    }
}

fn main() -> anyhow::Result<()> {
    let threads = var_or("LOAD_THREADS", 1usize)?;
    // One thread by default: no work stealing, no wake-ups across threads.
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let rate: f64 = var_or("LOAD_RATE", 1000.0)?;
    let seconds: u64 = var_or("LOAD_SECONDS", 30)?;
    let max_in_flight: usize = var_or("LOAD_MAX_IN_FLIGHT", 512)?;
    let drain_seconds: u64 = var_or("LOAD_DRAIN_SECONDS", 120)?;
    anyhow::ensure!(
        rate > 0.0 && seconds > 0,
        "LOAD_RATE and LOAD_SECONDS must be > 0"
    );
    let (click_target, click_path) = parse_url(&var("LOAD_CLICK_URL")?)?;
    let (postback_target, postback_path) = parse_url(&var("LOAD_POSTBACK_URL")?)?;
    let load = Arc::new(Load {
        clicks: Pool::new(click_target),
        click_path,
        postbacks: Pool::new(postback_target),
        postback_path,
        convert_every: var_or("LOAD_CONVERT_EVERY", 20u64)?.max(1),
        agents: Agents::load(&std::env::var("LOAD_UA_FILE").unwrap_or_default())?,
        counters: Counters::default(),
        redirect_ms: Mutex::new(Vec::with_capacity((rate * seconds as f64) as usize)),
    });
    let (probe_target, probe_path) = parse_url(&var("LOAD_PROBE_URL")?)?;
    let (api_target, api_base) = parse_url(&var("LOAD_API_URL")?)?;
    let api_key = var("LOAD_API_KEY")?;
    let probe_flow = var("LOAD_PROBE_FLOW")?;
    let groups = groups(&var("LOAD_BROKERS")?, &var("LOAD_GROUPS")?)?;
    let start = Instant::now();
    let run_id = std::process::id();

    // Lag, every two seconds, on its own thread (the calls block), until told to stop
    // after the drain.
    let lag_log: Arc<Mutex<Vec<LagSample>>> = Arc::default();
    let stop_lag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lag_thread = {
        let (log, stop) = (lag_log.clone(), stop_lag.clone());
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                let t = start.elapsed().as_secs_f64();
                let now = lags(&groups);
                let shown: Vec<String> = now.iter().map(|(n, l)| format!("{n}={l}")).collect();
                println!("LAG {t:.1} {}", shown.join(" "));
                if let Ok(mut log) = log.lock() {
                    log.push((t, now));
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        })
    };

    // Probes: one click a second on the probe flow with its own sub_id; a poller asks the
    // reporting API for the probe flow's newest clicks until each probe is listed.
    let outstanding: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let probe_ms: Arc<Mutex<Vec<f64>>> = Arc::default();
    let probes_sent = Arc::new(AtomicU64::new(0));
    let prober = {
        let (outstanding, sent) = (outstanding.clone(), probes_sent.clone());
        let probes = Pool::new(probe_target);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            for n in 0..seconds {
                tick.tick().await;
                let path = format!("{probe_path}&sub_id=probe-{run_id}-{n}");
                let answer = get(&probes, &path, &[("User-Agent", CHROME)], false).await;
                let at = Instant::now();
                let Some(location) = answer.and_then(|a| a.location) else {
                    continue;
                };
                let hash = click_hash_of(&location);
                if !hash.is_empty() {
                    sent.fetch_add(1, Relaxed);
                    if let Ok(mut o) = outstanding.lock() {
                        o.insert(hash, at);
                    }
                }
            }
        })
    };
    let poller = {
        let (outstanding, probe_ms) = (outstanding.clone(), probe_ms.clone());
        let api = Pool::new(api_target);
        let path = format!(
            "{}/api/v1/clicks?flow={probe_flow}&limit=100",
            api_base.trim_end_matches('/')
        );
        let authorization = format!("Bearer {api_key}");
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if outstanding.lock().map(|o| o.is_empty()).unwrap_or(true) {
                    continue;
                }
                let headers = [("Authorization", authorization.as_str())];
                let Some(answer) = get(&api, &path, &headers, true).await else {
                    continue;
                };
                let body = String::from_utf8_lossy(&answer.body);
                let now = Instant::now();
                let Ok(mut o) = outstanding.lock() else {
                    continue;
                };
                o.retain(|hash, at| {
                    if body.contains(hash.as_str()) {
                        let ms = now.duration_since(*at).as_secs_f64() * 1000.0;
                        println!("PROBE {:.1} {ms:.0}", start.elapsed().as_secs_f64());
                        if let Ok(mut all) = probe_ms.lock() {
                            all.push(ms);
                        }
                        false
                    } else {
                        true
                    }
                });
            }
        })
    };

    // Per-second counts.
    let reporter = {
        let load = load.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = [0u64; 5];
            loop {
                tick.tick().await;
                let now = load.counters.snapshot();
                let d: Vec<String> = (0..5).map(|i| (now[i] - last[i]).to_string()).collect();
                println!("SEC {:.1} {}", start.elapsed().as_secs_f64(), d.join(" "));
                last = now;
            }
        })
    };

    // The paced clicks.
    let permits = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    let duration = Duration::from_secs(seconds);
    let mut issued: u64 = 0;
    let mut random: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(run_id);
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        let due = (rate * elapsed.as_secs_f64()) as u64;
        while issued < due {
            issued += 1;
            match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let load = load.clone();
                    let u = uniform(&mut random);
                    tokio::spawn(async move {
                        let agent = load.agents.pick(u);
                        load.click(issued, agent).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    load.counters.dropped.fetch_add(1, Relaxed);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let load_seconds = start.elapsed().as_secs_f64();
    // The clicks in flight finish (each is bounded by the client's timeout).
    let _ = permits.acquire_many(max_in_flight as u32).await;
    let sent_seconds = start.elapsed().as_secs_f64();
    reporter.abort();
    let _ = prober.await;

    // The drain: until every group has caught up (within a few messages a partition: a
    // transaction's commit marker takes an offset) and every probe is listed, or the
    // bound passes.
    let drain_start = Instant::now();
    let mut drained = None;
    while drain_start.elapsed() < Duration::from_secs(drain_seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let caught_up = lag_log
            .lock()
            .ok()
            .and_then(|log| {
                log.last()
                    .filter(|(t, _)| *t > sent_seconds)
                    .map(|(_, l)| l.iter().all(|(_, lag)| *lag <= 64))
            })
            .unwrap_or(false);
        let probes_done = outstanding.lock().map(|o| o.is_empty()).unwrap_or(true);
        if caught_up && probes_done {
            drained = Some(drain_start.elapsed().as_secs_f64());
            break;
        }
    }
    poller.abort();
    stop_lag.store(true, Relaxed);
    let _ = tokio::task::spawn_blocking(move || lag_thread.join()).await;

    let [clicks, postbacks, click_errors, postback_errors, dropped] = load.counters.snapshot();
    let mut redirect: Vec<f64> = load
        .redirect_ms
        .lock()
        .map(|v| v.iter().map(|&x| f64::from(x)).collect())
        .unwrap_or_default();
    redirect.sort_by(f64::total_cmp);
    let unlisted = outstanding.lock().map(|o| o.len()).unwrap_or(0);
    let mut probes: Vec<f64> = probe_ms.lock().map(|v| v.clone()).unwrap_or_default();
    let listed = probes.len();
    // A probe never listed counts as slower than any that was.
    probes.extend(std::iter::repeat_n(f64::INFINITY, unlisted));
    probes.sort_by(f64::total_cmp);
    // Lag during the load: the highest, and the median of the last three samples (the
    // sink commits every few seconds, so one sample alone is a sawtooth).
    let log = lag_log.lock().map(|l| l.clone()).unwrap_or_default();
    let during: Vec<&LagSample> = log.iter().filter(|(t, _)| *t <= sent_seconds).collect();
    let mut lag_fields = Vec::new();
    if let Some((_, first)) = during.first() {
        for (i, (name, _)) in first.iter().enumerate() {
            let series: Vec<i64> = during.iter().map(|(_, l)| l[i].1).collect();
            let max = series.iter().copied().max().unwrap_or(0);
            let mut tail: Vec<i64> = series.iter().rev().take(3).copied().collect();
            tail.sort_unstable();
            let end = tail[tail.len() / 2];
            lag_fields.push(format!("lag_max_{name}={max} lag_end_{name}={end}"));
        }
    }
    println!(
        "SUMMARY rate={rate} seconds={load_seconds:.1} clicks={clicks} clicks_per_s={:.1} \
         postbacks={postbacks} postbacks_per_s={:.1} click_errors={click_errors} \
         postback_errors={postback_errors} dropped={dropped} redirect_p50_ms={:.2} \
         redirect_p99_ms={:.2} probes={} probes_listed={} probes_unlisted={unlisted} \
         probe_p50_ms={:.0} probe_p95_ms={:.0} probe_max_ms={:.0} drain_s={} cpu_ticks={} {}",
        clicks as f64 / load_seconds,
        postbacks as f64 / load_seconds,
        percentile(&redirect, 50.0),
        percentile(&redirect, 99.0),
        probes_sent.load(Relaxed),
        listed,
        percentile(&probes, 50.0),
        percentile(&probes, 95.0),
        probe_ms
            .lock()
            .ok()
            .and_then(|v| v.iter().copied().reduce(f64::max))
            .unwrap_or(f64::NAN),
        drained.map_or("n/a".to_string(), |d| format!("{d:.1}")),
        own_cpu_ticks(),
        lag_fields.join(" "),
    );
    Ok(())
}

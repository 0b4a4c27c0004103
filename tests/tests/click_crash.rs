//! A crash of click-ingest loses no redirected click and counts none twice: 200,000
//! clicks sent as fast as a loopback client can while click-ingest is killed with SIGKILL
//! five times; at the end every click whose 302 the client received is in ClickHouse
//! `clicks` exactly once, no click hash is there twice, and `clicks_hourly` adds up to
//! the raw table. At that speed click-ingest sends clicks in batches (several to a Kafka
//! record), and the test checks that it did.
//!
//! In the same run every 25th redirected click converts: a postback with its click hash
//! (from the redirect's `Location`) and a transaction id of its own goes to the real
//! postback-ingest, attribution (itself killed once mid-run) and the sink carry it to
//! ClickHouse, and every postback answered 200 is exactly one conversion there, with its
//! transaction id and revenue, while `conversions_hourly` and
//! `conversions_hourly_currency` add up to the raw table. Postbacks for clicks redirected
//! in the second before a kill convert too: the click log replays their clicks, and a
//! click that never came would still convert, marked `click_missing` (both are counted).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::sync::{mpsc, Mutex};
use traffsure_tests::kafka_topic::publish_flow;
use traffsure_tests::{click_hash_of, eventually, kafka_brokers, Stack, StackOptions};

const CLICKS: usize = 200_000;
/// Concurrent loopback clients.
const CLIENTS: usize = 32;
const KILLS: usize = 5;
/// Every this many redirected clicks, one converts.
const CONVERT_EVERY: usize = 25;
/// Concurrent postback senders.
const POSTBACK_SENDERS: usize = 4;

/// A postback sent for a redirected click.
struct Sent {
    click_hash: String,
    uid: String,
    revenue_micros: i64,
    /// When its click was redirected.
    redirected_at: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_and_doubles_no_redirected_click() -> anyhow::Result<()> {
    let log_dir = std::env::temp_dir().join(format!(
        "traffsure-click-crash-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    let mut stack = Stack::start_with(
        StackOptions::default()
            .services(&[
                "click-ingest",
                "sink",
                "postback-ingest",
                "conversion-attribution",
            ])
            .env(
                "click-ingest",
                "TRAFFSURE__CLICK_LOG__PATH",
                log_dir.display().to_string(),
            )
            .env("sink", "TRAFFSURE__BATCH_INTERVAL_MS", "300")
            // A click the kills delayed longer than this converts as click_missing.
            .env(
                "conversion-attribution",
                "TRAFFSURE__HOLD_TIMEOUT_SECS",
                "60",
            ),
    )
    .await?;
    let result = tokio::time::timeout(Duration::from_secs(420), run(&mut stack))
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the crash test took over 420 s")));
    stack.print_failure(&result);
    drop(stack);
    let _ = std::fs::remove_dir_all(&log_dir);
    result
}

async fn run(stack: &mut Stack) -> anyhow::Result<()> {
    let slug = format!("crash-{}", stack.id);
    publish_flow(
        &kafka_brokers(),
        &format!("{}flows", stack.topic_prefix),
        1,
        json!({
            "name": "Crash",
            "slug": slug,
            "destination_url": "https://offer.example/?c={click}",
            "goals": [{"key": "sale", "payout": "1"}]
        }),
        None,
    )
    .await?;
    let track = Arc::new(stack.url("click-ingest", &format!("/c/{slug}?sub_id=crash")));
    eventually(Duration::from_secs(15), || async {
        Ok((stack.http.get(track.as_str()).send().await?.status() == 302).then_some(()))
    })
    .await?;

    // Every CONVERT_EVERY-th redirect goes to the postback senders.
    let (to_convert, conversions) = mpsc::unbounded_channel::<(String, usize, Instant)>();
    let conversions = Arc::new(Mutex::new(conversions));
    let mut senders = Vec::new();
    for _ in 0..POSTBACK_SENDERS {
        let http = stack.http.clone();
        let postback = stack.url("postback-ingest", "/postback");
        let conversions = conversions.clone();
        senders.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut refused = Vec::new();
            loop {
                let next = conversions.lock().await.recv().await;
                let Some((click_hash, n, redirected_at)) = next else {
                    break;
                };
                let sent = Sent {
                    uid: format!("tx-{n}"),
                    revenue_micros: (n / CONVERT_EVERY % 10 + 1) as i64 * 250_000,
                    click_hash,
                    redirected_at,
                };
                let query = format!(
                    "click={}&goal=sale&revenue={}&uid={}",
                    sent.click_hash,
                    sent.revenue_micros as f64 / 1e6,
                    sent.uid
                );
                match send_postback(&http, &postback, &query).await {
                    Ok(200) => accepted.push(sent),
                    Ok(status) => refused.push(format!("{query}: {status}")),
                    Err(error) => refused.push(format!("{query}: {error:#}")),
                }
            }
            (accepted, refused)
        }));
    }

    // Clients send until CLICKS redirects came back; a request the kill cut off is
    // simply sent again once the edge answers.
    let redirected = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let http = stack.http.clone();
        let track = track.clone();
        let redirected = redirected.clone();
        let to_convert = to_convert.clone();
        clients.push(tokio::spawn(async move {
            let mut hashes = Vec::new();
            let mut refused = 0usize;
            while redirected.load(Ordering::Relaxed) < CLICKS {
                let response = match http.get(track.as_str()).send().await {
                    Ok(response) => response,
                    Err(_) => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                if response.status() != 302 {
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let location = response.headers()["location"].to_str()?.to_string();
                let hash = click_hash_of(&location);
                let n = redirected.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(CONVERT_EVERY) {
                    to_convert.send((hash.clone(), n, Instant::now()))?;
                }
                hashes.push(hash);
            }
            anyhow::Ok((hashes, refused))
        }));
    }

    drop(to_convert);

    // Kill the edge at even steps of the load, and start it again at once; attribution
    // once, between the second and third kill of the edge.
    let mut kills = Vec::new();
    for kill in 1..=KILLS {
        let at = CLICKS * kill / (KILLS + 1);
        while redirected.load(Ordering::Relaxed) < at {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        kills.push(Instant::now());
        stack.kill("click-ingest").await?;
        stack.restart("click-ingest").await?;
        if kill == 2 {
            let at = CLICKS * 5 / (2 * (KILLS + 1));
            while redirected.load(Ordering::Relaxed) < at {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            stack.kill("conversion-attribution").await?;
            stack.restart("conversion-attribution").await?;
        }
    }
    let mut expected = Vec::with_capacity(CLICKS + CLIENTS);
    let mut refused = 0;
    for client in clients {
        let (hashes, r) = client.await??;
        expected.extend(hashes);
        refused += r;
    }
    let mut accepted = Vec::new();
    let mut postbacks_refused = Vec::new();
    for sender in senders {
        let (a, r) = sender.await?;
        accepted.extend(a);
        postbacks_refused.extend(r);
    }
    anyhow::ensure!(refused > 0, "no request was cut off by a kill");
    anyhow::ensure!(
        postbacks_refused.is_empty(),
        "{} postbacks not answered 200, first: {}",
        postbacks_refused.len(),
        postbacks_refused[0]
    );
    // The last start found clicks in doubt, some of which Kafka held already.
    let in_doubt = stack
        .metric("click-ingest", "traffsure_click_log_in_doubt")
        .await?;
    let skipped = stack
        .metric(
            "click-ingest",
            "traffsure_click_deliveries_total{result=\"skipped\"}",
        )
        .await?;
    assert!(in_doubt > 0.0, "the last kill left nothing in doubt");
    assert!(skipped > 0.0, "no click in doubt was found in kafka");
    let unique: std::collections::HashSet<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(
        unique.len(),
        expected.len(),
        "the edge gave one click hash twice"
    );

    // Every redirected click reaches ClickHouse; a click whose 302 the kill cut off may
    // be there too, once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let stored = stored_clicks(stack).await?;
        let missing = expected.iter().filter(|h| !stored.contains_key(*h)).count();
        if missing == 0 {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{missing} of {} redirected clicks missing from clicks",
            expected.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // A moment more, so a late duplicate would show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stored = stored_clicks(stack).await?;
    let doubled: Vec<&String> = stored
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(h, _)| h)
        .collect();
    let raw = stack
        .clickhouse("SELECT count(), uniqExact(click_hash) FROM clicks")
        .await?;
    let (count, uniq) = raw.split_once('\t').unwrap_or_default();
    assert!(
        doubled.is_empty(),
        "{} click hashes stored twice",
        doubled.len()
    );
    assert_eq!(count, uniq, "a click stored twice");
    assert_eq!(
        stack
            .clickhouse("SELECT sum(clicks) FROM clicks_hourly")
            .await?,
        count,
        "clicks_hourly against clicks"
    );
    // The clicks went to Kafka several to a record (a ClickBatch), the way under load:
    // rows sharing a Kafka position came in one record.
    let batched = stack
        .clickhouse(
            "SELECT count() FROM (SELECT kafka_partition, kafka_offset FROM clicks \
             GROUP BY kafka_partition, kafka_offset HAVING count() > 1)",
        )
        .await?;
    assert!(
        batched.parse::<u64>().unwrap_or_default() > 0,
        "no record of several clicks: the batches went untested"
    );
    eprintln!(
        "{} redirected clicks across {KILLS} kills, {} stored (the rest cut off before their 302) from {batched} records of several clicks and single ones, {refused} requests refused",
        expected.len(),
        count
    );
    conversions_add_up(stack, &accepted, &kills).await
}

/// Sends a postback, again while the answer is a connection error or a 5xx; the final
/// status.
async fn send_postback(http: &reqwest::Client, url: &str, query: &str) -> anyhow::Result<u16> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match http.get(format!("{url}?{query}")).send().await {
            Ok(response) if !response.status().is_server_error() => {
                return Ok(response.status().as_u16())
            }
            Ok(_) | Err(_) if attempts < 50 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(response) => return Ok(response.status().as_u16()),
            Err(error) => return Err(error.into()),
        }
    }
}

/// Every accepted postback is one conversion with its transaction id and revenue, none
/// is there twice, and the rollups equal the raw table.
async fn conversions_add_up(
    stack: &Stack,
    accepted: &[Sent],
    kills: &[Instant],
) -> anyhow::Result<()> {
    let expected_count = CLICKS / CONVERT_EVERY;
    anyhow::ensure!(
        accepted.len() >= expected_count,
        "{} postbacks accepted, {expected_count} expected",
        accepted.len()
    );
    eventually(Duration::from_secs(150), || async {
        let stored: usize = stack
            .clickhouse("SELECT uniqExact(click_hash) FROM conversions")
            .await?
            .parse()?;
        Ok((stored >= accepted.len()).then_some(()))
    })
    .await
    .with_context(|| {
        format!(
            "the {} accepted postbacks did not all become conversions",
            accepted.len()
        )
    })?;
    // A moment more, so a late duplicate would show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = stack
        .clickhouse(
            "SELECT click_hash, uid, revenue_micros, click_missing FROM conversions FORMAT TSV",
        )
        .await?;
    let mut stored: HashMap<String, Vec<(String, i64, bool)>> = HashMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let [hash, uid, revenue, missing, ..] = fields[..] else {
            anyhow::bail!("unexpected conversion row {line:?}");
        };
        stored.entry(hash.to_string()).or_default().push((
            uid.to_string(),
            revenue.parse()?,
            missing == "1",
        ));
    }
    let doubled = stored.values().filter(|rows| rows.len() > 1).count();
    anyhow::ensure!(doubled == 0, "{doubled} click hashes converted twice");
    let sent: HashSet<&str> = accepted.iter().map(|s| s.click_hash.as_str()).collect();
    let unasked = stored.keys().filter(|h| !sent.contains(h.as_str())).count();
    anyhow::ensure!(unasked == 0, "{unasked} conversions no postback asked for");
    let (mut missing, mut near_kill, mut near_kill_missing) = (0, 0, 0);
    let mut revenue = 0i64;
    for postback in accepted {
        let rows = stored
            .get(&postback.click_hash)
            .with_context(|| format!("postback {} made no conversion", postback.uid))?;
        let (uid, micros, click_missing) = &rows[0];
        anyhow::ensure!(
            (uid.as_str(), *micros) == (postback.uid.as_str(), postback.revenue_micros),
            "conversion of {} has uid {uid} and revenue {micros}",
            postback.uid
        );
        revenue += micros;
        missing += usize::from(*click_missing);
        let before_kill = kills.iter().any(|kill| {
            kill.checked_duration_since(postback.redirected_at)
                .is_some_and(|d| d <= Duration::from_secs(1))
        });
        near_kill += usize::from(before_kill);
        near_kill_missing += usize::from(before_kill && *click_missing);
    }
    let raw = stack
        .clickhouse("SELECT count(), sum(revenue_micros) FROM conversions FORMAT TSV")
        .await?;
    anyhow::ensure!(
        raw == format!("{}\t{revenue}", accepted.len()),
        "conversions hold {raw}, the accepted postbacks {} and {revenue}",
        accepted.len()
    );
    for rollup in ["conversions_hourly", "conversions_hourly_currency"] {
        let sums = stack
            .clickhouse(&format!(
                "SELECT sum(conversions), sum(revenue_micros) FROM {rollup} FORMAT TSV"
            ))
            .await?;
        anyhow::ensure!(sums == raw, "{rollup} holds {sums}, conversions {raw}");
    }
    let outcomes = stack
        .clickhouse(
            "SELECT outcome, uniqExact(postback_id) FROM postback_results GROUP BY outcome ORDER BY outcome FORMAT CSV",
        )
        .await?;
    eprintln!(
        "{} postbacks answered 200, {} conversions ({missing} click_missing), revenue {revenue} micros; \
         {near_kill} for clicks redirected in the second before a kill ({near_kill_missing} of them click_missing); \
         postback results by outcome: {}",
        accepted.len(),
        accepted.len(),
        outcomes.replace('\n', " ")
    );
    Ok(())
}

/// Rows of `clicks` by click hash.
async fn stored_clicks(stack: &Stack) -> anyhow::Result<HashMap<String, u64>> {
    let text = stack
        .clickhouse("SELECT click_hash, count() FROM clicks GROUP BY click_hash FORMAT TSV")
        .await?;
    Ok(text
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(hash, n)| (hash.to_string(), n.parse().unwrap_or(0)))
        .collect())
}

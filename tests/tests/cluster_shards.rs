//! The pipeline writing across two ClickHouse shards (`TRAFFSURE__CLICKHOUSE__SHARDS`) on
//! the local cluster stack (`deploy/local/cluster.sh`): cluster `traffsure_sharded`,
//! shard 1 of two replicas (servers 1 and 2) and shard 2 of one (server 3), three KRaft
//! brokers. A stream of tracking-link clicks and postbacks runs through the services
//! while shard 2's server is SIGKILLed during the sink's inserts and restarted later.
//!
//! Asserted: rows of Kafka partition `p` on shard `p mod 2` only, both shards holding
//! rows; every redirected click and accepted postback once across the shards (per shard,
//! and through the `Distributed` tables: `count()` equal to the distinct ids, before any
//! merge); each shard's rollups equal to its raw rows; the replicas of shard 1 equal;
//! the dashboard's counts equal to the raw rows of both shards; and reporting-api's own
//! writes (exchange rates, through the `Distributed` tables) stored on the first shard
//! and read back.
//!
//! A second test grows N from 1 to 2 under a stream of clicks, the sink SIGKILLed for
//! the change (a partition moved to the new shard finds its checkpoint on the old one),
//! and a third starts the sink with lists that do not match the cluster.
//!
//! The cluster stack starts once per test binary, and the tests run one at a time; run with `make test-cluster` (after
//! `cluster_faults`, never beside it: both break parts of the same stack).

use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::sync::{Mutex, OnceCell};
use traffsure_tests::{click_hash_of, eventually, Stack, StackOptions};

mod cluster_stack;
use cluster_stack::{
    after_next_insert, click, cluster, delete_topics, drop_database,
    stopped_with_uncommitted_clicks, stream, Sent, BROKERS,
};

/// The replicas of shard 1 (the services talk to the first), then shard 2's server.
const SHARD_1: [&str; 2] = ["http://127.0.0.1:18123", "http://127.0.0.1:18124"];
const SHARD_2: &str = "http://127.0.0.1:18125";
const SERVERS: [&str; 3] = [SHARD_1[0], SHARD_1[1], SHARD_2];
const CLUSTER: &str = "traffsure_sharded";
const STREAM: Duration = Duration::from_secs(24);
/// How long the stored rows may take to reach every server after the stream: a few
/// seconds on an idle machine, far more beside the single-node suite.
const SETTLE: Duration = Duration::from_secs(300);

static STARTED: OnceCell<()> = OnceCell::const_new();
/// The tests run one at a time: one kills a server the others use.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// What earlier runs of this binary left: topics, and their databases on every server
/// (a server's start loads, and watches in ZooKeeper, every replicated table left
/// behind). Only this binary's tests make databases on shard 2's server, so those are
/// the ones dropped; `cluster_faults` sweeps its own from shard 1.
async fn sweep() -> anyhow::Result<()> {
    delete_topics("test-").await?;
    let http = reqwest::Client::new();
    let listed = http
        .post(SHARD_2)
        .body("SELECT name FROM system.databases WHERE name LIKE 'test\\_%' FORMAT TSV")
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    for database in listed.lines() {
        for server in SERVERS {
            drop_database(&http, server, database).await?;
        }
    }
    Ok(())
}

/// Every part of the cluster stack running, what earlier runs left swept (once per
/// binary).
async fn running() -> anyhow::Result<()> {
    STARTED
        .get_or_try_init(|| async {
            cluster(&["start"]).await?;
            sweep().await
        })
        .await?;
    // A part an earlier test stopped and that failed to come back.
    cluster(&["start"]).await
}

/// `services` on cluster `traffsure_sharded` with `shards` as the list of shards.
fn options(services: &[&'static str], shards: &str) -> StackOptions {
    let mut options = StackOptions::default()
        .services(services)
        .env("*", "TRAFFSURE__CLICKHOUSE__CLUSTER", CLUSTER)
        .env("*", "TRAFFSURE__CLICKHOUSE__SHARDS", shards)
        .env("*", "TRAFFSURE__KAFKA__REPLICATION_FACTOR", "3");
    options.kafka_brokers = BROKERS.into();
    options.clickhouse_url = SHARD_1[0].into();
    options
}

/// The services on the two shards.
async fn start() -> anyhow::Result<Stack> {
    running().await?;
    let shards = format!("{},{SHARD_2}", SHARD_1[0]);
    Stack::start_with(options(
        &[
            "sink",
            "conversion-attribution",
            "click-ingest",
            "postback-ingest",
            "reporting-api",
        ],
        &shards,
    ))
    .await
}

/// A query's answer from one server, in the test's database, as numbers.
async fn numbers(stack: &Stack, server: &str, sql: &str) -> anyhow::Result<Vec<u64>> {
    let answer = stack.clickhouse_at(server, sql).await?;
    answer
        .split_whitespace()
        .map(|n| {
            n.parse()
                .with_context(|| format!("{server}: {sql}: {answer}"))
        })
        .collect()
}

/// Clicks, distinct clicks, conversions, distinct conversions of one server.
const TOTALS: &str = "SELECT \
    (SELECT count() FROM clicks), (SELECT uniqExact(click_hash) FROM clicks), \
    (SELECT count() FROM conversions), (SELECT uniqExact(conversion_id) FROM conversions)";

/// Every click and conversion once across the shards, each on its partition's shard,
/// each shard's rollups equal to its raw rows, the replicas of shard 1 equal, the
/// `Distributed` tables and the dashboard agreeing.
async fn exactly_once_across_shards(stack: &Stack, sent: &Sent) -> anyhow::Result<()> {
    let clicks = sent.clicks.len() as u64;
    let conversions = sent.conversions as u64;
    let unique: std::collections::HashSet<&String> = sent.clicks.iter().collect();
    assert_eq!(
        unique.len() as u64,
        clicks,
        "the edge gave two clicks one hash"
    );
    let settled = |one: &[u64], two: &[u64], other: &[u64]| {
        one == two
            && one[0] + other[0] == clicks
            && one[2] + other[2] == conversions
            && one[0] == one[1]
            && one[2] == one[3]
            && other[0] == other[1]
            && other[2] == other[3]
    };
    stack
        .eventually_running(SETTLE, || async {
            let one = numbers(stack, SHARD_1[0], TOTALS).await?;
            let two = numbers(stack, SHARD_1[1], TOTALS).await?;
            let other = numbers(stack, SHARD_2, TOTALS).await?;
            Ok(settled(&one, &two, &other).then_some(()))
        })
        .await
        .with_context(|| {
            format!(
            "expected {clicks} clicks and {conversions} conversions, each once, across the shards"
        )
        })?;
    // Settled: nothing arrives late or twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let one = numbers(stack, SHARD_1[0], TOTALS).await?;
    let two = numbers(stack, SHARD_1[1], TOTALS).await?;
    let other = numbers(stack, SHARD_2, TOTALS).await?;
    assert!(
        settled(&one, &two, &other),
        "shard 1 {one:?} (replica 2 {two:?}), shard 2 {other:?}: {clicks} clicks, {conversions} conversions"
    );
    println!("shard 1 {one:?}, shard 2 {other:?}: {clicks} clicks, {conversions} conversions");
    assert!(
        one[0] > 0 && other[0] > 0 && one[2] > 0 && other[2] > 0,
        "both shards hold clicks and conversions: shard 1 {one:?}, shard 2 {other:?}"
    );
    // Each partition's rows on shard `p mod 2`, and nowhere else.
    for (server, shard) in [(SHARD_1[0], 0), (SHARD_1[1], 0), (SHARD_2, 1)] {
        let misplaced = numbers(
            stack,
            server,
            &format!(
                "SELECT (SELECT count() FROM clicks WHERE kafka_partition % 2 != {shard}), \
                 (SELECT count() FROM conversions WHERE kafka_partition % 2 != {shard}), \
                 (SELECT uniqExact(kafka_partition) FROM clicks)"
            ),
        )
        .await?;
        assert_eq!(
            misplaced[..2],
            [0, 0],
            "{server}: rows of another shard's partitions"
        );
        assert!(misplaced[2] >= 1, "{server}: no partition's clicks");
    }
    // Each shard's rollups equal its raw rows.
    let rollups = "SELECT \
        (SELECT sum(clicks) FROM clicks_hourly), (SELECT count() FROM clicks), \
        (SELECT sum(conversions) FROM conversions_hourly), (SELECT count() FROM conversions), \
        (SELECT sum(revenue_micros) FROM conversions_hourly)";
    let mut by_hour = Vec::new();
    for server in SERVERS {
        let r = numbers(stack, server, rollups).await?;
        assert_eq!(
            r,
            [r[1], r[1], r[3], r[3], r[3] * 2_500_000],
            "{server}: rollups (clicks, raw clicks, conversions, raw conversions, revenue)"
        );
        by_hour.push(
            stack
                .clickhouse_at(
                    server,
                    "SELECT hour, flow_id, sum(clicks), uniqMerge(unique_clicks) \
                     FROM clicks_hourly GROUP BY hour, flow_id ORDER BY hour, flow_id",
                )
                .await?,
        );
    }
    assert_eq!(
        by_hour[0], by_hour[1],
        "the replicas of shard 1 report differently"
    );
    // Through the Distributed tables: the sum of the shards, every id once.
    let distributed = format!("{}_distributed", stack.database);
    let through = numbers(
        stack,
        SHARD_1[0],
        &format!(
            "SELECT (SELECT count() FROM {distributed}.clicks), \
             (SELECT uniqExact(click_hash) FROM {distributed}.clicks), \
             (SELECT count() FROM {distributed}.conversions), \
             (SELECT uniqExact(conversion_id) FROM {distributed}.conversions), \
             (SELECT sum(clicks) FROM {distributed}.clicks_hourly)"
        ),
    )
    .await?;
    assert_eq!(
        through,
        [clicks, clicks, conversions, conversions, clicks],
        "through the Distributed tables"
    );
    // The dashboard counts today (UTC) over both shards: the raw rows of today, read in
    // the same UTC day as the dashboard (a run across midnight compares the day asked in).
    let day = "SELECT toString(toDate(now(), 'UTC'))";
    let before = stack.clickhouse(day).await?;
    let dashboard = stack.dashboard().await?;
    let raw_today = numbers(
        stack,
        SHARD_1[0],
        &format!(
            "SELECT (SELECT count() FROM {distributed}.clicks WHERE toDate(ts, 'UTC') = '{before}'), \
             (SELECT count() FROM {distributed}.conversions WHERE toDate(created_at, 'UTC') = '{before}')"
        ),
    )
    .await?;
    if stack.clickhouse(day).await? == before {
        let today = |key: &str| dashboard[key].as_u64().unwrap_or_default();
        assert_eq!(
            [today("clicks_today"), today("conversions_today")],
            raw_today[..],
            "the dashboard's today against the raw rows of {before} on both shards: {dashboard}"
        );
    }
    Ok(())
}

/// reporting-api's own writes go through the `Distributed` tables to the first shard
/// (sharding key 0), where postback-dispatcher reads the rates through its own server,
/// and read back through the API.
async fn own_writes_on_the_first_shard(stack: &Stack) -> anyhow::Result<()> {
    let put = stack
        .api(reqwest::Method::PUT, "/api/v1/exchange-rates")
        .json(&json!({"day": "2026-01-15", "base": "EUR", "rates": {"USD": 1.25, "GBP": 0.85, "JPY": 160.0}}))
        .send()
        .await?;
    assert_eq!(put.status(), 200);
    assert_eq!(put.json::<serde_json::Value>().await?["stored"], 3);
    let listed: serde_json::Value = stack
        .api(
            reqwest::Method::GET,
            "/api/v1/exchange-rates?from=2026-01-15&to=2026-01-15&base=EUR",
        )
        .send()
        .await?
        .json()
        .await?;
    let rates: Vec<(String, f64)> = listed["rates"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["currency"].as_str().unwrap_or_default().to_string(),
                r["rate"].as_f64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        rates,
        [
            ("GBP".to_string(), 0.85),
            ("JPY".to_string(), 160.0),
            ("USD".to_string(), 1.25)
        ],
        "{listed}"
    );
    let on = |server| {
        numbers(
            stack,
            server,
            "SELECT count() FROM exchange_rates WHERE day = '2026-01-15'",
        )
    };
    assert_eq!(on(SHARD_1[0]).await?, [3], "the rates on the first shard");
    assert_eq!(on(SHARD_2).await?, [0], "the rates on shard 2");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_take_each_row_once_while_one_shard_is_killed_mid_insert() -> anyhow::Result<()>
{
    let _one = ONE_AT_A_TIME.lock().await;
    let began = std::time::Instant::now();
    let phase = |name: &str| println!("{name} after {:.0?}", began.elapsed());
    let stack = start().await?;
    phase("services started");
    let result = async {
        let slug = format!("shards-{}", stack.id);
        stack
            .create_flow(json!({
                "name": "Shards",
                "slug": slug,
                "destination_url": "https://offer.example/?c={click}",
                "goals": [{"key": "sale", "payout": "1"}]
            }))
            .await?;
        let killing = async {
            // Shard 2's server dies while the sink writes: right after its insert
            // counter moves, a few seconds into the stream.
            tokio::time::sleep(Duration::from_secs(6)).await;
            after_next_insert(&stack).await?;
            cluster(&["kill", "clickhouse3"]).await?;
            tokio::time::sleep(Duration::from_secs(10)).await;
            cluster(&["start", "clickhouse3"]).await
        };
        let (sent, killed) = tokio::join!(stream(&stack, &slug, STREAM), killing);
        killed?;
        let sent = sent?;
        phase("stream sent");
        exactly_once_across_shards(&stack, &sent).await?;
        let failed = stack
            .metric("sink", "traffsure_sink_insert_errors_total")
            .await?;
        assert!(
            failed >= 1.0,
            "no insert failed: the kill did not meet the sink's inserts"
        );
        own_writes_on_the_first_shard(&stack).await
    }
    .await;
    phase("checked");
    stack.print_failure(&result);
    // Whatever the test stopped runs again.
    cluster(&["start"]).await?;
    if result.is_ok() {
        let topics = stack.topic_prefix.clone();
        // The services stop first (SIGKILL, on drop); the databases stay for the next
        // run's sweep (dropping replicated tables takes ClickHouse 18.16 long).
        drop(stack);
        delete_topics(&topics).await?;
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_shards_that_does_not_match_the_cluster_stops_the_sink_naming_it(
) -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    running().await?;
    for (shards, expected) in [
        (
            format!("{},{}", SHARD_1[0], SHARD_1[1]),
            format!(
                "clickhouse.shards: entry 2 (\"{}\") is a server of shard [1] of cluster \"{CLUSTER}\", not of shard 2",
                SHARD_1[1]
            ),
        ),
        (
            SHARD_1[0].to_string(),
            format!("clickhouse.shards: cluster \"{CLUSTER}\" has 2 shards in remote_servers but 1 server(s) are listed"),
        ),
        (
            format!("{SHARD_2},{}", SHARD_1[0]),
            "clickhouse.shards: the first entry (\"http://127.0.0.1:18125\") must be clickhouse.url".to_string(),
        ),
    ] {
        // No backtrace: the message is the last lines of the log the error quotes.
        let refused = Stack::start_with(
            options(&["sink"], &shards)
                .env("sink", "RUST_BACKTRACE", "0")
                .env("sink", "RUST_LIB_BACKTRACE", "0"),
        )
        .await
            .err()
            .with_context(|| format!("the sink started with the shards {shards}"))?;
        let refused = format!("{refused:#}");
        assert!(
            refused.contains("exited") && refused.contains(&expected),
            "{shards}: expected {expected:?} in {refused}"
        );
    }
    Ok(())
}

/// Sends clicks through `track`, ten at a time, until `stop` is set; returns their hashes.
async fn clicks_until(
    stack: &Stack,
    track: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<Vec<String>> {
    let mut hashes = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let mut clicks = Vec::new();
        for _ in 0..10 {
            let (http, track) = (stack.http.clone(), track.to_string());
            clicks.push(tokio::spawn(async move { click(&http, &track).await }));
        }
        for click in clicks {
            hashes.push(click.await??);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(hashes)
}

/// N grows from 1 to 2 (cluster `traffsure`, then `traffsure_sharded` with server 3 as
/// shard 2) under a stream of clicks, the sink SIGKILLed for the change: the partitions
/// that move to shard 2 (1 and 3) find their checkpoints on shard 1, so the messages the
/// killed sink stored but whose offsets it had not committed are not written again on
/// shard 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_moved_to_a_new_shard_are_not_written_twice() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    running().await?;
    let mut one_shard = StackOptions::default()
        .services(&["sink", "click-ingest", "reporting-api"])
        .env("*", "TRAFFSURE__CLICKHOUSE__CLUSTER", "traffsure")
        .env("*", "TRAFFSURE__KAFKA__REPLICATION_FACTOR", "3");
    one_shard.kafka_brokers = BROKERS.into();
    one_shard.clickhouse_url = SHARD_1[0].into();
    let mut stack = Stack::start_with(one_shard).await?;
    let result = async {
        let slug = format!("moved-{}", stack.id);
        stack
            .create_flow(json!({
                "name": "Moved",
                "slug": slug,
                "destination_url": "https://offer.example/?c={click}",
            }))
            .await?;
        let track = stack.url("click-ingest", &format!("/c/{slug}?sub_id=s1"));
        let first = eventually(Duration::from_secs(30), || async {
            let response = stack.http.get(&track).send().await?;
            Ok((response.status() == 302).then_some(response))
        })
        .await?;
        let first = click_hash_of(first.headers()["location"].to_str()?);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let stream = clicks_until(&stack, &track, &stop);
        let change = async {
            tokio::time::sleep(Duration::from_secs(8)).await;
            // Stopped right after an insert whose offsets are not committed yet, so the
            // restart below kills it with rows to read again.
            stopped_with_uncommitted_clicks(&stack, SHARD_1[0]).await
        };
        let (hashes, changed) = tokio::join!(stream, async {
            let changed = change.await;
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            changed
        });
        changed?;
        let mut sent = hashes?;
        sent.push(first);
        // Two shards from here: the sink killed and started on them.
        let shards = format!("{},{SHARD_2}", SHARD_1[0]);
        stack.options = options(&["sink", "click-ingest", "reporting-api"], &shards);
        stack.restart("sink").await?;
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (more, _) = tokio::join!(clicks_until(&stack, &track, &stop), async {
            tokio::time::sleep(Duration::from_secs(8)).await;
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        sent.extend(more?);
        let replays = stack
            .metric(
                "sink",
                "traffsure_sink_messages_total{outcome=\"already_stored\",table=\"clicks\"}",
            )
            .await?;
        anyhow::Ok((sent, replays))
    }
    .await;
    stack.print_failure(&result);
    let (sent, replays) = result?;
    // Every click the edge redirected once across the two shards.
    let expected = sent.len() as u64;
    stack
        .eventually_running(SETTLE, || async {
            let one = numbers(&stack, SHARD_1[0], "SELECT count() FROM clicks").await?;
            let other = numbers(&stack, SHARD_2, "SELECT count() FROM clicks").await?;
            Ok((one[0] + other[0] >= expected).then_some(()))
        })
        .await
        .with_context(|| format!("{expected} clicks across the shards"))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut all = Vec::new();
    for server in [SHARD_1[0], SHARD_2] {
        let hashes = stack
            .clickhouse_at(server, "SELECT click_hash FROM clicks")
            .await?;
        all.extend(hashes.lines().map(str::to_string));
    }
    let distinct: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!(
        (all.len() as u64, distinct.len() as u64),
        (expected, expected),
        "clicks stored across the shards, distinct"
    );
    assert!(
        sent.iter().all(|h| distinct.contains(h)),
        "a redirected click is missing"
    );
    // Shard 2 holds rows of partitions 1 and 3 only, all after what shard 1 holds of them.
    let on_two = numbers(
        &stack,
        SHARD_2,
        "SELECT count(), countIf(kafka_partition % 2 = 0) FROM clicks",
    )
    .await?;
    assert!(on_two[0] > 0 && on_two[1] == 0, "shard 2: {on_two:?}");
    for partition in [1, 3] {
        let last_on_one = stack
            .clickhouse_at(
                SHARD_1[0],
                &format!(
                    "SELECT max(kafka_offset) FROM clicks WHERE kafka_partition = {partition}"
                ),
            )
            .await?;
        let first_on_two = stack
            .clickhouse_at(
                SHARD_2,
                &format!(
                    "SELECT min(kafka_offset) FROM clicks WHERE kafka_partition = {partition}"
                ),
            )
            .await?;
        let (last, first): (u64, u64) = (last_on_one.parse()?, first_on_two.parse()?);
        assert!(
            first > last,
            "partition {partition}: shard 2 from offset {first}, shard 1 up to {last}"
        );
    }
    // Each shard's rollup equals its raw rows.
    for server in [SHARD_1[0], SHARD_2] {
        let r = numbers(
            &stack,
            server,
            "SELECT (SELECT sum(clicks) FROM clicks_hourly), (SELECT count() FROM clicks)",
        )
        .await?;
        assert_eq!(r[0], r[1], "{server}: clicks_hourly against the raw rows");
    }
    println!("{expected} clicks; the restarted sink skipped {replays} replayed clicks");
    assert!(
        replays >= 1.0,
        "the killed sink left no stored-but-uncommitted clicks to replay: nothing shown"
    );
    let topics = stack.topic_prefix.clone();
    drop(stack);
    delete_topics(&topics).await
}

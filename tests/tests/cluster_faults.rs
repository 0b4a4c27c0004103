//! The pipeline on the local cluster stack (`deploy/local/cluster.sh`: three KRaft
//! brokers with replication factor 3 and `min.insync.replicas=2`, ClickHouse cluster
//! `traffsure` of two replicas coordinated by ZooKeeper: the stack's first shard alone,
//! as the second shard's server takes part in `traffsure_sharded` only, which
//! `cluster_shards` tests), each test under a stream of
//! tracking-link clicks and postbacks while one part of it fails:
//! - the broker leading partition 0 of `clicks` is SIGKILLed, and restarted later;
//! - the ClickHouse replica the sink writes to is SIGKILLed, and restarted later;
//! - ZooKeeper is stopped for 20 s (the replicated tables turn read-only).
//!
//! - an INSERT is cut between its raw part and its rollups' parts (a view that fails on
//!   one click), as a server killed or ZooKeeper lost mid-insert cuts one.
//!
//! Each asserts the exact totals on both replicas: every redirected click and every
//! accepted postback stored once, the same answers from each replica and through the
//! `Distributed` tables, and the rollups and the dashboard's counts equal to the raw rows
//! (the sink completes the views of an insert cut between its parts: docs/cluster.md).
//! The waits are generous but bounded, for a machine running the single-node suite
//! beside these tests.
//! The cluster stack starts once per test binary (the first test to need it), and the
//! tests run one at a time, as each breaks a part all of them use.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::json;
use tokio::sync::{Mutex, OnceCell};
use traffsure_tests::{click_hash_of, eventually, Stack, StackOptions};

mod cluster_stack;
use cluster_stack::{
    after_next_insert, cluster, cluster_sh, delete_topics, drop_database, stream, Sent, BROKERS,
};

/// The replica the services talk to, then the other one.
const REPLICAS: [&str; 2] = ["http://127.0.0.1:18123", "http://127.0.0.1:18124"];
const CLUSTER: &str = "traffsure";
const STREAM: Duration = Duration::from_secs(30);
/// How long the stored rows may take to reach both replicas after the stream: on an idle
/// machine a few seconds, beside the whole single-node suite far more.
const SETTLE: Duration = Duration::from_secs(300);

static STARTED: OnceCell<()> = OnceCell::const_new();
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// The services of a test on the cluster stack, once every part of it runs.
async fn start() -> anyhow::Result<Stack> {
    STARTED
        .get_or_try_init(|| async {
            cluster(&["start"]).await?;
            sweep().await
        })
        .await?;
    // A part an earlier test stopped and that failed to come back.
    cluster(&["start"]).await?;
    let mut options = StackOptions::default()
        .services(&[
            "sink",
            "conversion-attribution",
            "click-ingest",
            "postback-ingest",
            "reporting-api",
        ])
        .env("*", "TRAFFSURE__CLICKHOUSE__CLUSTER", CLUSTER)
        .env("*", "TRAFFSURE__KAFKA__REPLICATION_FACTOR", "3");
    options.kafka_brokers = BROKERS.into();
    options.clickhouse_url = REPLICAS[0].into();
    Stack::start_with(options).await
}

/// Runs the stream, calling `fault` once it is a few seconds in; returns what it sent.
async fn under_load<F, Fut>(stack: &Stack, fault: F) -> anyhow::Result<Sent>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let slug = format!("cluster-{}", stack.id);
    stack
        .create_flow(json!({
            "name": "Cluster",
            "slug": slug,
            "destination_url": "https://offer.example/?c={click}",
            "goals": [{"key": "sale", "payout": "1"}]
        }))
        .await?;
    let streaming = stream(stack, &slug, STREAM);
    let failing = async {
        tokio::time::sleep(Duration::from_secs(8)).await;
        fault().await
    };
    let (sent, failed) = tokio::join!(streaming, failing);
    failed?;
    sent
}

/// A query's answer from one replica, in the test's database.
async fn on_replica(stack: &Stack, replica: &str, sql: &str) -> anyhow::Result<String> {
    stack.clickhouse_at(replica, sql).await
}

/// Every click and conversion once on both replicas, the rollups equal to the raw rows,
/// the distributed tables and the dashboard agreeing.
async fn exactly_once(stack: &Stack, sent: &Sent) -> anyhow::Result<()> {
    let clicks = sent.clicks.len();
    let conversions = sent.conversions;
    let unique: std::collections::HashSet<&String> = sent.clicks.iter().collect();
    assert_eq!(unique.len(), clicks, "the edge gave two clicks one hash");
    let raw = format!("{clicks}\t{clicks}\t{conversions}\t{conversions}");
    let totals = "SELECT \
        (SELECT count() FROM clicks), (SELECT uniqExact(click_hash) FROM clicks), \
        (SELECT count() FROM conversions), (SELECT uniqExact(conversion_id) FROM conversions)";
    for replica in REPLICAS {
        stack
            .eventually_running(SETTLE, || async {
                Ok((on_replica(stack, replica, totals).await? == raw).then_some(()))
            })
            .await
            .with_context(|| {
                format!(
                "{replica}: expected clicks, unique clicks, conversions, unique conversions {raw}"
            )
            })?;
    }
    // Settled: nothing arrives late or twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rollups = "SELECT \
        (SELECT sum(clicks) FROM clicks_hourly), (SELECT count() FROM clicks), \
        (SELECT sum(conversions) FROM conversions_hourly), (SELECT count() FROM conversions), \
        (SELECT toString(sum(revenue_micros)) FROM conversions_hourly)";
    let expected = format!(
        "{clicks}\t{clicks}\t{conversions}\t{conversions}\t{}",
        conversions as u64 * 2_500_000
    );
    let mut answers = Vec::new();
    for replica in REPLICAS {
        assert_eq!(on_replica(stack, replica, totals).await?, raw, "{replica}");
        let answer = on_replica(stack, replica, rollups).await?;
        assert_eq!(answer, expected, "{replica}: rollups and raw rows");
        let by_hour = on_replica(
            stack,
            replica,
            "SELECT hour, flow_id, sum(clicks), uniqMerge(unique_clicks) FROM clicks_hourly \
             GROUP BY hour, flow_id ORDER BY hour, flow_id",
        )
        .await?;
        answers.push(by_hour);
    }
    assert_eq!(answers[0], answers[1], "the replicas' reports differ");
    let distributed = format!("{}_distributed", stack.database);
    let through_distributed = stack
        .clickhouse(&format!(
            "SELECT (SELECT count() FROM {distributed}.clicks), \
             (SELECT count() FROM {distributed}.conversions)"
        ))
        .await?;
    assert_eq!(through_distributed, format!("{clicks}\t{conversions}"));
    // The dashboard counts today (UTC): the raw rows of today, read in the same UTC day
    // as the dashboard (a run across midnight compares the day it was asked in).
    let day = "SELECT toString(toDate(now(), 'UTC'))";
    let before = stack.clickhouse(day).await?;
    let dashboard = stack.dashboard().await?;
    let raw_today = stack
        .clickhouse(&format!(
            "SELECT (SELECT count() FROM clicks WHERE toDate(ts, 'UTC') = '{before}'), \
             (SELECT count() FROM conversions WHERE toDate(created_at, 'UTC') = '{before}')"
        ))
        .await?;
    if stack.clickhouse(day).await? == before {
        let today = |key: &str| dashboard[key].as_u64().unwrap_or_default();
        assert_eq!(
            format!("{}\t{}", today("clicks_today"), today("conversions_today")),
            raw_today,
            "the dashboard's today against the raw rows of {before}: {dashboard}"
        );
    }
    Ok(())
}

/// `leader_of`, off the runtime's threads (a metadata request may block for seconds).
async fn leader(topic: &str) -> anyhow::Result<i32> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || leader_of(&topic)).await?
}

/// The id of the broker leading partition 0 of `topic`.
fn leader_of(topic: &str) -> anyhow::Result<i32> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partition = metadata
        .topics()
        .first()
        .and_then(|t| t.partitions().iter().find(|p| p.id() == 0))
        .with_context(|| format!("no partition 0 of {topic}"))?;
    Ok(partition.leader())
}

async fn test<F, Fut>(fault: F) -> anyhow::Result<()>
where
    F: FnOnce(Arc<Stack>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let _one = ONE_AT_A_TIME.lock().await;
    let began = std::time::Instant::now();
    let phase = |name: &str| println!("{name} after {:.0?}", began.elapsed());
    let stack = Arc::new(start().await?);
    phase("services started");
    let result = async {
        let faulted = stack.clone();
        let sent = under_load(&stack, || fault(faulted)).await?;
        phase("stream sent");
        exactly_once(&stack, &sent).await
    }
    .await;
    phase("checked");
    stack.print_failure(&result);
    // Whatever the test stopped runs again for the next one.
    cluster(&["start"]).await?;
    if result.is_ok() {
        let topics = stack.topic_prefix.clone();
        // The services stop first (SIGKILL, on drop).
        drop(stack);
        forget(&topics).await?;
    }
    phase("done");
    result
}

/// What earlier runs left on the cluster stack (every test's databases, a failed test's
/// topics too, kept for a look): gone before this run's first test. Every replicated
/// table left behind is loaded, and watched in ZooKeeper, by each start of a replica.
async fn sweep() -> anyhow::Result<()> {
    delete_topics("test-").await?;
    let http = reqwest::Client::new();
    for replica in REPLICAS {
        let listed = http
            .post(replica)
            .body("SELECT name FROM system.databases WHERE name LIKE 'test\\_%' FORMAT TSV")
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        for database in listed.lines().filter(|d| !d.ends_with("_distributed")) {
            forget_on(&http, replica, database).await?;
        }
    }
    Ok(())
}

async fn forget_on(http: &reqwest::Client, replica: &str, database: &str) -> anyhow::Result<()> {
    for database in [database.to_string(), format!("{database}_distributed")] {
        drop_database(http, replica, &database).await?;
    }
    Ok(())
}

/// Deletes a passed test's topics from the cluster's brokers. Its databases stay until
/// the next run's `sweep`: dropping a test's replicated tables on both replicas took
/// ClickHouse 18.16 most of a minute, and a few tests' tables do not slow a replica.
async fn forget(topics: &str) -> anyhow::Result<()> {
    delete_topics(topics).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clicks_leader_broker_killed_mid_stream_loses_and_repeats_nothing() -> anyhow::Result<()>
{
    test(|stack| async move {
        let topic = format!("{}clicks", stack.topic_prefix);
        let leader = leader(&topic).await?;
        let broker: &'static str = match leader {
            1 => "kafka1",
            2 => "kafka2",
            3 => "kafka3",
            other => bail!("unexpected leader {other} of {topic}"),
        };
        cluster_kill(broker).await?;
        // The controllers move the leadership once the broker's session expires (9 s),
        // later on a loaded machine (12 s were not enough at a load average of 50).
        let started = tokio::time::Instant::now();
        eventually(Duration::from_secs(90), || async {
            Ok((self::leader(&topic).await? != leader).then_some(()))
        })
        .await
        .context("partition 0 of clicks kept its dead leader")?;
        // Down for a while after the move: the stream goes on without it.
        tokio::time::sleep_until(started + Duration::from_secs(12)).await;
        cluster_start(broker).await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_written_clickhouse_replica_killed_mid_insert_loses_and_repeats_nothing(
) -> anyhow::Result<()> {
    test(|stack| async move {
        // Kill it while the sink writes: right after its insert counter moves.
        after_next_insert(&stack).await?;
        cluster_kill("clickhouse1").await?;
        tokio::time::sleep(Duration::from_secs(10)).await;
        cluster_start("clickhouse1").await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_stopped_for_twenty_seconds_loses_and_repeats_nothing() -> anyhow::Result<()> {
    test(|_stack| async move {
        cluster(&["stop", "zookeeper"]).await?;
        tokio::time::sleep(Duration::from_secs(20)).await;
        cluster_start("zookeeper").await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_cut_between_its_rollups_gets_them_completed() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let stack = start().await?;
    let result = async {
        // A view that fails on one click, named to run after the checkpoint's view and
        // before the hourly rollups' (a table's views run in name order): the INSERT
        // holding that click stores the raw rows and the checkpoint, not the rollups,
        // and answers an error, as a server killed between those parts would.
        for sql in [
            "CREATE TABLE cut_views (x UInt8) ENGINE = Null",
            "CREATE MATERIALIZED VIEW clicks_cut_mv TO cut_views AS \
             SELECT throwIf(sub_id = 'cut') AS x FROM clicks",
        ] {
            on_replica(&stack, REPLICAS[0], sql).await?;
        }
        let slug = format!("cut-{}", stack.id);
        stack
            .create_flow(json!({
                "name": "Cut",
                "slug": slug,
                "destination_url": "https://offer.example/?c={click}",
                "goals": [{"key": "sale", "payout": "1"}]
            }))
            .await?;
        let mut sent = Sent::default();
        for sub_id in std::iter::repeat_n("s1", 30)
            .chain(["cut"])
            .chain(std::iter::repeat_n("s2", 30))
        {
            let track = stack.url("click-ingest", &format!("/c/{slug}?sub_id={sub_id}"));
            let response = eventually(Duration::from_secs(30), || async {
                let response = stack.http.get(&track).send().await?;
                Ok((response.status() == 302).then_some(response))
            })
            .await?;
            sent.clicks
                .push(click_hash_of(response.headers()["location"].to_str()?));
        }
        exactly_once(&stack, &sent).await?;
        let repaired = stack
            .metric(
                "sink",
                "traffsure_sink_view_repairs_total{result=\"repaired\",table=\"clicks\"",
            )
            .await?;
        assert!(
            repaired >= 1.0,
            "the cut insert's rollups were not repaired"
        );
        anyhow::Ok(())
    }
    .await;
    stack.print_failure(&result);
    if result.is_ok() {
        let topics = stack.topic_prefix.clone();
        // The services stop first (SIGKILL, on drop).
        drop(stack);
        forget(&topics).await?;
    }
    result
}

async fn cluster_kill(component: &'static str) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || cluster_sh(&["kill", component])).await?
}

async fn cluster_start(component: &'static str) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || cluster_sh(&["start", component])).await?
}

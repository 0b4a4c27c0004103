//! What the fault tests on the local cluster stack (`deploy/local/cluster.sh`) share:
//! running the script, deleting a run's topics from the cluster's brokers, and the stream
//! of clicks and postbacks every test sends through the services.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use traffsure_tests::{click_hash_of, eventually, Stack};

/// The cluster stack's three brokers.
pub const BROKERS: &str = "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094";
/// Clicks a second the stream sends, and every how many clicks one converts.
pub const CLICKS_PER_SECOND: usize = 100;
pub const CONVERTING_EVERY: usize = 20;

/// Runs `deploy/local/cluster.sh` with `args`; its output is the error when it fails.
pub fn cluster_sh(args: &[&str]) -> anyhow::Result<()> {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/cluster.sh");
    let output = Command::new(&script)
        .args(args)
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "cluster.sh {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// [`cluster_sh`] off the async runtime's threads.
pub async fn cluster(args: &'static [&'static str]) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || cluster_sh(args)).await?
}

/// Deletes the topics named `test-…` (every test's prefix) that start with `prefix` from
/// the cluster's brokers. The harness deletes a stack's topics from the shared broker
/// only; left on the cluster, thousands of partitions made a killed broker's restart (log
/// recovery) take minutes.
pub async fn delete_topics(prefix: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;

    let prefix = prefix.to_string();
    let topics = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", BROKERS)
            .create()?;
        let metadata = consumer.fetch_metadata(None, Duration::from_secs(30))?;
        Ok(metadata
            .topics()
            .iter()
            .map(|t| t.name().to_string())
            .filter(|name| name.starts_with("test-") && name.starts_with(&prefix))
            .collect())
    })
    .await??;
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create()?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for chunk in names.chunks(100) {
        admin.delete_topics(chunk, &options).await?;
    }
    Ok(())
}

/// What the stream got: the click hash of every redirect, the accepted postbacks.
#[derive(Default)]
pub struct Sent {
    pub clicks: Vec<String>,
    pub conversions: usize,
}

/// Sends `CLICKS_PER_SECOND` clicks a second through the tracking link for `length`,
/// every `CONVERTING_EVERY`th followed by a postback; each click must be redirected and
/// each postback accepted, whatever fails behind the edges.
pub async fn stream(stack: &Stack, slug: &str, length: Duration) -> anyhow::Result<Sent> {
    let track = stack.url("click-ingest", &format!("/c/{slug}?sub_id=s1"));
    let http = stack.http.clone();
    let first = eventually(Duration::from_secs(30), || async {
        let response = http.get(&track).send().await?;
        Ok((response.status() == 302).then_some(response))
    })
    .await?;
    let mut sent = Sent {
        clicks: vec![click_hash_of(first.headers()["location"].to_str()?)],
        conversions: 0,
    };
    let started = tokio::time::Instant::now();
    let ticks = length.as_secs() as usize * 10;
    for tick in 0..ticks {
        tokio::time::sleep_until(started + Duration::from_millis(100 * tick as u64)).await;
        let mut clicks = Vec::new();
        for _ in 0..CLICKS_PER_SECOND / 10 {
            let http = http.clone();
            let track = track.clone();
            clicks.push(tokio::spawn(async move { click(&http, &track).await }));
        }
        for click in clicks {
            let hash = click.await??;
            sent.clicks.push(hash.clone());
            if sent.clicks.len().is_multiple_of(CONVERTING_EVERY) {
                let url = stack.url(
                    "postback-ingest",
                    &format!("/postback?click={hash}&goal=sale&revenue=2.5"),
                );
                let response = http.get(url).send().await?;
                let status = response.status();
                let body: serde_json::Value = response.json().await?;
                if status != 200 || body["code"] != "accepted" {
                    bail!("postback answered {status}: {body}");
                }
                sent.conversions += 1;
            }
        }
    }
    Ok(sent)
}

/// Returns right after the sink's next insert (its inserted-rows counter moved): a fault
/// then meets the sink writing, and the offsets of that insert are likely stored but not
/// yet committed. The counter is read every 20 ms, not at `eventually`'s pace: the
/// offsets are committed within a second of the insert (`auto.commit.interval.ms`), so
/// every millisecond between the insert and the fault makes a committed insert likelier.
pub async fn after_next_insert(stack: &Stack) -> anyhow::Result<()> {
    let rows = "traffsure_sink_rows_inserted_total";
    let before = stack.metric("sink", rows).await?;
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(30).mul_f64(traffsure_tests::timeout_scale());
    loop {
        // A failed read is tried again, as `eventually` would.
        let read = stack.metric("sink", rows).await;
        if read.as_ref().is_ok_and(|now| *now > before) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the sink inserted nothing within 30 s (last read: {read:?})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for an insert of the sink after which some stored click rows are not yet
/// committed in its consumer group, and leaves the sink stopped there (SIGSTOP): a kill
/// now must make the restarted sink read those rows' events again. After each insert the
/// sink is stopped, given 300 ms for a commit already sent to land, and the group's
/// committed offsets of `clicks` are compared with the highest offset `server` holds of
/// each partition; when every stored row is committed already it runs on to the next
/// insert (up to 20 times).
#[allow(dead_code)] // cluster_shards' only; the module is shared with cluster_faults
pub async fn stopped_with_uncommitted_clicks(stack: &Stack, server: &str) -> anyhow::Result<()> {
    for _ in 0..20 {
        after_next_insert(stack).await?;
        stack.signal("sink", "STOP")?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let committed = committed_offsets(
            format!("sink-{}", stack.id),
            format!("{}clicks", stack.topic_prefix),
        )
        .await?;
        let stored = stack
            .clickhouse_at(
                server,
                "SELECT kafka_partition, max(kafka_offset) FROM clicks GROUP BY kafka_partition",
            )
            .await?;
        for line in stored.lines() {
            let (partition, offset) = line
                .split_once('\t')
                .with_context(|| format!("stored offsets: {stored:?}"))?;
            let (partition, offset): (i32, i64) = (partition.parse()?, offset.parse()?);
            // The committed offset is the next one to read: a row at or past it is
            // stored but not committed. A partition never committed has none.
            if committed.get(&partition).is_none_or(|next| offset >= *next) {
                return Ok(());
            }
        }
        stack.signal("sink", "CONT")?;
    }
    bail!("after 20 inserts every stored click was committed already")
}

/// The offsets `group` has committed for each partition of `topic` on the cluster.
async fn committed_offsets(
    group: String,
    topic: String,
) -> anyhow::Result<std::collections::HashMap<i32, i64>> {
    tokio::task::spawn_blocking(move || {
        // Reads the group's offsets without joining it: nothing is subscribed or committed.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", BROKERS)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(30))?;
        let mut partitions = rdkafka::TopicPartitionList::new();
        for topic in metadata.topics() {
            for partition in topic.partitions() {
                partitions.add_partition(topic.name(), partition.id());
            }
        }
        let committed = consumer.committed_offsets(partitions, Duration::from_secs(30))?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                rdkafka::Offset::Offset(next) => Some((e.partition(), next)),
                _ => None,
            })
            .collect())
    })
    .await?
}

/// One tracking-link click that must be redirected: the click hash its `Location` carries.
pub async fn click(http: &reqwest::Client, track: &str) -> anyhow::Result<String> {
    let response = http.get(track).send().await?;
    if response.status() != 302 {
        bail!("click answered {}", response.status());
    }
    Ok(click_hash_of(response.headers()["location"].to_str()?))
}

/// Drops `database` on `server` (an HTTP URL of one ClickHouse server).
pub async fn drop_database(
    http: &reqwest::Client,
    server: &str,
    database: &str,
) -> anyhow::Result<()> {
    let response = http
        .post(server)
        .body(format!("DROP DATABASE IF EXISTS {database}"))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("drop {database} on {server}: {}", response.text().await?);
    }
    Ok(())
}

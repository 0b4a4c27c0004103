//! The `clicks` topic is deleted and recreated under the sink while ClickHouse keeps the
//! rows of the old one: the sink recognises the new topic and stores every one of its
//! messages once, whether the new topic grew past the old checkpoint or holds fewer
//! messages. A topic whose start retention removed is the same topic, and its checkpoint
//! stands.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use traffsure_events::Click;
use traffsure_tests::produce::Producer;
use traffsure_tests::{eventually, Stack, StackOptions};

const PARTITIONS: i32 = 4;

fn clicks(prefix: &str, count: u64) -> Vec<(u16, Click)> {
    (0..count)
        .map(|i| {
            (
                (i * 7 % 4_096) as u16,
                Click {
                    click_hash: format!("{prefix}{i:05}"),
                    flow_id: 1 + (i % 3) as u32,
                    ts_ms: 1_772_360_100_000 + i as i64,
                    visitor_id: format!("v{i}"),
                    country: "US".into(),
                    ..Click::default()
                },
            )
        })
        .collect()
}

fn admin(stack: &Stack) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", &stack.options.kafka_brokers)
        .create()?)
}

/// Deletes `topic` and creates it again, empty, with the same partition count.
async fn recreate(stack: &Stack, topic: &str) -> anyhow::Result<()> {
    let admin = admin(stack)?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.delete_topics(&[topic], &options).await? {
        result.map_err(|(t, code)| anyhow::anyhow!("delete {t}: {code}"))?;
    }
    // Deletion finishes in the background: creating fails until it has.
    eventually(Duration::from_secs(60), || async {
        let new = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1));
        match admin.create_topics(&[new], &options).await?.remove(0) {
            Ok(_) => Ok(Some(())),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => Ok(None),
            Err((t, code)) => anyhow::bail!("create {t}: {code}"),
        }
    })
    .await
}

/// Per Kafka partition, the highest offset of the stored clicks whose hash starts with
/// `prefix`.
async fn max_offsets(stack: &Stack, prefix: &str) -> anyhow::Result<BTreeMap<u16, u64>> {
    let text = stack
        .clickhouse(&format!(
            "SELECT kafka_partition, max(kafka_offset) FROM clicks WHERE click_hash LIKE '{prefix}%' GROUP BY kafka_partition ORDER BY kafka_partition"
        ))
        .await?;
    text.lines()
        .map(|line| {
            let (p, o) = line.split_once('\t').unwrap_or_default();
            Ok((p.parse()?, o.parse()?))
        })
        .collect()
}

async fn wait_for_count(stack: &Stack, expected: u64) -> anyhow::Result<()> {
    eventually(Duration::from_secs(90), || async {
        let count: u64 = stack
            .clickhouse("SELECT count() FROM clicks")
            .await?
            .parse()?;
        Ok((count >= expected).then_some(()))
    })
    .await
}

/// Writes `count` clicks named `prefix…` to the stopped sink's topic, starts the sink and
/// waits until the table holds `total` clicks, then stops it again.
async fn store(
    stack: &mut Stack,
    topic: &str,
    prefix: &str,
    count: u64,
    total: u64,
) -> anyhow::Result<()> {
    Producer::new(stack)?
        .send(topic, &clicks(prefix, count))
        .await?;
    stack.restart("sink").await?;
    wait_for_count(stack, total).await?;
    stack.terminate("sink").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_topic_is_stored_in_full_and_a_truncated_one_is_not_replayed(
) -> anyhow::Result<()> {
    let mut stack = Stack::start_with(StackOptions::default().services(&["sink"])).await?;
    let result = run(&mut stack).await;
    stack.print_failure(&result);
    result
}

async fn run(stack: &mut Stack) -> anyhow::Result<()> {
    let topic = Producer::new(stack)?.topics.clicks.clone();
    let recreated = |stack: &Stack| -> anyhow::Result<usize> {
        let log = std::fs::read_to_string(&stack.services["sink"].log)?;
        Ok(log.matches("topic was recreated").count())
    };

    // The old topic, stored.
    Producer::new(stack)?
        .send(&topic, &clicks("old", 400))
        .await?;
    wait_for_count(stack, 400).await?;
    stack.terminate("sink").await?;
    let old = max_offsets(stack, "old").await?;
    assert_eq!(old.len(), PARTITIONS as usize, "{old:?}");

    // Retention removes the start of the old topic: up to the checkpoint itself in two
    // partitions, past it in the others. Neither is a new topic.
    let mut truncate = TopicPartitionList::new();
    for (&partition, &offset) in &old {
        let low = if partition < 2 { offset } else { offset + 1 };
        truncate.add_partition_offset(&topic, i32::from(partition), Offset::Offset(low as i64))?;
    }
    admin(stack)?
        .delete_records(&truncate, &AdminOptions::new())
        .await?;
    store(stack, &topic, "late", 100, 500).await?;
    assert_eq!(
        recreated(stack)?,
        0,
        "a truncated topic taken for a new one"
    );

    // A new topic that grows past the old checkpoint before the sink sees it: a check of
    // the high watermark alone would pass it.
    let checkpoint = max_offsets(stack, "late").await?;
    recreate(stack, &topic).await?;
    store(stack, &topic, "grow", 1_200, 1_700).await?;
    let grow = max_offsets(stack, "grow").await?;
    for (partition, offset) in &checkpoint {
        assert!(
            grow[partition] > *offset,
            "partition {partition}: the new topic did not grow past the old checkpoint ({grow:?} against {checkpoint:?})"
        );
    }
    assert!(recreated(stack)? >= PARTITIONS as usize);

    // A new topic with fewer messages than the checkpoint.
    recreate(stack, &topic).await?;
    store(stack, &topic, "few", 60, 1_760).await?;
    // Started once more: the new topic's checkpoint stands, nothing is stored again.
    stack.restart("sink").await?;
    let few = max_offsets(stack, "few").await?;
    for (partition, offset) in &few {
        assert!(*offset < grow[partition], "{few:?} against {grow:?}");
    }
    assert!(recreated(stack)? >= 2 * PARTITIONS as usize);

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        stack
            .clickhouse("SELECT substring(click_hash, 1, 4) AS kind, count(), uniqExact(click_hash) FROM clicks GROUP BY kind ORDER BY kind")
            .await?,
        "few0\t60\t60\ngrow\t1200\t1200\nlate\t100\t100\nold0\t400\t400"
    );
    assert_eq!(
        stack
            .clickhouse("SELECT sum(clicks) FROM clicks_hourly")
            .await?,
        "1760"
    );
    Ok(())
}

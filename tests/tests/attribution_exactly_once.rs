//! Exactly-once attribution over real Kafka: the conversions read with read_committed
//! equal the expected set exactly (no duplicate, none missing) after the service is killed
//! with SIGKILL mid-stream, and while instances join and leave the group mid-stream.

mod attribution_support;

use std::time::Duration;

use attribution_support::*;
use traffsure_events::Conversion;
use traffsure_events::ConversionStatus::{Approved, Pending, Unspecified};
use traffsure_tests::{eventually, Stack};

/// Postback `j` of a stream of `total` over clicks spaced `step` apart: the first 80 %
/// convert distinct clicks as pending, the last 20 % approve the first of them.
fn stream(total: u64, step: u64) -> (Vec<(u16, traffsure_events::Postback)>, Vec<Version>) {
    let new = total * 4 / 5;
    let mut postbacks = Vec::new();
    let mut expected = Vec::new();
    for j in 0..total {
        let (k, status, revenue) = if j < new {
            (j, Pending, Some((j as i64 % 1000 + 1) * 10_000))
        } else {
            (j - new, Approved, None)
        };
        let click = k * step;
        postbacks.push(postback(
            &format!("pb-{j}"),
            click,
            "sale",
            "",
            status,
            revenue,
        ));
        let rev = (k as i64 % 1000 + 1) * 10_000;
        let hash = format!("click-{click:09}");
        expected.push(if j < new {
            (
                hash,
                "sale".into(),
                String::new(),
                1,
                Pending as i32,
                rev,
                Unspecified as i32,
                0,
            )
        } else {
            (
                hash,
                "sale".into(),
                String::new(),
                2,
                Approved as i32,
                rev,
                Pending as i32,
                rev,
            )
        });
    }
    expected.sort();
    (postbacks, expected)
}

/// Produces `postbacks` in `chunks` equal parts, `pause` apart, calling `at(chunk)` before each.
async fn produce_stream(
    setup: &Setup,
    postbacks: Vec<(u16, traffsure_events::Postback)>,
    chunks: usize,
    pause: Duration,
    mut at: impl AsyncFnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let size = postbacks.len().div_ceil(chunks);
    let producer = std::sync::Arc::new(setup.producer()?);
    let topic = setup.topics.postbacks.clone();
    for (n, chunk) in postbacks.chunks(size).enumerate() {
        at(n).await?;
        let (producer, topic, chunk) = (producer.clone(), topic.clone(), chunk.to_vec());
        tokio::task::spawn_blocking(move || produce(&producer, &topic, chunk)).await??;
        tokio::time::sleep(pause).await;
    }
    Ok(())
}

async fn produce_clicks(setup: &Setup, count: u64) -> anyhow::Result<()> {
    let producer = setup.producer()?;
    let topic = setup.topics.clicks.clone();
    tokio::task::spawn_blocking(move || produce(&producer, &topic, (0..count).map(click))).await?
}

fn assert_exact(got: &[Conversion], expected: &[Version]) {
    let mut got: Vec<Version> = got.iter().map(version).collect();
    got.sort();
    let mut unique = got.clone();
    unique.dedup();
    assert_eq!(got.len() - unique.len(), 0, "duplicate conversion versions");
    let missing = expected
        .iter()
        .filter(|e| unique.binary_search(e).is_err())
        .count();
    let extra = unique
        .iter()
        .filter(|g| expected.binary_search(g).is_err())
        .count();
    assert_eq!((missing, extra), (0, 0), "missing and unexpected versions");
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_mid_stream_neither_loses_nor_duplicates_conversions() -> anyhow::Result<()> {
    const CLICKS: u64 = 1_000_000;
    const POSTBACKS: u64 = 100_000;
    let setup = Setup::new().await?;
    produce_clicks(&setup, CLICKS).await?;
    let mut stack = Stack::start_with(setup.options()).await?;
    let (postbacks, expected) = stream(POSTBACKS, CLICKS / POSTBACKS);
    let result = async {
        produce_stream(
            &setup,
            postbacks,
            20,
            Duration::from_millis(150),
            async |n| {
                if n == 8 {
                    // Kill only once conversions are flowing, so state and output are mid-way.
                    let topic = setup.topics.conversions.clone();
                    eventually(Duration::from_secs(180), || async {
                        let produced = end_offsets(&setup.kafka, &topic)?;
                        Ok((produced >= 20_000).then_some(()))
                    })
                    .await?;
                    stack.kill("conversion-attribution").await?;
                    stack.restart("conversion-attribution").await?;
                }
                Ok(())
            },
        )
        .await?;
        let got: Vec<Conversion> = read_committed(
            &setup.kafka,
            &setup.topics.conversions,
            expected.len(),
            Duration::from_secs(3),
            Duration::from_secs(240),
        )?;
        assert_exact(&got, &expected);
        // The restarted instance found its state on disk and only caught up the rest.
        let log = std::fs::read_to_string(&stack.services["conversion-attribution"].log)?;
        assert!(
            log.lines()
                .any(|l| l.contains("partition state loaded") && !l.contains("from_file=0 ")),
            "no partition state came from the local store after the restart"
        );
        anyhow::Ok(())
    }
    .await;
    stack.print_failure(&result);
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_joining_and_leaving_mid_stream_keep_the_exact_result() -> anyhow::Result<()> {
    const CLICKS: u64 = 200_000;
    const POSTBACKS: u64 = 20_000;
    let setup = Setup::new().await?;
    produce_clicks(&setup, CLICKS).await?;
    let mut stack = Stack::start_with(setup.options()).await?;
    let group = format!("attribution-{}", stack.id);
    let (postbacks, expected) = stream(POSTBACKS, CLICKS / POSTBACKS);
    let mut second = None;
    let result = async {
        produce_stream(
            &setup,
            postbacks,
            30,
            Duration::from_millis(300),
            async |n| {
                if n == 5 {
                    second = Some(ExtraInstance::start(&setup, &group, "b").await?);
                }
                if n == 20 {
                    // Leave only after the partitions were shared between the two.
                    let log = stack.services["conversion-attribution"].log.clone();
                    let half = format!("partitions assigned partitions={PARTITIONS}");
                    eventually(Duration::from_secs(60), || async {
                        let text = std::fs::read_to_string(&log)?;
                        Ok(text.contains(&half).then_some(()))
                    })
                    .await?;
                    stack.terminate("conversion-attribution").await?;
                }
                Ok(())
            },
        )
        .await?;
        let got: Vec<Conversion> = read_committed(
            &setup.kafka,
            &setup.topics.conversions,
            expected.len(),
            Duration::from_secs(3),
            Duration::from_secs(180),
        )?;
        assert_exact(&got, &expected);
        // Both instances held half of the partitions at some point.
        let log_a = std::fs::read_to_string(&stack.services["conversion-attribution"].log)?;
        let log_b = std::fs::read_to_string(setup.state_root.join("b.log"))?;
        let half = format!("partitions assigned partitions={PARTITIONS}");
        assert!(log_a.contains(&half), "the first instance never shared");
        assert!(log_b.contains(&half), "the second instance never shared");
        assert!(log_b.contains("partition state loaded"));
        anyhow::Ok(())
    }
    .await;
    if result.is_err() {
        if let Ok(log) = std::fs::read_to_string(setup.state_root.join("b.log")) {
            eprintln!("--- b ---\n{log}");
        }
    }
    stack.print_failure(&result);
    if let Some(mut second) = second {
        second.terminate().await?;
    }
    result
}

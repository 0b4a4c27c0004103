//! The sink writes every event exactly once: 1,000,000 clicks (and conversion versions)
//! produced straight to Kafka while the sink is killed with SIGKILL again and again; at
//! the end every click is in ClickHouse once, and every rollup equals the aggregate of
//! its raw table.

use std::time::Duration;

use traffsure_clickhouse::queries;
use traffsure_events::{Click, Conversion, ConversionStatus};
use traffsure_tests::produce::Producer;
use traffsure_tests::{eventually, Stack, StackOptions};

const CLICKS: u64 = 1_000_000;
const CHUNK: u64 = 20_000;
const CONVERSIONS: u64 = 10_000;
const KILLS: u64 = 5;

fn click(i: u64, now: i64) -> (u16, Click) {
    let countries = ["US", "DE", "FR", "BR", "IN"];
    (
        (i % 65_536) as u16,
        Click {
            click_hash: format!("c{i:010}"),
            flow_id: 1 + (i % 5) as u32,
            ts_ms: now - ((i % 7_200) as i64) * 1_000,
            routing_key: (i % 65_536) as u32,
            visitor_id: format!("v{}", i % 20_000),
            country: countries[(i % 5) as usize].into(),
            source: if i.is_multiple_of(3) { "push" } else { "seo" }.into(),
            sub_id: format!("s{}", i % 7),
            device: "mobile".into(),
            cost_micros: 1_000,
            is_bot: i.is_multiple_of(10),
            ..Click::default()
        },
    )
}

/// Conversion versions: every conversion pending first, every other one approved later.
fn conversions(now: i64) -> Vec<(u16, Conversion)> {
    let mut versions = Vec::new();
    for i in 0..CONVERSIONS {
        let first = Conversion {
            conversion_id: format!("conv{i}"),
            version: 1,
            click_hash: format!("c{i:010}"),
            flow_id: 1 + (i % 5) as u32,
            goal: "sale".into(),
            status: ConversionStatus::Pending as i32,
            revenue_micros: 1_000_000,
            created_at_ms: now - ((i % 3_600) as i64) * 1_000,
            country: "US".into(),
            source: "push".into(),
            ..Conversion::default()
        };
        if i.is_multiple_of(2) {
            let second = Conversion {
                version: 2,
                status: ConversionStatus::Approved as i32,
                previous_status: ConversionStatus::Pending as i32,
                revenue_micros: 2_500_000,
                previous_revenue_micros: 1_000_000,
                ..first.clone()
            };
            versions.push(((i % 65_536) as u16, first));
            versions.push(((i % 65_536) as u16, second));
        } else {
            versions.push(((i % 65_536) as u16, first));
        }
    }
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_clicks_through_repeated_crashes_are_stored_once() -> anyhow::Result<()> {
    let mut stack = Stack::start_with(StackOptions::default().services(&["sink"]).env(
        "sink",
        "TRAFFSURE__BATCH_INTERVAL_MS",
        "300",
    ))
    .await?;
    let result = run(&mut stack).await;
    stack.print_failure(&result);
    result
}

async fn run(stack: &mut Stack) -> anyhow::Result<()> {
    let producer = Producer::new(stack)?;
    let now = traffsure_core::now_ms();
    let conversion_versions = conversions(now);
    let expected_versions = conversion_versions.len();
    // The stream is paced over about 50 s, so the crashes below happen while it flows.
    let streaming = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let mut i = 0;
        while i < CLICKS {
            tokio::time::sleep_until(started + Duration::from_millis(i / CHUNK * 1_000)).await;
            let chunk: Vec<(u16, Click)> = (i..(i + CHUNK).min(CLICKS))
                .map(|j| click(j, now))
                .collect();
            producer.send(&producer.topics.clicks, &chunk).await?;
            if i == CLICKS / 2 {
                producer
                    .send(&producer.topics.conversions, &conversion_versions)
                    .await?;
            }
            i += CHUNK;
        }
        anyhow::Ok(())
    });

    // Crash the sink again and again, each time a moment after it has written something,
    // so the kill lands between reads, inserts and offset commits.
    let mut stored = 0u64;
    for kill in 0..KILLS {
        let before = stored;
        stored = eventually(Duration::from_secs(60), || async {
            let count: u64 = stack
                .clickhouse("SELECT count() FROM clicks")
                .await?
                .parse()?;
            Ok((count > before).then_some(count))
        })
        .await?;
        tokio::time::sleep(Duration::from_millis(150 + 350 * (kill % 4))).await;
        stack.kill("sink").await?;
        stack.restart("sink").await?;
    }
    assert!(
        stored < CLICKS,
        "every kill came after the stream was stored"
    );
    streaming.await??;

    let total = CLICKS.to_string();
    eventually(Duration::from_secs(300), || async {
        let count = stack.clickhouse("SELECT count() FROM clicks").await?;
        Ok((count == total).then_some(()))
    })
    .await?;
    eventually(Duration::from_secs(60), || async {
        let count = stack.clickhouse("SELECT count() FROM conversions").await?;
        Ok((count == expected_versions.to_string()).then_some(()))
    })
    .await?;
    // A moment more, so a duplicate insert racing in would show.
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert_eq!(
        stack
            .clickhouse("SELECT count(), uniqExact(click_hash), uniqExact(kafka_partition, kafka_offset) FROM clicks")
            .await?,
        format!("{CLICKS}\t{CLICKS}\t{CLICKS}")
    );
    assert_eq!(
        stack
            .clickhouse("SELECT count(), uniqExact(conversion_id, version) FROM conversions")
            .await?,
        format!("{expected_versions}\t{expected_versions}")
    );
    assert_eq!(
        stack
            .clickhouse("SELECT sum(clicks), sum(bots) FROM clicks_hourly")
            .await?,
        format!("{CLICKS}\t{}", CLICKS / 10)
    );
    let rollup = stack
        .clickhouse(&queries::get("clicks_by_hour").example_for("clicks_hourly"))
        .await?;
    let raw = stack
        .clickhouse(&queries::get("clicks_from_raw").example_for("clicks"))
        .await?;
    assert!(rollup.lines().count() >= 5 * 2, "{rollup}");
    assert_eq!(rollup, raw, "clicks_hourly against clicks");
    let rollup = stack
        .clickhouse(&queries::get("conversions_by_status").example_for("conversions_hourly"))
        .await?;
    let raw = stack
        .clickhouse(&queries::get("conversions_current").example_for("conversions"))
        .await?;
    assert_eq!(rollup, raw, "conversions_hourly against conversions");
    assert_eq!(
        stack
            .clickhouse("SELECT status, sum(conversions), sum(revenue_micros) FROM conversions_hourly GROUP BY status ORDER BY status")
            .await?,
        format!(
            "approved\t{}\t{}\npending\t{}\t{}",
            CONVERSIONS / 2,
            CONVERSIONS / 2 * 2_500_000,
            CONVERSIONS / 2,
            CONVERSIONS / 2 * 1_000_000
        )
    );
    Ok(())
}

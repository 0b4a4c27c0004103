//! A sink killed after an INSERT was cut between its parts, before it could repair it,
//! leaves the cut to its successor: the insert's marker (`sink_inserts`) tells the next
//! sink which rows the cut insert sent, and it completes the rollups that missed them
//! before it takes the partitions' messages. Without that, the successor would read the
//! checkpoint (which the cut insert's checkpoint view did write), skip those rows, and
//! the rollups would stay short for good.
//!
//! The cut is made as in `cluster_faults`: a materialized view that throws on one click,
//! named to run after the checkpoint's view and before the hourly rollups'. While it is
//! there the sink's own repair fails too (it runs the view's query over the sent rows),
//! and the sink is killed (SIGKILL) in that window, the cut known only to it.

use std::time::Duration;

use traffsure_clickhouse::queries;
use traffsure_events::Click;
use traffsure_tests::produce::Producer;
use traffsure_tests::{eventually, Stack, StackOptions};

const BEFORE: u64 = 40;
const CUT_BATCH: u64 = 25;
const AFTER: u64 = 15;
const MORE: u64 = 40;

/// Click `i`; the one to cut has sub_id `cut` and country `ZZ` (which no other has).
fn click(i: u64, now: i64, cut: bool) -> (u16, Click) {
    (
        (i * 7_919 % 65_536) as u16,
        Click {
            click_hash: format!("w{i:08}"),
            flow_id: 1 + (i % 3) as u32,
            ts_ms: now - ((i % 5) as i64) * 1_000,
            routing_key: (i * 7_919 % 65_536) as u32,
            visitor_id: format!("v{}", i % 9),
            country: if cut { "ZZ" } else { "US" }.into(),
            source: "push".into(),
            sub_id: if cut {
                "cut".into()
            } else {
                format!("s{}", i % 4)
            },
            device: "mobile".into(),
            cost_micros: 1_000 + i as i64,
            is_bot: i.is_multiple_of(10),
            ..Click::default()
        },
    )
}

async fn count(stack: &Stack, sql: &str) -> anyhow::Result<u64> {
    Ok(stack.clickhouse(sql).await?.trim().parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_killed_before_repairing_a_cut_insert_leaves_it_to_its_successor(
) -> anyhow::Result<()> {
    let mut stack = Stack::start_with(StackOptions::default().services(&["sink"]).env(
        "sink",
        "TRAFFSURE__BATCH_INTERVAL_MS",
        "200",
    ))
    .await?;
    let result = run(&mut stack).await;
    stack.print_failure(&result);
    result
}

async fn run(stack: &mut Stack) -> anyhow::Result<()> {
    let producer = Producer::new(stack)?;
    let now = traffsure_core::now_ms();
    let first: Vec<(u16, Click)> = (0..BEFORE).map(|i| click(i, now, false)).collect();
    producer.send(&producer.topics.clicks, &first).await?;
    eventually(Duration::from_secs(60), || async {
        let hourly = count(stack, "SELECT sum(clicks) FROM clicks_hourly").await?;
        Ok((hourly == BEFORE).then_some(()))
    })
    .await?;

    // The cut: `clicks_cut_mv` runs after `clicks_checkpoint_mv` and before
    // `clicks_funnel_hourly_mv` and `clicks_hourly_mv`, and throws on the click to cut, so
    // that insert stores the raw rows and the checkpoint, not those rollups. Its target is
    // a rollup the sink checks first (by name), by running the view's query over the sent
    // rows: that throws too, so the sink's own repair fails for as long as the view is
    // there.
    for sql in [
        "CREATE TABLE a_cut_views (hour DateTime, x UInt64) ENGINE = SummingMergeTree() \
         ORDER BY hour",
        "CREATE MATERIALIZED VIEW clicks_cut_mv TO a_cut_views AS \
         SELECT toStartOfHour(ts) AS hour, toUInt64(throwIf(sub_id = 'cut')) AS x FROM clicks",
    ] {
        stack.clickhouse(sql).await?;
    }
    let batch: Vec<(u16, Click)> = (BEFORE..BEFORE + CUT_BATCH)
        .map(|i| click(i, now, i == BEFORE + CUT_BATCH / 2))
        .collect();
    producer.send(&producer.topics.clicks, &batch).await?;
    // Killed once the cut insert's rows are in the raw table and the sink's repair failed
    // (an insert error counted after the insert's own): it retries the repair with
    // backoff for about ten seconds before it would give it up.
    let errors = "traffsure_sink_insert_errors_total{table=\"clicks\"}";
    eventually(Duration::from_secs(60), || async {
        let cut = count(stack, "SELECT count() FROM clicks WHERE sub_id = 'cut'").await?;
        let failed = stack.metric("sink", errors).await?;
        Ok((cut == 1 && failed >= 2.0).then_some(()))
    })
    .await?;
    stack.kill("sink").await?;

    // The window: the checkpoint counts the cut click, `clicks_hourly` does not.
    let position = stack
        .clickhouse("SELECT kafka_partition, kafka_offset FROM clicks WHERE sub_id = 'cut'")
        .await?;
    let (partition, offset) = position
        .trim()
        .split_once('\t')
        .ok_or_else(|| anyhow::anyhow!("no position: {position}"))?;
    let checkpoint = count(
        stack,
        &format!(
            "SELECT max(max_offset) FROM sink_checkpoints \
             WHERE source_table = 'clicks' AND kafka_partition = {partition}"
        ),
    )
    .await?;
    assert!(
        checkpoint >= offset.parse::<u64>()?,
        "the cut insert's checkpoint view did not run: checkpoint {checkpoint}, cut click at {offset}"
    );
    let raw = count(stack, "SELECT count() FROM clicks").await?;
    let hourly = count(stack, "SELECT sum(clicks) FROM clicks_hourly").await?;
    assert!(
        hourly < raw,
        "the rollup was not left short by the cut: {hourly} of {raw} clicks"
    );
    assert_eq!(
        count(
            stack,
            "SELECT count() FROM clicks_hourly WHERE country = 'ZZ'"
        )
        .await?,
        0,
        "the killed sink repaired clicks_hourly"
    );

    // The cause goes, a new sink starts, and more clicks come.
    stack.clickhouse("DROP TABLE clicks_cut_mv").await?;
    stack.restart("sink").await?;
    let after: Vec<(u16, Click)> = (BEFORE + CUT_BATCH..BEFORE + CUT_BATCH + AFTER)
        .map(|i| click(i, now, false))
        .collect();
    producer.send(&producer.topics.clicks, &after).await?;

    let total = BEFORE + CUT_BATCH + AFTER;
    let settled = eventually(Duration::from_secs(60), || async {
        let raw = count(stack, "SELECT count() FROM clicks").await?;
        let hourly = count(stack, "SELECT sum(clicks) FROM clicks_hourly").await?;
        let funnel = count(stack, "SELECT sum(clicks) FROM clicks_funnel_hourly").await?;
        Ok((raw == total && hourly == total && funnel == total).then_some(()))
    })
    .await;
    if let Err(error) = settled {
        let counts = stack
            .clickhouse(
                "SELECT (SELECT count() FROM clicks), (SELECT sum(clicks) FROM clicks_hourly), \
                 (SELECT sum(clicks) FROM clicks_funnel_hourly)",
            )
            .await?;
        anyhow::bail!(
            "after the new sink, clicks / clicks_hourly / clicks_funnel_hourly are {} \
             instead of {total} each: {error}",
            counts.trim().replace('\t', " / ")
        );
    }
    // A moment more, so a repair written twice would show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_exact(stack, total).await?;
    assert_eq!(
        count(
            stack,
            "SELECT sum(clicks) FROM clicks_hourly WHERE country = 'ZZ' AND sub_id = 'cut'"
        )
        .await?,
        1
    );

    // It was the successor's check of the gone sink's last insert that wrote them.
    let settled = stack
        .metric(
            "sink",
            "traffsure_sink_insert_markers_total{result=\"checked\",table=\"clicks\"}",
        )
        .await?;
    assert!(settled >= 1.0, "no marker was checked: {settled}");
    let repaired = repaired_parts(stack).await?;
    assert!(repaired >= 1.0, "no view part was repaired: {repaired}");

    // Killed again, with nothing cut: the next sink checks its predecessor's last insert
    // again, finds every part there and writes nothing.
    stack.kill("sink").await?;
    stack.restart("sink").await?;
    let more: Vec<(u16, Click)> = (total..total + MORE)
        .map(|i| click(i, now, false))
        .collect();
    producer.send(&producer.topics.clicks, &more).await?;
    let total = total + MORE;
    eventually(Duration::from_secs(60), || async {
        let raw = count(stack, "SELECT count() FROM clicks").await?;
        let hourly = count(stack, "SELECT sum(clicks) FROM clicks_hourly").await?;
        Ok((raw == total && hourly == total).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_exact(stack, total).await?;
    let checked = stack
        .metric("sink", "traffsure_sink_insert_markers_total{result=\"check")
        .await?;
    assert!(checked >= 1.0, "the last sink checked no marker: {checked}");
    let repaired = repaired_parts(stack).await?;
    assert_eq!(repaired, 0.0, "the last sink wrote views' parts again");
    Ok(())
}

/// The views' parts the sink wrote again for clicks, over every view.
async fn repaired_parts(stack: &Stack) -> anyhow::Result<f64> {
    stack
        .metric(
            "sink",
            "traffsure_sink_view_repairs_total{result=\"repaired\",table=\"clicks\",target=",
        )
        .await
}

/// Every click once in the raw table, and every rollup of clicks equal to the clicks
/// sent (`total` of them, `click` 0 to `total - 1`).
async fn assert_exact(stack: &Stack, total: u64) -> anyhow::Result<()> {
    assert_eq!(
        stack
            .clickhouse(
                "SELECT count(), uniqExact(click_hash), uniqExact(kafka_partition, kafka_offset) \
                 FROM clicks"
            )
            .await?
            .trim(),
        format!("{total}\t{total}\t{total}")
    );
    let (bots, cost) = (
        (0..total).filter(|i| i.is_multiple_of(10)).count(),
        (0..total).map(|i| 1_000 + i as i64).sum::<i64>(),
    );
    for rollup in ["clicks_hourly", "clicks_funnel_hourly"] {
        assert_eq!(
            stack
                .clickhouse(&format!(
                    "SELECT sum(clicks), sum(bots), sum(cost_micros) FROM {rollup}"
                ))
                .await?
                .trim(),
            format!("{total}\t{bots}\t{cost}"),
            "{rollup} against the clicks sent"
        );
    }
    for rollup in ["clicks_cost_hourly", "click_costs_hourly"] {
        assert_eq!(
            count(stack, &format!("SELECT sum(cost_micros) FROM {rollup}")).await? as i64,
            cost,
            "{rollup} against the clicks sent"
        );
    }
    let rollup = stack
        .clickhouse(&queries::get("clicks_by_hour").example_for("clicks_hourly"))
        .await?;
    let raw = stack
        .clickhouse(&queries::get("clicks_from_raw").example_for("clicks"))
        .await?;
    assert_eq!(rollup, raw, "clicks_hourly against clicks");
    Ok(())
}

//! ClickHouse goes away for 30 s in the middle of a stream (a private server, stopped and
//! started by the test): the sink waits, retries, and resumes, and every click is stored
//! exactly once.

use std::time::Duration;

use traffsure_clickhouse::queries;
use traffsure_events::Click;
use traffsure_tests::private_clickhouse::PrivateClickHouse;
use traffsure_tests::produce::Producer;
use traffsure_tests::{eventually, Stack, StackOptions};

const CLICKS: u64 = 200_000;
const CHUNK: u64 = 10_000;
/// Seconds of the stream sent before ClickHouse stops; the rest is sent during the outage.
const BEFORE_OUTAGE: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thirty_second_clickhouse_outage_loses_and_repeats_nothing() -> anyhow::Result<()> {
    let mut clickhouse = PrivateClickHouse::start().await?;
    let mut options = StackOptions::default().services(&["sink"]);
    options.clickhouse_url = clickhouse.url();
    let stack = Stack::start_with(options).await?;
    let result = run(&stack, &mut clickhouse).await;
    stack.print_failure(&result);
    result
}

async fn run(stack: &Stack, clickhouse: &mut PrivateClickHouse) -> anyhow::Result<()> {
    let producer = Producer::new(stack)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    // 10,000 clicks a second: the first few seconds while ClickHouse is up, the rest once
    // it is really gone (a stopping server may still answer on open connections), so the
    // sink has rows to insert during the outage.
    let (down_tx, down_rx) = tokio::sync::oneshot::channel::<()>();
    let streaming = tokio::spawn(async move {
        let mut down = Some(down_rx);
        let mut started = tokio::time::Instant::now();
        for chunk in 0..CLICKS / CHUNK {
            if chunk == BEFORE_OUTAGE {
                if let Some(down) = down.take() {
                    down.await?;
                }
                started = tokio::time::Instant::now() - Duration::from_secs(chunk);
            }
            tokio::time::sleep_until(started + Duration::from_secs(chunk)).await;
            let clicks: Vec<(u16, Click)> = (chunk * CHUNK..(chunk + 1) * CHUNK)
                .map(|i| {
                    (
                        (i % 4_096) as u16,
                        Click {
                            click_hash: format!("o{i:09}"),
                            flow_id: 1 + (i % 3) as u32,
                            ts_ms: now - ((i % 600) as i64) * 1_000,
                            visitor_id: format!("v{}", i % 5_000),
                            country: "US".into(),
                            cost_micros: 10,
                            ..Click::default()
                        },
                    )
                })
                .collect();
            producer.send(&producer.topics.clicks, &clicks).await?;
        }
        anyhow::Ok(())
    });

    // Stop ClickHouse once the sink is writing, keep it down for 30 s, start it again.
    eventually(Duration::from_secs(60), || async {
        let count: u64 = stack
            .clickhouse("SELECT count() FROM clicks")
            .await?
            .parse()?;
        Ok((count > 0).then_some(()))
    })
    .await?;
    clickhouse.stop().await?;
    let _ = down_tx.send(());
    tokio::time::sleep(Duration::from_secs(30)).await;
    clickhouse.resume().await?;
    streaming.await??;

    let total = CLICKS.to_string();
    eventually(Duration::from_secs(120), || async {
        Ok((stack.clickhouse("SELECT count() FROM clicks").await? == total).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        stack
            .clickhouse("SELECT count(), uniqExact(click_hash) FROM clicks")
            .await?,
        format!("{CLICKS}\t{CLICKS}")
    );
    assert_eq!(
        stack
            .clickhouse("SELECT sum(clicks) FROM clicks_hourly")
            .await?,
        total
    );
    assert_eq!(
        stack
            .clickhouse(&queries::get("clicks_by_hour").example_for("clicks_hourly"))
            .await?,
        stack
            .clickhouse(&queries::get("clicks_from_raw").example_for("clicks"))
            .await?
    );
    // The sink met the outage and rode it out: it retried, it never restarted.
    let log = std::fs::read_to_string(&stack.services["sink"].log)?;
    assert!(
        log.contains("insert failed, retrying"),
        "no insert failed during the outage"
    );
    assert_eq!(log.matches("sink running").count(), 1);
    Ok(())
}

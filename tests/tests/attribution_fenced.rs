//! conversion-attribution's transactional producer fenced: once (what a broker failover
//! does when the coordinator that took over aborts a transaction that outlived its
//! timeout), a new producer takes the transactional id over and every postback still
//! converts exactly once; again and again (another process using the same transactional
//! id), the service stops and names the likely cause instead of taking the id back for
//! ever.

mod attribution_support;

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use attribution_support::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use traffsure_events::Conversion;
use traffsure_events::ConversionStatus::Approved;
use traffsure_kafka::transaction::TransactionalProducer;
use traffsure_tests::{eventually, Stack};

const FENCED: &str = "traffsure_attribution_recoveries_total{after=\"fenced\"}";

/// Fences the service's producer: a producer of the same transactional id initialised
/// (and dropped at once), as another owner of the id or a coordinator's epoch bump does.
fn fence(setup: &Setup, transactional_id: &str) -> anyhow::Result<()> {
    let producer: BaseProducer = traffsure_kafka::producer_config(&setup.kafka)
        .set("transactional.id", transactional_id)
        .create()?;
    producer
        .init_transactions(Duration::from_secs(30))
        .context("init the fencing producer")?;
    Ok(())
}

/// Clicks `range` and one postback each, produced and acknowledged.
fn clicks_and_postbacks(
    setup: &Setup,
    producer: &BaseProducer,
    range: std::ops::RangeInclusive<u64>,
) -> anyhow::Result<()> {
    produce(producer, &setup.topics.clicks, range.clone().map(click))?;
    let postbacks = range.map(|n| postback(&format!("pb-{n}"), n, "", "", Approved, None));
    produce(producer, &setup.topics.postbacks, postbacks)
}

async fn fenced_count(stack: &Stack) -> anyhow::Result<f64> {
    stack.metric("conversion-attribution", FENCED).await
}

fn distinct_clicks(conversions: &[Conversion]) -> usize {
    let ids: std::collections::HashSet<&str> =
        conversions.iter().map(|c| c.click_hash.as_str()).collect();
    ids.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_producer_is_replaced_and_every_postback_converts_once() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    let producer = setup.producer()?;
    produce(&producer, &setup.topics.flows, [flow()])?;
    let mut stack = Stack::start_with(setup.options()).await?;
    let transactional_id = format!("attribution-{}-a", stack.id);
    let result = async {
        clicks_and_postbacks(&setup, &producer, 1..=20)?;
        let before = setup.conversions(20, Duration::from_secs(1))?;
        assert_eq!(before.len(), 20, "conversions before the fence");
        assert_eq!(fenced_count(&stack).await?, 0.0);

        fence(&setup, &transactional_id)?;
        clicks_and_postbacks(&setup, &producer, 21..=40)?;
        eventually(Duration::from_secs(60), || async {
            Ok((fenced_count(&stack).await? >= 1.0).then_some(()))
        })
        .await
        .context("the fenced producer was not replaced")?;
        // Every postback once: none lost with the fenced transaction, none converted
        // twice by the work done again from the committed positions.
        let after = setup.conversions(40, Duration::from_secs(3))?;
        assert_eq!(after.len(), 40, "conversions after the fence");
        assert_eq!(distinct_clicks(&after), 40, "a click converted twice");
        assert_eq!(fenced_count(&stack).await?, 1.0, "take-overs for one fence");
        stack.all_running()?;
        anyhow::Ok(())
    }
    .await;
    stack.print_failure(&result);
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_again_and_again_it_stops_and_names_the_instance_id() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    let producer = setup.producer()?;
    produce(&producer, &setup.topics.flows, [flow()])?;
    // Without a backtrace, the log's tail is the error that stopped it.
    let options = setup
        .options()
        .env("conversion-attribution", "RUST_BACKTRACE", "0");
    let mut stack = Stack::start_with(options).await?;
    let transactional_id = format!("attribution-{}-a", stack.id);
    let result = async {
        // Its own producer initialised first (a fence before that would be fenced by it).
        clicks_and_postbacks(&setup, &producer, 1..=1)?;
        setup.conversions(1, Duration::ZERO)?;
        // Each fence is noticed when the service next opens or commits a transaction:
        // one postback after each makes it do so.
        let started = Instant::now();
        let mut n = 1;
        for take_overs in 1..=5u32 {
            fence(&setup, &transactional_id)?;
            n += 1;
            clicks_and_postbacks(&setup, &producer, n..=n)?;
            eventually(Duration::from_secs(30), || async {
                Ok((fenced_count(&stack).await? >= f64::from(take_overs)).then_some(()))
            })
            .await
            .with_context(|| format!("take-over {take_overs}"))?;
        }
        stack
            .all_running()
            .context("running after five take-overs")?;
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(55),
            "the five fences took {:?}, longer than the service's window",
            started.elapsed()
        );
        fence(&setup, &transactional_id)?;
        clicks_and_postbacks(&setup, &producer, n + 1..=n + 1)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let log = loop {
            if let Some(log) = stack.exited() {
                break log;
            }
            if Instant::now() > deadline {
                bail!("still running a minute after a sixth fence");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if !log.contains("is another instance running with instance_id \"a\"") {
            bail!("the service stopped without naming the instance id:\n{log}");
        }
        anyhow::Ok(())
    }
    .await;
    stack.print_failure(&result);
    result
}

/// A fence is learnt from the coordinator's answer to the producer's background request to
/// add a partition to the transaction; an event the service queues after that fails with
/// `_FATAL`, which does not say why, so the service asks the producer (the conversion
/// queued, then its postback result refused: the service stopped instead of taking over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_learnt_in_the_background_is_known_to_the_producer() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    let transactional_id = format!("{}fenced-in-the-background", setup.prefix);
    let config = traffsure_kafka::producer_config(&setup.kafka);
    let mut producer = TransactionalProducer::new(config, &transactional_id, || {
        rdkafka::producer::DefaultProducerContext
    })?;
    let event = |partition| {
        BaseRecord::to(&setup.topics.conversions)
            .partition(partition)
            .key("k")
            .payload("v")
    };
    producer.begin()?;
    producer.producer().send(event(0)).map_err(|(e, _)| e)?;
    producer.producer().poll(Duration::from_millis(500));
    assert!(!producer.fenced(), "fenced before any fence");
    fence(&setup, &transactional_id)?;
    // Another partition: the producer asks the coordinator to add it, and is told.
    producer.producer().send(event(1)).map_err(|(e, _)| e)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !producer.fenced() {
        anyhow::ensure!(Instant::now() < deadline, "the fence was never learnt");
        producer.producer().poll(Duration::from_millis(100));
    }
    let (queued, _) = producer
        .producer()
        .send(event(2))
        .expect_err("an event queued by a fenced producer");
    println!("queued after the fence: {queued:?}");
    Ok(())
}

//! Kafka down: postback-ingest answers 503 `not_durable` (so the advertiser retries) and
//! never a 200 it cannot keep; once the broker is back, postbacks are accepted again.
//! Runs its own single-node Kafka (`traffsure_tests::private_kafka`), so the shared broker
//! is never touched.

mod postback_support;

use std::time::{Duration, Instant};

use postback_support::{click_hash, get, postback_log, postbacks};
use traffsure_tests::private_kafka::PrivateKafka;
use traffsure_tests::{Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_down_answers_503_and_recovers() -> anyhow::Result<()> {
    let mut kafka = PrivateKafka::start().await?;
    let mut options = StackOptions::default().services(&["postback-ingest"]).env(
        "postback-ingest",
        "TRAFFSURE__KAFKA__MESSAGE_TIMEOUT_MS",
        "4000",
    );
    options.kafka_brokers = kafka.brokers();
    let stack = Stack::start_with(options).await?;
    let result = run(&stack, &mut kafka).await;
    stack.print_failure(&result);
    result
}

async fn run(stack: &Stack, kafka: &mut PrivateKafka) -> anyhow::Result<()> {
    let before = get(
        stack,
        &format!("/postback?click={}&uid=before", click_hash(5, 1)),
    )
    .await?;
    assert_eq!(
        (before.status, before.code.as_str()),
        (200, "accepted"),
        "{before:?}"
    );

    kafka.stop().await?;
    let started = Instant::now();
    let down = get(
        stack,
        &format!("/postback?click={}&uid=down", click_hash(5, 2)),
    )
    .await?;
    assert_eq!(
        (down.status, down.code.as_str()),
        (503, "not_durable"),
        "{down:?}"
    );
    assert!(down.message.contains("retry"), "{}", down.message);
    assert!(started.elapsed() < Duration::from_secs(20));

    kafka.resume().await?;
    let after = traffsure_tests::eventually(Duration::from_secs(30), || async {
        let r = get(
            stack,
            &format!("/postback?click={}&uid=after", click_hash(5, 3)),
        )
        .await?;
        Ok((r.status == 200).then_some(r))
    })
    .await?;
    assert_eq!(after.code, "accepted");

    // What was acknowledged is in Kafka; the refused postback is not among the events.
    let mut events = postbacks(stack).await?;
    let kept = events
        .wait_for(&[before.postback_id.clone(), after.postback_id.clone()])
        .await?;
    assert_eq!(
        (kept[0].uid.as_str(), kept[1].uid.as_str()),
        ("before", "after")
    );
    assert!(
        !events
            .seen_after(&down.postback_id, Duration::from_secs(3))
            .await?
    );
    let mut log = postback_log(stack).await?;
    let logged = log.one(&after.postback_id).await?;
    assert_eq!(
        (logged.response_status, logged.reason.as_str()),
        (200, "accepted")
    );
    Ok(())
}

//! A fatal producer error loses and doubles no redirected click. librdkafka's
//! idempotent producer can fail beyond repair (a sequence gap the broker will not
//! accept); from then on it takes no event. click-ingest then writes clicks to its click
//! log only, drains its requests, and exits with an error naming the cause; started
//! again, it sends what the log holds that Kafka does not.
//!
//! The fault is injected as librdkafka's own test hook makes it
//! (`rd_kafka_test_fatal_error`, behind `TRAFFSURE_TEST_PRODUCER_FATAL_AFTER` in debug
//! builds) while clients keep clicking; every click whose 302 a client received must be
//! in the clicks topic exactly once after the restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use traffsure_tests::kafka_topic::{expect_clicks_once, publish_flow};
use traffsure_tests::{click_hash_of, eventually, kafka_brokers, Stack, StackOptions};

const FAULT: &str = "TRAFFSURE_TEST_PRODUCER_FATAL_AFTER";
/// The click before which the producer fails.
const FAIL_AT: usize = 400;
const CLIENTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_stops_the_edge_and_its_restart_sends_every_click(
) -> anyhow::Result<()> {
    let mut stack = Stack::start_with(StackOptions::default().services(&["click-ingest"]).env(
        "click-ingest",
        FAULT,
        FAIL_AT.to_string(),
    ))
    .await?;
    let result = run(&mut stack).await;
    stack.print_failure(&result);
    result
}

async fn run(stack: &mut Stack) -> anyhow::Result<()> {
    let slug = format!("fatal-{}", stack.id);
    publish_flow(
        &kafka_brokers(),
        &format!("{}flows", stack.topic_prefix),
        1,
        json!({"name": "Fatal", "slug": slug, "destination_url": "https://offer.example/?c={click}"}),
        None,
    )
    .await?;
    let track = Arc::new(stack.url("click-ingest", &format!("/c/{slug}?sub_id=fatal")));
    eventually(Duration::from_secs(15), || async {
        Ok((stack.http.get(track.as_str()).send().await?.status() == 302).then_some(()))
    })
    .await?;

    // Clients click until the edge stops answering.
    let gone = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (http, track, gone) = (stack.http.clone(), track.clone(), gone.clone());
        clients.push(tokio::spawn(async move {
            let mut redirected = Vec::new();
            while !gone.load(Ordering::SeqCst) {
                match http.get(track.as_str()).send().await {
                    Ok(response) if response.status() == 302 => {
                        let location = response.headers()["location"].to_str()?;
                        redirected.push(click_hash_of(location));
                    }
                    Ok(response) => anyhow::bail!("a click answered {}", response.status()),
                    // Refused: the edge has stopped.
                    Err(_) => gone.store(true, Ordering::SeqCst),
                }
            }
            anyhow::Ok(redirected)
        }));
    }
    let exited = eventually(Duration::from_secs(60), || async { Ok(stack.exited()) }).await;
    gone.store(true, Ordering::SeqCst);
    let mut sent = Vec::new();
    for client in clients {
        sent.extend(client.await??);
    }
    exited?;
    println!("{} clicks redirected before the edge stopped", sent.len());
    let log = std::fs::read_to_string(stack.log_dir.join("click-ingest.log"))?;
    anyhow::ensure!(
        log.contains("Error: kafka producer failed fatally (OutOfOrderSequenceNumber")
            && log.contains("the next start sends it"),
        "click-ingest did not stop for its fatal producer error (see its log)"
    );
    let status = stack.all_running().expect_err("click-ingest has exited");
    anyhow::ensure!(
        !status.to_string().contains("exit status: 0"),
        "a fatal error must exit with a failure status: {status}"
    );
    // Redirects went on after the fault (their clicks in the log only) until the drain.
    anyhow::ensure!(
        sent.len() > FAIL_AT,
        "only {} clicks redirected: the fault came after the load",
        sent.len()
    );

    // Started again without the fault: the log's clicks reach Kafka, each once.
    stack
        .options
        .env
        .retain(|(_, variable, _)| variable != FAULT);
    stack.restart("click-ingest").await?;
    let topic = format!("{}clicks", stack.topic_prefix);
    let events = expect_clicks_once(
        &kafka_brokers(),
        &topic,
        &sent,
        Duration::from_secs(60),
        Duration::from_secs(3),
    )
    .await?;
    println!("{events} click events in the topic, every redirected click once");
    Ok(())
}

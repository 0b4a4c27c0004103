//! A Kafka producer that fails for good loses and doubles nothing that was answered.
//! librdkafka's idempotent producer can fail beyond repair (a sequence gap the broker
//! will not accept); from then on it takes no event. The service then drains its
//! requests and exits with an error naming the cause, for its supervisor to start it
//! again with a new producer:
//! - click-ingest writes the clicks meanwhile to its click log only, and the restart
//!   sends what the log holds that Kafka does not: every click whose 302 a client
//!   received is in the clicks topic exactly once;
//! - postback-ingest answers the postbacks it cannot make durable 503, never 200: every
//!   postback answered 200 is in the postbacks topic exactly once.
//!
//! The fault is injected as librdkafka's own test hook makes it
//! (`rd_kafka_test_fatal_error`, behind `TRAFFSURE_TEST_PRODUCER_FATAL_AFTER` in debug
//! builds) while clients keep sending.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use traffsure_tests::kafka_topic::{expect_clicks_once, publish_flow, read_events};
use traffsure_tests::{click_hash_of, eventually, kafka_brokers, Stack, StackOptions};

const FAULT: &str = "TRAFFSURE_TEST_PRODUCER_FATAL_AFTER";
/// The click before which the producer fails.
const FAIL_AT: usize = 400;
const CLIENTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_stops_click_ingest_and_its_restart_sends_every_click(
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
    exited_for_the_fault(stack, "click-ingest")?;
    // Redirects went on after the fault (their clicks in the log only) until the drain.
    anyhow::ensure!(
        sent.len() > FAIL_AT,
        "only {} clicks redirected: the fault came after the load",
        sent.len()
    );

    // Started again without the fault: the log's clicks reach Kafka, each once.
    restart_without_fault(stack, "click-ingest").await?;
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

/// Starts `service` again without the fault: a new producer, as its supervisor's restart
/// would give it.
async fn restart_without_fault(stack: &mut Stack, service: &str) -> anyhow::Result<()> {
    stack
        .options
        .env
        .retain(|(_, variable, _)| variable != FAULT);
    stack.restart(service).await
}

/// Checks that `service` exited for its producer's fatal error, with a failure status.
fn exited_for_the_fault(stack: &mut Stack, service: &str) -> anyhow::Result<()> {
    let log = std::fs::read_to_string(stack.log_dir.join(format!("{service}.log")))?;
    anyhow::ensure!(
        log.contains("Error: kafka producer failed fatally (OutOfOrderSequenceNumber"),
        "{service} did not stop for its fatal producer error (see its log)"
    );
    // Its threads may still be going when /proc shows the leader gone: wait for the
    // status.
    let mut waited = 0;
    let status = loop {
        match stack.all_running() {
            Err(status) => break status,
            Ok(()) if waited < 200 => waited += 1,
            Ok(()) => anyhow::bail!("{service} has not exited"),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    anyhow::ensure!(
        !status.to_string().contains("exit status: 0"),
        "a fatal error must exit with a failure status: {status}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_stops_postback_ingest_and_no_postback_answered_200_is_lost(
) -> anyhow::Result<()> {
    let mut stack = Stack::start_with(
        StackOptions::default()
            .services(&["click-ingest", "postback-ingest"])
            .env("postback-ingest", FAULT, FAIL_AT.to_string()),
    )
    .await?;
    let result = postbacks(&mut stack).await;
    stack.print_failure(&result);
    result
}

async fn postbacks(stack: &mut Stack) -> anyhow::Result<()> {
    let slug = format!("fatal-pb-{}", stack.id);
    publish_flow(
        &kafka_brokers(),
        &format!("{}flows", stack.topic_prefix),
        1,
        json!({
            "name": "Fatal postbacks",
            "slug": slug,
            "destination_url": "https://offer.example/?c={click}",
            "goals": [{"key": "sale", "payout": "1"}]
        }),
        None,
    )
    .await?;
    let track = stack.url("click-ingest", &format!("/c/{slug}?sub_id=fatal"));
    let location = eventually(Duration::from_secs(15), || async {
        let response = stack.http.get(&track).send().await?;
        Ok((response.status() == 302)
            .then(|| response.headers()["location"].to_str().map(str::to_string))
            .transpose()?)
    })
    .await?;
    let click = click_hash_of(&location);
    let postback = Arc::new(stack.url("postback-ingest", "/postback"));
    eventually(Duration::from_secs(15), || async {
        let query = format!("click={click}&goal=sale&uid=probe");
        let response = stack.http.get(format!("{postback}?{query}")).send().await?;
        Ok((response.status() == 200).then_some(()))
    })
    .await?;

    // Senders post until postback-ingest stops answering; each uid is sent once.
    let gone = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for sender in 0..CLIENTS {
        let (http, postback, gone) = (stack.http.clone(), postback.clone(), gone.clone());
        let click = click.clone();
        senders.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut n = 0;
            while !gone.load(Ordering::SeqCst) {
                n += 1;
                let uid = format!("tx-{sender}-{n}");
                let url = format!("{postback}?click={click}&goal=sale&uid={uid}&revenue=1");
                match http.get(url).send().await {
                    Ok(response) => answers.push((uid, response.status().as_u16())),
                    Err(_) => gone.store(true, Ordering::SeqCst),
                }
            }
            anyhow::Ok(answers)
        }));
    }
    let exited = eventually(Duration::from_secs(60), || async { Ok(stack.exited()) }).await;
    gone.store(true, Ordering::SeqCst);
    let mut answers = Vec::new();
    for sender in senders {
        answers.extend(sender.await??);
    }
    exited?;
    exited_for_the_fault(stack, "postback-ingest")?;
    let accepted: Vec<&str> = answers
        .iter()
        .filter(|(_, status)| *status == 200)
        .map(|(uid, _)| uid.as_str())
        .collect();
    let other: Vec<u16> = answers
        .iter()
        .map(|(_, status)| *status)
        .filter(|status| *status != 200)
        .collect();
    println!(
        "{} postbacks answered 200, {} otherwise ({:?}…)",
        accepted.len(),
        other.len(),
        &other[..other.len().min(5)]
    );
    anyhow::ensure!(
        accepted.len() >= FAIL_AT / 2,
        "only {} postbacks answered 200 before the fault",
        accepted.len()
    );
    anyhow::ensure!(
        other.iter().all(|status| *status == 503),
        "a postback that could not be made durable must be answered 503: {other:?}"
    );

    // Started again without the fault, it answers 200 again.
    restart_without_fault(stack, "postback-ingest").await?;
    let again = stack
        .http
        .get(format!(
            "{postback}?click={click}&goal=sale&uid=after-restart"
        ))
        .send()
        .await?
        .status();
    anyhow::ensure!(
        again == 200,
        "after the restart a postback was answered {again}"
    );

    // Every postback answered 200 is in the topic, once.
    let topic = format!("{}postbacks", stack.topic_prefix);
    let wanted: Vec<String> = accepted.iter().map(|uid| uid.to_string()).collect();
    let events = tokio::task::spawn_blocking(move || {
        read_events::<traffsure_events::Postback>(
            &kafka_brokers(),
            &topic,
            Duration::from_secs(30),
            Duration::from_secs(2),
            |events| events.iter().any(|p| p.uid == "after-restart"),
        )
    })
    .await??;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for event in &events {
        *counts.entry(event.uid.as_str()).or_default() += 1;
    }
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|uid| !counts.contains_key(uid.as_str()))
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "postbacks answered 200 not in the topic: {missing:?}"
    );
    let doubled: Vec<(&&str, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    anyhow::ensure!(
        doubled.is_empty(),
        "postbacks in the topic twice: {doubled:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_stops_reporting_api_and_keeps_every_change_it_confirmed(
) -> anyhow::Result<()> {
    const FLOW_FAIL_AT: usize = 4;
    let mut stack = Stack::start_with(StackOptions::default().services(&["reporting-api"]).env(
        "reporting-api",
        FAULT,
        FLOW_FAIL_AT.to_string(),
    ))
    .await?;
    let result = async {
        let mut created = Vec::new();
        let mut refused = None;
        for n in 1..=FLOW_FAIL_AT * 2 {
            let slug = format!("fatal-api-{}-{n}", stack.id);
            let spec =
                json!({"name": slug, "slug": slug, "destination_url": "https://offer.example/"});
            let response = stack
                .api(reqwest::Method::POST, "/api/v1/flows")
                .json(&spec)
                .send()
                .await;
            match response {
                Ok(response) if response.status().is_success() => created.push(slug),
                Ok(response) => {
                    refused = Some((response.status().as_u16(), response.text().await?));
                    break;
                }
                Err(error) => {
                    refused = Some((0, error.to_string()));
                    break;
                }
            }
        }
        let (status, body) = refused.context("every flow was created: no fault")?;
        println!("{} flows created, then {status}: {body}", created.len());
        anyhow::ensure!(
            status == 503,
            "a change Kafka could not take must be answered 503, not {status}: {body}"
        );
        eventually(Duration::from_secs(30), || async { Ok(stack.exited()) }).await?;
        exited_for_the_fault(&mut stack, "reporting-api")?;

        restart_without_fault(&mut stack, "reporting-api").await?;
        let after = format!("fatal-api-{}-after", stack.id);
        stack
            .create_flow(
                json!({"name": after, "slug": after, "destination_url": "https://offer.example/"}),
            )
            .await?;
        created.push(after);
        let listed = eventually(Duration::from_secs(30), || async {
            let flows: serde_json::Value = stack
                .api(reqwest::Method::GET, "/api/v1/flows")
                .send()
                .await?
                .json()
                .await?;
            let text = flows.to_string();
            Ok(created
                .iter()
                .all(|slug| text.contains(&format!("\"{slug}\"")))
                .then_some(text))
        })
        .await
        .context("a flow confirmed before the fault is missing after the restart")?;
        anyhow::ensure!(!listed.is_empty());
        anyhow::Ok(())
    }
    .await;
    stack.print_failure(&result);
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_stops_the_sink_and_its_restart_stores_every_row_once(
) -> anyhow::Result<()> {
    let mut stack = Stack::start_with(
        StackOptions::default()
            .services(&["sink"])
            // Its first dead letter meets the fault.
            .env("sink", FAULT, "1"),
    )
    .await?;
    let result = sink(&mut stack).await;
    stack.print_failure(&result);
    result
}

async fn sink(stack: &mut Stack) -> anyhow::Result<()> {
    let producer = traffsure_tests::produce::Producer::new(stack)?;
    let topics = producer.topics.clone();
    let click = |hash: &str| traffsure_events::Click {
        click_hash: hash.into(),
        flow_id: 7,
        ts_ms: traffsure_core::now_ms(),
        routing_key: 513,
        ..traffsure_events::Click::default()
    };
    // A click, a message no table can read (a dead letter), a click: one partition.
    producer
        .send(&topics.clicks, &[(513, click("before"))])
        .await?;
    producer
        .send_raw(&topics.clicks, &[(vec![2, 1], vec![0xff, 0xff, 0xff])])
        .await?;
    producer
        .send(&topics.clicks, &[(513, click("after"))])
        .await?;
    eventually(Duration::from_secs(60), || async { Ok(stack.exited()) }).await?;
    exited_for_the_fault(stack, "sink")?;

    restart_without_fault(stack, "sink").await?;
    let stored = eventually(Duration::from_secs(60), || async {
        let rows = stack
            .clickhouse("SELECT click_hash, count() FROM clicks GROUP BY click_hash ORDER BY click_hash FORMAT TSV")
            .await?;
        Ok((rows.lines().count() == 2).then_some(rows))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = stack
        .clickhouse("SELECT click_hash, count() FROM clicks GROUP BY click_hash ORDER BY click_hash FORMAT TSV")
        .await?;
    assert_eq!(stored, "after\t1\nbefore\t1");
    assert_eq!(again, stored, "a row stored twice");
    // The undecodable message is never a row; its dead letter, due after the insert of
    // the rows around it and cut off by the fault, is sent by the restart.
    let dead_topic = topics.dead_letter("sink");
    let letters = tokio::task::spawn_blocking(move || {
        traffsure_tests::kafka_topic::read_messages(
            &kafka_brokers(),
            &dead_topic,
            Duration::from_secs(30),
            Duration::from_secs(2),
            |letters: &[Vec<u8>]| !letters.is_empty(),
            |message| {
                Ok(rdkafka::Message::payload(message)
                    .unwrap_or_default()
                    .to_vec())
            },
        )
    })
    .await??;
    assert_eq!(letters, [vec![0xff, 0xff, 0xff]], "the dead letter, once");
    Ok(())
}

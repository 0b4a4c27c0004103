//! The whole pipeline over secured connections only: Kafka through a SASL_SSL listener
//! (SCRAM-SHA-512, the local CA, a client certificate the broker requires) and ClickHouse
//! through https with a password, on a private broker and server started for this test.
//! A wrong password or an untrusted CA stops a service at start, with the cause named,
//! well within the harness's start timeout.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use traffsure_tests::private_clickhouse::PrivateClickHouse;
use traffsure_tests::private_kafka::PrivateKafka;
use traffsure_tests::secured::Certificates;
use traffsure_tests::{click_hash_of, eventually, send_clicks, Stack, StackOptions};

const CLICKS: usize = 20;
/// How soon a refused start must end: librdkafka alone would retry for ever.
const FAIL_FAST: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_runs_over_sasl_ssl_and_https_and_refusals_stop_the_start() -> anyhow::Result<()> {
    let certificates = Certificates::make()?;
    let (kafka, clickhouse) = tokio::join!(
        PrivateKafka::start_secured(&certificates),
        PrivateClickHouse::start_secured(&certificates)
    );
    let (kafka, clickhouse) = (kafka?, clickhouse?);
    let clickhouse_url = clickhouse
        .secured
        .as_ref()
        .map(|s| s.url.clone())
        .unwrap_or_default();
    let secured = StackOptions {
        kafka_brokers: kafka.secured_brokers(),
        clickhouse_url,
        ..StackOptions::default()
    };
    let other_ca = certificates.path("other-ca.pem");

    // (service, setting, wrong value, what its log must say)
    let refusals: [(&'static str, &str, &str, [&str; 2]); 4] = [
        (
            "postback-ingest",
            "TRAFFSURE__KAFKA__SASL_PASSWORD",
            "not-the-password",
            ["kafka authentication failed", "SCRAM-SHA-512"],
        ),
        (
            "postback-ingest",
            "TRAFFSURE__KAFKA__SSL_CA_LOCATION",
            &other_ca,
            ["kafka tls", "certificate verify failed"],
        ),
        (
            "sink",
            "TRAFFSURE__CLICKHOUSE__PASSWORD",
            "not-the-password",
            ["clickhouse authentication failed", "Wrong password"],
        ),
        (
            "reporting-api",
            "TRAFFSURE__CLICKHOUSE__CA_PATH",
            &other_ca,
            ["clickhouse tls", "UnknownIssuer"],
        ),
    ];
    for (service, setting, value, causes) in refusals {
        let options = secured
            .clone()
            .services(&[service])
            .env("*", setting, value);
        refused(options, &causes).await?;
    }

    let stack = Stack::start_with(secured).await?;
    let result = pipeline(&stack).await;
    stack.print_failure(&result);
    result
}

/// Starts `options`' services expecting them to stop at once, each log naming every one
/// of `causes`.
async fn refused(options: StackOptions, causes: &[&str]) -> anyhow::Result<()> {
    // No backtrace: the start error stays within the log tail the harness reports.
    let options = options.env("*", "RUST_LIB_BACKTRACE", "0");
    let started = Instant::now();
    let outcome = Stack::start_with(options).await;
    let elapsed = started.elapsed();
    let Err(error) = outcome else {
        anyhow::bail!("the stack started although it should have been refused ({causes:?})");
    };
    let text = format!("{error:#}");
    assert!(text.contains("exited with"), "not a start failure: {text}");
    for cause in causes {
        assert!(text.contains(cause), "{cause:?} missing from:\n{text}");
    }
    assert!(
        elapsed < FAIL_FAST,
        "refused only after {elapsed:?}:\n{text}"
    );
    Ok(())
}

async fn pipeline(stack: &Stack) -> anyhow::Result<()> {
    let http = &stack.http;
    let slug = format!("secured-{}", stack.id);
    stack
        .create_flow(json!({
            "name": "Secured",
            "slug": slug,
            "destination_url": "https://offer.example/land?c={click}",
            "goals": [{"key": "sale", "payout": "2.5"}]
        }))
        .await?;

    // Clicks: the flow reached click-ingest through the secured flows topic.
    let track = stack.url("click-ingest", &format!("/c/{slug}"));
    let first = eventually(Duration::from_secs(30), || async {
        let response = http.get(&track).send().await?;
        Ok((response.status() == 302).then_some(response))
    })
    .await?;
    let mut hashes = vec![click_hash_of(first.headers()["location"].to_str()?)];
    hashes.extend(send_clicks(stack, &track, 1, CLICKS - 1).await?.0);
    assert!(hashes.iter().all(|h| h.len() == 40), "{hashes:?}");

    // Conversions: three with revenue 4, one with the goal's payout, one repeat.
    for query in [
        format!("click={}&goal=sale&revenue=4&uid=A", hashes[0]),
        format!("click={}&goal=sale&revenue=4&uid=B", hashes[1]),
        format!("click={}&goal=sale&revenue=4&uid=C", hashes[2]),
        format!("click={}&goal=sale", hashes[3]),
        format!("click={}&goal=sale&revenue=4&uid=A", hashes[0]),
    ] {
        let response = http
            .get(stack.url("postback-ingest", &format!("/postback?{query}")))
            .send()
            .await?;
        assert_eq!(response.status(), 200, "{query}");
        assert_eq!(response.json::<Value>().await?["code"], "accepted");
    }

    // The dashboard (sink → https ClickHouse → reporting-api): every click once, four
    // conversions worth 3 × 4 + 2.5.
    let expected = |d: &Value| {
        d["clicks_today"] == CLICKS as u64
            && d["conversions_today"] == 4
            && d["revenue_today"] == "14.5"
    };
    eventually(Duration::from_secs(90), || async {
        let d = stack.dashboard().await?;
        Ok(expected(&d).then_some(d))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = stack.dashboard().await?;
    assert!(expected(&settled), "{settled}");
    Ok(())
}

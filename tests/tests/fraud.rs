//! Fraud signals on the real stack: a click from a hosting provider's address goes to
//! the flow's bot URL with bot reason `datacenter`, the fourth click of an address within
//! the rate window goes there with reason `rate`, rules route by both signals, and the
//! clicks table and the reports carry AS number, organisation and both flags.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use traffsure_tests::kafka_topic::publish_flow;
use traffsure_tests::{eventually, geoip_file, Stack, StackOptions};

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
/// Amazon AWS addresses (AS16509), in iporigin's hosting ranges.
const AWS_A: &str = "3.0.0.1";
const AWS_B: &str = "52.95.110.1";
/// Deutsche Telekom (AS3320) and Andrews & Arnold (AS20712): no datacenter.
const TELEKOM: &str = "62.157.140.133";
const AAISP: &str = "81.2.69.160";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datacenter_and_rate_signals_route_and_are_stored() -> anyhow::Result<()> {
    let edge = "click-ingest";
    let stack = Stack::start_with(
        StackOptions::default()
            .services(&["click-ingest", "sink", "reporting-api"])
            .env(edge, "TRAFFSURE__CLIENT_IP__TRUSTED_PROXIES", "127.0.0.1")
            .env(edge, "TRAFFSURE__FRAUD__ASN_DATABASE", geoip_file("asn")?)
            .env(
                edge,
                "TRAFFSURE__FRAUD__HOSTING_RANGES",
                geoip_file("hosting-ranges.bin")?,
            )
            .env(edge, "TRAFFSURE__FRAUD__DATACENTER_IS_BOT", "true")
            .env(edge, "TRAFFSURE__FRAUD__RATE_MAX_CLICKS", "3")
            .env(edge, "TRAFFSURE__FRAUD__RATE_WINDOW_SECONDS", "3600")
            .env(edge, "TRAFFSURE__FRAUD__RATE_IS_BOT", "true"),
    )
    .await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

async fn click(stack: &Stack, slug: &str, ip: &str) -> anyhow::Result<String> {
    let response = stack
        .http
        .get(stack.url("click-ingest", &format!("/c/{slug}")))
        .header("x-forwarded-for", ip)
        .header("user-agent", CHROME)
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 302,
        "{slug} from {ip}: {}",
        response.status()
    );
    let location = response.headers()["location"].to_str()?;
    Ok(location.split('?').next().unwrap_or_default().to_string())
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let topic = format!("{}flows", stack.topic_prefix);
    let brokers = &stack.options.kafka_brokers;
    let (bots, signals) = (
        format!("bots-{}", stack.id),
        format!("signals-{}", stack.id),
    );
    publish_flow(
        brokers,
        &topic,
        1,
        json!({
            "name": "Bots", "slug": bots, "destination_url": "https://offer.test/?c={click}",
            "bot_url": "https://bots.test/?c={click}"
        }),
        None,
    )
    .await?;
    publish_flow(brokers, &topic, 2, json!({
        "name": "Signals", "slug": signals, "destination_url": "https://b.test/",
        "rules": [
            {"conditions": [{"field": "datacenter", "values": ["true"]}], "destinations": [{"url": "https://dc.test/"}]},
            {"conditions": [{"field": "rate_exceeded", "values": ["true"]}], "destinations": [{"url": "https://fast.test/"}]}
        ]
    }), None)
    .await?;
    // The edge follows the flows topic: wait until each flow is there (an unknown flow
    // records no click, so each flow gets exactly one probe click).
    for slug in [&bots, &signals] {
        eventually(Duration::from_secs(20), || async {
            let probe = stack
                .http
                .get(stack.url("click-ingest", &format!("/c/{slug}")))
                .header("x-forwarded-for", "10.9.9.9")
                .send()
                .await?;
            Ok((probe.status() == 302).then_some(()))
        })
        .await?;
    }

    // A hosting provider's address: the bot URL, or the datacenter rule.
    assert_eq!(click(stack, &bots, AWS_A).await?, "https://bots.test/");
    assert_eq!(click(stack, &signals, AWS_B).await?, "https://dc.test/");
    // Three clicks an hour are allowed per address; the fourth is over the rate.
    for n in 1..=4 {
        let expected = if n <= 3 {
            "https://offer.test/"
        } else {
            "https://bots.test/"
        };
        assert_eq!(click(stack, &bots, TELEKOM).await?, expected, "click {n}");
        let expected = if n <= 3 {
            "https://b.test/"
        } else {
            "https://fast.test/"
        };
        assert_eq!(click(stack, &signals, AAISP).await?, expected, "click {n}");
    }

    let rows = "SELECT ip, bot_reason, is_bot, datacenter, rate_exceeded, asn, as_org, count() \
        FROM clicks WHERE ip != '10.9.9.9' \
        GROUP BY ip, bot_reason, is_bot, datacenter, rate_exceeded, asn, as_org ORDER BY ip, bot_reason";
    let expected = "3.0.0.1\tdatacenter\t1\t1\t0\t16509\tAmazon.com, Inc.\t1\n\
        52.95.110.1\tdatacenter\t1\t1\t0\t16509\tAmazon.com, Inc.\t1\n\
        62.157.140.133\t\t0\t0\t0\t3320\tDeutsche Telekom AG\t3\n\
        62.157.140.133\trate\t1\t0\t1\t3320\tDeutsche Telekom AG\t1\n\
        81.2.69.160\t\t0\t0\t0\t20712\tAndrews & Arnold Ltd\t3\n\
        81.2.69.160\trate\t1\t0\t1\t20712\tAndrews & Arnold Ltd\t1";
    let stored = eventually(Duration::from_secs(60), || async {
        let got = stack.clickhouse(rows).await?;
        Ok((got.lines().count() >= 6).then_some(got))
    })
    .await?;
    assert_eq!(stored, expected);

    // The report groups and filters by the signals (bots are counted apart from clicks;
    // flow 1's probe click is the fourth click without a signal).
    let report = |query: String| async move {
        let response = stack
            .api(Method::GET, &format!("/api/v1/reports?{query}"))
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "{query}: {}", response.status());
        Ok::<Value, anyhow::Error>(response.json().await?)
    };
    let by_signal =
        report("group_by=datacenter,rate_exceeded&flow=1&sort=rate_exceeded".into()).await?;
    let cells: Vec<(String, String, i64, i64)> = by_signal["rows"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["datacenter"].as_str().unwrap_or_default().to_string(),
                r["rate_exceeded"].as_str().unwrap_or_default().to_string(),
                r["clicks"].as_i64().unwrap_or(-1),
                r["bots"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    let mut cells = cells;
    cells.sort();
    assert_eq!(
        cells,
        [
            ("0".into(), "0".into(), 4, 0),
            ("0".into(), "1".into(), 0, 1),
            ("1".into(), "0".into(), 0, 1)
        ],
        "{by_signal}"
    );
    let datacenter = report("group_by=asn,as_org&datacenter=true".into()).await?;
    assert_eq!(datacenter["totals"]["bots"], 2, "{datacenter}");
    assert_eq!(datacenter["rows"][0]["asn"], "16509", "{datacenter}");
    assert_eq!(
        datacenter["rows"][0]["as_org"], "Amazon.com, Inc.",
        "{datacenter}"
    );
    let telekom = report("group_by=flow&asn=AS3320".into()).await?;
    assert_eq!(telekom["totals"]["clicks"], 3, "{telekom}");
    assert_eq!(telekom["totals"]["bots"], 1, "{telekom}");
    let bad = stack
        .api(Method::GET, "/api/v1/reports?asn=cloud")
        .send()
        .await?;
    assert_eq!(bad.status(), 422);
    assert_eq!(bad.json::<Value>().await?["field"], "asn");
    Ok(())
}

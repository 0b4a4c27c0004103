//! Bots on the real stack: a crawler, a headless browser, a configured user-agent marker,
//! a configured address and an empty user agent each go to the flow's bot URL, and their
//! clicks row in ClickHouse carries the reason; a Cubot phone (the word "bot" in its
//! brand) is a person, with its brand and model recorded.

use std::time::Duration;

use serde_json::json;
use traffsure_tests::kafka_topic::publish_flow;
use traffsure_tests::{eventually, Stack, StackOptions};

const CUBOT: &str = "Mozilla/5.0 (Linux; Android 9; CUBOT X20 PRO) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/74.0.3729.136 Mobile Safari/537.36";
const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bot_reason_goes_to_the_bot_url_and_is_recorded() -> anyhow::Result<()> {
    let stack = Stack::start_with(
        StackOptions::default()
            .services(&["click-ingest", "sink"])
            .env(
                "click-ingest",
                "TRAFFSURE__CLIENT_IP__TRUSTED_PROXIES",
                "127.0.0.1",
            )
            .env("click-ingest", "TRAFFSURE__BOTS__IPS", "203.0.113.0/24")
            .env(
                "click-ingest",
                "TRAFFSURE__BOTS__USER_AGENTS",
                "AcmeScanner",
            )
            .env("click-ingest", "TRAFFSURE__BOTS__EMPTY_USER_AGENT", "true"),
    )
    .await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let flow = publish_flow(
        &stack.options.kafka_brokers,
        &format!("{}flows", stack.topic_prefix),
        1,
        json!({"name": "Bots", "slug": format!("b-{}", stack.id),
            "destination_url": "https://offer.test/?c={click}",
            "bot_url": "https://bots.test/?c={click}"}),
        None,
    )
    .await?;
    let path = format!("/c/b-{}", stack.id);
    let click = |ip: &'static str, ua: Option<&'static str>| {
        let request = stack
            .http
            .get(stack.url("click-ingest", &path))
            .header("x-forwarded-for", ip);
        let request = match ua {
            Some(ua) => request.header("user-agent", ua),
            None => request,
        };
        async move {
            let response = request.send().await?;
            anyhow::ensure!(response.status() == 302, "answered {}", response.status());
            Ok::<_, anyhow::Error>(response.headers()["location"].to_str()?.to_string())
        }
    };
    // The flow reaches the edge through Kafka.
    eventually(Duration::from_secs(30), || async {
        let response = stack
            .http
            .get(stack.url("click-ingest", &path))
            .send()
            .await?;
        Ok((response.status() == 302).then_some(()))
    })
    .await?;
    // That probe was a click without a user agent: an `empty_ua` bot too.
    let cases: [(&str, Option<&str>, &str); 7] = [
        ("8.8.8.8", Some("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"), "crawler"),
        ("8.8.8.8", Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/126.0.0.0 Safari/537.36"), "headless"),
        ("8.8.8.8", Some("python-requests/2.32.3"), "headless"),
        ("8.8.8.8", Some("Mozilla/5.0 AcmeScanner/2.0"), "ua_list"),
        ("203.0.113.9", Some(CHROME_WINDOWS), "ip_list"),
        ("8.8.8.8", None, "empty_ua"),
        ("8.8.8.8", Some(CUBOT), ""),
    ];
    for (ip, ua, reason) in cases {
        let location = click(ip, ua).await?;
        let expected = if reason.is_empty() {
            "https://offer.test/"
        } else {
            "https://bots.test/"
        };
        anyhow::ensure!(
            location.starts_with(expected),
            "{ua:?} from {ip} went to {location}, expected {expected}"
        );
    }

    let flow_id = flow.id;
    let rows = eventually(Duration::from_secs(60), || async {
        let rows = stack
            .clickhouse(&format!(
                "SELECT is_bot, bot_reason, device, os, browser, device_brand, device_model, \
                 user_agent, 'end' FROM clicks WHERE flow_id = {flow_id} FORMAT TabSeparated"
            ))
            .await
            .unwrap_or_default();
        Ok((rows.lines().count() == cases.len() + 1).then_some(rows))
    })
    .await?;
    let lines: Vec<Vec<&str>> = rows.lines().map(|l| l.split('\t').collect()).collect();
    // A last column that is never empty, as the answer comes trimmed. Clicks of the same
    // millisecond have no order: each is found by its user agent. The
    // probe and the empty-agent case are both `empty_ua`.
    for (_, ua, reason) in cases {
        let ua = ua.unwrap_or_default();
        let found: Vec<&Vec<&str>> = lines.iter().filter(|l| l[7] == ua).collect();
        assert_eq!(
            found.len(),
            if ua.is_empty() { 2 } else { 1 },
            "{ua:?}: {rows}"
        );
        let expected_bot = if reason.is_empty() { "0" } else { "1" };
        for line in found {
            assert_eq!(&line[..2], [expected_bot, reason], "{ua:?}: {rows}");
        }
    }
    let cubot = lines
        .iter()
        .find(|l| l[7] == CUBOT)
        .ok_or_else(|| anyhow::anyhow!("no cubot click: {rows}"))?;
    assert_eq!(
        &cubot[2..7],
        ["mobile", "android", "chrome", "Cubot", "X20 PRO"],
        "{rows}"
    );
    Ok(())
}

//! Impressions end to end (real click-ingest, attribution, sink, reporting API): the pixel
//! `GET /i/{flow}` answers a 1×1 GIF, or JSON with the impression id on `?format=json` or
//! `Accept: application/json`, with CORS, and refuses what it cannot use; each impression
//! is enriched like a click (user agent, bot check, subs, source, cost) on the
//! `impressions` topic and lands in ClickHouse once; a click names its impression with
//! `imp=` (a forged id is dropped) and its conversion carries it, so impression → click →
//! conversion can be followed; reports count impressions (people only), CTR and the
//! impressions' cost exactly.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use traffsure_events::Impression;
use traffsure_tests::{click_hash_of, eventually, first_click, Stack};

mod postback_support;
use postback_support::{flow_id, get as postback, TopicReader};

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                      (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impressions_are_recorded_once_linked_to_clicks_and_reported() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

fn header<'r>(response: &'r reqwest::Response, name: &str) -> &'r str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let slug = format!("imp-{}", stack.id);
    let flow = stack
        .create_flow(json!({
            "name": "Impressions", "slug": slug,
            "destination_url": "https://offer.example/land?c={click}",
            "goals": [{"key": "sale", "payout": "2"}],
        }))
        .await?;
    let flow = flow_id(&flow);
    let track = stack.url("click-ingest", &format!("/c/{slug}"));
    first_click(stack, &track).await?;
    let pixel = |query: &str| stack.url("click-ingest", &format!("/i/{slug}?{query}"));

    // Refusals: an unknown flow, a bad visitor id, another method; a preflight answers.
    let unknown = stack
        .http
        .get(stack.url("click-ingest", "/i/no-such-flow"))
        .send()
        .await?;
    assert_eq!(unknown.status(), 404);
    assert_eq!(header(&unknown, "access-control-allow-origin"), "*");
    let body: Value = unknown.json().await?;
    assert_eq!(
        (body["code"].as_str(), body["field"].as_str()),
        (Some("unknown_flow"), Some("flow"))
    );
    let bad = stack.http.get(pixel("vid=xyz")).send().await?;
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await?;
    assert_eq!(body["field"].as_str(), Some("vid"));
    assert_eq!(stack.http.post(pixel("")).send().await?.status(), 405);
    let preflight = stack
        .http
        .request(Method::OPTIONS, pixel(""))
        .send()
        .await?;
    assert_eq!(preflight.status(), 204);

    let mut topic = TopicReader::open(stack, "impressions", |i: &Impression| {
        i.impression_id.clone()
    })
    .await?;

    // Two GIF pixels, two JSON answers (by parameter and by Accept), one crawler.
    let query = "sub_id=banner-7&source=net&sub2=zone%209&cost=0.5&cost_currency=USD&ad=42";
    for _ in 0..2 {
        let gif = stack
            .http
            .get(pixel(query))
            .header("user-agent", CHROME)
            .header("referer", "https://publisher.test/page")
            .send()
            .await?;
        assert_eq!(gif.status(), 200);
        assert_eq!(header(&gif, "content-type"), "image/gif");
        assert_eq!(header(&gif, "access-control-allow-origin"), "*");
        assert_eq!(header(&gif, "cache-control"), "no-store");
        assert!(header(&gif, "location").is_empty(), "no redirect");
        let bytes = gif.bytes().await?;
        assert_eq!((&bytes[..6], bytes.len()), (&b"GIF89a"[..], 43));
    }
    let by_param = stack
        .http
        .get(pixel(&format!("{query}&format=json")))
        .header("user-agent", CHROME)
        .send()
        .await?;
    assert_eq!(by_param.status(), 200);
    assert_eq!(header(&by_param, "access-control-allow-origin"), "*");
    let by_param: Value = by_param.json().await?;
    let by_accept: Value = stack
        .http
        .get(pixel(query))
        .header("user-agent", CHROME)
        .header("accept", "application/json")
        .send()
        .await?
        .json()
        .await?;
    let crawler: Value = stack
        .http
        .get(pixel(&format!("{query}&format=json")))
        .header("user-agent", GOOGLEBOT)
        .send()
        .await?
        .json()
        .await?;
    let id = |v: &Value| v["impression"].as_str().unwrap_or_default().to_string();
    let (first, second, bot) = (id(&by_param), id(&by_accept), id(&crawler));
    for answer in [&by_param, &by_accept, &crawler] {
        assert_eq!(answer["flow"].as_u64(), Some(u64::from(flow)), "{answer}");
        assert_eq!(
            answer["visitor"].as_str().map(str::len),
            Some(32),
            "{answer}"
        );
    }
    assert!(
        first.starts_with('i') && first != second,
        "{first} {second}"
    );

    // Enriched like a click.
    let events = topic.wait_for(&[first.clone(), bot.clone()]).await?;
    let (person, robot) = (&events[0], &events[1]);
    assert_eq!(person.flow_id, flow);
    assert_eq!(
        (person.sub_id.as_str(), person.source.as_str()),
        ("banner-7", "net")
    );
    assert_eq!(person.subs.get(1).map(String::as_str), Some("zone 9"));
    assert_eq!(
        (person.cost_micros, person.cost_currency.as_str()),
        (500_000, "USD")
    );
    assert_eq!(person.extra.get("ad").map(String::as_str), Some("42"));
    assert!(!person.extra.contains_key("format"));
    assert_eq!(
        (
            person.browser.as_str(),
            person.os.as_str(),
            person.device.as_str()
        ),
        ("chrome", "windows", "desktop")
    );
    assert!(!person.is_bot);
    assert_eq!(person.user_agent, CHROME);
    assert_eq!(
        person.visitor_id,
        by_param["visitor"].as_str().unwrap_or_default()
    );
    assert!(robot.is_bot, "a crawler's impression is a bot's");
    assert_eq!(robot.bot_reason(), traffsure_events::BotReason::Crawler);

    // A click naming the first impression, one naming a forged id; the first converts.
    let named = stack
        .http
        .get(format!("{track}?sub_id=banner-7&imp={first}"))
        .send()
        .await?;
    assert_eq!(named.status(), 302);
    let named = click_hash_of(named.headers()["location"].to_str()?);
    let forged = stack
        .http
        .get(format!("{track}?sub_id=banner-7&imp=iforged"))
        .send()
        .await?;
    assert_eq!(forged.status(), 302);
    let forged = click_hash_of(forged.headers()["location"].to_str()?);
    let converted = postback(stack, &format!("/postback?click={named}&goal=sale")).await?;
    assert_eq!(converted.status, 200, "{}", converted.message);

    // In ClickHouse once each, and impression → click → conversion followed by id.
    let stored = eventually(Duration::from_secs(60), || async {
        let rows = stack
            .clickhouse(&format!(
                "SELECT count(), countIf(is_bot = 1), uniqExact(impression_id), sum(cost_micros) \
                 FROM impressions WHERE flow_id = {flow} FORMAT TSV"
            ))
            .await?;
        Ok((rows.trim().starts_with("5\t")).then_some(rows))
    })
    .await?;
    assert_eq!(stored.trim(), "5\t1\t5\t2500000");
    let chain = eventually(Duration::from_secs(60), || async {
        let rows = stack
            .clickhouse(&format!(
                "SELECT impression_id, click_hash, conversion_id != '' \
                 FROM (SELECT impression_id, click_hash FROM clicks \
                   WHERE flow_id = {flow} AND impression_id IN \
                   (SELECT impression_id FROM impressions WHERE flow_id = {flow})) \
                 ANY INNER JOIN (SELECT click_hash, conversion_id, impression_id AS vi \
                   FROM conversions WHERE flow_id = {flow}) USING click_hash \
                 WHERE vi = impression_id FORMAT TSV"
            ))
            .await?;
        Ok((!rows.trim().is_empty()).then_some(rows))
    })
    .await?;
    assert_eq!(chain.trim(), format!("{first}\t{named}\t1"));
    let forged_imp = stack
        .clickhouse(&format!(
            "SELECT impression_id FROM clicks WHERE click_hash = '{forged}' FORMAT TSV"
        ))
        .await?;
    assert_eq!(forged_imp.trim(), "", "a forged impression id is not kept");

    // Reports: 4 impressions of people, 2 clicks: CTR 50 %; cost is the pixels' 4 × 0.5
    // (the crawler's 0.5 as well: cost is what was paid) — 2.5 in all.
    let report = eventually(Duration::from_secs(30), || async {
        let report: Value = stack
            .api(
                Method::GET,
                &format!("/api/v1/reports?group_by=sub_id&flow={flow}"),
            )
            .send()
            .await?
            .json()
            .await?;
        let row = report["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["sub_id"] == "banner-7")
            .cloned();
        Ok(row.filter(|r| r["impressions"] == 4 && r["approved"] == 1))
    })
    .await?;
    assert_eq!(report["clicks"], 2, "{report}");
    assert_eq!(report["ctr"].as_f64(), Some(50.0), "{report}");
    assert_eq!(report["cost"], "2.5", "{report}");
    // By country and by day the impressions add up the same; a report filtered by an
    // offer has none (impressions go through no offer).
    let by_day: Value = stack
        .api(
            Method::GET,
            &format!("/api/v1/reports?group_by=day&flow={flow}"),
        )
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(by_day["totals"]["impressions"], 4, "{by_day}");
    let by_offer: Value = stack
        .api(
            Method::GET,
            &format!("/api/v1/reports?group_by=day&flow={flow}&offer=1"),
        )
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(by_offer["totals"]["impressions"], 0, "{by_offer}");
    // Grouped by offer, the clicks and impressions of no offer are one row: the flow's 3
    // clicks (banner-7's 2 and one more) over its 4 impressions.
    let grouped: Value = stack
        .api(
            Method::GET,
            &format!("/api/v1/reports?group_by=offer&flow={flow}"),
        )
        .send()
        .await?
        .json()
        .await?;
    let rows = grouped["rows"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 1, "{grouped}");
    assert_eq!(rows[0]["impressions"], 4, "{grouped}");
    assert_eq!(rows[0]["clicks"], 3, "{grouped}");
    assert_eq!(rows[0]["ctr"].as_f64(), Some(75.0), "{grouped}");

    // Still once each after a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = stack
        .clickhouse(&format!(
            "SELECT count() FROM impressions WHERE flow_id = {flow} FORMAT TSV"
        ))
        .await?;
    assert_eq!(again.trim(), "5");
    Ok(())
}

/// A crash of click-ingest loses no answered impression and counts none twice: pixels
/// requested by concurrent clients while click-ingest is killed with SIGKILL twice; every
/// impression whose JSON answer a client received is in ClickHouse, and no impression id
/// is there twice (the impression log and its recovery, as the click log's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_edge_loses_and_doubles_no_answered_impression() -> anyhow::Result<()> {
    let mut stack = Stack::start_with(
        traffsure_tests::StackOptions::default().services(&["click-ingest", "sink"]),
    )
    .await?;
    let result = crash(&mut stack).await;
    stack.print_failure(&result);
    result
}

async fn crash(stack: &mut Stack) -> anyhow::Result<()> {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let slug = format!("imp-crash-{}", stack.id);
    traffsure_tests::kafka_topic::publish_flow(
        &traffsure_tests::kafka_brokers(),
        &format!("{}flows", stack.topic_prefix),
        1,
        json!({"name": "Impression crash", "slug": slug,
               "destination_url": "https://offer.example/?c={click}"}),
        None,
    )
    .await?;
    let url = Arc::new(stack.url("click-ingest", &format!("/i/{slug}?format=json")));
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let first = eventually(Duration::from_secs(20), || async {
        let response = stack.http.get(url.as_str()).send().await?;
        if response.status() != 200 {
            return Ok(None);
        }
        let body: Value = response.json().await?;
        Ok(body["impression"].as_str().map(str::to_string))
    })
    .await?;
    accepted
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(first);

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (http, url, accepted, stop) = (
            stack.http.clone(),
            url.clone(),
            accepted.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let Ok(response) = http.get(url.as_str()).send().await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                if response.status() != 200 {
                    continue;
                }
                // An answer cut off by the kill is not an accepted impression.
                if let Ok(body) = response.json::<Value>().await {
                    if let Some(id) = body["impression"].as_str() {
                        accepted
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(id.to_string());
                    }
                }
            }
        }));
    }
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stack.kill("click-ingest").await?;
        stack.restart("click-ingest").await?;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await?;
    }
    let accepted: HashSet<String> = accepted
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect();
    anyhow::ensure!(
        accepted.len() > 100,
        "only {} impressions answered",
        accepted.len()
    );

    let stored = eventually(Duration::from_secs(90), || async {
        let rows = stack
            .clickhouse("SELECT impression_id FROM impressions WHERE flow_id = 1 FORMAT TSV")
            .await?;
        let ids: Vec<String> = rows.lines().map(str::to_string).collect();
        let have: HashSet<&String> = ids.iter().collect();
        Ok(accepted.iter().all(|id| have.contains(id)).then_some(ids))
    })
    .await?;
    // Rows the sink writes after this read would only add more copies; wait a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rows = stack
        .clickhouse(
            "SELECT count(), uniqExact(impression_id) FROM impressions WHERE flow_id = 1 FORMAT TSV",
        )
        .await?;
    let (count, unique) = rows.trim().split_once('\t').unwrap_or_default();
    assert_eq!(count, unique, "an impression stored twice");
    assert!(stored.len() >= accepted.len());
    eprintln!(
        "{} impressions answered across 2 kills, {} stored",
        accepted.len(),
        unique
    );
    Ok(())
}

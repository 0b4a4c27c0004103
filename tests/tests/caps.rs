//! Caps on the real stack (docs/caps.md). A per-offer daily click cap, read in the offer's
//! time zone (clicks of the day before, produced straight to the clicks topic, do not
//! count; the day's do), moves traffic to the next offer of the path and then to the
//! flow's cap fallback; a flow's own click cap sends it to the fallback. A daily
//! conversion cap of 50 with two click-ingest and two attribution instances under load:
//! the conversions admitted within the cap exceed 50 by no more than the bound
//! docs/caps.md states (measured and printed), the over-cap ones are marked, later
//! traffic lands on the fallback, a local receiver gets exactly the under-cap postbacks
//! (the over-cap ones are held, shown so in the outbound log, and a replay releases one);
//! a second flow that suppresses over-cap postbacks records them as not sent.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use traffsure_core::caps::{period_range, Period};
use traffsure_events::{Click, ClickKind};
use traffsure_tests::produce::Producer;
use traffsure_tests::{
    click_hash_of, eventually, first_click, record_requests, Requests, Stack, StackOptions,
};

const OFFER_TZ: &str = "Pacific/Kiritimati";

fn id(view: &Value) -> anyhow::Result<u64> {
    view["id"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no id in {view}"))
}

async fn offer(stack: &Stack, spec: Value) -> anyhow::Result<u64> {
    id(&stack
        .api_expect(Method::POST, "/api/v1/offers", Some(spec), 201)
        .await?)
}

async fn location(stack: &Stack, url: &str) -> anyhow::Result<String> {
    let response = stack.http.get(url).send().await?;
    anyhow::ensure!(response.status() == 302, "{url}: {}", response.status());
    Ok(response.headers()["location"].to_str()?.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_cap_moves_traffic_to_the_next_offer_then_to_the_fallback() -> anyhow::Result<()> {
    let stack =
        Stack::start_with(StackOptions::default().services(&["click-ingest", "reporting-api"]))
            .await?;
    let result = click_cap(&stack).await;
    stack.print_failure(&result);
    result
}

async fn click_cap(stack: &Stack) -> anyhow::Result<()> {
    let offer_a = offer(
        stack,
        json!({"name": "A", "url": "https://a.test/?c={click}", "time_zone": OFFER_TZ,
               "caps": [{"metric": "clicks", "period": "day", "limit": 5}]}),
    )
    .await?;
    let offer_b = offer(
        stack,
        json!({"name": "B", "url": "https://b.test/?c={click}",
               "caps": [{"metric": "clicks", "period": "day", "limit": 3}]}),
    )
    .await?;
    let flow = stack
        .create_flow(json!({
            "name": "Capped",
            "path": {"offers": [{"offer_id": offer_a, "weight": 1_000_000}, {"offer_id": offer_b, "weight": 1}]},
            "cap_fallback_url": "https://fallback.test/?c={click}",
        }))
        .await?;
    let flow_id = id(&flow)? as u32;
    let track = stack.url("click-ingest", &format!("/c/{flow_id}"));
    // The first click (once the edge knows the flow) goes to A: 1 of A's 5.
    first_click(stack, &track).await?;

    // Clicks of A produced by another instance: three a minute before the day began in
    // the offer's time zone (yesterday's: not counted), two a minute after (counted).
    let now = traffsure_core::now_ms();
    let zone = traffsure_core::routing::zone(OFFER_TZ)
        .ok_or_else(|| anyhow::anyhow!("no time zone {OFFER_TZ}"))?;
    let (day_start, _) = period_range(Period::Day, now, &zone);
    anyhow::ensure!(
        now - day_start > 120_000,
        "too close to the offer's midnight"
    );
    let produced: Vec<(u16, Click)> = (0..5)
        .map(|i| {
            let ts_ms = if i < 3 {
                day_start - 60_000
            } else {
                day_start + 60_000
            };
            (
                i as u16,
                Click {
                    click_hash: format!("produced-{i}"),
                    flow_id,
                    ts_ms,
                    routing_key: i,
                    kind: ClickKind::Visit as i32,
                    offer_id: offer_a as u32,
                    ..Click::default()
                },
            )
        })
        .collect();
    let producer = Producer::new(stack)?;
    producer.send(&producer.topics.clicks, &produced).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut went = Vec::new();
    for _ in 0..8 {
        let to = location(stack, &track).await?;
        went.push(to.split('?').next().unwrap_or_default().to_string());
    }
    let expected: Vec<&str> = [
        // A: 1 + 2 of today's counted, 2 left.
        "https://a.test/",
        "https://a.test/",
        // B: its 3.
        "https://b.test/",
        "https://b.test/",
        "https://b.test/",
        // Both capped: the fallback.
        "https://fallback.test/",
        "https://fallback.test/",
        "https://fallback.test/",
    ]
    .to_vec();
    assert_eq!(went, expected);

    // A flow's own cap: three visits in all, then the fallback.
    let flow = stack
        .create_flow(json!({
            "name": "Flow capped",
            "destination_url": "https://dest.test/?c={click}",
            "caps": [{"metric": "clicks", "period": "lifetime", "limit": 3}],
            "cap_fallback_url": "https://fallback.test/?c={click}",
        }))
        .await?;
    anyhow::ensure!(flow["caps"][0]["limit"] == 3, "{flow}");
    let track = stack.url("click-ingest", &format!("/c/{}", id(&flow)?));
    first_click(stack, &track).await?;
    let mut went = Vec::new();
    for _ in 0..4 {
        let to = location(stack, &track).await?;
        went.push(to.split('?').next().unwrap_or_default().to_string());
    }
    assert_eq!(
        went,
        [
            "https://dest.test/",
            "https://dest.test/",
            "https://fallback.test/",
            "https://fallback.test/"
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversion_cap_holds_across_instances_within_the_stated_bound() -> anyhow::Result<()> {
    let (port, received) = record_requests()?;
    let stack = Stack::start_with(
        StackOptions::default()
            .instances("click-ingest", 2)
            .instances("conversion-attribution", ATTRIBUTION)
            .env(
                "postback-dispatcher",
                "TRAFFSURE__OUTBOUND__ALLOW_PRIVATE_TARGETS",
                "true",
            ),
    )
    .await?;
    let result = conversion_cap(&stack, port, received).await;
    stack.print_failure(&result);
    result
}

const CAP: i64 = 50;
const ATTRIBUTION: usize = 2;
const CLICKS: usize = 90;
/// The propagation delay docs/caps.md states: attribution's commit interval (250 ms by
/// default: a conversion is visible to the others once its transaction commits) and one
/// second for the followers' fetch and poll.
const PROPAGATION_S: f64 = 1.25;

async fn conversion_cap(stack: &Stack, port: u16, received: Requests) -> anyhow::Result<()> {
    let capped = offer(
        stack,
        json!({"name": "Capped", "url": "https://offer.test/?c={click}",
               "caps": [{"metric": "conversions", "period": "day", "limit": CAP}]}),
    )
    .await?;
    let strict = offer(
        stack,
        json!({"name": "Strict", "url": "https://strict.test/?c={click}",
               "caps": [{"metric": "conversions", "period": "day", "limit": 1}],
               "over_cap_postbacks": "suppress"}),
    )
    .await?;
    let receiver = format!("http://127.0.0.1:{port}/pb?c={{click}}&p={{payout}}");
    let flow = stack
        .create_flow(json!({
            "name": "Cap of 50",
            "path": {"offers": [{"offer_id": capped}]},
            "cap_fallback_url": "https://fallback.test/?c={click}",
            "over_cap_postbacks": "hold",
            "outbound_postbacks": [{"url": receiver, "on_status": "any"}],
        }))
        .await?;
    let flow_id = id(&flow)?;
    let flow2 = stack
        .create_flow(json!({
            "name": "Suppressing",
            "path": {"offers": [{"offer_id": strict}]},
            "cap_fallback_url": "https://fallback.test/?c={click}",
            "outbound_postbacks": [{"url": receiver, "on_status": "any"}],
        }))
        .await?;
    let flow2_id = id(&flow2)?;
    let edges = ["click-ingest", "click-ingest#2"];
    for edge in edges {
        first_click(stack, &stack.url(edge, &format!("/c/{flow2_id}"))).await?;
        first_click(stack, &stack.url(edge, &format!("/c/{flow_id}"))).await?;
    }

    // Clicks on both edges, all to the offer (no conversion yet), then their postbacks
    // under load: 12 at a time, spread over both attribution instances by routing key.
    let mut hashes = Vec::new();
    for i in 0..CLICKS {
        let to = location(stack, &stack.url(edges[i % 2], &format!("/c/{flow_id}"))).await?;
        anyhow::ensure!(to.starts_with("https://offer.test/"), "{to}");
        hashes.push(click_hash_of(&to));
    }
    // Attribution has the clicks (as the sink has) before the postbacks come, so it
    // converts them as they come rather than in one burst of held postbacks.
    eventually(Duration::from_secs(30), || async {
        let n = stack
            .clickhouse(&format!(
                "SELECT count() FROM clicks WHERE flow_id = {flow_id}"
            ))
            .await?;
        Ok((n.trim().parse::<usize>().unwrap_or(0) >= CLICKS).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let postback = Arc::new(stack.url("postback-ingest", "/postback"));
    let mut tasks = Vec::new();
    for chunk in hashes.chunks(CLICKS.div_ceil(4)) {
        let (http, postback, chunk) = (stack.http.clone(), postback.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for hash in chunk {
                let response = http
                    .get(format!("{postback}?click={hash}&revenue=2"))
                    .send()
                    .await?;
                anyhow::ensure!(response.status() == 200, "postback {}", response.status());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }

    // Every conversion stored: count those within the cap and those over it.
    let counts = eventually(Duration::from_secs(60), || async {
        let text = stack
            .clickhouse(&format!(
                "SELECT count(), sum(over_cap) FROM conversions WHERE version = 1 AND flow_id = {flow_id} FORMAT TSV"
            ))
            .await?;
        let mut fields = text.split_whitespace().map(|f| f.parse::<i64>().unwrap_or(-1));
        let (total, over) = (fields.next().unwrap_or(-1), fields.next().unwrap_or(-1));
        Ok((total == CLICKS as i64).then_some((total, over)))
    })
    .await?;
    let (total, over) = counts;
    let under = total - over;
    // The rate attribution converted at: the conversions over the span of their
    // creation times, shared by the two instances.
    let span = stack
        .clickhouse(&format!(
            "SELECT max(updated_at_ms) - min(updated_at_ms) FROM conversions WHERE version = 1 AND flow_id = {flow_id}"
        ))
        .await?;
    let seconds = (span.trim().parse::<f64>().unwrap_or(0.0) / 1000.0).max(0.1);
    let rate_per_instance = total as f64 / seconds / ATTRIBUTION as f64;
    // The bound (docs/caps.md): with A attribution instances each converting r a second,
    // at most (A - 1) × r × d conversions over the cap, d the propagation delay.
    let bound = ((ATTRIBUTION - 1) as f64 * rate_per_instance * PROPAGATION_S).ceil() as i64;
    let overshoot = under - CAP;
    println!(
        "conversion cap {CAP}: {total} conversions in {seconds:.2} s ({rate_per_instance:.1}/s per attribution instance), \
         {under} within the cap, {over} over it; overshoot {overshoot}, bound {bound}"
    );
    assert!(under >= CAP, "the cap admitted only {under}");
    assert!(
        overshoot <= bound,
        "overshoot {overshoot} exceeds the bound {bound}"
    );
    assert!(over > 0, "no conversion was over the cap");

    // Over-cap traffic lands on the fallback, on both edges.
    for edge in edges {
        let to = eventually(Duration::from_secs(10), || async {
            let to = location(stack, &stack.url(edge, &format!("/c/{flow_id}"))).await?;
            Ok(to.starts_with("https://fallback.test/").then_some(to))
        })
        .await?;
        anyhow::ensure!(to.contains("c="), "{to}");
        for _ in 0..5 {
            let to = location(stack, &stack.url(edge, &format!("/c/{flow_id}"))).await?;
            assert!(to.starts_with("https://fallback.test/"), "{edge}: {to}");
        }
    }

    // The receiver gets exactly the under-cap conversions' postbacks; the others are held.
    let under_hashes: BTreeSet<String> = stack
        .clickhouse(&format!(
            "SELECT click_hash FROM conversions WHERE version = 1 AND flow_id = {flow_id} AND over_cap = 0 FORMAT TSV"
        ))
        .await?
        .lines()
        .map(String::from)
        .collect();
    let got = |received: &Requests| -> Vec<String> {
        received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|r| {
                r.query
                    .split('&')
                    .find_map(|p| p.strip_prefix("c="))
                    .map(String::from)
            })
            .collect()
    };
    eventually(Duration::from_secs(30), || async {
        let held = stack
            .clickhouse(&format!(
                "SELECT count() FROM outbound_log WHERE flow_id = {flow_id} AND cap_action = 'held' AND state = 'refused' FORMAT TSV"
            ))
            .await?;
        Ok((held.trim() == over.to_string()).then_some(()))
    })
    .await?;
    // The outbound log's API shows them held.
    let log = stack
        .api_expect(
            Method::GET,
            &format!("/api/v1/outbound-postbacks?flow={flow_id}&limit=500"),
            None,
            200,
        )
        .await?;
    let held_items = log["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|i| i["cap_action"] == "held" && i["state"] == "refused")
                .count()
        })
        .unwrap_or_default();
    assert_eq!(held_items as i64, over, "held in the outbound log");
    let sent: BTreeSet<String> = got(&received)
        .into_iter()
        .filter(|h| hashes.contains(h))
        .collect();
    assert_eq!(sent.len() as i64, under, "postbacks received");
    assert_eq!(sent, under_hashes, "the receiver got the under-cap ones");
    assert_eq!(
        got(&received).iter().filter(|h| hashes.contains(h)).count() as i64,
        under,
        "each once"
    );

    // A replay releases a held postback.
    let held = stack
        .clickhouse(&format!(
            "SELECT conversion_id, click_hash FROM conversions WHERE version = 1 AND flow_id = {flow_id} AND over_cap = 1 LIMIT 1 FORMAT TSV"
        ))
        .await?;
    let (conversion_id, held_hash) = held
        .trim()
        .split_once('\t')
        .ok_or_else(|| anyhow::anyhow!("no held conversion: {held:?}"))?;
    let replay = stack
        .api(Method::POST, "/api/v1/outbound-postbacks/replay")
        .json(&json!({"conversion_id": conversion_id}))
        .send()
        .await?;
    anyhow::ensure!(replay.status().is_success(), "replay: {}", replay.status());
    eventually(Duration::from_secs(30), || async {
        Ok(got(&received).iter().any(|h| h == held_hash).then_some(()))
    })
    .await?;

    // The suppressing flow: one conversion within its offer's cap of 1, two over it,
    // recorded as not sent.
    let mut strict_hashes = Vec::new();
    for _ in 0..3 {
        let to = location(stack, &stack.url("click-ingest", &format!("/c/{flow2_id}"))).await?;
        anyhow::ensure!(to.starts_with("https://strict.test/"), "{to}");
        strict_hashes.push(click_hash_of(&to));
    }
    for hash in &strict_hashes {
        let response = stack
            .http
            .get(format!("{postback}?click={hash}&revenue=1"))
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "postback {}", response.status());
        // One at a time: the second must see the first.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    eventually(Duration::from_secs(30), || async {
        let text = stack
            .clickhouse(&format!(
                "SELECT countIf(cap_action = 'suppressed' AND state = 'refused'), countIf(state = 'delivered') FROM outbound_log WHERE flow_id = {flow2_id} FORMAT TSV"
            ))
            .await?;
        Ok((text.trim() == "2\t1").then_some(()))
    })
    .await?;
    let strict_sent = got(&received)
        .into_iter()
        .filter(|h| strict_hashes.contains(h))
        .count();
    assert_eq!(
        strict_sent, 1,
        "only the conversion within the cap was sent"
    );
    Ok(())
}

//! Direct tracking in a real headless Chromium (`tests/browser/direct.mjs`): a lander on
//! 127.0.0.1 records a visit through `/v/` without a redirect and keeps the click hash
//! first-party, its offer link carries it to a third site (127.0.0.2), which converts
//! through `ts.js` with third-party cookies allowed and blocked; a visit through `/c/`
//! reuses the hash in the lander's URL. The tracker is on `localhost`, a different site
//! from both. Clicks, postbacks and conversions are checked on their Kafka topics (real
//! click-ingest, postback-ingest and conversion-attribution). Screenshots land in
//! `target/browser-screenshots/direct/`.

mod postback_support;

use std::time::Duration;

use anyhow::Context;
use postback_support::{clicks, flow_id, postback_log, postbacks, TopicReader};
use serde_json::{json, Value};
use traffsure_events::{ClickKind, Conversion};
use traffsure_tests::browser::run_script;
use traffsure_tests::{Stack, StackOptions};

/// The tracker's URL on `localhost` instead of 127.0.0.1: another site than the pages.
fn on_localhost(stack: &Stack, service: &str) -> String {
    stack.url(service, "").replace("127.0.0.1", "localhost")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_visits_keep_the_click_first_party_and_convert_on_another_site() -> anyhow::Result<()>
{
    let stack = Stack::start_with(StackOptions::default().services(&[
        "reporting-api",
        "click-ingest",
        "postback-ingest",
        "conversion-attribution",
    ]))
    .await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let (lander_port, offer_port) = (traffsure_tests::free_port()?, traffsure_tests::free_port()?);
    let slug = format!("direct-{}", stack.id);
    let flow = stack
        .create_flow(json!({
            "name": "Direct", "slug": slug,
            "destination_url": format!("http://127.0.0.1:{lander_port}/land?click={{click}}"),
            "goals": [{"key": "sale", "payout": "1"}],
        }))
        .await?;
    let flow_id = flow_id(&flow);

    // Errors first, which also waits for click-ingest to learn the flow.
    let visit = |query: &str| stack.url("click-ingest", &format!("/v/{slug}?{query}"));
    let unknown = stack
        .http
        .get(stack.url("click-ingest", "/v/no-such-flow"))
        .send()
        .await?;
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await?;
    assert_eq!(
        (body["code"].as_str(), body["field"].as_str()),
        (Some("unknown_flow"), Some("flow"))
    );
    let bad = stack
        .http
        .get(visit("page=javascript:alert(1)"))
        .send()
        .await?;
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.headers()
            .get("access-control-allow-origin")
            .map(|v| v.as_bytes()),
        Some(&b"*"[..])
    );
    let body: Value = bad.json().await?;
    assert_eq!(
        (body["code"].as_str(), body["field"].as_str()),
        (Some("invalid_page"), Some("page"))
    );
    let bad_vid = stack.http.get(visit("vid=xyz")).send().await?;
    assert_eq!(bad_vid.status(), 400);
    let post = stack.http.post(visit("")).send().await?;
    assert_eq!(post.status(), 405);
    let body: Value = post.json().await?;
    assert_eq!(body["code"].as_str(), Some("method_not_allowed"));
    let preflight = stack
        .http
        .request(reqwest::Method::OPTIONS, visit(""))
        .send()
        .await?;
    assert_eq!(preflight.status(), 204);
    assert_eq!(
        preflight
            .headers()
            .get("access-control-allow-methods")
            .map(|v| v.as_bytes()),
        Some(&b"GET"[..])
    );
    traffsure_tests::eventually(Duration::from_secs(20), || async {
        let r = stack
            .http
            .get(stack.url("click-ingest", &format!("/c/{slug}?sub_id=probe")))
            .send()
            .await?;
        Ok((r.status() == 302).then_some(()))
    })
    .await?;

    // A crawler's direct visit is recorded, as a bot, with the page's parameters.
    let crawler = stack
        .http
        .get(visit(
            "page=https%3A%2F%2Flander.test%2F%3Fsub2%3Dfrom-page&sub3=own",
        ))
        .header(
            "user-agent",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        )
        .send()
        .await?;
    assert_eq!(crawler.status(), 200);
    let answer: Value = crawler.json().await?;
    assert_eq!(
        (answer["flow"].as_u64(), answer["window_days"].as_u64()),
        (Some(u64::from(flow_id)), Some(30))
    );
    let crawler_hash = answer["click"].as_str().unwrap_or_default().to_string();

    let mut click_events = clicks(stack).await?;
    let mut postback_events = postbacks(stack).await?;
    let mut log = postback_log(stack).await?;
    let mut conversions =
        TopicReader::open(stack, "conversions", |c: &Conversion| c.click_hash.clone()).await?;

    let env = [
        ("CLICK_URL", on_localhost(stack, "click-ingest")),
        ("POSTBACK_URL", on_localhost(stack, "postback-ingest")),
        ("FLOW", slug.clone()),
        ("LANDER_PORT", lander_port.to_string()),
        ("OFFER_PORT", offer_port.to_string()),
    ];
    let run = run_script(
        stack,
        "direct.mjs",
        "direct",
        &env,
        Duration::from_secs(240),
    )
    .await?;
    let stdout = &run.stdout;
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("direct result "))
        .with_context(|| format!("no result from direct.mjs:\n{stdout}"))?;
    let seen: Value = serde_json::from_str(line)?;
    let hash = |key: &str| seen[key].as_str().unwrap_or_default().to_string();
    let (a, c, d) = (hash("a"), hash("c"), hash("d"));
    let shots = run.screenshot_count()?;
    assert_eq!(shots, 5, "screenshots in {}", run.screenshots.display());

    // The clicks: two direct visits with the page's parameters, one through the link.
    let found = click_events
        .wait_for(&[a.clone(), c.clone(), d.clone()])
        .await?;
    let (visit_a, visit_c, via_link) = (&found[0], &found[1], &found[2]);
    assert_eq!(visit_a.kind(), ClickKind::DirectVisit, "{visit_a:?}");
    assert_eq!(visit_a.flow_id, flow_id);
    assert_eq!(
        (
            visit_a.subs[0].as_str(),
            visit_a.source.as_str(),
            visit_a.external_id.as_str()
        ),
        ("zone-a", "organic", "EXT-A")
    );
    assert!(
        visit_a
            .destination_url
            .starts_with(&format!("http://127.0.0.1:{lander_port}/land?")),
        "{visit_a:?}"
    );
    assert!(visit_a.user_agent.contains("Chrom"), "{visit_a:?}");
    assert!(!visit_a.extra.contains_key("external_id"));
    assert_eq!(visit_a.visitor_id.len(), 32);
    assert_eq!(visit_c.kind(), ClickKind::DirectVisit, "{visit_c:?}");
    assert_eq!(visit_c.subs[0], "zone-c");
    assert_eq!(via_link.kind(), ClickKind::Visit, "{via_link:?}");
    assert_eq!(via_link.sub_id, "via-link");
    let crawler_click = click_events.one(&crawler_hash).await?;
    assert_eq!(crawler_click.kind(), ClickKind::DirectVisit);
    assert!(crawler_click.is_bot, "{crawler_click:?}");
    assert_eq!(
        (
            crawler_click.subs[1].as_str(),
            crawler_click.subs[2].as_str(),
            crawler_click.destination_url.as_str()
        ),
        ("from-page", "own", "https://lander.test/?sub2=from-page")
    );
    // Nothing else comes: reloads, the offer pages and the visit through /c/ recorded no visit.
    click_events.seen_after("", Duration::from_secs(3)).await?;
    let browser_clicks = click_events
        .wait_matching(0, |k| {
            k.flow_id == flow_id && k.user_agent.contains("Chrom")
        })
        .await?;
    let direct = browser_clicks
        .iter()
        .filter(|k| k.kind() == ClickKind::DirectVisit)
        .count();
    assert_eq!(direct, 2, "{browser_clicks:#?}");
    let through_link = browser_clicks
        .iter()
        .filter(|k| k.kind() == ClickKind::Visit && k.sub_id == "via-link")
        .count();
    assert_eq!(through_link, 1);

    // The conversions on the offer's site name those clicks, without the tracker's cookie.
    let converted = postback_events
        .wait_matching(2, |p| p.flow_id == flow_id && p.uid.starts_with("DIRECT-"))
        .await?;
    let mut by_uid: Vec<(String, String, String)> = converted
        .iter()
        .map(|p| (p.uid.clone(), p.click_hash.clone(), p.visitor_id.clone()))
        .collect();
    by_uid.sort();
    assert_eq!(
        by_uid,
        [
            ("DIRECT-A".to_string(), a.clone(), String::new()),
            ("DIRECT-C".to_string(), c.clone(), String::new()),
        ]
    );
    let entries = log
        .wait_matching(2, |e| e.flow_id == flow_id && e.path == "/pixel.gif")
        .await?;
    for entry in &entries {
        assert_eq!(
            (entry.response_status, entry.reason.as_str()),
            (200, "accepted")
        );
        assert!(
            !entry.params.iter().any(|p| p.name == "cookie:vid"),
            "the tracker's cookie was sent: {entry:?}"
        );
    }
    let attributed = conversions.wait_for(&[a.clone(), c.clone()]).await?;
    for (conversion, sub1) in attributed.iter().zip(["zone-a", "zone-c"]) {
        assert_eq!(conversion.flow_id, flow_id);
        assert!(!conversion.click_missing, "{conversion:?}");
        assert_eq!(
            (
                conversion.revenue_micros,
                conversion.currency.as_str(),
                conversion.goal.as_str()
            ),
            (12_500_000, "EUR", "sale")
        );
        assert_eq!(conversion.subs.first().map(String::as_str), Some(sub1));
    }
    Ok(())
}

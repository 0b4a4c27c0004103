//! Outbound postbacks beyond one flow, on the real stack: a traffic source's, an offer's
//! and global ones reach a local receiver for the flows and offers they apply to only; a
//! global postback and a flow's own that send the same request fire once per conversion
//! (the flow's, the most specific); the outbound log names each attempt's scope; a change
//! of an offer or of the global postbacks re-publishes the flows that use them; a bad
//! postback answers 422 naming its field. And the same in the panel, in headless Chromium.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use reqwest::Method;
use serde_json::{json, Value};
use traffsure_tests::browser::run_script;
use traffsure_tests::{
    click_hash_of, eventually, stack_with_receiver, Requests, Stack, StackOptions, ADMIN_PASSWORD,
    ADMIN_USERNAME,
};

mod postback_support;
use postback_support::get as postback;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_postbacks_fire_for_their_flows_and_offers_once_per_receiver() -> anyhow::Result<()>
{
    let (stack, port, received) = stack_with_receiver().await?;
    let result = run(&stack, port, &received).await;
    stack.print_failure(&result);
    result
}

/// The click hashes (`c`) each receiver path got, in order.
fn by_path(received: &Requests) -> BTreeMap<String, Vec<String>> {
    let mut paths: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for request in received.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let query: BTreeMap<String, String> =
            serde_urlencoded::from_str(&request.query).unwrap_or_default();
        paths
            .entry(request.path.clone())
            .or_default()
            .push(query.get("c").cloned().unwrap_or_default());
    }
    for hashes in paths.values_mut() {
        hashes.sort();
    }
    paths
}

fn sorted(hashes: &[&str]) -> Vec<String> {
    let mut hashes: Vec<String> = hashes.iter().map(|h| h.to_string()).collect();
    hashes.sort();
    hashes
}

fn id(object: &Value) -> anyhow::Result<u64> {
    object["id"].as_u64().context("an id")
}

/// A click of the flow `slug` that went to the offer whose URL starts with `offer_url`
/// (the path picks offers by weight: clicks until one goes there).
async fn click_to(stack: &Stack, slug: &str, offer_url: &str) -> anyhow::Result<String> {
    let track = stack.url("click-ingest", &format!("/c/{slug}?sub_id=s&source=src"));
    eventually(Duration::from_secs(20), || async {
        let response = stack.http.get(&track).send().await?;
        if response.status() != 302 {
            return Ok(None);
        }
        let location = response.headers()["location"].to_str()?.to_string();
        Ok(location
            .starts_with(offer_url)
            .then(|| click_hash_of(&location)))
    })
    .await
}

async fn convert(stack: &Stack, click: &str, uid: &str) -> anyhow::Result<()> {
    let reply = postback(stack, &format!("/postback?click={click}&uid={uid}")).await?;
    anyhow::ensure!(reply.status == 200, "postback: {}", reply.message);
    Ok(())
}

async fn run(stack: &Stack, port: u16, received: &Requests) -> anyhow::Result<()> {
    let receiver = format!("http://127.0.0.1:{port}");
    let post = |path: &'static str, body: Value| async move {
        stack.api_expect(Method::POST, path, Some(body), 201).await
    };

    // A bad scoped postback is refused with its field named, on an offer and globally.
    for (method, path, body, field) in [
        (
            Method::POST,
            "/api/v1/offers",
            json!({"name": "Bad", "url": "https://bad.example/",
                   "outbound_postbacks": [{"url": "https://r.example/?x={bogus}"}]}),
            "outbound_postbacks[0].url",
        ),
        (
            Method::POST,
            "/api/v1/traffic-sources",
            json!({"name": "Bad", "outbound_postbacks": [{"url": "https://r.example/",
                   "headers": [{"name": "Authorization", "value": "k", "secret": true}]}]}),
            "outbound_postbacks[0].headers[0].secret",
        ),
        (
            Method::PUT,
            "/api/v1/outbound-postbacks/global",
            json!({"outbound_postbacks": [{"url": "https://r.example/", "on_status": "paid"}]}),
            "outbound_postbacks[0].on_status",
        ),
    ] {
        let (status, error) = stack.api_call(method, path, Some(body)).await?;
        assert_eq!((status, &error["field"]), (422, &json!(field)), "{error}");
    }

    let offer_a = post(
        "/api/v1/offers",
        json!({"name": "A", "url": "https://a.example/?c={click}",
               "outbound_postbacks": [{"id": "net", "url": format!("{receiver}/offer-a?c={{click}}")}]}),
    )
    .await?;
    let offer_b = post(
        "/api/v1/offers",
        json!({"name": "B", "url": "https://b.example/?c={click}"}),
    )
    .await?;
    let source_one = post(
        "/api/v1/traffic-sources",
        json!({"name": "One", "outbound_postbacks": [{"url": format!("{receiver}/source-one?c={{click}}")}]}),
    )
    .await?;
    let source_two = post("/api/v1/traffic-sources", json!({"name": "Two"})).await?;
    let same = format!("{receiver}/same?c={{click}}");
    let global = stack
        .api_expect(
            Method::PUT,
            "/api/v1/outbound-postbacks/global",
            Some(json!({"outbound_postbacks": [
                {"id": "same", "url": same, "on_status": "any"},
                {"id": "all", "url": format!("{receiver}/global?c={{click}}")},
                {"id": "crm", "url": format!("{receiver}/crm"), "method": "POST",
                 "body_template": "{\"c\": \"{click}\"}", "body_format": "json",
                 "enabled": false,
                 "headers": [{"name": "Authorization", "value": "Bearer g-secret", "secret": true}]}
            ]})),
            200,
        )
        .await?;
    assert!(!global.to_string().contains("g-secret"), "{global}");
    let shown = stack
        .api_expect(Method::GET, "/api/v1/outbound-postbacks/global", None, 200)
        .await?;
    assert_eq!(
        shown["outbound_postbacks"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(
        shown["outbound_postbacks"][2]["headers"][0]["value"],
        "********"
    );
    // Sent back as shown, the mask keeps the secret.
    stack
        .api_expect(
            Method::PUT,
            "/api/v1/outbound-postbacks/global",
            Some(json!({"outbound_postbacks": shown["outbound_postbacks"]})),
            200,
        )
        .await?;

    // Flow one: source one, offers A and B, and its own postback sending what the global
    // `same` sends. Flow two: source two, offer B alone, nothing of its own.
    let one = format!("one-{}", stack.id);
    let two = format!("two-{}", stack.id);
    stack
        .create_flow(json!({
            "name": "One", "slug": one, "traffic_source_id": id(&source_one)?,
            "path": {"offers": [{"offer_id": id(&offer_a)?}, {"offer_id": id(&offer_b)?}]},
            "outbound_postbacks": [{"id": "own", "url": same}],
        }))
        .await?;
    stack
        .create_flow(json!({
            "name": "Two", "slug": two, "traffic_source_id": id(&source_two)?,
            "path": {"offers": [{"offer_id": id(&offer_b)?}]},
        }))
        .await?;

    // The flow's view lists what it fires from elsewhere, most specific first.
    let view = stack
        .api_expect(Method::GET, &format!("/api/v1/flows/{one}"), None, 200)
        .await?;
    let listed: Vec<(Value, Value)> = view["scoped_postbacks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|o| (o["id"].clone(), o["scope"].clone()))
        .collect();
    let (a, s1) = (id(&offer_a)?, id(&source_one)?);
    assert_eq!(
        listed,
        [
            (json!(format!("offer-{a}.net")), json!("offer")),
            (json!(format!("source-{s1}.out1")), json!("source")),
            (json!("global.same"), json!("global")),
            (json!("global.all"), json!("global")),
            (json!("global.crm"), json!("global")),
        ]
    );
    assert!(!view.to_string().contains("g-secret"), "{view}");

    let one_a = click_to(stack, &one, "https://a.example/").await?;
    let one_b = click_to(stack, &one, "https://b.example/").await?;
    let two_b = click_to(stack, &two, "https://b.example/").await?;
    for (click, uid) in [(&one_a, "u1"), (&one_b, "u2"), (&two_b, "u3")] {
        convert(stack, click, uid).await?;
    }

    let expected = BTreeMap::from([
        // Every flow's conversions; flow one's through its own postback, flow two's
        // through the global one: once each.
        ("/same".to_string(), sorted(&[&one_a, &one_b, &two_b])),
        ("/global".to_string(), sorted(&[&one_a, &one_b, &two_b])),
        // Offer A's conversions only, in the one flow that has it.
        ("/offer-a".to_string(), sorted(&[&one_a])),
        // Source one's flow only.
        ("/source-one".to_string(), sorted(&[&one_a, &one_b])),
    ]);
    let got = eventually(Duration::from_secs(60), || async {
        let got = by_path(received);
        Ok((got == expected).then_some(got))
    })
    .await
    .with_context(|| format!("receiver got {:?}", by_path(received)))?;
    // Nothing more arrives: no receiver gets a conversion twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(by_path(received), got);

    // The outbound log names where each attempt's postback is configured.
    let mut want: Vec<(String, String, String)> = vec![
        (one_a.clone(), "own".into(), "flow".into()),
        (one_a.clone(), "global.all".into(), "global".into()),
        (
            one_a.clone(),
            format!("offer-{a}.net"),
            format!("offer:{a}"),
        ),
        (
            one_a.clone(),
            format!("source-{s1}.out1"),
            format!("source:{s1}"),
        ),
        (one_b.clone(), "own".into(), "flow".into()),
        (one_b.clone(), "global.all".into(), "global".into()),
        (
            one_b.clone(),
            format!("source-{s1}.out1"),
            format!("source:{s1}"),
        ),
        (two_b.clone(), "global.same".into(), "global".into()),
        (two_b.clone(), "global.all".into(), "global".into()),
    ];
    want.sort();
    let logged = eventually(Duration::from_secs(30), || async {
        let page = stack
            .api_expect(
                Method::GET,
                "/api/v1/outbound-postbacks?limit=100",
                None,
                200,
            )
            .await?;
        let mut rows: Vec<(String, String, String)> = page["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|row| {
                let text = |key: &str| row[key].as_str().unwrap_or_default().to_string();
                (text("click_hash"), text("outbound_id"), text("scope"))
            })
            .collect();
        rows.sort();
        Ok((rows.len() >= want.len()).then_some(rows))
    })
    .await?;
    assert_eq!(logged, want);
    let source_filter = format!("source:{s1}");
    for (filter, rows) in [
        ("global", 4),
        ("offer", 1),
        (source_filter.as_str(), 2),
        ("flow", 2),
    ] {
        let page = stack
            .api_expect(
                Method::GET,
                &format!("/api/v1/outbound-postbacks?scope={filter}"),
                None,
                200,
            )
            .await?;
        assert_eq!(
            page["items"].as_array().map(Vec::len),
            Some(rows),
            "{filter}"
        );
    }
    let (status, error) = stack
        .api_call(
            Method::GET,
            "/api/v1/outbound-postbacks?scope=lander:1",
            None,
        )
        .await?;
    assert_eq!((status, &error["field"]), (422, &json!("scope")));

    // Changes re-publish the flows: offer B gets a postback of its own; the global `all`
    // goes and the CRM push is switched on, its secret sent back masked.
    stack
        .api_expect(
            Method::PUT,
            &format!("/api/v1/offers/{}", id(&offer_b)?),
            Some(json!({"name": "B", "url": "https://b.example/?c={click}",
                        "outbound_postbacks": [{"url": format!("{receiver}/offer-b?c={{click}}")}]})),
            200,
        )
        .await?;
    let mut crm = shown["outbound_postbacks"][2].clone();
    crm["enabled"] = json!(true);
    stack
        .api_expect(
            Method::PUT,
            "/api/v1/outbound-postbacks/global",
            Some(json!({"outbound_postbacks": [shown["outbound_postbacks"][0].clone(), crm]})),
            200,
        )
        .await?;
    // The dispatcher follows the flows topic; give it a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let two_b2 = click_to(stack, &two, "https://b.example/").await?;
    convert(stack, &two_b2, "u4").await?;
    let mut expected = expected;
    expected.insert("/offer-b".into(), sorted(&[&two_b2]));
    expected.insert("/same".into(), sorted(&[&one_a, &one_b, &two_b, &two_b2]));
    expected.insert("/crm".into(), vec![String::new()]);
    eventually(Duration::from_secs(60), || async {
        Ok((by_path(received) == expected).then_some(()))
    })
    .await
    .with_context(|| format!("receiver got {:?}", by_path(received)))?;
    let crm = received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|r| r.path == "/crm")
        .cloned()
        .context("the crm push")?;
    let authorization = crm
        .headers
        .iter()
        .find(|(name, _)| name == "authorization")
        .map(|(_, value)| value.as_str());
    assert_eq!(authorization, Some("Bearer g-secret"));
    let body: Value = serde_json::from_str(&crm.body)?;
    assert_eq!(body["c"], json!(two_b2));
    Ok(())
}

/// The panel: the Global Postbacks page and the outbound postbacks of an offer and a
/// traffic source, in headless Chromium (`tests/browser/scopes.mjs`), saved as asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_postbacks_in_the_panel() -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions::default().services(&["reporting-api"])).await?;
    let result = panel(&stack).await;
    stack.print_failure(&result);
    result
}

async fn panel(stack: &Stack) -> anyhow::Result<()> {
    let receiver = "https://receiver.example";
    let run = run_script(
        stack,
        "scopes.mjs",
        "scopes",
        &[
            ("RECEIVER", receiver.into()),
            ("ADMIN_USERNAME", ADMIN_USERNAME.into()),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
        ],
        Duration::from_secs(180),
    )
    .await?;
    let line = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("scopes ok "))
        .ok_or_else(|| anyhow::anyhow!("no result line in {}", run.stdout))?;
    let saved: Value = serde_json::from_str(line)?;
    assert!(
        run.screenshot_count()? >= 6,
        "{}",
        run.screenshots.display()
    );
    let global = stack
        .api_expect(Method::GET, "/api/v1/outbound-postbacks/global", None, 200)
        .await?;
    let postbacks = &global["outbound_postbacks"];
    assert_eq!(postbacks.as_array().map(Vec::len), Some(1), "{global}");
    assert_eq!(
        (
            &postbacks[0]["id"],
            &postbacks[0]["url"],
            &postbacks[0]["on_status"]
        ),
        (
            &json!("every"),
            &json!(format!("{receiver}/global?c={{click}}")),
            &json!("any")
        )
    );
    let offer = stack
        .api_expect(
            Method::GET,
            &format!("/api/v1/offers/{}", saved["offer"]),
            None,
            200,
        )
        .await?;
    assert_eq!(
        offer["outbound_postbacks"],
        json!([{"id": "net", "url": format!("{receiver}/offer?c={{click}}&p={{payout}}"),
                "method": "GET", "body_template": "", "body_format": "form", "goals": [],
                "on_status": "approved", "reasons": [], "headers": [], "delay_seconds": 0,
                "enabled": true, "type": "conversion"}])
    );
    let source = stack
        .api_expect(
            Method::GET,
            &format!("/api/v1/traffic-sources/{}", saved["source"]),
            None,
            200,
        )
        .await?;
    assert_eq!(source["outbound_postbacks"][0]["id"], "out1");
    assert_eq!(source["outbound_postbacks"][0]["on_status"], "pending");
    Ok(())
}

//! The objects' pages and the flow editor's funnel builder in a real browser: runs
//! `tests/browser/objects.mjs` (traffic source and network from templates, two offers, a
//! lander, a flow with the lander in front of the offers at 70/30, the copied links, an
//! archived offer), then checks through the API that what the panel saved is what was
//! asked. Screenshots land in `target/browser-screenshots/objects/`.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use traffsure_tests::browser::run_script;
use traffsure_tests::{Stack, StackOptions, ADMIN_PASSWORD, ADMIN_USERNAME};

async fn get(stack: &Stack, path: &str) -> anyhow::Result<Value> {
    let response = stack.api(Method::GET, path).send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    Ok(response.json().await?)
}

/// The items of a list answer, whichever key holds them.
fn items(list: &Value) -> Vec<Value> {
    list.as_array()
        .or_else(|| list.as_object()?.values().find_map(Value::as_array))
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_and_funnel_builder_in_headless_chromium() -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions::default().services(&["reporting-api"])).await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let run = run_script(
        stack,
        "objects.mjs",
        "objects",
        &[
            ("ADMIN_USERNAME", ADMIN_USERNAME.into()),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
        ],
        Duration::from_secs(240),
    )
    .await?;
    let line = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("objects ok "))
        .ok_or_else(|| anyhow::anyhow!("no result line in {}", run.stdout))?;
    let walk: Value = serde_json::from_str(line)?;
    let shots = run.screenshot_count()?;
    assert!(
        shots >= 14,
        "only {shots} screenshots in {}",
        run.screenshots.display()
    );

    // The source and the network carry their template and the placeholders typed in.
    let source = get(
        stack,
        &format!("/api/v1/traffic-sources/{}", walk["source"]["id"]),
    )
    .await?;
    assert_eq!(source["name"], "Taboola native");
    assert_eq!(source["template"], walk["source"]["template"]);
    assert_eq!(
        source["placeholders"], walk["source"]["placeholders"],
        "{source}"
    );
    // The parameter added in the editor, beside the template's.
    assert_eq!(source["parameters"]["sub1"], "{campaign_id}", "{source}");
    assert_eq!(source["parameters"].as_object().map(|p| p.len()), Some(2));
    let network = get(
        stack,
        &format!("/api/v1/affiliate-networks/{}", walk["network"]["id"]),
    )
    .await?;
    assert_eq!(network["name"], "Affise network");
    assert_eq!(network["template"], walk["network"]["template"]);
    assert_eq!(
        network["postback_url"], walk["network_postback"],
        "the copied postback URL is the network's"
    );

    // The offers: the payout exactly as typed, or none (from the postback).
    let offers = &walk["offers"];
    let offer_a = get(stack, &format!("/api/v1/offers/{}", offers[0])).await?;
    // Money is kept in micros and shown without trailing zeros.
    assert_eq!(offer_a["payout"], "12.5", "{offer_a}");
    assert_eq!(offer_a["currency"], "USD");
    assert_eq!(offer_a["network_id"], walk["network"]["id"]);
    assert_eq!(offer_a["url"], "https://offer-a.example/?id=7");
    let offer_b = get(stack, &format!("/api/v1/offers/{}", offers[1])).await?;
    assert_eq!(offer_b["payout"], Value::Null, "{offer_b}");
    assert_eq!(offer_b["archived"], true, "{offer_b}");
    let listed: Vec<Value> = items(&get(stack, "/api/v1/offers").await?)
        .iter()
        .map(|o| o["id"].clone())
        .collect();
    assert!(
        listed.contains(&offers[0]) && !listed.contains(&offers[1]),
        "{listed:?}"
    );
    let lander = get(stack, &format!("/api/v1/landers/{}", walk["lander"])).await?;
    assert_eq!(lander["url"], "https://lander.example/quiz");
    assert_eq!(
        lander["archived"], false,
        "unarchived in the panel: {lander}"
    );
    assert_eq!(
        lander["revision"], 3,
        "created, archived, unarchived: {lander}"
    );

    // The flow: its source and the path of one lander in front of the offers at 70/30.
    let flow = get(stack, &format!("/api/v1/flows/{}", walk["flow"])).await?;
    assert_eq!(flow["traffic_source_id"], walk["source"]["id"], "{flow}");
    assert_eq!(
        flow["path"]["landers"],
        json!([{"lander_id": walk["lander"], "weight": 100}]),
        "{flow}"
    );
    assert_eq!(
        flow["path"]["offers"],
        json!([
            {"offer_id": offers[0], "weight": 70},
            {"offer_id": offers[1], "weight": 30},
        ]),
        "{flow}"
    );
    assert_eq!(
        flow["rules"][0]["path"],
        json!({"landers": [], "offers": [{"offer_id": offers[0], "weight": 100}]}),
        "{flow}"
    );
    assert_eq!(flow["rules"][0]["conditions"][0]["values"], json!(["DE"]));
    let link = walk["tracking_link"].as_str().unwrap_or_default();
    assert!(
        link.contains(&format!(
            "/c/{}?",
            walk["slug"].as_str().unwrap_or_default()
        )) && link.ends_with("&sub1={campaign_id}"),
        "the tracking link carries the source's macros in its order: {link}"
    );
    assert_eq!(
        flow["tracking_link"], walk["tracking_link"],
        "the copied link is the flow's"
    );
    Ok(())
}

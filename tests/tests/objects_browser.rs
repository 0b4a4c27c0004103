//! The objects' pages and the flow editor's funnel builder in a real browser: runs
//! `tests/browser/objects.mjs` (traffic source and network from templates, two offers, a
//! lander, a flow with the lander in front of the offers at 70/30, the copied links, an
//! archived offer), then checks through the API that what the panel saved is what was
//! asked, and follows the copied tracking link through the real click-ingest: to the
//! panel's lander, and on through `/lp/click` to one of the panel's offers with the hit's
//! click hash in the network's parameter. Screenshots land in
//! `target/browser-screenshots/objects/`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpResponse};
use reqwest::Method;
use serde_json::{json, Value};
use traffsure_core::ClickHashKeys;
use traffsure_tests::browser::run_script;
use traffsure_tests::{
    eventually, query_of, serve_local, Stack, StackOptions, ADMIN_PASSWORD, ADMIN_USERNAME,
    CLICK_HASH_KEYS,
};

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

/// The lander page: one offer link to click-ingest's `/lp/click` (its address is known
/// once the stack runs).
async fn lander_page(click_ingest: web::Data<Arc<Mutex<String>>>) -> HttpResponse {
    let base = click_ingest.lock().map(|b| b.clone()).unwrap_or_default();
    HttpResponse::Ok().content_type("text/html").body(format!(
        "<!doctype html><title>Quiz</title><h1>Which offer suits you?</h1>\
         <a id=\"offer-link\" href=\"{base}/lp/click\">See the offer</a>"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_and_funnel_builder_in_headless_chromium() -> anyhow::Result<()> {
    let click_ingest: Arc<Mutex<String>> = Arc::default();
    let data = web::Data::new(click_ingest.clone());
    let port = serve_local(move |app| {
        app.app_data(data.clone())
            .default_service(web::to(lander_page));
    })?;
    let stack =
        Stack::start_with(StackOptions::default().services(&["reporting-api", "click-ingest"]))
            .await?;
    if let Ok(mut base) = click_ingest.lock() {
        *base = stack.url("click-ingest", "");
    }
    let result = run(&stack, &format!("http://127.0.0.1:{port}/quiz")).await;
    stack.print_failure(&result);
    result
}

async fn run(stack: &Stack, lander_url: &str) -> anyhow::Result<()> {
    let run = run_script(
        stack,
        "objects.mjs",
        "objects",
        &[
            ("CLICK_INGEST_URL", stack.url("click-ingest", "")),
            ("LANDER_URL", lander_url.into()),
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
        shots >= 17,
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
    assert_eq!(
        offer_a["goals"],
        json!([{"key": "upsell", "name": "upsell", "payout": "4", "affiliate_payout": "3", "currency": "USD"}]),
        "the goal added in the editor"
    );
    // The caps section: one daily conversion cap in the offer's zone, over-cap postbacks
    // suppressed.
    assert_eq!(
        offer_a["caps"],
        json!([{"metric": "conversions", "period": "day", "limit": 1000}]),
        "{offer_a}"
    );
    assert_eq!(offer_a["time_zone"], "Europe/Berlin", "{offer_a}");
    assert_eq!(offer_a["over_cap_postbacks"], "suppress", "{offer_a}");
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
    assert_eq!(lander["url"], lander_url);
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
    // The browser went from the lander to one of the offers with the hit in `sub1`.
    let offer_url = walk["offer_url"].as_str().unwrap_or_default();
    check_offer_url(offer_url, &network)?;
    follow_the_link(stack, link, lander_url, &network).await
}

/// An offer URL the edge sent a lander's visitor to: one of the panel's offers, with a
/// valid click hash in the network's click parameter.
fn check_offer_url(offer: &str, network: &Value) -> anyhow::Result<()> {
    anyhow::ensure!(
        offer.starts_with("https://offer-a.example/?id=7&")
            || offer.starts_with("https://offer-b.example/?id=8&"),
        "{offer}"
    );
    let param = network["click_param"].as_str().unwrap_or_default();
    let hit = query_of(offer).get(param).cloned().unwrap_or_default();
    let keys = ClickHashKeys::parse(CLICK_HASH_KEYS, 1)?;
    anyhow::ensure!(keys.verify(&hit).is_ok(), "{param} of {offer}");
    Ok(())
}

/// The copied tracking link, filled as the source would, through click-ingest: the visit
/// lands on the panel's lander, and its click-through on one of the panel's offers with
/// the hit's hash in the network's click parameter.
async fn follow_the_link(
    stack: &Stack,
    link: &str,
    lander_url: &str,
    network: &Value,
) -> anyhow::Result<()> {
    let path = link
        .find("/c/")
        .map(|at| &link[at..])
        .ok_or_else(|| anyhow::anyhow!("no /c/ in {link}"))?;
    let visit = stack.url(
        "click-ingest",
        &path
            .replace("{click_id}", "tb-1")
            .replace("{campaign_id}", "cmp-9"),
    );
    let response = eventually(Duration::from_secs(30), || async {
        let response = stack.http.get(&visit).send().await?;
        Ok((response.status() == 302).then_some(response))
    })
    .await?;
    let location = response.headers()["location"].to_str()?.to_string();
    assert_eq!(location, lander_url, "{visit}");
    let cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(String::from))
        .collect();
    let response = stack
        .http
        .get(stack.url("click-ingest", "/lp/click"))
        .header("cookie", cookies.join("; "))
        .send()
        .await?;
    assert_eq!(response.status(), 302, "{cookies:?}");
    check_offer_url(response.headers()["location"].to_str()?, network)
}

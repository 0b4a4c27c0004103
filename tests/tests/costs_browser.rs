//! The Costs page in a real browser: runs `tests/browser/costs.mjs` (a refused update
//! showing the API's message, an update saved from the form with a sub filter, one
//! uploaded as a CSV file), then checks through the API that both are stored as typed,
//! with the admin as their author, and a traffic source's cost model set in its editor and a flow's own in the flow editor. Screenshots land in `target/browser-screenshots/costs/`.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use traffsure_tests::browser::run_script;
use traffsure_tests::{Stack, StackOptions, ADMIN_PASSWORD, ADMIN_USERNAME};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_costs_form_and_upload_in_headless_chromium() -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions::default().services(&["reporting-api"])).await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let flow = stack
        .create_flow(json!({"name": "Bought", "destination_url": "https://offer.example/"}))
        .await?;
    let flow_id = flow["id"].as_u64().unwrap_or_default();
    let source = stack
        .api_expect(
            Method::POST,
            "/api/v1/traffic-sources",
            Some(json!({"name": "Push"})),
            201,
        )
        .await?;
    let source_id = source["id"].as_u64().unwrap_or_default();
    let run = run_script(
        stack,
        "costs.mjs",
        "costs",
        &[
            ("FLOW_ID", flow_id.to_string()),
            ("SOURCE_ID", source_id.to_string()),
            ("ADMIN_USERNAME", ADMIN_USERNAME.into()),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
        ],
        Duration::from_secs(180),
    )
    .await?;
    assert!(run.stdout.contains("costs ok"), "{}", run.stdout);
    assert!(run.screenshot_count()? >= 4);
    let listed = stack
        .api_expect(
            Method::GET,
            &format!("/api/v1/costs?flow={flow_id}"),
            None,
            200,
        )
        .await?;
    let costs = listed["costs"].as_array().cloned().unwrap_or_default();
    assert_eq!(costs.len(), 2, "{listed}");
    // Newest first: the uploaded one, then the form's.
    assert_eq!(
        (costs[0]["amount"].as_str(), costs[0]["currency"].as_str()),
        (Some("7.25"), Some("EUR"))
    );
    assert_eq!(costs[0]["from"], "2026-03-02 00:00:00");
    let typed = &costs[1];
    assert_eq!(typed["amount"], "12.5", "{typed}");
    assert_eq!(typed["from"], "2026-03-01 00:00:00", "{typed}");
    assert_eq!(typed["to"], "2026-03-02 00:00:00", "{typed}");
    assert_eq!(typed["sub1"], "zone-1", "{typed}");
    assert_eq!(typed["sub_id"], "", "{typed}");
    for cost in &costs {
        assert_eq!(cost["created_by"], ADMIN_USERNAME, "{cost}");
    }
    let source = stack
        .api_expect(
            Method::GET,
            &format!("/api/v1/traffic-sources/{source_id}"),
            None,
            200,
        )
        .await?;
    assert_eq!(
        source["cost_model"],
        json!({"kind": "cpc", "amount": "0.04", "currency": "EUR"}),
        "{source}"
    );
    let flow = stack
        .api_expect(Method::GET, &format!("/api/v1/flows/{flow_id}"), None, 200)
        .await?;
    assert_eq!(
        flow["cost_model"],
        json!({"kind": "revshare", "percent": "25", "status": "approved"}),
        "{flow}"
    );
    assert_eq!(flow["effective_cost_model"], flow["cost_model"], "{flow}");
    assert_eq!(flow["destination_url"], "https://offer.example/", "{flow}");
    Ok(())
}

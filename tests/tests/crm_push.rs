//! The CRM push preset end to end: a flow's outbound postback made from the preset POSTs
//! a JSON object with every macro and the secret Authorization header to a local CRM;
//! the secret never shows in the flow's view, the outbound log (API and table) or any
//! service's log, and a view sent back keeps it; "send test" fires one real request and
//! answers the CRM's answer.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use traffsure_core::flow::{OUTBOUND_MACROS, SECRET_MASK};
use traffsure_tests::{eventually, first_click, stack_with_receiver, Recorded, Requests, Stack};

mod postback_support;
use postback_support::{flow_id, get as postback};

const SECRET: &str = "Bearer crm-key-7f3a9c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_push_sends_every_macro_with_a_secret_header_kept_out_of_logs() -> anyhow::Result<()> {
    let (stack, port, received) = stack_with_receiver().await?;
    let result = run(&stack, port, &received).await;
    stack.print_failure(&result);
    result
}

fn crm_requests(received: &Requests) -> Vec<Recorded> {
    received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|r| r.path == "/crm/leads")
        .cloned()
        .collect()
}

fn header<'r>(request: &'r Recorded, name: &str) -> Option<&'r str> {
    request
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

async fn run(stack: &Stack, port: u16, received: &Requests) -> anyhow::Result<()> {
    let presets: Value = stack
        .api(Method::GET, "/api/v1/outbound-postbacks/presets")
        .send()
        .await?
        .json()
        .await?;
    let mut crm = presets["crm"].clone();
    assert_eq!(crm["method"], "POST");
    assert_eq!(crm["headers"][0]["name"], "Authorization");
    assert_eq!(crm["headers"][0]["secret"], true);
    crm["url"] = json!(format!("http://127.0.0.1:{port}/crm/leads"));
    crm["headers"][0]["value"] = json!(SECRET);
    let slug = format!("crm-{}", stack.id);
    let spec = json!({
        "name": "CRM push",
        "slug": slug,
        "destination_url": "https://offer.example/land?c={click}",
        "goals": [{"key": "lead", "payout": "3"}],
        "outbound_postbacks": [crm]
    });
    let flow = stack.create_flow(spec.clone()).await?;
    let flow = flow_id(&flow);
    let shown = eventually(Duration::from_secs(15), || async {
        let response = stack
            .api(Method::GET, &format!("/api/v1/flows/{flow}"))
            .send()
            .await?;
        Ok((response.status() == 200).then_some(response.text().await?))
    })
    .await?;
    assert!(!shown.contains("crm-key"), "{shown}");
    let shown: Value = serde_json::from_str(&shown)?;
    assert_eq!(
        shown["outbound_postbacks"][0]["headers"][0]["value"],
        SECRET_MASK
    );

    // The panel saves the flow as it shows it: the mask keeps the secret.
    let mut resent = spec.clone();
    resent["outbound_postbacks"] = shown["outbound_postbacks"].clone();
    let saved = stack
        .api(Method::PUT, &format!("/api/v1/flows/{flow}"))
        .json(&resent)
        .send()
        .await?;
    assert_eq!(saved.status(), 200, "{}", saved.text().await?);

    let track = stack.url("click-ingest", &format!("/c/{slug}?sub_id=s-1&source=push"));
    let click = first_click(stack, &track).await?;
    let reply = postback(
        stack,
        &format!("/postback?click={click}&goal=lead&uid=L-1&reason=callback+later"),
    )
    .await?;
    assert_eq!(reply.status, 200, "{}", reply.message);

    let pushed = eventually(Duration::from_secs(60), || async {
        Ok(crm_requests(received).into_iter().next())
    })
    .await?;
    assert_eq!(pushed.method, "POST");
    assert_eq!(header(&pushed, "authorization"), Some(SECRET));
    assert_eq!(header(&pushed, "content-type"), Some("application/json"));
    let body: Value = serde_json::from_str(&pushed.body)?;
    for name in OUTBOUND_MACROS {
        assert!(body.get(*name).is_some(), "{name} in {body}");
    }
    assert_eq!(
        (
            &body["click"],
            &body["flow"],
            &body["sub_id"],
            &body["source"],
            &body["goal"],
            &body["uid"],
            &body["revenue"],
            &body["reason"]
        ),
        (
            &json!(click),
            &json!(flow.to_string()),
            &json!("s-1"),
            &json!("push"),
            &json!("lead"),
            &json!("L-1"),
            &json!("3"),
            &json!("callback later")
        )
    );

    // Send test: one real request, the CRM's answer.
    let tested = stack
        .api(
            Method::POST,
            &format!("/api/v1/flows/{slug}/outbound-postbacks/crm/test"),
        )
        .send()
        .await?;
    assert_eq!(tested.status(), 200);
    let tested: Value = tested.json().await?;
    assert_eq!(
        (
            &tested["http_status"],
            &tested["response"],
            &tested["method"]
        ),
        (&json!(200), &json!("ok"), &json!("POST"))
    );
    assert_eq!(crm_requests(received).len(), 2);
    let test_request = &crm_requests(received)[1];
    assert_eq!(header(test_request, "authorization"), Some(SECRET));
    let test_body: Value = serde_json::from_str(&test_request.body)?;
    assert_eq!(
        (&test_body["status"], &test_body["goal"]),
        (&json!("approved"), &json!("lead"))
    );
    let missing = stack
        .api(
            Method::POST,
            &format!("/api/v1/flows/{slug}/outbound-postbacks/nope/test"),
        )
        .send()
        .await?;
    assert_eq!(missing.status(), 404);

    // The secret is in no log: outbound log API and table, and the services' logs.
    let listed = eventually(Duration::from_secs(30), || async {
        let text = stack
            .api(
                Method::GET,
                &format!("/api/v1/outbound-postbacks?flow={flow}&format=csv"),
            )
            .send()
            .await?
            .text()
            .await?;
        Ok((text.lines().count() == 2).then_some(text))
    })
    .await?;
    assert!(listed.contains("callback later"), "{listed}");
    let table = stack
        .clickhouse("SELECT * FROM outbound_log FORMAT TSV")
        .await?;
    assert!(!table.is_empty());
    let mut logs = String::new();
    for service in stack.services.values() {
        logs.push_str(&std::fs::read_to_string(&service.log)?);
    }
    assert!(logs.contains("test outbound postback sent"));
    for (place, text) in [
        ("outbound log API", listed),
        ("outbound_log table", table),
        ("service logs", logs),
    ] {
        assert!(!text.contains("crm-key"), "the secret is in the {place}");
    }
    Ok(())
}

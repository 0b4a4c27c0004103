//! The flow editor's forms in a real browser: seeds clicks from Germany and the United
//! Kingdom through click-ingest, runs `tests/browser/editors.mjs` (a flow built through
//! the forms alone, with every kind of rule condition, values picked from the suggestions
//! of those clicks, any-of groups, weighted destinations, goals, status map, outbound
//! postbacks with picked macros and a secret header, postback security), and checks
//! through the API that the stored flow is what was entered, that saving it unchanged
//! stores the same flow (and sends back fields the forms do not know), that "Send test"
//! reached the receiver with the secret kept, and that the changes made in the forms
//! were stored. Screenshots land in `target/browser-screenshots/editors/`.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use traffsure_tests::browser::run_script;
use traffsure_tests::{
    eventually, geoip_file, record_requests, Requests, Stack, StackOptions, ADMIN_PASSWORD,
    ADMIN_USERNAME,
};

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
const FIREFOX: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Gecko/20100101 Firefox/115.0";
/// Ulm, Germany.
const ULM: &str = "62.157.140.133";
/// London, United Kingdom.
const LONDON: &str = "81.2.69.160";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_forms_round_trip_in_headless_chromium() -> anyhow::Result<()> {
    let (port, received) = record_requests()?;
    let edge = "click-ingest";
    let stack = Stack::start_with(
        StackOptions::default()
            .services(&["sink", edge, "postback-dispatcher", "reporting-api"])
            .env(
                "postback-dispatcher",
                "TRAFFSURE__OUTBOUND__ALLOW_PRIVATE_TARGETS",
                "true",
            )
            .env(edge, "TRAFFSURE__CLIENT_IP__TRUSTED_PROXIES", "127.0.0.1")
            .env(
                edge,
                "TRAFFSURE__GEOIP__DATABASE",
                geoip_file("country.mmdb")?,
            ),
    )
    .await?;
    let result = run(&stack, port, &received).await;
    stack.print_failure(&result);
    result
}

/// Clicks on another flow, from Germany on iPhones and from the United Kingdom on
/// Firefox, until the suggestions endpoint offers their countries.
async fn seed_clicks(stack: &Stack) -> anyhow::Result<()> {
    stack
        .create_flow(json!({"name": "Seed", "slug": "seed",
            "destination_url": "https://seed.example/?c={click}"}))
        .await?;
    let click = |ip: &'static str, agent: &'static str| async move {
        stack
            .http
            .get(stack.url("click-ingest", "/c/seed?source=push"))
            .header("x-forwarded-for", ip)
            .header("user-agent", agent)
            .send()
            .await
    };
    eventually(Duration::from_secs(20), || async {
        Ok((click(ULM, IPHONE).await?.status() == 302).then_some(()))
    })
    .await?;
    for _ in 0..3 {
        click(ULM, IPHONE).await?;
    }
    click(LONDON, FIREFOX).await?;
    eventually(Duration::from_secs(30), || async {
        let (_, answer) = stack
            .api_call(Method::GET, "/api/v1/suggestions?field=country", None)
            .await?;
        let values: Vec<&str> = answer["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["value"].as_str())
            .collect();
        Ok((values.contains(&"DE") && values.contains(&"GB")).then_some(()))
    })
    .await
}

/// A flow view without what every save changes.
fn content(flow: &Value) -> Value {
    let mut flow = flow.clone();
    if let Some(map) = flow.as_object_mut() {
        map.remove("revision");
        map.remove("updated_at_ms");
    }
    flow
}

fn condition(field: &str, op: &str, values: &[&str]) -> Value {
    json!({"field": field, "op": op, "values": values})
}

async fn run(stack: &Stack, port: u16, received: &Requests) -> anyhow::Result<()> {
    seed_clicks(stack).await?;
    let receiver = format!("http://127.0.0.1:{port}");
    let run = run_script(
        stack,
        "editors.mjs",
        "editors",
        &[
            ("RECEIVER_URL", receiver.clone()),
            ("ADMIN_USERNAME", ADMIN_USERNAME.into()),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
        ],
        Duration::from_secs(300),
    )
    .await?;
    let line = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("editors ok "))
        .ok_or_else(|| anyhow::anyhow!("no result line in {}", run.stdout))?;
    let walk: Value = serde_json::from_str(line)?;
    let shots = run.screenshot_count()?;
    assert!(
        shots >= 15,
        "only {shots} screenshots in {}",
        run.screenshots.display()
    );

    // The suggestions offered the seeded clicks' countries, most clicked first.
    assert_eq!(
        walk["suggested"],
        json!(["DE", "GB"]),
        "{}",
        walk["suggested"]
    );

    // What the forms stored is what was entered.
    let first = &walk["first"];
    assert_eq!(first["name"], "Editors flow");
    assert_eq!(first["slug"], walk["slug"]);
    assert_eq!(first["redirect_mode"], "307");
    assert_eq!(first["inactive_url"], "https://paused.example/");
    assert_eq!(first["bot_url"], "https://bots.example/");
    assert_eq!(first["time_zone"], "Europe/Berlin");
    assert_eq!(first["default_goal"], "sale");
    assert_eq!(
        first["goals"],
        json!([
            {"key": "lead", "name": "Lead", "payout": "2", "currency": "USD", "duplicate_policy": "per_uid"},
            {"key": "sale", "name": "Sale", "payout": "25.5", "currency": "USD", "duplicate_policy": "once"},
        ])
    );
    assert_eq!(
        first["destinations"],
        json!([
            {"url": "https://a.example/?c={click}", "weight": 70},
            {"url": "https://b.example/?c={click}&s={sub_id}", "weight": 30},
        ])
    );
    let subs: Vec<Value> = (1..=10)
        .map(|i| condition(&format!("sub{i}"), "in", &[&format!("v{i}")]))
        .chain([condition("source", "in", &["push"])])
        .collect();
    assert_eq!(
        first["rules"],
        json!([
            {"name": "DE mobile", "conditions": [
                condition("country", "in", &["DE", "AT"]),
                condition("device", "in", &["mobile", "tablet"]),
                condition("os", "in", &["ios", "android"]),
                condition("browser", "not_in", &["firefox"])],
             "destinations": [{"url": "https://de.example/?c={click}", "weight": 1}]},
            {"name": "Office hours", "conditions": [
                condition("ip", "not_in", &["10.0.0.0/8", "203.0.113.7/32"]),
                condition("sub_id", "in", &["s-1"])],
             "any_of": [
                [condition("hour", "in", &["9-17"]), condition("weekday", "in", &["mon-fri"])],
                [condition("os_version", "in", &[">=15"]), condition("browser_version", "in", &["100-130"])]],
             "destinations": [{"url": "https://office.example/?c={click}&s={sub1}", "weight": 1}]},
            {"name": "Subs", "conditions": subs,
             "destinations": [{"url": "https://subs-a.example/", "weight": 3},
                              {"url": "https://subs-b.example/", "weight": 1}]},
        ]),
        "{}",
        first["rules"]
    );
    assert_eq!(
        first["status_map"],
        json!({"chargeback": "rejected", "hold": "pending", "sale": "approved"})
    );
    assert_eq!(
        first["postback_security"],
        json!({"token": "tok-123", "hmac_secret": walk["hmac"], "max_age_seconds": 600,
               "allowed_ips": ["203.0.113.0/24", "127.0.0.1/32"]})
    );
    assert_eq!(
        first["outbound_postbacks"],
        json!([
            {"id": "src", "url": format!("{receiver}/pb?click={{click}}&payout={{payout}}"),
             "method": "GET", "body_template": "", "body_format": "form", "goals": ["sale"],
             "on_status": "approved", "reasons": [], "headers": [], "delay_seconds": 30,
             "enabled": true, "type": "conversion"},
            {"id": "crm", "url": format!("{receiver}/crm"), "method": "POST",
             "body_template": "{\"goal\": \"{goal}\", \"click\": \"{click}\"}", "body_format": "json",
             "goals": [], "on_status": "any", "reasons": ["fraud"],
             "headers": [{"name": "Authorization", "value": "********", "secret": true},
                         {"name": "X-Source", "value": "traffsure", "secret": false}],
             "delay_seconds": 0, "enabled": true, "type": "conversion"},
        ]),
        "{}",
        first["outbound_postbacks"]
    );

    // Saved unchanged: a new revision with the same content, and the fields the forms do
    // not know went back as they came.
    let second = &walk["second"];
    assert_eq!(
        second["revision"].as_u64(),
        first["revision"].as_u64().map(|r| r + 1)
    );
    assert_eq!(content(second), content(first));
    let sent = &walk["sent"][0];
    assert_eq!(sent["future_field"], json!({"kept": [1, 2]}), "{sent}");
    assert_eq!(sent["rules"][0]["future_note"], "rule note");
    assert_eq!(sent["outbound_postbacks"][1]["future_option"], "kept");
    assert_eq!(
        sent["outbound_postbacks"][1]["headers"][0]["value"], "********",
        "the secret is never read back into the page"
    );
    for view_only in ["id", "revision", "created_at_ms", "tracking_link"] {
        assert!(sent.get(view_only).is_none(), "{view_only} sent: {sent}");
    }

    // "Send test" fired the stored CRM postback once, with the secret header kept through
    // the saves, and showed the receiver's answer.
    let answer = walk["testAnswer"].as_str().unwrap_or_default();
    assert!(
        answer.contains("HTTP 200") && answer.contains("/crm") && answer.contains("ok"),
        "{answer}"
    );
    let crm: Vec<_> = received
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.path == "/crm")
        .collect();
    assert_eq!(crm.len(), 1, "{crm:?}");
    let header = |name: &str| {
        crm[0]
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("authorization").as_deref(), Some("Bearer s3cret"));
    assert_eq!(header("x-source").as_deref(), Some("traffsure"));
    let body: Value = serde_json::from_str(&crm[0].body)?;
    assert_eq!(body["goal"], "sale", "{body}");

    // The changes made in the forms, and nothing else.
    let third = &walk["third"];
    let mut expected = content(first);
    expected["destinations"][0]["weight"] = json!(50);
    expected["rules"][0]["conditions"][0]["values"] = json!(["DE"]);
    expected["outbound_postbacks"][0]["enabled"] = json!(false);
    expected["status_map"]["hold"] = json!("rejected");
    assert_eq!(content(third), expected);
    let api = stack
        .api_expect(
            Method::GET,
            &format!("/api/v1/flows/{}", walk["flow"]),
            None,
            200,
        )
        .await?;
    assert_eq!(content(&api), expected);
    Ok(())
}

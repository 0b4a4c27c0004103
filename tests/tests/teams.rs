//! Teams against the real ClickHouse and Kafka: users with roles (owner, admin, analyst)
//! made through the API, what each role can and cannot do, a user restricted to one flow
//! seeing only that flow in every list, report, log, dashboard and flow answer, per-user
//! API keys that carry the role and stop working once revoked (or their user deleted),
//! and an audit entry with before and after for each change.

use std::collections::HashSet;

use anyhow::Context;
use reqwest::Method;
use serde_json::{json, Value};
use traffsure_tests::{
    eventually, expect_as as expect, serve_local, Stack, StackOptions, ADMIN_PASSWORD,
    ADMIN_USERNAME,
};

/// Rows of each kind written for flow A and flow B.
const A_CLICKS: u64 = 6;
const B_CLICKS: u64 = 4;
/// Each click's cost, in micros: flow A's clicks cost 6 × 0.5, B's 4 × 2.
const A_CLICK_COST: i64 = 500_000;
const B_CLICK_COST: i64 = 2_000_000;
const A_CONVERSIONS: u64 = 3;
const B_CONVERSIONS: u64 = 2;
const A_POSTBACKS: u64 = 3;
const B_POSTBACKS: u64 = 2;
const A_OUTBOUND: u64 = 2;
const B_OUTBOUND: u64 = 3;

/// Clicks, conversions, postback log and outbound log rows of two flows, straight into
/// the test database (the rollups fill from their views).
async fn load(stack: &Stack, a: u64, b: u64) -> anyhow::Result<()> {
    for (flow, clicks, conversions, postbacks, outbound) in [
        (a, A_CLICKS, A_CONVERSIONS, A_POSTBACKS, A_OUTBOUND),
        (b, B_CLICKS, B_CONVERSIONS, B_POSTBACKS, B_OUTBOUND),
    ] {
        let cost_micros = if flow == a {
            A_CLICK_COST
        } else {
            B_CLICK_COST
        };
        stack
            .clickhouse(&format!(
                "INSERT INTO clicks (click_hash, flow_id, ts, ts_ms, visitor_id, ip, country, is_bot, \
                     cost_micros) \
                 SELECT concat('h{flow}x', toString(number)), toUInt32({flow}), now(), \
                     toInt64(toUInt32(now())) * 1000 + number, toString(number), '10.0.0.1', 'DE', 0, \
                     toInt64({cost_micros}) \
                 FROM (SELECT number FROM system.numbers LIMIT {clicks})"
            ))
            .await?;
        stack
            .clickhouse(&format!(
                "INSERT INTO conversions (conversion_id, version, click_hash, flow_id, goal, status, \
                     previous_status, revenue_micros, previous_revenue_micros, currency, uid, created_at, \
                     updated_at, country) \
                 SELECT concat('c{flow}x', toString(number)), toUInt32(1), concat('h{flow}x', toString(number)), \
                     toUInt32({flow}), 'sale', 'approved', '', toInt64(1000000), toInt64(0), 'USD', \
                     concat('u', toString(number)), now(), now(), 'DE' \
                 FROM (SELECT number FROM system.numbers LIMIT {conversions})"
            ))
            .await?;
        stack
            .clickhouse(&format!(
                "INSERT INTO postback_log (postback_id, received_at, received_at_ms, flow_id, click_hash, goal, \
                     response_status, reason, message, ip, method, content_type, path, param_names, param_values, delta_ms) \
                 SELECT concat('p{flow}x', toString(number)), now(), toInt64(toUInt32(now())) * 1000 + number, \
                     toUInt32({flow}), concat('h{flow}x', toString(number)), 'sale', 200, 'accepted', 'ok', \
                     '10.0.0.2', 'GET', '', '/postback', ['click'], [concat('h{flow}x', toString(number))], 1000 \
                 FROM (SELECT number FROM system.numbers LIMIT {postbacks})"
            ))
            .await?;
        stack
            .clickhouse(&format!(
                "INSERT INTO outbound_log (attempt_id, conversion_id, outbound_id, flow_id, click_hash, goal, status, \
                     revenue_micros, currency, method, url, http_status, error, latency_ms, attempt, state, \
                     attempted_at, attempted_at_ms, manual) \
                 SELECT concat('a{flow}x', toString(number)), concat('c{flow}x', toString(number)), 'o1', \
                     toUInt32({flow}), concat('h{flow}x', toString(number)), 'sale', 'approved', 1000000, 'USD', \
                     'GET', 'https://source.example/pb', 200, '', 12, 1, 'delivered', now(), \
                     toInt64(toUInt32(now())) * 1000 + number, 0 \
                 FROM (SELECT number FROM system.numbers LIMIT {outbound})"
            ))
            .await?;
    }
    Ok(())
}

/// A 403 whose body says why.
async fn forbidden(
    stack: &Stack,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    says: &str,
) -> anyhow::Result<()> {
    let json = expect(stack, Some(key), method, path, body, 403).await?;
    assert_eq!(json["code"], "forbidden", "{path}: {json}");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{path}: {message:?} lacks {says:?}");
    Ok(())
}

fn flow_ids(items: &Value) -> HashSet<u64> {
    items
        .as_array()
        .map(|items| items.iter().filter_map(|i| i["flow_id"].as_u64()).collect())
        .unwrap_or_default()
}

/// Makes a user and an API key for them; answers (user id, key).
async fn user_with_key(
    stack: &Stack,
    username: &str,
    role: &str,
    flows: Value,
) -> anyhow::Result<(u64, String)> {
    let user = expect(
        stack,
        None,
        Method::POST,
        "/api/v1/users",
        Some(json!({"username": username, "password": format!("{username}-password-1"), "role": role, "flows": flows})),
        201,
    )
    .await?;
    assert_eq!(user["role"], role);
    assert!(
        user.get("password_hash").is_none() && !user.to_string().contains("argon2"),
        "{user}"
    );
    let id = user["id"].as_u64().context("user id")?;
    let key = expect(
        stack,
        None,
        Method::POST,
        &format!("/api/v1/users/{id}/api-keys"),
        Some(json!({"name": format!("{username}'s script")})),
        201,
    )
    .await?;
    let secret = key["key"]
        .as_str()
        .context("the key, shown once")?
        .to_string();
    assert!(secret.starts_with(key["prefix"].as_str().unwrap_or("?")));
    assert_eq!(key["role"], role);
    Ok((id, secret))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_flow_restrictions_api_keys_and_the_audit_log() -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions::default().services(&["reporting-api"])).await?;
    let result = check(&stack).await;
    stack.print_failure(&result);
    result
}

async fn check(stack: &Stack) -> anyhow::Result<()> {
    let flow_a = stack
        .create_flow(json!({"name": "Flow A", "destination_url": "https://a.example/?c={click}"}))
        .await?;
    let flow_b = stack
        .create_flow(json!({"name": "Flow B", "destination_url": "https://b.example/?c={click}"}))
        .await?;
    let a = flow_a["id"].as_u64().context("flow A id")?;
    let b = flow_b["id"].as_u64().context("flow B id")?;
    load(stack, a, b).await?;

    // The configured admin is the bootstrap owner, listed as user 0.
    let me = expect(stack, None, Method::GET, "/api/v1/me", None, 200).await?;
    assert_eq!(me["role"], "owner");
    assert_eq!(me["bootstrap"], true);
    assert_eq!(me["username"], ADMIN_USERNAME);

    // Users: refused input first.
    let new_user = |username: &str, role: &str, flows: Value, password: &str| json!({"username": username, "password": password, "role": role, "flows": flows});
    for (body, status, field) in [
        (
            new_user("x", "owner", json!([a]), "long-enough-1"),
            422,
            "flows",
        ),
        (
            new_user("x", "boss", json!([]), "long-enough-1"),
            422,
            "role",
        ),
        (new_user("x", "admin", json!([]), "short"), 422, "password"),
        (
            new_user("x", "admin", json!([999_999_999u64]), "long-enough-1"),
            422,
            "flows",
        ),
        (
            new_user("bad name", "admin", json!([]), "long-enough-1"),
            422,
            "username",
        ),
        (
            new_user(ADMIN_USERNAME, "admin", json!([]), "long-enough-1"),
            409,
            "",
        ),
    ] {
        let answer = expect(
            stack,
            None,
            Method::POST,
            "/api/v1/users",
            Some(body.clone()),
            status,
        )
        .await
        .with_context(|| format!("{body}"))?;
        if !field.is_empty() {
            assert_eq!(answer["field"], field, "{answer}");
        }
    }

    let (ana_id, ana) = user_with_key(stack, "ana", "analyst", json!([])).await?;
    let (adam_id, adam) = user_with_key(stack, "adam", "admin", json!([])).await?;
    let (rita_id, rita) = user_with_key(stack, "rita", "admin", json!([a.to_string()])).await?;
    let (_otto_id, otto) = user_with_key(stack, "otto", "owner", json!([])).await?;
    expect(
        stack,
        None,
        Method::POST,
        "/api/v1/users",
        Some(new_user("ana", "admin", json!([]), "long-enough-1")),
        409,
    )
    .await?;
    let users = expect(stack, None, Method::GET, "/api/v1/users", None, 200).await?;
    let names: Vec<&str> = users["users"]
        .as_array()
        .context("users")?
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    assert_eq!(names, [ADMIN_USERNAME, "adam", "ana", "otto", "rita"]);
    let keys = expect(
        stack,
        None,
        Method::GET,
        &format!("/api/v1/users/{rita_id}/api-keys"),
        None,
        200,
    )
    .await?;
    let listed = &keys["api_keys"][0];
    assert!(rita.starts_with(listed["prefix"].as_str().context("prefix")?));
    assert!(
        !keys.to_string().contains(&rita),
        "a listed key never shows the secret"
    );

    // Keys carry their user's role.
    let me = expect(stack, Some(&ana), Method::GET, "/api/v1/me", None, 200).await?;
    assert_eq!(
        (me["username"].as_str(), me["role"].as_str()),
        (Some("ana"), Some("analyst"))
    );
    assert_eq!(me["via"], "api_key");

    // An analyst reads logs, reports and dashboards, and changes nothing.
    for path in [
        "/api/v1/clicks",
        "/api/v1/conversions",
        "/api/v1/postbacks",
        "/api/v1/outbound-postbacks",
        "/api/v1/reports?group_by=flow",
        "/api/v1/dashboard",
        "/api/v1/flows",
        "/api/v1/offers",
    ] {
        expect(stack, Some(&ana), Method::GET, path, None, 200).await?;
    }
    let flow_spec = json!({"name": "Analyst's", "destination_url": "https://x.example/"});
    for (method, path, body) in [
        (
            Method::POST,
            "/api/v1/flows".to_string(),
            Some(flow_spec.clone()),
        ),
        (
            Method::PUT,
            format!("/api/v1/flows/{a}"),
            Some(flow_spec.clone()),
        ),
        (
            Method::POST,
            "/api/v1/offers".into(),
            Some(json!({"name": "O", "url": "https://o.example/"})),
        ),
        (
            Method::PUT,
            "/api/v1/exchange-rates".into(),
            Some(json!({"day": "2026-01-02", "base": "EUR", "rates": {"USD": 1.1}})),
        ),
        (
            Method::POST,
            "/api/v1/outbound-postbacks/replay".into(),
            Some(json!({"conversion_id": "c1"})),
        ),
    ] {
        forbidden(stack, &ana, method, &path, body, "analyst").await?;
    }
    forbidden(stack, &ana, Method::GET, "/api/v1/users", None, "owner").await?;
    forbidden(stack, &ana, Method::GET, "/api/v1/audit", None, "analyst").await?;

    // An admin does everything but users.
    let made = expect(
        stack,
        Some(&adam),
        Method::POST,
        "/api/v1/flows",
        Some(json!({"name": "Adam's flow", "destination_url": "https://adam.example/"})),
        201,
    )
    .await?;
    let adams_flow = made["id"].as_u64().context("adam's flow")?;
    expect(
        stack,
        Some(&adam),
        Method::PUT,
        "/api/v1/exchange-rates",
        Some(json!({"day": "2026-01-02", "base": "EUR", "rates": {"USD": 1.1}})),
        200,
    )
    .await?;
    // Rates written again replace older ones by their second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    expect(
        stack,
        Some(&adam),
        Method::PUT,
        "/api/v1/exchange-rates",
        Some(json!({"day": "2026-01-02", "base": "EUR", "rates": {"USD": 1.2}})),
        200,
    )
    .await?;
    let offer = expect(
        stack,
        Some(&adam),
        Method::POST,
        "/api/v1/offers",
        Some(json!({"name": "Adam's offer", "url": "https://offer.example/?c={click}"})),
        201,
    )
    .await?;
    let offer_id = offer["id"].as_u64().context("offer id")?;
    expect(
        stack,
        Some(&adam),
        Method::POST,
        &format!("/api/v1/offers/{offer_id}/archive"),
        None,
        200,
    )
    .await?;
    expect(stack, Some(&adam), Method::GET, "/api/v1/audit", None, 200).await?;
    forbidden(stack, &adam, Method::GET, "/api/v1/users", None, "owner").await?;
    forbidden(
        stack,
        &adam,
        Method::POST,
        "/api/v1/users",
        Some(new_user("eve", "owner", json!([]), "long-enough-1")),
        "owner",
    )
    .await?;
    forbidden(
        stack,
        &adam,
        Method::DELETE,
        &format!("/api/v1/users/{ana_id}"),
        None,
        "owner",
    )
    .await?;
    // A second owner manages users.
    expect(stack, Some(&otto), Method::GET, "/api/v1/users", None, 200).await?;

    // Flow A goes through an offer of its own: the one object rita will see.
    let a_offer = expect(
        stack,
        None,
        Method::POST,
        "/api/v1/offers",
        Some(json!({"name": "A's offer", "url": "https://a-offer.example/?c={click}"})),
        201,
    )
    .await?["id"]
        .as_u64()
        .context("A's offer")?;
    expect(
        stack,
        None,
        Method::PUT,
        &format!("/api/v1/flows/{a}"),
        Some(json!({"name": "Flow A", "path": {"offers": [{"offer_id": a_offer}]}})),
        200,
    )
    .await?;
    check_restricted(stack, &rita, a, b, adams_flow, (a_offer, offer_id)).await?;

    // A role change applies at once: the analyst made admin writes with the same key.
    expect(
        stack,
        None,
        Method::PUT,
        &format!("/api/v1/users/{ana_id}"),
        Some(json!({"role": "admin"})),
        200,
    )
    .await?;
    expect(
        stack,
        Some(&ana),
        Method::PUT,
        "/api/v1/exchange-rates",
        Some(json!({"day": "2026-01-03", "base": "EUR", "rates": {"USD": 1.3}})),
        200,
    )
    .await?;

    // Revoked keys and deleted users stop working on the next request.
    let rita_key_id = listed["key_id"].as_str().context("key id")?.to_string();
    expect(stack, Some(&rita), Method::GET, "/api/v1/flows", None, 200).await?;
    expect(
        stack,
        None,
        Method::DELETE,
        &format!("/api/v1/users/{rita_id}/api-keys/{rita_key_id}"),
        None,
        200,
    )
    .await?;
    let refused = expect(stack, Some(&rita), Method::GET, "/api/v1/flows", None, 401).await?;
    assert!(refused["message"]
        .as_str()
        .unwrap_or_default()
        .contains("revoked"));
    expect(
        stack,
        None,
        Method::DELETE,
        &format!("/api/v1/users/{adam_id}"),
        None,
        200,
    )
    .await?;
    expect(stack, Some(&adam), Method::GET, "/api/v1/flows", None, 401).await?;
    let login = stack
        .http
        .post(stack.url("reporting-api", "/api/v1/auth/login"))
        .json(&json!({"username": "adam", "password": "adam-password-1"}))
        .send()
        .await?;
    assert_eq!(login.status(), 401, "a deleted user cannot log in");
    // The configured owner is changed in settings only.
    expect(stack, None, Method::DELETE, "/api/v1/users/0", None, 409).await?;

    check_sessions(stack).await?;
    check_audit(stack, a, ana_id, rita_id, &rita_key_id, offer_id).await?;
    Ok(())
}

/// Rita, an admin restricted to flow A: every answer narrowed to A.
async fn check_restricted(
    stack: &Stack,
    rita: &str,
    a: u64,
    b: u64,
    adams_flow: u64,
    (a_offer, other_offer): (u64, u64),
) -> anyhow::Result<()> {
    let only_a = HashSet::from([a]);
    // Objects: only those flow A uses.
    let offer_ids = |list: &Value| -> Vec<u64> {
        list["offers"]
            .as_array()
            .map(|o| o.iter().filter_map(|o| o["id"].as_u64()).collect())
            .unwrap_or_default()
    };
    let seen = expect(
        stack,
        Some(rita),
        Method::GET,
        "/api/v1/offers?archived=1",
        None,
        200,
    )
    .await?;
    assert_eq!(offer_ids(&seen), [a_offer]);
    let all = expect(
        stack,
        None,
        Method::GET,
        "/api/v1/offers?archived=1",
        None,
        200,
    )
    .await?;
    assert_eq!(offer_ids(&all).len(), 2);
    expect(
        stack,
        Some(rita),
        Method::GET,
        &format!("/api/v1/offers/{a_offer}"),
        None,
        200,
    )
    .await?;
    expect(
        stack,
        Some(rita),
        Method::GET,
        &format!("/api/v1/offers/{other_offer}"),
        None,
        404,
    )
    .await?;

    let me = expect(stack, Some(rita), Method::GET, "/api/v1/me", None, 200).await?;
    assert_eq!(me["flows"], json!([a]));
    assert_eq!(me["restricted"], true);

    // Flows: only A is listed or found; B and Adam's are not found, not even to write.
    let flows = expect(stack, Some(rita), Method::GET, "/api/v1/flows", None, 200).await?;
    let listed: HashSet<u64> = flows["flows"]
        .as_array()
        .context("flows")?
        .iter()
        .filter_map(|f| f["id"].as_u64())
        .collect();
    assert_eq!(listed, only_a);
    expect(
        stack,
        Some(rita),
        Method::GET,
        &format!("/api/v1/flows/{a}"),
        None,
        200,
    )
    .await?;
    for other in [b, adams_flow] {
        expect(
            stack,
            Some(rita),
            Method::GET,
            &format!("/api/v1/flows/{other}"),
            None,
            404,
        )
        .await?;
        expect(
            stack,
            Some(rita),
            Method::PUT,
            &format!("/api/v1/flows/{other}"),
            Some(json!({"name": "Taken over", "destination_url": "https://evil.example/"})),
            404,
        )
        .await?;
    }
    // A write to their own flow works; writes beyond single flows are refused.
    expect(
        stack,
        Some(rita),
        Method::PUT,
        &format!("/api/v1/flows/{a}"),
        Some(json!({"name": "Flow A renamed", "destination_url": "https://a.example/?c={click}"})),
        200,
    )
    .await?;
    forbidden(
        stack,
        rita,
        Method::POST,
        "/api/v1/flows",
        Some(json!({"name": "New", "destination_url": "https://x.example/"})),
        "restricted",
    )
    .await?;
    forbidden(
        stack,
        rita,
        Method::PUT,
        "/api/v1/exchange-rates",
        Some(json!({"day": "2026-01-02", "base": "EUR", "rates": {"USD": 1.1}})),
        "restricted",
    )
    .await?;

    // Every list: only flow A's rows, all of them; filtering by B finds nothing.
    for (path, count) in [
        ("/api/v1/clicks", A_CLICKS),
        ("/api/v1/conversions", A_CONVERSIONS),
        ("/api/v1/postbacks", A_POSTBACKS),
        ("/api/v1/outbound-postbacks", A_OUTBOUND),
    ] {
        let page = expect(stack, Some(rita), Method::GET, path, None, 200).await?;
        assert_eq!(flow_ids(&page["items"]), only_a, "{path}");
        assert_eq!(
            page["items"].as_array().map(Vec::len),
            Some(count as usize),
            "{path}"
        );
        let other = expect(
            stack,
            Some(rita),
            Method::GET,
            &format!("{path}?flow={b}"),
            None,
            200,
        )
        .await?;
        assert_eq!(other["items"], json!([]), "{path}?flow={b}");
        // The owner sees both flows in the same list.
        let all = expect(stack, None, Method::GET, path, None, 200).await?;
        assert_eq!(flow_ids(&all["items"]), HashSet::from([a, b]), "{path}");
    }
    // One postback log entry of B is not found.
    expect(
        stack,
        Some(rita),
        Method::GET,
        &format!("/api/v1/postbacks/p{b}x0"),
        None,
        404,
    )
    .await?;
    expect(
        stack,
        Some(rita),
        Method::GET,
        &format!("/api/v1/postbacks/p{a}x0"),
        None,
        200,
    )
    .await?;

    // Reports: rows and totals of A alone.
    let report = expect(
        stack,
        Some(rita),
        Method::GET,
        "/api/v1/reports?group_by=flow",
        None,
        200,
    )
    .await?;
    let rows = report["rows"].as_array().context("rows")?;
    assert_eq!(rows.len(), 1, "{report}");
    assert_eq!(rows[0]["flow"], a.to_string());
    assert_eq!(report["totals"]["clicks"], A_CLICKS);
    let csv = stack
        .http
        .get(stack.url("reporting-api", "/api/v1/reports?group_by=flow&format=csv"))
        .bearer_auth(rita)
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(!csv.contains(&format!("\n{b},")), "{csv}");
    let all = expect(
        stack,
        None,
        Method::GET,
        "/api/v1/reports?group_by=flow",
        None,
        200,
    )
    .await?;
    assert_eq!(all["totals"]["clicks"], A_CLICKS + B_CLICKS);

    // Dashboard: today's figures, top flows and active flows of A alone (today where it
    // is noon: the clicks are today's whenever the test runs).
    let dashboard_path = traffsure_tests::midday_dashboard_path();
    let dashboard = expect(stack, Some(rita), Method::GET, &dashboard_path, None, 200).await?;
    assert_eq!(dashboard["clicks_today"], A_CLICKS, "{dashboard}");
    assert_eq!(dashboard["conversions_today"], A_CONVERSIONS, "{dashboard}");
    assert_eq!(dashboard["active_flows"], 1);
    let top: Vec<u64> = dashboard["top_today"]["flows"]
        .as_array()
        .context("top flows")?
        .iter()
        .filter_map(|f| f["id"].as_u64())
        .collect();
    assert_eq!(top, [a]);
    // Cost and what follows from it: A's alone too.
    let money = |v: &Value| v.as_str().and_then(|s| s.parse::<f64>().ok());
    assert_eq!(money(&dashboard["cost_today"]), Some(3.0), "{dashboard}");
    assert_eq!(money(&dashboard["cpc_today"]), Some(0.5), "{dashboard}");
    // … in the time zone asked for, also where today is another day than in UTC: UTC-12
    // before 11:00 UTC, UTC+14 after (an hour or more from local midnight either way).
    let hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        / 3600
        % 24;
    let other_day = if hour < 11 {
        "Etc/GMT%2B12"
    } else {
        "Etc/GMT-14"
    };
    let shifted = expect(
        stack,
        Some(rita),
        Method::GET,
        &format!("/api/v1/dashboard?timezone={other_day}"),
        None,
        200,
    )
    .await?;
    assert_eq!(shifted["clicks_today"], A_CLICKS, "{shifted}");
    assert_eq!(money(&shifted["cost_today"]), Some(3.0), "{shifted}");
    let all = expect(stack, None, Method::GET, &dashboard_path, None, 200).await?;
    assert_eq!(all["clicks_today"], A_CLICKS + B_CLICKS);
    assert_eq!(all["active_flows"], 3);
    assert_eq!(money(&all["cost_today"]), Some(11.0), "{all}");

    // The audit log: only the entries of flow A.
    let audit = expect(stack, Some(rita), Method::GET, "/api/v1/audit", None, 200).await?;
    assert_eq!(flow_ids(&audit["items"]), only_a, "{audit}");

    // Cost updates: the owner's of both flows, rita's list has A's alone (by id or
    // slug), none of B's.
    for (flow, amount) in [(a, "7.5"), (b, "9.25")] {
        let update = json!({"flow": flow, "from": "2026-03-01 00:00:00", "to": "2026-03-01 01:00:00", "amount": amount});
        expect(
            stack,
            None,
            Method::POST,
            "/api/v1/costs",
            Some(update),
            201,
        )
        .await?;
    }
    let cost_flows = |list: &Value| -> Vec<u64> {
        list["costs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["flow"].as_u64())
            .collect()
    };
    let all = expect(stack, None, Method::GET, "/api/v1/costs", None, 200).await?;
    assert_eq!(cost_flows(&all), [b, a], "{all}");
    let hers = expect(stack, Some(rita), Method::GET, "/api/v1/costs", None, 200).await?;
    assert_eq!(cost_flows(&hers), [a], "{hers}");
    let path = format!("/api/v1/costs?flow={b}");
    let other = expect(stack, Some(rita), Method::GET, &path, None, 200).await?;
    assert_eq!(cost_flows(&other), Vec::<u64>::new(), "{other}");
    let slug = flows["flows"][0]["slug"].as_str().context("flow A slug")?;
    let path = format!("/api/v1/costs?flow={slug}");
    let by_slug = expect(stack, Some(rita), Method::GET, &path, None, 200).await?;
    assert_eq!(cost_flows(&by_slug), [a], "{by_slug}");
    Ok(())
}

/// Logging in as a user: the session carries the role, an analyst's write is refused,
/// and `next` only ever answers a path of this site.
async fn check_sessions(stack: &Stack) -> anyhow::Result<()> {
    expect(
        stack,
        None,
        Method::POST,
        "/api/v1/users",
        Some(json!({"username": "sam", "password": "sam-password-1", "role": "analyst"})),
        201,
    )
    .await?;
    let login = |username: &'static str, password: &'static str, next: &'static str| {
        stack
            .http
            .post(stack.url("reporting-api", "/api/v1/auth/login"))
            .json(&json!({"username": username, "password": password, "next": next}))
            .send()
    };
    assert_eq!(login("sam", "wrong-password", "/").await?.status(), 401);
    assert_eq!(login("nobody", "sam-password-1", "/").await?.status(), 401);
    let response = login("sam", "sam-password-1", "/reports?group_by=day").await?;
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"]
        .to_str()?
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    let session: Value = response.json().await?;
    assert_eq!(session["role"], "analyst");
    assert_eq!(session["next"], "/reports?group_by=day");
    let csrf = session["csrf_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let me: Value = stack
        .http
        .get(stack.url("reporting-api", "/api/v1/me"))
        .header("cookie", &cookie)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        (me["username"].as_str(), me["via"].as_str()),
        (Some("sam"), Some("session"))
    );
    let write = stack
        .http
        .post(stack.url("reporting-api", "/api/v1/flows"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({"name": "Sam's", "destination_url": "https://x.example/"}))
        .send()
        .await?;
    assert_eq!(write.status(), 403);
    for bad in [
        "//evil.example/",
        "/\\evil.example",
        "/%5cevil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "/\t/evil.example",
    ] {
        let answer: Value = login(ADMIN_USERNAME, ADMIN_PASSWORD, bad)
            .await?
            .json()
            .await?;
        assert_eq!(answer["next"], "/", "{bad:?}");
    }
    Ok(())
}

/// The audit log: an entry for each change, with who, what, and before and after.
async fn check_audit(
    stack: &Stack,
    a: u64,
    ana_id: u64,
    rita_id: u64,
    rita_key_id: &str,
    offer_id: u64,
) -> anyhow::Result<()> {
    let entries = |query: String| async move {
        let page = expect(
            stack,
            None,
            Method::GET,
            &format!("/api/v1/audit?{query}"),
            None,
            200,
        )
        .await?;
        anyhow::Ok(page["items"].as_array().cloned().unwrap_or_default())
    };
    let all = entries("limit=500".into()).await?;
    let text = json!(all).to_string();
    assert!(
        !text.contains("argon2"),
        "no password hash in the audit log"
    );

    // Flow A: created by the owner, renamed by rita (before and after).
    let flow = entries(format!("object=flow&object_id={a}")).await?;
    let actions: Vec<(&str, &str)> = flow
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or(""),
                e["username"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("update", "rita"),
            ("update", ADMIN_USERNAME),
            ("create", ADMIN_USERNAME)
        ]
    );
    assert_eq!(flow[0]["before"]["name"], "Flow A");
    assert_eq!(flow[0]["after"]["name"], "Flow A renamed");
    assert_eq!(flow[0]["via"], "api_key");
    assert_eq!(flow[0]["role"], "admin");
    // The owner's update gave flow A its offer.
    assert_eq!(flow[1]["before"]["path"], Value::Null);
    assert!(flow[1]["after"]["path"]["offers"][0]["offer_id"]
        .as_u64()
        .is_some());
    assert_eq!(flow[2]["before"], Value::Null);

    // Users: ana created as an analyst, then made admin.
    let ana = entries(format!("object=user&object_id={ana_id}")).await?;
    assert_eq!(ana.len(), 2, "{ana:?}");
    assert_eq!(ana[0]["action"], "update");
    assert_eq!(ana[0]["before"]["role"], "analyst");
    assert_eq!(ana[0]["after"]["role"], "admin");
    assert_eq!(ana[1]["action"], "create");
    assert_eq!(ana[1]["after"]["username"], "ana");
    let rita = entries(format!("object=user&object_id={rita_id}")).await?;
    assert_eq!(rita[0]["after"]["flows"], json!([a]));
    let deleted = entries("object=user&action=delete".into()).await?;
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["before"]["username"], "adam");
    assert_eq!(deleted[0]["after"], Value::Null);

    // API keys: made and revoked, never with the secret.
    let key = entries(format!("object=api_key&object_id={rita_key_id}")).await?;
    let actions: Vec<&str> = key.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["revoke", "create"]);
    assert!(key[1]["after"].get("key").is_none());

    // Exchange rates, with the rate before and after.
    let rates = entries("object=exchange_rates&object_id=EUR/2026-01-02".into()).await?;
    assert_eq!(rates.len(), 2, "{rates:?}");
    assert_eq!(rates[0]["before"]["rates"]["USD"], 1.1);
    assert_eq!(rates[0]["after"]["rates"]["USD"], 1.2);
    assert_eq!(rates[1]["before"]["rates"], json!({}));

    // Objects: created and archived.
    let offer = entries(format!("object=offer&object_id={offer_id}")).await?;
    let actions: Vec<&str> = offer.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, ["archive", "create"]);
    assert_eq!(offer[0]["before"]["archived"], false);
    assert_eq!(offer[0]["after"]["archived"], true);

    // Filters by user, and CSV.
    let by_adam = entries("user=adam".into()).await?;
    assert!(by_adam.len() >= 5 && by_adam.iter().all(|e| e["username"] == "adam"));
    let csv = stack
        .api(Method::GET, "/api/v1/audit?format=csv&object=user")
        .send()
        .await?;
    assert!(csv.headers()["content-type"]
        .to_str()?
        .starts_with("text/csv"));
    let csv = csv.text().await?;
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("time,username,user_id,role,via,action,object,object_id,flow_id,before,after")
    );
    assert!(lines.count() >= 6, "{csv}");
    expect(
        stack,
        None,
        Method::GET,
        "/api/v1/audit?action=steal",
        None,
        422,
    )
    .await?;
    Ok(())
}

/// The exchange rates fetch changes rates with no user asking: its imports are in the
/// audit log too, by the service itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rates_fetch_is_in_the_audit_log() -> anyhow::Result<()> {
    let port = serve_local(|app| {
        app.route(
            "/eurofxref-hist.csv",
            actix_web::web::get().to(|| async { "Date,USD,JPY,\n2026-01-02,1.1,160.5,\n" }),
        );
    })?;
    let stack = Stack::start_with(StackOptions::default().services(&["reporting-api"]).env(
        "reporting-api",
        "TRAFFSURE__CURRENCY__RATES_URL",
        format!("http://127.0.0.1:{port}/eurofxref-hist.csv"),
    ))
    .await?;
    let result = async {
        let entry = eventually(std::time::Duration::from_secs(20), || async {
            let page = expect(
                &stack,
                None,
                Method::GET,
                "/api/v1/audit?object=exchange_rates",
                None,
                200,
            )
            .await?;
            Ok(page["items"]
                .as_array()
                .and_then(|items| items.first().cloned()))
        })
        .await?;
        assert_eq!(entry["action"], "import");
        assert_eq!(
            (entry["username"].as_str(), entry["via"].as_str()),
            (Some("rates fetch"), Some("system"))
        );
        assert_eq!(entry["after"]["stored"], 2, "{entry}");
        assert_eq!(entry["object_id"], "EUR");
        anyhow::Ok(())
    }
    .await;
    stack.print_failure(&result);
    result
}

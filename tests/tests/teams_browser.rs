//! Teams in a real browser: runs `tests/browser/teams.mjs` (the owner creates an analyst
//! and an admin restricted to flow A in the Users page, makes and revokes API keys; the
//! analyst and the restricted admin log in and see what each can and cannot do; the
//! owner reads the audit log), then checks through the API that the panel made what it
//! showed: the users and their roles, a kept key that carries its user's role and flow,
//! a revoked key refused, and the audit entries. Screenshots land in
//! `target/browser-screenshots/teams/`.

use std::time::Duration;

use anyhow::Context;
use reqwest::Method;
use serde_json::{json, Value};
use traffsure_tests::browser::run_script;
use traffsure_tests::{Stack, StackOptions, ADMIN_PASSWORD, ADMIN_USERNAME};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_analyst_and_restricted_admin_in_headless_chromium() -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions::default().services(&["reporting-api"])).await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let a = stack
        .create_flow(json!({"name": "Flow A", "destination_url": "https://a.example/?c={click}"}))
        .await?["id"]
        .as_u64()
        .context("flow A")?;
    let b = stack
        .create_flow(json!({"name": "Flow B", "destination_url": "https://b.example/?c={click}"}))
        .await?["id"]
        .as_u64()
        .context("flow B")?;
    // Clicks of both flows, their hashes naming the flow (`h<flow>x<n>`).
    for flow in [a, b] {
        stack
            .clickhouse(&format!(
                "INSERT INTO clicks (click_hash, flow_id, ts, ts_ms, visitor_id, ip, country, is_bot) \
                 SELECT concat('h{flow}x', toString(number)), toUInt32({flow}), now(), \
                     toInt64(toUInt32(now())) * 1000 + number, toString(number), '10.0.0.1', 'DE', 0 \
                 FROM (SELECT number FROM system.numbers LIMIT 5)"
            ))
            .await?;
    }
    let run = run_script(
        stack,
        "teams.mjs",
        "teams",
        &[
            ("ADMIN_USERNAME", ADMIN_USERNAME.into()),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
            ("FLOW_A", a.to_string()),
            ("FLOW_B", b.to_string()),
        ],
        Duration::from_secs(240),
    )
    .await?;
    let line = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("teams ok "))
        .ok_or_else(|| anyhow::anyhow!("no result line in {}", run.stdout))?;
    let keys: Value = serde_json::from_str(line)?;
    let shots = run.screenshot_count()?;
    assert!(
        shots >= 14,
        "only {shots} screenshots in {}",
        run.screenshots.display()
    );

    // The users the panel made.
    let users = stack
        .api_expect(Method::GET, "/api/v1/users", None, 200)
        .await?;
    let role_and_flows = |name: &str| {
        users["users"]
            .as_array()
            .and_then(|all| all.iter().find(|u| u["username"] == name))
            .map(|u| (u["role"].clone(), u["flows"].clone()))
    };
    assert_eq!(role_and_flows("ana"), Some((json!("analyst"), json!([]))));
    assert_eq!(role_and_flows("rita"), Some((json!("admin"), json!([a]))));

    // The key the panel showed carries rita's role and flow; the revoked one is refused.
    let with_key = |key: &str| {
        stack
            .http
            .get(stack.url("reporting-api", "/api/v1/me"))
            .bearer_auth(key.to_string())
            .send()
    };
    let kept = keys["kept"].as_str().context("kept key")?;
    let me: Value = with_key(kept).await?.json().await?;
    assert_eq!(
        (&me["username"], &me["role"], &me["flows"]),
        (&json!("rita"), &json!("admin"), &json!([a]))
    );
    let revoked = keys["revoked"].as_str().context("revoked key")?;
    assert_eq!(with_key(revoked).await?.status(), 401);

    // The audit log has each change the panel made, by the owner.
    let audit = stack
        .api_expect(Method::GET, "/api/v1/audit?limit=100", None, 200)
        .await?;
    let changes: Vec<(String, String)> = audit["items"]
        .as_array()
        .context("items")?
        .iter()
        .map(|e| {
            (
                e["object"].as_str().unwrap_or_default().to_string(),
                e["action"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for (object, action, times) in [
        ("user", "create", 2),
        ("user", "update", 1),
        ("api_key", "create", 2),
        ("api_key", "revoke", 1),
    ] {
        let seen = changes
            .iter()
            .filter(|(o, a)| o == object && a == action)
            .count();
        assert_eq!(seen, times, "{object} {action} in {changes:?}");
    }
    // The new password shows as changed, never as a hash.
    let update = audit["items"]
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .find(|e| e["object"] == "user" && e["action"] == "update")
        })
        .context("the password change")?;
    assert_eq!(update["after"]["password_changed"], true, "{update}");
    assert!(!audit.to_string().contains("argon2"));
    assert!(audit["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["object"] != "flow")
        .all(|e| e["username"] == ADMIN_USERNAME));
    Ok(())
}

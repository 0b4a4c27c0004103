//! Each user's time zone in a real browser: runs `tests/browser/timezones.mjs` (ana sets
//! Asia/Tokyo in one browser; a second browser with a fresh profile logging in as ana
//! reads the dashboard and the clicks list in it without any zone in the URL; a zone in
//! the URL wins for that page; bob keeps UTC; the owner's audit log in the zone, its
//! date presets filtering the rows; the owner sets bob's zone in the Users page), then checks through the API what the panel stored:
//! each user's zone and the audit entries of the changes. The audit log is seeded with
//! entries half an hour before and after the zone's last midnight and one ten days old,
//! so the presets' counts differ from UTC's at any time of day. Screenshots land in
//! `target/browser-screenshots/timezones/`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use reqwest::Method;
use serde_json::{json, Value};
use traffsure_tests::browser::run_script;
use traffsure_tests::{Stack, StackOptions, ADMIN_PASSWORD, ADMIN_USERNAME};

const ZONE: &str = "Asia/Tokyo";
/// Asia/Tokyo's offset from UTC (no daylight saving time since 1951).
const ZONE_OFFSET_S: i64 = 9 * 3600;
const OTHER_ZONE: &str = "America/New_York";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_time_zone_follows_them_in_headless_chromium() -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions::default().services(&["reporting-api"])).await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

/// An audit entry at `at_s` (seconds since the epoch), straight into the table.
async fn seed_entry(stack: &Stack, id: &str, at_s: i64) -> anyhow::Result<()> {
    stack
        .clickhouse(&format!(
            "INSERT INTO audit_log (id, at, at_ms, user_id, username, role, via, object_kind, \
                 object_id, flow_id, action, before_json, after_json) \
             SELECT '{id}', toDateTime({at_s}), toInt64({at_s}) * 1000, 0, 'seed', 'owner', \
                 'system', 'flow', '{id}', 0, 'update', '', ''"
        ))
        .await?;
    Ok(())
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let mut ids = Vec::new();
    for (username, role) in [("ana", "analyst"), ("bob", "admin")] {
        let user = stack
            .api_expect(
                Method::POST,
                "/api/v1/users",
                Some(json!({"username": username, "password": format!("{username}-password-1"), "role": role})),
                201,
            )
            .await?;
        ids.push(user["id"].as_u64().context("user id")?);
    }
    let flow = stack
        .create_flow(json!({"name": "Flow A", "destination_url": "https://a.example/?c={click}"}))
        .await?["id"]
        .as_u64()
        .context("flow")?;
    stack
        .clickhouse(&format!(
            "INSERT INTO clicks (click_hash, flow_id, ts, ts_ms, visitor_id, ip, country, is_bot) \
             SELECT concat('h', toString(number)), toUInt32({flow}), now(), \
                 toInt64(toUInt32(now())) * 1000 + number, toString(number), '10.0.0.1', 'DE', 0 \
             FROM (SELECT number FROM system.numbers LIMIT 3)"
        ))
        .await?;
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    let midnight = (now + ZONE_OFFSET_S).div_euclid(86_400) * 86_400 - ZONE_OFFSET_S;
    seed_entry(stack, "before-midnight", midnight - 1800).await?;
    seed_entry(stack, "after-midnight", midnight + 1800).await?;
    seed_entry(stack, "ten-days-old", now - 10 * 86_400).await?;

    let run = run_script(
        stack,
        "timezones.mjs",
        "timezones",
        &[
            ("ADMIN_USERNAME", ADMIN_USERNAME.into()),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
            ("ZONE", ZONE.into()),
            ("OTHER_ZONE", OTHER_ZONE.into()),
        ],
        Duration::from_secs(300),
    )
    .await?;
    let line = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("timezones ok "))
        .ok_or_else(|| anyhow::anyhow!("no result line in {}", run.stdout))?;
    let seen: Value = serde_json::from_str(line)?;
    println!("audit rows by preset: {seen}");
    let shots = run.screenshot_count()?;
    assert!(
        shots >= 10,
        "only {shots} screenshots in {}",
        run.screenshots.display()
    );

    // What the panel stored: ana's and the owner's zone, bob's as the owner set it.
    let users = stack
        .api_expect(Method::GET, "/api/v1/users", None, 200)
        .await?;
    let zone_of = |name: &str| {
        users["users"]
            .as_array()
            .and_then(|all| all.iter().find(|u| u["username"] == name))
            .map(|u| u["timezone"].clone())
    };
    assert_eq!(zone_of("ana"), Some(json!(ZONE)), "{users}");
    assert_eq!(zone_of("bob"), Some(json!(OTHER_ZONE)), "{users}");
    assert_eq!(zone_of(ADMIN_USERNAME), Some(json!(ZONE)), "{users}");

    // Each change is in the audit log, by the user who made it.
    let audit = stack
        .api_expect(
            Method::GET,
            "/api/v1/audit?object=user&action=update&limit=100",
            None,
            200,
        )
        .await?;
    let changes: Vec<(String, String, String)> = audit["items"]
        .as_array()
        .context("items")?
        .iter()
        .map(|e| {
            (
                e["object_id"].as_str().unwrap_or_default().to_string(),
                e["username"].as_str().unwrap_or_default().to_string(),
                e["after"]["timezone"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            (
                ids[1].to_string(),
                ADMIN_USERNAME.to_string(),
                OTHER_ZONE.to_string()
            ),
            (
                "0".to_string(),
                ADMIN_USERNAME.to_string(),
                ZONE.to_string()
            ),
            (ids[0].to_string(), "ana".to_string(), ZONE.to_string()),
        ],
        "{audit}"
    );
    Ok(())
}

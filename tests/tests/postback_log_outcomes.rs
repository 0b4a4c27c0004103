//! The postback log says what became of each postback: postbacks sent to postback-ingest
//! end converted, updated, duplicate, expired, held (their click never comes) and refused,
//! and the reporting API shows each outcome with its conversion and filters on outcome,
//! goal, uid, raw status and response status with exact counts, across pages.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use traffsure_core::ClickHashKeys;
use traffsure_tests::{eventually, first_click, send_clicks, Stack, StackOptions};

const DAY_MS: i64 = 86_400_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_entry_shows_its_outcome_and_the_filters_count_exactly() -> anyhow::Result<()> {
    // A hold long enough that a postback whose click never comes stays held.
    let stack = Stack::start_with(StackOptions::default().env(
        "conversion-attribution",
        "TRAFFSURE__HOLD_TIMEOUT_SECS",
        "3600",
    ))
    .await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

async fn get(stack: &Stack, path: &str) -> anyhow::Result<(StatusCode, Value)> {
    let response = stack.api(Method::GET, path).send().await?;
    let status = response.status();
    Ok((status, response.json().await?))
}

async fn items(stack: &Stack, query: &str) -> anyhow::Result<Vec<Value>> {
    let (status, body) = get(stack, &format!("/api/v1/postbacks?{query}")).await?;
    anyhow::ensure!(status == StatusCode::OK, "{query}: {status} {body}");
    Ok(body["items"].as_array().cloned().unwrap_or_default())
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let slug = format!("outcomes-{}", stack.id);
    let flow = stack
        .create_flow(json!({
            "name": "Outcomes",
            "slug": slug,
            "destination_url": "https://offer.example/land?c={click}",
            "goals": [{"key": "sale", "payout": "1"}]
        }))
        .await?;
    let flow_id = flow["id"].as_u64().unwrap_or_default() as u32;
    let track = stack.url("click-ingest", &format!("/c/{slug}"));
    first_click(stack, &track).await?;
    let (hashes, _) = send_clicks(stack, &track, 1, 2).await?;
    // Click hashes of clicks that never happened: one from 40 days ago (past the 30-day
    // window), one from now (held for its click).
    let keys = ClickHashKeys::parse(traffsure_tests::CLICK_HASH_KEYS, 1)?;
    let now_ms = chrono_now_ms();
    let old = keys.generate(now_ms - 40 * DAY_MS, flow_id, 7);
    let never = keys.generate(now_ms, flow_id, 9);

    let sends = [
        (
            "converted",
            format!(
                "click={}&goal=sale&uid=A1&status=approved&revenue=12.50&currency=USD",
                hashes[0]
            ),
        ),
        (
            "pending",
            format!(
                "click={}&goal=sale&uid=B1&status=pending&revenue=5",
                hashes[1]
            ),
        ),
        (
            "updated",
            format!(
                "click={}&goal=sale&uid=B1&status=approved&revenue=7",
                hashes[1]
            ),
        ),
        (
            "duplicate",
            format!(
                "click={}&goal=sale&uid=B1&status=approved&revenue=7",
                hashes[1]
            ),
        ),
        (
            "expired",
            format!("click={old}&goal=sale&tx=E1&status=approved"),
        ),
        ("held", format!("click={never}&goal=sale&uid=H1")),
        ("refused", "uid=R1&status=approved".to_string()),
    ];
    let mut ids: HashMap<&str, String> = HashMap::new();
    for (name, query) in &sends {
        let response = stack
            .http
            .get(stack.url("postback-ingest", &format!("/postback?{query}")))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        let expected = if *name == "refused" { 422 } else { 200 };
        assert_eq!(status.as_u16(), expected, "{name}: {body}");
        let id = body["postback_id"].as_str().unwrap_or_default().to_string();
        assert!(!id.is_empty(), "{name}: {body}");
        ids.insert(name, id);
        // In order: the update and the duplicate follow a decided first version.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Every entry logged, and every decided one decided, with its conversion stored.
    let entries: HashMap<String, Value> = eventually(Duration::from_secs(90), || async {
        let all = items(stack, "limit=50").await?;
        let decided = all
            .iter()
            .filter(|e| !["held", "refused"].contains(&e["outcome"].as_str().unwrap_or_default()))
            .count();
        let stored = all
            .iter()
            .all(|e| e["conversion"].is_null() || !e["conversion"]["status"].is_null());
        let updated = all.iter().any(|e| {
            e["postback_id"] == ids["pending"].as_str() && e["conversion"]["latest_version"] == 2
        });
        Ok(
            (all.len() == 7 && decided == 5 && stored && updated).then(|| {
                all.into_iter()
                    .map(|e| (e["postback_id"].as_str().unwrap_or_default().to_string(), e))
                    .collect()
            }),
        )
    })
    .await?;
    let entry = |name: &str| entries[&ids[name]].clone();

    let converted = entry("converted");
    assert_eq!(converted["outcome"], "converted");
    assert_eq!(converted["conversion"]["version"], 1);
    assert_eq!(converted["conversion"]["latest_version"], 1);
    assert_eq!(converted["conversion"]["status"], "approved");
    assert_eq!(converted["conversion"]["revenue"], "12.5");
    assert_eq!(converted["conversion"]["currency"], "USD");
    assert!(converted["decided_at"].is_string(), "{converted}");

    // The first version of the updated conversion shows the conversion's latest state.
    let pending = entry("pending");
    let conversion_id = pending["conversion"]["conversion_id"].clone();
    assert_eq!(pending["outcome"], "converted");
    assert_eq!(pending["conversion"]["version"], 1);
    assert_eq!(pending["conversion"]["latest_version"], 2);
    assert_eq!(pending["conversion"]["status"], "approved");
    assert_eq!(pending["conversion"]["revenue"], "7");

    let updated = entry("updated");
    assert_eq!(updated["outcome"], "updated");
    assert_eq!(updated["conversion"]["conversion_id"], conversion_id);
    assert_eq!(updated["conversion"]["version"], 2);
    assert_eq!(updated["conversion"]["status"], "approved");

    let duplicate = entry("duplicate");
    assert_eq!(duplicate["outcome"], "duplicate");
    assert_eq!(duplicate["conversion"]["conversion_id"], conversion_id);
    assert_eq!(duplicate["conversion"]["version"], Value::Null);
    assert_eq!(duplicate["conversion"]["latest_version"], 2);

    let expired = entry("expired");
    assert_eq!(expired["outcome"], "expired");
    assert_eq!(expired["conversion"], Value::Null);

    let held = entry("held");
    assert_eq!(held["outcome"], "held");
    assert_eq!(held["decided_at"], Value::Null);
    assert_eq!(held["conversion"], Value::Null);

    let refused = entry("refused");
    assert_eq!(refused["outcome"], "refused");
    assert_eq!(refused["response_status"], 422);

    // The single entry carries the same outcome fields.
    let (status, one) = get(stack, &format!("/api/v1/postbacks/{}", ids["updated"])).await?;
    assert_eq!(status, StatusCode::OK);
    for field in ["outcome", "outcome_message", "decided_at", "conversion"] {
        assert_eq!(one[field], updated[field], "{field}");
    }
    assert!(one["payload"]["params"].is_array());

    // Each filter's result, exactly.
    let id_set = |list: &[Value]| {
        let mut v: Vec<String> = list
            .iter()
            .map(|e| e["postback_id"].as_str().unwrap_or_default().to_string())
            .collect();
        v.sort();
        v
    };
    let named = |names: &[&str]| {
        let mut v: Vec<String> = names.iter().map(|n| ids[n].clone()).collect();
        v.sort();
        v
    };
    let accepted = named(&[
        "converted",
        "pending",
        "updated",
        "duplicate",
        "expired",
        "held",
    ]);
    for (query, expected) in [
        ("outcome=converted", named(&["converted", "pending"])),
        ("outcome=updated", named(&["updated"])),
        ("outcome=duplicate", named(&["duplicate"])),
        ("outcome=expired", named(&["expired"])),
        ("outcome=held", named(&["held"])),
        ("outcome=refused", named(&["refused"])),
        ("outcome=click_not_found", vec![]),
        ("goal=SALE", accepted.clone()),
        ("goal=lead", vec![]),
        ("uid=B1", named(&["pending", "updated", "duplicate"])),
        ("uid=E1", named(&["expired"])),
        ("uid=b1", vec![]),
        (
            "raw_status=approved",
            named(&["converted", "updated", "duplicate", "expired", "refused"]),
        ),
        ("raw_status=PENDING", named(&["pending"])),
        ("response_status=422", named(&["refused"])),
        ("status=200", accepted.clone()),
        ("outcome=converted&uid=A1", named(&["converted"])),
        ("outcome=held&response_status=200", named(&["held"])),
    ] {
        assert_eq!(id_set(&items(stack, query).await?), expected, "{query}");
    }

    // The outcome filter pages: one entry a page, the second page the last.
    let (_, first) = get(stack, "/api/v1/postbacks?outcome=converted&limit=1").await?;
    let cursor = first["next_cursor"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(first["items"].as_array().map(Vec::len), Some(1));
    assert!(!cursor.is_empty(), "{first}");
    let (_, second) = get(
        stack,
        &format!("/api/v1/postbacks?outcome=converted&limit=1&cursor={cursor}"),
    )
    .await?;
    assert_eq!(second["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(second["next_cursor"], Value::Null);
    let mut paged = vec![first["items"][0].clone(), second["items"][0].clone()];
    paged.sort_by_key(|e| e["postback_id"].as_str().unwrap_or_default().to_string());
    assert_eq!(id_set(&paged), named(&["converted", "pending"]));

    let (status, refusal) = get(stack, "/api/v1/postbacks?outcome=won").await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refusal["field"], "outcome");
    Ok(())
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

//! Each user's time zone, stored with the user: `GET /api/v1/me` shows it (UTC until
//! set), `PUT /api/v1/me` sets one's own — an analyst's too, though analysts change
//! nothing else — and refuses an unknown zone with a 422 naming `timezone`; owners set
//! anyone's through `PUT /api/v1/users/{id}`, the configured owner's (user 0) included;
//! every change is in the audit log with before and after; and the API itself keeps
//! UTC for a request that names no zone, whoever sends it.

use anyhow::Context;
use reqwest::Method;
use serde_json::{json, Value};
use traffsure_tests::{expect_as as expect, Stack, StackOptions};

/// Makes a user with an API key; answers (user id, key).
async fn user_with_key(stack: &Stack, username: &str, role: &str) -> anyhow::Result<(u64, String)> {
    let user = expect(
        stack,
        None,
        Method::POST,
        "/api/v1/users",
        Some(json!({"username": username, "password": format!("{username}-password-1"), "role": role})),
        201,
    )
    .await?;
    assert_eq!(user["timezone"], "UTC", "a new user reads UTC: {user}");
    let id = user["id"].as_u64().context("user id")?;
    let key = expect(
        stack,
        None,
        Method::POST,
        &format!("/api/v1/users/{id}/api-keys"),
        Some(json!({"name": "script"})),
        201,
    )
    .await?;
    Ok((id, key["key"].as_str().context("key")?.to_string()))
}

/// The newest audit entry of user `id`.
async fn last_entry(stack: &Stack, id: u64) -> anyhow::Result<Value> {
    let page = expect(
        stack,
        None,
        Method::GET,
        &format!("/api/v1/audit?object=user&object_id={id}&action=update"),
        None,
        200,
    )
    .await?;
    page["items"]
        .as_array()
        .and_then(|items| items.first().cloned())
        .context("an audit entry")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_has_a_stored_time_zone() -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions::default().services(&["reporting-api"])).await?;
    let result = check(&stack).await;
    stack.print_failure(&result);
    result
}

async fn check(stack: &Stack) -> anyhow::Result<()> {
    let (ana, ana_key) = user_with_key(stack, "ana", "analyst").await?;
    let (bob, bob_key) = user_with_key(stack, "bob", "admin").await?;
    let ana_key = Some(ana_key.as_str());
    let bob_key = Some(bob_key.as_str());

    let me = expect(stack, ana_key, Method::GET, "/api/v1/me", None, 200).await?;
    assert_eq!(
        (me["username"].as_str(), me["timezone"].as_str()),
        (Some("ana"), Some("UTC"))
    );

    // Unknown zones, and zones that are not names at all, are refused naming the field.
    for bad in [
        "Mars/Olympus_Mons",
        "Asia/Tokyo; DROP TABLE users",
        "",
        "a'b",
    ] {
        let refused = expect(
            stack,
            ana_key,
            Method::PUT,
            "/api/v1/me",
            Some(json!({"timezone": bad})),
            422,
        )
        .await?;
        assert_eq!(refused["field"], "timezone", "{bad:?}: {refused}");
    }
    let me = expect(stack, ana_key, Method::GET, "/api/v1/me", None, 200).await?;
    assert_eq!(me["timezone"], "UTC", "a refused zone is not stored");

    // An analyst sets their own zone, and still changes nothing else.
    let set = expect(
        stack,
        ana_key,
        Method::PUT,
        "/api/v1/me",
        Some(json!({"timezone": "Asia/Tokyo"})),
        200,
    )
    .await?;
    assert_eq!(
        (set["username"].as_str(), set["timezone"].as_str()),
        (Some("ana"), Some("Asia/Tokyo"))
    );
    let me = expect(stack, ana_key, Method::GET, "/api/v1/me", None, 200).await?;
    assert_eq!(me["timezone"], "Asia/Tokyo");
    let refused = expect(
        stack,
        ana_key,
        Method::PUT,
        &format!("/api/v1/users/{ana}"),
        Some(json!({"role": "owner"})),
        403,
    )
    .await?;
    assert_eq!(refused["code"], "forbidden");
    expect(
        stack,
        ana_key,
        Method::POST,
        "/api/v1/flows",
        Some(json!({"name": "Ana's", "destination_url": "https://x.example/"})),
        403,
    )
    .await?;
    // Another user keeps UTC.
    let me = expect(stack, bob_key, Method::GET, "/api/v1/me", None, 200).await?;
    assert_eq!(me["timezone"], "UTC");

    // The change is in the audit log, by the analyst, with before and after.
    let entry = last_entry(stack, ana).await?;
    assert_eq!(
        (entry["username"].as_str(), entry["role"].as_str()),
        (Some("ana"), Some("analyst")),
        "{entry}"
    );
    assert_eq!(
        (
            entry["before"]["timezone"].as_str(),
            entry["after"]["timezone"].as_str()
        ),
        (Some("UTC"), Some("Asia/Tokyo")),
        "{entry}"
    );

    // Owners see every user's zone, and set anyone's, the configured owner's included.
    let users = expect(stack, None, Method::GET, "/api/v1/users", None, 200).await?;
    let zone_of = |id: u64| {
        users["users"]
            .as_array()
            .and_then(|all| all.iter().find(|u| u["id"] == id))
            .map(|u| u["timezone"].clone())
    };
    assert_eq!(zone_of(ana), Some(json!("Asia/Tokyo")), "{users}");
    assert_eq!(zone_of(bob), Some(json!("UTC")), "{users}");
    assert_eq!(zone_of(0), Some(json!("UTC")), "{users}");
    let one = expect(
        stack,
        None,
        Method::GET,
        &format!("/api/v1/users/{ana}"),
        None,
        200,
    )
    .await?;
    assert_eq!(one["timezone"], "Asia/Tokyo");

    let changed = expect(
        stack,
        None,
        Method::PUT,
        &format!("/api/v1/users/{bob}"),
        Some(json!({"timezone": "America/New_York"})),
        200,
    )
    .await?;
    assert_eq!(changed["timezone"], "America/New_York");
    let me = expect(stack, bob_key, Method::GET, "/api/v1/me", None, 200).await?;
    assert_eq!(me["timezone"], "America/New_York");
    let refused = expect(
        stack,
        None,
        Method::PUT,
        &format!("/api/v1/users/{bob}"),
        Some(json!({"timezone": "Nowhere/Land"})),
        422,
    )
    .await?;
    assert_eq!(refused["field"], "timezone");
    let entry = last_entry(stack, bob).await?;
    assert_eq!(
        (
            entry["before"]["timezone"].as_str(),
            entry["after"]["timezone"].as_str()
        ),
        (Some("UTC"), Some("America/New_York")),
        "{entry}"
    );

    let owner = expect(
        stack,
        None,
        Method::PUT,
        "/api/v1/users/0",
        Some(json!({"timezone": "Europe/Berlin"})),
        200,
    )
    .await?;
    assert_eq!(
        (owner["bootstrap"].as_bool(), owner["timezone"].as_str()),
        (Some(true), Some("Europe/Berlin"))
    );
    let me = expect(stack, None, Method::GET, "/api/v1/me", None, 200).await?;
    assert_eq!(
        (me["bootstrap"].as_bool(), me["timezone"].as_str()),
        (Some(true), Some("Europe/Berlin"))
    );
    // The rest of the configured owner stays in settings.
    expect(
        stack,
        None,
        Method::PUT,
        "/api/v1/users/0",
        Some(json!({"timezone": "UTC", "role": "admin"})),
        409,
    )
    .await?;
    let me = expect(stack, None, Method::GET, "/api/v1/me", None, 200).await?;
    assert_eq!(
        me["timezone"], "Europe/Berlin",
        "a refused change changes nothing"
    );
    // The owner sets their own through /me as well.
    expect(
        stack,
        None,
        Method::PUT,
        "/api/v1/me",
        Some(json!({"timezone": "Australia/Sydney"})),
        200,
    )
    .await?;
    let entry = last_entry(stack, 0).await?;
    assert_eq!(
        (
            entry["before"]["timezone"].as_str(),
            entry["after"]["timezone"].as_str()
        ),
        (Some("Europe/Berlin"), Some("Australia/Sydney")),
        "{entry}"
    );

    // The API's default stays UTC for a request without `timezone`, whoever sends it;
    // a request naming one gets that one.
    let dashboard = expect(stack, ana_key, Method::GET, "/api/v1/dashboard", None, 200).await?;
    assert_eq!(dashboard["timezone"], "UTC", "{dashboard}");
    let report = expect(
        stack,
        ana_key,
        Method::GET,
        "/api/v1/reports?group_by=day",
        None,
        200,
    )
    .await?;
    assert_eq!(report["timezone"], "UTC");
    let dashboard = expect(
        stack,
        ana_key,
        Method::GET,
        "/api/v1/dashboard?timezone=Asia/Tokyo",
        None,
        200,
    )
    .await?;
    assert_eq!(dashboard["timezone"], "Asia/Tokyo");
    Ok(())
}

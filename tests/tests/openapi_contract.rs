//! The API contract: the OpenAPI document reporting-api generates is valid OpenAPI 3, the
//! harness's check of every answer (`traffsure_tests::openapi`) catches a body that breaks
//! its schema, an undocumented status and an undocumented path, errors share one body,
//! and the reference page at /api/docs lists the operations in headless Chromium.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use traffsure_tests::browser::run_script;
use traffsure_tests::openapi::Contract;
use traffsure_tests::{Stack, StackOptions, ADMIN_PASSWORD, ADMIN_USERNAME};

/// The error of a check that must fail.
fn refused(result: anyhow::Result<()>) -> String {
    match result {
        Ok(()) => panic!("the check passed"),
        Err(e) => e.to_string(),
    }
}

async fn document(stack: &Stack) -> anyhow::Result<Value> {
    // Public: no credentials.
    let response = reqwest::get(stack.url("reporting-api", "/api/v1/openapi.json")).await?;
    anyhow::ensure!(response.status() == 200, "{}", response.status());
    Ok(response.json().await?)
}

/// Structural rules of OpenAPI 3.1 the document must keep, and every schema a valid JSON
/// Schema 2020-12 (the dialect of OpenAPI 3.1).
fn check_openapi_3(doc: &Value) -> anyhow::Result<usize> {
    let version = doc["openapi"].as_str().unwrap_or_default();
    anyhow::ensure!(version.starts_with("3.1."), "openapi {version:?}");
    anyhow::ensure!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let mut ids = BTreeSet::new();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        anyhow::ensure!(path.starts_with("/api/v1/"), "path {path}");
        let names: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for (method, op) in item.as_object().into_iter().flatten() {
            anyhow::ensure!(
                ["get", "put", "post", "delete", "patch"].contains(&method.as_str()),
                "{method} {path}"
            );
            operations += 1;
            let id = op["operationId"].as_str().unwrap_or_default();
            anyhow::ensure!(ids.insert(id.to_string()), "operationId {id:?} twice");
            let responses = op["responses"].as_object();
            anyhow::ensure!(
                responses.is_some_and(|r| !r.is_empty()),
                "{method} {path}: no responses"
            );
            for (status, response) in responses.into_iter().flatten() {
                anyhow::ensure!(
                    status.len() == 3 && status.parse::<u16>().is_ok(),
                    "{method} {path}: status {status}"
                );
                anyhow::ensure!(
                    response["description"].is_string(),
                    "{method} {path} {status}: no description"
                );
            }
            // Every path template parameter is declared, in: path and required.
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            for name in &names {
                anyhow::ensure!(
                    params
                        .iter()
                        .any(|p| p["name"] == *name && p["in"] == "path" && p["required"] == true),
                    "{method} {path}: path parameter {name} not declared"
                );
            }
            for p in &params {
                anyhow::ensure!(
                    ["query", "path", "header", "cookie"].contains(&p["in"].as_str().unwrap_or("")),
                    "{method} {path}: parameter {p}"
                );
            }
        }
    }
    let schemas = doc["components"]["schemas"]
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("no component schemas"))?;
    for (name, schema) in schemas {
        jsonschema::draft202012::meta::validate(schema)
            .map_err(|e| anyhow::anyhow!("schema {name} is not JSON Schema 2020-12: {e}"))?;
    }
    // Every `$ref` resolves.
    let text = doc.to_string();
    for (at, _) in text.match_indices("\"$ref\":\"#/components/schemas/") {
        let rest = &text[at + "\"$ref\":\"#/components/schemas/".len()..];
        let name = &rest[..rest.find('"').unwrap_or(0)];
        anyhow::ensure!(
            schemas.contains_key(name),
            "$ref {name} resolves to nothing"
        );
    }
    Ok(operations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_is_openapi_3_and_catches_what_breaks_it() -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions::default().services(&["reporting-api"])).await?;
    let result = contract(&stack).await;
    stack.print_failure(&result);
    result
}

async fn contract(stack: &Stack) -> anyhow::Result<()> {
    let doc = document(stack).await?;
    let operations = check_openapi_3(&doc)?;
    assert!(operations >= 45, "{operations} operations");
    // The flow schema has every field a flow has (the hand-written one lacked half).
    let flow_view = &doc["components"]["schemas"]["FlowView"]["properties"];
    for field in [
        "id",
        "slug",
        "name",
        "status",
        "destination_url",
        "redirect_mode",
        "default_goal",
        "goals",
        "attribution_window_days",
        "created_at_ms",
        "updated_at_ms",
        "revision",
        "destinations",
        "rules",
        "inactive_url",
        "bot_url",
        "postback_security",
        "status_map",
        "outbound_postbacks",
        "time_zone",
        "traffic_source_id",
        "path",
    ] {
        assert!(flow_view.get(field).is_some(), "FlowView lacks {field}");
    }

    // A real answer passes through `api` and is valid as it is.
    let flow = stack
        .api(Method::POST, "/api/v1/flows")
        .json(
            &json!({"name": "Contract", "slug": format!("contract-{}", stack.id),
            "destination_url": "https://offer.test/?c={click}",
            "goals": [{"key": "sale", "payout": "2.5"}]}),
        )
        .send()
        .await?;
    assert_eq!(flow.status(), 201);
    let flow: Value = flow.json().await?;
    let path = format!("/api/v1/flows/{}", flow["id"]);
    let body = stack
        .api(Method::GET, &path)
        .send()
        .await?
        .json::<Value>()
        .await?;
    let contract = Contract::new(doc.clone())?;
    let check = |body: &Value, status: u16| {
        contract.check(
            "GET",
            &path,
            status,
            "application/json",
            body.to_string().as_bytes(),
        )
    };
    check(&body, 200)?;

    // The same body altered: each change is caught, naming what broke.
    let mut missing = body.clone();
    missing.as_object_mut().map(|m| m.remove("tracking_link"));
    let e = refused(check(&missing, 200));
    assert!(e.contains("tracking_link") && e.contains("required"), "{e}");
    let mut extra = body.clone();
    extra["surprise"] = json!(1);
    let e = refused(check(&extra, 200));
    assert!(e.contains("surprise"), "{e}");
    let mut wrong_type = body.clone();
    wrong_type["revision"] = json!("one");
    let e = refused(check(&wrong_type, 200));
    assert!(e.contains("revision") || e.contains("\"one\""), "{e}");
    let mut bad_word = body.clone();
    bad_word["status"] = json!("sleeping");
    let e = refused(check(&bad_word, 200));
    assert!(e.contains("sleeping"), "{e}");
    let mut nested = body.clone();
    nested["goals"][0]["payout"] = json!(2.5);
    let e = refused(check(&nested, 200));
    assert!(e.contains("/goals/0/payout"), "{e}");
    // An undocumented status, and a 404 whose body is not the error body.
    let e = refused(check(&body, 418));
    assert!(e.contains("418") && e.contains("does not list"), "{e}");
    let e = refused(check(&json!({"error": "gone"}), 404));
    assert!(e.contains("required"), "{e}");

    // Through the harness: an undocumented path or method fails the request.
    let e = stack
        .api(Method::GET, "/api/v1/no-such-thing")
        .send()
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("not an operation of the OpenAPI document"),
        "{e}"
    );
    let e = stack
        .api(Method::DELETE, &path)
        .send()
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("DELETE"), "{e}");

    // A session's answers, read with the cookie, are checked the same way.
    let browser = reqwest::Client::new();
    let login = browser
        .post(stack.url("reporting-api", "/api/v1/auth/login"))
        .json(&json!({"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}))
        .send()
        .await?;
    let cookie = login.headers()["set-cookie"].to_str()?.to_string();
    let cookie = cookie.split(';').next().unwrap_or_default().to_string();
    let login = stack.checked(Method::POST, login).await?;
    assert_eq!(login.status(), 200);
    let csrf = login.json::<Value>().await?["csrf_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let session = browser
        .get(stack.url("reporting-api", "/api/v1/auth/session"))
        .header("cookie", &cookie)
        .send()
        .await?;
    let session: Value = stack.checked(Method::GET, session).await?.json().await?;
    assert_eq!(session["username"], ADMIN_USERNAME);
    let forged = browser
        .post(stack.url("reporting-api", "/api/v1/flows"))
        .header("cookie", &cookie)
        .json(&json!({"name": "x", "destination_url": "https://offer.test/"}))
        .send()
        .await?;
    assert_eq!(stack.checked(Method::POST, forged).await?.status(), 403);
    let out = browser
        .post(stack.url("reporting-api", "/api/v1/auth/logout"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await?;
    assert_eq!(stack.checked(Method::POST, out).await?.status(), 200);
    // An API key's session has no user.
    let key: Value = stack
        .api(Method::GET, "/api/v1/auth/session")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(key, json!({"username": null, "api_key": true}));

    // Errors: one body everywhere, a JSON 404 for an unknown API path too.
    let unknown = reqwest::Client::new()
        .get(stack.url("reporting-api", "/api/v1/no-such-thing"))
        .bearer_auth(traffsure_tests::API_KEY)
        .send()
        .await?;
    assert_eq!(unknown.status(), 404);
    let body: traffsure_core::ErrorBody = unknown.json().await?;
    assert_eq!((body.status, body.code.as_str()), (404, "not_found"));
    // A method a route does not take: 405, with the error body too.
    let wrong_method = reqwest::Client::new()
        .delete(stack.url("reporting-api", &path))
        .bearer_auth(traffsure_tests::API_KEY)
        .send()
        .await?;
    assert_eq!(wrong_method.status(), 405);
    let body: traffsure_core::ErrorBody = wrong_method.json().await?;
    assert_eq!(
        (body.status, body.code.as_str()),
        (405, "method_not_allowed")
    );
    // A JSON body over the limit (256 KiB): 413, documented, not a 422.
    let big = stack
        .api(Method::POST, "/api/v1/flows")
        .json(&json!({"name": "x".repeat(3_000_000), "destination_url": "https://offer.test/"}))
        .send()
        .await?;
    assert_eq!(big.status(), 413);
    let body: traffsure_core::ErrorBody = big.json().await?;
    assert_eq!(
        (body.status, body.code.as_str()),
        (413, "payload_too_large")
    );
    let refused = stack
        .api(Method::GET, "/api/v1/clicks?nope=1")
        .send()
        .await?;
    assert_eq!(refused.status(), 422);
    let body: traffsure_core::ErrorBody = refused.json().await?;
    assert_eq!(body.field.as_deref(), Some("nope"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_page_lists_the_operations_in_headless_chromium() -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions::default().services(&["reporting-api"])).await?;
    let result = reference_page(&stack).await;
    stack.print_failure(&result);
    result
}

async fn reference_page(stack: &Stack) -> anyhow::Result<()> {
    let doc = document(stack).await?;
    let run = run_script(
        stack,
        "api_docs.mjs",
        "api-docs",
        &[
            ("ADMIN_USERNAME", ADMIN_USERNAME.into()),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
        ],
        Duration::from_secs(180),
    )
    .await?;
    let line = run
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| anyhow::anyhow!("no result line in {}", run.stdout))?;
    let seen: Value = serde_json::from_str(line)?;
    let shown: BTreeSet<String> = seen["operations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.as_str())
        .map(|o| o.replace('\u{200b}', ""))
        .collect();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
            documented.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    assert_eq!(shown, documented, "the page lists every operation, once");
    assert!(run.screenshot_count()? >= 2);
    Ok(())
}

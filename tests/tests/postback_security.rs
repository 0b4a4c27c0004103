//! Per-flow postback security on the real stack: a shared token, an HMAC-SHA256
//! signature with a timestamp (good, tampered, expired, missing), and an IP allow-list
//! behind a trusted proxy. Each refusal is 401 or 403 with its reason code and is logged.

mod postback_support;

use std::time::Duration;

use hmac::{Hmac, Mac};
use postback_support::{click_hash, flow_id, get, logged_params, postback_log, reply};
use serde_json::json;
use sha2::Sha256;
use traffsure_tests::{eventually, Stack, StackOptions};

const TOKEN: &str = "tok-3f9a";
const SECRET: &str = "hmac-secret-for-tests-0001";

/// The documented canonical form, for parameters made of unreserved characters only:
/// `name=value` pairs (all but `signature`) sorted and joined with `&`.
fn sign(pairs: &[(&str, String)]) -> String {
    let mut canonical: Vec<String> = pairs.iter().map(|(n, v)| format!("{n}={v}")).collect();
    canonical.sort();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes())
        .unwrap_or_else(|e| panic!("hmac key: {e}"));
    mac.update(canonical.join("&").as_bytes());
    data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes())
}

fn query(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_signature_and_ip_allow_list() -> anyhow::Result<()> {
    let stack = Stack::start_with(
        StackOptions::default()
            .services(&["sink", "reporting-api", "postback-ingest"])
            .env(
                "postback-ingest",
                "TRAFFSURE__CLIENT_IP__TRUSTED_PROXIES",
                "127.0.0.1, ::1",
            ),
    )
    .await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let flow = |name: &str, security: serde_json::Value| {
        json!({
            "name": name, "slug": format!("{name}-{}", stack.id),
            "destination_url": "https://offer.example/?c={click}",
            "postback_security": security
        })
    };
    let token_flow = flow_id(
        &stack
            .create_flow(flow("token", json!({"token": TOKEN})))
            .await?,
    );
    let signed_flow = flow_id(
        &stack
            .create_flow(flow(
                "signed",
                json!({"hmac_secret": SECRET, "max_age_seconds": 60}),
            ))
            .await?,
    );
    let ip_flow = flow_id(
        &stack
            .create_flow(flow("ips", json!({"allowed_ips": ["203.0.113.0/24"]})))
            .await?,
    );
    let mut log = postback_log(stack).await?;

    // Token. The first request also waits for postback-ingest to learn the flows.
    let click = click_hash(token_flow, 1);
    let missing = eventually(Duration::from_secs(20), || async {
        let r = get(stack, &format!("/postback?click={click}")).await?;
        Ok((r.code != "accepted").then_some(r))
    })
    .await?;
    assert_eq!(
        (
            missing.status,
            missing.code.as_str(),
            missing.field.as_deref()
        ),
        (401, "missing_token", Some("token"))
    );
    let wrong = get(stack, &format!("/postback?click={click}&token=tok-0000")).await?;
    assert_eq!(
        (wrong.status, wrong.code.as_str(), wrong.field.as_deref()),
        (401, "invalid_token", Some("token"))
    );
    let good = get(
        stack,
        &format!("/postback?click={click}&token={TOKEN}&goal=lead"),
    )
    .await?;
    assert_eq!(
        (good.status, good.code.as_str()),
        (200, "accepted"),
        "{good:?}"
    );
    let entries = log
        .wait_for(&[wrong.postback_id.clone(), good.postback_id.clone()])
        .await?;
    assert_eq!(
        (
            entries[0].response_status,
            entries[0].reason.as_str(),
            entries[0].flow_id
        ),
        (401, "invalid_token", token_flow)
    );
    // The flow's secret never reaches the log; the parameter does.
    assert!(logged_params(&entries[1]).contains(&("token".into(), "***".into(), false)));
    assert!(!format!("{:?}", entries[0]).contains("tok-0000"));

    // Signature: good, tampered, expired, missing; and the 60 s window.
    let click = click_hash(signed_flow, 2);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let signed = |ts: u64, revenue: &str| {
        let mut pairs = vec![
            ("click", click.clone()),
            ("revenue", revenue.to_string()),
            ("timestamp", ts.to_string()),
        ];
        let signature = sign(&pairs);
        pairs.push(("signature", signature));
        pairs
    };
    let good = get(stack, &format!("/postback?{}", query(&signed(now, "5.25")))).await?;
    assert_eq!(
        (good.status, good.code.as_str()),
        (200, "accepted"),
        "{good:?}"
    );
    let mut tampered = signed(now, "5.25");
    tampered[1].1 = "525".into();
    let tampered = get(stack, &format!("/postback?{}", query(&tampered))).await?;
    assert_eq!(
        (
            tampered.status,
            tampered.code.as_str(),
            tampered.field.as_deref()
        ),
        (401, "invalid_signature", Some("signature"))
    );
    let expired = get(
        stack,
        &format!("/postback?{}", query(&signed(now - 600, "5.25"))),
    )
    .await?;
    assert_eq!(
        (
            expired.status,
            expired.code.as_str(),
            expired.field.as_deref()
        ),
        (401, "signature_expired", Some("timestamp"))
    );
    assert!(expired.message.contains("60 s"), "{}", expired.message);
    let unsigned = get(stack, &format!("/postback?click={click}&revenue=5.25")).await?;
    assert_eq!(
        (
            unsigned.status,
            unsigned.code.as_str(),
            unsigned.field.as_deref()
        ),
        (401, "missing_signature", Some("signature"))
    );
    // The same signed parameters as a form body are checked the same way.
    let form = stack
        .http
        .post(stack.url("postback-ingest", "/postback"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(query(&signed(now, "1")))
        .send()
        .await?;
    let form = reply(form).await?;
    assert_eq!(
        (form.status, form.code.as_str()),
        (200, "accepted"),
        "{form:?}"
    );
    let entries = log
        .wait_for(&[tampered.postback_id.clone(), expired.postback_id.clone()])
        .await?;
    assert_eq!(entries[0].reason, "invalid_signature");
    assert!(logged_params(&entries[0]).contains(&("revenue".into(), "525".into(), false)));
    assert_eq!(
        (entries[1].response_status, entries[1].flow_id),
        (401, signed_flow)
    );

    // IP allow-list: the client is read from X-Forwarded-For only because the peer
    // (127.0.0.1) is a trusted proxy.
    let click = click_hash(ip_flow, 3);
    let from = |ip: Option<&'static str>| {
        let mut request = stack
            .http
            .get(stack.url("postback-ingest", &format!("/postback?click={click}")));
        if let Some(ip) = ip {
            request = request.header("x-forwarded-for", format!("198.18.0.1, {ip}"));
        }
        async move { reply(request.send().await?).await }
    };
    let allowed = from(Some("203.0.113.9")).await?;
    assert_eq!(
        (allowed.status, allowed.code.as_str()),
        (200, "accepted"),
        "{allowed:?}"
    );
    let outside = from(Some("198.51.100.1")).await?;
    assert_eq!(
        (
            outside.status,
            outside.code.as_str(),
            outside.field.as_deref()
        ),
        (403, "ip_not_allowed", None)
    );
    assert!(
        outside.message.contains("198.51.100.1"),
        "{}",
        outside.message
    );
    let direct = from(None).await?;
    assert_eq!(
        (direct.status, direct.code.as_str()),
        (403, "ip_not_allowed")
    );
    let entries = log
        .wait_for(&[allowed.postback_id.clone(), outside.postback_id.clone()])
        .await?;
    assert_eq!(entries[0].ip, "203.0.113.9");
    assert_eq!(
        (entries[1].ip.as_str(), entries[1].response_status),
        ("198.51.100.1", 403)
    );
    Ok(())
}

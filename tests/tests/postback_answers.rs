//! Every answer postback-ingest gives, on the real Kafka: the status and reason code,
//! and the `postback-log` entry of each request with its parameters as sent — including
//! duplicate and mixed-case names, broken percent-encoding, huge values and random bytes.

mod postback_support;

use postback_support::{
    click_hash, get, logged_params, postback_log, postbacks, raw_request, reply,
};
use traffsure_tests::{Stack, StackOptions};

const MAX_BODY: usize = 4096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_an_honest_answer_and_a_full_log_entry() -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions::default().services(&["postback-ingest"]).env(
        "postback-ingest",
        "TRAFFSURE__MAX_BODY_BYTES",
        MAX_BODY.to_string(),
    ))
    .await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let mut log = postback_log(stack).await?;
    let mut events = postbacks(stack).await?;
    let click = click_hash(3, 42);
    let mut forged = click.clone();
    forged.replace_range(39.., if forged.ends_with('0') { "1" } else { "0" });
    let vid = "beef0000000000000000000000000000";

    // (query, status, code, the parameter at fault, a word the message must hold)
    let cases = [
        (
            format!("click={forged}&goal=sale"),
            404,
            "click_not_found",
            Some("click"),
            "click hash",
        ),
        (
            format!("vid={vid}&flow=no-such-flow"),
            404,
            "flow_not_found",
            Some("flow"),
            "no-such-flow",
        ),
        (
            "goal=lead&revenue=1".to_string(),
            422,
            "missing_click",
            Some("click"),
            "click",
        ),
        (
            format!("vid={vid}"),
            422,
            "missing_flow",
            Some("flow"),
            "flow",
        ),
        (
            "vid=not-a-visitor&flow=1".to_string(),
            422,
            "invalid_visitor",
            Some("vid"),
            "vid",
        ),
        (
            format!("click={click}&revenue=ten"),
            422,
            "invalid_revenue",
            Some("revenue"),
            "revenue",
        ),
        (
            format!("click={click}&payout=1,5"),
            422,
            "invalid_revenue",
            Some("payout"),
            "revenue",
        ),
        (
            format!("click={click}&currency=dollars"),
            422,
            "invalid_currency",
            Some("currency"),
            "currency",
        ),
        (
            format!("click={click}&goal={}", "g".repeat(80)),
            422,
            "invalid_goal",
            Some("goal"),
            "goal",
        ),
    ];
    for (query, status, code, field, word) in &cases {
        let r = get(stack, &format!("/postback?{query}")).await?;
        assert_eq!(
            (r.status, r.code.as_str(), r.field.as_deref()),
            (*status, *code, *field),
            "{query}: {r:?}"
        );
        assert!(r.message.contains(word), "{query}: {}", r.message);
        let entry = log.one(&r.postback_id).await?;
        assert_eq!(
            (
                entry.response_status,
                entry.reason.as_str(),
                entry.message.as_str()
            ),
            (u32::from(*status), *code, r.message.as_str())
        );
        let sent: Vec<(String, String, bool)> = query
            .split('&')
            .map(|pair| {
                let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
                (n.to_string(), v.to_string(), false)
            })
            .collect();
        assert_eq!(logged_params(&entry), sent, "{query}");
    }

    // A malformed JSON body: 422 naming the body, and the query still logged.
    let response = stack
        .http
        .post(stack.url("postback-ingest", &format!("/postback?click={click}")))
        .header("content-type", "application/json")
        .body("{\"goal\": ")
        .send()
        .await?;
    let r = reply(response).await?;
    assert_eq!(
        (r.status, r.code.as_str(), r.field.as_deref()),
        (422, "invalid_body", None)
    );
    assert!(r.message.contains("JSON"), "{}", r.message);
    let entry = log.one(&r.postback_id).await?;
    assert_eq!(
        logged_params(&entry),
        [("click".into(), click.clone(), false)]
    );

    // Too large a body: 413, and the query is still logged.
    let response = stack
        .http
        .post(stack.url(
            "postback-ingest",
            &format!("/postback?click={click}&goal=big"),
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("uid=u&pad={}", "x".repeat(MAX_BODY)))
        .send()
        .await?;
    let r = reply(response).await?;
    assert_eq!(
        (r.status, r.code.as_str(), r.field.as_deref()),
        (413, "body_too_large", None)
    );
    let entry = log.one(&r.postback_id).await?;
    assert_eq!((entry.response_status, entry.goal.as_str()), (413, "big"));
    assert_eq!(entry.params.len(), 2);

    // Duplicate and mixed-case names: the first value is read, every one is logged.
    let r = get(
        stack,
        &format!("/postback?ClickID={click}&GOAL=lead&goal=sale&Payout=2&PAYOUT=9&Currency=eur"),
    )
    .await?;
    assert_eq!((r.status, r.code.as_str()), (200, "accepted"), "{r:?}");
    let p = events.one(&r.postback_id).await?;
    assert_eq!(
        (p.goal.as_str(), p.revenue_micros, p.currency.as_str()),
        ("lead", 2_000_000, "EUR")
    );
    let entry = log.one(&r.postback_id).await?;
    let names: Vec<String> = entry.params.iter().map(|p| p.name.clone()).collect();
    assert_eq!(
        names,
        ["ClickID", "GOAL", "goal", "Payout", "PAYOUT", "Currency"]
    );
    assert_eq!(entry.params[4].value, "9");

    // Broken percent-encoding, sent byte for byte: accepted, kept lossily in the log.
    let request = format!(
        "GET /postback?click={click}&note=%E2%82&junk=%ZZ%&pct=100%25 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let (status, body) = raw_request(stack, request.as_bytes()).await?;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body)?;
    let entry = log
        .one(answer["postback_id"].as_str().unwrap_or_default())
        .await?;
    let params = logged_params(&entry);
    assert_eq!(params[1], ("note".into(), "\u{fffd}".into(), false));
    assert_eq!(params[2], ("junk".into(), "%ZZ%".into(), false));
    assert_eq!(params[3], ("pct".into(), "100%".into(), false));

    // A huge unknown value is not a reason to refuse: accepted, cut and flagged in the log.
    let huge = "v".repeat(12_000);
    let r = get(
        stack,
        &format!("/postback?click={click}&goal=lead&blob={huge}&after=1"),
    )
    .await?;
    assert_eq!((r.status, r.code.as_str()), (200, "accepted"), "{r:?}");
    let entry = log.one(&r.postback_id).await?;
    let blob = &entry.params[2];
    assert_eq!(
        (blob.name.as_str(), blob.value.len(), blob.truncated),
        ("blob", 2048, true)
    );
    assert_eq!(
        logged_params(&entry)[3],
        ("after".into(), "1".into(), false)
    );

    // Random bytes in the query (escaped) and the body (raw), under several content
    // types: every request gets a JSON answer with a reason code, and is logged.
    let mut seed: u64 = 0x5eed_0001;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let content_types = [
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "",
    ];
    let mut ids = Vec::new();
    for round in 0..40 {
        let query: String = (0..next() % 60)
            .map(|_| {
                let b = (next() % 256) as u8;
                match b {
                    b'&' | b'=' | b'a'..=b'z' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                }
            })
            .collect();
        let body: Vec<u8> = (0..next() % 200).map(|_| (next() % 256) as u8).collect();
        let query = if round % 4 == 0 {
            format!("click={click}&{query}")
        } else {
            query
        };
        let mut request = stack
            .http
            .post(stack.url("postback-ingest", &format!("/postback?{query}")))
            .body(body);
        let content_type = content_types[round % content_types.len()];
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        let r = reply(request.send().await?).await?;
        assert!([200, 404, 422].contains(&r.status), "{query}: {r:?}");
        assert!(!r.code.is_empty() && !r.postback_id.is_empty(), "{r:?}");
        ids.push((r.postback_id, r.status));
    }
    let entries = log
        .wait_for(&ids.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>())
        .await?;
    for (entry, (_, status)) in entries.iter().zip(&ids) {
        assert_eq!(entry.response_status, u32::from(*status));
        assert_eq!(entry.method, "POST");
    }

    // What no route takes answers the error body too (docs/api.md#errors): a method
    // `/postback` does not take, with the ones it does, and an unknown path.
    for (method, path, status, code, allow) in [
        (
            "PUT",
            "/postback",
            405,
            "method_not_allowed",
            Some("GET, POST"),
        ),
        ("GET", "/nosuch", 404, "not_found", None),
    ] {
        let response = stack
            .http
            .request(method.parse()?, stack.url("postback-ingest", path))
            .send()
            .await?;
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        assert_eq!(
            response
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok()),
            allow,
            "{method} {path}"
        );
        let body: traffsure_core::ErrorBody = response.json().await?;
        assert_eq!(
            (body.status, body.code.as_str()),
            (status, code),
            "{method} {path}"
        );
    }
    Ok(())
}

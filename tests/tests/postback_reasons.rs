//! Rejection reasons end to end: a rejected postback with each reason name postback-ingest
//! accepts becomes a conversion version carrying its reason (conversions topic and
//! ClickHouse); an outbound postback that asks for the reason "fraud" fires only for it,
//! with `{reason}` filled, while one without reasons fires for all; the outbound log
//! through the API shows every column of Affise's affiliate postback log, filters by each,
//! reads rows logged before those columns, and answers the same page as CSV.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use traffsure_core::postback_params::{MAX_REASON_BYTES, REASON};
use traffsure_events::{Conversion, ConversionStatus};
use traffsure_tests::produce::Producer;
use traffsure_tests::{eventually, first_click, send_clicks, stack_with_receiver, Requests, Stack};

mod postback_support;
use postback_support::{flow_id, get as postback, TopicReader};

/// The outbound log's columns, in the order the API lists them.
const COLUMNS: &[&str] = &[
    "attempt_id",
    "url",
    "conversion_id",
    "flow_id",
    "flow_name",
    "traffic_source_id",
    "offer_id",
    "goal",
    "status",
    "payout",
    "revenue",
    "currency",
    "reason",
    "http_status",
    "error",
    "date",
    "time_ms",
    "integration",
    "postback_type",
    "scope",
    "outbound_id",
    "click_hash",
    "method",
    "latency_ms",
    "attempt",
    "state",
    "manual",
    "cap_action",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasons_ride_on_conversions_fire_chosen_postbacks_and_fill_the_outbound_log(
) -> anyhow::Result<()> {
    let (stack, port, received) = stack_with_receiver().await?;
    let result = run(&stack, port, &received).await;
    stack.print_failure(&result);
    result
}

fn hits(received: &Requests, path: &str) -> Vec<String> {
    received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.query.clone())
        .collect()
}

async fn api(stack: &Stack, path: &str) -> anyhow::Result<(u16, String)> {
    let response = stack.api(Method::GET, path).send().await?;
    Ok((response.status().as_u16(), response.text().await?))
}

async fn items(stack: &Stack, query: &str) -> anyhow::Result<Vec<Value>> {
    let (status, text) = api(stack, &format!("/api/v1/outbound-postbacks?{query}")).await?;
    anyhow::ensure!(status == 200, "{query}: {status} {text}");
    let body: Value = serde_json::from_str(&text)?;
    Ok(body["items"].as_array().cloned().unwrap_or_default())
}

async fn run(stack: &Stack, port: u16, received: &Requests) -> anyhow::Result<()> {
    let receiver = format!("http://127.0.0.1:{port}");
    let slug = format!("reasons-{}", stack.id);
    let flow = stack
        .create_flow(json!({
            "name": "Reasons",
            "slug": slug,
            "destination_url": "https://offer.example/land?c={click}",
            "goals": [{"key": "sale", "payout": "1"}],
            "outbound_postbacks": [
                {"id": "fraud", "url": format!("{receiver}/fraud?c={{click}}&why={{reason}}&st={{status}}"),
                 "on_status": "rejected", "reasons": ["Fraud"]},
                {"id": "every", "url": format!("{receiver}/every?c={{click}}&why={{reason}}"),
                 "on_status": "any"}
            ]
        }))
        .await?;
    let flow = flow_id(&flow);
    assert_eq!(
        stack
            .api(Method::GET, &format!("/api/v1/flows/{flow}"))
            .send()
            .await?
            .json::<Value>()
            .await?["outbound_postbacks"][0]["reasons"],
        json!(["fraud"])
    );
    let track = stack.url("click-ingest", &format!("/c/{slug}"));
    first_click(stack, &track).await?;
    let (hashes, _) = send_clicks(stack, &track, 1, REASON.len()).await?;

    // Each reason name once; `reason` says fraud and Affise's `comment` FRAUD.
    let mut conversions =
        TopicReader::open(stack, "conversions", |c: &Conversion| c.postback_id.clone()).await?;
    let mut sent = Vec::new();
    for (name, hash) in REASON.iter().zip(&hashes) {
        let value = match *name {
            "reason" => "fraud".to_string(),
            "comment" => "FRAUD".to_string(),
            other => format!("why {other}"),
        };
        let reply = postback(
            stack,
            &format!(
                "/postback?click={hash}&goal=sale&status=rejected&revenue=1.5&{name}={}",
                value.replace(' ', "+")
            ),
        )
        .await?;
        assert_eq!(reply.status, 200, "{name}: {}", reply.message);
        sent.push((reply.postback_id, value));
    }
    // Too long a reason is refused, naming the parameter as sent.
    let refused = postback(
        stack,
        &format!(
            "/postback?click={}&status=rejected&Rejection_Reason={}",
            hashes[0],
            "x".repeat(MAX_REASON_BYTES + 1)
        ),
    )
    .await?;
    assert_eq!(
        (
            refused.status,
            refused.code.as_str(),
            refused.field.as_deref()
        ),
        (422, "invalid_reason", Some("Rejection_Reason"))
    );
    assert!(refused.message.contains("255 bytes"), "{}", refused.message);

    let ids: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
    for (conversion, (_, reason)) in conversions.wait_for(&ids).await?.iter().zip(&sent) {
        assert_eq!(
            (conversion.reason.as_str(), conversion.status()),
            (reason.as_str(), ConversionStatus::Rejected)
        );
    }
    let mut expected: Vec<String> = sent.iter().map(|(id, r)| format!("{id}\t{r}")).collect();
    expected.sort();
    let stored = eventually(Duration::from_secs(30), || async {
        let rows = stack
            .clickhouse(&format!(
                "SELECT postback_id, reason FROM conversions WHERE flow_id = {flow} \
                 AND postback_id != 'injected' ORDER BY postback_id FORMAT TSV"
            ))
            .await?;
        Ok((rows.lines().count() == REASON.len()).then_some(rows))
    })
    .await?;
    assert_eq!(stored.lines().collect::<Vec<_>>(), expected);
    let listed: Value = stack
        .api(
            Method::GET,
            &format!("/api/v1/conversions?flow={flow}&limit=500"),
        )
        .send()
        .await?
        .json()
        .await?;
    let mut reasons: Vec<String> = listed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    reasons.sort();
    let mut sent_reasons: Vec<String> = sent.iter().map(|(_, r)| r.clone()).collect();
    sent_reasons.sort();
    assert_eq!(reasons, sent_reasons);

    // A conversion that came through a traffic source and an offer, as the objects give it.
    let injected = {
        let mut c = Conversion {
            conversion_id: format!("cv-objects-{}", stack.id),
            version: 1,
            click_hash: hashes[0].clone(),
            flow_id: flow,
            goal: "sale".into(),
            revenue_micros: 2_500_000,
            currency: "USD".into(),
            postback_id: "injected".into(),
            created_at_ms: traffsure_core::now_ms(),
            updated_at_ms: traffsure_core::now_ms(),
            routing_key: 3,
            traffic_source_id: 5,
            offer_id: 6,
            reason: "Fraud".into(),
            ..Conversion::default()
        };
        c.set_status(ConversionStatus::Rejected);
        c
    };
    Producer::new(stack)?
        .send(
            &format!("{}conversions", stack.topic_prefix),
            &[(3, injected.clone())],
        )
        .await?;

    // The fraud postback: the two fraud conversions and the injected one, reason filled;
    // the other: every conversion.
    eventually(Duration::from_secs(60), || async {
        Ok((hits(received, "/every").len() == REASON.len() + 1).then_some(()))
    })
    .await?;
    let mut fraud = hits(received, "/fraud");
    fraud.sort();
    let mut wanted = vec![
        format!("c={}&why=fraud&st=rejected", hashes[0]),
        format!(
            "c={}&why=FRAUD&st=rejected",
            hashes[REASON.iter().position(|n| *n == "comment").unwrap_or(0)]
        ),
        format!("c={}&why=Fraud&st=rejected", hashes[0]),
    ];
    wanted.sort();
    assert_eq!(fraud, wanted);
    let notice = REASON.iter().position(|n| *n == "notice").unwrap_or(0);
    let every = hits(received, "/every");
    assert!(
        every.contains(&format!("c={}&why=why%20notice", hashes[notice])),
        "{every:?}"
    );

    // The outbound log: every attempt, with every column.
    let total = REASON.len() + 1 + 3;
    let all = eventually(Duration::from_secs(30), || async {
        let all = items(stack, &format!("flow={flow}&limit=500")).await?;
        Ok((all.len() == total).then_some(all))
    })
    .await?;
    let row = all
        .iter()
        .find(|r| r["outbound_id"] == "fraud" && r["traffic_source_id"] == 5)
        .cloned()
        .unwrap_or_default();
    let mut keys: Vec<&str> = row
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    let mut columns = COLUMNS.to_vec();
    columns.sort_unstable();
    assert_eq!(keys, columns);
    let date = row["date"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        row,
        json!({
            "attempt_id": row["attempt_id"],
            "url": format!("{receiver}/fraud?c={}&why=Fraud&st=rejected", hashes[0]),
            "conversion_id": injected.conversion_id,
            "flow_id": flow,
            "flow_name": "Reasons",
            "traffic_source_id": 5,
            "offer_id": 6,
            "goal": "sale",
            "status": "rejected",
            "payout": "2.5",
            "revenue": "2.5",
            "currency": "USD",
            "reason": "Fraud",
            "http_status": 200,
            "error": "",
            "date": date,
            "time_ms": row["time_ms"],
            "integration": "s2s",
            "postback_type": "conversion",
            "scope": "flow",
            "outbound_id": "fraud",
            "click_hash": hashes[0],
            "method": "GET",
            "latency_ms": row["latency_ms"],
            "attempt": 1,
            "state": "delivered",
            "manual": false,
            "cap_action": "",
        })
    );
    assert_eq!(date.len(), "2026-01-01 00:00:00".len(), "{date}");
    let today = stack.clickhouse("SELECT toString(today())").await?;
    assert!(date.starts_with(&today), "{date} is today, {today}");

    // Each filter, counted.
    for (filter, expected) in [
        ("reason=fraud", 6),
        ("reason=FRAUD", 6),
        ("reason=why+note", 1),
        ("outbound_id=fraud", 3),
        ("traffic_source_id=5", 2),
        ("offer_id=6", 2),
        ("offer_id=7", 0),
        ("goal=sale", total),
        ("goal=lead", 0),
        ("status=rejected", total),
        ("status=approved", 0),
        ("payout=2.5", 2),
        ("revenue=1.50", total - 2),
        ("currency=usd", total),
        ("currency=EUR", 0),
        ("http_status=200", total),
        ("http_status=500", 0),
        ("error=refused", 0),
        ("url=%2Ffraud%3F", 3),
        ("url=why%3DFRAUD", 6),
        ("integration=s2s", total),
        ("integration=pixel", 0),
        ("postback_type=conversion", total),
        ("state=delivered", total),
        ("conversion_id=cv-objects-", 0),
    ] {
        let found = items(stack, &format!("flow={flow}&limit=500&{filter}")).await?;
        assert_eq!(found.len(), expected, "{filter}");
    }
    let by_id = items(
        stack,
        &format!("conversion_id={}&limit=500", injected.conversion_id),
    )
    .await?;
    assert_eq!(by_id.len(), 2);
    for (path, field) in [
        ("integration=fax", "integration"),
        ("postback_type=click2", "postback_type"),
        ("payout=ten", "payout"),
        ("revenue=1.2.3", "revenue"),
        ("http_status=ok", "http_status"),
        ("traffic_source_id=-1", "traffic_source_id"),
        ("status=won", "status"),
        ("format=xml", "format"),
    ] {
        let (status, text) = api(stack, &format!("/api/v1/outbound-postbacks?{path}")).await?;
        let body: Value = serde_json::from_str(&text)?;
        assert_eq!(
            (status, body["field"].as_str()),
            (422, Some(field)),
            "{path}: {text}"
        );
    }

    // CSV: the same page, the same values.
    let response = stack
        .api(
            Method::GET,
            &format!("/api/v1/outbound-postbacks?flow={flow}&limit=500&format=csv"),
        )
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()?
        .starts_with("text/csv"));
    let csv = response.text().await?;
    let lines: Vec<Vec<String>> = csv.lines().map(csv_fields).collect();
    assert_eq!(lines[0], COLUMNS);
    assert_eq!(lines.len(), all.len() + 1);
    for (line, item) in lines[1..].iter().zip(&all) {
        let json_line: Vec<String> = COLUMNS
            .iter()
            .map(|c| match &item[*c] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        assert_eq!(line, &json_line);
    }
    let (status, paged) = api(
        stack,
        &format!("/api/v1/outbound-postbacks?flow={flow}&limit=5&format=csv"),
    )
    .await?;
    assert_eq!((status, paged.lines().count()), (200, 6));

    // An attempt logged before the new columns reads as an S2S conversion postback.
    stack
        .clickhouse(&format!(
            "INSERT INTO outbound_log (attempt_id, conversion_id, flow_id, status, state, \
             attempted_at, attempted_at_ms, kafka_partition, kafka_offset) VALUES \
             ('0-old', 'old', {flow}, 'approved', 'delivered', now(), 1000, 0, 0)"
        ))
        .await?;
    let old = items(stack, &format!("flow={flow}&limit=500&conversion_id=old")).await?;
    assert_eq!(old.len(), 1);
    assert_eq!(
        (
            &old[0]["integration"],
            &old[0]["postback_type"],
            &old[0]["reason"],
            &old[0]["traffic_source_id"]
        ),
        (&json!("s2s"), &json!("conversion"), &json!(""), &json!(0))
    );
    for filter in ["integration=s2s", "postback_type=conversion"] {
        let found = items(stack, &format!("flow={flow}&limit=500&{filter}")).await?;
        assert_eq!(found.len(), total + 1, "{filter}");
    }
    Ok(())
}

/// One CSV line's fields: quoted fields unquoted, a formula guard's apostrophe kept.
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

//! One real-world postback per dialect (TraffSure, Affise, FunnelFlux, HasOffers/TUNE,
//! Everflow, Keitaro) sent to postback-ingest on the real Kafka: the answer, the event
//! on `postbacks` and the `postback-log` entry with every parameter as sent.

mod postback_support;

use std::time::Duration;

use postback_support::{click_hash, flow_id, get, logged_params, postback_log, postbacks, reply};
use serde_json::json;
use traffsure_events::ConversionStatus;
use traffsure_tests::{eventually, Stack, StackOptions};

struct Dialect {
    name: &'static str,
    flow: u32,
    /// `GET <path?query>`, or a POST with a content type and body.
    path: String,
    post: Option<(&'static str, String)>,
    goal: &'static str,
    status: ConversionStatus,
    raw_status: &'static str,
    revenue_micros: Option<i64>,
    currency: &'static str,
    uid: &'static str,
    disable_postbacks: bool,
    /// Parameters the log must hold exactly as sent, the network's own ones included.
    logged: Vec<(&'static str, String)>,
}

/// Waits until postback-ingest knows a flow: a vid postback with a bad revenue is then
/// refused for the revenue, not for an unknown flow.
async fn wait_for_flow(stack: &Stack, slug: &str) -> anyhow::Result<()> {
    eventually(Duration::from_secs(20), || async {
        let r = get(
            stack,
            &format!(
                "/postback?vid=0000aaaabbbbccccddddeeeeffff0000&flow={slug}&revenue=x&token=probe"
            ),
        )
        .await?;
        Ok((r.code != "flow_not_found").then_some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_dialect_is_parsed_answered_and_logged_in_full() -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions::default().services(&[
        "sink",
        "reporting-api",
        "postback-ingest",
    ]))
    .await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let plain = stack
        .create_flow(json!({
            "name": "Dialects", "slug": format!("dialects-{}", stack.id),
            "destination_url": "https://offer.example/?c={click}",
            "goals": [{"key": "sale", "payout": "1"}, {"key": "lead"}, {"key": "deposit"}]
        }))
        .await?;
    let affise = stack
        .create_flow(json!({
            "name": "Affise", "slug": format!("affise-{}", stack.id),
            "destination_url": "https://offer.example/?c={click}",
            "status_map": {"1": "approved", "2": "pending", "3": "rejected", "5": "pending"}
        }))
        .await?;
    let keitaro = stack
        .create_flow(json!({
            "name": "Keitaro", "slug": format!("keitaro-{}", stack.id),
            "destination_url": "https://offer.example/?c={click}",
            "status_map": {"lead": "pending", "sale": "approved", "rejected": "rejected"}
        }))
        .await?;
    for flow in [&plain, &affise, &keitaro] {
        wait_for_flow(stack, flow["slug"].as_str().unwrap_or_default()).await?;
    }
    let (plain, affise, keitaro) = (flow_id(&plain), flow_id(&affise), flow_id(&keitaro));

    let h: Vec<String> = (0..7).map(|i| click_hash(plain, 100 + i)).collect();
    let affise_click = click_hash(affise, 7);
    let keitaro_click = click_hash(keitaro, 8);
    let dialects = vec![
        Dialect {
            name: "TraffSure",
            flow: plain,
            path: format!(
                "/postback?click={}&goal=sale&status=approved&revenue=12.50&currency=usd&uid=ORD-1001",
                h[0]
            ),
            post: None,
            goal: "sale",
            status: ConversionStatus::Approved,
            raw_status: "approved",
            revenue_micros: Some(12_500_000),
            currency: "USD",
            uid: "ORD-1001",
            disable_postbacks: false,
            logged: vec![("click", h[0].clone()), ("currency", "usd".into())],
        },
        // Affise: {clickid}, {action_id}, {sum}, {goal}, numeric {status} (1 approved,
        // 2 pending, 3 declined, 5 hold), mapped by the flow's status map.
        Dialect {
            name: "Affise",
            flow: affise,
            path: format!(
                "/postback?clickid={affise_click}&action_id=5f1e2d3c4b5a&sum=3.20&goal=lead&status=2&custom_field1=web&offer_id=42"
            ),
            post: None,
            goal: "lead",
            status: ConversionStatus::Pending,
            raw_status: "2",
            revenue_micros: Some(3_200_000),
            currency: "",
            uid: "5f1e2d3c4b5a",
            disable_postbacks: false,
            logged: vec![("custom_field1", "web".into()), ("offer_id", "42".into())],
        },
        // FunnelFlux: /pb/?hit=…&tx=…&rev=…&status=…, with disable_postbacks.
        Dialect {
            name: "FunnelFlux",
            flow: plain,
            path: format!(
                "/pb/?hit={}&tx=FF-778&rev=7.5&status=hold&disable_postbacks=true",
                h[1]
            ),
            post: None,
            goal: "",
            status: ConversionStatus::Pending,
            raw_status: "hold",
            revenue_micros: Some(7_500_000),
            currency: "",
            uid: "FF-778",
            disable_postbacks: true,
            logged: vec![("hit", h[1].clone()), ("disable_postbacks", "true".into())],
        },
        // HasOffers / TUNE: the tracker's click in {aff_sub}, sent as subid; TUNE's own
        // {transaction_id} as the UID; {offer_id}, {aff_id} and a URL-encoded source.
        Dialect {
            name: "HasOffers/TUNE",
            flow: plain,
            path: format!(
                "/postback?subid={}&payout=1.75&transaction_id=102c8a6f3e9d1b&offer_id=12&aff_id=5&aff_sub2=push%20feed%2F1",
                h[2]
            ),
            post: None,
            goal: "",
            status: ConversionStatus::Approved,
            raw_status: "",
            revenue_micros: Some(1_750_000),
            currency: "",
            uid: "102c8a6f3e9d1b",
            disable_postbacks: false,
            logged: vec![("aff_sub2", "push feed/1".into()), ("aff_id", "5".into())],
        },
        // Everflow: a JSON POST with {sub1} as cid, {payout_amount}, {transaction_id},
        // {adv_event_id} as the event, and numbers as numbers.
        Dialect {
            name: "Everflow",
            flow: plain,
            path: "/postback".into(),
            post: Some((
                "application/json",
                json!({
                    "cid": h[3], "payout": 4.0, "currency": "EUR", "txid": "ef-9c1d",
                    "event": "Deposit", "offer_id": 21, "aff_click_id": "abc-123", "is_test": false
                })
                .to_string(),
            )),
            goal: "deposit",
            status: ConversionStatus::Approved,
            raw_status: "",
            revenue_micros: Some(4_000_000),
            currency: "EUR",
            uid: "ef-9c1d",
            disable_postbacks: false,
            logged: vec![("offer_id", "21".into()), ("is_test", "false".into())],
        },
        // Keitaro: {subid}, status lead / sale / rejected, {payout}, {currency}, {tid}.
        Dialect {
            name: "Keitaro",
            flow: keitaro,
            path: "/postback".into(),
            post: Some((
                "application/x-www-form-urlencoded",
                format!("subid={keitaro_click}&status=lead&payout=0.35&currency=RUB&tid=k-55&sub_id_3=ru+mobile"),
            )),
            goal: "",
            status: ConversionStatus::Pending,
            raw_status: "lead",
            revenue_micros: Some(350_000),
            currency: "RUB",
            uid: "k-55",
            disable_postbacks: false,
            logged: vec![("sub_id_3", "ru mobile".into()), ("tid", "k-55".into())],
        },
    ];

    let mut events = postbacks(stack).await?;
    let mut log = postback_log(stack).await?;
    for d in &dialects {
        let url = stack.url("postback-ingest", &d.path);
        let response = match &d.post {
            None => stack.http.get(&url).send().await?,
            Some((content_type, body)) => {
                stack
                    .http
                    .post(&url)
                    .header("content-type", *content_type)
                    .body(body.clone())
                    .send()
                    .await?
            }
        };
        let r = reply(response).await?;
        assert_eq!(
            (r.status, r.code.as_str()),
            (200, "accepted"),
            "{}: {r:?}",
            d.name
        );

        let p = events.one(&r.postback_id).await?;
        assert_eq!(p.flow_id, d.flow, "{}", d.name);
        assert_eq!(p.goal, d.goal, "{}", d.name);
        assert_eq!(p.status(), d.status, "{}", d.name);
        assert_eq!(p.raw_status, d.raw_status, "{}", d.name);
        assert_eq!(
            p.has_revenue.then_some(p.revenue_micros),
            d.revenue_micros,
            "{}",
            d.name
        );
        assert_eq!(p.currency, d.currency, "{}", d.name);
        assert_eq!(p.uid, d.uid, "{}", d.name);
        assert_eq!(p.disable_postbacks, d.disable_postbacks, "{}", d.name);
        assert_eq!(p.click_hash.len(), 40, "{}", d.name);

        let entry = log.one(&r.postback_id).await?;
        assert_eq!(
            (entry.response_status, entry.reason.as_str()),
            (200, "accepted"),
            "{}",
            d.name
        );
        assert_eq!(entry.click_hash, p.click_hash, "{}", d.name);
        assert_eq!(entry.flow_id, d.flow, "{}", d.name);
        assert_eq!(entry.goal, d.goal, "{}", d.name);
        assert!(
            (5_000..120_000).contains(&entry.delta_ms),
            "{}: delta {}",
            d.name,
            entry.delta_ms
        );
        let expected_method = if d.post.is_some() { "POST" } else { "GET" };
        assert_eq!(entry.method, expected_method, "{}", d.name);
        assert_eq!(
            entry.path,
            d.path.split('?').next().unwrap_or_default(),
            "{}",
            d.name
        );
        let params = logged_params(&entry);
        for (name, value) in &d.logged {
            assert!(
                params.contains(&(name.to_string(), value.clone(), false)),
                "{}: {name}={value} missing from {params:?}",
                d.name
            );
        }
        if let Some((content_type, _)) = &d.post {
            assert_eq!(entry.content_type, *content_type, "{}", d.name);
        }
    }
    Ok(())
}

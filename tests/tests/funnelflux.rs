//! FunnelFlux's page-scoped conversions on the real stack: one visitor lands on a lander
//! and clicks through to two offers twice each (four hits, each with its own click hash).
//! A visitor postback with `p` converts the visitor's latest visit of that offer; one
//! without `p` converts the latest offer visit; a hit postback converts exactly that
//! visit; a `p` that is not an offer id is refused naming it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use traffsure_tests::{eventually, query_of, Stack, StackOptions};

mod postback_support;
use postback_support::get as postback;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vid_and_p_convert_the_right_offer_visit() -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions::default().services(&[
        "click-ingest",
        "postback-ingest",
        "conversion-attribution",
        "sink",
        "reporting-api",
    ]))
    .await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

/// The value of the cookie `name` a response sets.
fn set_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_string())
}

fn id(object: &Value) -> anyhow::Result<u64> {
    object["id"].as_u64().context("an id")
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let post = |path: &'static str, body: Value| async move {
        stack.api_expect(Method::POST, path, Some(body), 201).await
    };
    let lander = post(
        "/api/v1/landers",
        json!({"name": "Quiz", "url": "https://lp.example/", "offers": 2}),
    )
    .await?;
    let first = post(
        "/api/v1/offers",
        json!({"name": "First", "url": "https://first.example/?c={click}"}),
    )
    .await?;
    let second = post(
        "/api/v1/offers",
        json!({"name": "Second", "url": "https://second.example/?c={click}"}),
    )
    .await?;
    let (first_id, second_id) = (id(&first)?, id(&second)?);
    let slug = format!("ff-{}", stack.id);
    stack
        .create_flow(json!({
            "name": "FunnelFlux", "slug": slug,
            "goals": [{"key": "sale", "payout": "5"}],
            "path": {"landers": [{"lander_id": id(&lander)?}],
                     "offers": [{"offer_id": first_id}, {"offer_id": second_id}]},
        }))
        .await?;

    // The visit: to the lander, with the lander and visitor cookies.
    let track = stack.url("click-ingest", &format!("/c/{slug}?sub_id=s&source=ff"));
    let visit = eventually(Duration::from_secs(20), || async {
        let response = stack.http.get(&track).send().await?;
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default();
        Ok(location
            .starts_with("https://lp.example/")
            .then(|| response.headers().clone()))
    })
    .await?;
    let lp = set_cookie(&visit, "ts_lp").context("the lander cookie")?;
    let vid = set_cookie(&visit, "ts_vid").context("the visitor cookie")?;
    let cookies = format!("ts_lp={lp}; ts_vid={vid}");

    // Four hits, in this order: first, second, first, second offer. Clicks apart in time,
    // so each is the latest of its offer when it is made.
    let mut hits = Vec::new();
    for n in [1, 2, 1, 2] {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let response = stack
            .http
            .get(stack.url("click-ingest", &format!("/lp/click/{n}")))
            .header("cookie", &cookies)
            .send()
            .await?;
        anyhow::ensure!(response.status() == 302, "hit {n}: {}", response.status());
        let location = response.headers()["location"].to_str()?.to_string();
        let want = if n == 1 {
            "https://first."
        } else {
            "https://second."
        };
        anyhow::ensure!(location.starts_with(want), "hit {n}: {location}");
        hits.push(query_of(&location)["c"].clone());
    }
    // Attribution must hold every hit before the postbacks come: wait until the sink has
    // stored them all (attribution reads the same topic, ahead of the sink).
    eventually(Duration::from_secs(30), || async {
        let count = stack.clickhouse("SELECT count() FROM clicks").await?;
        Ok((count.trim().parse::<u64>().unwrap_or_default() >= 5).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // `p` that is no offer id is refused, naming it.
    let refused = postback(stack, &format!("/postback?vid={vid}&flow={slug}&p=first")).await?;
    assert_eq!(
        (
            refused.status,
            refused.code.as_str(),
            refused.field.as_deref()
        ),
        (422, "invalid_offer", Some("p"))
    );
    for query in [
        // FunnelFlux's visitor postback: vid, p (the page that converted), tx, rev.
        format!("vid={vid}&flow={slug}&p={first_id}&tx=by-page&rev=7"),
        // Neither p nor a hit: the latest offer visit.
        format!("vid={vid}&flow={slug}&tx=latest"),
        // A hit: exactly that visit, the first one.
        format!("hit={}&tx=by-hit", hits[0]),
    ] {
        let reply = postback(stack, &format!("/postback?{query}")).await?;
        assert_eq!(reply.status, 200, "{query}: {}", reply.message);
    }

    let converted = eventually(Duration::from_secs(60), || async {
        let rows = stack
            .clickhouse(
                "SELECT uid, click_hash, toUInt32(offer_id) FROM conversions \
                 ORDER BY uid FORMAT TSV",
            )
            .await?;
        let rows: BTreeMap<String, (String, u64)> = rows
            .lines()
            .filter_map(|line| {
                let mut cols = line.split('\t');
                let uid = cols.next()?.to_string();
                let hash = cols.next()?.to_string();
                let offer = cols.next()?.parse().ok()?;
                Some((uid, (hash, offer)))
            })
            .collect();
        Ok((rows.len() >= 3).then_some(rows))
    })
    .await?;
    assert_eq!(
        converted,
        BTreeMap::from([
            ("by-page".to_string(), (hits[2].clone(), first_id)),
            ("latest".to_string(), (hits[3].clone(), second_id)),
            ("by-hit".to_string(), (hits[0].clone(), first_id)),
        ]),
        "hits {hits:?}"
    );
    Ok(())
}

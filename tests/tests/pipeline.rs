//! One click travels the whole way: tracking link → redirect → Kafka → attribution →
//! sink → ClickHouse → reporting API, on the real Kafka and ClickHouse.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use traffsure_tests::{click_hash_of, eventually, Stack};

const CLICKS: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_and_postbacks_reach_the_dashboard_exactly_once() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let http = &stack.http;
    let slug = format!("e2e-{}", stack.id);

    // A flow, created through the API, with a sale goal paying 2.5 by default.
    let created = stack
        .api(Method::POST, "/api/v1/flows")
        .json(&json!({
            "name": "End to end",
            "slug": slug,
            "destination_url": "https://offer.example/land?c={click}&s={sub_id}&src={source}",
            "goals": [{"key": "sale", "payout": "2.5"}]
        }))
        .send()
        .await?;
    assert_eq!(created.status(), 201, "{}", created.text().await?);
    let flow: Value = created.json().await?;
    assert_eq!(flow["slug"], slug.as_str());

    // Bad flow input is refused with the field named.
    let invalid = stack
        .api(Method::POST, "/api/v1/flows")
        .json(&json!({"name": "x", "destination_url": "ftp://nope"}))
        .send()
        .await?;
    assert_eq!(invalid.status(), 422);
    assert_eq!(invalid.json::<Value>().await?["field"], "destination_url");

    // click-ingest picks the new flow up from the flows topic without a restart.
    let track = stack.url(
        "click-ingest",
        &format!("/c/{slug}?sub_id=s%201&source=push"),
    );
    let first = eventually(Duration::from_secs(15), || async {
        let response = http.get(&track).send().await?;
        Ok((response.status() == 302).then_some(response))
    })
    .await?;
    let mut hashes = vec![click_hash_of(first.headers()["location"].to_str()?)];
    for _ in 1..CLICKS {
        let response = http.get(&track).send().await?;
        assert_eq!(response.status(), 302);
        let location = response.headers()["location"].to_str()?.to_string();
        assert!(
            location.starts_with("https://offer.example/land?c="),
            "{location}"
        );
        assert!(location.ends_with("&s=s%201&src=push"), "{location}");
        hashes.push(click_hash_of(&location));
    }
    assert!(hashes.iter().all(|h| h.len() == 40), "{hashes:?}");

    // The edge counts its requests by route pattern and status for Prometheus (each
    // worker hands its counts over within 100 ms).
    let metrics = eventually(Duration::from_secs(5), || async {
        let metrics = http
            .get(stack.url("click-ingest", "/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let redirects: u64 = metrics
            .lines()
            .find(|l| {
                l.starts_with("traffsure_http_requests_total{")
                    && l.contains("route=\"/c\"")
                    && l.contains("status=\"302\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok((redirects >= CLICKS as u64).then_some(metrics))
    })
    .await?;
    assert!(metrics.contains("traffsure_http_request_duration_seconds_bucket{route=\"/c\""));

    // Unknown flows get a 404, never a redirect.
    let unknown = http
        .get(stack.url("click-ingest", "/c/no-such-flow"))
        .send()
        .await?;
    assert_eq!(unknown.status(), 404);

    // Postbacks: three with revenue 4 (two dialects), two with the goal's default payout,
    // one exact repeat that must not count again.
    let postback = |query: String| {
        let url = stack.url("postback-ingest", &format!("/postback?{query}"));
        async move { http.get(url).send().await }
    };
    let mut requests = 0;
    for (i, query) in [
        format!("click={}&goal=sale&revenue=4.00&uid=A", hashes[0]),
        format!("clickid={}&event=sale&payout=4&tx=B", hashes[1]),
        format!("cid={}&goal=sale&sum=4.0", hashes[2]),
        format!("click={}", hashes[3]),
        format!("hit={}&status=approved", hashes[4]),
        format!("click={}&goal=sale&revenue=4.00&uid=A", hashes[0]),
    ]
    .into_iter()
    .enumerate()
    {
        let response = postback(query).await?;
        requests += 1;
        assert_eq!(response.status(), 200, "postback {i}");
        let body: Value = response.json().await?;
        assert_eq!(body["code"], "accepted");
    }
    let post = http
        .post(stack.url("postback-ingest", "/postback"))
        .form(&[("goal", "lead")])
        .send()
        .await?;
    requests += 1;
    assert_eq!(post.status(), 422);
    assert_eq!(post.json::<Value>().await?["code"], "missing_click");
    let mut forged = hashes[5].clone();
    forged.replace_range(39.., if forged.ends_with('0') { "1" } else { "0" });
    let not_found = postback(format!("click={forged}")).await?;
    requests += 1;
    assert_eq!(not_found.status(), 404);
    assert_eq!(not_found.json::<Value>().await?["code"], "click_not_found");
    let bad_revenue = postback(format!("click={}&revenue=ten", hashes[6])).await?;
    requests += 1;
    assert_eq!(bad_revenue.status(), 422);
    assert_eq!(
        bad_revenue.json::<Value>().await?["code"],
        "invalid_revenue"
    );

    // The dashboard counts every click once and the five conversions: 3 × 4 + 2 × 2.5.
    let expected = |d: &Value| {
        d["clicks_today"] == CLICKS as u64
            && d["conversions_today"] == 5
            && d["revenue_today"] == "17"
            && d["active_flows"] == 1
    };
    let dashboard = eventually(Duration::from_secs(60), || async {
        let d: Value = stack
            .api(Method::GET, "/api/v1/dashboard")
            .send()
            .await?
            .json()
            .await?;
        Ok(expected(&d).then_some(d))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", stack.logs()))?;
    assert_eq!(dashboard["conversions_by_status"]["approved"], 5);

    // Every postback request, accepted or not, is in the postback log with its payload.
    let logged = eventually(Duration::from_secs(30), || async {
        let count: usize = stack
            .clickhouse("SELECT count() FROM postback_log")
            .await?
            .parse()?;
        Ok((count == requests).then_some(count))
    })
    .await?;
    assert_eq!(logged, requests);
    let statuses = stack
        .clickhouse("SELECT response_status, count() FROM postback_log GROUP BY response_status ORDER BY response_status FORMAT CSV")
        .await?;
    assert_eq!(statuses, "200,6\n404,1\n422,2");
    let payload = stack
        .clickhouse(&format!(
            "SELECT param_names, param_values FROM postback_log WHERE click_hash = '{}' AND reason = 'invalid_revenue' FORMAT TSV",
            hashes[6]
        ))
        .await?;
    assert!(
        payload.contains("revenue") && payload.contains("ten"),
        "{payload}"
    );

    // Nothing is counted twice once everything has settled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled: Value = stack
        .api(Method::GET, "/api/v1/dashboard")
        .send()
        .await?
        .json()
        .await?;
    assert!(expected(&settled), "{settled}");
    let clicks: usize = stack
        .clickhouse("SELECT uniqExact(click_hash) FROM clicks")
        .await?
        .parse()?;
    assert_eq!(clicks, CLICKS);
    Ok(())
}

//! One currency in every total, on the real stack: EUR, USD and JPY postbacks become
//! conversions, and clicks carry costs in EUR and the reporting currency, whose
//! dashboard, report (rollups and raw tables), CSV and list figures equal the
//! hand-computed sums in the reporting currency (USD) at the rate of the nearest earlier
//! day; a GBP conversion and a GBP cost without a rate are counted apart and in no sum
//! until their rate arrives, which converts them without anything being written again.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use traffsure_tests::{click_hash_of, eventually, stack_with_receiver, Requests, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_are_in_the_reporting_currency_and_a_missing_rate_is_counted_apart(
) -> anyhow::Result<()> {
    let (stack, port, received) = stack_with_receiver().await?;
    let result = run(&stack, port, &received).await;
    stack.print_failure(&result);
    result
}

async fn dashboard(stack: &Stack) -> anyhow::Result<Value> {
    Ok(stack
        .api(Method::GET, "/api/v1/dashboard")
        .send()
        .await?
        .json()
        .await?)
}

async fn report(stack: &Stack, query: &str) -> anyhow::Result<Value> {
    let response = stack
        .api(Method::GET, &format!("/api/v1/reports?{query}"))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    Ok(response.json().await?)
}

async fn run(stack: &Stack, receiver_port: u16, received: &Requests) -> anyhow::Result<()> {
    let http = &stack.http;
    let days = stack
        .clickhouse(
            "SELECT toString(today() - 2), toString(yesterday()), toString(today()), toString(today() + 1) \
             FORMAT TSV",
        )
        .await?;
    let days: Vec<&str> = days.trim().split('\t').collect();
    let (two_days_ago, yesterday, today, tomorrow) = (days[0], days[1], days[2], days[3]);

    // Rates: an ECB file (base EUR) for the two days before today, and a later day that
    // must not apply to today's conversions.
    let ecb = format!(
        "Date,USD,JPY,BGN,\n{yesterday},1.25,187.5,N/A,\n{two_days_ago},1.0000,100,1.9558,\n"
    );
    let imported = stack
        .api(Method::POST, "/api/v1/exchange-rates/import")
        .header("content-type", "text/csv")
        .body(ecb)
        .send()
        .await?;
    assert_eq!(imported.status(), 200);
    assert_eq!(
        imported.json::<Value>().await?,
        json!({"base": "EUR", "days": 2, "stored": 5})
    );
    let put = stack
        .api(Method::PUT, "/api/v1/exchange-rates")
        .json(&json!({"day": tomorrow, "base": "EUR", "rates": {"USD": 2.0, "GBP": 1.0}}))
        .send()
        .await?;
    assert_eq!(put.status(), 200);
    assert_eq!(put.json::<Value>().await?["stored"], 2);
    for (body, field) in [
        (
            json!({"day": today, "base": "EUR", "rates": {"dollars": 1.0}}),
            "rates",
        ),
        (
            json!({"day": today, "base": "EUR", "rates": {"USD": -1.0}}),
            "rates",
        ),
        (
            json!({"day": "today", "base": "EUR", "rates": {"USD": 1.0}}),
            "day",
        ),
    ] {
        let refused = stack
            .api(Method::PUT, "/api/v1/exchange-rates")
            .json(&body)
            .send()
            .await?;
        assert_eq!(refused.status(), 422, "{body}");
        assert_eq!(refused.json::<Value>().await?["field"], field, "{body}");
    }
    let refused = stack
        .api(Method::POST, "/api/v1/exchange-rates/import")
        .body("Day,USD\n2026-01-01,1\n")
        .send()
        .await?;
    assert_eq!(refused.status(), 422);
    assert_eq!(refused.json::<Value>().await?["field"], "body");
    let listed: Value = stack
        .api(Method::GET, "/api/v1/exchange-rates?currency=USD")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed["reporting_currency"], "USD");
    let listed: Vec<(String, f64)> = listed["rates"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["day"].as_str().unwrap_or_default().to_string(),
                r["rate"].as_f64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (tomorrow.to_string(), 2.0),
            (yesterday.to_string(), 1.25),
            (two_days_ago.to_string(), 1.0)
        ]
    );

    // Five clicks, five approved postbacks in four currencies.
    let slug = format!("fx-{}", stack.id);
    stack
        .create_flow(json!({
            "name": "Currencies",
            "slug": slug,
            "destination_url": "https://offer.example/?c={click}",
            "goals": [{"key": "sale", "payout": "1"}],
            "outbound_postbacks": [{
                "url": format!("http://127.0.0.1:{receiver_port}/pb?r={{revenue}}&c={{currency}}&rc={{revenue_converted}}&cc={{currency_converted}}"),
                "on_status": "approved"
            }]
        }))
        .await?;
    // Costs: 2 EUR twice (2.5 USD each), 1 in the reporting currency, 3 GBP (no rate yet).
    let track = |query: &str| stack.url("click-ingest", &format!("/c/{slug}?{query}"));
    let first = track("cost=2&cost_currency=eur");
    let first = eventually(Duration::from_secs(15), || async {
        let response = http.get(&first).send().await?;
        Ok((response.status() == 302).then_some(response))
    })
    .await?;
    let mut hashes = vec![click_hash_of(first.headers()["location"].to_str()?)];
    for query in [
        "cost=2&cost_currency=EUR",
        "cost=1",
        "cost=3&cost_currency=GBP",
        "",
    ] {
        let response = http.get(track(query)).send().await?;
        assert_eq!(response.status(), 302);
        hashes.push(click_hash_of(response.headers()["location"].to_str()?));
    }
    // In USD at yesterday's rates (EUR 1 = USD 1.25 = JPY 187.5): 12.5 + 7 + 10 + 5.
    for query in [
        format!("click={}&goal=sale&revenue=10&currency=EUR", hashes[0]),
        format!("click={}&goal=sale&revenue=7&currency=USD", hashes[1]),
        format!("click={}&goal=sale&revenue=1500&currency=JPY", hashes[2]),
        format!("click={}&goal=sale&revenue=3&currency=GBP", hashes[3]),
        format!("cnv_id={}&payout=4&cnv_currency=eur", hashes[4]),
    ] {
        let response = http
            .get(stack.url("postback-ingest", &format!("/postback?{query}")))
            .send()
            .await?;
        assert_eq!(response.status(), 200, "{query}");
    }

    let d = eventually(Duration::from_secs(60), || async {
        let d = dashboard(stack).await?;
        Ok((d["conversions_today"] == 5).then_some(d))
    })
    .await?;
    assert_eq!(d["revenue_today"], "34.5", "{d}");
    assert_eq!(d["reporting_currency"], "USD");
    assert_eq!(
        d["without_rate_today"],
        json!({"conversions": 1, "by_currency": [{"currency": "GBP", "conversions": 1, "revenue": "3"}]})
    );
    let hourly: f64 = d["hourly"]["today"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            p["revenue"]
                .as_str()
                .unwrap_or("0")
                .parse::<f64>()
                .unwrap_or(0.0)
        })
        .sum();
    assert_eq!(hourly, 34.5);

    // Reports from the rollups (by flow) and from the raw tables (by device) agree.
    for group_by in ["flow", "device"] {
        let r = eventually(Duration::from_secs(30), || async {
            let r = report(stack, &format!("group_by={group_by}")).await?;
            Ok((r["totals"]["clicks"] == 5 && r["totals"]["approved"] == 5).then_some(r))
        })
        .await?;
        assert_eq!(r["reporting_currency"], "USD");
        assert_eq!(r["totals"]["revenue"], "34.5", "{group_by}: {r}");
        assert_eq!(r["totals"]["cost"], "6", "{group_by}: {r}");
        assert_eq!(r["totals"]["profit"], "28.5", "{group_by}: {r}");
        assert_eq!(r["totals"]["roi"], 475.0, "{group_by}: {r}");
        assert_eq!(r["totals"]["epc"], "6.9", "{group_by}: {r}");
        assert_eq!(
            r["cost_without_rate"],
            json!([{"currency": "GBP", "cost": "3"}]),
            "{group_by}: {r}"
        );
        assert_eq!(r["totals"]["without_rate"], 1, "{group_by}: {r}");
        assert_eq!(
            r["without_rate"], d["without_rate_today"],
            "{group_by}: {r}"
        );
    }
    let csv = stack
        .api(Method::GET, "/api/v1/reports?group_by=flow&format=csv")
        .send()
        .await?
        .text()
        .await?;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let row: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let cell = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .and_then(|i| row.get(i).copied())
    };
    assert_eq!(cell("revenue"), Some("34.5"), "{csv}");
    assert_eq!(cell("cost"), Some("6"), "{csv}");
    assert_eq!(cell("without_rate"), Some("1"), "{csv}");

    // The list shows both amounts.
    let list: Value = stack
        .api(Method::GET, "/api/v1/conversions")
        .send()
        .await?
        .json()
        .await?;
    let mut amounts: Vec<(String, String, Value)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["currency"].as_str().unwrap_or_default().to_string(),
                c["revenue"].as_str().unwrap_or_default().to_string(),
                c["revenue_converted"].clone(),
            )
        })
        .collect();
    amounts.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        amounts,
        vec![
            ("EUR".into(), "10".into(), json!("12.5")),
            ("EUR".into(), "4".into(), json!("5")),
            ("GBP".into(), "3".into(), Value::Null),
            ("JPY".into(), "1500".into(), json!("10")),
            ("USD".into(), "7".into(), json!("7")),
        ]
    );

    // Outbound postbacks: the amount as sent and in USD; without a rate, none.
    let mut got = eventually(Duration::from_secs(60), || async {
        let got: Vec<String> = received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|r| r.query.clone())
            .collect();
        Ok((got.len() >= 5).then_some(got))
    })
    .await?;
    got.sort();
    assert_eq!(
        got,
        [
            "r=10&c=EUR&rc=12.5&cc=USD",
            "r=1500&c=JPY&rc=10&cc=USD",
            "r=3&c=GBP&rc=&cc=USD",
            "r=4&c=EUR&rc=5&cc=USD",
            "r=7&c=USD&rc=7&cc=USD",
        ]
    );

    // Today's GBP rate arrives: the stored conversion and cost convert (3 × 1.25 / 0.5).
    let put = stack
        .api(Method::PUT, "/api/v1/exchange-rates")
        .json(&json!({"day": today, "base": "EUR", "rates": {"GBP": 0.5}}))
        .send()
        .await?;
    assert_eq!(put.status(), 200);
    let d = dashboard(stack).await?;
    assert_eq!(d["revenue_today"], "42", "{d}");
    assert_eq!(
        d["without_rate_today"],
        json!({"conversions": 0, "by_currency": []})
    );
    let r = report(stack, "group_by=day").await?;
    assert_eq!(r["totals"]["revenue"], "42", "{r}");
    assert_eq!(r["totals"]["cost"], "13.5", "{r}");
    assert_eq!(r["totals"]["profit"], "28.5", "{r}");
    assert_eq!(r["totals"]["without_rate"], 0, "{r}");
    assert_eq!(r["cost_without_rate"], json!([]), "{r}");
    Ok(())
}

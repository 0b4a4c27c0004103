//! Cost models and cost updates on the real stack (docs/costs.md): each model over a known
//! number of clicks and conversions gives the exact cost in reports, with its source
//! marked; a model change applies to the clicks after it only; a cost update over a range
//! replaces the clicks' own cost and sums exactly; a newer overlapping update owns the
//! clicks it covers; CSV import; bad input is refused naming the field.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use traffsure_tests::{click_hash_of, eventually, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_models_and_updates_give_exact_costs() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

/// Sends `n` clicks to `slug` with `query`, returning their click hashes.
async fn clicks(stack: &Stack, slug: &str, query: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let url = stack.url("click-ingest", &format!("/c/{slug}?{query}"));
    let mut hashes = Vec::new();
    for _ in 0..n {
        let response = eventually(Duration::from_secs(15), || async {
            let response = stack.http.get(&url).send().await?;
            Ok((response.status() == 302).then_some(response))
        })
        .await?;
        hashes.push(click_hash_of(response.headers()["location"].to_str()?));
    }
    Ok(hashes)
}

async fn postback(stack: &Stack, query: &str) -> anyhow::Result<()> {
    let response = stack
        .http
        .get(stack.url("postback-ingest", &format!("/postback?{query}")))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 200, "{query}: {}", response.status());
    Ok(())
}

async fn stored(stack: &Stack, sql: &str) -> anyhow::Result<u64> {
    Ok(stack.clickhouse(sql).await?.trim().parse().unwrap_or(0))
}

/// Waits until ClickHouse holds `n` clicks of `flow`.
async fn wait_clicks(stack: &Stack, flow: u64, n: u64) -> anyhow::Result<()> {
    let sql = format!("SELECT count() FROM clicks WHERE flow_id = {flow}");
    eventually(Duration::from_secs(60), || async {
        Ok((stored(stack, &sql).await? >= n).then_some(()))
    })
    .await
}

/// The report grouped by `group_by` (plus `extra`), rows by their first key.
async fn report(stack: &Stack, query: &str) -> anyhow::Result<Value> {
    stack
        .api_expect(Method::GET, &format!("/api/v1/reports?{query}"), None, 200)
        .await
}

fn row<'a>(report: &'a Value, key: &str, value: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r[key] == value))
        .unwrap_or(&Value::Null)
}

async fn new_flow(stack: &Stack, slug: &str, extra: Value) -> anyhow::Result<(u64, Value)> {
    let mut spec = json!({
        "name": slug,
        "slug": slug,
        "destination_url": "https://offer.example/?c={click}",
        "goals": [{"key": "sale", "payout": "0"}],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    let view = stack.create_flow(spec.clone()).await?;
    Ok((view["id"].as_u64().unwrap_or_default(), spec))
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let id = &stack.id;
    // A source on CPC 0.05; flows of each model.
    let source = stack
        .api_expect(
            Method::POST,
            "/api/v1/traffic-sources",
            Some(json!({"name": "Push CPC", "cost_model": {"kind": "cpc", "amount": "0.05"}})),
            201,
        )
        .await?;
    assert_eq!(source["cost_model"]["kind"], "cpc", "{source}");
    let source_id = source["id"].as_u64().unwrap_or_default();
    let (cpc, cpc_spec) = new_flow(
        stack,
        &format!("cpc-{id}"),
        json!({"traffic_source_id": source_id}),
    )
    .await?;
    let shown = stack
        .api_expect(Method::GET, &format!("/api/v1/flows/{cpc}"), None, 200)
        .await?;
    assert_eq!(shown["cost_model"], Value::Null, "{shown}");
    assert_eq!(shown["effective_cost_model"]["kind"], "cpc", "{shown}");
    let (cpm, _) = new_flow(
        stack,
        &format!("cpm-{id}"),
        json!({"cost_model": {"kind": "cpm", "amount": "2.5"}}),
    )
    .await?;
    let (cpa, _) = new_flow(
        stack,
        &format!("cpa-{id}"),
        json!({"cost_model": {"kind": "cpa", "amount": "3", "status": "approved"}}),
    )
    .await?;
    let (revshare, _) = new_flow(
        stack,
        &format!("rs-{id}"),
        json!({"cost_model": {"kind": "revshare", "percent": "40"}}),
    )
    .await?;
    let (auto, _) = new_flow(stack, &format!("auto-{id}"), json!({})).await?;

    // A bad model is refused naming its field.
    for (model, field) in [
        (json!({"kind": "cpx"}), "cost_model.kind"),
        (json!({"kind": "cpc"}), "cost_model.amount"),
        (
            json!({"kind": "cpm", "amount": "1.0005"}),
            "cost_model.amount",
        ),
        (
            json!({"kind": "revshare", "percent": "150"}),
            "cost_model.percent",
        ),
    ] {
        let (status, body) = stack
            .api_call(
                Method::POST,
                "/api/v1/flows",
                Some(json!({"name": "Bad", "destination_url": "https://o.example/", "cost_model": model})),
            )
            .await?;
        assert_eq!(
            (status, body["field"].as_str()),
            (422, Some(field)),
            "{body}"
        );
    }

    // The link's cost is ignored under CPC and CPM, kept under auto.
    clicks(stack, &format!("cpc-{id}"), "cost=9", 4).await?;
    clicks(stack, &format!("cpm-{id}"), "cost=9", 4).await?;
    let cpa_clicks = clicks(stack, &format!("cpa-{id}"), "", 3).await?;
    let rs_clicks = clicks(stack, &format!("rs-{id}"), "", 2).await?;
    clicks(stack, &format!("auto-{id}"), "cost=0.5", 2).await?;
    // CPA 3 per approved: two approved, one pending, then the pending one rejected.
    postback(
        stack,
        &format!("click={}&goal=sale&status=approved", cpa_clicks[0]),
    )
    .await?;
    postback(
        stack,
        &format!("click={}&goal=sale&status=approved", cpa_clicks[1]),
    )
    .await?;
    postback(
        stack,
        &format!("click={}&goal=sale&status=pending", cpa_clicks[2]),
    )
    .await?;
    // RevShare 40 % of approved revenue: 10 and 5.
    postback(
        stack,
        &format!("click={}&goal=sale&revenue=10", rs_clicks[0]),
    )
    .await?;
    postback(
        stack,
        &format!("click={}&goal=sale&revenue=5", rs_clicks[1]),
    )
    .await?;
    wait_clicks(stack, cpc, 4).await?;

    // The CPC flow's own model from now on: 0.2 a click, for the clicks after the change.
    let mut changed = cpc_spec.clone();
    changed["cost_model"] = json!({"kind": "cpc", "amount": "0.2"});
    stack
        .api_expect(
            Method::PUT,
            &format!("/api/v1/flows/{cpc}"),
            Some(changed),
            200,
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    clicks(stack, &format!("cpc-{id}"), "cost=9", 2).await?;
    wait_clicks(stack, cpc, 6).await?;
    let costs_sql = format!(
        "SELECT cost_micros, cost_source, count() FROM clicks WHERE flow_id = {cpc} \
         GROUP BY cost_micros, cost_source ORDER BY cost_micros FORMAT CSV"
    );
    assert_eq!(
        stack.clickhouse(&costs_sql).await?,
        "50000,2,4\n200000,2,2",
        "clicks cost by the model current when they came"
    );

    let by_flow = eventually(Duration::from_secs(60), || async {
        let r = report(stack, "group_by=flow").await?;
        // The rollups are written just after the raw rows: wait for all six CPC visits.
        let cpc_row = row(&r, "flow", &cpc.to_string());
        let visits =
            cpc_row["clicks"].as_u64().unwrap_or(0) + cpc_row["bots"].as_u64().unwrap_or(0);
        let converted = row(&r, "flow", &cpa.to_string())["conversions"] == 3
            && row(&r, "flow", &revshare.to_string())["approved"] == 2
            && visits == 6;
        Ok(converted.then_some(r))
    })
    .await?;
    for (flow, cost, source) in [
        (cpc, "0.6", "model"),
        (cpm, "0.01", "model"),
        (cpa, "6", "model"),
        (revshare, "6", "model"),
        (auto, "1", "link"),
    ] {
        let r = row(&by_flow, "flow", &flow.to_string());
        assert_eq!(r["cost"], cost, "flow {flow}: {r}");
        assert_eq!(r["cost_source"], source, "flow {flow}: {r}");
    }
    let cpa_row = row(&by_flow, "flow", &cpa.to_string());
    assert_eq!(cpa_row["cpa"], "2", "{cpa_row}");
    // An approved conversion rejected: its cost leaves the report.
    postback(
        stack,
        &format!("click={}&goal=sale&status=rejected", cpa_clicks[0]),
    )
    .await?;
    let by_flow = eventually(Duration::from_secs(60), || async {
        let r = report(stack, &format!("group_by=flow&flow={cpa}")).await?;
        Ok((row(&r, "flow", &cpa.to_string())["cost"] == "3").then_some(r))
    })
    .await?;
    assert_eq!(by_flow["totals"]["cost"], "3");
    // Raw tables (grouped by sub1) agree with the rollups.
    let raw = report(stack, &format!("group_by=sub1&flow={cpa}")).await?;
    assert_eq!(raw["totals"]["cost"], "3", "{raw}");

    updates(stack, auto).await
}

async fn updates(stack: &Stack, other: u64) -> anyhow::Result<()> {
    let id = &stack.id;
    let (flow, _) = new_flow(stack, &format!("upd-{id}"), json!({})).await?;
    let (imported_flow, _) = new_flow(stack, &format!("imp-{id}"), json!({})).await?;
    let hours = stack
        .clickhouse(
            "SELECT toString(toStartOfHour(now()) - 3600, 'UTC'), \
             toString(toStartOfHour(now()) + 7200, 'UTC'), \
             toString(toStartOfHour(now()) - 7200, 'UTC'), \
             toString(toStartOfHour(now()) - 86400, 'UTC') FORMAT TSV",
        )
        .await?;
    let hours: Vec<String> = hours.trim().split('\t').map(String::from).collect();
    let (from, to, earlier, yesterday) = (&hours[0], &hours[1], &hours[2], &hours[3]);

    // Five clicks at 1 each by the link: sub1 a, a, b, b, c.
    for sub1 in ["a", "a", "b", "b", "c"] {
        clicks(
            stack,
            &format!("upd-{id}"),
            &format!("cost=1&sub1={sub1}"),
            1,
        )
        .await?;
    }
    clicks(stack, &format!("imp-{id}"), "cost=1", 3).await?;
    wait_clicks(stack, flow, 5).await?;
    wait_clicks(stack, imported_flow, 3).await?;
    let query = format!("group_by=flow&flow={flow}");
    // The rollups are written just after the raw rows.
    let before = eventually(Duration::from_secs(30), || async {
        let r = report(stack, &query).await?;
        let imported = report(stack, &format!("group_by=flow&flow={imported_flow}")).await?;
        let ready = r["totals"]["cost"] == "5" && imported["totals"]["cost"] == "3";
        Ok(ready.then_some(r))
    })
    .await?;
    assert_eq!(before["totals"]["cost_source"], "link", "{before}");

    // The real spend of the range: 10, over the five clicks.
    let first = stack
        .api_expect(
            Method::POST,
            "/api/v1/costs",
            Some(json!({"flow": flow, "from": from, "to": to, "amount": "10", "currency": "USD"})),
            201,
        )
        .await?;
    assert_eq!(first["amount"], "10");
    assert!(first["created_by"]
        .as_str()
        .is_some_and(|by| by.starts_with("api-key:")));
    let r = report(stack, &query).await?;
    assert_eq!(r["totals"]["cost"], "10", "{r}");
    assert_eq!(r["totals"]["cost_source"], "update", "{r}");
    // An update over hours without clicks adds nothing (the flow named by its slug).
    let slug = format!("upd-{id}");
    let by_slug = stack
        .api_expect(
            Method::POST,
            "/api/v1/costs",
            Some(json!({"flow": slug, "from": yesterday, "to": earlier, "amount": "99"})),
            201,
        )
        .await?;
    assert_eq!(by_slug["flow"], flow, "{by_slug}");
    let unknown = stack
        .api_expect(
            Method::POST,
            "/api/v1/costs",
            Some(json!({"flow": "no-such-flow", "from": yesterday, "to": earlier, "amount": "1"})),
            422,
        )
        .await?;
    assert_eq!(unknown["field"], "flow", "{unknown}");
    // A newer update for sub1=a over a wider range owns those two clicks: 4; the first
    // keeps the other three: 10 over b, b, c.
    stack
        .api_expect(
            Method::POST,
            "/api/v1/costs",
            Some(json!({"flow": flow, "from": earlier, "to": to, "amount": 4, "sub1": "a"})),
            201,
        )
        .await?;
    let r = report(stack, &query).await?;
    assert_eq!(r["totals"]["cost"], "14", "{r}");
    let by_sub = report(stack, &format!("group_by=sub1&flow={flow}")).await?;
    assert_eq!(row(&by_sub, "sub1", "a")["cost"], "4", "{by_sub}");
    assert_eq!(row(&by_sub, "sub1", "b")["cost"], "6.666666", "{by_sub}");
    assert_eq!(row(&by_sub, "sub1", "c")["cost"], "3.333334", "{by_sub}");
    assert_eq!(by_sub["totals"]["cost"], "14", "{by_sub}");
    let csv = stack
        .api(
            Method::GET,
            &format!("/api/v1/reports?group_by=sub1&flow={flow}&format=csv"),
        )
        .send()
        .await?
        .text()
        .await?;
    let header: Vec<&str> = csv.lines().next().unwrap_or_default().split(',').collect();
    let cost_at = header
        .iter()
        .position(|h| *h == "cost")
        .unwrap_or(usize::MAX);
    let b_line: Vec<&str> = csv
        .lines()
        .find(|l| l.starts_with("b,"))
        .unwrap_or_default()
        .split(',')
        .collect();
    assert_eq!(b_line.get(cost_at), Some(&"6.666666"), "{csv}");
    // Other flows keep their own cost.
    let r = report(stack, &format!("group_by=flow&flow={other}")).await?;
    assert_eq!(r["totals"]["cost"], "1", "{r}");

    // CSV import: all rows or none, errors naming the row.
    let refused = stack
        .api(Method::POST, "/api/v1/costs/import")
        .header("content-type", "text/csv")
        .body(format!(
            "flow,from,to,amount\n{imported_flow},{from},{to},7.5\n{imported_flow},{from},{to},-1\n"
        ))
        .send()
        .await?;
    assert_eq!(refused.status(), 422);
    let body: Value = refused.json().await?;
    assert_eq!(body["field"], "rows[2].amount", "{body}");
    let imported = stack
        .api(Method::POST, "/api/v1/costs/import")
        .header("content-type", "text/csv")
        .body(format!(
            "flow,from,to,amount,currency\r\n{imported_flow},{from},{to},7.5,USD\r\n"
        ))
        .send()
        .await?;
    assert_eq!(imported.status(), 200);
    assert_eq!(imported.json::<Value>().await?["imported"], 1);
    let r = report(stack, &format!("group_by=flow&flow={imported_flow}")).await?;
    assert_eq!(r["totals"]["cost"], "7.5", "{r}");

    // The dashboard counts cost as reports do: the models' 0.6 + 0.01 + 3 + 6, the link's
    // 1, and the updates' 14 and 7.5.
    let d = stack.dashboard().await?;
    assert_eq!(d["cost_today"], "32.11", "{d}");
    assert_eq!(d["cost_source_today"], "mixed", "{d}");

    // Every update kept, newest first, with who made it.
    let listed = stack
        .api_expect(
            Method::GET,
            &format!("/api/v1/costs?flow={flow}"),
            None,
            200,
        )
        .await?;
    let amounts: Vec<&str> = listed["costs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["amount"].as_str())
        .collect();
    assert_eq!(amounts, ["4", "99", "10"], "{listed}");
    assert_eq!(listed["costs"][0]["sub1"], "a");
    assert_eq!(listed["costs"][0]["from"], earlier.as_str());

    // Bad input, each refused naming its field.
    for (body, field) in [
        (
            json!({"flow": flow, "from": "2026-01-01 00:30:00", "to": to, "amount": 1}),
            "from",
        ),
        (
            json!({"flow": flow, "from": to, "to": from, "amount": 1}),
            "to",
        ),
        (
            json!({"flow": 999_999, "from": from, "to": to, "amount": 1}),
            "flow",
        ),
        (
            json!({"flow": flow, "from": from, "to": to, "amount": "-2"}),
            "amount",
        ),
        (
            json!({"flow": flow, "from": from, "to": to, "amount": 1, "currency": "dollars"}),
            "currency",
        ),
        (
            json!({"flow": flow, "from": from, "to": to, "amount": 1, "sub11": "x"}),
            "body",
        ),
    ] {
        let (status, answer) = stack
            .api_call(Method::POST, "/api/v1/costs", Some(body.clone()))
            .await?;
        assert_eq!(
            (status, answer["field"].as_str()),
            (422, Some(field)),
            "{body}: {answer}"
        );
    }
    Ok(())
}

//! CPM per impression end to end (real click-ingest, sink, reporting API; docs/costs.md):
//! a flow whose cpm model is paid per thousand impressions costs each impression a
//! thousandth of the amount (cost source: model) and its visits nothing, so a report's
//! cost is exactly impressions × amount / 1000; a pixel's own `cost` still wins for its
//! impression (cost source: link); a cpm model per visit is unchanged (impressions cost
//! nothing under it); and only cpm takes `per`.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use traffsure_tests::{eventually, Stack};

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                      (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpm_per_impression_costs_impressions_exactly() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

async fn new_flow(stack: &Stack, slug: &str, cost_model: Value) -> anyhow::Result<u64> {
    let view = stack
        .create_flow(json!({
            "name": slug,
            "slug": slug,
            "destination_url": "https://offer.example/?c={click}",
            "goals": [{"key": "sale", "payout": "0"}],
            "cost_model": cost_model,
        }))
        .await?;
    Ok(view["id"].as_u64().unwrap_or_default())
}

async fn visits(stack: &Stack, slug: &str, n: usize) -> anyhow::Result<()> {
    // The link's cost is ignored under a cpm model, per visit or per impression.
    let url = stack.url("click-ingest", &format!("/c/{slug}?cost=9"));
    for _ in 0..n {
        eventually(Duration::from_secs(15), || async {
            let response = stack
                .http
                .get(&url)
                .header("user-agent", CHROME)
                .send()
                .await?;
            Ok((response.status() == 302).then_some(()))
        })
        .await?;
    }
    Ok(())
}

async fn impressions(stack: &Stack, slug: &str, query: &str, n: usize) -> anyhow::Result<()> {
    let url = stack.url("click-ingest", &format!("/i/{slug}?{query}"));
    for _ in 0..n {
        eventually(Duration::from_secs(15), || async {
            let response = stack
                .http
                .get(&url)
                .header("user-agent", CHROME)
                .send()
                .await?;
            Ok((response.status() == 200).then_some(()))
        })
        .await?;
    }
    Ok(())
}

async fn stored(stack: &Stack, sql: &str) -> anyhow::Result<String> {
    Ok(stack.clickhouse(sql).await?.trim().to_string())
}

fn row(report: &Value, flow: u64) -> &Value {
    report["rows"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["flow"].as_str() == Some(flow.to_string().as_str()))
        })
        .unwrap_or(&Value::Null)
}

/// The report by flow once both flows show `imps` people's impressions and `clicks`
/// visits (bots included) each.
async fn report(
    stack: &Stack,
    flows: [u64; 2],
    imps: [u64; 2],
    clicks: [u64; 2],
) -> anyhow::Result<Value> {
    eventually(Duration::from_secs(60), || async {
        let r = stack
            .api_expect(Method::GET, "/api/v1/reports?group_by=flow", None, 200)
            .await?;
        let ready = (0..2).all(|i| {
            let row = row(&r, flows[i]);
            let visits = row["clicks"].as_u64().unwrap_or(0) + row["bots"].as_u64().unwrap_or(0);
            row["impressions"] == imps[i] && visits == clicks[i]
        });
        Ok(ready.then_some(r))
    })
    .await
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let id = &stack.id;

    // Only cpm takes `per`, and only visit or impression.
    for (model, field) in [
        (
            json!({"kind": "cpc", "amount": "1", "per": "impression"}),
            "cost_model.per",
        ),
        (
            json!({"kind": "cpa", "amount": "1", "per": "visit"}),
            "cost_model.per",
        ),
        (
            json!({"kind": "auto", "per": "impression"}),
            "cost_model.per",
        ),
        (
            json!({"kind": "cpm", "amount": "1", "per": "click"}),
            "cost_model.per",
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
            "{model}: {body}"
        );
    }
    let (status, body) = stack
        .api_call(
            Method::POST,
            "/api/v1/traffic-sources",
            Some(json!({"name": "Bad", "cost_model": {"kind": "revshare", "percent": "5", "per": "impression"}})),
        )
        .await?;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("cost_model.per")),
        "{body}"
    );

    // CPM 2.5 per thousand impressions, and CPM 2.5 per thousand visits.
    let per_imp_slug = format!("cpmi-{id}");
    let per_visit_slug = format!("cpmv-{id}");
    let per_imp = new_flow(
        stack,
        &per_imp_slug,
        json!({"kind": "cpm", "amount": "2.5", "per": "impression"}),
    )
    .await?;
    let per_visit = new_flow(
        stack,
        &per_visit_slug,
        json!({"kind": "cpm", "amount": "2.5"}),
    )
    .await?;
    let shown = stack
        .api_expect(Method::GET, &format!("/api/v1/flows/{per_imp}"), None, 200)
        .await?;
    assert_eq!(shown["cost_model"]["per"], "impression", "{shown}");
    let shown = stack
        .api_expect(
            Method::GET,
            &format!("/api/v1/flows/{per_visit}"),
            None,
            200,
        )
        .await?;
    assert_eq!(shown["cost_model"]["per"], Value::Null, "{shown}");

    // Per impression: 4 impressions and 3 visits cost 4 × 0.0025 = 0.01.
    impressions(stack, &per_imp_slug, "", 4).await?;
    visits(stack, &per_imp_slug, 3).await?;
    // Per visit: 3 impressions and 4 visits cost 4 × 0.0025 = 0.01 as well.
    impressions(stack, &per_visit_slug, "", 3).await?;
    visits(stack, &per_visit_slug, 4).await?;

    let flows = [per_imp, per_visit];
    let r = report(stack, flows, [4, 3], [3, 4]).await?;
    for flow in flows {
        let row = row(&r, flow);
        assert_eq!(row["cost"], "0.01", "flow {flow}: {row}");
        assert_eq!(row["cost_source"], "model", "flow {flow}: {row}");
    }
    assert_eq!(
        stored(
            stack,
            &format!(
                "SELECT cost_micros, cost_source, count() FROM impressions \
                 WHERE flow_id IN ({per_imp}, {per_visit}) \
                 GROUP BY flow_id, cost_micros, cost_source \
                 ORDER BY flow_id != {per_imp}, cost_micros FORMAT CSV"
            )
        )
        .await?,
        "2500,2,4\n0,0,3",
        "each impression per impression costs a thousandth of 2.5, per visit nothing"
    );
    assert_eq!(
        stored(
            stack,
            &format!(
                "SELECT sum(cost_micros), any(cost_source), count() FROM clicks \
                 WHERE flow_id = {per_imp} FORMAT CSV"
            )
        )
        .await?,
        "0,2,3",
        "visits of a flow paid per impression cost nothing under its model"
    );

    // A pixel's own cost wins for its impression: 0.5 from the link, 0.01 from the model.
    impressions(stack, &per_imp_slug, "cost=0.5", 1).await?;
    let r = report(stack, flows, [5, 3], [3, 4]).await?;
    let row = row(&r, per_imp);
    assert_eq!(row["cost"], "0.51", "{row}");
    assert_eq!(row["cost_source"], "mixed", "{row}");
    Ok(())
}

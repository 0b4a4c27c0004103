//! Payout beside revenue on the real stack (docs/caps.md): a flow goal and an offer goal
//! with an affiliate payout apart from their revenue, and a goal without one (whose payout
//! is the revenue). The outbound postback's `{payout}` is the affiliate's payout and
//! `{revenue}` the advertiser's revenue; reports show both, summed exactly, from the
//! rollup and from the raw conversions (the `over_cap` filter reads those).

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use traffsure_core::parse_micros;
use traffsure_tests::{
    click_hash_of, eventually, first_click, record_requests, Requests, Stack, StackOptions,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payout_and_revenue_apart_in_postbacks_and_reports() -> anyhow::Result<()> {
    let (port, received) = record_requests()?;
    let stack = Stack::start_with(StackOptions::default().env(
        "postback-dispatcher",
        "TRAFFSURE__OUTBOUND__ALLOW_PRIVATE_TARGETS",
        "true",
    ))
    .await?;
    let result = run(&stack, port, received).await;
    stack.print_failure(&result);
    result
}

fn money(value: &Value) -> i64 {
    value
        .as_str()
        .and_then(|v| parse_micros(v).ok())
        .unwrap_or(-1)
}

async fn run(stack: &Stack, port: u16, received: Requests) -> anyhow::Result<()> {
    // The offer's `sale` pays 30.00 and the affiliate 12.00.
    let offer = stack
        .api_expect(
            Method::POST,
            "/api/v1/offers",
            Some(
                json!({"name": "Offer", "url": "https://offer.test/?c={click}",
                        "goals": [{"key": "sale", "payout": "30", "affiliate_payout": "12"}]}),
            ),
            201,
        )
        .await?;
    anyhow::ensure!(offer["goals"][0]["affiliate_payout"] == "12", "{offer}");
    let receiver = format!("http://127.0.0.1:{port}/pb?c={{click}}&r={{revenue}}&p={{payout}}");
    // The flow's `lead` pays 5.00 and the affiliate 1.50; its `install` sets no payout.
    let flow = stack
        .create_flow(json!({
            "name": "Payouts",
            "path": {"offers": [{"offer_id": offer["id"]}]},
            "goals": [
                {"key": "sale"},
                {"key": "lead", "payout": "5", "affiliate_payout": "1.50"},
                {"key": "install"},
            ],
            "outbound_postbacks": [{"url": receiver, "on_status": "any"}],
        }))
        .await?;
    anyhow::ensure!(flow["goals"][1]["affiliate_payout"] == "1.5", "{flow}");
    let flow_id = flow["id"].as_u64().unwrap_or_default();
    let track = stack.url("click-ingest", &format!("/c/{flow_id}"));
    first_click(stack, &track).await?;

    // (goal, revenue sent, revenue expected, payout expected)
    let cases: [(&str, Option<&str>, i64, i64); 5] = [
        ("sale", None, 30_000_000, 12_000_000),
        ("sale", Some("50"), 50_000_000, 12_000_000),
        ("lead", None, 5_000_000, 1_500_000),
        ("install", Some("7.25"), 7_250_000, 7_250_000),
        ("install", None, 0, 0),
    ];
    let mut hashes = Vec::new();
    for (goal, revenue, _, _) in cases {
        let response = stack.http.get(&track).send().await?;
        let hash = click_hash_of(response.headers()["location"].to_str()?);
        let mut url = stack.url(
            "postback-ingest",
            &format!("/postback?click={hash}&goal={goal}"),
        );
        if let Some(revenue) = revenue {
            url.push_str(&format!("&revenue={revenue}"));
        }
        let answer = stack.http.get(&url).send().await?;
        anyhow::ensure!(answer.status() == 200, "{url}: {}", answer.status());
        hashes.push(hash);
    }

    // The outbound postbacks: {revenue} and {payout} apart.
    let got = eventually(Duration::from_secs(30), || async {
        let got: Vec<(String, String, String)> = received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|r| {
                let q = traffsure_tests::query_of(&format!("x?{}", r.query));
                let field = |k: &str| q.get(k).cloned().unwrap_or_default();
                (field("c"), field("r"), field("p"))
            })
            .collect();
        Ok((got.len() >= cases.len()).then_some(got))
    })
    .await?;
    for (hash, (goal, _, revenue, payout)) in hashes.iter().zip(cases) {
        let (_, r, p) = got
            .iter()
            .find(|(c, _, _)| c == hash)
            .ok_or_else(|| anyhow::anyhow!("no postback for the {goal} of {hash}"))?;
        assert_eq!(
            (parse_micros(r)?, parse_micros(p)?),
            (revenue, payout),
            "{goal}: revenue and payout"
        );
    }

    // The stored conversions and the reports, from the rollup and from the raw table.
    let revenue: i64 = cases.iter().map(|c| c.2).sum();
    let payout: i64 = cases.iter().map(|c| c.3).sum();
    for filter in ["", "&over_cap=false"] {
        let path = format!("/api/v1/reports?group_by=flow&flow={flow_id}{filter}");
        let row = eventually(Duration::from_secs(30), || async {
            let report = stack.api_expect(Method::GET, &path, None, 200).await?;
            let row = report["rows"][0].clone();
            Ok((row["approved"] == json!(cases.len())
                && money(&row["revenue"]) == revenue
                && money(&row["payout"]) == payout)
                .then_some(row))
        })
        .await;
        let row = match row {
            Ok(row) => row,
            Err(error) => {
                let report = stack.api_expect(Method::GET, &path, None, 200).await?;
                anyhow::bail!("{path}: {error}: {report}");
            }
        };
        assert_eq!(
            money(&row["payout"]),
            12_000_000 * 2 + 1_500_000 + 7_250_000
        );
    }
    let stored = stack
        .clickhouse(&format!(
            "SELECT sum(payout_micros), sum(revenue_micros) FROM conversions WHERE flow_id = {flow_id} FORMAT TSV"
        ))
        .await?;
    assert_eq!(stored.trim(), format!("{payout}\t{revenue}"));
    // The conversions list shows each one's payout beside its revenue.
    let list = stack
        .api_expect(
            Method::GET,
            &format!("/api/v1/conversions?flow={flow_id}&over_cap=false"),
            None,
            200,
        )
        .await?;
    let listed: i64 = list["items"]
        .as_array()
        .map(|items| items.iter().map(|i| money(&i["payout"])).sum())
        .unwrap_or(-1);
    assert_eq!(listed, payout, "{list}");
    // Over the cap filter: no conversion here is.
    let over = stack
        .api_expect(
            Method::GET,
            &format!("/api/v1/reports?group_by=flow&flow={flow_id}&over_cap=true"),
            None,
            200,
        )
        .await?;
    assert!(
        over["rows"]
            .as_array()
            .is_none_or(|rows| rows.iter().all(|r| r["approved"] == 0)),
        "{over}"
    );
    Ok(())
}

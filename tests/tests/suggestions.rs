//! `GET /api/v1/suggestions`: the values of a rule field seen in recent clicks, most
//! clicked first, for one flow or every flow, filtered by text and limited; bad
//! parameters are 422s naming them. Clicks go through the real click-ingest (addresses
//! through the trusted proxy's X-Forwarded-For, GeoIP countries) and the sink.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use traffsure_tests::{eventually, geoip_file, Stack, StackOptions};

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
const FIREFOX: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Gecko/20100101 Firefox/115.0";
/// Ulm, Germany.
const ULM: &str = "62.157.140.133";
/// London, United Kingdom.
const LONDON: &str = "81.2.69.160";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggestions_are_the_values_of_recent_clicks() -> anyhow::Result<()> {
    let edge = "click-ingest";
    let stack = Stack::start_with(
        StackOptions::default()
            .services(&[edge, "sink", "reporting-api"])
            .env(edge, "TRAFFSURE__CLIENT_IP__TRUSTED_PROXIES", "127.0.0.1")
            .env(
                edge,
                "TRAFFSURE__GEOIP__DATABASE",
                geoip_file("country.mmdb")?,
            ),
    )
    .await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

/// Sends one click to `slug` from `ip` with `user_agent` and the query `query`.
async fn click(
    stack: &Stack,
    slug: &str,
    ip: &str,
    user_agent: &str,
    query: &str,
) -> anyhow::Result<()> {
    let url = stack.url("click-ingest", &format!("/c/{slug}?{query}"));
    let response = stack
        .http
        .get(url)
        .header("x-forwarded-for", ip)
        .header("user-agent", user_agent)
        .send()
        .await?;
    anyhow::ensure!(response.status() == 302, "{slug}: {}", response.status());
    Ok(())
}

async fn suggestions(stack: &Stack, query: &str) -> anyhow::Result<(u16, Value)> {
    stack
        .api_call(Method::GET, &format!("/api/v1/suggestions?{query}"), None)
        .await
}

/// The `values` of an answer as (value, clicks) pairs.
fn pairs(answer: &Value) -> Vec<(String, u64)> {
    answer["values"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            (
                v["value"].as_str().unwrap_or_default().to_string(),
                v["clicks"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let slug = "suggest-main";
    let main = stack
        .create_flow(json!({"name": "Suggest", "slug": slug,
            "destination_url": "https://offer.example/?c={click}"}))
        .await?;
    stack
        .create_flow(json!({"name": "Other", "slug": "suggest-other",
            "destination_url": "https://other.example/?c={click}"}))
        .await?;
    // click-ingest learns the flows from Kafka.
    eventually(Duration::from_secs(20), || async {
        let a = stack
            .http
            .get(stack.url("click-ingest", &format!("/c/{slug}")))
            .send()
            .await?;
        let b = stack
            .http
            .get(stack.url("click-ingest", "/c/suggest-other"))
            .send()
            .await?;
        Ok((a.status() == 302 && b.status() == 302).then_some(()))
    })
    .await?;
    // The probes above came from loopback without a user agent: no country, no sub1.
    for _ in 0..3 {
        click(stack, slug, ULM, IPHONE, "source=push&sub1=Zone-7").await?;
    }
    click(stack, slug, LONDON, FIREFOX, "source=native&sub1=zone-9").await?;
    click(
        stack,
        "suggest-other",
        ULM,
        FIREFOX,
        "source=only-other&sub1=x",
    )
    .await?;

    let flow_id = main["id"].as_u64().unwrap_or_default();
    let countries = eventually(Duration::from_secs(30), || async {
        let (status, answer) = suggestions(stack, &format!("field=country&flow={slug}")).await?;
        anyhow::ensure!(status == 200, "{answer}");
        let got = pairs(&answer);
        Ok((got.iter().map(|(_, n)| n).sum::<u64>() == 4).then_some(answer))
    })
    .await?;
    // Most clicked first; the empty country of the loopback probe is left out.
    assert_eq!(
        pairs(&countries),
        [("DE".into(), 3), ("GB".into(), 1)],
        "{countries}"
    );
    assert_eq!(countries["field"], "country");
    assert_eq!(countries["flow"], flow_id);
    assert_eq!(countries["days"], 7);

    // The words rule conditions take; the probes' empty user agent is "other".
    let known = |answer: &Value| -> Vec<(String, u64)> {
        pairs(answer)
            .into_iter()
            .filter(|(v, _)| v != "other")
            .collect()
    };
    let (_, os) = suggestions(stack, &format!("field=os&flow={flow_id}")).await?;
    assert_eq!(
        known(&os),
        [("ios".into(), 3), ("windows".into(), 1)],
        "{os}"
    );
    let (_, browsers) = suggestions(stack, &format!("field=browser&flow={slug}")).await?;
    assert_eq!(
        known(&browsers),
        [("safari".into(), 3), ("firefox".into(), 1)],
        "{browsers}"
    );
    let (_, devices) = suggestions(stack, &format!("field=device&flow={slug}")).await?;
    assert_eq!(
        known(&devices),
        [("mobile".into(), 3), ("desktop".into(), 1)],
        "{devices}"
    );
    let (_, sub1) = suggestions(stack, &format!("field=sub1&flow={slug}")).await?;
    assert_eq!(pairs(&sub1), [("Zone-7".into(), 3), ("zone-9".into(), 1)]);
    // Text filters in any case; the limit cuts the least clicked.
    let (_, zone9) = suggestions(stack, &format!("field=sub1&flow={slug}&q=ONE-9")).await?;
    assert_eq!(pairs(&zone9), [("zone-9".into(), 1)]);
    let (_, top) = suggestions(stack, &format!("field=source&flow={slug}&limit=1")).await?;
    assert_eq!(pairs(&top), [("push".into(), 3)]);
    // Without a flow: every flow's clicks.
    let (_, every) = suggestions(stack, "field=source").await?;
    let every = pairs(&every);
    assert!(
        every.contains(&("only-other".into(), 1)) && every.contains(&("push".into(), 3)),
        "{every:?}"
    );
    let (_, other) = suggestions(stack, "field=source&flow=suggest-other").await?;
    assert_eq!(pairs(&other), [("only-other".into(), 1)]);

    // Refusals name the parameter.
    for (query, field) in [
        ("", "field"),
        ("field=colour", "field"),
        ("field=country&days=0", "days"),
        ("field=country&days=91", "days"),
        ("field=country&limit=1000", "limit"),
        ("field=country&flow=no-such-flow", "flow"),
        ("field=country&since=1", "since"),
    ] {
        let (status, answer) = suggestions(stack, query).await?;
        assert_eq!(status, 422, "{query}: {answer}");
        assert_eq!(answer["field"], field, "{query}: {answer}");
    }
    Ok(())
}

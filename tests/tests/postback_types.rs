//! Outbound postback types end to end: a `click` postback reaches a local receiver once
//! for a recorded click, with the click's macros (sub, country, external id, impression);
//! an `impression` postback once for an impression pixel request, with its own; an
//! `event` postback fires for an upsell (a conversion after the click's first) and not
//! for the first conversion, while a `conversion` postback fires for both. The flow API
//! refuses a macro the type does not have, an unknown type and goals on a click postback
//! (422 naming the field), and the outbound log shows each attempt's type.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use traffsure_tests::{
    click_hash_of, eventually, first_click, stack_with_receiver, Requests, Stack,
};

mod postback_support;
use postback_support::{flow_id, get as postback};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_impression_and_event_postbacks_fire_once_with_their_macros() -> anyhow::Result<()> {
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

async fn refused(stack: &Stack, outbound: Value) -> anyhow::Result<(u16, Value)> {
    let response = stack
        .api(Method::POST, "/api/v1/flows")
        .json(&json!({
            "name": "Refused", "slug": format!("refused-{}", stack.id),
            "destination_url": "https://offer.example/land?c={click}",
            "goals": [{"key": "sale"}],
            "outbound_postbacks": [outbound],
        }))
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}

async fn run(stack: &Stack, port: u16, received: &Requests) -> anyhow::Result<()> {
    let receiver = format!("http://127.0.0.1:{port}");

    // A macro the type lacks, an unknown type, goals on a click postback: 422 naming each.
    let (status, body) = refused(
        stack,
        json!({"type": "click", "url": "https://s.test/?r={revenue}"}),
    )
    .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "outbound_postbacks[0].url", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("{revenue}"),
        "{body}"
    );
    let (status, body) = refused(
        stack,
        json!({"type": "impression", "url": "https://s.test/?c={click}"}),
    )
    .await?;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("outbound_postbacks[0].url"))
    );
    let (status, body) = refused(stack, json!({"type": "view", "url": "https://s.test/"})).await?;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("outbound_postbacks[0].type"))
    );
    let (status, body) = refused(
        stack,
        json!({"type": "click", "url": "https://s.test/", "goals": ["sale"]}),
    )
    .await?;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("outbound_postbacks[0].goals"))
    );

    let slug = format!("types-{}", stack.id);
    let flow = stack
        .create_flow(json!({
            "name": "Types",
            "slug": slug,
            "destination_url": "https://offer.example/land?c={click}",
            "goals": [{"key": "sale", "payout": "10"}, {"key": "upsell", "payout": "3"}],
            "outbound_postbacks": [
                {"id": "clk", "type": "click",
                 "url": format!("{receiver}/click?c={{click}}&s1={{sub1}}&cc={{country}}&ext={{external_id}}&imp={{impression}}&f={{flow}}")},
                {"id": "imp", "type": "impression",
                 "url": format!("{receiver}/impression?i={{impression}}&s2={{sub2}}&src={{source}}&cost={{cost}}")},
                {"id": "ev", "type": "event", "goals": ["upsell"], "on_status": "any",
                 "url": format!("{receiver}/event?c={{click}}&g={{goal}}&r={{revenue}}")},
                {"id": "conv", "on_status": "any",
                 "url": format!("{receiver}/conversion?c={{click}}&g={{goal}}")}
            ]
        }))
        .await?;
    let flow = flow_id(&flow);
    let stored: Value = stack
        .api(Method::GET, &format!("/api/v1/flows/{flow}"))
        .send()
        .await?
        .json()
        .await?;
    let types: Vec<&str> = stored["outbound_postbacks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| o["type"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(types, ["click", "impression", "event", "conversion"]);

    let track = stack.url("click-ingest", &format!("/c/{slug}"));
    first_click(stack, &track).await?;

    // An impression, then a click that names it.
    let pixel = stack
        .http
        .get(stack.url(
            "click-ingest",
            &format!("/i/{slug}?format=json&sub2=banner&source=net&cost=0.002"),
        ))
        .send()
        .await?;
    assert_eq!(pixel.status(), 200);
    let answer: Value = pixel.json().await?;
    let impression = answer["impression"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(impression.starts_with('i'), "{answer}");
    let click = stack
        .http
        .get(format!(
            "{track}?sub1=zone7&external_id=EXT9&imp={impression}"
        ))
        .send()
        .await?;
    assert_eq!(click.status(), 302);
    let hash = click_hash_of(click.headers()["location"].to_str()?);
    assert!(!hash.is_empty());

    let click_query = |country: &str| {
        format!("c={hash}&s1=zone7&cc={country}&ext=EXT9&imp={impression}&f={flow}")
    };
    let mine = |path: &str, needle: &str| {
        hits(received, path)
            .into_iter()
            .filter(|q| q.contains(needle))
            .collect::<Vec<_>>()
    };
    let got = eventually(Duration::from_secs(60), || async {
        let clicks = mine("/click", &format!("c={hash}&"));
        let impressions = mine("/impression", &format!("i={impression}&"));
        Ok((!clicks.is_empty() && !impressions.is_empty()).then_some((clicks, impressions)))
    })
    .await?;
    // The receiver's address has no country unless GeoIP knows it: accept what the click
    // says, but exactly its macros.
    let country = got.0[0]
        .split('&')
        .find_map(|p| p.strip_prefix("cc="))
        .unwrap_or_default()
        .to_string();
    assert_eq!(got.0, vec![click_query(&country)]);
    assert_eq!(
        got.1,
        vec![format!("i={impression}&s2=banner&src=net&cost=0.002")]
    );

    // The first conversion fires the conversion postback only; the upsell both.
    let first = postback(stack, &format!("/postback?click={hash}&goal=sale")).await?;
    assert_eq!(first.status, 200, "{}", first.message);
    eventually(Duration::from_secs(60), || async {
        Ok((!mine("/conversion", &format!("c={hash}&g=sale")).is_empty()).then_some(()))
    })
    .await?;
    let upsell = postback(
        stack,
        &format!("/postback?click={hash}&goal=upsell&revenue=4.5"),
    )
    .await?;
    assert_eq!(upsell.status, 200, "{}", upsell.message);
    eventually(Duration::from_secs(60), || async {
        Ok((mine("/event", &format!("c={hash}&")).len() == 1
            && mine("/conversion", &format!("c={hash}&g=upsell")).len() == 1)
            .then_some(()))
    })
    .await?;
    // Nothing more comes: each once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        mine("/event", &format!("c={hash}&")),
        vec![format!("c={hash}&g=upsell&r=4.5")]
    );
    assert_eq!(mine("/click", &format!("c={hash}&")).len(), 1);
    assert_eq!(mine("/impression", &format!("i={impression}&")).len(), 1);
    assert_eq!(mine("/conversion", &format!("c={hash}&")).len(), 2);

    // The outbound log: each attempt with its type, filterable by it.
    let logged = eventually(Duration::from_secs(30), || async {
        let response = stack
            .api(
                Method::GET,
                &format!("/api/v1/outbound-postbacks?flow={flow}&limit=500"),
            )
            .send()
            .await?;
        let body: Value = response.json().await?;
        let items = body["items"].as_array().cloned().unwrap_or_default();
        let ours: Vec<(String, String)> = items
            .iter()
            .filter(|r| {
                r["click_hash"] == hash.as_str()
                    || r["url"].as_str().unwrap_or_default().contains(&impression)
            })
            .map(|r| {
                (
                    r["outbound_id"].as_str().unwrap_or_default().to_string(),
                    r["postback_type"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        Ok((ours.len() == 5).then_some(ours))
    })
    .await?;
    let mut logged = logged;
    logged.sort();
    assert_eq!(
        logged,
        [
            ("clk", "click"),
            ("conv", "conversion"),
            ("conv", "conversion"),
            ("ev", "event"),
            ("imp", "impression"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let filtered: Value = stack
        .api(
            Method::GET,
            &format!("/api/v1/outbound-postbacks?flow={flow}&postback_type=event"),
        )
        .send()
        .await?
        .json()
        .await?;
    let events = filtered["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 1, "{filtered}");
    assert_eq!(events[0]["goal"], "upsell");
    Ok(())
}

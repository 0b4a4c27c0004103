//! Double meta refresh, followed hop by hop on the real edge: the tracking link answers a
//! page refreshing to a second, different tracker URL, which refreshes to the
//! destination; neither page lets a referrer through, the click is published once, and
//! a tampered second hop is refused.

use std::time::Duration;

use serde_json::json;
use traffsure_tests::kafka_topic::{expect_clicks_once, publish_flow};
use traffsure_tests::{click_hash_of, eventually, Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_meta_refresh_takes_two_hops_and_counts_once() -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions::default().services(&["click-ingest"])).await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

/// The URL of a page's `<meta http-equiv="refresh" content="0;url=…">`, unescaped.
fn refresh_url(page: &str) -> anyhow::Result<String> {
    let start = page
        .find("content=\"0;url=")
        .map(|i| i + "content=\"0;url=".len())
        .ok_or_else(|| anyhow::anyhow!("no meta refresh in {page}"))?;
    let end = page[start..]
        .find('"')
        .ok_or_else(|| anyhow::anyhow!("unterminated refresh in {page}"))?;
    Ok(page[start..start + end]
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&"))
}

/// Fetches a page of the edge, checking it is a refresh page that sends no referrer.
async fn hop(stack: &Stack, url: &str) -> anyhow::Result<String> {
    refresh_of(url, stack.http.get(url).send().await?).await
}

async fn refresh_of(url: &str, response: reqwest::Response) -> anyhow::Result<String> {
    anyhow::ensure!(
        response.status() == 200,
        "{url} answered {}",
        response.status()
    );
    assert_eq!(
        response.headers()["referrer-policy"],
        "no-referrer",
        "{url}"
    );
    assert_eq!(response.headers()["cache-control"], "no-store", "{url}");
    let page = response.text().await?;
    assert!(
        page.contains(r#"<meta name="referrer" content="no-referrer">"#),
        "{page}"
    );
    refresh_url(&page)
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let slug = format!("dmr-{}", stack.id);
    publish_flow(
        &stack.options.kafka_brokers,
        &format!("{}flows", stack.topic_prefix),
        1,
        json!({"name": "Double", "slug": slug, "redirect_mode": "double_meta_refresh",
               "destination_url": "https://offer.test/land?c={click}&s={sub1}"}),
        None,
    )
    .await?;
    let tracking = stack.url("click-ingest", &format!("/c/{slug}?sub1=a%26b"));
    // Hop 1, once the edge knows the flow (an unknown flow's 404 records no click): the
    // tracking link refreshes to a second URL of the tracker, not to the offer.
    let first = eventually(Duration::from_secs(20), || async {
        let response = stack.http.get(&tracking).send().await?;
        Ok((response.status() != 404).then_some(response))
    })
    .await?;
    let second = refresh_of(&tracking, first).await?;
    assert!(second.starts_with("/r/"), "{second}");
    let second_url = stack.url("click-ingest", &second);
    assert_ne!(second_url.split('?').next(), tracking.split('?').next());
    assert!(
        !second.contains("offer.test"),
        "the destination shows in {second}"
    );

    // Hop 2: that URL refreshes to the destination, with the click and its parameters.
    let destination = hop(stack, &second_url).await?;
    assert!(
        destination.starts_with("https://offer.test/land?c="),
        "{destination}"
    );
    assert!(destination.ends_with("&s=a%26b"), "{destination}");
    let click_hash = click_hash_of(&destination);
    assert_eq!(click_hash.len(), 40, "{destination}");
    // A second hop fetched again (a reload) leads to the same place and records nothing.
    assert_eq!(hop(stack, &second_url).await?, destination);

    // A tampered or made-up second hop is refused.
    let mut tampered = second.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered)?;
    let refused = stack
        .http
        .get(stack.url("click-ingest", &tampered))
        .send()
        .await?;
    assert_eq!(refused.status(), 404);
    let made_up = stack
        .http
        .get(stack.url("click-ingest", "/r/aHR0cHM6Ly9ldmlsLnRlc3Qv"))
        .send()
        .await?;
    assert_eq!(made_up.status(), 404);

    // The click was published once, by the first hop alone.
    let read = expect_clicks_once(
        &stack.options.kafka_brokers,
        &format!("{}clicks", stack.topic_prefix),
        &[click_hash],
        Duration::from_secs(20),
        Duration::from_secs(3),
    )
    .await?;
    assert_eq!(read, 1, "events on the clicks topic");
    Ok(())
}

//! Browser-side conversions in a real headless Chromium: a visitor follows a tracking
//! link (click-ingest sets the visitor cookie), lands on a page carrying the 1×1 GIF
//! pixel, the iframe and the JavaScript tag, and each converts that visitor's click
//! from the cookie alone. Checked on the `clicks`, `postbacks` and `postback-log` topics.

mod postback_support;

use std::process::Stdio;
use std::time::Duration;

use postback_support::{clicks, flow_id, postback_log, postbacks};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use traffsure_events::ConversionStatus;
use traffsure_tests::{Stack, StackOptions};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Serves `page` for every request, on 127.0.0.1 (same site as the tracker's ports).
async fn landing_server(page: String) -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let page = page.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let (status, body) = if head.starts_with(b"GET /land") {
                    ("200 OK", page)
                } else {
                    ("404 Not Found", String::new())
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pixel_iframe_and_js_tag_convert_from_the_visitor_cookie() -> anyhow::Result<()> {
    if !std::path::Path::new(CHROMIUM).exists() {
        anyhow::bail!("{CHROMIUM} is missing: run deploy/local/install.sh");
    }
    let stack = Stack::start_with(StackOptions::default().services(&[
        "sink",
        "reporting-api",
        "click-ingest",
        "postback-ingest",
    ]))
    .await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let pb = stack.services["postback-ingest"].base_url.clone();
    let slug = format!("browser-{}", stack.id);
    let page = format!(
        r#"<!doctype html><html><head><meta charset="utf-8">
<script src="{pb}/ts.js?flow={slug}"></script></head><body>
<div id="pixel">none</div><div id="tracked">none</div>
<img alt="" src="{pb}/pixel.gif?flow={slug}&goal=lead&uid=PX-1"
  onload="document.getElementById('pixel').textContent = 'pixel:' + this.naturalWidth + 'x' + this.naturalHeight">
<iframe src="{pb}/iframe?flow={slug}&goal=signup&uid=IF-1"></iframe>
<script>
traffsure.track("conversion", {{goal: "sale", revenue: "3.50", currency: "EUR", uid: "JS-1"}})
  .then(function (ok) {{ document.getElementById("tracked").textContent = "tracked:" + ok; }});
</script></body></html>"#
    );
    let landing = landing_server(page).await?;
    let flow = stack
        .create_flow(json!({
            "name": "Browser", "slug": slug,
            "destination_url": format!("http://127.0.0.1:{landing}/land?c={{click}}"),
        }))
        .await?;
    let flow_id = flow_id(&flow);
    let tracking = stack.url("click-ingest", &format!("/c/{slug}?sub_id=browser"));
    // click-ingest learns the flow from Kafka: wait until the link redirects.
    traffsure_tests::eventually(Duration::from_secs(20), || async {
        let r = stack.http.get(&tracking).send().await?;
        Ok((r.status() == 302).then_some(()))
    })
    .await?;
    let mut click_events = clicks(stack).await?;
    let mut log = postback_log(stack).await?;
    let mut events = postbacks(stack).await?;

    let profile = std::env::temp_dir().join(format!("traffsure-chromium-{}", stack.id));
    let run = tokio::process::Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--virtual-time-budget=15000")
        .arg("--dump-dom")
        .arg(&tracking)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run).await??;
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        dom.contains("pixel:1x1"),
        "pixel not loaded as a 1x1 image:\n{dom}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        dom.contains("tracked:true"),
        "JS tag did not finish:\n{dom}"
    );

    // The browser's click: made through the tracking link, with the visitor ID.
    let browser_click = click_events
        .wait_matching(1, |c| {
            c.flow_id == flow_id && c.user_agent.contains("Chrom")
        })
        .await?
        .remove(0);
    let vid = browser_click.visitor_id.clone();
    assert_eq!(vid.len(), 32, "{browser_click:?}");

    // Three conversions, each by the cookie's visitor ID in the flow.
    let mut converted = events
        .wait_matching(3, |p| p.flow_id == flow_id && !p.visitor_id.is_empty())
        .await?;
    converted.sort_by(|a, b| a.uid.cmp(&b.uid));
    let summary: Vec<(&str, &str, &str, i64, &str)> = converted
        .iter()
        .map(|p| {
            (
                p.uid.as_str(),
                p.goal.as_str(),
                p.visitor_id.as_str(),
                p.revenue_micros,
                p.currency.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("IF-1", "signup", vid.as_str(), 0, ""),
            ("JS-1", "sale", vid.as_str(), 3_500_000, "EUR"),
            ("PX-1", "lead", vid.as_str(), 0, ""),
        ]
    );
    assert!(converted
        .iter()
        .all(|p| p.status() == ConversionStatus::Approved));

    // The log holds each request, its path and the visitor ID read from the cookie.
    let entries = log.wait_matching(3, |e| e.flow_id == flow_id).await?;
    let mut paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["/iframe", "/pixel.gif", "/pixel.gif"]);
    for entry in &entries {
        assert_eq!(
            (entry.response_status, entry.reason.as_str()),
            (200, "accepted")
        );
        assert!(
            entry
                .params
                .iter()
                .any(|p| p.name == "cookie:vid" && p.value == vid),
            "{entry:?}"
        );
        assert!(entry
            .params
            .iter()
            .any(|p| p.name == "flow" && p.value == slug));
    }
    Ok(())
}

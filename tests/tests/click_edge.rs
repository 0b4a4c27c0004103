//! The tracking edge on the real Kafka: every macro, every redirect mode, each rule kind,
//! weighted rotation, bots, GeoIP for IPv4 and IPv6 behind a trusted proxy, inactive and
//! unknown flows, bad input, the visitor cookie, click hashes and the click events.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::json;
use traffsure_core::ClickHashKeys;
use traffsure_events::Click;
use traffsure_tests::kafka_topic::{publish_flow, read_clicks};
use traffsure_tests::{eventually, query_of, Stack, StackOptions, CLICK_HASH_KEYS};

const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
const FIREFOX_LINUX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// Addresses the GeoIP database places in the United States and in Germany.
const US_V4: &str = "8.8.8.8";
const US_V6: &str = "2001:4860:4860::8888";
const DE_V4: &str = "85.214.132.117";

struct Edge<'a> {
    stack: &'a Stack,
}

impl Edge<'_> {
    async fn get(
        &self,
        path: &str,
        ip: &str,
        ua: Option<&str>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_str(ip)?);
        if let Some(ua) = ua {
            headers.insert("user-agent", HeaderValue::from_str(ua)?);
        }
        Ok(self
            .stack
            .http
            .get(self.stack.url("click-ingest", path))
            .headers(headers)
            .send()
            .await?)
    }

    async fn location(&self, path: &str, ip: &str, ua: Option<&str>) -> anyhow::Result<String> {
        let response = self.get(path, ip, ua).await?;
        anyhow::ensure!(
            response.status() == 302,
            "{path} answered {}",
            response.status()
        );
        Ok(response.headers()["location"].to_str()?.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracking_edge_end_to_end() -> anyhow::Result<()> {
    let geoip =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.local/geoip/country.mmdb");
    anyhow::ensure!(
        geoip.exists(),
        "{} is missing: run deploy/local/install.sh",
        geoip.display()
    );
    let stack = Stack::start_with(
        StackOptions::default()
            .services(&["click-ingest"])
            .env(
                "click-ingest",
                "TRAFFSURE__GEOIP__DATABASE",
                geoip.display().to_string(),
            )
            .env(
                "click-ingest",
                "TRAFFSURE__CLIENT_IP__TRUSTED_PROXIES",
                "127.0.0.1",
            )
            .env(
                "click-ingest",
                "TRAFFSURE__BOTS__IPS",
                "203.0.113.0/24, 2001:db8:bad::/48",
            )
            .env(
                "click-ingest",
                "TRAFFSURE__BOTS__USER_AGENTS",
                "AcmeScanner",
            )
            .env("click-ingest", "TRAFFSURE__BOTS__EMPTY_USER_AGENT", "true"),
    )
    .await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let edge = Edge { stack };
    let id = &stack.id;
    let flows_topic = format!("{}flows", stack.topic_prefix);
    let brokers = stack.options.kafka_brokers.clone();
    let mut next_id = 0u32;
    let mut create_flow = |spec: serde_json::Value| {
        next_id += 1;
        let (brokers, topic, flow_id) = (brokers.clone(), flows_topic.clone(), next_id);
        async move { publish_flow(&brokers, &topic, flow_id, spec, None).await }
    };
    let all_macros = "https://offer.test/l?c={click}&f={flow}&s={sub_id}&src={source}\
        &s1={sub1}&s2={sub2}&s3={sub3}&s4={sub4}&s5={sub5}&s6={sub6}&s7={sub7}&s8={sub8}\
        &s9={sub9}&s10={sub10}&co={country}&d={device}&o={os}&b={browser}&cost={cost}&ts={ts}&v={visitor}";
    let macros_flow = create_flow(
        json!({"name": "Macros", "slug": format!("m-{id}"), "destination_url": all_macros}),
    )
    .await?;
    let rules_flow = create_flow(json!({
            "name": "Rules", "slug": format!("r-{id}"),
            "destination_url": "https://fallback.test/",
            "destinations": [{"url": "https://a.test/?c={click}", "weight": 3}, {"url": "https://b.test/?c={click}", "weight": 1}],
            "rules": [
                {"name": "office", "conditions": [{"field": "ip", "values": ["198.51.100.0/24", "2001:db8:1::/48"]}],
                 "destinations": [{"url": "https://office.test/"}]},
                {"name": "de mobile", "conditions": [{"field": "country", "values": ["de"]}, {"field": "device", "values": ["mobile"]}],
                 "destinations": [{"url": "https://de-mobile.test/"}]},
                {"name": "ios", "conditions": [{"field": "os", "values": ["iOS"]}],
                 "destinations": [{"url": "https://ios.test/"}]},
                {"name": "firefox", "conditions": [{"field": "browser", "values": ["firefox"]}],
                 "destinations": [{"url": "https://firefox.test/"}]},
                {"name": "push not US", "conditions": [{"field": "sub2", "values": ["push"]}, {"field": "country", "op": "not_in", "values": ["US"]}],
                 "destinations": [{"url": "https://push.test/"}]},
                {"name": "source and sub_id", "conditions": [{"field": "source", "values": ["tiktok"]}, {"field": "sub_id", "values": ["vip"]}],
                 "destinations": [{"url": "https://vip-a.test/", "weight": 1}, {"url": "https://vip-b.test/", "weight": 1}]}
            ],
            "bot_url": "https://bots.test/?f={flow}"
        }))
        .await?;
    let mut mode_flows = Vec::new();
    for mode in ["302", "307", "meta_refresh", "double_meta_refresh"] {
        let flow = create_flow(
            json!({"name": mode, "slug": format!("{}-{id}", mode.replace('_', "-")),
                "destination_url": "https://mode.test/?a=1&c={click}", "redirect_mode": mode}),
        )
        .await?;
        mode_flows.push((mode, flow.slug.clone()));
    }
    let paused = create_flow(json!({"name": "Paused", "slug": format!("p-{id}"), "status": "paused",
            "destination_url": "https://never.test/", "inactive_url": "https://paused.test/?s={sub_id}"}))
        .await?;
    let archived = create_flow(
        json!({"name": "Archived", "slug": format!("a-{id}"), "status": "archived",
            "destination_url": "https://never.test/"}),
    )
    .await?;

    let macros_path = format!("/c/m-{id}");
    let rules_path = format!("/c/r-{id}");
    // New flows take effect without a restart.
    let started = Instant::now();
    eventually(Duration::from_secs(15), || async {
        Ok((edge
            .get(&rules_path, US_V4, Some(CHROME_WINDOWS))
            .await?
            .status()
            == 302)
            .then_some(()))
    })
    .await?;
    eprintln!("flows visible at the edge after {:?}", started.elapsed());

    // Every macro, URL-encoded.
    let keys = ClickHashKeys::parse(CLICK_HASH_KEYS, None)?;
    let location = edge
        .location(
            &format!("{macros_path}?sub_id=a%20b&source=fb%26co&sub1=x%2Fy&sub2=2&sub3=3&sub4=4&sub5=5&sub6=6&sub7=7&sub8=8&sub9=9&sub10=%C3%A9&cost=0.25&gclid=keep"),
            DE_V4,
            Some(SAFARI_IPHONE),
        )
        .await?;
    assert!(
        location.contains("&s=a%20b&src=fb%26co&s1=x%2Fy&"),
        "{location}"
    );
    assert!(location.contains("&s10=%C3%A9&"), "{location}");
    let q = query_of(&location);
    let macros_id = u64::from(macros_flow.id);
    assert_eq!(q["f"], macros_id.to_string());
    for n in 2..=9 {
        assert_eq!(q[&format!("s{n}")], n.to_string());
    }
    assert_eq!(
        (
            q["co"].as_str(),
            q["d"].as_str(),
            q["o"].as_str(),
            q["b"].as_str()
        ),
        ("DE", "mobile", "ios", "safari")
    );
    assert_eq!(q["cost"], "0.25");
    let ts: i64 = q["ts"].parse()?;
    assert!((ts - traffsure_core::now_ms() / 1000).abs() < 60, "{ts}");
    assert_eq!(q["v"].len(), 32);
    // The click hash verifies and carries the flow and the visitor's routing key.
    let info = keys.verify(&q["c"])?;
    assert_eq!(u64::from(info.flow_id), macros_id);
    assert_eq!(
        Some(info.routing_key),
        traffsure_core::visitor::routing_key(&q["v"])
    );
    let macros_click = q["c"].clone();

    // GeoIP for IPv6 behind the trusted proxy, and the IPv4 address of a US visitor.
    let q6 = query_of(
        &edge
            .location(&macros_path, US_V6, Some(FIREFOX_LINUX))
            .await?,
    );
    assert_eq!(
        (
            q6["co"].as_str(),
            q6["d"].as_str(),
            q6["o"].as_str(),
            q6["b"].as_str()
        ),
        ("US", "desktop", "linux", "firefox")
    );
    // No user agent: a redirect, `other` for each field (the bot flag comes from the
    // setting this stack turns on, see the bot checks below).
    let q4 = query_of(&edge.location(&macros_path, US_V4, None).await?);
    assert_eq!(
        (
            q4["co"].as_str(),
            q4["d"].as_str(),
            q4["o"].as_str(),
            q4["b"].as_str()
        ),
        ("US", "other", "other", "other")
    );
    // Garbage cost: still a redirect, cost empty.
    let qc = query_of(
        &edge
            .location(
                &format!("{macros_path}?cost=1e9x"),
                US_V4,
                Some(CHROME_WINDOWS),
            )
            .await?,
    );
    assert_eq!(qc["cost"], "");

    // Rules: each kind, in order; otherwise weighted rotation over the default set.
    let route = |ip: &'static str, ua: &'static str, query: &'static str| {
        let path = format!("{rules_path}{query}");
        let edge = &edge;
        async move {
            let location = edge.location(&path, ip, Some(ua)).await?;
            anyhow::Ok(location.split('?').next().unwrap_or_default().to_string())
        }
    };
    assert_eq!(
        route("198.51.100.7", CHROME_WINDOWS, "").await?,
        "https://office.test/"
    );
    assert_eq!(
        route("2001:db8:1::9", CHROME_WINDOWS, "").await?,
        "https://office.test/"
    );
    assert_eq!(
        route(DE_V4, SAFARI_IPHONE, "").await?,
        "https://de-mobile.test/"
    );
    assert_eq!(route(US_V4, SAFARI_IPHONE, "").await?, "https://ios.test/");
    assert_eq!(
        route(US_V4, FIREFOX_LINUX, "").await?,
        "https://firefox.test/"
    );
    assert_eq!(
        route(DE_V4, CHROME_WINDOWS, "?sub2=PUSH").await?,
        "https://push.test/"
    );
    // The negated condition fails for a US visitor: the default set instead.
    let not_push = route(US_V4, CHROME_WINDOWS, "?sub2=push").await?;
    assert!(
        not_push == "https://a.test/" || not_push == "https://b.test/",
        "{not_push}"
    );
    let vip = route(US_V4, CHROME_WINDOWS, "?source=TikTok&sub_id=vip").await?;
    assert!(
        vip == "https://vip-a.test/" || vip == "https://vip-b.test/",
        "{vip}"
    );
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..200 {
        *counts
            .entry(route(US_V4, CHROME_WINDOWS, "").await?)
            .or_default() += 1;
    }
    let a = counts.get("https://a.test/").copied().unwrap_or_default();
    let b = counts.get("https://b.test/").copied().unwrap_or_default();
    assert_eq!(a + b, 200, "{counts:?}");
    assert!((120..=180).contains(&a), "3:1 rotation gave {counts:?}");

    // Bots: known user agents, configured markers and configured IP blocks go to the bot URL.
    let rules_id = u64::from(rules_flow.id);
    let bot_url = format!("https://bots.test/?f={rules_id}");
    assert_eq!(
        edge.location(&rules_path, US_V4, Some(GOOGLEBOT)).await?,
        bot_url
    );
    assert_eq!(
        edge.location(&rules_path, US_V4, Some("Mozilla/5.0 acmescanner/2"))
            .await?,
        bot_url
    );
    assert_eq!(
        edge.location(&rules_path, "203.0.113.50", Some(CHROME_WINDOWS))
            .await?,
        bot_url
    );
    assert_eq!(
        edge.location(&rules_path, "2001:db8:bad::1", Some(CHROME_WINDOWS))
            .await?,
        bot_url
    );
    assert_eq!(edge.location(&rules_path, US_V4, None).await?, bot_url);

    // Redirect modes.
    for (mode, slug) in &mode_flows {
        let response = edge
            .get(&format!("/c/{slug}"), US_V4, Some(CHROME_WINDOWS))
            .await?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap_or_default().to_string());
        let body = response.text().await?;
        match *mode {
            "302" | "307" => {
                assert_eq!(status.to_string(), *mode);
                let location = location.unwrap_or_default();
                assert!(keys.verify(&query_of(&location)["c"]).is_ok(), "{location}");
            }
            // The second hop of a double refresh is followed in meta_refresh.rs.
            "double_meta_refresh" => {
                assert_eq!(status, 200, "{mode}");
                assert!(location.is_none(), "{mode}");
                assert!(
                    body.contains("http-equiv=\"refresh\" content=\"0;url=/r/"),
                    "{mode}: {body}"
                );
                assert!(body.contains("no-referrer"), "{mode}: {body}");
            }
            _ => {
                assert_eq!(status, 200, "{mode}");
                assert!(location.is_none(), "{mode}");
                assert!(
                    body.contains(
                        "http-equiv=\"refresh\" content=\"0;url=https://mode.test/?a=1&amp;c="
                    ),
                    "{mode}: {body}"
                );
                assert!(!body.contains("no-referrer"), "{mode}: {body}");
            }
        }
    }

    // Paused with an inactive URL, archived without, unknown: no click, never an open redirect.
    assert_eq!(
        edge.location(&format!("/c/p-{id}?sub_id=z"), US_V4, Some(CHROME_WINDOWS))
            .await?,
        "https://paused.test/?s=z"
    );
    let _ = paused;
    assert_eq!(
        edge.get(&format!("/c/a-{id}"), US_V4, Some(CHROME_WINDOWS))
            .await?
            .status(),
        404
    );
    let _ = archived;
    assert_eq!(
        edge.get(
            "/c/no-such-flow?url=https://evil.test/",
            US_V4,
            Some(CHROME_WINDOWS)
        )
        .await?
        .status(),
        404
    );
    assert_eq!(
        edge.get("/c/999999999", US_V4, Some(CHROME_WINDOWS))
            .await?
            .status(),
        404
    );

    // Bad input: a redirect or a clear 4xx, never a crash.
    let long = format!("{macros_path}?sub1={}", "x".repeat(9000));
    let response = edge.get(&long, US_V4, Some(CHROME_WINDOWS)).await?;
    assert_eq!(response.status(), 414);
    assert!(response.text().await?.contains("8192"));
    for odd in [
        "?%FF%FE=%C0%AF&sub1=%",
        "?&&&==&sub1",
        "?sub1=%E2%82",
        "?a=b;c&=&cost=-5",
    ] {
        edge.location(&format!("{macros_path}{odd}"), US_V4, Some(CHROME_WINDOWS))
            .await?;
    }
    assert_eq!(
        edge.get("/c/%FF%FE", US_V4, Some(CHROME_WINDOWS))
            .await?
            .status(),
        404
    );
    // Behind the trusted proxy, a forwarded list counts from the right: an address the
    // client prepended itself is not believed.
    let spoofed = query_of(
        &edge
            .location(
                &macros_path,
                &format!("{DE_V4}, {US_V4}"),
                Some(CHROME_WINDOWS),
            )
            .await?,
    );
    assert_eq!(spoofed["co"], "US");

    // The visitor cookie: first-party, long-lived, SameSite=Lax; Secure behind HTTPS.
    let response = stack
        .http
        .get(stack.url("click-ingest", &macros_path))
        .header("x-forwarded-proto", "https")
        .send()
        .await?;
    let cookie = response.headers()["set-cookie"].to_str()?.to_string();
    assert!(cookie.starts_with("ts_vid="), "{cookie}");
    for part in [
        "SameSite=Lax",
        "HttpOnly",
        "Secure",
        "Path=/",
        "Max-Age=31536000",
    ] {
        assert!(cookie.contains(part), "{part} missing in {cookie}");
    }
    let vid = cookie
        .trim_start_matches("ts_vid=")
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    let again = stack
        .http
        .get(stack.url("click-ingest", &macros_path))
        .header("cookie", format!("ts_vid={vid}"))
        .send()
        .await?;
    assert!(again.headers().get("set-cookie").is_none());
    assert_eq!(query_of(again.headers()["location"].to_str()?)["v"], vid);

    // A changed flow takes effect at the edge within about a second.
    let started = Instant::now();
    publish_flow(
        &stack.options.kafka_brokers,
        &format!("{}flows", stack.topic_prefix),
        macros_flow.id,
        json!({"name": "Macros", "slug": format!("m-{id}"), "destination_url": "https://changed.test/?c={click}"}),
        Some(&macros_flow),
    )
    .await?;
    eventually(Duration::from_secs(10), || async {
        let location = edge
            .location(&macros_path, US_V4, Some(CHROME_WINDOWS))
            .await?;
        Ok(location.starts_with("https://changed.test/").then_some(()))
    })
    .await?;
    let took = started.elapsed();
    eprintln!("flow change visible at the edge after {took:?}");
    assert!(took < Duration::from_secs(3), "flow change took {took:?}");

    // The click events carry what the edge saw.
    let topic = format!("{}clicks", stack.topic_prefix);
    let brokers = stack.options.kafka_brokers.clone();
    let wanted = macros_click.clone();
    let events: Vec<Click> = tokio::task::spawn_blocking(move || {
        read_clicks(
            &brokers,
            &topic,
            Duration::from_secs(30),
            Duration::ZERO,
            |events| {
                events.iter().any(|c| c.click_hash == wanted)
                    && events
                        .iter()
                        .filter(|c| c.is_bot && u64::from(c.flow_id) == rules_id)
                        .count()
                        >= 5
            },
        )
    })
    .await??;
    let click = events
        .iter()
        .find(|c| c.click_hash == macros_click)
        .ok_or_else(|| anyhow::anyhow!("click {macros_click} not in the topic"))?;
    assert_eq!((click.ip.as_str(), click.country.as_str()), (DE_V4, "DE"));
    assert_eq!(
        (
            click.device.as_str(),
            click.os.as_str(),
            click.browser.as_str()
        ),
        ("mobile", "ios", "safari")
    );
    assert_eq!(click.sub_id, "a b");
    assert_eq!(click.source, "fb&co");
    assert_eq!(click.subs[0], "x/y");
    assert_eq!(click.subs[9], "é");
    assert_eq!(click.cost_micros, 250_000);
    assert_eq!(click.extra.get("gclid").map(String::as_str), Some("keep"));
    assert!(click.destination_url.starts_with("https://offer.test/l?c="));
    assert!(!click.is_bot);
    let rule_bots: Vec<&Click> = events
        .iter()
        .filter(|c| c.is_bot && u64::from(c.flow_id) == rules_id)
        .collect();
    assert_eq!(rule_bots.len(), 5, "bot clicks of the rules flow");
    assert!(rule_bots.iter().any(|c| c.ip == "203.0.113.50"));
    for bot in rule_bots {
        assert_eq!(bot.destination_url, bot_url);
        if bot.user_agent.contains("Googlebot") {
            assert_eq!((bot.device.as_str(), bot.browser.as_str()), ("bot", "bot"));
        }
    }
    Ok(())
}

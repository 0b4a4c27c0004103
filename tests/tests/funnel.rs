//! Funnels on the real stack: a flow whose path splits visits 70/30 over two landers in
//! front of two offers, lander click-throughs (`/lp/click`) by cookie and by `click`
//! parameter, a direct-to-offer path, the click events' kinds, object ids and parent
//! hashes on the clicks topic, and conversions of offer visits with the offer's payout,
//! its network's status words and the visit's external id.

use std::collections::HashMap;
use std::time::Duration;

use prost::Message as _;
use reqwest::header::HeaderMap;
use serde_json::json;
use traffsure_core::ClickHashKeys;
use traffsure_events::{Click, ClickKind, Conversion, ConversionStatus, Flow, Path};
use traffsure_events::{PathLander, PathOffer};
use traffsure_tests::kafka_topic::{publish_flow, read_clicks, read_events};
use traffsure_tests::produce::Producer;
use traffsure_tests::{eventually, query_of, Stack, StackOptions, CLICK_HASH_KEYS};

/// Visits through the tracking link of the lander flow.
const VISITS: usize = 400;
const TRAFFIC_SOURCE: u32 = 41;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn landers_offers_and_their_conversions() -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions::default().services(&[
        "click-ingest",
        "postback-ingest",
        "conversion-attribution",
    ]))
    .await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

fn lander(id: u32, url: &str, weight: u32) -> PathLander {
    PathLander {
        lander_id: id,
        url: url.into(),
        weight,
    }
}

fn offer(id: u32, url: &str, network_id: u32, click_param: &str) -> PathOffer {
    PathOffer {
        offer_id: id,
        url: url.into(),
        weight: 1,
        network_id,
        click_param: click_param.into(),
        ..PathOffer::default()
    }
}

/// Stores flow `id` from the API's JSON, then with `edit` applied (a path, a traffic
/// source) as reporting-api does once it has filled the path in.
async fn store_flow(
    stack: &Stack,
    id: u32,
    spec: serde_json::Value,
    edit: impl FnOnce(&mut Flow),
) -> anyhow::Result<Flow> {
    let topic = format!("{}flows", stack.topic_prefix);
    let mut flow = publish_flow(&stack.options.kafka_brokers, &topic, id, spec, None).await?;
    edit(&mut flow);
    Producer::new(stack)?
        .send_raw(
            &topic,
            &[(id.to_string().into_bytes(), flow.encode_to_vec())],
        )
        .await?;
    Ok(flow)
}

/// The value of the cookie `name` a response sets.
fn set_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_string())
}

/// The conversions on the conversions topic.
struct Conversions(Vec<Conversion>);

impl Conversions {
    /// Reads until `count` are there (a minute at most).
    fn read(stack: &Stack, topic: &str, count: usize) -> anyhow::Result<Self> {
        read_events::<Conversion>(
            &stack.options.kafka_brokers,
            topic,
            Duration::from_secs(60),
            Duration::from_millis(500),
            |events| events.len() >= count,
        )
        .map(Self)
    }

    /// The conversion of `goal` for the click `hash`.
    fn of(&self, hash: &str, goal: &str) -> anyhow::Result<Conversion> {
        self.0
            .iter()
            .find(|c| c.click_hash == hash && c.goal == goal)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no {goal} conversion of {hash}: {:?}", self.0))
    }
}

struct Visit {
    hash: String,
    lander: String,
    cookie: String,
    visitor: String,
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let http = &stack.http;
    let keys = ClickHashKeys::parse(CLICK_HASH_KEYS, 1)?;
    let goals = json!([{"key": "lead"}, {"key": "sale", "payout": "1"}]);
    // Flow 1: 70/30 over two landers, then offer 21 (network 31 takes the click in
    // `aff_sub`, pays 2.5 EUR, says `2` for a rejection) or offer 22 (its URL places the
    // click itself).
    let mut paying = offer(
        21,
        "https://offer1.test/go?aff_sub=stale&x=1",
        31,
        "aff_sub",
    );
    paying.has_payout = true;
    paying.payout_micros = 2_500_000;
    paying.currency = "EUR".into();
    paying.status_map = [("2".to_string(), "rejected".to_string())].into();
    let funnel = Path {
        landers: vec![
            lander(11, "https://lp1.test/?c={click}&ext={external_id}", 70),
            lander(12, "https://lp2.test/", 30),
        ],
        offers: vec![paying, offer(22, "https://offer2.test/?s={click}", 32, "")],
    };
    store_flow(
        stack,
        1,
        json!({"name": "funnel", "slug": format!("funnel-{}", stack.id),
               "destination_url": "https://unused.test/", "goals": goals}),
        |flow| {
            flow.path = Some(funnel.clone());
            flow.traffic_source_id = TRAFFIC_SOURCE;
        },
    )
    .await?;
    // Flow 2: straight to offer 23, whose network takes the click in `sub1`.
    store_flow(
        stack,
        2,
        json!({"name": "direct", "destination_url": "https://unused.test/", "goals": goals}),
        |flow| {
            flow.path = Some(Path {
                landers: vec![],
                offers: vec![offer(23, "https://offer3.test/?a=b", 33, "sub1")],
            });
        },
    )
    .await?;
    // Flow 3: destinations only.
    store_flow(
        stack,
        3,
        json!({"name": "plain", "destination_url": "https://plain.test/?c={click}"}),
        |_| {},
    )
    .await?;

    // Visits land on the landers in proportion. With p = 0.7 over 400 visits the first
    // lander's count has mean 280 and standard deviation 9.2: the test allows five of
    // them (|count - 280| <= 46; a correct edge fails it about once in two million runs).
    let track = |i: usize| {
        stack.url(
            "click-ingest",
            &format!("/c/1?external_id=E{i}&sub_id=s{i}"),
        )
    };
    eventually(Duration::from_secs(20), || async {
        let response = http.get(track(0)).send().await?;
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(location.starts_with("https://lp").then_some(()))
    })
    .await?;
    let mut visits = Vec::new();
    for i in 0..VISITS {
        let response = http.get(track(i)).send().await?;
        anyhow::ensure!(response.status() == 302, "visit {i}: {}", response.status());
        let location = response.headers()["location"].to_str()?.to_string();
        let cookie = set_cookie(response.headers(), "ts_lp").unwrap_or_default();
        let visitor = set_cookie(response.headers(), "ts_vid").unwrap_or_default();
        let hash = cookie.split('.').next().unwrap_or_default().to_string();
        anyhow::ensure!(keys.verify(&hash).is_ok(), "visit {i}: cookie {cookie:?}");
        if location.starts_with("https://lp1.test/") {
            assert_eq!(
                location,
                format!("https://lp1.test/?c={hash}&ext=E{i}"),
                "macros of the lander URL"
            );
            assert_eq!(cookie, format!("{hash}.d.11"));
        } else {
            assert_eq!(location, "https://lp2.test/");
            assert_eq!(cookie, format!("{hash}.d.12"));
        }
        visits.push(Visit {
            hash,
            lander: location,
            cookie,
            visitor,
        });
    }
    let first_lander = visits
        .iter()
        .filter(|v| v.lander.starts_with("https://lp1."))
        .count();
    assert!(
        first_lander.abs_diff(VISITS * 7 / 10) <= 46,
        "{first_lander} of {VISITS} visits on the 70% lander"
    );

    // Click-throughs. By cookie, to the first offer (`/lp/click/1`): the hit's own hash
    // replaces the URL's stale `aff_sub`.
    let lp_click = |path: &str, cookies: &str| {
        let request = http.get(stack.url("click-ingest", path));
        if cookies.is_empty() {
            request
        } else {
            request.header("cookie", cookies)
        }
    };
    let by_cookie = visits
        .iter()
        .find(|v| v.lander.starts_with("https://lp1."))
        .ok_or_else(|| anyhow::anyhow!("no visit on lander 11"))?;
    let response = lp_click(
        "/lp/click/1?sub3=from-lander",
        &format!("ts_lp={}; ts_vid={}", by_cookie.cookie, by_cookie.visitor),
    )
    .send()
    .await?;
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str()?.to_string();
    let hit1 = query_of(&location)["aff_sub"].clone();
    assert_eq!(
        location,
        format!("https://offer1.test/go?x=1&aff_sub={hit1}")
    );
    assert_ne!(hit1, by_cookie.hash);
    let (visit_info, hit_info) = (keys.verify(&by_cookie.hash)?, keys.verify(&hit1)?);
    assert_eq!(
        (hit_info.flow_id, hit_info.routing_key),
        (visit_info.flow_id, visit_info.routing_key),
        "the hit is on the visit's partition"
    );
    // By `click` parameter without the lander cookie (the visitor cookie only), to the
    // second offer, whose URL takes the hit's hash through `{click}`.
    let by_param = visits
        .iter()
        .find(|v| v.lander.starts_with("https://lp2."))
        .ok_or_else(|| anyhow::anyhow!("no visit on lander 12"))?;
    let response = lp_click(
        &format!("/lp/click/2?click={}", by_param.hash),
        &format!("ts_vid={}", by_param.visitor),
    )
    .send()
    .await?;
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str()?.to_string();
    let hit2 = location
        .strip_prefix("https://offer2.test/?s=")
        .unwrap_or_default()
        .to_string();
    assert!(keys.verify(&hit2).is_ok(), "{location}");
    // An offer number past the path's offers and a plain `/lp/click` pick by weight.
    let mut hits = vec![];
    for (i, path) in ["/lp/click/7", "/lp/click", "/lp/click", "/lp/click"]
        .iter()
        .enumerate()
    {
        let visit = &visits[10 + i];
        let response = lp_click(path, &format!("ts_lp={}", visit.cookie))
            .send()
            .await?;
        assert_eq!(response.status(), 302, "{path}");
        let location = response.headers()["location"].to_str()?.to_string();
        let host = location.split('/').nth(2).unwrap_or_default().to_string();
        assert!(host == "offer1.test" || host == "offer2.test", "{location}");
        hits.push(visit.hash.clone());
    }

    // Refusals: no visit, a forged one, a bad offer number, a flow without offers.
    let mut forged = by_cookie.hash.clone();
    forged.replace_range(39.., if forged.ends_with('0') { "1" } else { "0" });
    let plain_visit = keys.sign(traffsure_core::now_ms(), 3, 5, [1, 2, 3, 4]);
    let gone_flow = keys.sign(traffsure_core::now_ms(), 999, 5, [1, 2, 3, 4]);
    for (path, cookies, status, says) in [
        ("/lp/click".to_string(), String::new(), 400, "no visit"),
        (
            format!("/lp/click?click={forged}"),
            String::new(),
            400,
            "signature",
        ),
        (
            "/lp/click".into(),
            format!("ts_lp={forged}.d.11"),
            400,
            "signature",
        ),
        (
            "/lp/click?click=nonsense".into(),
            String::new(),
            400,
            "40 characters",
        ),
        (
            format!("/lp/click/0?click={}", by_cookie.hash),
            String::new(),
            400,
            "offer number",
        ),
        (
            format!("/lp/click/x?click={}", by_cookie.hash),
            String::new(),
            400,
            "offer number",
        ),
        (
            format!("/lp/click?click={plain_visit}"),
            String::new(),
            404,
            "no offer",
        ),
        (
            format!("/lp/click?click={gone_flow}"),
            String::new(),
            404,
            "no longer exists",
        ),
    ] {
        let response = lp_click(&path, &cookies).send().await?;
        assert_eq!(response.status(), status, "{path} {cookies}");
        assert!(response.headers().get("location").is_none(), "{path}");
        let body = response.text().await?;
        assert!(body.contains(says), "{path}: {body}");
    }

    // Direct to the offer: its network's `sub1` carries the visit's own hash.
    let response = http
        .get(stack.url("click-ingest", "/c/2?external_id=direct-1&sub1=keep"))
        .send()
        .await?;
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str()?.to_string();
    let direct = query_of(&location)["sub1"].clone();
    assert_eq!(location, format!("https://offer3.test/?a=b&sub1={direct}"));
    assert!(set_cookie(response.headers(), "ts_lp").is_none());

    // The click events: visits with their lander, hits with their visit, offer and
    // network, all with the flow's traffic source.
    let clicks_topic = format!("{}clicks", stack.topic_prefix);
    let expected = VISITS + 1 + 2 + hits.len() + 1;
    let clicks: Vec<Click> = read_clicks(
        &stack.options.kafka_brokers,
        &clicks_topic,
        Duration::from_secs(60),
        Duration::from_secs(1),
        |events: &[Click]| events.len() >= expected,
    )?;
    let by_hash: HashMap<&str, &Click> =
        clicks.iter().map(|c| (c.click_hash.as_str(), c)).collect();
    let click = |hash: &str| {
        by_hash
            .get(hash)
            .copied()
            .ok_or_else(|| anyhow::anyhow!("no click event {hash}"))
    };
    for (i, visit) in visits.iter().enumerate() {
        let event = click(&visit.hash)?;
        let lander = if visit.lander.starts_with("https://lp1.") {
            11
        } else {
            12
        };
        assert_eq!(
            (
                event.kind(),
                event.lander_id,
                event.offer_id,
                event.traffic_source_id
            ),
            (ClickKind::Visit, lander, 0, TRAFFIC_SOURCE)
        );
        assert_eq!(event.external_id, format!("E{i}"));
        assert!(event.parent_click_hash.is_empty());
        assert!(!event.extra.contains_key("external_id"));
    }
    // (kind, parent, lander, offer, network) of a click event.
    let funnel_of = |hash: &str| {
        click(hash).map(|c| {
            (
                c.kind(),
                c.parent_click_hash.clone(),
                c.lander_id,
                c.offer_id,
                c.network_id,
            )
        })
    };
    let lander_click = ClickKind::LanderClick;
    assert_eq!(
        funnel_of(&hit1)?,
        (lander_click, by_cookie.hash.clone(), 11, 21, 31)
    );
    let hit = click(&hit1)?;
    assert_eq!(
        (
            hit.traffic_source_id,
            hit.visitor_id.as_str(),
            hit.subs[2].as_str(),
            hit.cost_micros
        ),
        (TRAFFIC_SOURCE, by_cookie.visitor.as_str(), "from-lander", 0)
    );
    assert_eq!(
        hit.destination_url,
        format!("https://offer1.test/go?x=1&aff_sub={hit1}")
    );
    // Without the cookie the edge cannot tell which of two landers sent the visitor.
    assert_eq!(
        funnel_of(&hit2)?,
        (lander_click, by_param.hash.clone(), 0, 22, 32)
    );
    let parents: Vec<&str> = clicks
        .iter()
        .filter(|c| c.kind() == ClickKind::LanderClick)
        .map(|c| c.parent_click_hash.as_str())
        .collect();
    assert_eq!(parents.len(), 2 + hits.len(), "one event per click-through");
    for parent in &hits {
        assert!(parents.contains(&parent.as_str()), "{parent}");
    }
    assert_eq!(
        funnel_of(&direct)?,
        (ClickKind::Visit, String::new(), 0, 23, 33)
    );
    assert_eq!(click(&direct)?.external_id, "direct-1");

    // Conversions. The paying offer's hit converts with the offer's payout when the
    // postback has none, and with the visit's external id and sub id; its network's `2`
    // is a rejection; the direct visit converts with its offer.
    let postback = |query: String| {
        let url = stack.url("postback-ingest", &format!("/postback?{query}"));
        async move { http.get(url).send().await }
    };
    for query in [
        format!("click={hit1}&goal=lead"),
        format!("click={hit2}&goal=lead&status=2&payout=3"),
        format!("click={direct}&goal=lead"),
    ] {
        let response = postback(query.clone()).await?;
        assert_eq!(
            response.status(),
            200,
            "{query}: {}",
            response.text().await?
        );
    }
    let conversions_topic = format!("{}conversions", stack.topic_prefix);
    let conversions = Conversions::read(stack, &conversions_topic, 3)?;
    let converted = |hash: &str, goal: &str| conversions.of(hash, goal);
    let paying = converted(&hit1, "lead")?;
    assert_eq!(
        (
            paying.revenue_micros,
            paying.currency.as_str(),
            paying.status()
        ),
        (2_500_000, "EUR", ConversionStatus::Approved)
    );
    assert_eq!(
        (
            paying.traffic_source_id,
            paying.lander_id,
            paying.offer_id,
            paying.network_id
        ),
        (TRAFFIC_SOURCE, 11, 21, 31)
    );
    let visit_index = visits
        .iter()
        .position(|v| v.hash == by_cookie.hash)
        .unwrap_or_default();
    assert_eq!(paying.external_id, format!("E{visit_index}"), "{paying:?}");
    assert_eq!(paying.sub_id, format!("s{visit_index}"));
    let other = converted(&hit2, "lead")?;
    // Offer 22 has no status map of its own: `2` means nothing special to the flow
    // either, so it is approved, with the postback's payout.
    assert_eq!(
        (
            other.status(),
            other.revenue_micros,
            other.offer_id,
            other.lander_id
        ),
        (ConversionStatus::Approved, 3_000_000, 22, 12)
    );
    let direct_conversion = converted(&direct, "lead")?;
    assert_eq!(
        (
            direct_conversion.offer_id,
            direct_conversion.network_id,
            direct_conversion.lander_id
        ),
        (23, 33, 0)
    );
    assert_eq!(direct_conversion.external_id, "direct-1");

    // The paying offer's network rejects a sale with its `2`.
    let response = postback(format!("click={hit1}&goal=sale&status=2")).await?;
    assert_eq!(response.status(), 200);
    // A visitor-based postback converts the visitor's latest click: the click-through.
    let response = postback(format!("vid={}&flow=1&goal=sale", by_param.visitor)).await?;
    assert_eq!(response.status(), 200);
    let conversions = Conversions::read(stack, &conversions_topic, 5)?;
    let find = |hash: &str, goal: &str| conversions.of(hash, goal);
    let rejected = find(&hit1, "sale")?;
    assert_eq!(
        (rejected.status(), rejected.revenue_micros),
        (ConversionStatus::Rejected, 2_500_000)
    );
    let by_visitor = find(&hit2, "sale")?;
    assert_eq!((by_visitor.offer_id, by_visitor.lander_id), (22, 12));
    Ok(())
}

//! The media buyer's story on the real stack, through the public APIs only: a traffic
//! source and an affiliate network made from the templates catalogue, two offers on the
//! network (one with a fixed payout and a goal of its own), two landers, and a flow with
//! the source whose path splits visits 70/30 over the landers in front of the offers.
//! Visits come through the flow's tracking link filled as the source fills it, a known
//! part clicks through the lander, and conversions come back in the network's own
//! postback format (its `postback_url` with its macros substituted). A local receiver
//! stands in for the source and gets one postback per approved conversion with the
//! source's click id and the payout; reports and logs by source, lander and offer equal
//! what the test sent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use anyhow::Context;
use reqwest::Method;
use serde_json::{json, Value};
use traffsure_core::format_micros;
use traffsure_tests::{eventually, query_of, serve_local, Stack, StackOptions};

const API: &str = "reporting-api";
const POSTBACK_BASE: &str = "https://pb.example.com";
const TRACKING_BASE: &str = "https://trk.example.com";
/// Visits through the tracking link; every visit but each third clicks through.
const VISITS: usize = 60;

/// The query of each request the stand-in source got.
type Received = Arc<Mutex<Vec<BTreeMap<String, String>>>>;

async fn receive(request: HttpRequest, received: web::Data<Received>) -> HttpResponse {
    let query = serde_urlencoded::from_str(request.query_string()).unwrap_or_default();
    received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(query);
    HttpResponse::Ok().body("ok")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_new_source_to_reported_conversions() -> anyhow::Result<()> {
    let received: Received = Arc::default();
    let data = web::Data::new(received.clone());
    let port = serve_local(move |app| {
        app.app_data(data.clone()).default_service(web::to(receive));
    })?;
    let stack = Stack::start_with(
        StackOptions::default()
            .services(&[
                "click-ingest",
                "postback-ingest",
                "conversion-attribution",
                "postback-dispatcher",
                "sink",
                API,
            ])
            .env(API, "TRAFFSURE__POSTBACK_BASE_URL", POSTBACK_BASE)
            .env(API, "TRAFFSURE__TRACKING_BASE_URL", TRACKING_BASE)
            .env(
                "postback-dispatcher",
                "TRAFFSURE__OUTBOUND__ALLOW_PRIVATE_TARGETS",
                "true",
            ),
    )
    .await?;
    let result = story(&stack, port, &received).await;
    stack.print_failure(&result);
    result
}

fn id(object: &Value) -> anyhow::Result<u64> {
    object["id"].as_u64().context("an id")
}

/// What one click-through led to.
struct Hit {
    visit: usize,
    hash: String,
    offer: u64,
}

/// One postback the network sends: for hit `hit`, its goal, status word and sum.
struct Sent {
    hit: usize,
    goal: &'static str,
    status: &'static str,
    sum: &'static str,
}

async fn story(stack: &Stack, port: u16, received: &Received) -> anyhow::Result<()> {
    let http = &stack.http;
    // The source from its template, then pointed at the local stand-in (same path and
    // macros as the template's).
    let source = stack
        .api_expect(
            Method::POST,
            "/api/v1/traffic-sources/from-template",
            Some(json!({"template": "mgid", "placeholders": {"event": "buy"}})),
            201,
        )
        .await?;
    let source_id = id(&source)?;
    let template_postback = source["postback_url"].as_str().unwrap_or_default();
    anyhow::ensure!(
        template_postback.starts_with("https://a.mgid.com/postback?"),
        "{source}"
    );
    let mut edited = source.clone();
    for key in [
        "id",
        "archived",
        "created_at_ms",
        "updated_at_ms",
        "revision",
    ] {
        edited.as_object_mut().map(|o| o.remove(key));
    }
    edited["postback_url"] = json!(template_postback.replacen(
        "https://a.mgid.com",
        &format!("http://127.0.0.1:{port}"),
        1
    ));
    stack
        .api_expect(
            Method::PUT,
            &format!("/api/v1/traffic-sources/{source_id}"),
            Some(edited),
            200,
        )
        .await?;
    let network = stack
        .api_expect(
            Method::POST,
            "/api/v1/affiliate-networks/from-template",
            Some(json!({"template": "affise"})),
            201,
        )
        .await?;
    let network_id = id(&network)?;
    let network_postback = network["postback_url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    anyhow::ensure!(network_postback.contains("{sub1}"), "{network}");
    // Offer A pays 2.50 and 4.00 for its `upsell` goal; offer B's payout comes from the
    // postback.
    let offer_a = id(&stack.api_expect(
        Method::POST,
        "/api/v1/offers",
        Some(
            json!({"name": "Offer A", "url": "https://offer-a.test/?o=a", "network_id": network_id,
                    "payout": "2.50", "goals": [{"key": "upsell", "payout": "4.00"}]}),
        ),
        201,
    )
    .await?)?;
    let offer_b = id(&stack.api_expect(
        Method::POST,
        "/api/v1/offers",
        Some(json!({"name": "Offer B", "url": "https://offer-b.test/", "network_id": network_id})),
        201,
    )
    .await?)?;
    let mut landers = vec![];
    for (name, url) in [
        ("LP one", "https://lp1.test/?c={click}"),
        ("LP two", "https://lp2.test/"),
    ] {
        let lander = stack
            .api_expect(
                Method::POST,
                "/api/v1/landers",
                Some(json!({"name": name, "url": url, "offers": 2})),
                201,
            )
            .await?;
        landers.push(id(&lander)?);
    }
    let flow = stack
        .create_flow(json!({
            "name": "Story", "traffic_source_id": source_id,
            "path": {
                "landers": [{"lander_id": landers[0], "weight": 70}, {"lander_id": landers[1], "weight": 30}],
                "offers": [{"offer_id": offer_a}, {"offer_id": offer_b}],
            },
        }))
        .await?;
    let link = flow["tracking_link"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    anyhow::ensure!(link.contains("external_id={click_id}"), "{flow}");

    // Visits: the link as the source fills it.
    let visit_url = |i: usize| {
        link.replacen(TRACKING_BASE, &stack.url("click-ingest", ""), 1)
            .replace("{click_id}", &format!("mg-{i}"))
            .replace("{widget_id}", &format!("w{}", i % 4))
            .replace("{teaser_id}", "t1")
            .replace("{campaign_id}", "c1")
            .replace("{click_price}", "0.01")
    };
    // The first visit that reaches a lander shows the edge has the flow; it counts.
    let probe_url = visit_url(0).replacen("mg-0", "probe", 1);
    let probe = eventually(Duration::from_secs(30), || async {
        let response = http.get(&probe_url).send().await?;
        let at = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(at.starts_with("https://lp").then_some(at))
    })
    .await?;
    let probe_lander = if probe.starts_with("https://lp1.") {
        landers[0]
    } else {
        landers[1]
    };
    let mut visit_landers = vec![];
    let mut cookies = vec![];
    for i in 0..VISITS {
        let response = http.get(visit_url(i)).send().await?;
        anyhow::ensure!(response.status() == 302, "visit {i}: {}", response.status());
        let location = response.headers()["location"].to_str()?.to_string();
        let lander = if location.starts_with("https://lp1.test/") {
            landers[0]
        } else {
            anyhow::ensure!(location == "https://lp2.test/", "{location}");
            landers[1]
        };
        visit_landers.push(lander);
        let cookie: Vec<String> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next().map(String::from))
            .collect();
        cookies.push(cookie.join("; "));
    }
    // Click-throughs of every visit but each third, by the lander cookie.
    let mut hits = vec![];
    for (i, cookie) in cookies.iter().enumerate().filter(|(i, _)| i % 3 != 2) {
        let response = http
            .get(stack.url("click-ingest", &format!("/lp/click/{}", 1 + i % 2)))
            .header("cookie", cookie)
            .send()
            .await?;
        anyhow::ensure!(response.status() == 302, "click-through {i}");
        let location = response.headers()["location"].to_str()?.to_string();
        let hash = query_of(&location)
            .get("sub1")
            .cloned()
            .with_context(|| format!("no sub1 in {location}"))?;
        let offer = if location.starts_with("https://offer-a.test/") {
            offer_a
        } else {
            offer_b
        };
        hits.push(Hit {
            visit: i,
            hash,
            offer,
        });
    }
    anyhow::ensure!(hits
        .iter()
        .all(|h| h.offer == if h.visit % 2 == 0 { offer_a } else { offer_b }));

    // Conversions in Affise's format: `1` approved, `3` declined; an empty `{sum}` leaves
    // the payout to the offer.
    let mut sent = vec![];
    for h in 0..hits.len() {
        match h % 5 {
            0 => {
                sent.push(Sent {
                    hit: h,
                    goal: "",
                    status: "1",
                    sum: "12.00",
                });
                sent.push(Sent {
                    hit: h,
                    goal: "upsell",
                    status: "1",
                    sum: "",
                });
            }
            1 => sent.push(Sent {
                hit: h,
                goal: "",
                status: "1",
                sum: "",
            }),
            2 => sent.push(Sent {
                hit: h,
                goal: "",
                status: "3",
                sum: "5.00",
            }),
            _ => {}
        }
    }
    for (n, s) in sent.iter().enumerate() {
        let url = network_postback
            .replacen(POSTBACK_BASE, &stack.url("postback-ingest", ""), 1)
            .replace("{sub1}", &hits[s.hit].hash)
            .replace("{sum}", s.sum)
            .replace("{currency}", "USD")
            .replace("{transactionid}", &format!("tx-{n}"))
            .replace("{status}", s.status)
            .replace("{goal}", s.goal);
        let response = http.get(&url).send().await?;
        anyhow::ensure!(response.status() == 200, "{url}: {}", response.status());
    }
    // What each conversion earns: the postback's sum, else the offer's goal, else the
    // offer's payout (offer B has none: 0).
    let earned = |s: &Sent| -> i64 {
        let offer = hits[s.hit].offer;
        match (s.sum, s.goal) {
            ("", "upsell") if offer == offer_a => 4_000_000,
            ("", _) if offer == offer_a => 2_500_000,
            ("", _) => 0,
            (sum, _) => traffsure_core::parse_micros(sum).unwrap_or(-1),
        }
    };
    let approved: Vec<&Sent> = sent.iter().filter(|s| s.status == "1").collect();

    // The source hears of each approved conversion once, with its own click id.
    let mut expected_postbacks: Vec<(String, String)> = approved
        .iter()
        .map(|s| {
            (
                format!("mg-{}", hits[s.hit].visit),
                format_micros(earned(s)),
            )
        })
        .collect();
    expected_postbacks.sort();
    let got = eventually(Duration::from_secs(90), || async {
        let got = received.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok((got.len() >= approved.len()).then_some(()))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let queries = received.lock().unwrap_or_else(|p| p.into_inner()).clone();
    got.with_context(|| format!("the source got {queries:?}"))?;
    let mut postbacks: Vec<(String, String)> = queries
        .iter()
        .map(|q| {
            assert_eq!(q.get("e").map(String::as_str), Some("buy"), "{q:?}");
            (
                q.get("c").cloned().unwrap_or_default(),
                q.get("r").cloned().unwrap_or_default(),
            )
        })
        .collect();
    postbacks.sort();
    assert_eq!(postbacks, expected_postbacks);

    // Reports by source, lander and offer: what was sent.
    #[derive(Debug, Default, PartialEq)]
    struct Figures {
        clicks: i64,
        lander_views: i64,
        lander_clicks: i64,
        offer_clicks: i64,
        conversions: i64,
        revenue: i64,
    }
    let visits_total = VISITS + 1;
    let mut by_source = BTreeMap::new();
    let mut by_lander: BTreeMap<u64, Figures> = BTreeMap::new();
    let mut by_offer: BTreeMap<u64, Figures> = BTreeMap::new();
    let source_row: &mut Figures = by_source.entry(source_id).or_default();
    source_row.clicks = visits_total as i64;
    source_row.lander_views = visits_total as i64;
    source_row.lander_clicks = hits.len() as i64;
    source_row.offer_clicks = hits.len() as i64;
    for s in &approved {
        source_row.conversions += 1;
        source_row.revenue += earned(s);
    }
    let probe_row = by_lander.entry(probe_lander).or_default();
    probe_row.clicks = 1;
    probe_row.lander_views = 1;
    for (i, lander) in visit_landers.iter().enumerate() {
        let row = by_lander.entry(*lander).or_default();
        row.clicks += 1;
        row.lander_views += 1;
        if i % 3 != 2 {
            row.lander_clicks += 1;
            row.offer_clicks += 1;
        }
    }
    for hit in &hits {
        let row = by_offer.entry(hit.offer).or_default();
        row.lander_clicks += 1;
        row.offer_clicks += 1;
    }
    for s in &approved {
        let hit = &hits[s.hit];
        let lander = by_lander.entry(visit_landers[hit.visit]).or_default();
        lander.conversions += 1;
        lander.revenue += earned(s);
        let offer = by_offer.entry(hit.offer).or_default();
        offer.conversions += 1;
        offer.revenue += earned(s);
    }
    let all_conversions = sent.len();
    eventually(Duration::from_secs(90), || async {
        let stored = stack
            .clickhouse(
                "SELECT (SELECT count() FROM clicks), (SELECT count() FROM conversions), \
                 (SELECT sum(clicks) FROM clicks_funnel_hourly), \
                 (SELECT sum(conversions) FROM conversions_funnel_hourly)",
            )
            .await?;
        let want = format!(
            "{0}\t{1}\t{0}\t{1}",
            visits_total + hits.len(),
            all_conversions
        );
        Ok((stored == want).then_some(()))
    })
    .await?;
    let visits_logged = stack
        .api_expect(
            Method::GET,
            &format!("/api/v1/clicks?traffic_source={source_id}&kind=visit&limit=500"),
            None,
            200,
        )
        .await?;
    let visits_logged = visits_logged["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        visits_logged.len(),
        visits_total,
        "visits in the clicks log"
    );
    assert!(
        visits_logged.iter().any(|c| c["external_id"] == "mg-7"),
        "the source's click id on the logged visits"
    );

    for (dim, filter, expected) in [
        ("traffic_source", "traffic_source", &by_source),
        ("lander", "lander", &by_lander),
        ("offer", "offer", &by_offer),
    ] {
        let report = stack
            .api_expect(
                Method::GET,
                &format!("/api/v1/reports?group_by={dim}"),
                None,
                200,
            )
            .await?;
        let rows = report["rows"].as_array().cloned().unwrap_or_default();
        let mut actual = BTreeMap::new();
        for row in &rows {
            let id: u64 = row[dim].as_str().unwrap_or_default().parse().unwrap_or(0);
            actual.insert(
                id,
                Figures {
                    clicks: row["clicks"].as_i64().unwrap_or(-1),
                    lander_views: row["lander_views"].as_i64().unwrap_or(-1),
                    lander_clicks: row["lander_clicks"].as_i64().unwrap_or(-1),
                    offer_clicks: row["offer_clicks"].as_i64().unwrap_or(-1),
                    conversions: row["conversions"].as_i64().unwrap_or(-1),
                    revenue: row["revenue"]
                        .as_str()
                        .and_then(|r| traffsure_core::parse_micros(r).ok())
                        .unwrap_or(-1),
                },
            );
        }
        for (id, want) in expected.iter() {
            assert_eq!(actual.get(id), Some(want), "{dim} {id}: {report}");
        }
        // The logs filtered by each object hold exactly its rows.
        for (id, want) in expected.iter() {
            let clicks = stack
                .api_expect(
                    Method::GET,
                    &format!("/api/v1/clicks?{filter}={id}&limit=500"),
                    None,
                    200,
                )
                .await?;
            let logged = clicks["items"].as_array().map_or(0, Vec::len) as i64;
            let want_clicks = match dim {
                "offer" => want.offer_clicks,
                _ => want.clicks + want.lander_clicks,
            };
            assert_eq!(logged, want_clicks, "clicks log by {filter}={id}");
            let conversions = stack
                .api_expect(
                    Method::GET,
                    &format!("/api/v1/conversions?{filter}={id}&limit=500"),
                    None,
                    200,
                )
                .await?;
            let items = conversions["items"].as_array().cloned().unwrap_or_default();
            let want_all = sent
                .iter()
                .filter(|s| {
                    let hit = &hits[s.hit];
                    match dim {
                        "offer" => hit.offer == *id,
                        "lander" => visit_landers[hit.visit] == *id,
                        _ => true,
                    }
                })
                .count();
            assert_eq!(items.len(), want_all, "conversions log by {filter}={id}");
        }
    }
    Ok(())
}

//! Reports, logs and the dashboard by traffic source, offer, lander and affiliate network
//! on the real stack: clicks (visits to a lander, lander click-throughs, visits straight
//! to an offer, direct visits, bots, and old-style clicks without objects), conversions
//! carrying their click's objects and the objects themselves go straight to Kafka; the
//! sink writes them, and every report figure equals what was produced, counted here.
//! CSV equals JSON, the funnel rollups equal the raw tables, log filters pick exactly
//! the matching rows, names follow a rename. A second test migrates a database holding
//! clicks and conversions written before migration 0010 and finds the same totals.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use traffsure_config::ClickHouseSettings;
use traffsure_core::format_micros;
use traffsure_events::{Click, ClickKind, Conversion, ConversionStatus, ObjectKind, TrackerObject};
use traffsure_tests::produce::Producer;
use traffsure_tests::{clickhouse_url, eventually, Stack, StackOptions};

const CYCLES: u32 = 12;
const LANDER: u32 = 20;
const NETWORK: u32 = 30;
/// An offer no object describes: reports name it `#99`.
const UNKNOWN_OFFER: u32 = 99;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_by_objects_equal_what_was_produced() -> anyhow::Result<()> {
    let stack =
        Stack::start_with(StackOptions::default().services(&["sink", "reporting-api"])).await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

fn object(kind: ObjectKind, id: u32, name: &str, revision: u64) -> (Vec<u8>, Vec<u8>) {
    let word = match kind {
        ObjectKind::TrafficSource => "traffic_source",
        ObjectKind::AffiliateNetwork => "network",
        ObjectKind::Offer => "offer",
        _ => "lander",
    };
    let now = traffsure_core::now_ms();
    let object = TrackerObject {
        kind: kind as i32,
        id,
        name: name.into(),
        archived: false,
        created_at_ms: now,
        updated_at_ms: now,
        revision,
        spec_json: "{}".into(),
    };
    (
        format!("{word}:{id}").into_bytes(),
        prost::Message::encode_to_vec(&object),
    )
}

/// Six clicks a cycle: a visit to the lander (source 1), its click-through to an offer
/// (10 or 11), a visit straight to an offer (source 2; the unknown offer in cycle 0), a
/// click without objects, a direct visit to the lander (source 2) and a bot's visit to
/// the lander (source 1).
fn clicks(base_ms: i64) -> Vec<Click> {
    let mut clicks = Vec::new();
    for cycle in 0..CYCLES {
        let offer = if cycle % 2 == 0 { 10 } else { 11 };
        let direct_offer = if cycle == 0 { UNKNOWN_OFFER } else { 11 };
        let shapes: [(ClickKind, u32, u32, u32, u32, bool); 6] = [
            (ClickKind::Visit, 1, LANDER, 0, 0, false),
            (ClickKind::LanderClick, 1, LANDER, offer, NETWORK, false),
            (ClickKind::Visit, 2, 0, direct_offer, NETWORK, false),
            (ClickKind::Visit, 0, 0, 0, 0, false),
            (ClickKind::DirectVisit, 2, LANDER, 0, 0, false),
            (ClickKind::Visit, 1, LANDER, 0, 0, true),
        ];
        for (n, (kind, source, lander, offer, network, bot)) in shapes.into_iter().enumerate() {
            let i = cycle * 6 + n as u32;
            let visit = kind != ClickKind::LanderClick;
            clicks.push(Click {
                click_hash: format!("c{i}"),
                flow_id: 1 + cycle % 2,
                ts_ms: base_ms - i64::from(i) * 1000,
                routing_key: i % 8,
                visitor_id: format!("v{}", if visit { i } else { i - 1 }),
                ip: "203.0.113.5".into(),
                country: "DE".into(),
                source: "push".into(),
                sub_id: format!("s{}", cycle % 3),
                cost_micros: if visit { 1_500 } else { 0 },
                is_bot: bot,
                kind: kind as i32,
                parent_click_hash: if visit {
                    String::new()
                } else {
                    format!("c{}", i - 1)
                },
                traffic_source_id: source,
                lander_id: lander,
                offer_id: offer,
                network_id: network,
                external_id: format!("ext{i}"),
                ..Click::default()
            });
        }
    }
    clicks
}

/// A conversion for every third lander click-through, every fourth visit straight to an
/// offer and the first click without objects, each with its click's objects.
fn conversions(clicks: &[Click], currency: &str) -> Vec<Conversion> {
    clicks
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            let cycle = *i / 6;
            match i % 6 {
                1 => cycle % 3 == 0,
                2 => cycle % 4 == 0,
                3 => cycle == 0,
                _ => false,
            }
        })
        .map(|(i, c)| Conversion {
            conversion_id: format!("conv{i}"),
            version: 1,
            click_hash: c.click_hash.clone(),
            flow_id: c.flow_id,
            goal: "sale".into(),
            status: ConversionStatus::Approved as i32,
            revenue_micros: (i as i64 + 1) * 250_000,
            currency: currency.into(),
            uid: format!("tx{i}"),
            click_ts_ms: c.ts_ms,
            created_at_ms: c.ts_ms + 500,
            updated_at_ms: c.ts_ms + 500,
            country: c.country.clone(),
            source: c.source.clone(),
            sub_id: c.sub_id.clone(),
            traffic_source_id: c.traffic_source_id,
            lander_id: c.lander_id,
            offer_id: c.offer_id,
            network_id: c.network_id,
            external_id: c.external_id.clone(),
            ..Conversion::default()
        })
        .collect()
}

/// One group's figures, counted from the events produced.
#[derive(Debug, Default, Clone, PartialEq)]
struct Expected {
    clicks: i64,
    bots: i64,
    lander_views: i64,
    lander_clicks: i64,
    offer_clicks: i64,
    conversions: i64,
    revenue_micros: i64,
    cost_micros: i64,
}

/// The figures by the id `of` picks from each click and conversion.
fn expected(
    clicks: &[Click],
    conversions: &[Conversion],
    of_click: impl Fn(&Click) -> u32,
    of_conversion: impl Fn(&Conversion) -> u32,
) -> BTreeMap<u32, Expected> {
    let mut groups: BTreeMap<u32, Expected> = BTreeMap::new();
    for c in clicks {
        let g = groups.entry(of_click(c)).or_default();
        let through = c.kind == ClickKind::LanderClick as i32;
        let visit = !through;
        g.cost_micros += c.cost_micros;
        if c.is_bot {
            g.bots += i64::from(visit);
            continue;
        }
        g.clicks += i64::from(visit);
        g.lander_views += i64::from(visit && c.lander_id != 0);
        g.lander_clicks += i64::from(through);
        g.offer_clicks += i64::from(through || (c.lander_id == 0 && c.offer_id != 0));
    }
    for v in conversions {
        let g = groups.entry(of_conversion(v)).or_default();
        g.conversions += 1;
        g.revenue_micros += v.revenue_micros;
    }
    groups
}

fn ratio(num: i64, den: i64) -> f64 {
    if den == 0 {
        0.0
    } else {
        ((num as f64 * 100.0 / den as f64) * 10_000.0).round() / 10_000.0
    }
}

async fn get(stack: &Stack, path: &str) -> anyhow::Result<(StatusCode, String)> {
    let response = stack.api(Method::GET, path).send().await?;
    Ok((response.status(), response.text().await?))
}

async fn json(stack: &Stack, path: &str) -> anyhow::Result<Value> {
    let (status, text) = get(stack, path).await?;
    anyhow::ensure!(status == StatusCode::OK, "{path} answered {status}: {text}");
    Ok(serde_json::from_str(&text)?)
}

/// Checks a report grouped by `dim` against `expected`, row for row and in its totals.
fn check_report(
    report: &Value,
    dim: &str,
    expected: &BTreeMap<u32, Expected>,
) -> anyhow::Result<()> {
    let rows = report["rows"].as_array().cloned().unwrap_or_default();
    anyhow::ensure!(
        rows.len() == expected.len(),
        "{dim}: {} rows, expected {}: {report}",
        rows.len(),
        expected.len()
    );
    let mut total = Expected::default();
    for row in &rows {
        let id: u32 = row[dim].as_str().unwrap_or_default().parse()?;
        let e = expected
            .get(&id)
            .ok_or_else(|| anyhow::anyhow!("{dim} {id} unexpected: {row}"))?;
        let actual = Expected {
            clicks: row["clicks"].as_i64().unwrap_or(-1),
            bots: row["bots"].as_i64().unwrap_or(-1),
            lander_views: row["lander_views"].as_i64().unwrap_or(-1),
            lander_clicks: row["lander_clicks"].as_i64().unwrap_or(-1),
            offer_clicks: row["offer_clicks"].as_i64().unwrap_or(-1),
            conversions: row["conversions"].as_i64().unwrap_or(-1),
            revenue_micros: e.revenue_micros,
            cost_micros: e.cost_micros,
        };
        anyhow::ensure!(&actual == e, "{dim} {id}: {row} against {e:?}");
        anyhow::ensure!(
            row["revenue"] == format_micros(e.revenue_micros).as_str()
                && row["cost"] == format_micros(e.cost_micros).as_str(),
            "{dim} {id} money: {row} against {e:?}"
        );
        anyhow::ensure!(
            row["lander_ctr"].as_f64() == Some(ratio(e.lander_clicks, e.lander_views))
                && row["offer_cr"].as_f64() == Some(ratio(e.conversions, e.offer_clicks))
                && row["cr"].as_f64() == Some(ratio(e.conversions, e.clicks)),
            "{dim} {id} ratios: {row} against {e:?}"
        );
        total.clicks += e.clicks;
        total.lander_views += e.lander_views;
        total.lander_clicks += e.lander_clicks;
        total.offer_clicks += e.offer_clicks;
        total.conversions += e.conversions;
    }
    let totals = &report["totals"];
    anyhow::ensure!(
        totals["clicks"].as_i64() == Some(total.clicks)
            && totals["lander_views"].as_i64() == Some(total.lander_views)
            && totals["lander_clicks"].as_i64() == Some(total.lander_clicks)
            && totals["offer_clicks"].as_i64() == Some(total.offer_clicks)
            && totals["conversions"].as_i64() == Some(total.conversions)
            && totals["lander_ctr"].as_f64()
                == Some(ratio(total.lander_clicks, total.lander_views)),
        "{dim} totals: {totals} against {total:?}"
    );
    Ok(())
}

/// The name a report row, log item or dashboard entry shows for `id`.
fn name_in(rows: &[Value], key: &str, id: u32, name_key: &str) -> Option<String> {
    rows.iter()
        .find(|r| r[key] == id.to_string().as_str() || r[key] == id)
        .and_then(|r| r[name_key].as_str().map(String::from))
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let producer = Producer::new(stack)?;
    let topics = producer.topics.clone();
    let currency = json(stack, "/api/v1/reports").await?["reporting_currency"]
        .as_str()
        .unwrap_or("USD")
        .to_string();
    let clicks = clicks(traffsure_core::now_ms() - 60_000);
    let conversions = conversions(&clicks, &currency);
    let keyed = |events: Vec<Click>| -> Vec<(u16, Click)> {
        events
            .into_iter()
            .map(|c| (c.routing_key as u16, c))
            .collect()
    };
    producer
        .send_raw(
            &topics.objects,
            &[
                object(ObjectKind::TrafficSource, 1, "Push A", 1),
                object(ObjectKind::TrafficSource, 2, "Native B", 1),
                object(ObjectKind::Offer, 10, "VPN", 1),
                object(ObjectKind::Offer, 11, "Dating", 1),
                object(ObjectKind::Lander, LANDER, "Quiz", 1),
                object(ObjectKind::AffiliateNetwork, NETWORK, "MaxBounty", 1),
            ],
        )
        .await?;
    producer
        .send(&topics.clicks, &keyed(clicks.clone()))
        .await?;
    let keyed_conversions: Vec<(u16, Conversion)> =
        conversions.iter().map(|v| (0u16, v.clone())).collect();
    producer
        .send(&topics.conversions, &keyed_conversions)
        .await?;
    // The rollups too: an insert's views write after its raw rows are visible, one view
    // after another, so every rollup a report reads is waited for (the payout rollup's
    // view runs after the funnel's; these conversions pay their revenue).
    let payout: i64 = conversions.iter().map(|v| v.revenue_micros).sum();
    let counts = format!(
        "{0}\t{1}\t6\t{0}\t{1}\t{payout}",
        clicks.len(),
        conversions.len()
    );
    eventually(Duration::from_secs(60), || async {
        let stored = stack
            .clickhouse(
                "SELECT (SELECT count() FROM clicks), (SELECT count() FROM conversions), \
                 (SELECT count() FROM tracker_objects), \
                 (SELECT sum(clicks) FROM clicks_funnel_hourly), \
                 (SELECT sum(conversions) FROM conversions_funnel_hourly), \
                 (SELECT sum(payout_micros) FROM conversions_payout_hourly)",
            )
            .await?;
        Ok((stored == counts).then_some(()))
    })
    .await?;

    // Reports by each object equal the counts of what was produced.
    let by_source = expected(
        &clicks,
        &conversions,
        |c| c.traffic_source_id,
        |v| v.traffic_source_id,
    );
    let by_lander = expected(&clicks, &conversions, |c| c.lander_id, |v| v.lander_id);
    let by_offer = expected(&clicks, &conversions, |c| c.offer_id, |v| v.offer_id);
    let by_network = expected(&clicks, &conversions, |c| c.network_id, |v| v.network_id);
    for (dim, expected) in [
        ("traffic_source", &by_source),
        ("lander", &by_lander),
        ("offer", &by_offer),
        ("network", &by_network),
    ] {
        let report = json(stack, &format!("/api/v1/reports?group_by={dim}")).await?;
        check_report(&report, dim, expected)?;
        // The raw tables answer the same (a filter the rollups lack sends both sides there).
        let raw = json(
            stack,
            &format!("/api/v1/reports?group_by={dim}&datacenter=false"),
        )
        .await?;
        anyhow::ensure!(
            raw["rows"] == report["rows"],
            "{dim}: raw {} against rollup {}",
            raw["rows"],
            report["rows"]
        );
    }
    let report = json(stack, "/api/v1/reports?group_by=offer").await?;
    let rows = report["rows"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        name_in(&rows, "offer", 10, "offer_name").as_deref(),
        Some("VPN")
    );
    assert_eq!(
        name_in(&rows, "offer", UNKNOWN_OFFER, "offer_name").as_deref(),
        Some("#99")
    );
    assert_eq!(
        name_in(&rows, "offer", 0, "offer_name").as_deref(),
        Some("")
    );
    let report = json(stack, "/api/v1/reports?group_by=traffic_source,lander").await?;
    let rows = report["rows"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        name_in(&rows, "traffic_source", 2, "traffic_source_name").as_deref(),
        Some("Native B")
    );
    assert!(rows.iter().any(|r| r["lander_name"] == "Quiz"), "{report}");

    // A filter by one object: the lander report of traffic source 2 alone.
    let only_source_2: Vec<Click> = clicks
        .iter()
        .filter(|c| c.traffic_source_id == 2)
        .cloned()
        .collect();
    let conversions_2: Vec<Conversion> = conversions
        .iter()
        .filter(|v| v.traffic_source_id == 2)
        .cloned()
        .collect();
    let report = json(stack, "/api/v1/reports?group_by=lander&traffic_source=2").await?;
    check_report(
        &report,
        "lander",
        &expected(
            &only_source_2,
            &conversions_2,
            |c| c.lander_id,
            |v| v.lander_id,
        ),
    )?;

    // CSV carries the JSON's rows, with each object's name beside its id.
    let report = json(
        stack,
        "/api/v1/reports?group_by=offer,network&sort=-offer_clicks",
    )
    .await?;
    let (status, csv) = get(
        stack,
        "/api/v1/reports?group_by=offer,network&sort=-offer_clicks&format=csv",
    )
    .await?;
    anyhow::ensure!(status == StatusCode::OK, "csv answered {status}: {csv}");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    assert_eq!(
        &header[..4],
        ["offer", "offer_name", "network", "network_name"]
    );
    let rows = report["rows"].as_array().cloned().unwrap_or_default();
    let csv_rows: Vec<&str> = lines.collect();
    assert_eq!(csv_rows.len(), rows.len());
    for (line, row) in csv_rows.iter().zip(&rows) {
        for (column, field) in header.iter().zip(line.split(',')) {
            let value = match &row[*column] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            assert_eq!(field, value, "csv column {column} of {line} against {row}");
        }
    }

    // The logs filter by object and kind, and show ids with names.
    let (status, body) = get(stack, "/api/v1/clicks?offer=abc").await?;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("\"offer\""), "{body}");
    let items = json(stack, "/api/v1/clicks?offer=10&limit=500").await?["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let expected_10 = clicks.iter().filter(|c| c.offer_id == 10).count();
    assert_eq!(items.len(), expected_10);
    assert!(items
        .iter()
        .all(|i| i["offer_id"] == 10 && i["offer_name"] == "VPN" && i["kind"] == "lander_click"));
    assert!(items.iter().all(|i| i["parent_click_hash"]
        .as_str()
        .is_some_and(|p| !p.is_empty())));
    let items = json(
        stack,
        "/api/v1/clicks?kind=direct_visit&traffic_source=2&limit=500",
    )
    .await?["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let expected_direct = clicks
        .iter()
        .filter(|c| c.kind == ClickKind::DirectVisit as i32 && c.traffic_source_id == 2)
        .count();
    assert_eq!(items.len(), expected_direct);
    assert!(items
        .iter()
        .all(|i| i["traffic_source_name"] == "Native B" && i["lander_name"] == "Quiz"));
    let items = json(stack, "/api/v1/conversions?network=30&limit=500").await?["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let expected_network = conversions
        .iter()
        .filter(|v| v.network_id == NETWORK)
        .count();
    assert_eq!(items.len(), expected_network);
    assert!(items.iter().all(|i| i["network_name"] == "MaxBounty"
        && i["external_id"]
            .as_str()
            .is_some_and(|e| e.starts_with("ext"))));

    // The funnel rollups equal the raw tables, group for group.
    for (rollup, table, raw, source) in [
        (
            "funnel_by_object",
            "clicks_funnel_hourly",
            "funnel_by_object_from_raw",
            "clicks",
        ),
        (
            "conversions_by_object",
            "conversions_funnel_hourly",
            "conversions_by_object_from_raw",
            "conversions",
        ),
    ] {
        let example =
            |name: &str, table: &str| traffsure_clickhouse::queries::get(name).example_for(table);
        let rolled_up = stack.clickhouse(&example(rollup, table)).await?;
        let counted = stack.clickhouse(&example(raw, source)).await?;
        assert!(!counted.is_empty(), "nothing in {source}");
        assert_eq!(rolled_up, counted, "{table} against {source}");
    }

    // The dashboard's top lists: traffic sources by clicks, offers by offer clicks.
    let dashboard = stack.dashboard_at_midday().await?;
    let top = &dashboard["top_today"];
    let best_offer = by_offer
        .iter()
        .filter(|(id, _)| **id != 0)
        .max_by_key(|(id, e)| (e.offer_clicks, std::cmp::Reverse(**id)))
        .map(|(id, _)| *id);
    assert_eq!(
        top["offers"][0]["id"].as_u64().map(|id| id as u32),
        best_offer,
        "{top}"
    );
    let sources = top["traffic_sources"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(sources.len(), 2, "{top}");
    for s in &sources {
        let id = s["id"].as_u64().unwrap_or_default() as u32;
        assert_eq!(s["clicks"].as_i64(), Some(by_source[&id].clicks), "{top}");
    }
    assert_eq!(
        name_in(&sources, "id", 1, "name").as_deref(),
        Some("Push A")
    );

    // A rename (a higher revision) shows in reports and logs; events keep the id.
    producer
        .send_raw(
            &topics.objects,
            &[object(ObjectKind::Offer, 10, "VPN Pro", 2)],
        )
        .await?;
    eventually(Duration::from_secs(30), || async {
        let report = json(stack, "/api/v1/reports?group_by=offer").await?;
        let rows = report["rows"].as_array().cloned().unwrap_or_default();
        Ok((name_in(&rows, "offer", 10, "offer_name").as_deref() == Some("VPN Pro")).then_some(()))
    })
    .await?;
    let items = json(stack, "/api/v1/clicks?offer=10&limit=1").await?["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(items[0]["offer_name"], "VPN Pro");
    Ok(())
}

/// The statements that query the rollups before and after: each old rollup's groups and
/// sums, and the same from its funnel rollup (by the old keys; no lander click exists).
const BEFORE_AND_AFTER: &[(&str, &str)] = &[
    (
        "SELECT hour, flow_id, country, source, sub_id, device, os, browser, sum(clicks), \
         sum(bots), uniqMerge(unique_clicks) FROM clicks_hourly \
         GROUP BY hour, flow_id, country, source, sub_id, device, os, browser \
         ORDER BY hour, flow_id, country, source, sub_id, device, os, browser",
        "SELECT hour, flow_id, country, source, sub_id, device, os, browser, \
         sumIf(clicks, kind != 1), sumIf(bots, kind != 1), uniqMergeIf(unique_clicks, kind != 1) \
         FROM clicks_funnel_hourly \
         GROUP BY hour, flow_id, country, source, sub_id, device, os, browser \
         ORDER BY hour, flow_id, country, source, sub_id, device, os, browser",
    ),
    (
        "SELECT hour, flow_id, cost_currency, sum(cost_micros) FROM clicks_cost_hourly \
         GROUP BY hour, flow_id, cost_currency HAVING sum(cost_micros) != 0 \
         ORDER BY hour, flow_id, cost_currency",
        "SELECT hour, flow_id, cost_currency, sum(cost_micros) FROM clicks_funnel_hourly \
         GROUP BY hour, flow_id, cost_currency HAVING sum(cost_micros) != 0 \
         ORDER BY hour, flow_id, cost_currency",
    ),
    (
        "SELECT hour, flow_id, country, source, sub_id, goal, status, currency, \
         sum(conversions), sum(revenue_micros) FROM conversions_hourly_currency \
         GROUP BY hour, flow_id, country, source, sub_id, goal, status, currency \
         ORDER BY hour, flow_id, country, source, sub_id, goal, status, currency",
        "SELECT hour, flow_id, country, source, sub_id, goal, status, currency, \
         sum(conversions), sum(revenue_micros) FROM conversions_funnel_hourly \
         GROUP BY hour, flow_id, country, source, sub_id, goal, status, currency \
         ORDER BY hour, flow_id, country, source, sub_id, goal, status, currency",
    ),
];

/// Clicks (bots among them, costs in two currencies) and conversions (some approved
/// after pending) over three months, written by the schema before 0010.
const HISTORY: &[&str] = &[
    "INSERT INTO clicks (click_hash, flow_id, ts, ts_ms, visitor_id, country, source, sub_id, device, os, browser, cost_micros, cost_currency, is_bot, kafka_partition, kafka_offset) \
     SELECT concat('h', toString(number)), toUInt32(1 + number % 3), toDateTime('2026-08-20 00:00:00') + number * 2500, 0, \
         toString(number % 97), if(number % 2 = 0, 'US', 'DE'), 'push', toString(number % 5), 'desktop', 'linux', 'firefox', \
         toInt64(1000 + number % 7 * 250), if(number % 3 = 0, 'EUR', ''), toUInt8(number % 11 = 0), toUInt16(number % 4), number \
     FROM system.numbers LIMIT 3000",
    "INSERT INTO conversions (conversion_id, version, click_hash, flow_id, goal, status, previous_status, revenue_micros, previous_revenue_micros, currency, created_at, country, source, sub_id, kafka_partition, kafka_offset) \
     SELECT toString(number), toUInt32(1 + (number % 3 = 0)), concat('h', toString(number)), toUInt32(1 + number % 3), 'sale', \
         if(number % 3 = 0, 'approved', 'pending'), if(number % 3 = 0, 'pending', ''), \
         toInt64(1000000 + number % 5 * 500000), if(number % 3 = 0, toInt64(500000), toInt64(0)), \
         if(number % 2 = 0, 'USD', 'EUR'), toDateTime('2026-08-20 00:00:00') + number * 6000, \
         'US', 'push', toString(number % 5), toUInt16(number % 4), number \
     FROM system.numbers LIMIT 1200",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_stored_before_the_migration_report_the_same_after() -> anyhow::Result<()> {
    let name = format!(
        "test_objects_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let settings = ClickHouseSettings {
        url: clickhouse_url(),
        database: name.clone(),
        ..ClickHouseSettings::default()
    };
    let http = reqwest::Client::new();
    let run = |sql: String, in_database: bool| {
        let (http, url, name) = (http.clone(), settings.url.clone(), name.clone());
        async move {
            let mut request = http.post(&url).body(sql);
            if in_database {
                request = request.query(&[("database", name.as_str())]);
            }
            let response = request.send().await?;
            let status = response.status();
            let text = response.text().await?;
            anyhow::ensure!(status.is_success(), "clickhouse answered {status}: {text}");
            anyhow::Ok(text.trim().to_string())
        }
    };
    run(format!("CREATE DATABASE {name}"), false).await?;
    let result = async {
        run(
            "CREATE TABLE schema_migrations (version UInt32, name String, applied_at DateTime) \
             ENGINE = ReplacingMergeTree() ORDER BY version"
                .into(),
            true,
        )
        .await?;
        let before_0010 = traffsure_clickhouse::MIGRATIONS
            .iter()
            .take_while(|(version, _, _)| *version < 10);
        for (version, migration, sql) in before_0010 {
            for statement in traffsure_clickhouse::statements(sql) {
                run(statement, true).await?;
            }
            run(
                format!("INSERT INTO schema_migrations SELECT {version}, '{migration}', now()"),
                true,
            )
            .await?;
        }
        for insert in HISTORY {
            run(insert.to_string(), true).await?;
        }
        let mut before = Vec::new();
        for (old, _) in BEFORE_AND_AFTER {
            let answer = run(old.to_string(), true).await?;
            anyhow::ensure!(answer.lines().count() > 100, "too little history: {answer}");
            before.push(answer);
        }
        traffsure_clickhouse::migrate(&settings).await?;
        for ((old, new), answer) in BEFORE_AND_AFTER.iter().zip(&before) {
            assert_eq!(&run(old.to_string(), true).await?, answer, "{old}");
            assert_eq!(&run(new.to_string(), true).await?, answer, "{new}");
        }
        // Old rows read as visits without objects.
        let objects = run(
            "SELECT count(), sum(kind), sum(traffic_source_id + offer_id + lander_id + network_id) \
             FROM clicks"
                .into(),
            true,
        )
        .await?;
        assert_eq!(objects, "3000\t0\t0");
        anyhow::Ok(())
    }
    .await;
    run(format!("DROP DATABASE IF EXISTS {name}"), false).await?;
    result
}

//! The reporting API against the real ClickHouse with known data written straight into
//! the test database: every filter, every group-by, totals equal to raw counts, stable
//! pages under concurrent inserts, SQL-injection strings through every filter, and the
//! login, CSRF and API-key rules.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use traffsure_tests::{Stack, StackOptions, ADMIN_PASSWORD, ADMIN_USERNAME, API_KEY};

const CLICKS: u64 = 400;
const CONVERSIONS: u64 = 90;

/// Clicks over the last 25 days across 3 flows, 4 countries, 5 sources and every other
/// dimension; conversions with status changes; postback log and outbound log rows.
async fn load_known_data(stack: &Stack) -> anyhow::Result<()> {
    // One base time, so every version of a conversion has the same created_at.
    let base = stack.clickhouse("SELECT toUInt32(now())").await?;
    stack
        .clickhouse(&format!(
            "INSERT INTO clicks (click_hash, flow_id, ts, ts_ms, visitor_id, ip, country, device, os, browser, \
                 sub_id, source, sub1, sub2, sub3, sub4, sub5, sub6, sub7, sub8, sub9, sub10, cost_micros, \
                 destination_url, is_bot) \
             SELECT concat('h', toString(number)), toUInt32(1 + number % 3), t, toInt64(toUInt32(t)) * 1000 + number % 1000, \
                 toString(number % 50), '10.0.0.1', ['DE', 'US', 'FR', 'GB'][number % 4 + 1], \
                 ['mobile', 'desktop', 'tablet'][number % 3 + 1], ['Android', 'iOS'][number % 2 + 1], \
                 ['Chrome', 'Safari', 'Firefox'][number % 3 + 1], concat('sid', toString(number % 2)), \
                 concat('src', toString(number % 5)), concat('a', toString(number % 2)), concat('b', toString(number % 3)), \
                 concat('c', toString(number % 4)), concat('d', toString(number % 5)), concat('e', toString(number % 6)), \
                 concat('f', toString(number % 7)), concat('g', toString(number % 2)), concat('h', toString(number % 3)), \
                 concat('i', toString(number % 4)), concat('j', toString(number % 5)), toInt64(number * 1000), \
                 'https://offer.example/', toUInt8(number % 10 = 0) \
             FROM (SELECT number, now() - number * 5400 AS t FROM system.numbers LIMIT {CLICKS})"
        ))
        .await?;
    // Version 1 of every conversion; a third start pending, the rest approved.
    let conversion_columns = "conversion_id, version, click_hash, flow_id, goal, status, previous_status, \
        revenue_micros, previous_revenue_micros, currency, uid, created_at, updated_at, country, source, sub_id, sub1, device";
    let conversion_values = "concat('conv', toString(number)), toUInt32(V), concat('h', toString(number * 4)), \
        toUInt32(1 + number * 4 % 3), ['sale', 'lead'][number % 2 + 1], S, P, toInt64((number % 5 + 1) * 1000000), PR, \
        'USD', concat('uid', toString(number)), toDateTime(BASE - number * 4 * 5400), now(), ['DE', 'US', 'FR', 'GB'][number * 4 % 4 + 1], \
        concat('src', toString(number * 4 % 5)), concat('sid', toString(number * 4 % 2)), concat('a', toString(number * 4 % 2)), \
        ['mobile', 'desktop', 'tablet'][number * 4 % 3 + 1]";
    let insert = |version: &str, status: &str, previous: &str, condition: &str| {
        format!(
            "INSERT INTO conversions ({conversion_columns}) SELECT {} FROM system.numbers WHERE {condition} LIMIT {CONVERSIONS}",
            conversion_values
                .replace("BASE", &base)
                .replace("toUInt32(V)", &format!("toUInt32({version})"))
                .replace(", S, P,", &format!(", {status}, {previous},"))
                // A version after the first carries the revenue it replaces (unchanged here).
                .replace(
                    ", PR,",
                    if version == "1" {
                        ", toInt64(0),"
                    } else {
                        ", toInt64((number % 5 + 1) * 1000000),"
                    },
                )
        )
    };
    // system.numbers is unbounded: bound it first so LIMIT after WHERE stays finite.
    let bounded = |sql: String| {
        sql.replace(
            "FROM system.numbers WHERE",
            &format!("FROM (SELECT number FROM system.numbers LIMIT {CONVERSIONS}) WHERE"),
        )
    };
    stack
        .clickhouse(&bounded(insert(
            "1",
            "if(number % 3 = 0, 'pending', 'approved')",
            "''",
            "1",
        )))
        .await?;
    // Pending → approved for every sixth; approved → rejected (chargeback) for every seventh.
    stack
        .clickhouse(&bounded(insert(
            "2",
            "'approved'",
            "'pending'",
            "number % 6 = 0",
        )))
        .await?;
    stack
        .clickhouse(&bounded(insert(
            "2",
            "'rejected'",
            "'approved'",
            "number % 7 = 0 AND number % 3 != 0",
        )))
        .await?;
    stack
        .clickhouse(
            "INSERT INTO postback_log (postback_id, received_at, received_at_ms, flow_id, click_hash, goal, \
                 response_status, reason, message, ip, method, content_type, path, param_names, param_values, delta_ms) \
             SELECT concat('pb', toString(number)), now() - number * 3600, (toInt64(toUInt32(now())) - number * 3600) * 1000, \
                 toUInt32(1 + number % 3), concat('h', toString(number)), 'sale', [200, 404, 422][number % 3 + 1], \
                 ['accepted', 'click_not_found', 'invalid_revenue'][number % 3 + 1], 'm', '10.0.0.2', 'GET', '', '/postback', \
                 ['click', 'tx', 'revenue'], [concat('h', toString(number)), concat('Order-', toString(number)), '4.00'], number * 1000 \
             FROM (SELECT number FROM system.numbers LIMIT 30)",
        )
        .await?;
    stack
        .clickhouse(
            "INSERT INTO outbound_log (attempt_id, conversion_id, outbound_id, flow_id, click_hash, goal, status, \
                 revenue_micros, currency, method, url, http_status, error, latency_ms, attempt, state, attempted_at, \
                 attempted_at_ms, manual) \
             SELECT concat('at', toString(number)), concat('conv', toString(number % 5)), 'o1', toUInt32(1 + number % 2), \
                 'h1', 'sale', 'approved', 1000000, 'USD', 'GET', concat('https://source.example/pb?n=', toString(number)), \
                 [200, 500][number % 2 + 1], ['', 'http 500'][number % 2 + 1], 12, toUInt32(1 + number % 3), \
                 ['delivered', 'retrying'][number % 2 + 1], now() - number * 60, (toInt64(toUInt32(now())) - number * 60) * 1000, 0 \
             FROM (SELECT number FROM system.numbers LIMIT 12)",
        )
        .await?;
    Ok(())
}

async fn get(stack: &Stack, path: &str) -> anyhow::Result<(StatusCode, Value)> {
    let response = stack.api(Method::GET, path).send().await?;
    let status = response.status();
    let text = response.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, body))
}

async fn ok(stack: &Stack, path: &str) -> anyhow::Result<Value> {
    let (status, body) = get(stack, path).await?;
    anyhow::ensure!(status == 200, "{path} answered {status}: {body}");
    Ok(body)
}

async fn raw_count(stack: &Stack, sql: &str) -> anyhow::Result<u64> {
    Ok(stack.clickhouse(sql).await?.parse()?)
}

/// Every item of a list endpoint, following cursors with small pages.
async fn all_pages(stack: &Stack, path: &str, id: &str) -> anyhow::Result<Vec<Value>> {
    let mut items = Vec::new();
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut url = format!("{path}{sep}limit=37");
    loop {
        let page = ok(stack, &url).await?;
        let batch = page["items"].as_array().cloned().unwrap_or_default();
        assert!(batch.len() <= 37);
        items.extend(batch);
        match page["next_cursor"].as_str() {
            Some(cursor) => url = format!("{path}{sep}limit=37&cursor={cursor}"),
            None => break,
        }
    }
    let ids: HashSet<_> = items.iter().map(|i| i[id].to_string()).collect();
    assert_eq!(ids.len(), items.len(), "{path}: a row came twice");
    Ok(items)
}

fn field_of(body: &Value) -> &str {
    body["field"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_group_bys_and_totals_match_raw_counts() -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions::default().services(&["reporting-api"])).await?;
    load_known_data(&stack).await?;
    let result = check_reads(&stack).await;
    stack.print_failure(&result);
    result
}

async fn check_reads(stack: &Stack) -> anyhow::Result<()> {
    // Dashboard: today's figures from the rollups equal the raw tables.
    let dashboard = ok(stack, "/api/v1/dashboard").await?;
    let clicks_today = raw_count(
        stack,
        "SELECT count() FROM clicks WHERE ts >= toStartOfDay(now()) AND is_bot = 0",
    )
    .await?;
    assert_eq!(dashboard["clicks_today"], clicks_today);
    let current = "SELECT conversion_id, argMax(status, version) AS st, argMax(revenue_micros, version) AS rev, \
                   any(created_at) AS c FROM conversions GROUP BY conversion_id";
    let conversions_today = raw_count(stack, &format!(
        "SELECT count() FROM ({current}) WHERE st IN ('approved', 'pending') AND c >= toStartOfDay(now())"
    ))
    .await?;
    assert_eq!(dashboard["conversions_today"], conversions_today);
    let by_status = &dashboard["conversions_by_status"];
    assert_eq!(
        by_status["approved"].as_u64().unwrap_or(0) + by_status["pending"].as_u64().unwrap_or(0),
        conversions_today
    );
    assert!(by_status["rejected"].is_u64(), "{by_status}");
    let hourly_clicks: i64 = dashboard["hourly"]["today"]
        .as_array()
        .map(|a| a.iter().map(|p| p["clicks"].as_i64().unwrap_or(0)).sum())
        .unwrap_or(0);
    assert_eq!(hourly_clicks as u64, clicks_today);
    assert_eq!(
        dashboard["hourly"]["yesterday"].as_array().map(Vec::len),
        Some(24)
    );

    // Clicks: each filter, through every page, equals the raw count.
    for (filter, condition) in [
        ("", "1"),
        ("flow=2", "flow_id = 2"),
        ("country=de", "country = 'DE'"),
        ("sub_id=sid1", "sub_id = 'sid1'"),
        ("source=src3", "source = 'src3'"),
        ("bots=exclude", "is_bot = 0"),
        ("bots=only", "is_bot = 1"),
        (
            "flow=1&country=US&bots=exclude",
            "flow_id = 1 AND country = 'US' AND is_bot = 0",
        ),
    ] {
        let items = all_pages(stack, &format!("/api/v1/clicks?{filter}"), "click_hash").await?;
        let expected = raw_count(
            stack,
            &format!("SELECT count() FROM clicks WHERE {condition}"),
        )
        .await?;
        assert_eq!(items.len() as u64, expected, "clicks?{filter}");
    }
    let dates = stack
        .clickhouse("SELECT toString(today() - 10), toString(today() - 3) FORMAT TSV")
        .await?;
    let (from, to) = dates.split_once('\t').unwrap_or_default();
    let ranged = all_pages(
        stack,
        &format!("/api/v1/clicks?from={from}&to={to}"),
        "click_hash",
    )
    .await?;
    let expected = raw_count(
        stack,
        &format!(
        "SELECT count() FROM clicks WHERE toDate(ts) BETWEEN toDate('{from}') AND toDate('{to}')"
    ),
    )
    .await?;
    assert_eq!(ranged.len() as u64, expected);
    assert!(expected > 0 && expected < CLICKS);
    // Newest first.
    let first = ok(stack, "/api/v1/clicks").await?;
    assert_eq!(first["items"].as_array().map(Vec::len), Some(50));
    assert_eq!(first["items"][0]["click_hash"], "h0");
    // Each click with its subs (h1: sub1 `a1` … sub10 `j1`) and fraud signals (none
    // looked up for these rows: 0 and false).
    let h1 = &first["items"][1];
    assert_eq!(h1["click_hash"], "h1");
    let subs: Vec<&str> = (1..=10)
        .map(|n| h1[format!("sub{n}")].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        subs,
        ["a1", "b1", "c1", "d1", "e1", "f1", "g1", "h1", "i1", "j1"],
        "{h1}"
    );
    assert_eq!(
        (
            &h1["asn"],
            &h1["as_org"],
            &h1["datacenter"],
            &h1["rate_exceeded"]
        ),
        (&json!(0), &json!(""), &json!(false), &json!(false)),
        "{h1}"
    );

    // Pages stay stable while new clicks arrive.
    let page1 = ok(stack, "/api/v1/clicks?limit=20").await?;
    stack
        .clickhouse(
            "INSERT INTO clicks (click_hash, flow_id, ts, ts_ms, country) \
             SELECT concat('new', toString(number)), 1, now(), toInt64(toUInt32(now())) * 1000 + 999, 'DE' \
             FROM (SELECT number FROM system.numbers LIMIT 5)",
        )
        .await?;
    let cursor = page1["next_cursor"].as_str().unwrap_or_default();
    let page2 = ok(stack, &format!("/api/v1/clicks?limit=20&cursor={cursor}")).await?;
    let seen: HashSet<String> = page1["items"]
        .as_array()
        .into_iter()
        .chain(page2["items"].as_array())
        .flatten()
        .map(|i| i["click_hash"].to_string())
        .collect();
    assert_eq!(seen.len(), 40, "pages overlapped after an insert");
    assert!(!seen.iter().any(|h| h.contains("new")));
    assert_eq!(page2["items"][0]["click_hash"], "h20");

    // Conversions in their current state: each filter equals the raw count.
    for (filter, condition) in [
        ("", "1"),
        ("flow=3", "f = 3"),
        ("goal=SALE", "g = 'sale'"),
        ("status=approved", "st = 'approved'"),
        ("status=pending", "st = 'pending'"),
        ("status=rejected", "st = 'rejected'"),
        (
            "goal=lead&status=approved",
            "g = 'lead' AND st = 'approved'",
        ),
    ] {
        let items = all_pages(
            stack,
            &format!("/api/v1/conversions?{filter}"),
            "conversion_id",
        )
        .await?;
        let expected = raw_count(stack, &format!(
            "SELECT count() FROM (SELECT conversion_id, argMax(status, version) AS st, any(goal) AS g, any(flow_id) AS f \
             FROM conversions GROUP BY conversion_id) WHERE {condition}"
        ))
        .await?;
        assert_eq!(items.len() as u64, expected, "conversions?{filter}");
    }
    let conv = ok(stack, "/api/v1/conversions?status=rejected&limit=1").await?;
    assert_eq!(conv["items"][0]["status"], "rejected");
    assert_eq!(conv["items"][0]["version"], 2);
    // Each conversion with what it copied from its click: conv1 (number 1) is DE, src4,
    // sid0, sub1 a0, desktop.
    let page = ok(stack, "/api/v1/conversions?limit=500").await?;
    let conv1 = page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["conversion_id"] == "conv1")
        .ok_or_else(|| anyhow::anyhow!("conv1 not listed: {page}"))?;
    let copied: Vec<&str> = ["country", "source", "sub_id", "sub1", "sub2", "device"]
        .iter()
        .map(|field| conv1[*field].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        copied,
        ["DE", "src4", "sid0", "a0", "", "desktop"],
        "{conv1}"
    );

    // Postback log: filters, the search box (partial, any case) and one entry's payload.
    for (filter, expected) in [
        ("", 30),
        ("flow=1", 10),
        ("response_status=404", 10),
        // The older name of response_status.
        ("status=404", 10),
        ("click=h7", 1),
        ("q=order-1", 11),
        ("q=ORDER-29", 1),
        ("q=4.00&response_status=200", 10),
        ("q=h2", 11),
    ] {
        let items = all_pages(stack, &format!("/api/v1/postbacks?{filter}"), "postback_id").await?;
        assert_eq!(items.len(), expected, "postbacks?{filter}");
    }
    let entry = ok(stack, "/api/v1/postbacks/pb4").await?;
    assert_eq!(entry["response_status"], 404);
    assert_eq!(
        entry["payload"]["params"][1],
        json!({"name": "tx", "value": "Order-4"})
    );
    let (status, _) = get(stack, "/api/v1/postbacks/nope").await?;
    assert_eq!(status, 404);

    // Outbound postbacks.
    for (filter, expected) in [
        ("", 12),
        ("flow=2", 6),
        ("conversion_id=conv3", 2),
        // The older name of conversion_id.
        ("conversion=conv3", 2),
        ("state=dead", 0),
        ("state=retrying", 6),
    ] {
        let items = all_pages(
            stack,
            &format!("/api/v1/outbound-postbacks?{filter}"),
            "attempt_id",
        )
        .await?;
        assert_eq!(items.len(), expected, "outbound?{filter}");
    }
    let (status, body) = get(stack, "/api/v1/outbound-postbacks?flow=1").await?;
    assert_eq!(status, 200);
    assert_eq!(body["items"][0]["http_status"], 200);
    let replay = stack
        .api(Method::POST, "/api/v1/outbound-postbacks/replay")
        .json(&json!({"conversion_id": "conv1"}))
        .send()
        .await?;
    assert_eq!(replay.status(), 503, "no dispatcher is configured");

    // Reports: every dimension alone sums to the raw totals over the same range.
    let first_day = stack.clickhouse("SELECT toString(today() - 40)").await?;
    let range = format!(
        "from={first_day}&to={}",
        stack.clickhouse("SELECT toString(today())").await?
    );
    let raw_clicks = raw_count(stack, "SELECT count() FROM clicks WHERE is_bot = 0").await?;
    let raw_approved = raw_count(
        stack,
        &format!("SELECT count() FROM ({current}) WHERE st = 'approved'"),
    )
    .await?;
    let raw_revenue = raw_count(
        stack,
        &format!("SELECT sum(rev) FROM ({current}) WHERE st = 'approved'"),
    )
    .await?;
    let raw_cost = raw_count(stack, "SELECT sum(cost_micros) FROM clicks").await?;
    for dim in [
        "day",
        "hour",
        "flow",
        "country",
        "source",
        "sub_id",
        "sub1",
        "sub2",
        "sub3",
        "sub4",
        "sub5",
        "sub6",
        "sub7",
        "sub8",
        "sub9",
        "sub10",
        "goal",
        "device",
        "os",
        "browser",
        "asn",
        "as_org",
        "datacenter",
        "rate_exceeded",
    ] {
        let report = ok(stack, &format!("/api/v1/reports?group_by={dim}&{range}")).await?;
        let rows = report["rows"].as_array().cloned().unwrap_or_default();
        let sum = |key: &str| -> i64 { rows.iter().map(|r| r[key].as_i64().unwrap_or(0)).sum() };
        assert_eq!(sum("clicks") as u64, raw_clicks, "clicks by {dim}");
        assert_eq!(sum("approved") as u64, raw_approved, "approved by {dim}");
        assert_eq!(report["totals"]["clicks"], raw_clicks, "{dim}");
        assert!(rows.iter().all(|r| r.get(dim).is_some()), "{dim}");
        let revenue: f64 = report["totals"]["revenue"]
            .as_str()
            .unwrap_or("0")
            .parse()?;
        assert_eq!(
            (revenue * 1e6).round() as u64,
            raw_revenue,
            "revenue by {dim}"
        );
        let cost: f64 = report["totals"]["cost"].as_str().unwrap_or("0").parse()?;
        assert_eq!((cost * 1e6).round() as u64, raw_cost, "cost by {dim}");
    }
    // Unique clicks on request: per flow, the distinct visitors of the raw table.
    let uniques = ok(
        stack,
        &format!("/api/v1/reports?group_by=flow&unique_clicks=true&sort=flow&{range}"),
    )
    .await?;
    let got: Vec<String> = uniques["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{}:{}",
                r["flow"].as_str().unwrap_or_default(),
                r["unique_clicks"]
            )
        })
        .collect();
    let expected = stack
        .clickhouse("SELECT arrayStringConcat(groupArray(x), ',') FROM (SELECT concat(toString(flow_id), ':', toString(uniqExact(visitor_id))) AS x FROM clicks GROUP BY flow_id ORDER BY flow_id)")
        .await?;
    assert_eq!(got.join(","), expected);
    let without = ok(stack, &format!("/api/v1/reports?group_by=flow&{range}")).await?;
    assert_eq!(without["totals"]["unique_clicks"], Value::Null);

    // Group by several, filter, sort, time zone, CSV.
    let report = ok(
        stack,
        &format!("/api/v1/reports?group_by=flow,country&flow=2&sort=-clicks&{range}"),
    )
    .await?;
    let rows = report["rows"].as_array().cloned().unwrap_or_default();
    assert!(rows.iter().all(|r| r["flow"] == "2"));
    let clicks: Vec<i64> = rows
        .iter()
        .map(|r| r["clicks"].as_i64().unwrap_or(0))
        .collect();
    assert!(clicks.windows(2).all(|w| w[0] >= w[1]), "{clicks:?}");
    assert_eq!(
        clicks.iter().sum::<i64>() as u64,
        raw_count(
            stack,
            "SELECT count() FROM clicks WHERE flow_id = 2 AND is_bot = 0"
        )
        .await?
    );
    // The range is read in the report's timezone, where "today" is UTC's tomorrow from
    // 15:00 UTC on: clicks made now would fall after UTC's today.
    let tokyo_range = format!(
        "from={first_day}&to={}",
        stack
            .clickhouse("SELECT toString(toDate(now(), 'Asia/Tokyo'))")
            .await?
    );
    let tokyo = ok(
        stack,
        &format!("/api/v1/reports?group_by=day&timezone=Asia/Tokyo&{tokyo_range}"),
    )
    .await?;
    let tokyo_days: Vec<&str> = tokyo["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["clicks"].as_i64().unwrap_or(0) > 0)
        .filter_map(|r| r["day"].as_str())
        .collect();
    assert_eq!(tokyo["totals"]["clicks"], raw_clicks);
    let expected_days = stack
        .clickhouse(&format!(
            "SELECT arrayStringConcat(groupArray(d), ',') FROM (SELECT DISTINCT toString(toDate(ts, 'Asia/Tokyo')) AS d FROM clicks \
             WHERE is_bot = 0 AND ts >= toDateTime('{first_day} 00:00:00', 'Asia/Tokyo') ORDER BY d)"
        ))
        .await?;
    let mut sorted = tokyo_days.clone();
    sorted.sort();
    assert_eq!(sorted.join(","), expected_days);
    let csv = stack
        .api(
            Method::GET,
            &format!("/api/v1/reports?group_by=country,goal&format=csv&{range}"),
        )
        .send()
        .await?;
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()?
        .starts_with("text/csv"));
    let csv = csv.text().await?;
    let mut lines = csv.lines();
    assert!(lines
        .next()
        .unwrap_or_default()
        .starts_with("country,goal,clicks,unique_clicks,"));
    // Four countries with clicks (no goal) and two goals converting in one country.
    assert_eq!(lines.count(), 6, "{csv}");

    // Bad input: 422 naming the field.
    for (path, field) in [
        ("/api/v1/clicks?country=Germany", "country"),
        ("/api/v1/clicks?from=yesterday", "from"),
        ("/api/v1/clicks?from=2026-02-01&to=2026-01-01", "to"),
        ("/api/v1/clicks?limit=5000", "limit"),
        ("/api/v1/clicks?cursor=zzz", "cursor"),
        ("/api/v1/clicks?flow=no-such-flow", "flow"),
        ("/api/v1/clicks?colour=red", "colour"),
        ("/api/v1/conversions?status=won", "status"),
        ("/api/v1/outbound-postbacks?state=lost", "state"),
        ("/api/v1/postbacks?response_status=abc", "response_status"),
        ("/api/v1/postbacks?response_status=99", "response_status"),
        ("/api/v1/postbacks?status=abc", "status"),
        ("/api/v1/postbacks?status=200&response_status=200", "status"),
        (
            "/api/v1/outbound-postbacks?conversion=a&conversion_id=a",
            "conversion",
        ),
        ("/api/v1/reports?group_by=day,weather", "group_by"),
        ("/api/v1/reports?group_by=day,day", "group_by"),
        ("/api/v1/reports?sort=-profitability", "sort"),
        ("/api/v1/reports?sort=unique_clicks", "sort"),
        ("/api/v1/reports?unique_clicks=maybe", "unique_clicks"),
        ("/api/v1/reports?timezone=Mars/Olympus", "timezone"),
        ("/api/v1/reports?format=xlsx", "format"),
    ] {
        let (status, body) = get(stack, path).await?;
        assert_eq!(status, 422, "{path}: {body}");
        assert_eq!(field_of(&body), field, "{path}: {body}");
    }
    Ok(())
}

const INJECTIONS: &[&str] = &[
    "' OR 1=1 --",
    "x'; DROP TABLE clicks; --",
    "\\' OR '1'='1",
    "1) OR (1=1",
    "`clicks`",
    "%' UNION SELECT name FROM system.tables --",
    "? ?? {x:String}",
    "DE' OR country != '",
    "2026-01-01' OR 1=1 --",
    "day, (SELECT 1)",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_injection_strings_through_every_filter_change_nothing() -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions::default().services(&["reporting-api"])).await?;
    load_known_data(&stack).await?;
    let endpoints: &[(&str, &[&str])] = &[
        (
            "/api/v1/clicks",
            &[
                "flow", "country", "sub_id", "source", "from", "to", "timezone", "bots", "cursor",
                "limit",
            ],
        ),
        (
            "/api/v1/conversions",
            &[
                "flow", "goal", "status", "from", "to", "timezone", "cursor", "limit",
            ],
        ),
        (
            "/api/v1/postbacks",
            &[
                "flow",
                "click",
                "response_status",
                "status",
                "q",
                "from",
                "to",
                "timezone",
                "cursor",
                "limit",
            ],
        ),
        (
            "/api/v1/outbound-postbacks",
            &[
                "flow",
                "conversion_id",
                "conversion",
                "outbound_id",
                "traffic_source_id",
                "offer_id",
                "goal",
                "status",
                "revenue",
                "payout",
                "currency",
                "reason",
                "http_status",
                "error",
                "url",
                "integration",
                "postback_type",
                "format",
                "state",
                "from",
                "to",
                "timezone",
                "cursor",
                "limit",
            ],
        ),
        (
            "/api/v1/reports",
            &[
                "group_by",
                "from",
                "to",
                "timezone",
                "flow",
                "country",
                "source",
                "sub_id",
                "goal",
                "sort",
                "format",
                "unique_clicks",
            ],
        ),
    ];
    let before = stack.clickhouse("SELECT count() FROM clicks").await?;
    let mut answered = 0;
    for (endpoint, params) in endpoints {
        for param in *params {
            for attack in INJECTIONS {
                let response = stack
                    .api(Method::GET, endpoint)
                    .query(&[(*param, *attack)])
                    .send()
                    .await?;
                let status = response.status();
                let body: Value = response.json().await?;
                answered += 1;
                match status.as_u16() {
                    // Refused, naming the parameter.
                    422 => assert_eq!(
                        field_of(&body),
                        *param,
                        "{endpoint}?{param}={attack}: {body}"
                    ),
                    // Accepted as a plain value that matches nothing.
                    200 if *endpoint == "/api/v1/reports" => {
                        let totals = &body["totals"];
                        assert_eq!(
                            totals["conversions"], 0,
                            "{endpoint}?{param}={attack}: {body}"
                        );
                        assert_eq!(totals["rejected"], 0, "{endpoint}?{param}={attack}: {body}");
                        if *param != "goal" {
                            assert_eq!(totals["clicks"], 0, "{endpoint}?{param}={attack}: {body}");
                        }
                    }
                    200 => {
                        let rows = body.get("items");
                        assert_eq!(
                            rows.and_then(Value::as_array).map(Vec::len),
                            Some(0),
                            "{endpoint}?{param}={attack} matched rows: {body}"
                        );
                    }
                    other => panic!("{endpoint}?{param}={attack} answered {other}: {body}"),
                }
            }
        }
        for attack in INJECTIONS {
            let path = format!("/api/v1/postbacks/{}", urlencode(attack));
            let (status, body) = get(&stack, &path).await?;
            assert!(status == 404, "{path}: {status} {body}");
        }
    }
    assert!(answered > 400);
    assert_eq!(
        stack.clickhouse("SELECT count() FROM clicks").await?,
        before
    );
    assert_eq!(
        stack.clickhouse("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'clicks'").await?,
        "1"
    );
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A one-shot stand-in for the postback dispatcher's `POST /replay`: answers
/// `{"replayed": 2}` and hands back the request body it got.
async fn fake_dispatcher() -> anyhow::Result<(String, tokio::task::JoinHandle<String>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else {
            return String::new();
        };
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        while let Ok(n) = socket.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    break;
                }
            }
        }
        let answer = "{\"replayed\": 2}";
        let _ = socket
            .write_all(format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}", answer.len()).as_bytes())
            .await;
        String::from_utf8_lossy(&request).into_owned()
    });
    Ok((url, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sessions_csrf_api_keys_and_replay() -> anyhow::Result<()> {
    let (dispatcher, received) = fake_dispatcher().await?;
    let stack = Stack::start_with(StackOptions::default().services(&["reporting-api"]).env(
        "reporting-api",
        "TRAFFSURE__DISPATCHER_URL",
        dispatcher,
    ))
    .await?;
    let base = stack.url("reporting-api", "");
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;

    // Public: health and the OpenAPI document. Everything else needs credentials.
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
        "/login",
    ] {
        assert_eq!(
            plain.get(format!("{base}{path}")).send().await?.status(),
            200,
            "{path}"
        );
    }
    for path in [
        "/api/v1/dashboard",
        "/api/v1/flows",
        "/api/v1/clicks",
        "/api/v1/reports",
    ] {
        assert_eq!(
            plain.get(format!("{base}{path}")).send().await?.status(),
            401,
            "{path}"
        );
        let wrong = plain
            .get(format!("{base}{path}"))
            .bearer_auth("not-the-key-at-all-0000")
            .send()
            .await?;
        assert_eq!(wrong.status(), 401, "{path}");
    }
    // Refusals have the body of every other error.
    let refused = plain.get(format!("{base}/api/v1/dashboard")).send().await?;
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    let body: Value = refused.json().await?;
    assert_eq!(
        body,
        json!({"status": 401, "code": "unauthorized", "field": null, "message": body["message"]})
    );
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    let page = plain
        .get(format!("{base}/clicks?country=DE"))
        .send()
        .await?;
    assert_eq!(page.status(), 303);
    assert_eq!(
        page.headers()["location"],
        "/login?next=/clicks%3Fcountry%3DDE"
    );
    let by_header = plain
        .get(format!("{base}/api/v1/dashboard"))
        .header("x-api-key", API_KEY)
        .send()
        .await?;
    assert_eq!(by_header.status(), 200);

    // Login: a wrong password is refused; the right one sets an HttpOnly, SameSite cookie.
    let browser = plain.clone();
    let wrong = browser
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": ADMIN_USERNAME, "password": "guess"}))
        .send()
        .await?;
    assert_eq!(wrong.status(), 401);
    let form = browser
        .post(format!("{base}/api/v1/auth/login"))
        .form(&[("username", ADMIN_USERNAME), ("password", ADMIN_PASSWORD)])
        .send()
        .await?;
    assert_eq!(form.status(), 422, "a cross-site form cannot log in");
    let foreign = browser
        .post(format!("{base}/api/v1/auth/login"))
        .header("origin", "https://evil.example")
        .json(&json!({"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}))
        .send()
        .await?;
    assert_eq!(foreign.status(), 403);
    let login = browser
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}))
        .send()
        .await?;
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"].to_str()?.to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let csrf = login.json::<Value>().await?["csrf_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(csrf.len(), 64);
    let session = cookie.split(';').next().unwrap_or_default().to_string();
    assert!(session.starts_with("ts_session="), "{cookie}");
    let with_session =
        |request: reqwest::RequestBuilder| request.header("cookie", session.as_str());

    // With the session: reads work, the panel page is served, writes need the CSRF token.
    assert_eq!(
        with_session(browser.get(format!("{base}/api/v1/dashboard")))
            .send()
            .await?
            .status(),
        200
    );
    let panel = with_session(browser.get(format!("{base}/flows")))
        .send()
        .await?;
    assert_eq!(panel.status(), 200);
    assert!(panel.text().await?.contains("/assets/app.js"));
    let spec = json!({"name": "Auth test", "destination_url": "https://offer.example/?c={click}"});
    let forged = with_session(browser.post(format!("{base}/api/v1/flows")))
        .json(&spec)
        .send()
        .await?;
    assert_eq!(forged.status(), 403);
    let body: Value = forged.json().await?;
    assert_eq!(
        (body["status"].as_u64(), body["code"].as_str()),
        (Some(403), Some("csrf"))
    );
    let bad_token = with_session(browser.post(format!("{base}/api/v1/flows")))
        .header("x-csrf-token", "0".repeat(64))
        .json(&spec)
        .send()
        .await?;
    assert_eq!(bad_token.status(), 403);
    let created = with_session(browser.post(format!("{base}/api/v1/flows")))
        .header("x-csrf-token", &csrf)
        .json(&spec)
        .send()
        .await?;
    assert_eq!(created.status(), 201);

    // Manual replay goes to the dispatcher and its answer comes back.
    let replayed = with_session(browser.post(format!("{base}/api/v1/outbound-postbacks/replay")))
        .header("x-csrf-token", &csrf)
        .json(&json!({"conversion_id": "conv-9", "outbound_id": "o1"}))
        .send()
        .await?;
    assert_eq!(replayed.status(), 200);
    assert_eq!(replayed.json::<Value>().await?["replayed"], 2);
    let request = tokio::time::timeout(Duration::from_secs(10), received).await??;
    assert!(request.starts_with("POST /replay "), "{request}");
    assert!(
        request.contains("\"conversion_id\":\"conv-9\"")
            && request.contains("\"outbound_id\":\"o1\""),
        "{request}"
    );
    let missing = stack
        .api(Method::POST, "/api/v1/outbound-postbacks/replay")
        .json(&json!({"conversion_id": ""}))
        .send()
        .await?;
    assert_eq!(missing.status(), 422);
    // The dispatcher is gone now (it answered once): a clear 503.
    let gone = stack
        .api(Method::POST, "/api/v1/outbound-postbacks/replay")
        .json(&json!({"conversion_id": "conv-9"}))
        .send()
        .await?;
    assert_eq!(gone.status(), 503);

    // Logout ends the session.
    let out = with_session(browser.post(format!("{base}/api/v1/auth/logout")))
        .header("x-csrf-token", &csrf)
        .send()
        .await?;
    assert_eq!(out.status(), 200);
    assert_eq!(
        with_session(browser.get(format!("{base}/api/v1/dashboard")))
            .send()
            .await?
            .status(),
        401
    );
    Ok(())
}

//! The panel's dates, time zones, charts and lists, with known clicks, conversions and a
//! postback written straight into the test database at a known instant: the API side
//! (the dashboard in a time zone, CSV of each log equal to its JSON, the filters a
//! report cell drills down with counting what the report counts), then the panel in
//! headless Chromium (`tests/browser/panel_views.mjs`: date presets, the time-zone
//! setting, chart axes and hover values, column chooser, sorting, CSV downloads,
//! drill-downs, notices, the copy fallback on plain HTTP). Screenshots land in
//! `target/browser-screenshots/panel-views/`.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use traffsure_tests::browser::run_script;
use traffsure_tests::{Stack, StackOptions, ADMIN_PASSWORD, ADMIN_USERNAME};

/// The time zone the tests switch to (whole hours ahead of UTC, no daylight saving).
const ZONE: &str = "Asia/Tokyo";

/// What was written, and where it falls in UTC and in `ZONE`.
struct Known {
    flow_id: u64,
    hour_utc: u64,
    hour_zone: u64,
    today_utc: String,
    today_zone: String,
    yesterday_zone: String,
}

/// Today at `t0` (half a minute ago): 4 visits from DE and 3 from US, 2 bots and a
/// lander click-through from DE; yesterday at the same time, 3 visits from FR; 2
/// approved and 1 rejected conversion from DE; one postback.
async fn load(stack: &Stack) -> anyhow::Result<Known> {
    let flow = stack
        .create_flow(json!({"name": "Panel views flow", "destination_url": "https://offer.example/?c={click}"}))
        .await?;
    let flow_id = flow["id"].as_u64().unwrap_or_default();
    let t0: u64 = stack
        .clickhouse("SELECT toUInt32(now()) - 30")
        .await?
        .parse()?;
    let mut clicks = Vec::new();
    let visit = |hash: String, t: u64, country: &str, bot: u8, kind: u8, source: &str| {
        format!(
            "('{hash}', {flow_id}, toDateTime({t}), {ms}, '{country}', 'sub-{country}', '{source}', {bot}, {kind}, 'https://offer.example/')",
            ms = t * 1000 + clicks_len(&hash),
        )
    };
    for i in 0..4 {
        clicks.push(visit(format!("pvde{i}"), t0, "DE", 0, 0, "alpha"));
    }
    for i in 0..3 {
        clicks.push(visit(format!("pvus{i}"), t0, "US", 0, 0, "beta"));
    }
    for i in 0..2 {
        clicks.push(visit(format!("pvbot{i}"), t0, "DE", 1, 0, "alpha"));
    }
    clicks.push(visit("pvlander0".into(), t0, "DE", 0, 1, "alpha"));
    for i in 0..3 {
        clicks.push(visit(format!("pvfr{i}"), t0 - 86_400, "FR", 0, 0, "gamma"));
    }
    stack
        .clickhouse(&format!(
            "INSERT INTO clicks (click_hash, flow_id, ts, ts_ms, country, sub_id, source, is_bot, kind, destination_url) VALUES {}",
            clicks.join(", ")
        ))
        .await?;
    let conversion = |id: &str, status: &str, revenue: u64| {
        format!(
            "('{id}', 1, 'pvde0', {flow_id}, 'sale', '{status}', '', {revenue}, 0, 'USD', 'uid-{id}', toDateTime({t0}), toDateTime({t0}), 'DE', 'alpha', 'sub-DE')"
        )
    };
    stack
        .clickhouse(&format!(
            "INSERT INTO conversions (conversion_id, version, click_hash, flow_id, goal, status, previous_status, \
             revenue_micros, previous_revenue_micros, currency, uid, created_at, updated_at, country, source, sub_id) VALUES {}",
            [
                conversion("pvconv1", "approved", 5_000_000),
                conversion("pvconv2", "approved", 7_500_000),
                conversion("pvconv3", "rejected", 1_000_000),
            ]
            .join(", ")
        ))
        .await?;
    stack
        .clickhouse(&format!(
            "INSERT INTO postback_log (postback_id, received_at, received_at_ms, flow_id, click_hash, goal, \
             response_status, reason, message, ip) VALUES ('pvpostback1', toDateTime({t0}), {}, {flow_id}, \
             'pvde0', 'sale', 200, 'OK', 'accepted, \"quoted\"', '127.0.0.1')",
            t0 * 1000
        ))
        .await?;
    let facts = stack
        .clickhouse(&format!(
            "SELECT toHour(toDateTime({t0}), 'UTC'), toHour(toDateTime({t0}), '{ZONE}'), \
             toString(toDate(toDateTime({t0}), 'UTC')), toString(toDate(toDateTime({t0}), '{ZONE}')), \
             toString(toDate(toDateTime({t0}), '{ZONE}') - 1) FORMAT TSV"
        ))
        .await?;
    let f: Vec<&str> = facts.split('\t').collect();
    anyhow::ensure!(f.len() == 5, "facts: {facts}");
    Ok(Known {
        flow_id,
        hour_utc: f[0].parse()?,
        hour_zone: f[1].parse()?,
        today_utc: f[2].into(),
        today_zone: f[3].into(),
        yesterday_zone: f[4].into(),
    })
}

/// A distinct millisecond for each click hash, so the list's order is fixed.
fn clicks_len(hash: &str) -> u64 {
    hash.bytes().map(u64::from).sum::<u64>() % 1000
}

async fn get(stack: &Stack, path: &str) -> anyhow::Result<Value> {
    stack.api_expect(Method::GET, path, None, 200).await
}

async fn text(stack: &Stack, path: &str) -> anyhow::Result<String> {
    let response = stack.api(Method::GET, path).send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    anyhow::ensure!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/csv")),
        "{path} is not CSV"
    );
    Ok(response.text().await?)
}

/// The CSV's lines split into fields (quoted fields with commas and quotes handled).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut field, mut quoted, mut chars) =
        (Vec::new(), String::new(), false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => row.push(std::mem::take(&mut field)),
            ('\r', false) => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (c, _) => field.push(c),
        }
    }
    rows
}

/// Each CSV line of `path` (with `format=csv`) holds the same values as the JSON item
/// at its place, in every column the CSV has that the JSON item has too.
async fn csv_matches_json(stack: &Stack, path: &str, items_key: &str) -> anyhow::Result<usize> {
    let json = get(stack, path).await?;
    let items = json[items_key].as_array().cloned().unwrap_or_default();
    let sep = if path.contains('?') { '&' } else { '?' };
    let csv = parse_csv(&text(stack, &format!("{path}{sep}format=csv")).await?);
    let (header, lines) = csv
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("empty CSV"))?;
    anyhow::ensure!(
        lines.len() == items.len(),
        "{path}: {} CSV lines, {} JSON items",
        lines.len(),
        items.len()
    );
    for (line, item) in lines.iter().zip(&items) {
        for (column, value) in header.iter().zip(line) {
            let want = match &item[column] {
                Value::Null => continue,
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            anyhow::ensure!(
                *value == want,
                "{path}: column {column} is {value:?} in CSV, {want:?} in JSON"
            );
        }
    }
    Ok(items.len())
}

fn count(list: &Value) -> usize {
    list["items"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_time_zones_csv_and_drill_down_filters() -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions::default().services(&["reporting-api"])).await?;
    let result = check_api(&stack).await;
    stack.print_failure(&result);
    result
}

async fn check_api(stack: &Stack) -> anyhow::Result<()> {
    let k = load(stack).await?;
    // The dashboard by hour in UTC and in the zone: the same 7 visits, at the hour each
    // zone reads them in; yesterday's 3 at the same hour the day before.
    let utc = get(stack, "/api/v1/dashboard").await?;
    assert_eq!(utc["timezone"], "UTC");
    assert_eq!(utc["date"], k.today_utc.as_str());
    assert_eq!(utc["hourly"]["today"][k.hour_utc as usize]["clicks"], 7);
    assert_eq!(utc["hourly"]["yesterday"][k.hour_utc as usize]["clicks"], 3);
    let zoned = get(stack, &format!("/api/v1/dashboard?timezone={ZONE}")).await?;
    assert_eq!(zoned["timezone"], ZONE);
    assert_eq!(zoned["date"], k.today_zone.as_str());
    assert_eq!(zoned["yesterday"], k.yesterday_zone.as_str());
    assert_eq!(zoned["clicks_today"], 7);
    assert_eq!(zoned["conversions_today"], 2);
    assert_eq!(zoned["revenue_today"], "12.5");
    assert_eq!(zoned["hourly"]["today"][k.hour_zone as usize]["clicks"], 7);
    assert_eq!(
        zoned["hourly"]["today"][k.hour_zone as usize]["conversions"],
        2
    );
    assert_eq!(
        zoned["hourly"]["yesterday"][k.hour_zone as usize]["clicks"],
        3
    );
    assert_ne!(k.hour_zone, k.hour_utc);
    assert_eq!(zoned["hourly"]["today"][k.hour_utc as usize]["clicks"], 0);
    assert_eq!(zoned["top_today"]["countries"][0]["country"], "DE");
    assert_eq!(zoned["top_today"]["countries"][0]["clicks"], 4);
    for (path, field) in [
        ("/api/v1/dashboard?timezone=Mars/Olympus", "timezone"),
        ("/api/v1/dashboard?zone=UTC", "zone"),
        ("/api/v1/clicks?kind=visit,walk", "kind"),
        ("/api/v1/conversions?status=approved,lost", "status"),
        ("/api/v1/clicks?format=xml", "format"),
    ] {
        let body = stack.api_expect(Method::GET, path, None, 422).await?;
        assert_eq!(body["field"], field, "{path}: {body}");
    }

    // CSV of every log holds what its JSON holds, line for line.
    let flow = k.flow_id;
    assert_eq!(
        csv_matches_json(stack, &format!("/api/v1/clicks?flow={flow}"), "items").await?,
        13
    );
    assert_eq!(
        csv_matches_json(stack, &format!("/api/v1/conversions?flow={flow}"), "items").await?,
        3
    );
    assert_eq!(
        csv_matches_json(stack, &format!("/api/v1/postbacks?flow={flow}"), "items").await?,
        1
    );
    let postbacks = parse_csv(&text(stack, "/api/v1/postbacks?format=csv").await?);
    assert_eq!(postbacks[1][0], "pvpostback1");
    assert!(postbacks[1].contains(&"accepted, \"quoted\"".to_string()));
    // A page of the CSV ends where the JSON page does, the next page's cursor in a header.
    let response = stack
        .api(
            Method::GET,
            &format!("/api/v1/clicks?flow={flow}&limit=5&format=csv"),
        )
        .send()
        .await?;
    let next = response
        .headers()
        .get("x-next-cursor")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    assert_eq!(parse_csv(&response.text().await?).len(), 6);
    let page = get(stack, &format!("/api/v1/clicks?flow={flow}&limit=5")).await?;
    assert_eq!(page["next_cursor"].as_str(), next.as_deref());

    // What a report cell counts, its drill-down filters list: visits without bots and
    // lander click-throughs, conversions approved or pending.
    let today = &k.today_zone;
    let range = format!("from={today}&to={today}&timezone={ZONE}");
    let report = get(
        stack,
        &format!("/api/v1/reports?group_by=country&flow={flow}&{range}"),
    )
    .await?;
    let de = report["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["country"] == "DE"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(de["clicks"], 4, "{report}");
    assert_eq!(de["conversions"], 2, "{report}");
    let drill_clicks = get(
        stack,
        &format!(
            "/api/v1/clicks?flow={flow}&country=DE&bots=exclude&kind=visit,direct_visit&{range}"
        ),
    )
    .await?;
    assert_eq!(count(&drill_clicks), 4);
    let all_de = get(
        stack,
        &format!("/api/v1/clicks?flow={flow}&country=DE&{range}"),
    )
    .await?;
    assert_eq!(
        count(&all_de),
        7,
        "bots and the lander click are in the plain list"
    );
    let drill_conversions = get(
        stack,
        &format!("/api/v1/conversions?flow={flow}&country=DE&status=approved,pending&{range}"),
    )
    .await?;
    assert_eq!(count(&drill_conversions), 2);
    let by_sub = get(
        stack,
        &format!("/api/v1/conversions?sub_id=sub-DE&source=alpha&status=rejected&{range}"),
    )
    .await?;
    assert_eq!(count(&by_sub), 1);
    let yesterday = &k.yesterday_zone;
    let fr = get(
        stack,
        &format!("/api/v1/clicks?flow={flow}&from={yesterday}&to={yesterday}&timezone={ZONE}"),
    )
    .await?;
    assert_eq!(count(&fr), 3);
    assert!(fr["items"]
        .as_array()
        .is_some_and(|items| items.iter().all(|c| c["country"] == "FR")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dates_charts_and_lists_in_headless_chromium() -> anyhow::Result<()> {
    let stack = Stack::start_with(
        // The dispatcher first: the reporting API is started with its address.
        StackOptions::default().services(&["postback-dispatcher", "reporting-api"]),
    )
    .await?;
    let result = browse(&stack).await;
    stack.print_failure(&result);
    result
}

async fn browse(stack: &Stack) -> anyhow::Result<()> {
    let k = load(stack).await?;
    stack
        .api_expect(
            Method::POST,
            "/api/v1/traffic-sources",
            Some(json!({"name": "Panel views source", "parameters": {"sub1": "{zoneid}"}})),
            201,
        )
        .await?;
    let run = run_script(
        stack,
        "panel_views.mjs",
        "panel-views",
        &[
            ("ADMIN_USERNAME", ADMIN_USERNAME.into()),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
            ("ZONE", ZONE.into()),
            ("FLOW_ID", k.flow_id.to_string()),
            ("HOUR_UTC", k.hour_utc.to_string()),
            ("HOUR_ZONE", k.hour_zone.to_string()),
            ("TODAY_UTC", k.today_utc.clone()),
            ("TODAY_ZONE", k.today_zone.clone()),
            ("YESTERDAY_ZONE", k.yesterday_zone.clone()),
        ],
        Duration::from_secs(300),
    )
    .await?;
    assert!(run.stdout.contains("panel views ok"), "{}", run.stdout);
    let shots = run.screenshot_count()?;
    assert!(
        shots >= 10,
        "only {shots} screenshots in {}",
        run.screenshots.display()
    );
    Ok(())
}

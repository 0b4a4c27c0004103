//! Conversions carry their click's visitor details and fraud signals on the real stack:
//! clicks with real user agents from known networks (an AWS range, Deutsche Telekom,
//! Andrews & Arnold) convert through postbacks; every conversion row in ClickHouse holds
//! its click's browser, OS and device families and versions, brand, model, AS number and
//! organisation, datacenter and rate flags; reports grouped and filtered by them count the
//! conversions exactly, and so does the conversion list; and conversions stored without them (as every conversion stored
//! before migration 25 is) report the same, read from their clicks.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use traffsure_tests::kafka_topic::publish_flow;
use traffsure_tests::{click_hash_of, eventually, geoip_file, Stack, StackOptions};

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
const GALAXY: &str = "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.6478.122 Mobile Safari/537.36";
const WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
const UBUNTU: &str =
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
/// Amazon AWS (AS16509, in the hosting ranges), Deutsche Telekom (AS3320), Andrews &
/// Arnold (AS20712).
const AWS_A: &str = "3.0.0.1";
const AWS_B: &str = "52.95.110.1";
const TELEKOM: &str = "62.157.140.133";
const AAISP: &str = "81.2.69.160";

/// The visitor columns compared between a click and its conversions.
const COLUMNS: &str = "browser_family, browser_major, browser_minor, os_family, os_major, \
    os_minor, device_family, device_brand, device_model, bot_reason, asn, as_org, datacenter, \
    rate_exceeded";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversions_carry_their_clicks_visitor_columns() -> anyhow::Result<()> {
    let edge = "click-ingest";
    let stack = Stack::start_with(
        StackOptions::default()
            .env(edge, "TRAFFSURE__CLIENT_IP__TRUSTED_PROXIES", "127.0.0.1")
            .env(edge, "TRAFFSURE__FRAUD__ASN_DATABASE", geoip_file("asn")?)
            .env(
                edge,
                "TRAFFSURE__FRAUD__HOSTING_RANGES",
                geoip_file("hosting-ranges.bin")?,
            )
            .env(edge, "TRAFFSURE__FRAUD__RATE_MAX_CLICKS", "2")
            .env(edge, "TRAFFSURE__FRAUD__RATE_WINDOW_SECONDS", "3600"),
    )
    .await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

async fn click(stack: &Stack, slug: &str, ua: &str, ip: &str) -> anyhow::Result<String> {
    let response = stack
        .http
        .get(stack.url("click-ingest", &format!("/c/{slug}")))
        .header("x-forwarded-for", ip)
        .header("user-agent", ua)
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 302,
        "{ua} from {ip}: {}",
        response.status()
    );
    let hash = click_hash_of(response.headers()["location"].to_str()?);
    anyhow::ensure!(!hash.is_empty(), "no click hash");
    Ok(hash)
}

async fn postback(stack: &Stack, query: &str) -> anyhow::Result<()> {
    let url = stack.url("postback-ingest", &format!("/postback?{query}"));
    let response = stack.http.get(url).send().await?;
    anyhow::ensure!(
        response.status() == 200,
        "postback {query}: {}",
        response.status()
    );
    Ok(())
}

async fn report(stack: &Stack, query: &str) -> anyhow::Result<Value> {
    let response = stack
        .api(Method::GET, &format!("/api/v1/reports?flow=1&{query}"))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 200, "{query}: {}", response.status());
    Ok(response.json().await?)
}

/// A report row's key, conversions and approved conversions.
type Cell = (String, i64, i64);

/// A report's cells, sorted.
fn cells(report: &Value, key: &str) -> Vec<Cell> {
    let mut cells: Vec<_> = report["rows"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|r| r["conversions"].as_i64().unwrap_or(0) > 0)
        .map(|r| {
            (
                r[key].as_str().unwrap_or_default().to_string(),
                r["conversions"].as_i64().unwrap_or(-1),
                r["approved"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    cells.sort();
    cells
}

/// Every report the test reads, as its query and the key to read its rows by.
const REPORTS: &[(&str, &str)] = &[
    ("group_by=browser_family", "browser_family"),
    ("group_by=os_major", "os_major"),
    ("group_by=device_brand", "device_brand"),
    ("group_by=device_model", "device_model"),
    ("group_by=asn", "asn"),
    ("group_by=as_org", "as_org"),
    ("group_by=datacenter", "datacenter"),
    ("group_by=rate_exceeded", "rate_exceeded"),
    ("group_by=flow&os_major=14", "flow"),
    ("group_by=flow&device_brand=Apple", "flow"),
    ("group_by=flow&browser_family=Firefox", "flow"),
    ("group_by=flow&asn=AS16509", "flow"),
    ("group_by=flow&datacenter=true", "flow"),
    ("group_by=flow&datacenter=false", "flow"),
    (
        "group_by=os_family&asn=AS16509&rate_exceeded=false",
        "os_family",
    ),
];

async fn all_reports(stack: &Stack) -> anyhow::Result<Vec<Vec<(String, i64, i64)>>> {
    let mut all = Vec::new();
    for (query, key) in REPORTS {
        all.push(cells(&report(stack, query).await?, key));
    }
    Ok(all)
}

/// The conversion list's visitor columns, one line per conversion (sorted), for `query`.
async fn listed(stack: &Stack, query: &str) -> anyhow::Result<Vec<String>> {
    let response = stack
        .api(Method::GET, &format!("/api/v1/conversions?flow=1&{query}"))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 200, "{query}: {}", response.status());
    let page: Value = response.json().await?;
    let mut lines: Vec<String> = page["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            [
                "click_hash",
                "browser_family",
                "os_major",
                "device_brand",
                "device_model",
                "asn",
                "as_org",
                "datacenter",
                "rate_exceeded",
            ]
            .map(|k| match &c[k] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .join("|")
        })
        .collect();
    lines.sort();
    Ok(lines)
}

fn cell(key: &str, conversions: i64, approved: i64) -> (String, i64, i64) {
    (key.to_string(), conversions, approved)
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let topic = format!("{}flows", stack.topic_prefix);
    let slug = format!("visitors-{}", stack.id);
    publish_flow(
        &stack.options.kafka_brokers,
        &topic,
        1,
        json!({"name": "Visitors", "slug": slug, "destination_url": "https://offer.test/?c={click}"}),
        None,
    )
    .await?;
    eventually(Duration::from_secs(20), || async {
        let probe = stack
            .http
            .get(stack.url("click-ingest", &format!("/c/{slug}")))
            .header("x-forwarded-for", "10.9.9.9")
            .header("user-agent", WINDOWS)
            .send()
            .await?;
        Ok((probe.status() == 302).then_some(()))
    })
    .await?;

    // Two iPhones on Telekom, three Galaxies from one AWS address (the third over the
    // rate of two), a Windows PC on A&A, two Ubuntu PCs from AWS (one converts).
    let mut hashes = Vec::new();
    for (ua, ip, count) in [
        (IPHONE, TELEKOM, 2),
        (GALAXY, AWS_A, 3),
        (WINDOWS, AAISP, 1),
        (UBUNTU, AWS_B, 2),
    ] {
        for _ in 0..count {
            hashes.push((click(stack, &slug, ua, ip).await?, ua));
        }
    }
    let converting: Vec<&(String, &str)> = hashes.iter().take(7).collect();
    for (i, (hash, ua)) in converting.iter().enumerate() {
        if *ua == GALAXY {
            // Pending first, then approved: a second version that keeps the columns.
            postback(
                stack,
                &format!("click={hash}&goal=sale&status=pending&uid=u{i}"),
            )
            .await?;
            postback(
                stack,
                &format!("click={hash}&goal=sale&status=approved&uid=u{i}"),
            )
            .await?;
        } else {
            postback(
                stack,
                &format!("click={hash}&goal=sale&revenue=1.5&uid=u{i}"),
            )
            .await?;
        }
    }
    let in_list = converting
        .iter()
        .map(|(h, _)| format!("'{h}'"))
        .collect::<Vec<_>>()
        .join(", ");
    // Ten versions: seven conversions, three of them updated.
    eventually(Duration::from_secs(90), || async {
        let got = stack.clickhouse("SELECT count() FROM conversions").await?;
        Ok((got.trim() == "10").then_some(()))
    })
    .await?;

    // Every version carries its click's values, marked as carrying them.
    let of_clicks = stack
        .clickhouse(&format!(
            "SELECT click_hash, {COLUMNS} FROM clicks WHERE click_hash IN ({in_list}) \
             ORDER BY click_hash"
        ))
        .await?;
    let of_conversions = stack
        .clickhouse(&format!(
            "SELECT click_hash, {COLUMNS} FROM conversions WHERE visitor_details = 1 \
             ORDER BY click_hash, version"
        ))
        .await?;
    let mut expected: Vec<&str> = Vec::new();
    for line in of_clicks.lines() {
        let versions = if line.contains("SM-S918B") { 2 } else { 1 };
        expected.extend(std::iter::repeat_n(line, versions));
    }
    assert_eq!(of_conversions.lines().collect::<Vec<_>>(), expected);
    // What the clicks say, so the comparison above compares something.
    let galaxy = of_clicks
        .lines()
        .find(|l| l.contains("SM-S918B"))
        .unwrap_or_default();
    assert!(
        galaxy.contains("Chrome Mobile\t126\t0\tAndroid\t14\t")
            && galaxy.contains("\tSamsung\tSM-S918B\t")
            && galaxy.contains("\t16509\tAmazon.com, Inc.\t1\t"),
        "{galaxy}"
    );
    let iphone = of_clicks
        .lines()
        .find(|l| l.contains("Mobile Safari"))
        .unwrap_or_default();
    assert!(
        iphone.contains("\tApple\tiPhone\t")
            && iphone.contains("\t3320\tDeutsche Telekom AG\t0\t0"),
        "{iphone}"
    );

    let expected = vec![
        vec![
            cell("Chrome", 1, 1),
            cell("Chrome Mobile", 3, 3),
            cell("Firefox", 1, 1),
            cell("Mobile Safari", 2, 2),
        ],
        // Ubuntu's Firefox names no OS version: its conversion groups under an empty one.
        vec![
            cell("", 1, 1),
            cell("10", 1, 1),
            cell("14", 3, 3),
            cell("17", 2, 2),
        ],
        vec![cell("", 2, 2), cell("Apple", 2, 2), cell("Samsung", 3, 3)],
        vec![cell("", 2, 2), cell("SM-S918B", 3, 3), cell("iPhone", 2, 2)],
        vec![cell("16509", 4, 4), cell("20712", 1, 1), cell("3320", 2, 2)],
        vec![
            cell("Amazon.com, Inc.", 4, 4),
            cell("Andrews & Arnold Ltd", 1, 1),
            cell("Deutsche Telekom AG", 2, 2),
        ],
        vec![cell("0", 3, 3), cell("1", 4, 4)],
        vec![cell("0", 6, 6), cell("1", 1, 1)],
        vec![cell("1", 3, 3)],
        vec![cell("1", 2, 2)],
        vec![cell("1", 1, 1)],
        vec![cell("1", 4, 4)],
        vec![cell("1", 4, 4)],
        vec![cell("1", 3, 3)],
        vec![cell("Android", 2, 2), cell("Ubuntu", 1, 1)],
    ];
    let stored = all_reports(stack).await?;
    for ((query, _), (got, want)) in REPORTS.iter().zip(stored.iter().zip(&expected)) {
        assert_eq!(got, want, "{query}");
    }
    // The conversion list shows them and filters by them.
    let list = listed(stack, "").await?;
    assert_eq!(list.len(), 7, "{list:?}");
    let samsung = listed(stack, "device_brand=Samsung").await?;
    assert_eq!(samsung.len(), 3, "{samsung:?}");
    assert!(
        samsung.iter().all(|l| l
            .ends_with("|Chrome Mobile|14|Samsung|SM-S918B|16509|Amazon.com, Inc.|true|false")
            || l.ends_with("|Chrome Mobile|14|Samsung|SM-S918B|16509|Amazon.com, Inc.|true|true")),
        "{samsung:?}"
    );
    assert_eq!(
        samsung.iter().filter(|l| l.ends_with("|true|true")).count(),
        1,
        "{samsung:?}"
    );
    let iphones = listed(stack, "os_major=17&browser_family=Mobile%20Safari").await?;
    assert_eq!(iphones.len(), 2, "{iphones:?}");

    // Conversions stored without the columns, as before migration 25 (and by an
    // attribution whose state kept the click from before): the same reports, read from
    // their clicks.
    stack
        .clickhouse(
            "ALTER TABLE conversions UPDATE visitor_details = 0, browser_family = '', \
             browser_major = '', browser_minor = '', os_family = '', os_major = '', \
             os_minor = '', device_family = '', device_brand = '', device_model = '', \
             bot_reason = '', asn = 0, as_org = '', datacenter = 0, rate_exceeded = 0 \
             WHERE 1",
        )
        .await?;
    eventually(Duration::from_secs(60), || async {
        let left = stack
            .clickhouse("SELECT count() FROM conversions WHERE visitor_details = 1 OR asn != 0")
            .await?;
        Ok((left.trim() == "0").then_some(()))
    })
    .await?;
    let joined = all_reports(stack).await?;
    for ((query, _), (got, want)) in REPORTS.iter().zip(joined.iter().zip(&stored)) {
        assert_eq!(got, want, "{query}, stored without the columns");
    }
    assert_eq!(listed(stack, "").await?, list);
    assert_eq!(listed(stack, "device_brand=Samsung").await?, samsung);
    assert_eq!(
        listed(stack, "os_major=17&browser_family=Mobile%20Safari").await?,
        iphones
    );
    Ok(())
}

/// Clicks with visitor columns and conversions of them in a database migrated up to
/// migration 24 (as a deployment before this change holds them): nine conversions of
/// flow 1 from three kinds of visitor, one click_missing (its click arrived later).
const HISTORY: &[&str] = &[
    "INSERT INTO clicks (click_hash, flow_id, ts, ts_ms, visitor_id, country, browser_family, os_major, \
     device_brand, asn, as_org, datacenter, is_bot, kafka_partition, kafka_offset) \
     SELECT concat('h', toString(number)), 1, now() - 7200 + number, 0, toString(number), 'US', \
         ['Chrome Mobile', 'Mobile Safari', 'Firefox'][number % 3 + 1], ['14', '17', ''][number % 3 + 1], \
         ['Samsung', 'Apple', ''][number % 3 + 1], [16509, 3320, 20712][number % 3 + 1], \
         ['Amazon.com, Inc.', 'Deutsche Telekom AG', 'Andrews & Arnold Ltd'][number % 3 + 1], \
         toUInt8(number % 3 = 0), 0, 0, number \
     FROM system.numbers LIMIT 12",
    "INSERT INTO conversions (conversion_id, version, click_hash, flow_id, goal, status, previous_status, \
     revenue_micros, previous_revenue_micros, currency, created_at, country, click_missing, kafka_partition, kafka_offset) \
     SELECT toString(number), 1, concat('h', toString(number)), 1, 'sale', 'approved', '', 1000000, 0, 'USD', \
         now() - 3600 + number, 'US', toUInt8(number = 8), 0, number \
     FROM system.numbers LIMIT 9",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversions_stored_before_the_migration_report_by_their_clicks() -> anyhow::Result<()> {
    let name = format!(
        "test_convvisitor_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let url = traffsure_tests::clickhouse_url();
    let http = reqwest::Client::new();
    let sql = |sql: String, in_database: bool| {
        let (http, url, name) = (http.clone(), url.clone(), name.clone());
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
    sql(format!("CREATE DATABASE {name}"), false).await?;
    let result = async {
        sql(
            "CREATE TABLE schema_migrations (version UInt32, name String, applied_at DateTime) \
             ENGINE = ReplacingMergeTree() ORDER BY version"
                .into(),
            true,
        )
        .await?;
        for (version, migration, text) in traffsure_clickhouse::MIGRATIONS
            .iter()
            .take_while(|(version, _, _)| *version < 25)
        {
            for statement in traffsure_clickhouse::statements(text) {
                sql(statement, true).await?;
            }
            sql(
                format!("INSERT INTO schema_migrations SELECT {version}, '{migration}', now()"),
                true,
            )
            .await?;
        }
        for insert in HISTORY {
            sql(insert.to_string(), true).await?;
        }
        // reporting-api applies migration 25 at start, over these rows.
        let stack = Stack::start_with(StackOptions::default().services(&["reporting-api"]).env(
            "reporting-api",
            "TRAFFSURE__CLICKHOUSE__DATABASE",
            name.clone(),
        ))
        .await?;
        let checked = async {
            assert_eq!(
                sql(
                    "SELECT count(), sum(visitor_details), sum(asn) FROM conversions".into(),
                    true
                )
                .await?,
                "9\t0\t0"
            );
            // Three of each kind: h0, h3, h6 (Samsung, AWS), h1, h4, h7 (Apple, Telekom),
            // h2, h5, h8 (no brand, A&A; h8 is click_missing, its click arrived later).
            let expected: &[(&str, &str, Vec<Cell>)] = &[
                (
                    "group_by=device_brand",
                    "device_brand",
                    vec![cell("", 3, 3), cell("Apple", 3, 3), cell("Samsung", 3, 3)],
                ),
                (
                    "group_by=asn",
                    "asn",
                    vec![cell("16509", 3, 3), cell("20712", 3, 3), cell("3320", 3, 3)],
                ),
                (
                    "group_by=os_major&datacenter=false",
                    "os_major",
                    vec![cell("", 3, 3), cell("17", 3, 3)],
                ),
                (
                    "group_by=flow&browser_family=Mobile%20Safari",
                    "flow",
                    vec![cell("1", 3, 3)],
                ),
                (
                    "group_by=as_org&click_missing=false",
                    "as_org",
                    vec![
                        cell("Amazon.com, Inc.", 3, 3),
                        cell("Andrews & Arnold Ltd", 2, 2),
                        cell("Deutsche Telekom AG", 3, 3),
                    ],
                ),
            ];
            for (query, key, want) in expected {
                assert_eq!(&cells(&report(&stack, query).await?, key), want, "{query}");
            }
            let list = listed(&stack, "device_brand=Apple").await?;
            assert_eq!(list.len(), 3, "{list:?}");
            assert!(
                list.iter().all(|l| l
                    .ends_with("|Mobile Safari|17|Apple||3320|Deutsche Telekom AG|false|false")),
                "{list:?}"
            );
            anyhow::Ok(())
        }
        .await;
        stack.print_failure(&checked);
        checked
    }
    .await;
    sql(format!("DROP DATABASE IF EXISTS {name}"), false).await?;
    result
}

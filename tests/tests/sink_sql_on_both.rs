//! Every migration and every named query shape runs on the local ClickHouse 18.16 and on
//! a current ClickHouse (26.x, in-process through the chdb-core wheel that
//! `deploy/local/install.sh` puts in `.local/chdb-venv`), and both give the same answers.

use anyhow::bail;

/// Sample rows with fixed times, so both engines must give the same answers.
const SAMPLES: &[&str] = &[
    "INSERT INTO clicks (click_hash, flow_id, ts, ts_ms, visitor_id, country, source, cost_micros, is_bot, kafka_partition, kafka_offset) VALUES \
     ('a', 1, toDateTime('2026-03-01 10:15:00'), 1772360100000, 'v1', 'US', 'push', 1000, 0, 0, 0), \
     ('b', 1, toDateTime('2026-03-01 10:45:00'), 1772361900000, 'v1', 'US', 'push', 1000, 1, 0, 1), \
     ('c', 2, toDateTime('2026-03-01 11:05:00'), 1772363100000, 'v2', 'DE', 'seo', 500, 0, 1, 0)",
    "INSERT INTO conversions (conversion_id, version, flow_id, goal, status, previous_status, revenue_micros, previous_revenue_micros, created_at, kafka_partition, kafka_offset) VALUES \
     ('x', 1, 1, 'sale', 'pending', '', 1000000, 0, toDateTime('2026-03-01 10:20:00'), 0, 0), \
     ('x', 2, 1, 'sale', 'approved', 'pending', 2500000, 1000000, toDateTime('2026-03-01 10:20:00'), 0, 1), \
     ('y', 1, 2, 'lead', 'pending', '', 0, 0, toDateTime('2026-03-01 11:20:00'), 1, 0)",
    "INSERT INTO exchange_rates (day, base, currency, rate, updated_at) VALUES \
     (toDate('2026-02-27'), 'EUR', 'USD', 1.2, toDateTime('2026-02-27 16:00:00')), \
     (toDate('2026-02-27'), 'EUR', 'USD', 1.1, toDateTime('2026-02-27 15:00:00')), \
     (toDate('2026-02-26'), 'EUR', 'JPY', 180.5, toDateTime('2026-02-26 16:00:00')), \
     (toDate('2026-03-02'), 'EUR', 'USD', 1.25, toDateTime('2026-03-02 16:00:00')), \
     (toDate('2026-03-04'), 'EUR', 'USD', 1.5, toDateTime('2026-03-04 16:00:00'))",
    "INSERT INTO postback_log (postback_id, received_at, flow_id, param_names, param_values, kafka_partition, kafka_offset) VALUES ('p', toDateTime('2026-03-01 10:20:00'), 1, ['click', 'goal'], ['a', 'sale'], 2, 7)",
    // Through objects: a lander visit, its click-through to an offer, a direct-to-offer
    // visit, a bot's direct visit to the lander; a conversion with its click's objects;
    // an offer renamed (revision 2) and a traffic source.
    "INSERT INTO clicks (click_hash, flow_id, ts, ts_ms, visitor_id, cost_micros, is_bot, kind, parent_click_hash, traffic_source_id, lander_id, offer_id, network_id, kafka_partition, kafka_offset) VALUES \
     ('d', 1, toDateTime('2026-03-01 10:20:00'), 1772360400000, 'v3', 200, 0, 0, '', 3, 5, 0, 0, 0, 2), \
     ('e', 1, toDateTime('2026-03-01 10:21:00'), 1772360460000, 'v3', 0, 0, 1, 'd', 3, 5, 9, 2, 0, 3), \
     ('f', 1, toDateTime('2026-03-01 10:22:00'), 1772360520000, 'v4', 0, 0, 0, '', 4, 0, 9, 2, 0, 4), \
     ('g', 1, toDateTime('2026-03-01 10:23:00'), 1772360580000, 'v5', 0, 1, 2, '', 3, 5, 0, 0, 0, 5)",
    "INSERT INTO conversions (conversion_id, version, click_hash, flow_id, goal, status, previous_status, revenue_micros, previous_revenue_micros, created_at, traffic_source_id, lander_id, offer_id, network_id, kafka_partition, kafka_offset) VALUES \
     ('z', 1, 'e', 1, 'sale', 'approved', '', 3000000, 0, toDateTime('2026-03-01 10:30:00'), 3, 5, 9, 2, 0, 2)",
    "INSERT INTO tracker_objects (kind, id, revision, name, kafka_partition, kafka_offset) VALUES \
     (3, 9, 1, 'Old offer', 0, 0), (3, 9, 2, 'VPN offer', 0, 1), (1, 3, 1, 'Push source', 0, 2)",
    "INSERT INTO outbound_log (attempt_id, conversion_id, flow_id, attempted_at, kafka_partition, kafka_offset) VALUES ('o', 'x', 1, toDateTime('2026-03-01 10:21:00'), 3, 9)",
    "INSERT INTO outbound_log (attempt_id, conversion_id, flow_id, url, attempted_at, traffic_source_id, offer_id, reason, integration, postback_type, kafka_partition, kafka_offset) VALUES \
     ('p', 'y', 2, 'https://s.test/pb?why=Fraud', toDateTime('2026-03-01 10:22:00'), 5, 6, 'Fraud', 's2s', 'conversion', 3, 10)",
    // The outbound log list's shapes: the date in a time zone, the reason in any case, a
    // part of the URL, and an old row's empty integration read as s2s.
    "SELECT attempt_id, toString(attempted_at, 'Europe/Berlin'), toUInt32(traffic_source_id), toUInt32(offer_id), reason \
     FROM outbound_log WHERE lowerUTF8(reason) = lowerUTF8('FRAUD') AND positionCaseInsensitiveUTF8(url, 'WHY=') > 0 \
     AND integration IN ('', 's2s') ORDER BY attempt_id",
    "SELECT attempt_id, integration, postback_type FROM outbound_log WHERE integration IN ('', 's2s') ORDER BY attempt_id",
    // Reports by a conversion's visitor columns: as stored (migration 25), and read from
    // the click for a conversion stored without them (reporting-api's reports::visitor).
    "SELECT [v_device_brand, toString(v_asn)] AS keys, toInt64(count()) FROM \
     (SELECT *, device_brand AS v_device_brand, asn AS v_asn FROM conversions) \
     WHERE created_at >= toDateTime('2026-03-01 00:00:00') GROUP BY keys ORDER BY keys",
    "SELECT [v_device_brand, toString(v_asn)] AS keys, toInt64(count()) FROM \
     (SELECT *, if(visitor_details = 1, device_brand, c_device_brand) AS v_device_brand, \
     if(visitor_details = 1, asn, c_asn) AS v_asn FROM conversions ANY LEFT JOIN \
     (SELECT click_hash, device_brand AS c_device_brand, asn AS c_asn FROM clicks) AS clicked USING click_hash) \
     WHERE created_at >= toDateTime('2026-03-01 00:00:00') AND v_asn = 0 GROUP BY keys ORDER BY keys",
    // The flow editor's suggestions: a rule field's values in recent clicks.
    "SELECT country AS value, count() AS clicks FROM clicks WHERE ts >= subtractDays(toDateTime('2026-03-02 00:00:00'), 7) \
     AND flow_id = 1 GROUP BY value HAVING value != '' AND positionCaseInsensitiveUTF8(value, 'u') > 0 \
     ORDER BY clicks DESC, value ASC LIMIT 20",
    "SELECT if(asn = 0, '', toString(asn)) AS value, count() AS clicks FROM clicks WHERE ts >= subtractDays(now(), 7) \
     GROUP BY value HAVING value != '' ORDER BY clicks DESC, value ASC LIMIT 20",
];

fn all_statements() -> Vec<(String, String)> {
    let mut statements = Vec::new();
    for (version, name, sql) in traffsure_clickhouse::MIGRATIONS {
        for s in traffsure_clickhouse::statements(sql) {
            statements.push((format!("migration {version} {name}"), s));
        }
    }
    for s in SAMPLES {
        statements.push(("sample rows".to_string(), s.to_string()));
    }
    statements.extend(traffsure_clickhouse::queries::examples());
    statements
}

async fn on_18_16(statements: &[(String, String)]) -> anyhow::Result<Vec<String>> {
    let http = reqwest::Client::new();
    let url = traffsure_tests::clickhouse_url();
    let database = format!(
        "test_sql_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let run = |sql: String, database: Option<String>| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let mut request = http.post(&url).body(sql);
            if let Some(db) = database {
                request = request.query(&[("database", db)]);
            }
            let response = request.send().await?;
            let status = response.status();
            let text = response.text().await?;
            anyhow::Ok((status.is_success(), text))
        }
    };
    run(format!("CREATE DATABASE {database}"), None).await?;
    let mut results = Vec::new();
    for (label, sql) in statements {
        let (ok, text) = run(sql.clone(), Some(database.clone())).await?;
        if !ok {
            bail!("ClickHouse 18.16 refused {label}: {sql}\n{text}");
        }
        results.push(text);
    }
    run(format!("DROP DATABASE {database}"), None).await?;
    Ok(results)
}

async fn on_current(statements: &[(String, String)]) -> anyhow::Result<Vec<String>> {
    traffsure_tests::chdb::run(statements).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_migration_and_query_runs_on_old_and_current_clickhouse() -> anyhow::Result<()> {
    let statements = all_statements();
    let old = on_18_16(&statements).await?;
    let current = on_current(&statements).await?;
    for (i, (label, sql)) in statements.iter().enumerate() {
        assert_eq!(
            old[i].trim(),
            current[i].trim(),
            "{label} answers differently: {sql}"
        );
    }
    // The rollups hold what the sample rows say, on both.
    let answer = |name: &str| {
        let i = statements
            .iter()
            .position(|(l, _)| l.starts_with(name))
            .unwrap_or(0);
        old[i].trim().to_string()
    };
    assert_eq!(
        answer("clicks_by_hour"),
        "2026-03-01 10:00:00\t1\t6\t2\t4\t2200\n2026-03-01 11:00:00\t2\t1\t0\t1\t500"
    );
    assert_eq!(answer("clicks_by_hour"), answer("clicks_from_raw"));
    assert_eq!(
        answer("conversions_by_status"),
        "1\tsale\tapproved\t2\t5500000\n2\tlead\tpending\t1\t0"
    );
    assert_eq!(
        answer("conversions_by_status"),
        answer("conversions_current")
    );
    // Each base and currency's latest rate before the range, then the range's own.
    assert_eq!(
        answer("exchange_rates_for_days"),
        "2026-02-26\tEUR\tJPY\t180.5\n2026-02-27\tEUR\tUSD\t1.2\n2026-03-02\tEUR\tUSD\t1.25"
    );
    assert_eq!(
        answer("conversions_by_day_and_currency"),
        "['1']\t2026-03-01\t\t2\t5500000\n['2']\t2026-03-01\t\t0\t0"
    );
    assert_eq!(answer("rate_days_of_range"), "2026-02-28\t2026-03-08");
    let sample = |part: &str| {
        let i = statements
            .iter()
            .position(|(_, sql)| sql.contains(part))
            .unwrap_or(0);
        old[i].trim().to_string()
    };
    assert_eq!(
        sample("lowerUTF8(reason)"),
        "p\t2026-03-01 11:22:00\t5\t6\tFraud"
    );
    assert_eq!(
        sample("SELECT attempt_id, integration, postback_type"),
        "o\t\t\np\ts2s\tconversion"
    );
    assert_eq!(
        answer("costs_by_day_and_currency"),
        "['1']\t2026-03-01\t\t2200\n['2']\t2026-03-01\t\t500"
    );
    // The funnel by traffic source and offer: visits, lander views, lander clicks, offer
    // clicks (people only), bots and unique visitors of visits, cost.
    assert_eq!(
        answer("funnel_by_object"),
        "['0','0']\t2\t0\t0\t0\t1\t2\t2500\n\
         ['3','0']\t1\t1\t0\t0\t1\t2\t200\n\
         ['3','9']\t0\t0\t1\t1\t0\t0\t0\n\
         ['4','9']\t1\t0\t0\t1\t0\t1\t0"
    );
    assert_eq!(
        answer("funnel_by_object"),
        answer("funnel_by_object_from_raw")
    );
    assert_eq!(
        answer("conversions_by_object"),
        "['0','0']\t2026-03-01\t\t1\t2500000\n['9','5']\t2026-03-01\t\t1\t3000000"
    );
    assert_eq!(
        answer("conversions_by_object"),
        answer("conversions_by_object_from_raw")
    );
    assert_eq!(answer("object_names"), "1\t3\tPush source\n3\t9\tVPN offer");
    Ok(())
}

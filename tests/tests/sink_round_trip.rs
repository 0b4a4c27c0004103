//! Every event topic reaches its ClickHouse table field for field, and an undecodable
//! message goes to the dead-letter topic with its reason while the stream goes on.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message};
use traffsure_events::{
    Click, Conversion, ConversionStatus, Flow, FlowStatus, OutboundAttempt, OutboundState, Param,
    PostbackLogEntry, PostbackOutcome, PostbackResult,
};
use traffsure_tests::produce::Producer;
use traffsure_tests::{eventually, Stack, StackOptions};

const TS: i64 = 1_772_360_100_123; // 2026-03-01 10:15:00.123 UTC

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_round_trips_and_poison_is_dead_lettered() -> anyhow::Result<()> {
    let stack = Stack::start_with(StackOptions::default().services(&["sink"])).await?;
    let result = run(&stack).await;
    stack.print_failure(&result);
    result
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let producer = Producer::new(stack)?;
    let topics = producer.topics.clone();
    let click = |hash: &str| Click {
        click_hash: hash.into(),
        flow_id: 7,
        ts_ms: TS,
        routing_key: 513,
        visitor_id: "vis".into(),
        ip: "203.0.113.9".into(),
        country: "DE".into(),
        user_agent: "UA/1".into(),
        device: "mobile".into(),
        os: "Android".into(),
        browser: "Chrome".into(),
        referrer: "https://ref.example/".into(),
        sub_id: "s 1".into(),
        source: "push".into(),
        subs: vec!["a".into(), String::new(), "c".into()],
        cost_micros: 12_500,
        cost_currency: "EUR".into(),
        destination_url: "https://offer.example/?c=x".into(),
        is_bot: true,
        extra: [("k".to_string(), "v".to_string())].into(),
        bot_reason: traffsure_events::BotReason::Datacenter as i32,
        asn: 16509,
        as_org: "Amazon.com, Inc.".into(),
        datacenter: true,
        rate_exceeded: true,
        ..Click::default()
    };
    // One partition for the click, the poison message and the next click, in that order.
    producer
        .send(&topics.clicks, &[(513, click("first"))])
        .await?;
    producer
        .send_raw(&topics.clicks, &[(vec![2, 1], vec![0xff, 0xff, 0xff])])
        .await?;
    producer
        .send(&topics.clicks, &[(513, click("second"))])
        .await?;

    let first = Conversion {
        conversion_id: "conv".into(),
        version: 1,
        click_hash: "first".into(),
        flow_id: 7,
        goal: "sale".into(),
        status: ConversionStatus::Pending as i32,
        revenue_micros: 1_000_000,
        currency: "EUR".into(),
        uid: "tx1".into(),
        postback_id: "pb1".into(),
        click_ts_ms: TS,
        created_at_ms: TS + 60_000,
        updated_at_ms: TS + 60_000,
        country: "DE".into(),
        source: "push".into(),
        sub_id: "s 1".into(),
        subs: vec!["a".into()],
        device: "mobile".into(),
        os: "Android".into(),
        browser: "Chrome".into(),
        routing_key: 513,
        ..Conversion::default()
    };
    let second = Conversion {
        version: 2,
        status: ConversionStatus::Approved as i32,
        previous_status: ConversionStatus::Pending as i32,
        revenue_micros: 3_000_000,
        previous_revenue_micros: 1_000_000,
        updated_at_ms: TS + 120_000,
        disable_postbacks: true,
        reason: "late, but fine".into(),
        ..first.clone()
    };
    producer
        .send(&topics.conversions, &[(513, first), (513, second)])
        .await?;
    producer
        .send(
            &topics.postback_log,
            &[(
                513,
                PostbackLogEntry {
                    postback_id: "pb1".into(),
                    received_at_ms: TS + 60_000,
                    flow_id: 7,
                    click_hash: "first".into(),
                    goal: "sale".into(),
                    response_status: 200,
                    reason: "accepted".into(),
                    message: "ok".into(),
                    ip: "198.51.100.1".into(),
                    method: "GET".into(),
                    content_type: String::new(),
                    params: vec![
                        Param {
                            name: "click".into(),
                            value: "first".into(),
                            truncated: false,
                        },
                        Param {
                            name: "payout".into(),
                            value: "1.0".into(),
                            truncated: true,
                        },
                    ],
                    delta_ms: 60_000,
                    path: "/postback".into(),
                },
            )],
        )
        .await?;
    producer
        .send(
            &topics.postback_results,
            &[(
                513,
                PostbackResult {
                    postback_id: "pb1".into(),
                    click_hash: "first".into(),
                    flow_id: 7,
                    outcome: PostbackOutcome::Converted as i32,
                    conversion_id: "conv".into(),
                    message: "converted".into(),
                    decided_at_ms: TS + 61_000,
                },
            )],
        )
        .await?;
    producer
        .send(
            &topics.outbound_log,
            &[(
                513,
                OutboundAttempt {
                    attempt_id: "att1".into(),
                    conversion_id: "conv".into(),
                    conversion_version: 2,
                    outbound_id: "ob".into(),
                    flow_id: 7,
                    click_hash: "first".into(),
                    goal: "sale".into(),
                    status: ConversionStatus::Approved as i32,
                    revenue_micros: 3_000_000,
                    currency: "EUR".into(),
                    method: "GET".into(),
                    url: "https://source.example/pb?c=first".into(),
                    request_body: String::new(),
                    http_status: 502,
                    error: "bad gateway".into(),
                    response_snippet: "<html>".into(),
                    latency_ms: 321,
                    attempt: 1,
                    state: OutboundState::Retrying as i32,
                    attempted_at_ms: TS + 125_000,
                    next_attempt_at_ms: TS + 185_000,
                    manual: false,
                    traffic_source_id: 4,
                    offer_id: 6,
                    reason: "late, but fine".into(),
                    integration: "s2s".into(),
                    postback_type: "conversion".into(),
                    impression_id: String::new(),
                    scope: "offer:6".into(),
                    cap_action: String::new(),
                },
            )],
        )
        .await?;
    producer
        .send(
            &topics.flows,
            &[(
                7,
                Flow {
                    id: 7,
                    slug: "summer".into(),
                    name: "Summer".into(),
                    status: FlowStatus::Paused as i32,
                    destination_url: "https://offer.example/".into(),
                    default_goal: "sale".into(),
                    updated_at_ms: TS,
                    revision: 3,
                    ..Flow::default()
                },
            )],
        )
        .await?;

    let counts = "SELECT (SELECT count() FROM clicks), (SELECT count() FROM conversions), \
        (SELECT count() FROM postback_log), (SELECT count() FROM postback_results), \
        (SELECT count() FROM outbound_log), (SELECT count() FROM flows)";
    eventually(Duration::from_secs(60), || async {
        Ok((stack.clickhouse(counts).await? == "2\t2\t1\t1\t1\t1").then_some(()))
    })
    .await?;

    let q = |sql: &'static str| stack.clickhouse(sql);
    assert_eq!(
        q("SELECT click_hash, flow_id, ts, ts_ms, routing_key, visitor_id, ip, country, user_agent, device, os, browser, referrer, sub_id, source, sub1, sub2, sub3, sub4, cost_micros, destination_url, is_bot, extra FROM clicks ORDER BY kafka_offset").await?,
        "first\t7\t2026-03-01 10:15:00\t1772360100123\t513\tvis\t203.0.113.9\tDE\tUA/1\tmobile\tAndroid\tChrome\thttps://ref.example/\ts 1\tpush\ta\t\tc\t\t12500\thttps://offer.example/?c=x\t1\t{\"k\":\"v\"}\n\
         second\t7\t2026-03-01 10:15:00\t1772360100123\t513\tvis\t203.0.113.9\tDE\tUA/1\tmobile\tAndroid\tChrome\thttps://ref.example/\ts 1\tpush\ta\t\tc\t\t12500\thttps://offer.example/?c=x\t1\t{\"k\":\"v\"}"
    );
    assert_eq!(
        q("SELECT bot_reason, asn, as_org, datacenter, rate_exceeded FROM clicks ORDER BY kafka_offset LIMIT 1").await?,
        "datacenter\t16509\tAmazon.com, Inc.\t1\t1"
    );
    // The poison message sits between the two clicks: the second is one offset further.
    assert_eq!(
        q("SELECT max(kafka_offset) - min(kafka_offset), uniqExact(kafka_partition) FROM clicks")
            .await?,
        "2\t1"
    );
    assert_eq!(
        q("SELECT conversion_id, version, click_hash, flow_id, goal, status, previous_status, revenue_micros, previous_revenue_micros, currency, uid, postback_id, click_ts, created_at, updated_at, disable_postbacks, country, sub_id, sub1, reason FROM conversions ORDER BY version").await?,
        "conv\t1\tfirst\t7\tsale\tpending\t\t1000000\t0\tEUR\ttx1\tpb1\t2026-03-01 10:15:00\t2026-03-01 10:16:00\t2026-03-01 10:16:00\t0\tDE\ts 1\ta\t\n\
         conv\t2\tfirst\t7\tsale\tapproved\tpending\t3000000\t1000000\tEUR\ttx1\tpb1\t2026-03-01 10:15:00\t2026-03-01 10:16:00\t2026-03-01 10:17:00\t1\tDE\ts 1\ta\tlate, but fine"
    );
    assert_eq!(
        q("SELECT postback_id, received_at, flow_id, click_hash, goal, response_status, reason, message, ip, method, path, param_names, param_values, params_truncated, delta_ms FROM postback_log").await?,
        "pb1\t2026-03-01 10:16:00\t7\tfirst\tsale\t200\taccepted\tok\t198.51.100.1\tGET\t/postback\t['click','payout']\t['first','1.0']\t1\t60000"
    );
    assert_eq!(
        q("SELECT postback_id, click_hash, flow_id, outcome, conversion_id, message, decided_at FROM postback_results").await?,
        "pb1\tfirst\t7\tconverted\tconv\tconverted\t2026-03-01 10:16:01"
    );
    assert_eq!(
        q("SELECT attempt_id, conversion_id, conversion_version, outbound_id, flow_id, click_hash, goal, status, revenue_micros, currency, method, url, http_status, error, response_snippet, latency_ms, attempt, state, attempted_at, next_attempt_at_ms, manual, traffic_source_id, offer_id, reason, integration, postback_type, scope FROM outbound_log").await?,
        "att1\tconv\t2\tob\t7\tfirst\tsale\tapproved\t3000000\tEUR\tGET\thttps://source.example/pb?c=first\t502\tbad gateway\t<html>\t321\t1\tretrying\t2026-03-01 10:17:05\t1772360285123\t0\t4\t6\tlate, but fine\ts2s\tconversion\toffer:6"
    );
    assert_eq!(
        q("SELECT id, revision, slug, name, status, destination_url, default_goal, updated_at FROM flows").await?,
        "7\t3\tsummer\tSummer\tpaused\thttps://offer.example/\tsale\t2026-03-01 10:15:00"
    );
    // The rollups saw the rows: one click (a bot) per click row, and the conversion's
    // move from pending to approved.
    assert_eq!(
        q("SELECT sum(clicks), sum(bots), uniqMerge(unique_clicks), sum(cost_micros) FROM clicks_hourly").await?,
        "2\t2\t1\t25000"
    );
    assert_eq!(
        q("SELECT status, sum(conversions), sum(revenue_micros) FROM conversions_hourly GROUP BY status ORDER BY status").await?,
        "approved\t1\t3000000\npending\t0\t0"
    );

    // The poison message is on the dead-letter topic with where it came from and why.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.options.kafka_brokers)
        .set("group.id", format!("dlq-check-{}", stack.id))
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topics.dead_letter("sink").as_str()])?;
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await??;
    assert_eq!(message.payload(), Some(&[0xff, 0xff, 0xff][..]));
    let headers: HashMap<String, String> = message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_string(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(headers.get("topic"), Some(&topics.clicks));
    assert!(
        !headers
            .get("reason")
            .cloned()
            .unwrap_or_default()
            .is_empty(),
        "{headers:?}"
    );
    let metrics = stack
        .http
        .get(stack.url("sink", "/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("traffsure_sink_messages_total")
                && l.contains("dead_letter")
                && l.contains("\"clicks\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
    // Per table: rows inserted (both clicks), and one batch size and insert time per insert.
    let value = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    assert_eq!(
        value("traffsure_sink_rows_inserted_total{table=\"clicks\"}"),
        Some(2.0),
        "{metrics}"
    );
    let batches = value("traffsure_sink_batch_rows_count{table=\"clicks\"}").unwrap_or(0.0);
    assert!(batches >= 1.0, "{metrics}");
    assert_eq!(
        value("traffsure_sink_insert_seconds_count{table=\"clicks\"}"),
        Some(batches)
    );
    assert_eq!(
        value("traffsure_sink_batch_rows_sum{table=\"clicks\"}"),
        Some(3.0),
        "two clicks and the poison message were batched"
    );
    let reads = metrics
        .lines()
        .find(|l| {
            l.starts_with("traffsure_sink_checkpoint_reads_total{")
                && l.contains("reason=\"insert\"")
                && l.contains("table=\"clicks\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    // One read before and one after each insert of rows.
    assert!(reads.is_some_and(|n| n >= 2.0), "{metrics}");
    Ok(())
}

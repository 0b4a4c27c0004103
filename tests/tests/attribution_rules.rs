//! The attribution rules over real Kafka: default goal and payout, duplicate policies,
//! status changes, upsells, an early postback, a hold timeout and an expired click, each
//! checked against the exact conversion versions and postback results published.

mod attribution_support;

use std::collections::HashMap;
use std::time::Duration;

use attribution_support::*;
use traffsure_events::ConversionStatus::{Approved, Pending, Rejected, Unspecified};
use traffsure_events::{Conversion, PostbackOutcome, PostbackResult};
use traffsure_tests::Stack;

/// (click, goal, uid, version, status, revenue, previous status, previous revenue)
type Expected = (
    u64,
    &'static str,
    &'static str,
    u32,
    traffsure_events::ConversionStatus,
    i64,
    traffsure_events::ConversionStatus,
    i64,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_status_changes_upsells_and_early_postbacks() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    let producer = setup.producer()?;
    produce(&producer, &setup.topics.flows, [flow()])?;
    let stack = Stack::start_with(setup.options().env(
        "conversion-attribution",
        "TRAFFSURE__HOLD_TIMEOUT_SECS",
        "4",
    ))
    .await?;
    let result = run(&setup, &producer).await;
    stack.print_failure(&result);
    result
}

async fn run(setup: &Setup, producer: &rdkafka::producer::BaseProducer) -> anyhow::Result<()> {
    // Click 4's postback comes before its click; click 5 never comes.
    produce(
        producer,
        &setup.topics.postbacks,
        [
            postback("early", 4, "", "", Approved, Some(3_000_000)),
            postback("orphan", 5, "sale", "", Approved, None),
        ],
    )?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Click 6 is past the 30-day window but within the day of grace the state keeps it.
    let mut expired_click = click(6);
    expired_click.1.ts_ms -= (30 * 24 + 12) * 3600 * 1000;
    // Click 7 is past the grace too: the state never keeps it, and its (real, signed)
    // click hash tells the postback is expired without waiting for the hold timeout.
    let keys = traffsure_core::click_hash::ClickHashKeys::parse("1:attribution-test-secret", 1)?;
    let (rk7, mut gone_click) = click(7);
    gone_click.ts_ms -= 40 * 24 * 3600 * 1000;
    gone_click.click_hash = keys.sign(gone_click.ts_ms, 1, rk7, [7, 7, 7, 7]);
    let (_, mut gone_postback) = postback("e5", 7, "", "", Approved, None);
    gone_postback.click_hash = gone_click.click_hash.clone();
    produce(
        producer,
        &setup.topics.clicks,
        [
            click(1),
            click(2),
            click(3),
            click(4),
            expired_click,
            (rk7, gone_click),
        ],
    )?;

    // (postback, expected versions) per case, postbacks of one click in order.
    let cases: Vec<(&str, Vec<_>, Vec<Expected>)> = vec![
        (
            "default goal and payout; `once` keeps the first",
            vec![
                postback("p1", 1, "", "", Unspecified, None),
                postback("p2", 1, "lead", "X", Approved, None),
            ],
            vec![(1, "lead", "", 1, Approved, 1_000_000, Unspecified, 0)],
        ),
        (
            "status changes move the revenue; a new uid is an upsell",
            vec![
                postback("s1", 2, "sale", "T1", Pending, Some(5_000_000)),
                postback("s2", 2, "sale", "T1", Pending, None),
                postback("s3", 2, "sale", "T1", Approved, None),
                postback("s4", 2, "sale", "T1", Rejected, None),
                postback("s5", 2, "sale", "T2", Approved, None),
            ],
            vec![
                (2, "sale", "T1", 1, Pending, 5_000_000, Unspecified, 0),
                (2, "sale", "T1", 2, Approved, 5_000_000, Pending, 5_000_000),
                (2, "sale", "T1", 3, Rejected, 5_000_000, Approved, 5_000_000),
                (2, "sale", "T2", 1, Approved, 20_000_000, Unspecified, 0),
            ],
        ),
        (
            "`every` converts each postback; goals match case-insensitively",
            vec![
                postback("e1", 3, "event", "", Approved, None),
                postback("e2", 3, "event", "", Approved, None),
                postback("e3", 3, "SALE", "U", Approved, Some(7_250_000)),
            ],
            vec![
                (3, "event", "", 1, Approved, 500_000, Unspecified, 0),
                (3, "event", "", 1, Approved, 500_000, Unspecified, 0),
                (3, "sale", "U", 1, Approved, 7_250_000, Unspecified, 0),
            ],
        ),
        (
            "a click older than the window is expired",
            vec![postback("e4", 6, "", "", Approved, None)],
            vec![],
        ),
        (
            "a click out of the state's retention is expired by its click hash",
            vec![(rk7, gone_postback)],
            vec![],
        ),
        (
            "an early postback converts once its click arrives",
            vec![],
            vec![(4, "lead", "", 1, Approved, 3_000_000, Unspecified, 0)],
        ),
    ];
    let mut expected: Vec<Version> = Vec::new();
    for (_, postbacks, versions) in &cases {
        produce(producer, &setup.topics.postbacks, postbacks.clone())?;
        expected.extend(versions.iter().map(|v| {
            (
                format!("click-{:09}", v.0),
                v.1.to_string(),
                v.2.to_string(),
                v.3,
                v.4 as i32,
                v.5,
                v.6 as i32,
                v.7,
            )
        }));
    }

    let conversions: Vec<Conversion> = read_committed(
        &setup.kafka,
        &setup.topics.conversions,
        expected.len(),
        Duration::from_secs(2),
        Duration::from_secs(60),
    )?;
    let mut got: Vec<Version> = conversions.iter().map(version).collect();
    got.sort();
    expected.sort();
    for (name, _, versions) in &cases {
        for v in versions {
            let hash = format!("click-{:09}", v.0);
            let want = expected.iter().filter(|e| e.0 == hash).count();
            let have = got.iter().filter(|g| g.0 == hash).count();
            assert_eq!(have, want, "{name}: versions of {hash}");
        }
    }
    assert_eq!(got, expected);
    for c in &conversions {
        assert_eq!(
            (c.flow_id, c.country.as_str(), c.source.as_str()),
            (1, "DE", "push")
        );
        assert_eq!(c.currency, "EUR");
        assert_eq!(c.conversion_id.len(), 32);
    }
    let ids = |hash: &str, uid: &str| -> Vec<&str> {
        conversions
            .iter()
            .filter(|c| c.click_hash == hash && c.uid == uid)
            .map(|c| c.conversion_id.as_str())
            .collect()
    };
    let t1 = ids("click-000000002", "T1");
    assert!(
        t1.iter().all(|id| *id == t1[0]),
        "one conversion id across versions"
    );

    // 7 converted, 2 updated, 2 duplicates, 2 expired, 1 not found after the hold timeout.
    let results: Vec<PostbackResult> = read_committed(
        &setup.kafka,
        &setup.topics.postback_results,
        14,
        Duration::from_secs(2),
        Duration::from_secs(60),
    )?;
    let by_postback: HashMap<&str, i32> = results
        .iter()
        .map(|r| (r.postback_id.as_str(), r.outcome))
        .collect();
    assert_eq!(by_postback["orphan"], PostbackOutcome::ClickNotFound as i32);
    assert_eq!(by_postback["e4"], PostbackOutcome::Expired as i32);
    assert_eq!(by_postback["e5"], PostbackOutcome::Expired as i32);
    assert_eq!(by_postback["s2"], PostbackOutcome::Duplicate as i32);
    assert_eq!(by_postback["early"], PostbackOutcome::Converted as i32);
    let counts = outcomes(&results);
    let count = |o: PostbackOutcome| counts.get(&(o as i32)).copied().unwrap_or(0);
    assert_eq!(
        [
            count(PostbackOutcome::Converted),
            count(PostbackOutcome::Updated),
            count(PostbackOutcome::Duplicate),
            count(PostbackOutcome::Expired),
            count(PostbackOutcome::ClickNotFound)
        ],
        [7, 2, 2, 2, 1]
    );
    assert_eq!(results.len(), 14);
    Ok(())
}

//! The state is bounded by the attribution window: clicks past their flow's window leave
//! memory with their conversions and visitors, the state logs are compacted, postbacks for
//! dropped clicks are answered as expired from their click hash, and what lives on converts
//! as before, also after a kill -9 and a load from the compacted files.

mod attribution_support;

use std::time::Duration;

use attribution_support::*;
use traffsure_core::click_hash::ClickHashKeys;
use traffsure_events::ConversionStatus::Approved;
use traffsure_events::{Click, Conversion, PostbackOutcome, PostbackResult};
use traffsure_tests::{eventually, Stack};

const DAY_MS: i64 = 24 * 3600 * 1000;
/// Clicks that expire a few seconds after they are produced.
const AGING: u64 = 8_000;
/// Clicks well inside the window.
const FRESH: u64 = 100;

/// The sum of a metric's samples whose labels contain `label`.
fn metric_sum(text: &str, name: &str, label: &str) -> i64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_past_the_window_leave_the_state_and_the_logs_are_compacted() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    let producer = setup.producer()?;
    let (flow_key, mut one_day) = flow();
    one_day.attribution_window_days = 1;
    produce(&producer, &setup.topics.flows, [(flow_key, one_day)])?;
    let service = "conversion-attribution";
    let mut stack = Stack::start_with(
        setup
            .options()
            .env(service, "TRAFFSURE__TRIM_INTERVAL_SECS", "1")
            .env(service, "TRAFFSURE__WINDOW_GRACE_SECS", "0")
            .env(service, "TRAFFSURE__COMPACT_MIN_BYTES", "65536")
            .env(service, "TRAFFSURE__HOLD_TIMEOUT_SECS", "5"),
    )
    .await?;
    let keys = ClickHashKeys::parse("1:attribution-test-secret", 1)?;
    let result = async {
        // Aging clicks are one day minus 20 s old: kept when read, dropped soon after.
        let aging_ts = traffsure_core_now() - DAY_MS + 20_000;
        let aging = |n: u64| -> (u16, Click) {
            let (key, mut c) = click(n);
            c.ts_ms = aging_ts;
            c.click_hash = keys.sign(aging_ts, 1, key, (n as u32).to_be_bytes());
            (key, c)
        };
        let aging_clicks: Vec<_> = (1..=AGING).map(aging).collect();
        let aging_hash = |n: u64| aging_clicks[n as usize - 1].1.click_hash.clone();
        produce(&producer, &setup.topics.clicks, aging_clicks.clone())?;
        let fresh = |n: u64| click(100_000 + n);
        produce(&producer, &setup.topics.clicks, (1..=FRESH).map(fresh))?;

        // An aging click converts while it is inside the window.
        let (key, mut in_time) = postback("in-time", 1, "", "", Approved, None);
        in_time.click_hash = aging_hash(1);
        produce(&producer, &setup.topics.postbacks, [(key, in_time)])?;
        let first: Vec<Conversion> = read_committed(
            &setup.kafka,
            &setup.topics.conversions,
            1,
            Duration::from_secs(1),
            Duration::from_secs(60),
        )?;
        assert_eq!(first[0].click_hash, aging_hash(1));

        // Then the aging clicks, their visitors and that conversion leave the state, and
        // each partition's log is rewritten to its live records.
        let metrics_url = stack.url(service, "/metrics");
        let metrics = eventually(Duration::from_secs(60), || async {
            let text = reqwest::get(&metrics_url).await?.text().await?;
            let entries = "traffsure_attribution_state_entries";
            let done = metric_sum(&text, entries, "kind=\"clicks\"") == FRESH as i64
                && metric_sum(&text, entries, "kind=\"visitors\"") == FRESH as i64
                && metric_sum(&text, entries, "kind=\"conversions\"") == 0
                && metric_sum(&text, "traffsure_attribution_compactions_total", "") >= 4;
            Ok(done.then_some(text))
        })
        .await?;
        let file_bytes = metric_sum(&metrics, "traffsure_attribution_state_file_bytes", "");
        assert!(
            file_bytes < (FRESH as i64) * 200,
            "state logs of {FRESH} clicks take {file_bytes} bytes"
        );
        assert!(
            metric_sum(
                &metrics,
                "traffsure_attribution_trimmed_total",
                "kind=\"clicks\""
            ) >= AGING as i64
        );

        // A dropped click's postback is expired at once (its click hash has its time);
        // fresh clicks convert.
        let (key, mut late) = postback("late", 2, "", "", Approved, None);
        late.click_hash = aging_hash(2);
        produce(
            &producer,
            &setup.topics.postbacks,
            [
                (key, late),
                postback("fresh-1", 100_001, "", "", Approved, None),
            ],
        )?;
        read_committed::<Conversion>(
            &setup.kafka,
            &setup.topics.conversions,
            2,
            Duration::from_millis(500),
            Duration::from_secs(60),
        )?;

        // After a kill -9 the compacted logs load: the fresh click converted before is a
        // duplicate under `once`, another fresh click converts.
        stack.kill(service).await?;
        stack.restart(service).await?;
        produce(
            &producer,
            &setup.topics.postbacks,
            [
                postback("fresh-1-again", 100_001, "lead", "", Approved, None),
                postback("fresh-2", 100_002, "", "", Approved, None),
            ],
        )?;
        let conversions: Vec<Conversion> = read_committed(
            &setup.kafka,
            &setup.topics.conversions,
            3,
            Duration::from_secs(2),
            Duration::from_secs(60),
        )?;
        let mut hashes: Vec<&str> = conversions.iter().map(|c| c.click_hash.as_str()).collect();
        hashes.sort();
        let mut want = vec![
            aging_hash(1),
            "click-000100001".to_string(),
            "click-000100002".to_string(),
        ];
        want.sort();
        assert_eq!(hashes, want);

        let results: Vec<PostbackResult> = read_committed(
            &setup.kafka,
            &setup.topics.postback_results,
            5,
            Duration::from_secs(2),
            Duration::from_secs(60),
        )?;
        let outcome = |id: &str| {
            results
                .iter()
                .filter(|r| r.postback_id == id)
                .map(|r| r.outcome)
                .collect::<Vec<_>>()
        };
        assert_eq!(outcome("late"), vec![PostbackOutcome::Expired as i32]);
        assert_eq!(outcome("fresh-2"), vec![PostbackOutcome::Converted as i32]);
        assert_eq!(
            outcome("fresh-1-again"),
            vec![PostbackOutcome::Duplicate as i32]
        );
        assert_eq!(results.len(), 5);
        let log = std::fs::read_to_string(&stack.services[service].log)?;
        assert!(log.contains("state log compacted"), "no compaction logged");
        anyhow::Ok(())
    }
    .await;
    stack.print_failure(&result);
    result
}

//! Early postbacks held for their clicks across a kill -9: after the restart each converts
//! exactly once when its click arrives, and one whose click never comes is reported as not
//! found once its hold timeout, counted from when it was received, has passed.

mod attribution_support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use attribution_support::*;
use traffsure_events::ConversionStatus::Approved;
use traffsure_events::{Conversion, PostbackOutcome, PostbackResult};
use traffsure_tests::Stack;

const HOLD_SECS: i64 = 15;
/// Clicks whose postbacks convert at once, in every partition, after the held ones.
const PRESENT: u64 = 40;
/// Clicks produced only after the kill; their postbacks are held before it.
const LATE: std::ops::RangeInclusive<u64> = 101..=104;
/// A click that never comes.
const NEVER: u64 = 201;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_postbacks_survive_a_kill_and_convert_once() -> anyhow::Result<()> {
    let setup = Setup::new().await?;
    let producer = setup.producer()?;
    produce(&producer, &setup.topics.flows, [flow()])?;
    let mut stack = Stack::start_with(setup.options().env(
        "conversion-attribution",
        "TRAFFSURE__HOLD_TIMEOUT_SECS",
        HOLD_SECS.to_string(),
    ))
    .await?;
    let result = async {
        produce(&producer, &setup.topics.clicks, (1..=PRESENT).map(click))?;
        let held_at = Instant::now();
        let mut early: Vec<_> = LATE
            .map(|n| postback(&format!("early-{n}"), n, "", "", Approved, None))
            .collect();
        let never = postback("never", NEVER, "", "", Approved, None);
        let never_received_ms = never.1.received_at_ms;
        early.push(never);
        produce(&producer, &setup.topics.postbacks, early)?;
        // Converted at once, behind the held postbacks of their partitions: once these are
        // out, every held postback was read and is held.
        produce(
            &producer,
            &setup.topics.postbacks,
            (1..=PRESENT).map(|n| postback(&format!("now-{n}"), n, "", "", Approved, None)),
        )?;
        let first: Vec<Conversion> = read_committed(
            &setup.kafka,
            &setup.topics.conversions,
            PRESENT as usize,
            Duration::from_secs(1),
            Duration::from_secs(60),
        )?;
        assert_eq!(
            first.len(),
            PRESENT as usize,
            "only the present clicks convert"
        );

        stack.kill("conversion-attribution").await?;
        produce(&producer, &setup.topics.clicks, LATE.map(click))?;
        // Restart well into the hold, so a timeout restarted by the replay would show.
        let restart_at = held_at + Duration::from_secs(10);
        tokio::time::sleep_until(restart_at.into()).await;
        stack.restart("conversion-attribution").await?;

        let expected = PRESENT as usize + LATE.count();
        let conversions: Vec<Conversion> = read_committed(
            &setup.kafka,
            &setup.topics.conversions,
            expected,
            Duration::from_secs(3),
            Duration::from_secs(60),
        )?;
        let mut per_click: HashMap<&str, usize> = HashMap::new();
        for c in &conversions {
            *per_click.entry(c.click_hash.as_str()).or_default() += 1;
        }
        assert_eq!(conversions.len(), expected, "{per_click:?}");
        for n in LATE.chain(1..=PRESENT) {
            let hash = format!("click-{n:09}");
            assert_eq!(
                per_click.get(hash.as_str()),
                Some(&1),
                "conversions of {hash}"
            );
        }

        // One result per postback: the restart's replay publishes nothing twice.
        let results: Vec<PostbackResult> = read_committed(
            &setup.kafka,
            &setup.topics.postback_results,
            expected + 1,
            Duration::from_secs(3),
            Duration::from_secs(60),
        )?;
        let mut by_postback: HashMap<&str, Vec<&PostbackResult>> = HashMap::new();
        for r in &results {
            by_postback
                .entry(r.postback_id.as_str())
                .or_default()
                .push(r);
        }
        assert_eq!(results.len(), expected + 1, "{by_postback:?}");
        for n in LATE {
            let outcomes: Vec<i32> = by_postback[format!("early-{n}").as_str()]
                .iter()
                .map(|r| r.outcome)
                .collect();
            assert_eq!(outcomes, vec![PostbackOutcome::Converted as i32]);
        }
        let never = &by_postback["never"];
        assert_eq!(never.len(), 1);
        assert_eq!(never[0].outcome, PostbackOutcome::ClickNotFound as i32);
        // Held for the hold timeout from its receipt, not from the replay after the
        // restart (which would make it 10 s longer).
        let held_ms = never[0].decided_at_ms - never_received_ms;
        assert!(
            (HOLD_SECS * 1000 - 1000..(HOLD_SECS + 8) * 1000).contains(&held_ms),
            "held {held_ms} ms"
        );
        anyhow::Ok(())
    }
    .await;
    stack.print_failure(&result);
    result
}

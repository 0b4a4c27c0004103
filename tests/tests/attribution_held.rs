//! Early postbacks held for their clicks across a kill -9: after the restart each converts
//! exactly once when its click arrives, and one whose click never comes converts from its
//! click hash (`click_missing`) once its hold timeout, counted from when it was received,
//! has passed. A duplicate of that conversion is refused as one, before and after its click
//! finally arrives, and a click hash past the attribution window is refused as expired.

mod attribution_support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use attribution_support::*;
use traffsure_core::click_hash::ClickHashKeys;
use traffsure_events::ConversionStatus::Approved;
use traffsure_events::{Click, Conversion, PostbackOutcome, PostbackResult};
use traffsure_tests::Stack;

const HOLD_SECS: i64 = 15;
/// Clicks whose postbacks convert at once, in every partition, after the held ones.
const PRESENT: u64 = 40;
/// Clicks produced only after the kill; their postbacks are held before it.
const LATE: std::ops::RangeInclusive<u64> = 101..=104;
/// A click that never comes (until after its conversion was made from its click hash).
const NEVER: u64 = 201;
/// A click past the flow's 30-day attribution window.
const TOO_OLD: u64 = 202;

/// A click with a real, signed click hash, as the click edge makes them.
fn signed_click(keys: &ClickHashKeys, n: u64, age_ms: i64) -> (u16, Click) {
    let (routing_key, mut c) = click(n);
    c.ts_ms = traffsure_core_now() - age_ms;
    c.click_hash = keys.sign(c.ts_ms, 1, routing_key, [n as u8, 2, 0, 1]);
    (routing_key, c)
}

/// A postback of `click`'s hash, with the flow and routing key postback-ingest reads from it.
fn postback_of(id: &str, click: &(u16, Click)) -> (u16, traffsure_events::Postback) {
    let (_, mut p) = postback(id, 0, "", "", Approved, None);
    p.click_hash = click.1.click_hash.clone();
    p.routing_key = u32::from(click.0);
    (click.0, p)
}

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
        let keys = ClickHashKeys::parse("1:attribution-held-secret", 1)?;
        let never_click = signed_click(&keys, NEVER, 60_000);
        let never = postback_of("never", &never_click);
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
        let first: Vec<Conversion> = setup.conversions(PRESENT as usize, Duration::from_secs(1))?;
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

        // The present and late clicks convert, and the click that never came converts from
        // its click hash.
        let expected = PRESENT as usize + LATE.count() + 1;
        let conversions: Vec<Conversion> = setup.conversions(expected, Duration::from_secs(3))?;
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
        let never_hash = never_click.1.click_hash.as_str();
        assert_eq!(per_click.get(never_hash), Some(&1), "{per_click:?}");
        let missing: Vec<&Conversion> = conversions.iter().filter(|c| c.click_missing).collect();
        assert_eq!(
            missing.len(),
            1,
            "only the click that never came is missing"
        );
        let made = missing[0];
        // What the click hash carries; the click's dimensions stay empty.
        assert_eq!(
            (
                made.click_hash.as_str(),
                made.flow_id,
                made.click_ts_ms,
                made.routing_key,
                made.goal.as_str(),
                made.revenue_micros,
                made.version,
            ),
            (
                never_hash,
                1,
                never_click.1.ts_ms,
                u32::from(never_click.0),
                "lead",
                1_000_000,
                1
            )
        );
        assert_eq!(
            (
                made.country.as_str(),
                made.source.as_str(),
                made.sub_id.as_str()
            ),
            ("", "", "")
        );

        // After it: a duplicate under the goal's `once` policy, the click arriving at last
        // and a duplicate after it (no second conversion), and a click past the window.
        produce(
            &producer,
            &setup.topics.postbacks,
            [postback_of("never-again", &never_click)],
        )?;
        let again = setup.results(expected + 1, Duration::from_millis(0))?;
        assert!(again.iter().any(|r| r.postback_id == "never-again"));
        produce(&producer, &setup.topics.clicks, [never_click.clone()])?;
        let too_old = signed_click(&keys, TOO_OLD, 40 * 24 * 3600 * 1000);
        produce(
            &producer,
            &setup.topics.postbacks,
            [
                postback_of("never-after-click", &never_click),
                postback_of("too-old", &too_old),
            ],
        )?;

        // One result per postback: the restart's replay publishes nothing twice.
        let results: Vec<PostbackResult> = setup.results(expected + 3, Duration::from_secs(3))?;
        let mut by_postback: HashMap<&str, Vec<&PostbackResult>> = HashMap::new();
        for r in &results {
            by_postback
                .entry(r.postback_id.as_str())
                .or_default()
                .push(r);
        }
        assert_eq!(results.len(), expected + 3, "{by_postback:?}");
        for n in LATE {
            let outcomes: Vec<i32> = by_postback[format!("early-{n}").as_str()]
                .iter()
                .map(|r| r.outcome)
                .collect();
            assert_eq!(outcomes, vec![PostbackOutcome::Converted as i32]);
        }
        let never = &by_postback["never"];
        assert_eq!(never.len(), 1);
        assert_eq!(never[0].outcome, PostbackOutcome::ClickMissing as i32);
        assert_eq!(never[0].conversion_id, made.conversion_id);
        for duplicate in ["never-again", "never-after-click"] {
            let r = &by_postback[duplicate];
            assert_eq!(r.len(), 1, "{duplicate}");
            assert_eq!(
                (r[0].outcome, r[0].conversion_id.as_str()),
                (
                    PostbackOutcome::Duplicate as i32,
                    made.conversion_id.as_str()
                ),
                "{duplicate}"
            );
        }
        let expired = &by_postback["too-old"];
        assert_eq!(
            (expired.len(), expired[0].outcome),
            (1, PostbackOutcome::Expired as i32)
        );
        use PostbackOutcome::{ClickMissing, ClickNotFound, Converted, Duplicate, Expired};
        assert_eq!(
            count_outcomes(
                &results,
                &[Converted, ClickMissing, Duplicate, Expired, ClickNotFound]
            ),
            [expected - 1, 1, 2, 1, 0]
        );
        // Still one conversion per click: neither the duplicates nor the late click
        // made another.
        let after: Vec<Conversion> = setup.conversions(expected, Duration::from_secs(2))?;
        assert_eq!(after.len(), expected);
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

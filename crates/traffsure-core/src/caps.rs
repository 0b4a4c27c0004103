//! Caps on offers and flows: at most so many clicks or conversions per hour, day, month or
//! lifetime, the period read in the offer's (or flow's) time zone (docs/caps.md).
//!
//! This module decides what a cap is (its spec and checks), which period an instant falls
//! in, and how counts add up: a `Counter` keeps, per offer or flow and metric, counts in
//! 15-minute slots (every time zone's hours and days start on a quarter hour), so a cap's
//! period in any zone is a sum of whole slots. Events come twice to a counter: once when
//! this instance decides them (`record_local`, counted at once) and once when the shared
//! topic delivers them (`record_seen`, counted unless already counted locally). Reading the
//! topics, and which events count, is the services' business.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use traffsure_events::{Cap, Flow, PathOffer};

use crate::flow::FlowError;

/// Length of a counting slot: every zone's offset from UTC is a whole number of quarters.
pub const SLOT_MS: i64 = 15 * 60 * 1000;

/// How long a locally counted event waits for the topic before it stops counting: an event
/// the topic never shows (an aborted transaction) must not hold a cap forever.
pub const PENDING_TTL_MS: i64 = 120_000;

/// How far back slots are kept: a month and a day (lifetime counts keep a running total).
const KEEP_MS: i64 = 32 * 24 * 60 * 60 * 1000;

/// Most caps one offer or flow may have.
pub const MAX_CAPS: usize = 8;

pub const METRICS: &[&str] = &["clicks", "conversions"];
pub const PERIODS: &[&str] = &["hour", "day", "month", "lifetime"];
pub const OVER_CAP_POSTBACKS: &[&str] = &["send", "hold", "suppress"];

/// What a cap counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    Clicks,
    Conversions,
}

impl Metric {
    pub fn from_word(word: &str) -> Option<Self> {
        match word {
            "clicks" => Some(Self::Clicks),
            "conversions" => Some(Self::Conversions),
            _ => None,
        }
    }
}

/// The period a cap's count runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hour,
    Day,
    Month,
    Lifetime,
}

impl Period {
    pub fn from_word(word: &str) -> Option<Self> {
        match word {
            "hour" => Some(Self::Hour),
            "day" => Some(Self::Day),
            "month" => Some(Self::Month),
            "lifetime" => Some(Self::Lifetime),
            _ => None,
        }
    }
}

/// What is capped: an offer (across every flow that uses it) or a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Offer(u32),
    Flow(u32),
}

/// A cap as the API takes it, on an offer or a flow.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapSpec {
    /// `clicks` or `conversions`.
    pub metric: String,
    /// `hour`, `day`, `month` or `lifetime`.
    pub period: String,
    pub limit: u64,
}

impl CapSpec {
    pub fn of(cap: &Cap) -> Self {
        Self {
            metric: cap.metric.clone(),
            period: cap.period.clone(),
            limit: cap.limit,
        }
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> FlowError {
    FlowError {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks caps as an offer or flow submits them (`field` = `caps`), normalised.
pub fn caps_from(field: &str, specs: &[CapSpec]) -> Result<Vec<Cap>, FlowError> {
    if specs.len() > MAX_CAPS {
        return Err(invalid(field, format!("at most {MAX_CAPS} caps")));
    }
    let mut caps: Vec<Cap> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let metric = spec.metric.trim().to_ascii_lowercase();
        if Metric::from_word(&metric).is_none() {
            return Err(invalid(
                format!("{field}[{i}].metric"),
                format!("must be {}", METRICS.join(" or ")),
            ));
        }
        let period = spec.period.trim().to_ascii_lowercase();
        if Period::from_word(&period).is_none() {
            return Err(invalid(
                format!("{field}[{i}].period"),
                format!("must be {}", PERIODS.join(", ")),
            ));
        }
        if spec.limit == 0 {
            return Err(invalid(format!("{field}[{i}].limit"), "must be at least 1"));
        }
        if caps
            .iter()
            .any(|c| c.metric == metric && c.period == period)
        {
            return Err(invalid(
                format!("{field}[{i}]"),
                format!("a {period} cap on {metric} appears twice"),
            ));
        }
        caps.push(Cap {
            metric,
            period,
            limit: spec.limit,
        });
    }
    Ok(caps)
}

/// Checks an `over_cap_postbacks` setting: `send`, `hold` or `suppress`; empty when absent
/// (`allow_empty`: an offer's, which then follows the flow's) or `hold` for a flow.
pub fn over_cap_postbacks_from(
    field: &str,
    value: Option<&str>,
    allow_empty: bool,
) -> Result<String, FlowError> {
    let value = value.unwrap_or_default().trim().to_ascii_lowercase();
    if value.is_empty() {
        return Ok(if allow_empty {
            String::new()
        } else {
            "hold".into()
        });
    }
    if !OVER_CAP_POSTBACKS.contains(&value.as_str()) {
        return Err(invalid(
            field,
            format!("must be {}", OVER_CAP_POSTBACKS.join(", ")),
        ));
    }
    Ok(value)
}

/// What the dispatcher does with the postbacks of an over-cap conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverCapAction {
    Send,
    Hold,
    Suppress,
}

impl OverCapAction {
    /// The word the outbound log shows for a postback not sent (`None` for `Send`).
    pub fn logged(self) -> Option<&'static str> {
        match self {
            Self::Send => None,
            Self::Hold => Some("held"),
            Self::Suppress => Some("suppressed"),
        }
    }
}

/// The over-cap setting for a conversion of `offer_id` in `flow`: the offer's, else the
/// flow's, else hold.
pub fn over_cap_action(flow: &Flow, offer_id: u32) -> OverCapAction {
    let offer = crate::routing::path_offer(flow, offer_id)
        .map(|o| o.over_cap_postbacks.as_str())
        .filter(|s| !s.is_empty());
    match offer.unwrap_or(flow.over_cap_postbacks.as_str()) {
        "send" => OverCapAction::Send,
        "suppress" => OverCapAction::Suppress,
        _ => OverCapAction::Hold,
    }
}

/// The period `ts_ms` falls in, `[start, end)` in ms, read in `zone`; lifetime is all time.
pub fn period_range(period: Period, ts_ms: i64, zone: &jiff::tz::TimeZone) -> (i64, i64) {
    use jiff::{Timestamp, ToSpan};
    let Ok(ts) = Timestamp::from_millisecond(ts_ms) else {
        return (i64::MIN, i64::MAX);
    };
    let local = ts.to_zoned(zone.clone());
    let start = match period {
        Period::Lifetime => return (i64::MIN, i64::MAX),
        Period::Hour => local
            .with()
            .minute(0)
            .second(0)
            .subsec_nanosecond(0)
            .build(),
        Period::Day => local.start_of_day(),
        Period::Month => local.first_of_month().and_then(|d| d.start_of_day()),
    };
    let Ok(start) = start else {
        return (i64::MIN, i64::MAX);
    };
    let step = match period {
        Period::Hour => 1.hour(),
        Period::Day => 1.day(),
        _ => 1.month(),
    };
    let end = start
        .checked_add(step)
        .map(|e| e.timestamp().as_millisecond())
        .unwrap_or(i64::MAX);
    (start.timestamp().as_millisecond(), end)
}

/// Counts of one offer or flow and metric, per slot, with a running total.
#[derive(Debug, Default, Clone)]
struct Tally {
    slots: BTreeMap<i64, i64>,
    total: i64,
}

impl Tally {
    fn add(&mut self, ts_ms: i64, n: i64) {
        *self.slots.entry(ts_ms.div_euclid(SLOT_MS)).or_default() += n;
        self.total += n;
    }

    fn count(&self, (start, end): (i64, i64)) -> u64 {
        if start == i64::MIN {
            return self.total.max(0) as u64;
        }
        let sum: i64 = self
            .slots
            .range(start.div_euclid(SLOT_MS)..end.div_euclid(SLOT_MS))
            .map(|(_, n)| n)
            .sum();
        sum.max(0) as u64
    }
}

/// An event counted locally, waiting for the topic to show it.
#[derive(Debug, Clone)]
struct Pending {
    scopes: Vec<(Scope, Metric)>,
    ts_ms: i64,
    recorded_at_ms: i64,
}

/// The shared count of capped offers and flows (see the module header).
#[derive(Debug, Default)]
pub struct Counter {
    tallies: HashMap<(Scope, Metric), Tally>,
    pending: HashMap<u128, Pending>,
    last_prune_ms: i64,
}

/// A 128-bit fingerprint of an event id (click hash, conversion id).
pub fn fingerprint(id: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(id.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(bytes)
}

impl Counter {
    /// Counts an event this instance decided, at once; the topic's copy will not count it
    /// again.
    pub fn record_local(&mut self, id: u128, scopes: &[(Scope, Metric)], ts_ms: i64, now_ms: i64) {
        if scopes.is_empty() || self.pending.contains_key(&id) {
            return;
        }
        for key in scopes {
            self.tallies.entry(*key).or_default().add(ts_ms, 1);
        }
        self.pending.insert(
            id,
            Pending {
                scopes: scopes.to_vec(),
                ts_ms,
                recorded_at_ms: now_ms,
            },
        );
    }

    /// Counts an event read from the shared topic, unless it was counted locally.
    pub fn record_seen(&mut self, id: u128, scopes: &[(Scope, Metric)], ts_ms: i64) {
        if self.pending.remove(&id).is_some() || scopes.is_empty() {
            return;
        }
        for key in scopes {
            self.tallies.entry(*key).or_default().add(ts_ms, 1);
        }
    }

    /// Forgets what the topic showed of `metric`, keeping what this instance counted
    /// itself and the topic has not shown yet: the state from which the topic is read
    /// again from its beginning without counting an event twice.
    pub fn forget_seen(&mut self, metric: Metric) {
        self.tallies.retain(|(_, m), _| *m != metric);
        for pending in self.pending.values() {
            for key in pending.scopes.iter().filter(|(_, m)| *m == metric) {
                self.tallies.entry(*key).or_default().add(pending.ts_ms, 1);
            }
        }
    }

    /// How many events of `scope` and `metric` fall in `range` (from `period_range`).
    pub fn count(&self, scope: Scope, metric: Metric, range: (i64, i64)) -> u64 {
        self.tallies
            .get(&(scope, metric))
            .map(|t| t.count(range))
            .unwrap_or(0)
    }

    /// Locally counted events not yet seen on the topic.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Stops counting local events the topic has not shown within `PENDING_TTL_MS`, and
    /// drops slots older than a month (at most once a minute).
    pub fn expire(&mut self, now_ms: i64) {
        let tallies = &mut self.tallies;
        self.pending.retain(|_, p| {
            let keep = now_ms - p.recorded_at_ms < PENDING_TTL_MS;
            if !keep {
                for key in &p.scopes {
                    if let Some(t) = tallies.get_mut(key) {
                        t.add(p.ts_ms, -1);
                    }
                }
            }
            keep
        });
        if now_ms - self.last_prune_ms >= 60_000 {
            self.last_prune_ms = now_ms;
            let oldest = (now_ms - KEEP_MS).div_euclid(SLOT_MS);
            for tally in self.tallies.values_mut() {
                // Keep the running total: only the slots go.
                tally.slots = tally.slots.split_off(&oldest);
            }
        }
    }

    /// The first cap of `caps` (of `metric`, read in `zone`) that `scope` has reached at
    /// `now_ms`, with its count.
    pub fn reached<'c>(
        &self,
        scope: Scope,
        caps: &'c [Cap],
        metric: Metric,
        zone: &str,
        now_ms: i64,
    ) -> Option<(&'c Cap, u64)> {
        let zone = crate::routing::zone(zone).unwrap_or(jiff::tz::TimeZone::UTC);
        caps.iter()
            .filter(|c| Metric::from_word(&c.metric) == Some(metric))
            .find_map(|cap| {
                let period = Period::from_word(&cap.period)?;
                let count = self.count(scope, metric, period_range(period, now_ms, &zone));
                (count >= cap.limit).then_some((cap, count))
            })
    }

    /// Whether `scope` has reached any of its caps, of either metric.
    pub fn capped(&self, scope: Scope, caps: &[Cap], zone: &str, now_ms: i64) -> bool {
        [Metric::Clicks, Metric::Conversions]
            .into_iter()
            .any(|m| self.reached(scope, caps, m, zone, now_ms).is_some())
    }
}

/// Whether any of `caps` counts `metric`.
pub fn counts(caps: &[Cap], metric: Metric) -> bool {
    caps.iter()
        .any(|c| Metric::from_word(&c.metric) == Some(metric))
}

/// Whether any event of `flow` can count toward a cap of `metric`: its own caps or those
/// of an offer of one of its paths. Followers skip the events of other flows undecoded.
pub fn flow_counts(flow: &Flow, metric: Metric) -> bool {
    counts(&flow.caps, metric)
        || flow
            .rules
            .iter()
            .filter_map(|r| r.path.as_ref())
            .chain(flow.path.as_ref())
            .flat_map(|p| &p.offers)
            .any(|o| counts(&o.caps, metric))
}

/// What an event of `flow` through `offer` (0 = none) counts toward: the flow's caps and
/// the offer's of that metric.
pub fn scopes_of(flow: &Flow, offer_id: u32, metric: Metric) -> Vec<(Scope, Metric)> {
    let mut scopes = Vec::new();
    if counts(&flow.caps, metric) {
        scopes.push((Scope::Flow(flow.id), metric));
    }
    if let Some(offer) = crate::routing::path_offer(flow, offer_id) {
        if counts(&offer.caps, metric) {
            scopes.push((Scope::Offer(offer.offer_id), metric));
        }
    }
    scopes
}

/// What a click counts toward: its offer's click caps (a visit straight to an offer or a
/// lander click-through, `lander_click`) and its flow's (visits only, so a visitor who
/// clicks through a lander counts once).
pub fn click_scopes(flow: &Flow, offer_id: u32, lander_click: bool) -> Vec<(Scope, Metric)> {
    let mut scopes = scopes_of(flow, offer_id, Metric::Clicks);
    if lander_click {
        scopes.retain(|(scope, _)| !matches!(scope, Scope::Flow(_)));
    }
    scopes
}

/// Whether the offer has reached one of its caps.
pub fn offer_capped(counter: &Counter, offer: &PathOffer, now_ms: i64) -> bool {
    !offer.caps.is_empty()
        && counter.capped(
            Scope::Offer(offer.offer_id),
            &offer.caps,
            &offer.time_zone,
            now_ms,
        )
}

/// Whether the flow has reached one of its own caps.
pub fn flow_capped(counter: &Counter, flow: &Flow, now_ms: i64) -> bool {
    !flow.caps.is_empty()
        && counter.capped(Scope::Flow(flow.id), &flow.caps, &flow.time_zone, now_ms)
}

/// The offer of `offers` to send a visitor to: `picked` when it is open, else the next
/// open one in the path's order (wrapping), else `None` (every offer is capped).
pub fn next_open<'p>(
    offers: &'p [PathOffer],
    picked: &'p PathOffer,
    open: impl Fn(&PathOffer) -> bool,
) -> Option<&'p PathOffer> {
    let at = offers
        .iter()
        .position(|o| std::ptr::eq(o, picked))
        .unwrap_or(0);
    (0..offers.len())
        .map(|i| &offers[(at + i) % offers.len()])
        .find(|o| open(o))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    fn zone(name: &str) -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::get(name).unwrap()
    }

    #[test]
    fn periods_start_in_the_caps_time_zone() {
        let berlin = zone("Europe/Berlin");
        // 23:30 UTC on 1 June is 01:30 on 2 June in Berlin (UTC+2).
        let t = ms("2026-06-01T23:30:00Z");
        assert_eq!(
            period_range(Period::Day, t, &berlin),
            (ms("2026-06-01T22:00:00Z"), ms("2026-06-02T22:00:00Z"))
        );
        assert_eq!(
            period_range(Period::Day, t, &jiff::tz::TimeZone::UTC),
            (ms("2026-06-01T00:00:00Z"), ms("2026-06-02T00:00:00Z"))
        );
        assert_eq!(
            period_range(Period::Hour, t, &zone("Asia/Kolkata")),
            (ms("2026-06-01T23:30:00Z"), ms("2026-06-02T00:30:00Z"))
        );
        assert_eq!(
            period_range(Period::Month, t, &berlin),
            (ms("2026-05-31T22:00:00Z"), ms("2026-06-30T22:00:00Z"))
        );
        // A day with a DST change is 23 hours long.
        assert_eq!(
            period_range(Period::Day, ms("2026-03-29T12:00:00Z"), &berlin),
            (ms("2026-03-28T23:00:00Z"), ms("2026-03-29T22:00:00Z"))
        );
        assert_eq!(
            period_range(Period::Lifetime, t, &berlin),
            (i64::MIN, i64::MAX)
        );
    }

    #[test]
    fn counts_each_event_once_whether_local_or_seen_first() {
        let key = [(Scope::Offer(7), Metric::Conversions)];
        let mut counter = Counter::default();
        let day = period_range(
            Period::Day,
            ms("2026-06-01T12:00:00Z"),
            &jiff::tz::TimeZone::UTC,
        );
        let now = ms("2026-06-01T12:00:00Z");
        counter.record_local(1, &key, now, now);
        counter.record_local(1, &key, now, now);
        assert_eq!(counter.count(Scope::Offer(7), Metric::Conversions, day), 1);
        counter.record_seen(1, &key, now);
        assert_eq!(counter.count(Scope::Offer(7), Metric::Conversions, day), 1);
        // Another instance's event, and one of yesterday.
        counter.record_seen(2, &key, now);
        counter.record_seen(3, &key, ms("2026-05-31T23:59:59Z"));
        assert_eq!(counter.count(Scope::Offer(7), Metric::Conversions, day), 2);
        assert_eq!(
            counter.count(Scope::Offer(7), Metric::Conversions, (i64::MIN, i64::MAX)),
            3
        );
        // A local event the topic never shows stops counting after the TTL.
        counter.record_local(4, &key, now, now);
        assert_eq!(counter.count(Scope::Offer(7), Metric::Conversions, day), 3);
        counter.expire(now + PENDING_TTL_MS);
        assert_eq!(counter.count(Scope::Offer(7), Metric::Conversions, day), 2);
        assert_eq!(counter.pending(), 0);
    }

    #[test]
    fn a_topic_read_again_after_forgetting_counts_each_event_once() {
        let clicks = [(Scope::Flow(3), Metric::Clicks)];
        let sales = [(Scope::Flow(3), Metric::Conversions)];
        let mut counter = Counter::default();
        let now = ms("2026-06-01T12:00:00Z");
        let all = (i64::MIN, i64::MAX);
        counter.record_seen(1, &clicks, now);
        counter.record_seen(2, &clicks, now);
        counter.record_local(3, &clicks, now, now);
        counter.record_seen(9, &sales, now);
        assert_eq!(counter.count(Scope::Flow(3), Metric::Clicks, all), 3);
        counter.forget_seen(Metric::Clicks);
        // What this instance counted and the topic has not shown stays counted…
        assert_eq!(counter.count(Scope::Flow(3), Metric::Clicks, all), 1);
        // …and the other metric is untouched.
        assert_eq!(counter.count(Scope::Flow(3), Metric::Conversions, all), 1);
        // The topic read again from its beginning: every event once.
        for id in [1, 2, 3] {
            counter.record_seen(id, &clicks, now);
        }
        assert_eq!(counter.count(Scope::Flow(3), Metric::Clicks, all), 3);
    }

    #[test]
    fn reached_caps_and_the_next_open_offer() {
        let caps = caps_from(
            "caps",
            &[CapSpec {
                metric: "Clicks".into(),
                period: "day".into(),
                limit: 2,
            }],
        )
        .unwrap();
        let offers: Vec<PathOffer> = [1, 2, 3]
            .into_iter()
            .map(|id| PathOffer {
                offer_id: id,
                caps: caps.clone(),
                time_zone: "America/New_York".into(),
                ..PathOffer::default()
            })
            .collect();
        let mut counter = Counter::default();
        // 03:00 UTC is 23:00 the day before in New York: yesterday's clicks there.
        let now = ms("2026-06-02T12:00:00Z");
        for (id, ts) in [(1, now), (2, now), (3, ms("2026-06-02T03:00:00Z"))] {
            counter.record_seen(id, &[(Scope::Offer(2), Metric::Clicks)], ts);
        }
        counter.record_seen(4, &[(Scope::Offer(3), Metric::Clicks)], now);
        assert!(offer_capped(&counter, &offers[1], now));
        assert!(!offer_capped(&counter, &offers[2], now));
        let open = |o: &PathOffer| !offer_capped(&counter, o, now);
        assert_eq!(next_open(&offers, &offers[1], open).unwrap().offer_id, 3);
        assert_eq!(next_open(&offers, &offers[0], open).unwrap().offer_id, 1);
        counter.record_seen(5, &[(Scope::Offer(3), Metric::Clicks)], now);
        counter.record_seen(6, &[(Scope::Offer(1), Metric::Clicks)], now);
        counter.record_seen(7, &[(Scope::Offer(1), Metric::Clicks)], now);
        let open = |o: &PathOffer| !offer_capped(&counter, o, now);
        assert_eq!(next_open(&offers, &offers[1], open), None);
        // The next day in New York, every offer is open again.
        let tomorrow = ms("2026-06-03T04:00:00Z");
        assert!(!offer_capped(&counter, &offers[1], tomorrow));
    }

    #[test]
    fn checks_caps_and_the_over_cap_setting() {
        let field = |json: serde_json::Value| {
            let specs: Vec<CapSpec> = serde_json::from_value(json).unwrap();
            caps_from("caps", &specs).unwrap_err().field
        };
        assert_eq!(
            field(serde_json::json!([{"metric": "sales", "period": "day", "limit": 1}])),
            "caps[0].metric"
        );
        assert_eq!(
            field(serde_json::json!([{"metric": "clicks", "period": "week", "limit": 1}])),
            "caps[0].period"
        );
        assert_eq!(
            field(serde_json::json!([{"metric": "clicks", "period": "day", "limit": 0}])),
            "caps[0].limit"
        );
        assert_eq!(
            field(serde_json::json!([
                {"metric": "clicks", "period": "day", "limit": 1},
                {"metric": "clicks", "period": "day", "limit": 2}
            ])),
            "caps[1]"
        );
        assert_eq!(over_cap_postbacks_from("o", None, false).unwrap(), "hold");
        assert_eq!(over_cap_postbacks_from("o", None, true).unwrap(), "");
        assert_eq!(
            over_cap_postbacks_from("o", Some(" Suppress "), true).unwrap(),
            "suppress"
        );
        assert_eq!(
            over_cap_postbacks_from("o", Some("drop"), true)
                .unwrap_err()
                .field,
            "o"
        );
        let mut flow = Flow {
            over_cap_postbacks: "suppress".into(),
            path: Some(traffsure_events::Path {
                offers: vec![PathOffer {
                    offer_id: 4,
                    over_cap_postbacks: "send".into(),
                    ..PathOffer::default()
                }],
                ..Default::default()
            }),
            ..Flow::default()
        };
        assert_eq!(over_cap_action(&flow, 4), OverCapAction::Send);
        assert_eq!(over_cap_action(&flow, 5), OverCapAction::Suppress);
        flow.over_cap_postbacks.clear();
        assert_eq!(over_cap_action(&flow, 0), OverCapAction::Hold);
    }
}

//! The attribution rules, with no I/O: given a postback, its click, the flow and the
//! conversion it may update, decide what conversion version (if any) to emit. A postback
//! whose click never arrived converts from what its click hash carries (`click_from_hash`,
//! `mark_missing`).

use sha2::{Digest, Sha256};
use traffsure_core::flow::{find_goal, DEFAULT_WINDOW_DAYS};
use traffsure_core::routing::path_offer;
use traffsure_core::vocab::Vocabulary as _;
use traffsure_events::{
    Click, Conversion, ConversionStatus, DuplicatePolicy, Flow, PathOffer, Postback,
    PostbackOutcome,
};

/// What attribution remembers of a click; also its record in the state store.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClickInfo {
    #[prost(string, tag = "1")]
    pub click_hash: String,
    #[prost(uint32, tag = "2")]
    pub flow_id: u32,
    #[prost(int64, tag = "3")]
    pub ts_ms: i64,
    #[prost(uint32, tag = "4")]
    pub routing_key: u32,
    #[prost(string, tag = "5")]
    pub visitor_id: String,
    #[prost(string, tag = "6")]
    pub country: String,
    #[prost(string, tag = "7")]
    pub source: String,
    #[prost(string, tag = "8")]
    pub sub_id: String,
    #[prost(string, repeated, tag = "9")]
    pub subs: Vec<String>,
    #[prost(string, tag = "10")]
    pub device: String,
    #[prost(string, tag = "11")]
    pub os: String,
    #[prost(string, tag = "12")]
    pub browser: String,
    /// The objects the click went through and the traffic source's click id.
    #[prost(uint32, tag = "13")]
    pub traffic_source_id: u32,
    #[prost(uint32, tag = "14")]
    pub lander_id: u32,
    #[prost(uint32, tag = "15")]
    pub offer_id: u32,
    #[prost(uint32, tag = "16")]
    pub network_id: u32,
    #[prost(string, tag = "17")]
    pub external_id: String,
    /// The impression the click followed (`Click.impression_id`).
    #[prost(string, tag = "18")]
    pub impression_id: String,
    /// The visitor details and fraud signals; none in a record kept before they were.
    #[prost(message, optional, tag = "41")]
    pub visitor: Option<crate::visitor::Visitor>,
}

impl From<&Click> for ClickInfo {
    fn from(click: &Click) -> Self {
        Self {
            click_hash: click.click_hash.clone(),
            flow_id: click.flow_id,
            ts_ms: click.ts_ms,
            routing_key: click.routing_key,
            visitor_id: click.visitor_id.clone(),
            country: click.country.clone(),
            source: click.source.clone(),
            sub_id: click.sub_id.clone(),
            subs: click.subs.clone(),
            device: click.device.clone(),
            os: click.os.clone(),
            browser: click.browser.clone(),
            traffic_source_id: click.traffic_source_id,
            lander_id: click.lander_id,
            offer_id: click.offer_id,
            network_id: click.network_id,
            external_id: click.external_id.clone(),
            impression_id: click.impression_id.clone(),
            visitor: Some(crate::visitor::Visitor::from(click)),
        }
    }
}

impl ClickInfo {
    /// Completes a lander click-through (a click of its own, made when the visitor left
    /// the lander for an offer) from the visit it continues: the edge saw only the
    /// click-through's request, so the visit's tracking parameters (source, sub ID, subs,
    /// external id), traffic source and lander are taken from the visit where the
    /// click-through has none.
    pub fn continue_visit(&mut self, visit: &ClickInfo) {
        let fill = |own: &mut String, visit: &String| {
            if own.is_empty() {
                own.clone_from(visit);
            }
        };
        fill(&mut self.source, &visit.source);
        fill(&mut self.sub_id, &visit.sub_id);
        fill(&mut self.external_id, &visit.external_id);
        fill(&mut self.impression_id, &visit.impression_id);
        if self.subs.iter().all(String::is_empty) {
            self.subs.clone_from(&visit.subs);
        }
        if self.traffic_source_id == 0 {
            self.traffic_source_id = visit.traffic_source_id;
        }
        if self.lander_id == 0 {
            self.lander_id = visit.lander_id;
        }
    }
}

/// The outcome for one postback.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// A new conversion version to publish (first version or an update).
    Emit(Box<Conversion>, PostbackOutcome),
    /// Nothing changed: same status and revenue as the current version.
    Duplicate { conversion_id: String },
    /// The click is older than the flow's attribution window.
    Expired,
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The stable id of the conversion a postback belongs to, by the goal's duplicate policy.
pub fn conversion_id(
    click_hash: &str,
    goal: &str,
    policy: DuplicatePolicy,
    uid: &str,
    postback_id: &str,
) -> String {
    let distinct = match policy {
        DuplicatePolicy::Once => "",
        DuplicatePolicy::Every => postback_id,
        DuplicatePolicy::PerUid | DuplicatePolicy::Unspecified => uid,
    };
    let digest = Sha256::new()
        .chain_update(click_hash.as_bytes())
        .chain_update([0])
        .chain_update(goal.as_bytes())
        .chain_update([0])
        .chain_update(distinct.as_bytes())
        .finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The goal a postback converts: its own, else the flow's default.
fn goal_of<'f>(
    flow: Option<&'f Flow>,
    postback: &Postback,
) -> (String, Option<&'f traffsure_events::Goal>) {
    let key = if postback.goal.is_empty() {
        flow.map(|f| f.default_goal.clone())
            .unwrap_or_else(|| "conversion".into())
    } else {
        postback.goal.to_ascii_lowercase()
    };
    let goal = flow.and_then(|f| find_goal(f, &key));
    (key, goal)
}

/// The id of the conversion `postback` creates or updates.
pub fn conversion_id_for(click: &ClickInfo, flow: Option<&Flow>, postback: &Postback) -> String {
    let (key, goal) = goal_of(flow, postback);
    let policy = goal
        .map(|g| g.duplicate_policy())
        .unwrap_or(DuplicatePolicy::PerUid);
    conversion_id(
        &click.click_hash,
        &key,
        policy,
        &postback.uid,
        &postback.postback_id,
    )
}

/// How long after its click a postback still converts: the flow's attribution window.
pub fn window_ms(flow: Option<&Flow>) -> i64 {
    let days = flow
        .map(|f| f.attribution_window_days)
        .filter(|d| *d > 0)
        .unwrap_or(DEFAULT_WINDOW_DAYS);
    i64::from(days) * DAY_MS
}

/// The click a click hash describes, for a postback whose click did not arrive: its flow,
/// time and routing key, every other dimension empty. The postback's flow and routing key
/// are the ones postback-ingest read from the hash it verified. None when the postback
/// names no click hash (a visitor-based postback) or something that is not one.
pub fn click_from_hash(postback: &Postback) -> Option<ClickInfo> {
    let ts_ms = traffsure_core::click_hash::unverified_ts_ms(&postback.click_hash)?;
    Some(ClickInfo {
        click_hash: postback.click_hash.clone(),
        flow_id: postback.flow_id,
        ts_ms,
        routing_key: postback.routing_key,
        ..ClickInfo::default()
    })
}

/// Marks what `attribute` decided for a click built by `click_from_hash`: a new
/// conversion is `click_missing` and its outcome says so. Updates and duplicates of it are
/// decided as for any conversion; its versions keep the mark, being copies of the first.
pub fn mark_missing(decision: Decision) -> Decision {
    match decision {
        Decision::Emit(mut conversion, PostbackOutcome::Converted) => {
            conversion.click_missing = true;
            crate::visitor::mark_missing(&mut conversion);
            Decision::Emit(conversion, PostbackOutcome::ClickMissing)
        }
        other => other,
    }
}

/// The postback's status: the offer's status map (the affiliate network's words) read
/// first when it names the raw status, else what postback-ingest made of it with the
/// flow's map and the default words.
fn status_of(offer: Option<&PathOffer>, postback: &Postback) -> ConversionStatus {
    let key = postback.raw_status.trim().to_ascii_lowercase();
    offer
        .and_then(|o| o.status_map.get(&key))
        .and_then(|name| ConversionStatus::from_word(&name.trim().to_ascii_lowercase()))
        .unwrap_or_else(|| postback.status())
}

/// What the affiliate is paid for a conversion of `goal_key` (docs/caps.md): the offer's
/// goal's affiliate payout, else the flow's goal's, in that goal's currency; else the
/// revenue, so `{payout}` reads as it did before goals had an affiliate payout.
fn payout_of(
    offer: Option<&PathOffer>,
    goal: Option<&traffsure_events::Goal>,
    goal_key: &str,
    revenue_micros: i64,
    currency: &str,
) -> (i64, String) {
    let fixed = offer
        .and_then(|o| o.goals.iter().find(|g| g.key == goal_key))
        .filter(|g| g.has_affiliate_payout)
        .or(goal.filter(|g| g.has_affiliate_payout));
    match fixed {
        Some(g) => (g.affiliate_payout_micros, g.currency.clone()),
        None => (revenue_micros, currency.to_string()),
    }
}

pub fn attribute(
    click: &ClickInfo,
    flow: Option<&Flow>,
    postback: &Postback,
    current: Option<&Conversion>,
    now_ms: i64,
) -> Decision {
    if postback.received_at_ms - click.ts_ms > window_ms(flow) {
        return Decision::Expired;
    }
    let (goal_key, goal) = goal_of(flow, postback);
    let id = conversion_id_for(click, flow, postback);
    debug_assert!(current.is_none_or(|c| c.conversion_id == id));
    let offer = flow.and_then(|f| path_offer(f, click.offer_id));
    let status = match status_of(offer, postback) {
        ConversionStatus::Unspecified => ConversionStatus::Approved,
        s => s,
    };

    match current {
        Some(current) => {
            let revenue = if postback.has_revenue {
                postback.revenue_micros
            } else {
                current.revenue_micros
            };
            // A new reason alone (e.g. a rejection named after the fact) is a new version.
            let same_reason = postback.reason.is_empty() || postback.reason == current.reason;
            if current.status() == status && current.revenue_micros == revenue && same_reason {
                return Decision::Duplicate { conversion_id: id };
            }
            let mut next = current.clone();
            next.version += 1;
            next.previous_status = current.status;
            next.set_status(status);
            next.previous_revenue_micros = current.revenue_micros;
            next.revenue_micros = revenue;
            next.previous_payout_micros = current.payout_micros;
            (next.payout_micros, next.payout_currency) =
                payout_of(offer, goal, &next.goal, revenue, &next.currency);
            // The cost moves with the status by the model current now (docs/costs.md).
            next.previous_cost_micros = current.cost_micros;
            if let Some((cost, currency)) = traffsure_core::cost::conversion_cost(
                flow.and_then(|f| f.cost_model.as_deref()),
                status,
                revenue,
                &current.currency,
                (current.cost_micros, &current.cost_currency),
            ) {
                next.cost_micros = cost;
                next.cost_currency = currency;
            }
            next.postback_id = postback.postback_id.clone();
            next.updated_at_ms = now_ms;
            next.disable_postbacks = postback.disable_postbacks;
            next.reason = postback.reason.clone();
            crate::visitor::fill_update(click.visitor.as_ref(), &mut next);
            Decision::Emit(Box::new(next), PostbackOutcome::Updated)
        }
        None => {
            // Without revenue in the postback: the offer's goal of this key pays, else the
            // offer's fixed payout, else the flow's goal.
            let offer_goal = offer
                .filter(|_| !postback.has_revenue)
                .and_then(|o| o.goals.iter().find(|g| g.key == goal_key));
            let fixed = offer.filter(|o| o.has_payout && !postback.has_revenue);
            let revenue = if postback.has_revenue {
                postback.revenue_micros
            } else if let Some(offer_goal) = offer_goal {
                offer_goal.payout_micros
            } else if let Some(offer) = fixed {
                offer.payout_micros
            } else {
                goal.map(|g| g.payout_micros).unwrap_or(0)
            };
            let currency = offer_goal
                .map(|g| g.currency.clone())
                .or_else(|| fixed.map(|o| o.currency.clone()))
                .filter(|c| !c.is_empty())
                .or_else(|| (!postback.currency.is_empty()).then(|| postback.currency.clone()))
                .or_else(|| goal.map(|g| g.currency.clone()).filter(|c| !c.is_empty()))
                .unwrap_or_else(|| "USD".into());
            let mut conversion = Conversion {
                conversion_id: id,
                version: 1,
                click_hash: click.click_hash.clone(),
                flow_id: click.flow_id,
                goal: goal_key,
                revenue_micros: revenue,
                currency,
                uid: postback.uid.clone(),
                postback_id: postback.postback_id.clone(),
                click_ts_ms: click.ts_ms,
                created_at_ms: now_ms,
                updated_at_ms: now_ms,
                disable_postbacks: postback.disable_postbacks,
                country: click.country.clone(),
                source: click.source.clone(),
                sub_id: click.sub_id.clone(),
                subs: click.subs.clone(),
                device: click.device.clone(),
                os: click.os.clone(),
                browser: click.browser.clone(),
                routing_key: click.routing_key,
                traffic_source_id: click.traffic_source_id,
                lander_id: click.lander_id,
                offer_id: click.offer_id,
                network_id: click.network_id,
                external_id: click.external_id.clone(),
                reason: postback.reason.clone(),
                impression_id: click.impression_id.clone(),
                ..Conversion::default()
            };
            (conversion.payout_micros, conversion.payout_currency) = payout_of(
                offer,
                goal,
                &conversion.goal,
                conversion.revenue_micros,
                &conversion.currency,
            );
            conversion.set_status(status);
            if let Some((cost, currency)) = traffsure_core::cost::conversion_cost(
                flow.and_then(|f| f.cost_model.as_deref()),
                status,
                conversion.revenue_micros,
                &conversion.currency,
                (0, ""),
            ) {
                conversion.cost_micros = cost;
                conversion.cost_currency = currency;
            }
            crate::visitor::copy_to(click.visitor.as_ref(), &mut conversion);
            Decision::Emit(Box::new(conversion), PostbackOutcome::Converted)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use traffsure_events::Goal;

    fn click() -> ClickInfo {
        ClickInfo {
            click_hash: "c1".into(),
            flow_id: 3,
            ts_ms: 1_000,
            country: "DE".into(),
            ..ClickInfo::default()
        }
    }

    fn flow() -> Flow {
        let mut once = Goal {
            key: "lead".into(),
            payout_micros: 1_000_000,
            currency: "EUR".into(),
            ..Goal::default()
        };
        once.set_duplicate_policy(DuplicatePolicy::Once);
        let sale = Goal {
            key: "sale".into(),
            payout_micros: 20_000_000,
            ..Goal::default()
        };
        Flow {
            id: 3,
            default_goal: "lead".into(),
            goals: vec![once, sale],
            attribution_window_days: 1,
            ..Flow::default()
        }
    }

    fn postback(
        id: &str,
        goal: &str,
        uid: &str,
        status: ConversionStatus,
        revenue: Option<i64>,
    ) -> Postback {
        let mut p = Postback {
            postback_id: id.into(),
            received_at_ms: 2_000,
            goal: goal.into(),
            uid: uid.into(),
            has_revenue: revenue.is_some(),
            revenue_micros: revenue.unwrap_or(0),
            ..Postback::default()
        };
        p.set_status(status);
        p
    }

    fn emitted(decision: Decision) -> Conversion {
        match decision {
            Decision::Emit(c, _) => *c,
            other => panic!("expected a conversion, got {other:?}"),
        }
    }

    #[test]
    fn defaults_goal_payout_and_currency() {
        let c = emitted(attribute(
            &click(),
            Some(&flow()),
            &postback("p1", "", "", ConversionStatus::Approved, None),
            None,
            5,
        ));
        assert_eq!(
            (
                c.goal.as_str(),
                c.revenue_micros,
                c.currency.as_str(),
                c.version
            ),
            ("lead", 1_000_000, "EUR", 1)
        );
        assert_eq!(c.country, "DE");
    }

    #[test]
    fn cpa_cost_follows_the_status_and_keeps_what_an_earlier_model_set() {
        let mut flow = flow();
        flow.cost_model = Some(Box::new(traffsure_events::CostModel {
            kind: traffsure_events::CostModelKind::Cpa as i32,
            amount_micros: 3_000_000,
            currency: "EUR".into(),
            status: "approved".into(),
            ..Default::default()
        }));
        let first = emitted(attribute(
            &click(),
            Some(&flow),
            &postback("p1", "lead", "", ConversionStatus::Pending, Some(5_000_000)),
            None,
            10,
        ));
        assert_eq!((first.cost_micros, first.previous_cost_micros), (0, 0));
        let approved = emitted(attribute(
            &click(),
            Some(&flow),
            &postback(
                "p2",
                "lead",
                "",
                ConversionStatus::Approved,
                Some(5_000_000),
            ),
            Some(&first),
            20,
        ));
        assert_eq!(
            (approved.cost_micros, approved.cost_currency.as_str()),
            (3_000_000, "EUR")
        );
        // A change to another model applies from then on: the recorded cost stays.
        flow.cost_model = None;
        let rejected = emitted(attribute(
            &click(),
            Some(&flow),
            &postback(
                "p3",
                "lead",
                "",
                ConversionStatus::Rejected,
                Some(5_000_000),
            ),
            Some(&approved),
            30,
        ));
        assert_eq!(
            (rejected.cost_micros, rejected.previous_cost_micros),
            (3_000_000, 3_000_000)
        );
    }

    #[test]
    fn a_conversion_carries_its_clicks_visitor_details_through_its_versions() {
        let visitor = crate::visitor::Visitor {
            browser_family: "Mobile Safari".into(),
            device_brand: "Apple".into(),
            asn: 3320,
            rate_exceeded: true,
            ..crate::visitor::Visitor::default()
        };
        let with = ClickInfo {
            visitor: Some(visitor.clone()),
            ..click()
        };
        let f = flow();
        let first = emitted(attribute(
            &with,
            Some(&f),
            &postback("p1", "sale", "u", ConversionStatus::Pending, None),
            None,
            5,
        ));
        assert!(first.visitor_details);
        assert_eq!(
            (
                first.browser_family.as_str(),
                first.device_brand.as_str(),
                first.asn,
                first.rate_exceeded
            ),
            ("Mobile Safari", "Apple", 3320, true)
        );
        // The next version keeps them, whatever the state's click says now.
        let next = emitted(attribute(
            &click(),
            Some(&f),
            &postback("p2", "sale", "u", ConversionStatus::Approved, None),
            Some(&first),
            6,
        ));
        assert_eq!(
            (
                next.version,
                next.device_brand.as_str(),
                next.visitor_details
            ),
            (2, "Apple", true)
        );
        // A click the state kept from before visitor details: none, and not marked.
        let old = emitted(attribute(
            &click(),
            Some(&f),
            &postback("p3", "sale", "w", ConversionStatus::Approved, None),
            None,
            5,
        ));
        assert!(!old.visitor_details && old.browser_family.is_empty());
        // A conversion made without its click carries them empty, and says so.
        let missing = emitted(mark_missing(attribute(
            &ClickInfo {
                visitor: None,
                ..click()
            },
            Some(&f),
            &postback("p4", "sale", "v", ConversionStatus::Approved, None),
            None,
            5,
        )));
        assert!(missing.click_missing && missing.visitor_details);
        assert_eq!(missing.asn, 0);
    }

    #[test]
    fn status_changes_make_versions_and_repeats_are_duplicates() {
        let f = flow();
        let first = emitted(attribute(
            &click(),
            Some(&f),
            &postback(
                "p1",
                "sale",
                "T1",
                ConversionStatus::Pending,
                Some(5_000_000),
            ),
            None,
            5,
        ));
        let same = attribute(
            &click(),
            Some(&f),
            &postback("p2", "sale", "T1", ConversionStatus::Pending, None),
            Some(&first),
            6,
        );
        assert_eq!(
            same,
            Decision::Duplicate {
                conversion_id: first.conversion_id.clone()
            }
        );
        let approved = emitted(attribute(
            &click(),
            Some(&f),
            &postback("p3", "SALE", "T1", ConversionStatus::Approved, None),
            Some(&first),
            7,
        ));
        assert_eq!(
            (
                approved.version,
                approved.status(),
                approved.previous_status()
            ),
            (2, ConversionStatus::Approved, ConversionStatus::Pending)
        );
        assert_eq!(
            approved.revenue_micros, 5_000_000,
            "revenue kept when the update has none"
        );
        assert_eq!(first.previous_revenue_micros, 0);
        assert_eq!(approved.previous_revenue_micros, 5_000_000);
        assert_eq!(approved.conversion_id, first.conversion_id);
        let charged_back = emitted(attribute(
            &click(),
            Some(&f),
            &postback("p4", "sale", "T1", ConversionStatus::Rejected, None),
            Some(&approved),
            8,
        ));
        assert_eq!(
            (charged_back.version, charged_back.status()),
            (3, ConversionStatus::Rejected)
        );
    }

    #[test]
    fn the_reason_rides_on_each_version_and_a_new_one_is_a_new_version() {
        let f = flow();
        let with_reason = |id: &str, status, reason: &str| Postback {
            reason: reason.into(),
            ..postback(id, "sale", "T1", status, None)
        };
        let first = emitted(attribute(
            &click(),
            Some(&f),
            &with_reason("p1", ConversionStatus::Rejected, "duplicate lead"),
            None,
            5,
        ));
        assert_eq!(first.reason, "duplicate lead");
        let silent = attribute(
            &click(),
            Some(&f),
            &with_reason("p2", ConversionStatus::Rejected, ""),
            Some(&first),
            6,
        );
        assert!(matches!(silent, Decision::Duplicate { .. }), "{silent:?}");
        let renamed = emitted(attribute(
            &click(),
            Some(&f),
            &with_reason("p3", ConversionStatus::Rejected, "fraud"),
            Some(&first),
            7,
        ));
        assert_eq!((renamed.version, renamed.reason.as_str()), (2, "fraud"));
        let approved = emitted(attribute(
            &click(),
            Some(&f),
            &with_reason("p4", ConversionStatus::Approved, ""),
            Some(&renamed),
            8,
        ));
        assert_eq!((approved.version, approved.reason.as_str()), (3, ""));
    }

    #[test]
    fn duplicate_policies_key_conversions() {
        let id = |goal, policy, uid, pb| conversion_id("c1", goal, policy, uid, pb);
        assert_eq!(
            id("lead", DuplicatePolicy::Once, "a", "p1"),
            id("lead", DuplicatePolicy::Once, "b", "p2")
        );
        assert_ne!(
            id("sale", DuplicatePolicy::PerUid, "a", "p1"),
            id("sale", DuplicatePolicy::PerUid, "b", "p1")
        );
        assert_eq!(
            id("sale", DuplicatePolicy::PerUid, "a", "p1"),
            id("sale", DuplicatePolicy::PerUid, "a", "p2")
        );
        assert_ne!(
            id("sale", DuplicatePolicy::Every, "a", "p1"),
            id("sale", DuplicatePolicy::Every, "a", "p2")
        );
    }

    fn signed_postback(id: &str, click_ts_ms: i64) -> Postback {
        let keys = traffsure_core::click_hash::ClickHashKeys::parse("1:attribute-test-secret", 1)
            .unwrap_or_else(|error| panic!("{error}"));
        Postback {
            click_hash: keys.sign(click_ts_ms, 3, 77, [1, 2, 3, 4]),
            flow_id: 3,
            routing_key: 77,
            ..postback(id, "", "", ConversionStatus::Approved, None)
        }
    }

    #[test]
    fn a_missing_click_converts_from_its_hash_once() {
        let f = flow();
        let first_postback = signed_postback("p1", 1_500);
        let click = click_from_hash(&first_postback).unwrap_or_else(|| panic!("a click hash"));
        assert_eq!(
            (
                click.flow_id,
                click.ts_ms,
                click.routing_key,
                click.country.as_str()
            ),
            (3, 1_500, 77, "")
        );
        let decision = mark_missing(attribute(&click, Some(&f), &first_postback, None, 5));
        let Decision::Emit(first, PostbackOutcome::ClickMissing) = decision else {
            panic!("expected a click_missing conversion, got {decision:?}");
        };
        assert!(first.click_missing);
        assert_eq!(
            (
                first.flow_id,
                first.click_ts_ms,
                first.routing_key,
                first.revenue_micros
            ),
            (3, 1_500, 77, 1_000_000)
        );
        assert_eq!(
            first.conversion_id,
            conversion_id_for(&click, Some(&f), &first_postback)
        );
        // The goal converts once: a second postback of the hash is a duplicate.
        let again = signed_postback("p2", 1_500);
        assert_eq!(
            mark_missing(attribute(&click, Some(&f), &again, Some(&first), 6)),
            Decision::Duplicate {
                conversion_id: first.conversion_id.clone()
            }
        );
        // A status change updates it, keeping the mark.
        let mut rejected = signed_postback("p3", 1_500);
        rejected.set_status(ConversionStatus::Rejected);
        let updated = emitted(mark_missing(attribute(
            &click,
            Some(&f),
            &rejected,
            Some(&first),
            7,
        )));
        assert!(updated.click_missing);
        assert_eq!(updated.version, 2);
        let mut late = signed_postback("p4", 1_500);
        late.received_at_ms = 1_500 + DAY_MS + 1;
        assert_eq!(
            mark_missing(attribute(&click, Some(&f), &late, None, 8)),
            Decision::Expired
        );
    }

    #[test]
    fn only_click_hashes_describe_a_click() {
        let visitor = Postback {
            visitor_id: "v".into(),
            ..postback("p1", "", "", ConversionStatus::Approved, None)
        };
        assert_eq!(click_from_hash(&visitor), None);
        let made_up = Postback {
            click_hash: "click-000000001".into(),
            ..visitor
        };
        assert_eq!(click_from_hash(&made_up), None);
    }

    fn funnel_flow() -> Flow {
        let offer = PathOffer {
            offer_id: 9,
            network_id: 4,
            has_payout: true,
            payout_micros: 2_500_000,
            currency: "EUR".into(),
            status_map: [
                ("1".to_string(), "approved".to_string()),
                ("2".to_string(), "rejected".to_string()),
                ("x".to_string(), "nonsense".to_string()),
            ]
            .into(),
            ..PathOffer::default()
        };
        Flow {
            path: Some(traffsure_events::Path {
                landers: vec![],
                offers: vec![offer],
            }),
            ..flow()
        }
    }

    fn offer_click() -> ClickInfo {
        ClickInfo {
            traffic_source_id: 5,
            lander_id: 7,
            offer_id: 9,
            network_id: 4,
            external_id: "src-123".into(),
            ..click()
        }
    }

    fn raw(status: &str, revenue: Option<i64>) -> Postback {
        let mut p = postback("p1", "", "", ConversionStatus::Approved, revenue);
        p.raw_status = status.into();
        p
    }

    #[test]
    fn offer_clicks_convert_with_the_offers_payout_and_status_map() {
        let f = funnel_flow();
        let c = emitted(attribute(&offer_click(), Some(&f), &raw("", None), None, 5));
        assert_eq!(
            (c.revenue_micros, c.currency.as_str(), c.status()),
            (2_500_000, "EUR", ConversionStatus::Approved)
        );
        assert_eq!(
            (c.traffic_source_id, c.lander_id, c.offer_id, c.network_id),
            (5, 7, 9, 4)
        );
        assert_eq!(c.external_id, "src-123");
        // The network's `2` is a rejection; what the map does not name (or names wrongly)
        // keeps the status postback-ingest gave.
        let c = emitted(attribute(
            &offer_click(),
            Some(&f),
            &raw("2", None),
            None,
            5,
        ));
        assert_eq!(c.status(), ConversionStatus::Rejected);
        let mut pending = raw("x", None);
        pending.set_status(ConversionStatus::Pending);
        let c = emitted(attribute(&offer_click(), Some(&f), &pending, None, 5));
        assert_eq!(c.status(), ConversionStatus::Pending);
        // A postback's own revenue wins over the offer's payout, in its own currency.
        let mut paid = raw("1", Some(4_000_000));
        paid.currency = "GBP".into();
        let c = emitted(attribute(&offer_click(), Some(&f), &paid, None, 5));
        assert_eq!((c.revenue_micros, c.currency.as_str()), (4_000_000, "GBP"));
        // A click of no offer of the flow converts as before: the goal's payout.
        let other = ClickInfo {
            offer_id: 10,
            ..offer_click()
        };
        let c = emitted(attribute(&other, Some(&f), &raw("2", None), None, 5));
        assert_eq!(
            (c.revenue_micros, c.currency.as_str(), c.status()),
            (1_000_000, "EUR", ConversionStatus::Approved)
        );
        // An offer without a fixed payout leaves it to the goal.
        let mut no_payout = funnel_flow();
        if let Some(path) = no_payout.path.as_mut() {
            path.offers[0].has_payout = false;
        }
        let c = emitted(attribute(
            &offer_click(),
            Some(&no_payout),
            &raw("", None),
            None,
            5,
        ));
        assert_eq!(c.revenue_micros, 1_000_000);
    }

    #[test]
    fn the_affiliate_payout_rides_beside_the_revenue() {
        let mut f = funnel_flow();
        if let Some(path) = f.path.as_mut() {
            path.offers[0].goals = vec![Goal {
                key: "sale".into(),
                payout_micros: 30_000_000,
                currency: "EUR".into(),
                affiliate_payout_micros: 12_000_000,
                has_affiliate_payout: true,
                ..Goal::default()
            }];
        }
        let sale = |status: &str, revenue| {
            let mut p = raw(status, revenue);
            p.goal = "sale".into();
            p
        };
        let first = emitted(attribute(
            &offer_click(),
            Some(&f),
            &sale("1", None),
            None,
            5,
        ));
        assert_eq!(
            (
                first.revenue_micros,
                first.payout_micros,
                first.payout_currency.as_str()
            ),
            (30_000_000, 12_000_000, "EUR")
        );
        // An update with new revenue keeps the affiliate's payout; the previous one rides
        // along for the rollups.
        let next = emitted(attribute(
            &offer_click(),
            Some(&f),
            &sale("2", Some(40_000_000)),
            Some(&first),
            6,
        ));
        assert_eq!(
            (
                next.revenue_micros,
                next.payout_micros,
                next.previous_payout_micros
            ),
            (40_000_000, 12_000_000, 12_000_000)
        );
        // Without an affiliate payout, the payout is the revenue, as {payout} always was.
        let plain = emitted(attribute(
            &offer_click(),
            Some(&f),
            &raw("1", Some(4_000_000)),
            None,
            5,
        ));
        assert_eq!(
            (plain.payout_micros, plain.payout_currency.as_str()),
            (4_000_000, plain.currency.as_str())
        );
    }

    #[test]
    fn an_offers_goal_pays_before_its_fixed_payout_and_the_flows_goal() {
        let mut f = funnel_flow();
        if let Some(path) = f.path.as_mut() {
            path.offers[0].goals = vec![Goal {
                key: "sale".into(),
                name: "Sale".into(),
                payout_micros: 7_250_000,
                currency: "GBP".into(),
                ..Goal::default()
            }];
        }
        let sale = |revenue| {
            let mut p = raw("1", revenue);
            p.goal = "SALE".into();
            p
        };
        let c = emitted(attribute(&offer_click(), Some(&f), &sale(None), None, 5));
        assert_eq!(
            (c.goal.as_str(), c.revenue_micros, c.currency.as_str()),
            ("sale", 7_250_000, "GBP")
        );
        // Another goal of the postback: the offer's fixed payout, as before.
        let c = emitted(attribute(
            &offer_click(),
            Some(&f),
            &raw("1", None),
            None,
            5,
        ));
        assert_eq!((c.revenue_micros, c.currency.as_str()), (2_500_000, "EUR"));
        // The postback's own revenue still wins.
        let c = emitted(attribute(
            &offer_click(),
            Some(&f),
            &sale(Some(9_000_000)),
            None,
            5,
        ));
        assert_eq!(c.revenue_micros, 9_000_000);
        // A click of another offer does not take this offer's goal: the flow's goal pays.
        let other = ClickInfo {
            offer_id: 10,
            ..offer_click()
        };
        let c = emitted(attribute(&other, Some(&f), &sale(None), None, 5));
        assert_eq!((c.goal.as_str(), c.revenue_micros), ("sale", 20_000_000));
    }

    #[test]
    fn click_throughs_take_what_they_lack_from_their_visit() {
        let visit = ClickInfo {
            source: "push".into(),
            sub_id: "s1".into(),
            subs: vec!["a".into(), "".into()],
            ..offer_click()
        };
        let mut hit = ClickInfo {
            click_hash: "hit".into(),
            sub_id: "from-lander".into(),
            subs: vec![String::new(); 10],
            traffic_source_id: 0,
            lander_id: 0,
            offer_id: 10,
            external_id: String::new(),
            ..click()
        };
        hit.continue_visit(&visit);
        assert_eq!(
            (hit.source.as_str(), hit.sub_id.as_str(), hit.subs.clone()),
            ("push", "from-lander", visit.subs.clone())
        );
        assert_eq!(
            (
                hit.traffic_source_id,
                hit.lander_id,
                hit.offer_id,
                hit.external_id.as_str()
            ),
            (5, 7, 10, "src-123")
        );
        assert_eq!(hit.click_hash, "hit");
    }

    #[test]
    fn old_clicks_expire() {
        let mut late = postback("p1", "", "", ConversionStatus::Approved, None);
        late.received_at_ms = 1_000 + DAY_MS + 1;
        assert_eq!(
            attribute(&click(), Some(&flow()), &late, None, 5),
            Decision::Expired
        );
    }
}

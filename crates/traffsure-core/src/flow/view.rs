//! The JSON view of a stored flow, as the API returns it: enums as their words, money as
//! decimal text, and the nested parts in the same shape a spec takes them, so a view can
//! be submitted back unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use traffsure_events::{Condition, Destination, Flow, Path, PostbackSecurity};

use super::spec::{
    ConditionSpec, DestinationSpec, HeaderSpec, OutboundSpec, PathLanderSpec, PathOfferSpec,
    PathSpec, PostbackSecuritySpec, RuleSpec,
};
use super::validate::SECRET_MASK;
use crate::money::format_micros;
use crate::vocab::Vocabulary;

/// The JSON form of a stored flow, as the API returns it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct FlowView {
    pub id: u32,
    pub slug: String,
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::flow_status))]
    pub status: String,
    pub destination_url: String,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::redirect_mode))]
    pub redirect_mode: String,
    pub default_goal: String,
    pub goals: Vec<GoalView>,
    pub attribution_window_days: u32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub revision: u64,
    pub destinations: Vec<DestinationSpec>,
    pub rules: Vec<RuleSpec>,
    pub inactive_url: String,
    pub bot_url: String,
    pub postback_security: PostbackSecuritySpec,
    pub status_map: BTreeMap<String, String>,
    pub outbound_postbacks: Vec<OutboundSpec>,
    #[serde(default)]
    pub time_zone: String,
    /// The flow's traffic source; `null` = none.
    #[serde(default)]
    pub traffic_source_id: Option<u32>,
    /// The flow's funnel by object ids and weights; `null` = its destinations.
    #[serde(default)]
    pub path: Option<PathSpec>,
    /// Caps (docs/caps.md).
    #[serde(default)]
    pub caps: Vec<crate::caps::CapSpec>,
    #[serde(default)]
    pub cap_fallback_url: String,
    #[serde(default)]
    pub over_cap_postbacks: String,
    /// The flow's own cost model; `null` = its traffic source's (docs/costs.md).
    #[serde(default)]
    pub cost_model: Option<crate::cost::CostModelSpec>,
    /// The cost model in effect for the flow's traffic (its own, else its source's);
    /// `null` = auto.
    #[serde(default)]
    pub effective_cost_model: Option<crate::cost::CostModelSpec>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct GoalView {
    pub key: String,
    pub name: String,
    pub payout: String,
    /// The payout's three-letter currency (`USD` unless the goal was given one).
    pub currency: String,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::duplicate_policy))]
    pub duplicate_policy: String,
    /// The affiliate's payout; `null` = the conversion's revenue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affiliate_payout: Option<String>,
}

impl From<&Flow> for FlowView {
    fn from(flow: &Flow) -> Self {
        Self {
            id: flow.id,
            slug: flow.slug.clone(),
            name: flow.name.clone(),
            status: flow.status().word().into(),
            destination_url: flow.destination_url.clone(),
            redirect_mode: flow.redirect_mode().word().into(),
            default_goal: flow.default_goal.clone(),
            goals: flow
                .goals
                .iter()
                .map(|g| GoalView {
                    key: g.key.clone(),
                    name: g.name.clone(),
                    payout: format_micros(g.payout_micros),
                    currency: goal_currency(&g.currency).into(),
                    duplicate_policy: g.duplicate_policy().word().into(),
                    affiliate_payout: g
                        .has_affiliate_payout
                        .then(|| format_micros(g.affiliate_payout_micros)),
                })
                .collect(),
            attribution_window_days: flow.attribution_window_days,
            created_at_ms: flow.created_at_ms,
            updated_at_ms: flow.updated_at_ms,
            revision: flow.revision,
            destinations: destination_views(&flow.destinations),
            rules: flow
                .rules
                .iter()
                .map(|r| RuleSpec {
                    name: r.name.clone(),
                    conditions: condition_views(&r.conditions),
                    destinations: destination_views(&r.destinations),
                    any_of: r
                        .any_of
                        .iter()
                        .map(|g| condition_views(&g.conditions))
                        .collect(),
                    path: path_view(r.path.as_ref()),
                })
                .collect(),
            inactive_url: flow.inactive_url.clone(),
            bot_url: flow.bot_url.clone(),
            postback_security: PostbackSecuritySpec::from_security(
                flow.postback_security.as_deref(),
            ),
            status_map: flow.status_map.clone(),
            outbound_postbacks: flow
                .outbound_postbacks
                .iter()
                .map(|o| OutboundSpec {
                    id: o.id.clone(),
                    url: o.url.clone(),
                    method: o.method.clone(),
                    body_template: o.body_template.clone(),
                    body_format: o.body_format.clone(),
                    goals: o.goals.clone(),
                    on_status: o.on_status.clone(),
                    reasons: o.reasons.clone(),
                    headers: o
                        .headers
                        .iter()
                        .map(|h| HeaderSpec {
                            name: h.name.clone(),
                            value: if h.secret {
                                SECRET_MASK.to_string()
                            } else {
                                h.value.clone()
                            },
                            secret: h.secret,
                        })
                        .collect(),
                    delay_seconds: o.delay_seconds,
                    enabled: o.enabled,
                    postback_type: crate::flow::postback_type_word(&o.r#type).into(),
                })
                .collect(),
            time_zone: flow.time_zone.clone(),
            traffic_source_id: Some(flow.traffic_source_id).filter(|id| *id != 0),
            path: path_view(flow.path.as_ref()),
            caps: flow.caps.iter().map(crate::caps::CapSpec::of).collect(),
            cap_fallback_url: flow.cap_fallback_url.clone(),
            over_cap_postbacks: flow.over_cap_postbacks.clone(),
            cost_model: flow
                .own_cost_model
                .as_deref()
                .map(crate::cost::CostModelSpec::of),
            effective_cost_model: flow
                .cost_model
                .as_deref()
                .map(crate::cost::CostModelSpec::of),
        }
    }
}

/// A stored path by ids and weights; `None` for a missing or empty one.
fn path_view(path: Option<&Path>) -> Option<PathSpec> {
    let path = path.filter(|p| !p.offers.is_empty() || !p.landers.is_empty())?;
    Some(PathSpec {
        landers: path
            .landers
            .iter()
            .map(|l| PathLanderSpec {
                lander_id: l.lander_id,
                weight: l.weight.max(1),
            })
            .collect(),
        offers: path
            .offers
            .iter()
            .map(|o| PathOfferSpec {
                offer_id: o.offer_id,
                weight: o.weight.max(1),
            })
            .collect(),
    })
}

/// A goal's currency as the view shows it. The goal a flow gets when it is given none is
/// stored without a currency, which reads as `USD` (what a goal given without one gets,
/// and what attribution falls back to): the view shows that, so that it can be submitted
/// back, where an empty currency is refused.
fn goal_currency(stored: &str) -> &str {
    if stored.is_empty() {
        DEFAULT_GOAL_CURRENCY
    } else {
        stored
    }
}

/// The currency of a goal given without one.
const DEFAULT_GOAL_CURRENCY: &str = "USD";

fn condition_views(conditions: &[Condition]) -> Vec<ConditionSpec> {
    conditions
        .iter()
        .map(|c| ConditionSpec {
            field: c.field.clone(),
            op: if c.negate { "not_in" } else { "in" }.into(),
            values: c.values.clone(),
        })
        .collect()
}

fn destination_views(destinations: &[Destination]) -> Vec<DestinationSpec> {
    destinations
        .iter()
        .map(|d| DestinationSpec {
            url: d.url.clone(),
            weight: d.weight.max(1),
        })
        .collect()
}

impl PostbackSecuritySpec {
    fn from_security(security: Option<&PostbackSecurity>) -> Self {
        security
            .map(|s| Self {
                token: s.token.clone(),
                hmac_secret: s.hmac_secret.clone(),
                max_age_seconds: s.max_age_seconds,
                allowed_ips: s.allowed_ips.clone(),
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::flow::{find_goal, FlowSpec};

    /// The flow stored for a submitted spec.
    fn stored(json: serde_json::Value, now_ms: i64) -> Flow {
        let spec: FlowSpec = serde_json::from_value(json).unwrap();
        let mut flow = Flow::default();
        spec.apply(&mut flow, now_ms).unwrap();
        flow
    }

    #[test]
    fn applies_a_full_spec() {
        let flow = stored(
            serde_json::json!({
                "name": " Summer ", "slug": "summer", "destination_url": "https://offer.test/?c={click}",
                "redirect_mode": "307",
                "goals": [{"key": "Lead", "payout": "1.5"}, {"key": "sale", "payout": 20, "duplicate_policy": "every"}],
                "default_goal": "sale"
            }),
            1000,
        );
        let view = FlowView::from(&flow);
        assert_eq!(view.name, "Summer");
        assert_eq!(view.redirect_mode, "307");
        assert_eq!(view.goals[0].key, "lead");
        assert_eq!(view.goals[0].payout, "1.5");
        assert_eq!(view.goals[1].duplicate_policy, "every");
        assert_eq!(view.default_goal, "sale");
        assert_eq!((view.revision, view.created_at_ms), (1, 1000));
        assert_eq!(find_goal(&flow, "LEAD").unwrap().payout_micros, 1_500_000);
    }

    #[test]
    fn the_view_of_a_flow_without_goals_can_be_submitted_back() {
        let mut flow = stored(
            serde_json::json!({"name": "x", "slug": "x", "destination_url": "https://a.test/"}),
            1,
        );
        let view = FlowView::from(&flow);
        // The view back as a spec, without its read-only fields.
        let mut json = serde_json::to_value(&view).unwrap();
        let map = json.as_object_mut().unwrap();
        for read_only in [
            "id",
            "created_at_ms",
            "updated_at_ms",
            "revision",
            "effective_cost_model",
        ] {
            map.remove(read_only);
        }
        let spec: FlowSpec = serde_json::from_value(json).unwrap();
        spec.apply(&mut flow, 2).unwrap();
        assert_eq!(view.goals.len(), 1);
        assert_eq!(
            (view.goals[0].key.as_str(), view.goals[0].currency.as_str()),
            ("conversion", "USD")
        );
        assert_eq!(flow.goals[0].currency, "USD");
        assert_eq!(FlowView::from(&flow).goals, view.goals);
    }

    #[test]
    fn a_secret_header_reads_masked_and_the_mask_sent_back_keeps_it() {
        let crm = |authorization: &str| {
            serde_json::json!({"name": "CRM", "destination_url": "https://a.test/",
                "outbound_postbacks": [{"id": "crm", "url": "https://crm.test/leads", "method": "POST",
                    "body_format": "json", "body_template": "{\"click\": \"{click}\"}",
                    "headers": [{"name": "Authorization", "value": authorization, "secret": true},
                                {"name": "X-Source", "value": "traffsure"}]}]})
        };
        let mut flow = stored(crm("Bearer s3cret"), 5);
        let headers = &flow.outbound_postbacks[0].headers;
        assert_eq!(
            (headers[0].value.as_str(), headers[1].value.as_str()),
            ("Bearer s3cret", "traffsure")
        );
        let view = FlowView::from(&flow);
        let shown = &view.outbound_postbacks[0].headers;
        assert_eq!(
            (shown[0].value.as_str(), shown[1].value.as_str()),
            (SECRET_MASK, "traffsure")
        );
        assert!(!serde_json::to_string(&view).unwrap().contains("s3cret"));
        // The panel sends the view back: the mask keeps the stored secret.
        let again: FlowSpec = serde_json::from_value(crm(SECRET_MASK)).unwrap();
        again.apply(&mut flow, 6).unwrap();
        assert_eq!(flow.outbound_postbacks[0].headers[0].value, "Bearer s3cret");
        let rotated: FlowSpec = serde_json::from_value(crm("Bearer new")).unwrap();
        rotated.apply(&mut flow, 7).unwrap();
        assert_eq!(flow.outbound_postbacks[0].headers[0].value, "Bearer new");
    }

    #[test]
    fn round_trips_rules_security_and_outbound() {
        let input = serde_json::json!({
            "name": "x", "destination_url": "https://fallback.test/?c={click}",
            "destinations": [{"url": "https://a.test/", "weight": 3}, {"url": "https://b.test/"}],
            "rules": [{"name": "DE mobile", "conditions": [
                {"field": "country", "values": ["de", "AT"]},
                {"field": "ip", "op": "not_in", "values": ["10.0.0.0/8", "2001:db8::1"]}],
                "destinations": [{"url": "https://de.test/{sub1}", "weight": 1}]},
                {"any_of": [[{"field": "hour", "values": ["9-17"]}, {"field": "weekday", "values": ["Mon-Fri"]}],
                            [{"field": "asn", "values": ["AS13335"]}]],
                 "destinations": [{"url": "https://office-hours.test/"}]}],
            "time_zone": "Europe/Berlin",
            "inactive_url": "https://paused.test/", "bot_url": "https://bots.test/",
            "postback_security": {"token": "s3cret", "allowed_ips": ["203.0.113.0/24"]},
            "status_map": {"Sale": "approved", "chargeback": "rejected"},
            "goals": [{"key": "lead"}, {"key": "sale"}],
            "outbound_postbacks": [{"url": "https://src.test/pb?c={sub_id}&p={payout}", "goals": ["sale"]},
                {"id": "aff", "url": "https://aff.test/", "method": "POST", "body_format": "json",
                 "body_template": "{\"click\": \"{click}\"}", "on_status": "any", "delay_seconds": 60,
                 "reasons": [" Fraud ", "fraud", "Bad GEO"]}]
        });
        let flow = stored(input, 5);
        let view = FlowView::from(&flow);
        assert_eq!(view.destinations[1].weight, 1);
        assert_eq!(view.rules[0].conditions[0].values, ["DE", "AT"]);
        assert_eq!(view.rules[0].conditions[1].op, "not_in");
        assert_eq!(
            view.rules[0].conditions[1].values,
            ["10.0.0.0/8", "2001:db8::1/128"]
        );
        assert_eq!(view.rules[1].any_of[0][1].values, ["mon-fri"]);
        assert_eq!(view.rules[1].any_of[1][0].values, ["13335"]);
        assert_eq!(view.time_zone, "Europe/Berlin");
        assert_eq!(view.postback_security.token, "s3cret");
        assert_eq!(view.status_map["sale"], "approved");
        assert_eq!(view.outbound_postbacks[0].id, "out1");
        assert_eq!(view.outbound_postbacks[0].on_status, "approved");
        assert_eq!(view.outbound_postbacks[1].method, "POST");
        assert_eq!(view.outbound_postbacks[1].reasons, ["fraud", "bad geo"]);
        assert!(view.outbound_postbacks[0].reasons.is_empty());
        // The view is itself a valid spec for the same flow.
        let again = stored(
            serde_json::json!({
                "name": view.name, "destination_url": view.destination_url,
                "destinations": view.destinations, "rules": view.rules,
                "inactive_url": view.inactive_url, "bot_url": view.bot_url,
                "postback_security": view.postback_security, "status_map": view.status_map,
                "goals": [{"key": "lead"}, {"key": "sale"}],
                "outbound_postbacks": view.outbound_postbacks,
                "time_zone": view.time_zone,
            }),
            5,
        );
        assert_eq!(FlowView::from(&again), view);
    }
}

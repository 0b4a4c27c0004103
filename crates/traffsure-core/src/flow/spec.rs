//! The serde model of a flow as the API takes it (`POST /api/v1/flows`,
//! `PUT /api/v1/flows/{id}`): field names, optional fields and their defaults. Whether
//! the values are acceptable is decided by [`validate`](super::validate); the view of a
//! stored flow reuses the nested specs, so what the API shows can be submitted back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use traffsure_events::ConversionStatus;

use crate::vocab::Vocabulary;

/// A flow as submitted to `POST /api/v1/flows` or `PUT /api/v1/flows/{id}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    pub name: String,
    #[serde(default)]
    pub slug: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::flow_status))]
    pub status: Option<String>,
    /// Required unless the flow has a `path`.
    #[serde(default)]
    pub destination_url: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::redirect_mode))]
    pub redirect_mode: Option<String>,
    #[serde(default)]
    pub default_goal: Option<String>,
    #[serde(default)]
    pub goals: Vec<GoalSpec>,
    #[serde(default)]
    pub attribution_window_days: Option<u32>,
    /// Default destination set with weights; empty = `destination_url` alone.
    #[serde(default)]
    pub destinations: Vec<DestinationSpec>,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Where paused and archived flows send visitors; empty = 404.
    #[serde(default)]
    pub inactive_url: Option<String>,
    /// Where bot clicks go; empty = the normal destinations.
    #[serde(default)]
    pub bot_url: Option<String>,
    #[serde(default)]
    pub postback_security: PostbackSecuritySpec,
    /// Raw postback status → approved, pending or rejected.
    #[serde(default)]
    pub status_map: BTreeMap<String, String>,
    #[serde(default)]
    pub outbound_postbacks: Vec<OutboundSpec>,
    /// IANA time zone of the `hour` and `weekday` rule conditions; empty = UTC.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// The traffic source the flow buys from (a stored object's id); none = 0 or absent.
    #[serde(default)]
    pub traffic_source_id: Option<u32>,
    /// The funnel of stored landers and offers visitors go down when no rule matches;
    /// replaces `destination_url` and `destinations`.
    #[serde(default)]
    pub path: Option<PathSpec>,
    /// The flow's own caps (docs/caps.md), read in `time_zone`.
    #[serde(default)]
    pub caps: Vec<crate::caps::CapSpec>,
    /// Where visitors go when the flow, or every offer of the chosen path, is capped.
    #[serde(default)]
    pub cap_fallback_url: Option<String>,
    /// Outbound postbacks of over-cap conversions: `send`, `hold` (default) or `suppress`.
    #[serde(default)]
    pub over_cap_postbacks: Option<String>,
    /// What the flow's traffic costs (docs/costs.md); none = its traffic source's model.
    #[serde(default)]
    pub cost_model: Option<crate::cost::CostModelSpec>,
}

/// A funnel by object ids and weights: to one of the landers, then to one of the offers;
/// with no landers, straight to one of the offers.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSpec {
    #[serde(default)]
    pub landers: Vec<PathLanderSpec>,
    pub offers: Vec<PathOfferSpec>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathLanderSpec {
    pub lander_id: u32,
    /// Relative weight among the path's landers (default 1).
    #[serde(default = "one")]
    pub weight: u32,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathOfferSpec {
    pub offer_id: u32,
    /// Relative weight among the path's offers (default 1).
    #[serde(default = "one")]
    pub weight: u32,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSpec {
    pub url: String,
    /// Relative weight inside its set (default 1).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    #[serde(default)]
    pub name: String,
    /// Conditions that must all hold.
    #[serde(default)]
    pub conditions: Vec<ConditionSpec>,
    /// Required unless the rule has a `path`.
    #[serde(default)]
    pub destinations: Vec<DestinationSpec>,
    /// Alternatives, each a list of conditions that hold together: when there are any,
    /// at least one must hold as well as `conditions`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any_of: Vec<Vec<ConditionSpec>>,
    /// A funnel of stored landers and offers instead of `destinations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathSpec>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    /// One of [`RULE_FIELDS`](super::RULE_FIELDS).
    pub field: String,
    /// `in` (default) or `not_in`.
    #[serde(default = "op_in")]
    pub op: String,
    pub values: Vec<String>,
}

fn op_in() -> String {
    "in".into()
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostbackSecuritySpec {
    /// Required value of the `token` parameter; empty = off.
    pub token: String,
    /// HMAC-SHA256 secret for signed postbacks; empty = off.
    pub hmac_secret: String,
    /// Replay window for signed postbacks in seconds (0 = 300).
    pub max_age_seconds: u32,
    /// Addresses or CIDR blocks allowed to send postbacks; empty = any.
    pub allowed_ips: Vec<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundSpec {
    /// Stable id; generated from the position when empty.
    #[serde(default)]
    pub id: String,
    pub url: String,
    /// GET (default) or POST.
    #[serde(default = "get")]
    pub method: String,
    #[serde(default)]
    pub body_template: String,
    /// `form` (default) or `json`, for POST.
    #[serde(default = "form")]
    pub body_format: String,
    /// Goals that fire it; empty = every goal.
    #[serde(default)]
    pub goals: Vec<String>,
    /// approved (default), pending, rejected or any.
    #[serde(default = "approved")]
    pub on_status: String,
    /// Rejection reasons that fire it, matched case-insensitively; empty = any.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Request headers sent as they are; a secret one's value reads back masked.
    #[serde(default)]
    pub headers: Vec<HeaderSpec>,
    #[serde(default)]
    pub delay_seconds: u32,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// What fires it: `conversion` (default), `click`, `impression` or `event`
    /// (`crate::flow::POSTBACK_TYPES`).
    #[serde(default = "conversion", rename = "type")]
    pub postback_type: String,
}

fn conversion() -> String {
    "conversion".into()
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderSpec {
    pub name: String,
    #[serde(default)]
    pub value: String,
    /// A credential: shown as `SECRET_MASK`, and sending the mask back keeps the value.
    #[serde(default)]
    pub secret: bool,
}

fn get() -> String {
    "GET".into()
}
fn form() -> String {
    "form".into()
}
fn approved() -> String {
    ConversionStatus::Approved.word().into()
}
fn yes() -> bool {
    true
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoalSpec {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Decimal text or number, e.g. `"12.50"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payout: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::duplicate_policy))]
    pub duplicate_policy: Option<String>,
    /// What the affiliate is paid for a conversion of this goal, decimal text or number;
    /// absent = the conversion's revenue (docs/caps.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affiliate_payout: Option<serde_json::Value>,
}

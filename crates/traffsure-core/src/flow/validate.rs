//! Validation of a submitted flow: a [`FlowSpec`] becomes the Protobuf `Flow` stored on
//! the `flows` topic, or a [`FlowError`] naming the first field that is not acceptable.

use std::collections::BTreeMap;

use traffsure_events::{
    Condition, ConditionGroup, ConversionStatus, Destination, DuplicatePolicy, Flow, FlowStatus,
    Goal, OutboundHeader, OutboundPostback, Path, PathLander, PathOffer, PostbackSecurity,
    RedirectMode, Rule,
};

use super::conditions::{normalize, RULE_FIELDS};
use super::spec::{
    ConditionSpec, DestinationSpec, FlowSpec, GoalSpec, HeaderSpec, OutboundSpec, PathSpec,
    PostbackSecuritySpec, RuleSpec,
};
use crate::cidr::Cidr;
use crate::macros::macro_names;
use crate::money::parse_micros;
use crate::vocab::Vocabulary;

/// Attribution window used when a flow sets none.
pub const DEFAULT_WINDOW_DAYS: u32 = 30;

/// Macros a destination URL may use.
pub const DESTINATION_MACROS: &[&str] = &[
    "click",
    "flow",
    "sub_id",
    "source",
    "sub1",
    "sub2",
    "sub3",
    "sub4",
    "sub5",
    "sub6",
    "sub7",
    "sub8",
    "sub9",
    "sub10",
    "country",
    "device",
    "os",
    "browser",
    "cost",
    "ts",
    "visitor",
    "external_id",
];

/// Macros an outbound postback URL or body may use.
pub const OUTBOUND_MACROS: &[&str] = &[
    "click",
    "flow",
    "sub_id",
    "source",
    "sub1",
    "sub2",
    "sub3",
    "sub4",
    "sub5",
    "sub6",
    "sub7",
    "sub8",
    "sub9",
    "sub10",
    "goal",
    "status",
    "revenue",
    "payout",
    "uid",
    "currency",
    "revenue_converted",
    "currency_converted",
    "country",
    "conversion",
    "ts",
    "external_id",
    "reason",
    "payout_currency",
    "impression",
];

/// Most rejection reasons one outbound postback may name.
pub const MAX_OUTBOUND_REASONS: usize = 64;
/// The CRM push preset: a POST of a JSON object with every outbound macro under its own
/// name, and an `Authorization` header whose value is a secret to fill in.
pub fn crm_push_preset() -> OutboundSpec {
    let fields: Vec<String> = OUTBOUND_MACROS
        .iter()
        .map(|name| format!("\"{name}\": \"{{{name}}}\""))
        .collect();
    OutboundSpec {
        id: "crm".into(),
        url: "https://crm.example/api/leads".into(),
        method: "POST".into(),
        body_template: format!("{{{}}}", fields.join(", ")),
        body_format: "json".into(),
        goals: Vec::new(),
        on_status: "any".into(),
        reasons: Vec::new(),
        headers: vec![HeaderSpec {
            name: "Authorization".into(),
            value: "Bearer YOUR-CRM-API-KEY".into(),
            secret: true,
        }],
        delay_seconds: 0,
        enabled: true,
        postback_type: "conversion".into(),
    }
}

/// The outbound postback types: what fires one.
pub const POSTBACK_TYPES: &[&str] = &["conversion", "click", "impression", "event"];

/// Macros a click postback may use: the click's own, no conversion's.
pub const CLICK_POSTBACK_MACROS: &[&str] = &[
    "click",
    "flow",
    "sub_id",
    "source",
    "sub1",
    "sub2",
    "sub3",
    "sub4",
    "sub5",
    "sub6",
    "sub7",
    "sub8",
    "sub9",
    "sub10",
    "country",
    "device",
    "os",
    "browser",
    "cost",
    "ts",
    "visitor",
    "external_id",
    "impression",
];

/// Macros an impression postback may use.
pub const IMPRESSION_POSTBACK_MACROS: &[&str] = &[
    "impression",
    "flow",
    "sub_id",
    "source",
    "sub1",
    "sub2",
    "sub3",
    "sub4",
    "sub5",
    "sub6",
    "sub7",
    "sub8",
    "sub9",
    "sub10",
    "country",
    "device",
    "os",
    "browser",
    "cost",
    "ts",
    "visitor",
    "external_id",
];

/// An outbound postback's stored type as a word: empty (stored before types) is
/// `conversion`.
pub fn postback_type_word(stored: &str) -> &str {
    if stored.is_empty() {
        "conversion"
    } else {
        stored
    }
}

/// The macros an outbound postback of `postback_type` may use; `None` for an unknown type.
pub fn outbound_macros(postback_type: &str) -> Option<&'static [&'static str]> {
    match postback_type_word(postback_type) {
        "conversion" | "event" => Some(OUTBOUND_MACROS),
        "click" => Some(CLICK_POSTBACK_MACROS),
        "impression" => Some(IMPRESSION_POSTBACK_MACROS),
        _ => None,
    }
}

/// Most request headers one outbound postback may send.
pub const MAX_OUTBOUND_HEADERS: usize = 16;
/// What a secret header's value reads as; sent back unchanged, it keeps the stored value.
pub const SECRET_MASK: &str = "********";
/// Headers the dispatcher sets itself.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "x-traffsure-delivery",
];

/// The id of a flow's traffic source postback is this and the source's id (`source-3`),
/// kept apart from the ids of the flow's own outbound postbacks.
pub const SOURCE_POSTBACK_PREFIX: &str = "source-";

/// Most destinations in one set, rules in one flow, values in one condition, and
/// `any_of` groups (and conditions in one group) in one rule.
pub const MAX_DESTINATIONS: usize = 100;
pub const MAX_RULES: usize = 100;
pub const MAX_VALUES: usize = 1000;
pub const MAX_GROUPS: usize = 50;

/// A field of a submitted flow that is not acceptable, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FlowError {
    pub field: String,
    pub message: String,
}

pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> FlowError {
    FlowError {
        field: field.into(),
        message: message.into(),
    }
}

pub(crate) fn is_key(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Checks an absolute http(s) URL template with known macros only.
pub fn validate_url_template(field: &str, url: &str, allowed: &[&str]) -> Result<(), FlowError> {
    let url = url.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| invalid(field, "must be an absolute http:// or https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.starts_with('{') {
        return Err(invalid(field, "must name a fixed host"));
    }
    if url.len() > 4096 {
        return Err(invalid(field, "is longer than 4096 characters"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            field,
            "must not contain spaces or control characters",
        ));
    }
    if let Some(unknown) = macro_names(url)
        .into_iter()
        .find(|m| !allowed.contains(&m.as_str()))
    {
        return Err(invalid(field, format!("unknown macro {{{unknown}}}")));
    }
    Ok(())
}

impl FlowSpec {
    /// Validates the spec and writes it over `flow`, keeping its id, creation time and
    /// bumping its revision.
    pub fn apply(&self, flow: &mut Flow, now_ms: i64) -> Result<(), FlowError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(invalid("name", "must be 1 to 200 characters"));
        }
        let slug = match &self.slug {
            Some(slug) if !is_key(slug, 64) => {
                return Err(invalid("slug", "must be 1 to 64 of a-z, 0-9, - and _"))
            }
            Some(slug) if slug.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(invalid(
                    "slug",
                    "must not be all digits (those are flow ids)",
                ))
            }
            Some(slug) => slug.clone(),
            None => String::new(),
        };
        let status = match self.status.as_deref() {
            None => FlowStatus::Active,
            Some(s) => FlowStatus::from_word(s)
                .ok_or_else(|| invalid("status", format!("must be {}", FlowStatus::word_list())))?,
        };
        let path = self.path.as_ref().map(|p| p.to_path("path")).transpose()?;
        if path.is_none() || !self.destination_url.trim().is_empty() {
            validate_url_template("destination_url", &self.destination_url, DESTINATION_MACROS)?;
        }
        let redirect_mode = match self.redirect_mode.as_deref() {
            None => RedirectMode::Found302,
            Some(m) => RedirectMode::from_word(m).ok_or_else(|| {
                invalid(
                    "redirect_mode",
                    format!("must be {}", RedirectMode::word_list()),
                )
            })?,
        };
        let mut goals = goals_from(&self.goals)?;
        let default_goal = match &self.default_goal {
            Some(key) => key.trim().to_ascii_lowercase(),
            None => goals
                .first()
                .map(|g| g.key.clone())
                .unwrap_or_else(|| "conversion".into()),
        };
        if goals.is_empty() {
            goals.push(Goal {
                key: default_goal.clone(),
                name: default_goal.clone(),
                ..Goal::default()
            });
        }
        if !goals.iter().any(|g| g.key == default_goal) {
            return Err(invalid(
                "default_goal",
                format!("{default_goal:?} is not one of the flow's goals"),
            ));
        }
        let window = self.attribution_window_days.unwrap_or(DEFAULT_WINDOW_DAYS);
        if !(1..=365).contains(&window) {
            return Err(invalid("attribution_window_days", "must be from 1 to 365"));
        }
        let destinations = destinations_from("destinations", &self.destinations)?;
        if self.rules.len() > MAX_RULES {
            return Err(invalid("rules", format!("at most {MAX_RULES} rules")));
        }
        let rules = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| r.to_rule(i))
            .collect::<Result<Vec<_>, _>>()?;
        let optional_url = |field: &str, url: &Option<String>| -> Result<String, FlowError> {
            match url.as_deref().map(str::trim) {
                None | Some("") => Ok(String::new()),
                Some(url) => {
                    validate_url_template(field, url, DESTINATION_MACROS)?;
                    Ok(url.to_string())
                }
            }
        };
        let time_zone = self
            .time_zone
            .as_deref()
            .map(str::trim)
            .unwrap_or_default()
            .to_string();
        if crate::routing::zone(&time_zone).is_none() {
            return Err(invalid(
                "time_zone",
                format!("{time_zone:?} is not an IANA time zone (Europe/Berlin)"),
            ));
        }
        let caps = crate::caps::caps_from("caps", &self.caps)?;
        let cap_fallback_url = optional_url("cap_fallback_url", &self.cap_fallback_url)?;
        let over_cap_postbacks = crate::caps::over_cap_postbacks_from(
            "over_cap_postbacks",
            self.over_cap_postbacks.as_deref(),
            false,
        )?;
        let inactive_url = optional_url("inactive_url", &self.inactive_url)?;
        let bot_url = optional_url("bot_url", &self.bot_url)?;
        let postback_security = self.postback_security.to_security()?;
        let status_map = status_map_from(&self.status_map)?;
        let mut outbound_postbacks = Vec::with_capacity(self.outbound_postbacks.len());
        for (i, o) in self.outbound_postbacks.iter().enumerate() {
            let stored = flow
                .outbound_postbacks
                .iter()
                .find(|p| !o.id.trim().is_empty() && p.id == o.id.trim());
            let out = o.to_outbound(i, &goals, stored)?;
            if outbound_postbacks
                .iter()
                .any(|p: &OutboundPostback| p.id == out.id)
            {
                return Err(invalid(
                    format!("outbound_postbacks[{i}].id"),
                    format!("id {:?} appears twice", out.id),
                ));
            }
            outbound_postbacks.push(out);
        }
        flow.slug = slug;
        flow.name = name.to_string();
        flow.set_status(status);
        flow.destination_url = self.destination_url.trim().to_string();
        flow.set_redirect_mode(redirect_mode);
        flow.default_goal = default_goal;
        flow.goals = goals;
        flow.attribution_window_days = window;
        flow.destinations = destinations;
        flow.rules = rules;
        flow.inactive_url = inactive_url;
        flow.bot_url = bot_url;
        flow.postback_security = postback_security.map(Box::new);
        flow.status_map = status_map;
        flow.outbound_postbacks = outbound_postbacks;
        flow.time_zone = time_zone;
        flow.path = path;
        flow.caps = caps;
        flow.cap_fallback_url = cap_fallback_url;
        flow.over_cap_postbacks = over_cap_postbacks;
        flow.traffic_source_id = self.traffic_source_id.unwrap_or_default();
        flow.own_cost_model = self
            .cost_model
            .as_ref()
            .map(|m| m.to_model("cost_model").map(Box::new))
            .transpose()?;
        // The source's model is filled in with the source (objects::fill_flow).
        flow.cost_model = flow.own_cost_model.clone();
        if flow.created_at_ms == 0 {
            flow.created_at_ms = now_ms;
        }
        flow.updated_at_ms = now_ms;
        flow.revision += 1;
        Ok(())
    }
}

/// Checks a raw status → approved, pending or rejected map (field `status_map`), keys
/// and values lowercased.
pub(crate) fn status_map_from(
    map: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, FlowError> {
    let mut status_map = BTreeMap::new();
    for (raw, mapped) in map {
        let raw_key = raw.trim().to_ascii_lowercase();
        let mapped = mapped.trim().to_ascii_lowercase();
        if raw_key.is_empty() || raw_key.len() > 64 {
            return Err(invalid("status_map", "statuses must be 1 to 64 characters"));
        }
        if ConversionStatus::from_word(&mapped).is_none() {
            return Err(invalid(
                format!("status_map.{raw}"),
                format!("must map to {}", ConversionStatus::word_list()),
            ));
        }
        status_map.insert(raw_key, mapped);
    }
    Ok(status_map)
}

/// A payout given as decimal text or a number (`"12.50"`, `20`), in micros; `None` when
/// absent or null.
pub(crate) fn payout_from(
    field: &str,
    payout: &Option<serde_json::Value>,
) -> Result<Option<i64>, FlowError> {
    let micros = match payout {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::String(s)) => {
            parse_micros(s).map_err(|e| invalid(field, e.to_string()))?
        }
        Some(serde_json::Value::Number(n)) => {
            parse_micros(&n.to_string()).map_err(|e| invalid(field, e.to_string()))?
        }
        Some(_) => return Err(invalid(field, "must be a decimal number")),
    };
    if micros < 0 {
        return Err(invalid(field, "must not be negative"));
    }
    Ok(Some(micros))
}

/// A three-letter currency code, uppercased; `USD` when absent.
pub(crate) fn currency_from(field: &str, currency: Option<&str>) -> Result<String, FlowError> {
    let currency = currency.unwrap_or("USD").trim().to_ascii_uppercase();
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(invalid(field, "must be a three-letter ISO 4217 code"));
    }
    Ok(currency)
}

fn destinations_from(
    field: &str,
    specs: &[DestinationSpec],
) -> Result<Vec<Destination>, FlowError> {
    if specs.len() > MAX_DESTINATIONS {
        return Err(invalid(
            field,
            format!("at most {MAX_DESTINATIONS} destinations"),
        ));
    }
    specs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let url = d.url.trim();
            validate_url_template(&format!("{field}[{i}].url"), url, DESTINATION_MACROS)?;
            if d.weight == 0 || d.weight > 1_000_000 {
                return Err(invalid(
                    format!("{field}[{i}].weight"),
                    "must be from 1 to 1000000",
                ));
            }
            Ok(Destination {
                url: url.to_string(),
                weight: d.weight,
            })
        })
        .collect()
}

impl RuleSpec {
    fn to_rule(&self, index: usize) -> Result<Rule, FlowError> {
        let field = |name: &str| format!("rules[{index}].{name}");
        if self.name.chars().count() > 200 {
            return Err(invalid(field("name"), "must be at most 200 characters"));
        }
        if self.conditions.is_empty() && self.any_of.is_empty() {
            return Err(invalid(
                field("conditions"),
                "must have at least one condition (in conditions or any_of)",
            ));
        }
        let path = self
            .path
            .as_ref()
            .map(|p| p.to_path(&field("path")))
            .transpose()?;
        if self.destinations.is_empty() && path.is_none() {
            return Err(invalid(
                field("destinations"),
                "must have at least one destination (or a path)",
            ));
        }
        if self.any_of.len() > MAX_GROUPS {
            return Err(invalid(
                field("any_of"),
                format!("at most {MAX_GROUPS} groups"),
            ));
        }
        let conditions = conditions_from(&field("conditions"), &self.conditions)?;
        let mut any_of = Vec::with_capacity(self.any_of.len());
        for (g, group) in self.any_of.iter().enumerate() {
            let at = field(&format!("any_of[{g}]"));
            if group.is_empty() || group.len() > MAX_GROUPS {
                return Err(invalid(
                    at,
                    format!("must have 1 to {MAX_GROUPS} conditions"),
                ));
            }
            any_of.push(ConditionGroup {
                conditions: conditions_from(&at, group)?,
            });
        }
        Ok(Rule {
            name: self.name.trim().to_string(),
            conditions,
            destinations: destinations_from(&field("destinations"), &self.destinations)?,
            any_of,
            path,
        })
    }
}

impl PathSpec {
    /// The path by object ids and weights; `at` names it (`path`, `rules[0].path`). The
    /// objects' URLs and network details are filled in from the stored objects later.
    fn to_path(&self, at: &str) -> Result<Path, FlowError> {
        if self.offers.is_empty() {
            return Err(invalid(
                format!("{at}.offers"),
                "must have at least one offer",
            ));
        }
        let entries = |list: &str, items: Vec<(u32, u32)>| -> Result<(), FlowError> {
            if items.len() > MAX_DESTINATIONS {
                return Err(invalid(
                    format!("{at}.{list}"),
                    format!("at most {MAX_DESTINATIONS} entries"),
                ));
            }
            let id_name = &list[..list.len() - 1];
            for (i, (id, weight)) in items.iter().enumerate() {
                if *id == 0 {
                    return Err(invalid(
                        format!("{at}.{list}[{i}].{id_name}_id"),
                        "must be the id of a stored object",
                    ));
                }
                if items[..i].iter().any(|(other, _)| other == id) {
                    return Err(invalid(
                        format!("{at}.{list}[{i}].{id_name}_id"),
                        format!("{id_name} {id} appears twice"),
                    ));
                }
                if *weight == 0 || *weight > 1_000_000 {
                    return Err(invalid(
                        format!("{at}.{list}[{i}].weight"),
                        "must be from 1 to 1000000",
                    ));
                }
            }
            Ok(())
        };
        entries(
            "landers",
            self.landers
                .iter()
                .map(|l| (l.lander_id, l.weight))
                .collect(),
        )?;
        entries(
            "offers",
            self.offers.iter().map(|o| (o.offer_id, o.weight)).collect(),
        )?;
        Ok(Path {
            landers: self
                .landers
                .iter()
                .map(|l| PathLander {
                    lander_id: l.lander_id,
                    weight: l.weight,
                    ..PathLander::default()
                })
                .collect(),
            offers: self
                .offers
                .iter()
                .map(|o| PathOffer {
                    offer_id: o.offer_id,
                    weight: o.weight,
                    ..PathOffer::default()
                })
                .collect(),
        })
    }
}

/// Validates a list of conditions; `at` names the list (`rules[0].conditions`).
fn conditions_from(at: &str, specs: &[ConditionSpec]) -> Result<Vec<Condition>, FlowError> {
    let mut conditions = Vec::with_capacity(specs.len());
    for (c, cond) in specs.iter().enumerate() {
        let cfield = |name: &str| format!("{at}[{c}].{name}");
        let name = cond.field.trim().to_ascii_lowercase();
        if !RULE_FIELDS.contains(&name.as_str()) {
            return Err(invalid(
                cfield("field"),
                format!("must be one of {}", RULE_FIELDS.join(", ")),
            ));
        }
        let negate = match cond.op.as_str() {
            "in" => false,
            "not_in" => true,
            _ => return Err(invalid(cfield("op"), "must be in or not_in")),
        };
        if cond.values.is_empty() || cond.values.len() > MAX_VALUES {
            return Err(invalid(
                cfield("values"),
                format!("must have 1 to {MAX_VALUES} values"),
            ));
        }
        let values = cond
            .values
            .iter()
            .map(|value| normalize(&name, value).map_err(|e| invalid(cfield("values"), e)))
            .collect::<Result<Vec<_>, _>>()?;
        conditions.push(Condition {
            field: name,
            negate,
            values,
        });
    }
    Ok(conditions)
}

impl PostbackSecuritySpec {
    fn to_security(&self) -> Result<Option<PostbackSecurity>, FlowError> {
        if self == &Self::default() {
            return Ok(None);
        }
        let field = |name: &str| format!("postback_security.{name}");
        for (name, value) in [("token", &self.token), ("hmac_secret", &self.hmac_secret)] {
            if value.len() > 256 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    field(name),
                    "must be at most 256 characters without spaces",
                ));
            }
        }
        if !self.hmac_secret.is_empty() && self.hmac_secret.len() < 16 {
            return Err(invalid(
                field("hmac_secret"),
                "must be at least 16 characters",
            ));
        }
        if self.max_age_seconds > 86_400 {
            return Err(invalid(field("max_age_seconds"), "must be at most 86400"));
        }
        let mut allowed_ips = Vec::with_capacity(self.allowed_ips.len());
        for ip in &self.allowed_ips {
            let cidr: Cidr = ip.parse().map_err(|e: crate::cidr::CidrError| {
                invalid(field("allowed_ips"), e.to_string())
            })?;
            allowed_ips.push(cidr.to_string());
        }
        Ok(Some(PostbackSecurity {
            token: self.token.clone(),
            hmac_secret: self.hmac_secret.clone(),
            max_age_seconds: self.max_age_seconds,
            allowed_ips,
        }))
    }
}

impl OutboundSpec {
    /// `stored`: the flow's outbound postback of the same id, whose secret header values a
    /// mask sent back keeps.
    pub(crate) fn to_outbound(
        &self,
        index: usize,
        goals: &[Goal],
        stored: Option<&OutboundPostback>,
    ) -> Result<OutboundPostback, FlowError> {
        let field = |name: &str| format!("outbound_postbacks[{index}].{name}");
        let id = match self.id.trim() {
            "" => format!("out{}", index + 1),
            id if id.starts_with(SOURCE_POSTBACK_PREFIX) => {
                return Err(invalid(
                    field("id"),
                    format!("ids starting with {SOURCE_POSTBACK_PREFIX} are the traffic source's"),
                ))
            }
            id if is_key(id, 64) => id.to_string(),
            _ => return Err(invalid(field("id"), "must be 1 to 64 of a-z, 0-9, - and _")),
        };
        let postback_type = self.postback_type.trim().to_ascii_lowercase();
        let postback_type = postback_type_word(&postback_type).to_string();
        let Some(macros) = outbound_macros(&postback_type) else {
            return Err(invalid(
                field("type"),
                format!("must be {}", POSTBACK_TYPES.join(", ")),
            ));
        };
        validate_url_template(&field("url"), &self.url, macros)?;
        let method = self.method.trim().to_ascii_uppercase();
        if method != "GET" && method != "POST" {
            return Err(invalid(field("method"), "must be GET or POST"));
        }
        let body_format = self.body_format.trim().to_ascii_lowercase();
        if body_format != "form" && body_format != "json" {
            return Err(invalid(field("body_format"), "must be form or json"));
        }
        if method == "GET" && !self.body_template.is_empty() {
            return Err(invalid(field("body_template"), "only a POST has a body"));
        }
        if self.body_template.len() > 16_384 {
            return Err(invalid(
                field("body_template"),
                "is longer than 16384 bytes",
            ));
        }
        if let Some(unknown) = macro_names(&self.body_template)
            .into_iter()
            .find(|m| !macros.contains(&m.as_str()))
        {
            return Err(invalid(
                field("body_template"),
                format!("unknown macro {{{unknown}}}"),
            ));
        }
        let for_conversions = matches!(postback_type.as_str(), "conversion" | "event");
        if !for_conversions && !self.goals.is_empty() {
            return Err(invalid(
                field("goals"),
                format!("a {postback_type} postback has no goals"),
            ));
        }
        if !for_conversions && !self.reasons.is_empty() {
            return Err(invalid(
                field("reasons"),
                format!("a {postback_type} postback has no rejection reasons"),
            ));
        }
        let mut goal_keys = Vec::with_capacity(self.goals.len());
        for goal in &self.goals {
            let key = goal.trim().to_ascii_lowercase();
            if !goals.iter().any(|g| g.key == key) {
                return Err(invalid(
                    field("goals"),
                    format!("{key:?} is not one of the flow's goals"),
                ));
            }
            goal_keys.push(key);
        }
        let on_status = self.on_status.trim().to_ascii_lowercase();
        if on_status != "any" && ConversionStatus::from_word(&on_status).is_none() {
            return Err(invalid(
                field("on_status"),
                format!("must be {} or any", ConversionStatus::words().join(", ")),
            ));
        }
        if self.reasons.len() > MAX_OUTBOUND_REASONS {
            return Err(invalid(
                field("reasons"),
                format!("must have at most {MAX_OUTBOUND_REASONS} reasons"),
            ));
        }
        let mut reasons = Vec::with_capacity(self.reasons.len());
        for reason in &self.reasons {
            let reason = reason.trim().to_lowercase();
            if reason.is_empty() || reason.len() > crate::postback_params::MAX_REASON_BYTES {
                return Err(invalid(
                    field("reasons"),
                    format!(
                        "each reason must be 1 to {} bytes",
                        crate::postback_params::MAX_REASON_BYTES
                    ),
                ));
            }
            if !reasons.contains(&reason) {
                reasons.push(reason);
            }
        }
        if self.headers.len() > MAX_OUTBOUND_HEADERS {
            return Err(invalid(
                field("headers"),
                format!("must have at most {MAX_OUTBOUND_HEADERS} headers"),
            ));
        }
        let mut headers: Vec<OutboundHeader> = Vec::with_capacity(self.headers.len());
        for (j, header) in self.headers.iter().enumerate() {
            let header = header.to_header(&format!("{}[{j}]", field("headers")), stored)?;
            if headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case(&header.name))
            {
                return Err(invalid(
                    format!("{}[{j}].name", field("headers")),
                    format!("header {:?} appears twice", header.name),
                ));
            }
            headers.push(header);
        }
        if self.delay_seconds > 7 * 86_400 {
            return Err(invalid(
                field("delay_seconds"),
                "must be at most 604800 (7 days)",
            ));
        }
        Ok(OutboundPostback {
            id,
            url: self.url.trim().to_string(),
            method,
            body_template: self.body_template.clone(),
            body_format,
            goals: goal_keys,
            on_status,
            reasons,
            headers,
            delay_seconds: self.delay_seconds,
            enabled: self.enabled,
            r#type: postback_type,
            // A flow's own; reporting-api sets the scope of the others when it copies them.
            ..OutboundPostback::default()
        })
    }
}

impl HeaderSpec {
    fn to_header(
        &self,
        field: &str,
        stored: Option<&OutboundPostback>,
    ) -> Result<OutboundHeader, FlowError> {
        let name = self.name.trim();
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if name.is_empty() || name.len() > 64 || !name.chars().all(token) {
            return Err(invalid(
                format!("{field}.name"),
                "must be 1 to 64 of the characters an HTTP header name may have",
            ));
        }
        if RESERVED_HEADERS
            .iter()
            .any(|r| r.eq_ignore_ascii_case(name))
        {
            return Err(invalid(
                format!("{field}.name"),
                format!("{name} is set by the dispatcher"),
            ));
        }
        let mut value = self.value.trim().to_string();
        if self.secret && value == SECRET_MASK {
            value = stored
                .and_then(|o| {
                    o.headers
                        .iter()
                        .find(|h| h.secret && h.name.eq_ignore_ascii_case(name))
                })
                .map(|h| h.value.clone())
                .ok_or_else(|| {
                    invalid(
                        format!("{field}.value"),
                        "no stored secret to keep: send the value itself",
                    )
                })?;
        }
        if value.len() > 4096 || value.contains(['\r', '\n', '\0']) {
            return Err(invalid(
                format!("{field}.value"),
                "must be at most 4096 bytes without line breaks",
            ));
        }
        Ok(OutboundHeader {
            name: name.to_string(),
            value,
            secret: self.secret,
        })
    }
}

/// The goals of a flow or an offer (the `goals` field): each valid, no key twice.
pub(crate) fn goals_from(specs: &[GoalSpec]) -> Result<Vec<Goal>, FlowError> {
    let mut goals = Vec::with_capacity(specs.len().max(1));
    for (i, goal) in specs.iter().enumerate() {
        goals.push(goal.to_goal(i)?);
    }
    if let Some(dup) = goals.iter().enumerate().find_map(|(i, g)| {
        goals[..i]
            .iter()
            .any(|o| o.key == g.key)
            .then_some(g.key.clone())
    }) {
        return Err(invalid("goals", format!("goal key {dup:?} appears twice")));
    }
    Ok(goals)
}

impl GoalSpec {
    fn to_goal(&self, index: usize) -> Result<Goal, FlowError> {
        let field = |name: &str| format!("goals[{index}].{name}");
        let key = self.key.trim().to_ascii_lowercase();
        if !is_key(&key, 64) {
            return Err(invalid(
                field("key"),
                "must be 1 to 64 of a-z, 0-9, - and _",
            ));
        }
        let payout_micros = payout_from(&field("payout"), &self.payout)?.unwrap_or_default();
        let affiliate_payout = payout_from(&field("affiliate_payout"), &self.affiliate_payout)?;
        let currency = currency_from(&field("currency"), self.currency.as_deref())?;
        let policy = match self.duplicate_policy.as_deref() {
            None => DuplicatePolicy::PerUid,
            Some(p) => DuplicatePolicy::from_word(p).ok_or_else(|| {
                invalid(
                    field("duplicate_policy"),
                    format!("must be {}", DuplicatePolicy::word_list()),
                )
            })?,
        };
        let mut goal = Goal {
            name: self
                .name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| key.clone()),
            key,
            payout_micros,
            currency,
            affiliate_payout_micros: affiliate_payout.unwrap_or_default(),
            has_affiliate_payout: affiliate_payout.is_some(),
            ..Goal::default()
        };
        goal.set_duplicate_policy(policy);
        Ok(goal)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> FlowSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn names_bad_nested_fields() {
        let base = |extra: serde_json::Value| {
            let mut json = serde_json::json!({"name": "x", "destination_url": "https://a.test/"});
            for (k, v) in extra.as_object().unwrap() {
                json[k] = v.clone();
            }
            json
        };
        let cases = [
            (
                serde_json::json!({"destinations": [{"url": "https://a.test/", "weight": 0}]}),
                "destinations[0].weight",
            ),
            (
                serde_json::json!({"rules": [{"conditions": [{"field": "colour", "values": ["x"]}], "destinations": [{"url": "https://a.test/"}]}]}),
                "rules[0].conditions[0].field",
            ),
            (
                serde_json::json!({"rules": [{"conditions": [{"field": "ip", "values": ["10.0.0.0/40"]}], "destinations": [{"url": "https://a.test/"}]}]}),
                "rules[0].conditions[0].values",
            ),
            (
                serde_json::json!({"rules": [{"conditions": [{"field": "country", "values": ["DEU"]}], "destinations": [{"url": "https://a.test/"}]}]}),
                "rules[0].conditions[0].values",
            ),
            (
                serde_json::json!({"rules": [{"conditions": [{"field": "os", "values": ["ios"]}], "destinations": []}]}),
                "rules[0].destinations",
            ),
            (
                serde_json::json!({"rules": [{"conditions": [{"field": "os", "op": "is", "values": ["ios"]}], "destinations": [{"url": "https://a.test/"}]}]}),
                "rules[0].conditions[0].op",
            ),
            (
                serde_json::json!({"rules": [{"conditions": [], "destinations": [{"url": "https://a.test/"}]}]}),
                "rules[0].conditions",
            ),
            (
                serde_json::json!({"rules": [{"any_of": [[{"field": "os", "values": ["ios"]}], [{"field": "hour", "values": ["25"]}]], "destinations": [{"url": "https://a.test/"}]}]}),
                "rules[0].any_of[1][0].values",
            ),
            (
                serde_json::json!({"rules": [{"any_of": [[]], "destinations": [{"url": "https://a.test/"}]}]}),
                "rules[0].any_of[0]",
            ),
            (
                serde_json::json!({"rules": [{"conditions": [{"field": "browser_version", "values": [">=x"]}], "destinations": [{"url": "https://a.test/"}]}]}),
                "rules[0].conditions[0].values",
            ),
            (
                serde_json::json!({"rules": [{"conditions": [{"field": "asn", "values": ["ASX"]}], "destinations": [{"url": "https://a.test/"}]}]}),
                "rules[0].conditions[0].values",
            ),
            (
                serde_json::json!({"time_zone": "Mars/Olympus"}),
                "time_zone",
            ),
            (serde_json::json!({"bot_url": "ftp://x.test/"}), "bot_url"),
            (
                serde_json::json!({"postback_security": {"hmac_secret": "short"}}),
                "postback_security.hmac_secret",
            ),
            (
                serde_json::json!({"postback_security": {"allowed_ips": ["nope"]}}),
                "postback_security.allowed_ips",
            ),
            (
                serde_json::json!({"status_map": {"sale": "paid"}}),
                "status_map.sale",
            ),
            (
                serde_json::json!({"outbound_postbacks": [{"url": "https://s.test/?x={bogus}"}]}),
                "outbound_postbacks[0].url",
            ),
            (
                serde_json::json!({"outbound_postbacks": [{"url": "https://s.test/", "method": "PUT"}]}),
                "outbound_postbacks[0].method",
            ),
            (
                serde_json::json!({"outbound_postbacks": [{"url": "https://s.test/", "goals": ["sale"]}]}),
                "outbound_postbacks[0].goals",
            ),
            (
                serde_json::json!({"outbound_postbacks": [{"url": "https://s.test/", "on_status": "paid"}]}),
                "outbound_postbacks[0].on_status",
            ),
            (
                serde_json::json!({"outbound_postbacks": [{"url": "https://s.test/", "reasons": ["fraud", " "]}]}),
                "outbound_postbacks[0].reasons",
            ),
            (
                serde_json::json!({"outbound_postbacks": [{"url": "https://s.test/", "reasons": ["x".repeat(256)]}]}),
                "outbound_postbacks[0].reasons",
            ),
            (
                serde_json::json!({"outbound_postbacks": [{"url": "https://s.test/", "headers": [{"name": "X Key", "value": "v"}]}]}),
                "outbound_postbacks[0].headers[0].name",
            ),
            (
                serde_json::json!({"outbound_postbacks": [{"url": "https://s.test/", "headers": [{"name": "Host", "value": "evil.test"}]}]}),
                "outbound_postbacks[0].headers[0].name",
            ),
            (
                serde_json::json!({"outbound_postbacks": [{"url": "https://s.test/", "headers": [{"name": "A", "value": "1"}, {"name": "a", "value": "2"}]}]}),
                "outbound_postbacks[0].headers[1].name",
            ),
            (
                serde_json::json!({"outbound_postbacks": [{"url": "https://s.test/", "headers": [{"name": "X-Key", "value": "v\r\nX-Evil: 1"}]}]}),
                "outbound_postbacks[0].headers[0].value",
            ),
            (
                serde_json::json!({"outbound_postbacks": [{"url": "https://s.test/", "headers": [{"name": "Authorization", "value": SECRET_MASK, "secret": true}]}]}),
                "outbound_postbacks[0].headers[0].value",
            ),
            (
                serde_json::json!({"outbound_postbacks": [{"id": "a", "url": "https://s.test/"}, {"id": "a", "url": "https://t.test/"}]}),
                "outbound_postbacks[1].id",
            ),
        ];
        for (extra, field) in cases {
            let json = base(extra);
            let err = spec(json.clone())
                .apply(&mut Flow::default(), 1)
                .unwrap_err();
            assert_eq!(err.field, field, "{json}");
        }
    }

    #[test]
    fn postback_types_have_their_own_macros() {
        let base = |extra: serde_json::Value| {
            let mut json = serde_json::json!({"name": "x", "destination_url": "https://a.test/"});
            for (k, v) in extra.as_object().unwrap() {
                json[k] = v.clone();
            }
            json
        };
        let outbound = |o: serde_json::Value| {
            let json = base(serde_json::json!({"outbound_postbacks": [o]}));
            spec(json).apply(&mut Flow::default(), 1)
        };
        let refused = |o: serde_json::Value| outbound(o).unwrap_err();
        let err =
            refused(serde_json::json!({"type": "click", "url": "https://s.test/?r={revenue}"}));
        assert_eq!(err.field, "outbound_postbacks[0].url");
        assert!(err.message.contains("{revenue}"), "{}", err.message);
        let err =
            refused(serde_json::json!({"type": "impression", "url": "https://s.test/?c={click}"}));
        assert_eq!(err.field, "outbound_postbacks[0].url");
        let err = refused(
            serde_json::json!({"type": "click", "method": "POST", "url": "https://s.test/", "body_template": "g={goal}"}),
        );
        assert_eq!(err.field, "outbound_postbacks[0].body_template");
        let err = refused(serde_json::json!({"type": "pageview", "url": "https://s.test/"}));
        assert_eq!(err.field, "outbound_postbacks[0].type");
        let err = refused(
            serde_json::json!({"type": "impression", "url": "https://s.test/", "reasons": ["fraud"]}),
        );
        assert_eq!(err.field, "outbound_postbacks[0].reasons");
        // Each type's own macros pass; the type is stored lowercase, conversion by default.
        for (kind, url) in [
            (
                "Click",
                "https://s.test/?c={click}&i={impression}&v={visitor}&d={device}&cost={cost}",
            ),
            (
                "impression",
                "https://s.test/?i={impression}&s={sub3}&ts={ts}",
            ),
            ("event", "https://s.test/?c={click}&r={revenue}&g={goal}"),
        ] {
            outbound(serde_json::json!({"type": kind, "url": url})).unwrap();
        }
        let mut flow = Flow::default();
        spec(base(serde_json::json!({"outbound_postbacks": [
            {"url": "https://s.test/?r={revenue}"},
            {"type": "Click", "url": "https://s.test/?c={click}"}
        ]})))
        .apply(&mut flow, 1)
        .unwrap();
        let types: Vec<&str> = flow
            .outbound_postbacks
            .iter()
            .map(|o| o.r#type.as_str())
            .collect();
        assert_eq!(types, ["conversion", "click"]);
        assert_eq!(postback_type_word(""), "conversion");
    }

    #[test]
    fn destinations_take_every_macro_click_ingest_fills_in() {
        // `{external_id}` (the traffic source's click id) is filled into destinations by
        // click-ingest and documented in api.md; every destination URL field takes it.
        let every: String = DESTINATION_MACROS
            .iter()
            .map(|name| format!("{name}={{{name}}}"))
            .collect::<Vec<_>>()
            .join("&");
        let url = format!("https://a.test/?{every}");
        let mut flow = Flow::default();
        spec(serde_json::json!({
            "name": "x",
            "destination_url": url,
            "destinations": [{"url": "https://b.test/?e={external_id}"}],
            "rules": [{"conditions": [{"field": "country", "values": ["DE"]}],
                       "destinations": [{"url": "https://c.test/?e={external_id}"}]}],
            "cap_fallback_url": "https://d.test/?e={external_id}",
            "inactive_url": "https://e.test/?e={external_id}",
        }))
        .apply(&mut flow, 1)
        .unwrap();
        assert!(flow.destination_url.contains("{external_id}"));
        // What click-ingest does not fill in stays refused.
        for name in ["impression", "goal", "revenue", "payout", "sub11"] {
            let err = spec(serde_json::json!({
                "name": "x",
                "destination_url": format!("https://a.test/?v={{{name}}}"),
            }))
            .apply(&mut Flow::default(), 1)
            .unwrap_err();
            assert_eq!(err.field, "destination_url", "{name}");
            assert!(err.message.contains(&format!("{{{name}}}")), "{name}");
        }
    }

    #[test]
    fn conversion_and_event_postbacks_take_the_impression() {
        // The dispatcher fills `{impression}` for conversions (the impression the click
        // named), and postbacks.md documents it.
        for kind in ["conversion", "event"] {
            let mut flow = Flow::default();
            spec(serde_json::json!({
                "name": "x",
                "destination_url": "https://a.test/",
                "outbound_postbacks": [{
                    "type": kind,
                    "url": "https://s.test/pb?c={click}&i={impression}",
                    "method": "POST",
                    "body_template": "i={impression}",
                }],
            }))
            .apply(&mut flow, 1)
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert!(flow.outbound_postbacks[0].url.contains("{impression}"));
        }
    }

    #[test]
    fn the_crm_preset_is_valid_and_maps_every_macro() {
        let preset = crm_push_preset();
        let out = preset.to_outbound(0, &[], None).unwrap();
        let names = macro_names(&out.body_template);
        assert_eq!(names.len(), OUTBOUND_MACROS.len());
        assert!(out.headers[0].secret);
        let body = out.body_template.replace(['{', '}'], "");
        assert!(body.contains("\"reason\": \"reason\""), "{body}");
    }

    #[test]
    fn defaults_a_goal() {
        let mut flow = Flow::default();
        spec(serde_json::json!({"name": "x", "destination_url": "http://a.test/"}))
            .apply(&mut flow, 1)
            .unwrap();
        assert_eq!(flow.default_goal, "conversion");
        assert_eq!(flow.goals.len(), 1);
        assert_eq!(flow.status(), FlowStatus::Active);
        assert_eq!(flow.attribution_window_days, DEFAULT_WINDOW_DAYS);
    }

    #[test]
    fn names_the_bad_field() {
        let cases = [
            (
                serde_json::json!({"name": "", "destination_url": "http://a.test/"}),
                "name",
            ),
            (
                serde_json::json!({"name": "x", "destination_url": "javascript:alert(1)"}),
                "destination_url",
            ),
            (
                serde_json::json!({"name": "x", "destination_url": "https://{sub1}/"}),
                "destination_url",
            ),
            (
                serde_json::json!({"name": "x", "destination_url": "https://a.test/{clik}"}),
                "destination_url",
            ),
            (
                serde_json::json!({"name": "x", "destination_url": "https://a.test/", "status": "on"}),
                "status",
            ),
            (
                serde_json::json!({"name": "x", "destination_url": "https://a.test/", "slug": "A B"}),
                "slug",
            ),
            (
                serde_json::json!({"name": "x", "destination_url": "https://a.test/", "goals": [{"key": "a", "payout": "x"}]}),
                "goals[0].payout",
            ),
            (
                serde_json::json!({"name": "x", "destination_url": "https://a.test/", "goals": [{"key": "a"}, {"key": "A"}]}),
                "goals",
            ),
            (
                serde_json::json!({"name": "x", "destination_url": "https://a.test/", "goals": [{"key": "lead"}], "default_goal": "sale"}),
                "default_goal",
            ),
        ];
        for (json, field) in cases {
            let err = spec(json.clone())
                .apply(&mut Flow::default(), 1)
                .unwrap_err();
            assert_eq!(err.field, field, "{json}");
        }
    }
}

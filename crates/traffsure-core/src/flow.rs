//! Flows as the API sees them: validation of what a user submits, and the JSON view of
//! a stored flow. The stored form is the Protobuf `Flow` on the `flows` topic.

use serde::{Deserialize, Serialize};
use traffsure_events::{DuplicatePolicy, Flow, FlowStatus, Goal, RedirectMode};

use crate::macros::macro_names;
use crate::money::{format_micros, parse_micros};

/// Attribution window used when a flow sets none.
pub const DEFAULT_WINDOW_DAYS: u32 = 30;

/// Macros a destination URL may use.
pub const DESTINATION_MACROS: &[&str] = &[
    "click", "flow", "sub_id", "source", "sub1", "sub2", "sub3", "sub4", "sub5", "sub6", "sub7",
    "sub8", "sub9", "sub10", "country", "device", "os", "browser", "cost", "ts", "visitor",
];

/// A flow as submitted to `POST /api/v1/flows` or `PUT /api/v1/flows/{id}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    pub name: String,
    #[serde(default)]
    pub slug: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    pub destination_url: String,
    #[serde(default)]
    pub redirect_mode: Option<String>,
    #[serde(default)]
    pub default_goal: Option<String>,
    #[serde(default)]
    pub goals: Vec<GoalSpec>,
    #[serde(default)]
    pub attribution_window_days: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoalSpec {
    pub key: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Decimal text or number, e.g. `"12.50"`.
    #[serde(default)]
    pub payout: Option<serde_json::Value>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub duplicate_policy: Option<String>,
}

/// A field of a submitted flow that is not acceptable, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FlowError {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> FlowError {
    FlowError {
        field: field.into(),
        message: message.into(),
    }
}

pub fn status_from_name(name: &str) -> Option<FlowStatus> {
    match name {
        "active" => Some(FlowStatus::Active),
        "paused" => Some(FlowStatus::Paused),
        "archived" => Some(FlowStatus::Archived),
        _ => None,
    }
}

pub fn status_to_name(status: FlowStatus) -> &'static str {
    match status {
        FlowStatus::Paused => "paused",
        FlowStatus::Archived => "archived",
        FlowStatus::Active | FlowStatus::Unspecified => "active",
    }
}

pub fn redirect_mode_from_name(name: &str) -> Option<RedirectMode> {
    match name {
        "302" => Some(RedirectMode::Found302),
        "307" => Some(RedirectMode::Temporary307),
        "meta_refresh" => Some(RedirectMode::MetaRefresh),
        "double_meta_refresh" => Some(RedirectMode::DoubleMetaRefresh),
        _ => None,
    }
}

pub fn redirect_mode_to_name(mode: RedirectMode) -> &'static str {
    match mode {
        RedirectMode::Temporary307 => "307",
        RedirectMode::MetaRefresh => "meta_refresh",
        RedirectMode::DoubleMetaRefresh => "double_meta_refresh",
        RedirectMode::Found302 | RedirectMode::Unspecified => "302",
    }
}

pub fn policy_from_name(name: &str) -> Option<DuplicatePolicy> {
    match name {
        "once" => Some(DuplicatePolicy::Once),
        "per_uid" => Some(DuplicatePolicy::PerUid),
        "every" => Some(DuplicatePolicy::Every),
        _ => None,
    }
}

pub fn policy_to_name(policy: DuplicatePolicy) -> &'static str {
    match policy {
        DuplicatePolicy::Once => "once",
        DuplicatePolicy::Every => "every",
        DuplicatePolicy::PerUid | DuplicatePolicy::Unspecified => "per_uid",
    }
}

fn is_key(text: &str, max: usize) -> bool {
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
            Some(s) => status_from_name(s)
                .ok_or_else(|| invalid("status", "must be active, paused or archived"))?,
        };
        validate_url_template("destination_url", &self.destination_url, DESTINATION_MACROS)?;
        let redirect_mode = match self.redirect_mode.as_deref() {
            None => RedirectMode::Found302,
            Some(m) => redirect_mode_from_name(m).ok_or_else(|| {
                invalid(
                    "redirect_mode",
                    "must be 302, 307, meta_refresh or double_meta_refresh",
                )
            })?,
        };
        let mut goals = Vec::with_capacity(self.goals.len().max(1));
        for (i, goal) in self.goals.iter().enumerate() {
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
        flow.slug = slug;
        flow.name = name.to_string();
        flow.set_status(status);
        flow.destination_url = self.destination_url.trim().to_string();
        flow.set_redirect_mode(redirect_mode);
        flow.default_goal = default_goal;
        flow.goals = goals;
        flow.attribution_window_days = window;
        if flow.created_at_ms == 0 {
            flow.created_at_ms = now_ms;
        }
        flow.updated_at_ms = now_ms;
        flow.revision += 1;
        Ok(())
    }
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
        let payout_micros = match &self.payout {
            None | Some(serde_json::Value::Null) => 0,
            Some(serde_json::Value::String(s)) => {
                parse_micros(s).map_err(|e| invalid(field("payout"), e.to_string()))?
            }
            Some(serde_json::Value::Number(n)) => {
                parse_micros(&n.to_string()).map_err(|e| invalid(field("payout"), e.to_string()))?
            }
            Some(_) => return Err(invalid(field("payout"), "must be a decimal number")),
        };
        if payout_micros < 0 {
            return Err(invalid(field("payout"), "must not be negative"));
        }
        let currency = self
            .currency
            .as_deref()
            .unwrap_or("USD")
            .trim()
            .to_ascii_uppercase();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid(
                field("currency"),
                "must be a three-letter ISO 4217 code",
            ));
        }
        let policy = match self.duplicate_policy.as_deref() {
            None => DuplicatePolicy::PerUid,
            Some(p) => policy_from_name(p).ok_or_else(|| {
                invalid(field("duplicate_policy"), "must be once, per_uid or every")
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
            ..Goal::default()
        };
        goal.set_duplicate_policy(policy);
        Ok(goal)
    }
}

/// The JSON form of a stored flow, as the API returns it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct FlowView {
    pub id: u32,
    pub slug: String,
    pub name: String,
    pub status: String,
    pub destination_url: String,
    pub redirect_mode: String,
    pub default_goal: String,
    pub goals: Vec<GoalView>,
    pub attribution_window_days: u32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub revision: u64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct GoalView {
    pub key: String,
    pub name: String,
    pub payout: String,
    pub currency: String,
    pub duplicate_policy: String,
}

impl From<&Flow> for FlowView {
    fn from(flow: &Flow) -> Self {
        Self {
            id: flow.id,
            slug: flow.slug.clone(),
            name: flow.name.clone(),
            status: status_to_name(flow.status()).into(),
            destination_url: flow.destination_url.clone(),
            redirect_mode: redirect_mode_to_name(flow.redirect_mode()).into(),
            default_goal: flow.default_goal.clone(),
            goals: flow
                .goals
                .iter()
                .map(|g| GoalView {
                    key: g.key.clone(),
                    name: g.name.clone(),
                    payout: format_micros(g.payout_micros),
                    currency: g.currency.clone(),
                    duplicate_policy: policy_to_name(g.duplicate_policy()).into(),
                })
                .collect(),
            attribution_window_days: flow.attribution_window_days,
            created_at_ms: flow.created_at_ms,
            updated_at_ms: flow.updated_at_ms,
            revision: flow.revision,
        }
    }
}

/// Finds a goal by key, case-insensitively.
pub fn find_goal<'f>(flow: &'f Flow, key: &str) -> Option<&'f Goal> {
    flow.goals.iter().find(|g| g.key.eq_ignore_ascii_case(key))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> FlowSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn applies_a_full_spec() {
        let mut flow = Flow {
            id: 7,
            ..Flow::default()
        };
        spec(serde_json::json!({
            "name": " Summer ", "slug": "summer", "destination_url": "https://offer.test/?c={click}",
            "redirect_mode": "307",
            "goals": [{"key": "Lead", "payout": "1.5"}, {"key": "sale", "payout": 20, "duplicate_policy": "every"}],
            "default_goal": "sale"
        }))
        .apply(&mut flow, 1000)
        .unwrap();
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

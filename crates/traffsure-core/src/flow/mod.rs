//! Flows as the API sees them: the spec a user submits (`spec`), its validation into the
//! Protobuf `Flow` stored on the `flows` topic (`validate`), and the view of a stored flow
//! the API returns (`view`). Callers use the re-exports here, never the submodules.

mod spec;
mod validate;
mod view;

pub use spec::{
    ConditionSpec, DestinationSpec, FlowSpec, GoalSpec, OutboundSpec, PostbackSecuritySpec,
    RuleSpec,
};
pub use validate::{
    validate_url_template, FlowError, DEFAULT_WINDOW_DAYS, DESTINATION_MACROS, MAX_DESTINATIONS,
    MAX_RULES, MAX_VALUES, OUTBOUND_MACROS, RULE_FIELDS,
};
pub use view::{FlowView, GoalView};

use traffsure_events::{DuplicatePolicy, Flow, FlowStatus, Goal, RedirectMode};

/// Conversion statuses a status map may produce, and an outbound postback may fire on.
pub const MAPPED_STATUSES: &[&str] = &["approved", "pending", "rejected"];

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

/// Finds a goal by key, case-insensitively.
pub fn find_goal<'f>(flow: &'f Flow, key: &str) -> Option<&'f Goal> {
    flow.goals.iter().find(|g| g.key.eq_ignore_ascii_case(key))
}

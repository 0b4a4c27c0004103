//! Flows as the API sees them: the spec a user submits (`spec`), its validation into the
//! Protobuf `Flow` stored on the `flows` topic (`validate`), and the view of a stored flow
//! the API returns (`view`). Callers use the re-exports here, never the submodules.

pub(crate) mod conditions;
mod spec;
mod validate;
mod view;

pub use conditions::RULE_FIELDS;
pub use spec::{
    ConditionSpec, DestinationSpec, FlowSpec, GoalSpec, HeaderSpec, OutboundSpec,
    PostbackSecuritySpec, RuleSpec,
};
pub use validate::{
    crm_push_preset, validate_url_template, FlowError, DEFAULT_WINDOW_DAYS, DESTINATION_MACROS,
    MAX_DESTINATIONS, MAX_GROUPS, MAX_RULES, MAX_VALUES, OUTBOUND_MACROS, SECRET_MASK,
};
pub use view::{FlowView, GoalView};

use traffsure_events::{Flow, Goal};

/// Finds a goal by key, case-insensitively.
pub fn find_goal<'f>(flow: &'f Flow, key: &str) -> Option<&'f Goal> {
    flow.goals.iter().find(|g| g.key.eq_ignore_ascii_case(key))
}

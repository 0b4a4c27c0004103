//! Flows as the API sees them: the spec a user submits (`spec`), its validation into the
//! Protobuf `Flow` stored on the `flows` topic (`validate`), and the view of a stored flow
//! the API returns (`view`). Callers use the re-exports here, never the submodules.

pub(crate) mod conditions;
mod spec;
pub(crate) mod validate;
mod view;

pub use conditions::RULE_FIELDS;
pub use spec::{
    ConditionSpec, DestinationSpec, FlowSpec, GoalSpec, HeaderSpec, OutboundSpec, PathLanderSpec,
    PathOfferSpec, PathSpec, PostbackSecuritySpec, RuleSpec,
};
pub use validate::{
    crm_push_preset, validate_url_template, FlowError, DEFAULT_WINDOW_DAYS, DESTINATION_MACROS,
    MAX_DESTINATIONS, MAX_GROUPS, MAX_RULES, MAX_VALUES, OUTBOUND_MACROS, SECRET_MASK,
    SOURCE_POSTBACK_PREFIX,
};
pub use validate::{
    outbound_macros, postback_type_word, CLICK_POSTBACK_MACROS, IMPRESSION_POSTBACK_MACROS,
    POSTBACK_TYPES,
};
pub use view::{FlowView, GoalView};

use traffsure_events::{Flow, Goal, OutboundPostback};

/// Finds a goal by key, case-insensitively.
pub fn find_goal<'f>(flow: &'f Flow, key: &str) -> Option<&'f Goal> {
    flow.goals.iter().find(|g| g.key.eq_ignore_ascii_case(key))
}

/// Every outbound postback of a flow: its own, then its traffic source's, then those
/// of its offers, its source and the global ones (`scoped_postbacks`).
pub fn outbound_postbacks(flow: &Flow) -> impl Iterator<Item = &OutboundPostback> {
    flow.outbound_postbacks
        .iter()
        .chain(flow.traffic_source_postback.as_deref())
        .chain(flow.scoped_postbacks.iter())
}

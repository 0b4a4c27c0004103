//! The objects a buyer works with besides flows: traffic sources, affiliate networks,
//! offers and landers. Each kind has a spec the API takes (`spec`), stored as JSON in a
//! `TrackerObject` on the compacted `objects` topic (key `<kind>:<id>`), and a view the API
//! returns. A flow names them by id; `fill` copies what the edges need (URLs, the offer's
//! network parameter, payout and status map, the source's postback) from the stored
//! objects into the flow, so the edges need nothing but the flow.

mod fill;
pub mod scoped;
mod spec;

pub use fill::{check_references, fill_flow, flow_references, Reference};
pub use scoped::{GlobalSettingsSpec, Scope, GLOBAL_SETTINGS_ID};
pub use spec::{AffiliateNetworkSpec, LanderSpec, OfferSpec, TrafficSourceSpec, MAX_LANDER_OFFERS};

use serde::de::DeserializeOwned;
use serde::Serialize;
use traffsure_events::{ObjectKind, TrackerObject};

pub use crate::flow::FlowError as ObjectError;

/// Every kind, in display order.
pub const KINDS: &[ObjectKind] = &[
    ObjectKind::TrafficSource,
    ObjectKind::AffiliateNetwork,
    ObjectKind::Offer,
    ObjectKind::Lander,
];

/// The kind's word in topic keys and JSON (`traffic_source`).
pub fn kind_key(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::TrafficSource => "traffic_source",
        ObjectKind::AffiliateNetwork => "affiliate_network",
        ObjectKind::Offer => "offer",
        ObjectKind::Lander => "lander",
        ObjectKind::GlobalSettings => "global_settings",
        ObjectKind::Unspecified => "object",
    }
}

/// The kind's name in messages (`traffic source`).
pub fn kind_name(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::TrafficSource => "traffic source",
        ObjectKind::AffiliateNetwork => "affiliate network",
        ObjectKind::Offer => "offer",
        ObjectKind::Lander => "lander",
        ObjectKind::GlobalSettings => "global settings",
        ObjectKind::Unspecified => "object",
    }
}

/// The key of an object on the `objects` topic: `offer:12`.
pub fn object_key(kind: ObjectKind, id: u32) -> String {
    format!("{}:{id}", kind_key(kind))
}

/// The spec of one kind of object, as the API takes it.
pub trait ObjectSpec: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    const KIND: ObjectKind;

    fn name(&self) -> &str;

    /// Checks the spec and returns it normalised (trimmed, lowercased where case does not
    /// matter), or the first field that is not acceptable.
    fn checked(&self) -> Result<Self, ObjectError>;

    /// The stored objects the spec names, which must exist.
    fn references(&self) -> Vec<Reference> {
        Vec::new()
    }
}

/// A new stored object of `spec` (checked already), at revision 1.
pub fn new_object<S: ObjectSpec>(spec: &S, id: u32, now_ms: i64) -> TrackerObject {
    let mut object = TrackerObject {
        id,
        created_at_ms: now_ms,
        ..TrackerObject::default()
    };
    object.set_kind(S::KIND);
    write_spec(&mut object, spec, now_ms);
    object
}

/// Writes `spec` (checked already) over a stored object, bumping its revision.
pub fn write_spec<S: ObjectSpec>(object: &mut TrackerObject, spec: &S, now_ms: i64) {
    object.name = spec.name().to_string();
    // A spec is plain strings, numbers and maps: serialising it cannot fail.
    object.spec_json = serde_json::to_string(spec).unwrap_or_default();
    touch(object, now_ms);
}

/// Marks a change of a stored object: its update time and a revision more.
pub fn touch(object: &mut TrackerObject, now_ms: i64) {
    object.updated_at_ms = now_ms;
    object.revision += 1;
}

/// The spec a stored object holds.
pub fn spec_of<S: ObjectSpec>(object: &TrackerObject) -> Result<S, ObjectError> {
    serde_json::from_str(&object.spec_json).map_err(|e| ObjectError {
        field: "spec_json".into(),
        message: format!(
            "stored {} {} cannot be read: {e}",
            kind_name(S::KIND),
            object.id
        ),
    })
}

/// The JSON view of a stored object: its id, the spec's fields, and when it changed.
#[derive(Debug, Serialize)]
pub struct ObjectView<S: ObjectSpec> {
    pub id: u32,
    #[serde(flatten)]
    pub spec: S,
    pub archived: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub revision: u64,
}

impl<S: ObjectSpec> ObjectView<S> {
    pub fn of(object: &TrackerObject) -> Result<Self, ObjectError> {
        Ok(Self {
            id: object.id,
            spec: spec_of(object)?,
            archived: object.archived,
            created_at_ms: object.created_at_ms,
            updated_at_ms: object.updated_at_ms,
            revision: object.revision,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_views_a_spec() {
        let spec: LanderSpec = serde_json::from_value(
            serde_json::json!({"name": " Quiz ", "url": "https://lp.test/?c={click}", "offers": 2}),
        )
        .unwrap();
        let spec = spec.checked().unwrap();
        let mut object = new_object(&spec, 3, 100);
        assert_eq!(object.kind(), ObjectKind::Lander);
        assert_eq!((object.revision, object.name.as_str()), (1, "Quiz"));
        write_spec(&mut object, &spec, 200);
        let view = serde_json::to_value(ObjectView::<LanderSpec>::of(&object).unwrap()).unwrap();
        assert_eq!(view["id"], 3);
        assert_eq!(view["offers"], 2);
        assert_eq!(view["revision"], 2);
        assert_eq!(view["created_at_ms"], 100);
        assert_eq!(view["updated_at_ms"], 200);
        assert_eq!(object_key(ObjectKind::Lander, 3), "lander:3");
    }
}

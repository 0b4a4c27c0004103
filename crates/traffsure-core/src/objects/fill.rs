//! Flows and offers name stored objects by id: which ids they name, whether those exist,
//! and copying the stored objects' details into a flow's paths and source postback.

use std::sync::Arc;

use traffsure_events::{Flow, ObjectKind, OutboundPostback, Path, TrackerObject};

use super::scoped::scoped;
use super::{
    kind_name, spec_of, AffiliateNetworkSpec, GlobalSettingsSpec, LanderSpec, ObjectError,
    OfferSpec, Scope, TrafficSourceSpec, GLOBAL_SETTINGS_ID,
};
use crate::flow::validate::invalid;

/// A stored object named by a field of a flow or an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The field naming it, as in errors: `path.offers[0].offer_id`.
    pub field: String,
    pub kind: ObjectKind,
    pub id: u32,
}

impl Reference {
    pub fn new(field: impl Into<String>, kind: ObjectKind, id: u32) -> Self {
        Self {
            field: field.into(),
            kind,
            id,
        }
    }
}

/// The objects a flow names: its traffic source and the landers and offers of its paths.
pub fn flow_references(flow: &Flow) -> Vec<Reference> {
    let mut refs = Vec::new();
    if flow.traffic_source_id != 0 {
        refs.push(Reference::new(
            "traffic_source_id",
            ObjectKind::TrafficSource,
            flow.traffic_source_id,
        ));
    }
    let mut path_refs = |at: &str, path: Option<&Path>| {
        let Some(path) = path else { return };
        for (i, lander) in path.landers.iter().enumerate() {
            refs.push(Reference::new(
                format!("{at}.landers[{i}].lander_id"),
                ObjectKind::Lander,
                lander.lander_id,
            ));
        }
        for (i, offer) in path.offers.iter().enumerate() {
            refs.push(Reference::new(
                format!("{at}.offers[{i}].offer_id"),
                ObjectKind::Offer,
                offer.offer_id,
            ));
        }
    };
    path_refs("path", flow.path.as_ref());
    for (r, rule) in flow.rules.iter().enumerate() {
        path_refs(&format!("rules[{r}].path"), rule.path.as_ref());
    }
    refs
}

/// Checks that every reference names a stored object of its kind, and that an archived one
/// was named before (in `kept`): archived objects keep working where they are used, but
/// nothing new may pick them.
pub fn check_references(
    refs: &[Reference],
    kept: &[Reference],
    lookup: &dyn Fn(ObjectKind, u32) -> Option<Arc<TrackerObject>>,
) -> Result<(), ObjectError> {
    for reference in refs {
        let name = kind_name(reference.kind);
        match lookup(reference.kind, reference.id) {
            None => {
                return Err(invalid(
                    &reference.field,
                    format!("{name} {} does not exist", reference.id),
                ))
            }
            Some(object)
                if object.archived
                    && !kept
                        .iter()
                        .any(|k| k.kind == reference.kind && k.id == reference.id) =>
            {
                return Err(invalid(
                    &reference.field,
                    format!("{name} {} ({}) is archived", reference.id, object.name),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Fetches and reads one referenced object.
fn stored<S: super::ObjectSpec>(
    field: &str,
    id: u32,
    lookup: &dyn Fn(ObjectKind, u32) -> Option<Arc<TrackerObject>>,
) -> Result<S, ObjectError> {
    let object = lookup(S::KIND, id)
        .ok_or_else(|| invalid(field, format!("{} {id} does not exist", kind_name(S::KIND))))?;
    spec_of(&object)
}

/// Copies what the edges need from the stored objects into the flow: each path lander's
/// URL; each path offer's URL, payout, currency, network, click parameter and status
/// map; the traffic source's postback (none when the flow has no source or the source
/// no postback URL); and the cost model in effect (the flow's own, else the source's).
pub fn fill_flow(
    flow: &mut Flow,
    lookup: &dyn Fn(ObjectKind, u32) -> Option<Arc<TrackerObject>>,
) -> Result<(), ObjectError> {
    let source = match flow.traffic_source_id {
        0 => None,
        id => Some(stored::<TrafficSourceSpec>(
            "traffic_source_id",
            id,
            lookup,
        )?),
    };
    flow.traffic_source_postback = match &source {
        None => None,
        Some(spec) => spec.postback(flow.traffic_source_id)?.map(Box::new),
    };
    // The cost model in effect: the flow's own, else its source's (docs/costs.md).
    flow.cost_model = match (&flow.own_cost_model, &source) {
        (Some(own), _) => Some(own.clone()),
        (None, Some(spec)) => spec.cost_model()?.map(Box::new),
        (None, None) => None,
    };
    if let Some(path) = flow.path.as_mut() {
        fill_path("path", path, lookup)?;
    }
    for (r, rule) in flow.rules.iter_mut().enumerate() {
        if let Some(path) = rule.path.as_mut() {
            fill_path(&format!("rules[{r}].path"), path, lookup)?;
        }
    }
    flow.scoped_postbacks = scoped_postbacks(flow, lookup)?;
    Ok(())
}

/// The outbound postbacks of the flow's offers (each once, in path order), of its traffic
/// source and the global ones, as the flow carries them, most specific first.
fn scoped_postbacks(
    flow: &Flow,
    lookup: &dyn Fn(ObjectKind, u32) -> Option<Arc<TrackerObject>>,
) -> Result<Vec<OutboundPostback>, ObjectError> {
    let mut offers: Vec<u32> = Vec::new();
    let paths = flow
        .path
        .iter()
        .chain(flow.rules.iter().filter_map(|r| r.path.as_ref()));
    for path in paths {
        for offer in &path.offers {
            if !offers.contains(&offer.offer_id) {
                offers.push(offer.offer_id);
            }
        }
    }
    let mut out = Vec::new();
    for id in offers {
        let at = format!("offer {id}");
        let spec = stored::<OfferSpec>(&at, id, lookup)?;
        out.extend(scoped(&at, &spec.outbound_postbacks, Scope::Offer(id))?);
    }
    if flow.traffic_source_id != 0 {
        let id = flow.traffic_source_id;
        let at = format!("traffic source {id}");
        let spec = stored::<TrafficSourceSpec>(&at, id, lookup)?;
        out.extend(scoped(&at, &spec.outbound_postbacks, Scope::Source(id))?);
    }
    if let Some(global) = lookup(ObjectKind::GlobalSettings, GLOBAL_SETTINGS_ID) {
        let spec: GlobalSettingsSpec = spec_of(&global)?;
        out.extend(scoped("global", &spec.outbound_postbacks, Scope::Global)?);
    }
    Ok(out)
}

fn fill_path(
    at: &str,
    path: &mut Path,
    lookup: &dyn Fn(ObjectKind, u32) -> Option<Arc<TrackerObject>>,
) -> Result<(), ObjectError> {
    for (i, lander) in path.landers.iter_mut().enumerate() {
        let field = format!("{at}.landers[{i}].lander_id");
        lander.url = stored::<LanderSpec>(&field, lander.lander_id, lookup)?.url;
    }
    for (i, offer) in path.offers.iter_mut().enumerate() {
        let field = format!("{at}.offers[{i}].offer_id");
        let spec = stored::<OfferSpec>(&field, offer.offer_id, lookup)?;
        let payout = spec.payout_micros()?;
        offer.goals = spec.goals()?;
        offer.url = spec.url.clone();
        offer.has_payout = payout.is_some();
        offer.payout_micros = payout.unwrap_or_default();
        offer.currency = spec.currency;
        offer.network_id = spec.network_id.unwrap_or_default();
        let network = match offer.network_id {
            0 => AffiliateNetworkSpec::default(),
            id => stored(&format!("offer {}.network_id", offer.offer_id), id, lookup)?,
        };
        offer.click_param = network.click_param;
        offer.status_map = network.status_map.into_iter().collect();
        offer.caps = crate::caps::caps_from("caps", &spec.caps)?;
        offer.time_zone = spec.time_zone;
        offer.over_cap_postbacks = spec.over_cap_postbacks;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::flow::FlowSpec;
    use crate::objects::{new_object, ObjectSpec};

    fn object<S: ObjectSpec>(
        id: u32,
        json: serde_json::Value,
    ) -> ((ObjectKind, u32), Arc<TrackerObject>) {
        let spec: S = serde_json::from_value(json).unwrap();
        (
            (S::KIND, id),
            Arc::new(new_object(&spec.checked().unwrap(), id, 1)),
        )
    }

    fn store() -> HashMap<(ObjectKind, u32), Arc<TrackerObject>> {
        let mut archived = object::<LanderSpec>(
            2,
            serde_json::json!({"name": "Old", "url": "https://old.test/"}),
        );
        Arc::make_mut(&mut archived.1).archived = true;
        [
            object::<TrafficSourceSpec>(1, serde_json::json!({
                "name": "Push", "parameters": {"sub1": "{zoneid}", "external_id": "{clickid}"},
                "postback_url": "https://push.test/?aid={{aid}}&c={external_id}&p={payout}",
                "placeholders": {"aid": "42"}, "postback_on_status": "any"})),
            object::<AffiliateNetworkSpec>(1, serde_json::json!({
                "name": "Net", "click_param": "aff_sub", "status_map": {"1": "approved", "2": "rejected"}})),
            object::<OfferSpec>(1, serde_json::json!({
                "name": "A", "url": "https://a.test/", "network_id": 1, "payout": "12.50",
                "goals": [{"key": "upsell", "payout": "4"}]})),
            object::<OfferSpec>(2, serde_json::json!({"name": "B", "url": "https://b.test/?s={click}"})),
            object::<LanderSpec>(1, serde_json::json!({"name": "LP", "url": "https://lp.test/"})),
            archived,
        ]
        .into_iter()
        .collect()
    }

    fn flow(json: serde_json::Value) -> Flow {
        let spec: FlowSpec = serde_json::from_value(json).unwrap();
        let mut flow = Flow::default();
        spec.apply(&mut flow, 1).unwrap();
        flow
    }

    #[test]
    fn fills_paths_and_the_source_postback() {
        let objects = store();
        let lookup = |kind, id| objects.get(&(kind, id)).cloned();
        let mut flow = flow(serde_json::json!({
            "name": "F", "traffic_source_id": 1,
            "path": {"landers": [{"lander_id": 1, "weight": 70}], "offers": [{"offer_id": 1}, {"offer_id": 2, "weight": 3}]},
            "rules": [{"conditions": [{"field": "country", "values": ["DE"]}], "path": {"offers": [{"offer_id": 2}]}}],
        }));
        let refs = flow_references(&flow);
        assert_eq!(refs.len(), 5);
        assert_eq!(refs[4].field, "rules[0].path.offers[0].offer_id");
        check_references(&refs, &[], &lookup).unwrap();
        fill_flow(&mut flow, &lookup).unwrap();
        let path = flow.path.as_ref().unwrap();
        assert_eq!(
            (path.landers[0].url.as_str(), path.landers[0].weight),
            ("https://lp.test/", 70)
        );
        let a = &path.offers[0];
        assert_eq!(
            (a.url.as_str(), a.network_id, a.click_param.as_str()),
            ("https://a.test/", 1, "aff_sub")
        );
        assert_eq!(
            (a.has_payout, a.payout_micros, a.currency.as_str()),
            (true, 12_500_000, "USD")
        );
        assert_eq!(a.status_map["2"], "rejected");
        assert_eq!(
            a.goals
                .iter()
                .map(|g| (g.key.as_str(), g.payout_micros, g.currency.as_str()))
                .collect::<Vec<_>>(),
            [("upsell", 4_000_000, "USD")]
        );
        let b = &path.offers[1];
        assert!(b.goals.is_empty());
        assert_eq!(
            (b.has_payout, b.network_id, b.click_param.as_str(), b.weight),
            (false, 0, "", 3)
        );
        assert_eq!(
            flow.rules[0].path.as_ref().unwrap().offers[0].url,
            "https://b.test/?s={click}"
        );
        let postback = flow.traffic_source_postback.as_ref().unwrap();
        assert_eq!(postback.id, "source-1");
        assert_eq!(
            postback.url,
            "https://push.test/?aid=42&c={external_id}&p={payout}"
        );
        assert_eq!(postback.on_status, "any");
        assert_eq!(crate::flow::outbound_postbacks(&flow).count(), 1);
    }

    #[test]
    fn refuses_unknown_and_newly_archived_objects() {
        let objects = store();
        let lookup = |kind, id| objects.get(&(kind, id)).cloned();
        let flow_with =
            |path: serde_json::Value| flow(serde_json::json!({"name": "F", "path": path}));
        let unknown = flow_with(serde_json::json!({"offers": [{"offer_id": 1}, {"offer_id": 9}]}));
        let err = check_references(&flow_references(&unknown), &[], &lookup).unwrap_err();
        assert_eq!(err.field, "path.offers[1].offer_id");
        assert_eq!(err.message, "offer 9 does not exist");
        let archived = flow_with(
            serde_json::json!({"landers": [{"lander_id": 2}], "offers": [{"offer_id": 1}]}),
        );
        let refs = flow_references(&archived);
        let err = check_references(&refs, &[], &lookup).unwrap_err();
        assert_eq!(err.field, "path.landers[0].lander_id");
        assert!(err.message.contains("archived"), "{}", err.message);
        // A flow that used it already keeps it.
        check_references(&refs, &refs, &lookup).unwrap();
        let source = flow(
            serde_json::json!({"name": "F", "destination_url": "https://x.test/", "traffic_source_id": 5}),
        );
        let err = check_references(&flow_references(&source), &[], &lookup).unwrap_err();
        assert_eq!(err.field, "traffic_source_id");
    }

    #[test]
    fn a_path_needs_an_offer_and_replaces_destinations() {
        let spec = |json: serde_json::Value| {
            let spec: FlowSpec = serde_json::from_value(json).unwrap();
            spec.apply(&mut Flow::default(), 1)
                .map(|_| ())
                .map_err(|e| e.field)
        };
        assert_eq!(
            spec(serde_json::json!({"name": "F"})),
            Err("destination_url".into())
        );
        assert_eq!(
            spec(
                serde_json::json!({"name": "F", "path": {"landers": [{"lander_id": 1}], "offers": []}})
            ),
            Err("path.offers".into())
        );
        assert_eq!(
            spec(serde_json::json!({"name": "F", "path": {"offers": [{"offer_id": 0}]}})),
            Err("path.offers[0].offer_id".into())
        );
        assert_eq!(
            spec(
                serde_json::json!({"name": "F", "path": {"offers": [{"offer_id": 1}, {"offer_id": 1}]}})
            ),
            Err("path.offers[1].offer_id".into())
        );
        assert_eq!(
            spec(
                serde_json::json!({"name": "F", "path": {"offers": [{"offer_id": 1, "weight": 0}]}})
            ),
            Err("path.offers[0].weight".into())
        );
        assert_eq!(
            spec(
                serde_json::json!({"name": "F", "destination_url": "https://x.test/",
                "rules": [{"conditions": [{"field": "os", "values": ["ios"]}]}]})
            ),
            Err("rules[0].destinations".into())
        );
        assert_eq!(
            spec(
                serde_json::json!({"name": "F", "destination_url": "https://x.test/",
                "outbound_postbacks": [{"id": "source-1", "url": "https://s.test/"}]})
            ),
            Err("outbound_postbacks[0].id".into())
        );
        assert_eq!(
            spec(serde_json::json!({"name": "F", "path": {"offers": [{"offer_id": 1}]}})),
            Ok(())
        );
    }

    #[test]
    fn fills_the_scoped_postbacks_most_specific_first() {
        let mut objects = store();
        objects.extend([
            object::<OfferSpec>(3, serde_json::json!({
                "name": "C", "url": "https://c.test/",
                "outbound_postbacks": [{"url": "https://offer.test/?c={click}"}]})),
            object::<TrafficSourceSpec>(2, serde_json::json!({
                "name": "S", "outbound_postbacks": [{"id": "s", "url": "https://src.test/?c={click}", "on_status": "any"}]})),
            object::<GlobalSettingsSpec>(GLOBAL_SETTINGS_ID, serde_json::json!({
                "outbound_postbacks": [{"id": "all", "url": "https://all.test/?c={click}"}]})),
        ]);
        let lookup = |kind, id| objects.get(&(kind, id)).cloned();
        let mut flow = flow(serde_json::json!({
            "name": "F", "traffic_source_id": 2,
            "path": {"offers": [{"offer_id": 3}, {"offer_id": 1}]},
            "rules": [{"conditions": [{"field": "country", "values": ["DE"]}], "path": {"offers": [{"offer_id": 3}]}}],
        }));
        fill_flow(&mut flow, &lookup).unwrap();
        assert_eq!(
            flow.scoped_postbacks
                .iter()
                .map(|o| (o.id.as_str(), o.scope.as_str(), o.scope_id))
                .collect::<Vec<_>>(),
            [
                ("offer-3.out1", "offer", 3),
                ("source-2.s", "source", 2),
                ("global.all", "global", 0)
            ]
        );
        assert_eq!(crate::flow::outbound_postbacks(&flow).count(), 3);
        // A flow without objects still gets the global ones.
        let mut plain = flow_without_objects();
        fill_flow(&mut plain, &lookup).unwrap();
        assert_eq!(plain.scoped_postbacks.len(), 1);
        assert_eq!(plain.scoped_postbacks[0].url, "https://all.test/?c={click}");
    }

    fn flow_without_objects() -> Flow {
        flow(serde_json::json!({"name": "F", "destination_url": "https://x.test/"}))
    }
}

//! Traffic sources, affiliate networks, offers and landers: listed and read from the
//! in-memory object registry, created and changed by writing them to the compacted
//! `objects` topic (as flows are written to theirs), and made from the templates
//! catalogue. When an object changes, every flow whose stored copy of it differs is
//! filled in again and re-published.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use traffsure_core::objects::{
    self, check_references, fill_flow, flow_references, AffiliateNetworkSpec, ObjectSpec,
    ObjectView, OfferSpec, Reference, TrafficSourceSpec,
};
use traffsure_core::vocab::Vocabulary;
use traffsure_core::{now_ms, templates};
use traffsure_events::{ConversionStatus, Flow, ObjectKind, TrackerObject};

use crate::audit::Entry;
use crate::error::ApiError;
use crate::state::AppState;
use crate::users::{FlowScope, Principal};

/// The JSON view of a stored object, with what the API adds to its kind: a network's
/// postback URL to paste into the network. Serialised straight from the spec, so a
/// source's parameters keep their order.
#[derive(Serialize)]
struct Viewed<S: ObjectSpec> {
    #[serde(flatten)]
    object: ObjectView<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    postback_url: Option<String>,
}

fn view<S: ObjectSpec>(state: &AppState, object: &TrackerObject) -> Result<Viewed<S>, ApiError> {
    let postback_url = if S::KIND == ObjectKind::AffiliateNetwork {
        let network: AffiliateNetworkSpec = objects::spec_of(object)?;
        Some(network_postback_url(state, &network))
    } else {
        None
    };
    Ok(Viewed {
        object: ObjectView::of(object)?,
        postback_url,
    })
}

/// The postback URL a network is given: its template's, on TraffSure's public postback
/// address, or TraffSure's own parameters for a network made without a template.
fn network_postback_url(state: &AppState, network: &AffiliateNetworkSpec) -> String {
    network
        .template
        .as_deref()
        .and_then(|id| templates::catalogue().ok()?.affiliate_network(id))
        .and_then(|t| t.postback_url(&state.postback_base_url).ok())
        .unwrap_or_else(|| super::flows::postback_url(&state.postback_base_url))
}

/// Looks an object up in the registry for `check_references` and `fill_flow`.
fn lookup(state: &AppState) -> impl Fn(ObjectKind, u32) -> Option<Arc<TrackerObject>> + '_ {
    |kind, id| state.objects.get(kind, id)
}

/// The objects a flow-restricted user sees, as (kind, id): those their flows use, and the
/// affiliate networks of those offers. `None`: every object (an unrestricted user).
fn visible(state: &AppState, scope: &FlowScope) -> Option<HashSet<(i32, u32)>> {
    if !scope.is_restricted() {
        return None;
    }
    let mut seen = HashSet::new();
    for flow in state.registry.all().iter().filter(|f| scope.allows(f.id)) {
        for used in flow_references(flow) {
            if used.kind == ObjectKind::Offer {
                let offer = state.objects.get(ObjectKind::Offer, used.id);
                let spec = offer.and_then(|o| objects::spec_of::<OfferSpec>(&o).ok());
                for network in spec.map(|s| s.references()).unwrap_or_default() {
                    seen.insert((network.kind as i32, network.id));
                }
            }
            seen.insert((used.kind as i32, used.id));
        }
    }
    Some(seen)
}

fn find<S: ObjectSpec>(state: &AppState, id: u32) -> Result<TrackerObject, ApiError> {
    state
        .objects
        .get(S::KIND, id)
        .map(|o| TrackerObject::clone(&o))
        .ok_or_else(|| {
            ApiError::NotFound(format!("{} {id} not found", objects::kind_name(S::KIND)))
        })
}

/// Publishes the object and waits for the broker, then serves it from memory at once.
pub(crate) async fn save(state: &AppState, object: TrackerObject) -> Result<(), ApiError> {
    let key = objects::object_key(object.kind(), object.id);
    traffsure_kafka::send_event(
        &state.producer,
        &state.topics.objects,
        key.as_bytes(),
        &object,
    )
    .await
    .inspect_err(|error| traffsure_kafka::metrics::count_delivery_error("reporting-api", error))?;
    state.objects.upsert(object);
    Ok(())
}

/// Fills the flow in from the stored objects, after checking that every object it names
/// exists (and is not archived unless `kept` names it already).
pub(crate) fn fill(state: &AppState, flow: &mut Flow, kept: &[Reference]) -> Result<(), ApiError> {
    let lookup = lookup(state);
    check_references(&flow_references(flow), kept, &lookup)?;
    fill_flow(flow, &lookup)?;
    Ok(())
}

/// Fills in again every flow and re-publishes those whose copy of their objects (or of
/// the global outbound postbacks) changed (a new revision), so the edges follow an
/// object's change.
pub(crate) async fn republish_flows(state: &AppState) -> Result<(), ApiError> {
    let lookup = lookup(state);
    for flow in state.registry.all() {
        let mut filled = Flow::clone(&flow);
        if let Err(error) = fill_flow(&mut filled, &lookup) {
            tracing::warn!(flow = flow.id, %error, "flow not filled in from its objects");
            continue;
        }
        if filled != *flow {
            filled.revision += 1;
            filled.updated_at_ms = now_ms();
            super::flows::save(state, filled).await?;
            tracing::info!(flow = flow.id, "flow re-published after an object changed");
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `1` or `true` lists archived objects too.
    #[serde(default)]
    archived: Option<String>,
}

pub async fn list<S: ObjectSpec>(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
    scope: FlowScope,
) -> Result<HttpResponse, ApiError> {
    let archived = match query.archived.as_deref() {
        None | Some("" | "0" | "false") => false,
        Some("1" | "true") => true,
        Some(_) => {
            return Err(ApiError::invalid(
                "archived",
                "must be 1 or true (archived ones too), 0 or false",
            ))
        }
    };
    let seen = visible(&state, &scope);
    let items = state
        .objects
        .all(S::KIND)
        .iter()
        .filter(|o| archived || !o.archived)
        .filter(|o| {
            seen.as_ref()
                .is_none_or(|s| s.contains(&(S::KIND as i32, o.id)))
        })
        .map(|o| view::<S>(&state, o))
        .collect::<Result<Vec<_>, _>>()?;
    let key = format!("{}s", objects::kind_key(S::KIND));
    Ok(HttpResponse::Ok().json(HashMap::from([(key, items)])))
}

pub async fn get<S: ObjectSpec>(
    state: web::Data<AppState>,
    id: web::Path<u32>,
    scope: FlowScope,
) -> Result<HttpResponse, ApiError> {
    if visible(&state, &scope).is_some_and(|seen| !seen.contains(&(S::KIND as i32, *id))) {
        let kind = objects::kind_name(S::KIND);
        return Err(ApiError::NotFound(format!("{kind} {} not found", *id)));
    }
    Ok(HttpResponse::Ok().json(view::<S>(&state, &find::<S>(&state, *id)?)?))
}

pub async fn create<S: ObjectSpec>(
    state: web::Data<AppState>,
    spec: web::Json<S>,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    let object = create_object(&state, &*spec).await?;
    created::<S>(&state, &object, &who).await
}

/// Logs a new object and answers with it.
async fn created<S: ObjectSpec>(
    state: &AppState,
    object: &TrackerObject,
    who: &Principal,
) -> Result<HttpResponse, ApiError> {
    let view = view::<S>(state, object)?;
    let entry = Entry::new(objects::kind_key(S::KIND), object.id, "create");
    entry.after(&view).record(state, who).await?;
    Ok(HttpResponse::Created().json(view))
}

async fn create_object<S: ObjectSpec>(
    state: &AppState,
    spec: &S,
) -> Result<TrackerObject, ApiError> {
    let spec = spec.checked()?;
    let _writing = state.writes.lock().await;
    check_references(&spec.references(), &[], &lookup(state))?;
    // Ids count up from what the topic holds: wait until all of it is in.
    state.objects.loaded().await;
    let object = objects::new_object(&spec, state.objects.next_id(S::KIND), now_ms());
    save(state, object.clone()).await?;
    tracing::info!(kind = objects::kind_key(S::KIND), id = object.id, name = %object.name, "object created");
    Ok(object)
}

pub async fn update<S: ObjectSpec>(
    state: web::Data<AppState>,
    id: web::Path<u32>,
    spec: web::Json<S>,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    let spec = spec.checked()?;
    let _writing = state.writes.lock().await;
    let mut object = find::<S>(&state, *id)?;
    let before = view::<S>(&state, &object)?;
    let kept = objects::spec_of::<S>(&object)?.references();
    check_references(&spec.references(), &kept, &lookup(&state))?;
    objects::write_spec(&mut object, &spec, now_ms());
    save(&state, object.clone()).await?;
    republish_flows(&state).await?;
    let after = view::<S>(&state, &object)?;
    let entry = Entry::new(objects::kind_key(S::KIND), object.id, "update");
    entry
        .before(&before)
        .after(&after)
        .record(&state, &who)
        .await?;
    Ok(HttpResponse::Ok().json(after))
}

async fn set_archived<S: ObjectSpec>(
    state: &AppState,
    id: u32,
    archived: bool,
    who: &Principal,
) -> Result<HttpResponse, ApiError> {
    let _writing = state.writes.lock().await;
    let mut object = find::<S>(state, id)?;
    if object.archived != archived {
        let before = view::<S>(state, &object)?;
        object.archived = archived;
        objects::touch(&mut object, now_ms());
        save(state, object.clone()).await?;
        let action = if archived { "archive" } else { "unarchive" };
        let entry = Entry::new(objects::kind_key(S::KIND), id, action).before(&before);
        entry
            .after(&view::<S>(state, &object)?)
            .record(state, who)
            .await?;
    }
    Ok(HttpResponse::Ok().json(view::<S>(state, &object)?))
}

/// Archives an object: hidden from lists and no longer selectable, while the flows that
/// use it keep it.
pub async fn archive<S: ObjectSpec>(
    state: web::Data<AppState>,
    id: web::Path<u32>,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    set_archived::<S>(&state, *id, true, &who).await
}

pub async fn unarchive<S: ObjectSpec>(
    state: web::Data<AppState>,
    id: web::Path<u32>,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    set_archived::<S>(&state, *id, false, &who).await
}

fn catalogue() -> Result<&'static templates::Catalogue, ApiError> {
    templates::catalogue().map_err(|e| ApiError::Internal(format!("templates catalogue: {e}")))
}

#[utoipa::path(get, path = "/api/v1/templates/traffic-sources", tag = "objects",
    summary = "The catalogue's traffic source templates",
    responses((status = 200, description = "The templates", body = crate::openapi::bodies::SourceTemplates)))]
pub async fn source_templates() -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(HashMap::from([(
        "templates",
        catalogue()?.traffic_sources(),
    )])))
}

#[utoipa::path(get, path = "/api/v1/templates/affiliate-networks", tag = "objects",
    summary = "The catalogue's affiliate network templates",
    responses((status = 200, description = "The templates", body = crate::openapi::bodies::NetworkTemplates)))]
pub async fn network_templates() -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(HashMap::from([(
        "templates",
        catalogue()?.affiliate_networks(),
    )])))
}

/// `POST …/from-template`: which template, and what the buyer adds to it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FromTemplate {
    template: String,
    /// The object's name; the template's when absent.
    #[serde(default)]
    name: Option<String>,
    /// Values of the template's `{{name}}` placeholders (traffic sources only).
    #[serde(default)]
    placeholders: BTreeMap<String, String>,
}

impl FromTemplate {
    fn name_or(&self, template_name: &str) -> String {
        self.name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| template_name.to_string())
    }
}

fn unknown_template(id: &str) -> ApiError {
    ApiError::invalid(
        "template",
        format!("{id:?} is not a template of the catalogue"),
    )
}

#[utoipa::path(post, path = "/api/v1/traffic-sources/from-template", tag = "objects",
    summary = "Create a traffic source from a template of the catalogue",
    request_body = FromTemplate,
    responses(
        (status = 201, description = "Created"),
        (status = 422, description = "Unknown template or a field not acceptable, named in field", body = traffsure_core::ErrorBody),
    ))]
pub async fn source_from_template(
    state: web::Data<AppState>,
    body: web::Json<FromTemplate>,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    let template = catalogue()?
        .traffic_source(&body.template)
        .ok_or_else(|| unknown_template(&body.template))?;
    let spec = TrafficSourceSpec {
        name: body.name_or(&template.name),
        parameters: template.parameters.clone(),
        postback_url: template.postback_url.clone(),
        postback_goals: Vec::new(),
        postback_on_status: ConversionStatus::Approved.word().into(),
        placeholders: body.placeholders.clone(),
        template: Some(template.id.clone()),
        notes: template.notes.clone(),
        outbound_postbacks: Vec::new(),
        cost_model: None,
    };
    let object = create_object(&state, &spec).await?;
    created::<TrafficSourceSpec>(&state, &object, &who).await
}

#[utoipa::path(post, path = "/api/v1/affiliate-networks/from-template", tag = "objects",
    summary = "Create an affiliate network from a template of the catalogue",
    request_body = FromTemplate,
    responses(
        (status = 201, description = "Created"),
        (status = 422, description = "Unknown template or a field not acceptable, named in field", body = traffsure_core::ErrorBody),
    ))]
pub async fn network_from_template(
    state: web::Data<AppState>,
    body: web::Json<FromTemplate>,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    let template = catalogue()?
        .affiliate_network(&body.template)
        .ok_or_else(|| unknown_template(&body.template))?;
    if let Some(name) = body.placeholders.keys().next() {
        return Err(ApiError::invalid(
            format!("placeholders.{name}"),
            "affiliate network templates have no placeholders",
        ));
    }
    let spec = AffiliateNetworkSpec {
        name: body.name_or(&template.name),
        click_param: template.click_id_param.clone(),
        status_map: template.status_map.clone(),
        template: Some(template.id.clone()),
        notes: template.notes.clone(),
    };
    let object = create_object(&state, &spec).await?;
    created::<AffiliateNetworkSpec>(&state, &object, &who).await
}

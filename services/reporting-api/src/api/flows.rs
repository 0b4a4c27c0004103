//! Flows: listed and read from the in-memory registry, created and changed by writing
//! them to the compacted `flows` topic and waiting for the broker's answer, after which
//! the registry serves the new version at once (the API reads its own writes). A flow's
//! traffic source, landers and offers are filled in from the stored objects on every save.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::Serialize;
use traffsure_core::flow::{FlowSpec, FlowView};
use traffsure_core::now_ms;
use traffsure_core::objects::{self, flow_references, TrafficSourceSpec};
use traffsure_events::{Flow, ObjectKind};

use crate::audit::Entry;
use crate::error::ApiError;
use crate::state::AppState;
use crate::users::{FlowScope, Principal};

/// A flow with the links a user copies from the flow editor.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FlowWithLinks {
    #[serde(flatten)]
    flow: FlowView,
    tracking_link: String,
    postback_url: String,
    /// The outbound postbacks of the flow's offers, its traffic source and the global ones
    /// it fires too (read-only here; edited where they live).
    scoped_postbacks: Vec<ScopedView>,
}

/// An outbound postback a flow fires from elsewhere, with where it is configured.
#[derive(Serialize, utoipa::ToSchema)]
struct ScopedView {
    scope: String,
    scope_id: u32,
    #[serde(flatten)]
    postback: traffsure_core::flow::OutboundSpec,
}

fn with_links(state: &AppState, flow: &Flow) -> FlowWithLinks {
    let handle = if flow.slug.is_empty() {
        flow.id.to_string()
    } else {
        flow.slug.clone()
    };
    FlowWithLinks {
        flow: FlowView::from(flow),
        tracking_link: format!(
            "{}/c/{handle}?{}",
            state.tracking_base_url,
            tracking_query(state, flow)
        ),
        postback_url: postback_url(&state.postback_base_url),
        scoped_postbacks: flow
            .scoped_postbacks
            .iter()
            .map(|o| ScopedView {
                scope: o.scope.clone(),
                scope_id: o.scope_id,
                postback: objects::scoped::outbound_spec(o, true),
            })
            .collect(),
    }
}

/// The tracking link's query: the flow's traffic source's parameters with its own macros,
/// ready to paste into the source; TraffSure's `sub_id` and `source` without one.
fn tracking_query(state: &AppState, flow: &Flow) -> String {
    state
        .objects
        .get(ObjectKind::TrafficSource, flow.traffic_source_id)
        .and_then(|source| objects::spec_of::<TrafficSourceSpec>(&source).ok())
        .map(|source| source.tracking_query())
        .filter(|query| !query.is_empty())
        .unwrap_or_else(|| "sub_id={sub_id}&source={source}".into())
}

/// TraffSure's postback URL with its own parameters, on postback-ingest's public address.
pub(crate) fn postback_url(postback_base_url: &str) -> String {
    format!(
        "{postback_base_url}/postback?click={{click}}&goal={{goal}}&status={{status}}&revenue={{revenue}}&currency={{currency}}&uid={{uid}}"
    )
}

/// The flow with this id or slug, if the user sees it (one they do not is not found).
fn find(state: &AppState, id: &str, scope: &FlowScope) -> Result<Arc<Flow>, ApiError> {
    state
        .registry
        .resolve(id)
        .filter(|flow| scope.allows(flow.id))
        .ok_or_else(|| ApiError::NotFound(format!("flow {id} not found")))
}

/// Publishes the flow and waits for the broker, then serves it from memory at once.
pub(crate) async fn save(state: &AppState, flow: Flow) -> Result<(), ApiError> {
    if !flow.slug.is_empty() {
        if let Some(other) = state
            .registry
            .resolve(&flow.slug)
            .filter(|o| o.id != flow.id)
        {
            return Err(ApiError::Conflict(format!(
                "slug {:?} is used by flow {}",
                flow.slug, other.id
            )));
        }
    }
    let key = flow.id.to_string();
    traffsure_kafka::send_event(&state.producer, &state.topics.flows, key.as_bytes(), &flow)
        .await
        .inspect_err(|error| {
            traffsure_kafka::metrics::count_delivery_error("reporting-api", error)
        })?;
    state.registry.upsert(flow);
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/flows", tag = "flows",
    summary = "Every flow",
    responses((status = 200, description = "The flows", body = crate::openapi::bodies::FlowList)))]
pub async fn list(state: web::Data<AppState>, scope: FlowScope) -> HttpResponse {
    let flows: Vec<_> = state
        .registry
        .all()
        .iter()
        .filter(|f| scope.allows(f.id))
        .map(|f| with_links(&state, f))
        .collect();
    HttpResponse::Ok().json(serde_json::json!({ "flows": flows }))
}

#[utoipa::path(get, path = "/api/v1/flows/{id}", tag = "flows",
    summary = "One flow",
    params(("id" = String, Path, description = "Flow id or slug")),
    responses(
        (status = 200, description = "The flow", body = FlowWithLinks),
        (status = 404, description = "No such flow", body = traffsure_core::ErrorBody),
    ))]
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
    scope: FlowScope,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(with_links(&state, find(&state, &id, &scope)?.as_ref())))
}

#[utoipa::path(post, path = "/api/v1/flows", tag = "flows",
    summary = "Create a flow",
    request_body = FlowSpec,
    responses(
        (status = 201, description = "Created", body = FlowWithLinks),
        (status = 404, description = "A stored object it names does not exist", body = traffsure_core::ErrorBody),
        (status = 409, description = "The slug is another flow's", body = traffsure_core::ErrorBody),
        (status = 422, description = "A field is not acceptable, named in field", body = traffsure_core::ErrorBody),
    ))]
pub async fn create(
    state: web::Data<AppState>,
    spec: web::Json<FlowSpec>,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    let id = loop {
        let candidate = rand::random_range(1..=9_999_999u32);
        if state.registry.get(candidate).is_none() {
            break candidate;
        }
    };
    let mut flow = Flow {
        id,
        ..Flow::default()
    };
    spec.apply(&mut flow, now_ms())?;
    let _writing = state.writes.lock().await;
    super::objects::fill(&state, &mut flow, &[])?;
    save(&state, flow.clone()).await?;
    tracing::info!(flow = id, name = %flow.name, "flow created");
    let view = FlowView::from(&flow);
    Entry::new("flow", id, "create")
        .flow(id)
        .after(&view)
        .record(&state, &who)
        .await?;
    Ok(HttpResponse::Created().json(with_links(&state, &flow)))
}

#[utoipa::path(put, path = "/api/v1/flows/{id}", tag = "flows",
    summary = "Change a flow (the whole spec)",
    params(("id" = String, Path, description = "Flow id or slug")),
    request_body = FlowSpec,
    responses(
        (status = 200, description = "Changed", body = FlowWithLinks),
        (status = 404, description = "No such flow, or a stored object it names does not exist", body = traffsure_core::ErrorBody),
        (status = 409, description = "The slug is another flow's", body = traffsure_core::ErrorBody),
        (status = 422, description = "A field is not acceptable, named in field", body = traffsure_core::ErrorBody),
    ))]
pub async fn update(
    state: web::Data<AppState>,
    id: web::Path<String>,
    spec: web::Json<FlowSpec>,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    let _writing = state.writes.lock().await;
    let mut flow = Flow::clone(find(&state, &id, &who.scope)?.as_ref());
    let before = FlowView::from(&flow);
    let kept = flow_references(&flow);
    spec.apply(&mut flow, now_ms())?;
    super::objects::fill(&state, &mut flow, &kept)?;
    save(&state, flow.clone()).await?;
    let after = FlowView::from(&flow);
    let entry = Entry::new("flow", flow.id, "update").flow(flow.id);
    entry
        .before(&before)
        .after(&after)
        .record(&state, &who)
        .await?;
    Ok(HttpResponse::Ok().json(with_links(&state, &flow)))
}

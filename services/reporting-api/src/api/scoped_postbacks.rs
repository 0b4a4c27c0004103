//! The global outbound postbacks: the ones every flow fires, kept in the global settings
//! object (kind `global_settings`, id 1) on the compacted `objects` topic. Saving them
//! re-publishes every flow with its new copy (`Flow.scoped_postbacks`). Outbound postbacks
//! of a traffic source or an offer live in that object's spec and are saved with it
//! (`objects`); which of several identical ones fires is the dispatcher's business.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use traffsure_core::flow::OutboundSpec;
use traffsure_core::now_ms;
use traffsure_core::objects::scoped::{checked_postbacks, outbound_spec, outbound_specs};
use traffsure_core::objects::{self, GlobalSettingsSpec, GLOBAL_SETTINGS_ID};
use traffsure_events::{ObjectKind, OutboundPostback, TrackerObject};

use crate::error::ApiError;
use crate::state::AppState;

/// The global outbound postbacks as the API shows them: secret header values masked.
#[derive(Serialize)]
struct GlobalView {
    outbound_postbacks: Vec<OutboundSpec>,
    /// 0 while they were never saved.
    revision: u64,
    updated_at_ms: i64,
}

/// The stored global settings and their postbacks (none before the first save).
fn stored(state: &AppState) -> Result<(Option<TrackerObject>, Vec<OutboundPostback>), ApiError> {
    let Some(object) = state
        .objects
        .get(ObjectKind::GlobalSettings, GLOBAL_SETTINGS_ID)
    else {
        return Ok((None, Vec::new()));
    };
    let spec: GlobalSettingsSpec = objects::spec_of(&object)?;
    let postbacks = checked_postbacks(&spec.outbound_postbacks, &[], true)?;
    Ok((Some(TrackerObject::clone(&object)), postbacks))
}

fn view(object: Option<&TrackerObject>, postbacks: &[OutboundPostback]) -> GlobalView {
    GlobalView {
        outbound_postbacks: postbacks.iter().map(|o| outbound_spec(o, true)).collect(),
        revision: object.map(|o| o.revision).unwrap_or_default(),
        updated_at_ms: object.map(|o| o.updated_at_ms).unwrap_or_default(),
    }
}

/// `GET /api/v1/outbound-postbacks/global`.
#[utoipa::path(get, path = "/api/v1/outbound-postbacks/global", tag = "flows",
    summary = "The global outbound postbacks, fired by every flow",
    responses((status = 200, description = "The postbacks", body = crate::openapi::bodies::GlobalPostbacks)))]
pub async fn get_global(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.objects.loaded().await;
    let (object, postbacks) = stored(&state)?;
    Ok(HttpResponse::Ok().json(view(object.as_ref(), &postbacks)))
}

/// `PUT /api/v1/outbound-postbacks/global`: replaces the global outbound postbacks (a
/// secret header sent back as the mask keeps its stored value) and re-publishes every
/// flow whose copy changed.
#[utoipa::path(put, path = "/api/v1/outbound-postbacks/global", tag = "flows",
    summary = "Replace the global outbound postbacks; every flow is published again",
    request_body = crate::openapi::bodies::GlobalPostbacksChange,
    responses(
        (status = 200, description = "Saved", body = crate::openapi::bodies::GlobalPostbacks),
        (status = 422, description = "A field is not acceptable, named in field", body = traffsure_core::ErrorBody),
    ))]
pub async fn put_global(
    state: web::Data<AppState>,
    spec: web::Json<GlobalSettingsSpec>,
) -> Result<HttpResponse, ApiError> {
    state.objects.loaded().await;
    let _writing = state.writes.lock().await;
    let (object, before) = stored(&state)?;
    let postbacks = checked_postbacks(&spec.outbound_postbacks, &before, true)?;
    let spec = GlobalSettingsSpec {
        outbound_postbacks: outbound_specs(&postbacks),
    };
    let now = now_ms();
    let object = match object {
        Some(mut object) => {
            objects::write_spec(&mut object, &spec, now);
            object
        }
        None => objects::new_object(&spec, GLOBAL_SETTINGS_ID, now),
    };
    super::objects::save(&state, object.clone()).await?;
    tracing::info!(
        postbacks = postbacks.len(),
        revision = object.revision,
        "global outbound postbacks saved"
    );
    super::objects::republish_flows(&state).await?;
    Ok(HttpResponse::Ok().json(view(Some(&object), &postbacks)))
}

//! Manual replay over HTTP: `POST /replay` schedules deliveries again at once, and
//! `GET /deliveries` counts them by state.
//!
//! Parsing and the answers (200 / 404 / 422 with a message) live here; what a replay
//! does to a delivery is the dispatcher's business.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use traffsure_events::OutboundState;

use crate::deliveries::ReplaySelection;
use crate::dispatcher::Dispatcher;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/replay", web::post().to(replay))
        .route("/deliveries", web::get().to(deliveries));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    conversion_id: Option<String>,
    outbound_id: Option<String>,
    flow_id: Option<u32>,
    state: Option<String>,
}

/// Why a replay request is refused, with the field it names.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplayError {
    #[error("{1}")]
    Invalid(&'static str, String),
    #[error("{0}")]
    NotFound(String),
}

impl ReplayError {
    fn response(&self) -> HttpResponse {
        match self {
            ReplayError::Invalid(field, message) => {
                HttpResponse::UnprocessableEntity().json(serde_json::json!({
                    "status": 422, "code": "invalid_request", "field": field, "message": message,
                }))
            }
            ReplayError::NotFound(message) => HttpResponse::NotFound().json(serde_json::json!({
                "status": 404, "code": "not_found", "message": message,
            })),
        }
    }
}

fn parse_state(state: &str) -> Option<OutboundState> {
    match state {
        "dead" => Some(OutboundState::Dead),
        "delivered" => Some(OutboundState::Delivered),
        "refused" => Some(OutboundState::Refused),
        "retrying" => Some(OutboundState::Retrying),
        _ => None,
    }
}

/// Reads a replay request body.
pub fn parse(body: &[u8]) -> Result<ReplaySelection, ReplayError> {
    let request: ReplayRequest = serde_json::from_slice(body)
        .map_err(|e| ReplayError::Invalid("body", format!("invalid JSON body: {e}")))?;
    let outbound_id = request
        .outbound_id
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty());
    let conversion_id = request
        .conversion_id
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty());
    match (conversion_id, request.flow_id) {
        (Some(_), Some(_)) => Err(ReplayError::Invalid(
            "flow_id",
            "give conversion_id or flow_id, not both".into(),
        )),
        (None, None) => Err(ReplayError::Invalid(
            "conversion_id",
            "conversion_id or flow_id is required".into(),
        )),
        (Some(conversion_id), None) => {
            if request.state.is_some() {
                return Err(ReplayError::Invalid(
                    "state",
                    "state selects deliveries of a flow_id; a conversion_id replays its latest version whatever the state".into(),
                ));
            }
            Ok(ReplaySelection::Conversion {
                conversion_id,
                outbound_id,
            })
        }
        (None, Some(flow_id)) => {
            let state = request.state.as_deref().unwrap_or("dead").trim();
            let state = parse_state(state).ok_or_else(|| {
                ReplayError::Invalid(
                    "state",
                    format!("{state:?} is not one of dead, refused, delivered, retrying"),
                )
            })?;
            Ok(ReplaySelection::Flow {
                flow_id,
                state,
                outbound_id,
            })
        }
    }
}

async fn replay(dispatcher: web::Data<Dispatcher>, body: web::Bytes) -> HttpResponse {
    let selection = match parse(&body) {
        Ok(selection) => selection,
        Err(error) => return error.response(),
    };
    if !dispatcher.knows(&selection) {
        let message = match &selection {
            ReplaySelection::Conversion {
                conversion_id,
                outbound_id: None,
            } => format!("no outbound postback delivery for conversion {conversion_id}"),
            ReplaySelection::Conversion {
                conversion_id,
                outbound_id: Some(id),
            } => format!("no delivery of outbound postback {id} for conversion {conversion_id}"),
            ReplaySelection::Flow { flow_id, .. } => {
                format!("no outbound postback delivery for flow {flow_id}")
            }
        };
        return ReplayError::NotFound(message).response();
    }
    let replayed = dispatcher.replay(&selection).await;
    tracing::info!(?selection, replayed, "manual replay");
    HttpResponse::Ok().json(serde_json::json!({ "replayed": replayed }))
}

async fn deliveries(dispatcher: web::Data<Dispatcher>) -> HttpResponse {
    HttpResponse::Ok().json(dispatcher.summary())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms_and_names_the_bad_field() {
        assert!(matches!(
            parse(br#"{"conversion_id": "c1", "outbound_id": "out1"}"#),
            Ok(ReplaySelection::Conversion { outbound_id: Some(ref o), .. }) if o == "out1"
        ));
        assert!(matches!(
            parse(br#"{"flow_id": 3}"#),
            Ok(ReplaySelection::Flow {
                flow_id: 3,
                state: OutboundState::Dead,
                outbound_id: None
            })
        ));
        let field = |body: &[u8]| match parse(body) {
            Err(ReplayError::Invalid(field, _)) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(b"{"), "body");
        assert_eq!(field(br#"{"flow_id": "x"}"#), "body");
        assert_eq!(field(br#"{"conversion": "c"}"#), "body");
        assert_eq!(field(br#"{}"#), "conversion_id");
        assert_eq!(field(br#"{"conversion_id": " "}"#), "conversion_id");
        assert_eq!(field(br#"{"conversion_id": "c", "flow_id": 1}"#), "flow_id");
        assert_eq!(field(br#"{"flow_id": 1, "state": "lost"}"#), "state");
        assert_eq!(
            field(br#"{"conversion_id": "c", "state": "dead"}"#),
            "state"
        );
    }
}

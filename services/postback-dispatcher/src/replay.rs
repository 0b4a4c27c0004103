//! Manual replay over HTTP: `POST /replay` schedules deliveries again at once, and
//! `GET /deliveries` counts them by state.
//!
//! Parsing and the answers (200, or 404 / 422 with the error body every service answers
//! with) live here; what a replay does to a delivery is the dispatcher's business.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use traffsure_core::vocab::Vocabulary as _;
use traffsure_core::ErrorBody;
use traffsure_events::OutboundState;

use crate::deliveries::ReplaySelection;
use crate::dispatcher::Dispatcher;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/replay", web::post().to(replay))
        .route("/test", web::post().to(send_test))
        .route("/deliveries", web::get().to(deliveries));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    flow_id: u32,
    outbound_id: String,
}

/// `POST /test {"flow_id", "outbound_id"}`: fires that outbound postback once and answers
/// the receiver's answer (404 when the flow or the postback is unknown).
async fn send_test(dispatcher: web::Data<Dispatcher>, body: web::Bytes) -> HttpResponse {
    let request: TestRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return ReplayError::Invalid("body", format!("expected {{flow_id, outbound_id}}: {e}"))
                .response()
        }
    };
    match dispatcher
        .send_test(request.flow_id, &request.outbound_id)
        .await
    {
        Ok(answer) => {
            tracing::info!(
                flow = request.flow_id,
                outbound = %request.outbound_id,
                status = %answer["http_status"],
                "test outbound postback sent"
            );
            HttpResponse::Ok().json(answer)
        }
        Err(message) => ReplayError::NotFound(message).response(),
    }
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
    /// The one place a refusal becomes an HTTP status and an error body.
    fn answer(&self) -> (StatusCode, ErrorBody) {
        let (status, code, field) = match self {
            ReplayError::Invalid(field, _) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                Some(*field),
            ),
            ReplayError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
        };
        let body = ErrorBody::new(status.as_u16(), code, self.to_string());
        match field {
            Some(field) => (status, body.with_field(field)),
            None => (status, body),
        }
    }

    fn response(&self) -> HttpResponse {
        let (status, body) = self.answer();
        HttpResponse::build(status).json(body)
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
            let state = OutboundState::from_word(state).ok_or_else(|| {
                ReplayError::Invalid(
                    "state",
                    format!("{state:?} is not one of {}", OutboundState::word_list()),
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

    #[test]
    fn states_are_named_with_the_outbound_vocabulary() {
        for (word, state) in [
            ("scheduled", OutboundState::Unspecified),
            ("retrying", OutboundState::Retrying),
            ("refused", OutboundState::Refused),
        ] {
            let body = format!(r#"{{"flow_id": 1, "state": "{word}"}}"#);
            assert!(
                matches!(parse(body.as_bytes()), Ok(ReplaySelection::Flow { state: s, .. }) if s == state),
                "{word}"
            );
        }
        assert!(matches!(
            parse(br#"{"flow_id": 1, "state": "lost"}"#),
            Err(ReplayError::Invalid("state", message))
                if message == r#""lost" is not one of scheduled, delivered, retrying, dead or refused"#
        ));
    }

    #[test]
    fn refusals_answer_with_the_common_error_body() {
        let (status, body) = ReplayError::Invalid("state", "bad".into()).answer();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            body,
            ErrorBody::new(422, "invalid_field", "bad").with_field("state")
        );
        let (status, body) = ReplayError::NotFound("none".into()).answer();
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, ErrorBody::new(404, "not_found", "none"));
    }
}

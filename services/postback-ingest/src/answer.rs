//! Every HTTP answer postback-ingest gives, in one place: which status, reason code and
//! parameter each outcome (accepted, refused, not durable) is answered with, and how the
//! answer is rendered — JSON for the S2S endpoints (`/postback`, `/pb/`), a 1×1 GIF or
//! an empty page for the browser ones (`/pixel.gif`, `/iframe`).
//!
//! Browser endpoints run the same checks and logging as S2S postbacks; when the request
//! names no click hash nor `vid`, the visitor ID comes from the first-party cookie
//! click-ingest set, so `flow` plus the cookie converts the visitor's latest click in
//! that flow. They keep the postback's real HTTP status (the log and the response
//! agree); their body is always a valid GIF or page, and `X-TraffSure-Code` carries the
//! reason code.
//!
//! A refusal's JSON body is `traffsure_core::ErrorBody` plus the `postback_id` it was
//! logged under.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};
use serde::Serialize;
use traffsure_core::ErrorBody;
use traffsure_telemetry::prometheus::IntCounterVec;

use crate::params;
use crate::postback::{self, Edge, PostbackError};
use crate::security::{self, SecurityError};

/// The smallest transparent 1×1 GIF.
pub const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xFF, 0xFF, 0xFF, 0x21, 0xF9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2C, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3B,
];

/// The JavaScript tag served at `/ts.js`.
pub const TAG_JS: &str = include_str!("ts.js");

const CODE_HEADER: &str = "x-traffsure-code";
const POSTBACK_ID_HEADER: &str = "x-traffsure-postback-id";

/// The answer to a postback: status, stable reason code, the parameter at fault when
/// there is one, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub code: &'static str,
    pub field: Option<String>,
    pub message: String,
}

impl Answer {
    /// The answer to a postback's result.
    pub fn of(result: &Result<(), PostbackError>) -> Self {
        match result {
            Ok(()) => Self {
                status: StatusCode::OK,
                code: "accepted",
                field: None,
                message: "postback accepted".into(),
            },
            Err(error) => Self::refusal(error),
        }
    }

    /// The answer to a refused or undelivered postback.
    pub fn refusal(error: &PostbackError) -> Self {
        use PostbackError as E;
        let (status, code, field): (_, _, Option<&str>) = match error {
            E::MissingClick => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "missing_click",
                Some(params::CLICK[0]),
            ),
            E::ClickNotFound { field, .. } | E::ClickPastRetention { field, .. } => {
                (StatusCode::NOT_FOUND, "click_not_found", Some(field))
            }
            E::InvalidVisitor => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_visitor",
                Some(params::VISITOR[0]),
            ),
            E::MissingFlow => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "missing_flow",
                Some(params::FLOW[0]),
            ),
            E::InvalidOffer { field } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_offer",
                Some(field),
            ),
            E::FlowNotFound(_) => (
                StatusCode::NOT_FOUND,
                "flow_not_found",
                Some(params::FLOW[0]),
            ),
            E::Security(error) => security_refusal(error),
            E::InvalidRevenue { field, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_revenue",
                Some(field),
            ),
            E::InvalidCurrency { field, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_currency",
                Some(field),
            ),
            E::InvalidGoal { field } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_goal",
                Some(field),
            ),
            E::InvalidUid { field } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_uid", Some(field))
            }
            E::InvalidReason { field } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_reason",
                Some(field),
            ),
            E::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", None),
            E::InvalidBody(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", None),
            E::NotDurable => (StatusCode::SERVICE_UNAVAILABLE, "not_durable", None),
        };
        Self {
            status,
            code,
            field: field.map(str::to_string),
            message: error.to_string(),
        }
    }
}

/// A flow's security refusal: 403 for an address outside the allow-list, 401 for a
/// missing, wrong or stale credential.
fn security_refusal(error: &SecurityError) -> (StatusCode, &'static str, Option<&'static str>) {
    use SecurityError as E;
    let unauthorized = StatusCode::UNAUTHORIZED;
    match error {
        E::IpNotAllowed(_) => (StatusCode::FORBIDDEN, "ip_not_allowed", None),
        E::MissingToken => (unauthorized, "missing_token", Some(security::TOKEN)),
        E::InvalidToken => (unauthorized, "invalid_token", Some(security::TOKEN)),
        E::MissingSignature => (unauthorized, "missing_signature", Some(security::SIGNATURE)),
        E::MissingTimestamp => (unauthorized, "missing_signature", Some(security::TIMESTAMP)),
        E::InvalidTimestamp => (unauthorized, "invalid_signature", Some(security::TIMESTAMP)),
        E::MalformedSignature | E::SignatureMismatch => {
            (unauthorized, "invalid_signature", Some(security::SIGNATURE))
        }
        E::Expired { .. } => (unauthorized, "signature_expired", Some(security::TIMESTAMP)),
    }
}

fn answers_total() -> &'static IntCounterVec {
    static METRIC: std::sync::OnceLock<IntCounterVec> = std::sync::OnceLock::new();
    METRIC.get_or_init(|| {
        traffsure_telemetry::counter_vec(
            "traffsure_postbacks_total",
            "Postback requests by answer",
            &["status", "code"],
        )
    })
}

/// Handles one request end to end: process it, log it with its answer, count the answer
/// in `traffsure_postbacks_total`. Returns the answer and the postback ID.
async fn handle(
    edge: &Edge,
    req: &HttpRequest,
    payload: web::Payload,
    visitor_cookie: Option<String>,
) -> (Answer, String) {
    let handled = postback::process(edge, req, payload, visitor_cookie).await;
    let answer = Answer::of(&handled.result);
    let postback_id = handled.postback_id.clone();
    handled.log(edge, answer.status.as_u16(), answer.code, &answer.message);
    answers_total()
        .with_label_values(&[answer.status.as_str(), answer.code])
        .inc();
    (answer, postback_id)
}

#[derive(Serialize)]
struct Accepted<'a> {
    status: u16,
    code: &'a str,
    message: &'a str,
    postback_id: &'a str,
}

#[derive(Serialize)]
struct Refused<'a> {
    #[serde(flatten)]
    error: ErrorBody,
    postback_id: &'a str,
}

/// The JSON answer of the S2S endpoints.
fn json(answer: &Answer, postback_id: &str) -> HttpResponse {
    let mut response = HttpResponse::build(answer.status);
    if answer.status.is_success() {
        return response.json(Accepted {
            status: answer.status.as_u16(),
            code: answer.code,
            message: &answer.message,
            postback_id,
        });
    }
    let mut error = ErrorBody::new(answer.status.as_u16(), answer.code, answer.message.clone());
    error.field = answer.field.clone();
    response.json(Refused { error, postback_id })
}

/// The headers every browser answer carries.
fn browser(answer: &Answer, postback_id: &str, content_type: &'static str) -> HttpResponseBuilder {
    let mut response = HttpResponse::build(answer.status);
    response
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "no-store, max-age=0"))
        .insert_header((CODE_HEADER, answer.code));
    if let Ok(id) = HeaderValue::from_str(postback_id) {
        response.insert_header((POSTBACK_ID_HEADER, id));
    }
    response
}

fn pixel_answer(answer: &Answer, postback_id: &str) -> HttpResponse {
    browser(answer, postback_id, "image/gif").body(PIXEL_GIF)
}

fn iframe_answer(answer: &Answer, postback_id: &str) -> HttpResponse {
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title></head><body></body></html>",
        answer.code
    );
    browser(answer, postback_id, "text/html; charset=utf-8").body(page)
}

fn cookie(edge: &Edge, req: &HttpRequest) -> Option<String> {
    req.cookie(&edge.visitor_cookie)
        .map(|c| c.value().to_string())
}

/// `/postback` and `/pb/`: a server-to-server postback, answered in JSON.
pub async fn receive(
    edge: web::Data<Edge>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let (answer, postback_id) = handle(&edge, &req, payload, None).await;
    json(&answer, &postback_id)
}

/// `GET /pixel.gif`: a conversion from an image tag.
pub async fn pixel(edge: web::Data<Edge>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let visitor = cookie(&edge, &req);
    let (answer, postback_id) = handle(&edge, &req, payload, visitor).await;
    pixel_answer(&answer, &postback_id)
}

/// `GET /iframe`: a conversion from an iframe; the page is empty.
pub async fn iframe(
    edge: web::Data<Edge>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let visitor = cookie(&edge, &req);
    let (answer, postback_id) = handle(&edge, &req, payload, visitor).await;
    iframe_answer(&answer, &postback_id)
}

/// `GET /ts.js`: the JavaScript tag.
pub async fn tag() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/javascript; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(TAG_JS)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;
    use traffsure_core::ClickHashError;

    fn refusal(error: PostbackError) -> (u16, &'static str, Option<String>) {
        let answer = Answer::refusal(&error);
        assert_eq!(answer.message, error.to_string());
        (answer.status.as_u16(), answer.code, answer.field)
    }

    fn field(name: &str) -> Option<String> {
        Some(name.to_string())
    }

    #[test]
    fn every_refusal_has_its_status_code_and_field() {
        use PostbackError as E;
        let payout = || "payout".to_string();
        let cases = [
            (E::MissingClick, (422, "missing_click", field("click"))),
            (
                E::ClickNotFound {
                    field: "ClickID".into(),
                    error: ClickHashError::Signature,
                },
                (404, "click_not_found", field("ClickID")),
            ),
            (
                E::ClickPastRetention {
                    field: "hit".into(),
                    days: 91,
                },
                (404, "click_not_found", field("hit")),
            ),
            (E::InvalidVisitor, (422, "invalid_visitor", field("vid"))),
            (E::MissingFlow, (422, "missing_flow", field("flow"))),
            (
                E::InvalidOffer { field: "p".into() },
                (422, "invalid_offer", field("p")),
            ),
            (
                E::FlowNotFound("x".into()),
                (404, "flow_not_found", field("flow")),
            ),
            (
                E::InvalidRevenue {
                    field: payout(),
                    error: traffsure_core::parse_micros("ten").unwrap_err(),
                    value: "ten".into(),
                },
                (422, "invalid_revenue", field("payout")),
            ),
            (
                E::InvalidCurrency {
                    field: "currency".into(),
                    value: "dollars".into(),
                },
                (422, "invalid_currency", field("currency")),
            ),
            (
                E::InvalidGoal { field: "et".into() },
                (422, "invalid_goal", field("et")),
            ),
            (
                E::InvalidUid { field: "tx".into() },
                (422, "invalid_uid", field("tx")),
            ),
            (
                E::InvalidReason {
                    field: "comment".into(),
                },
                (422, "invalid_reason", field("comment")),
            ),
            (E::BodyTooLarge(10), (413, "body_too_large", None)),
            (E::InvalidBody("bad".into()), (422, "invalid_body", None)),
            (E::NotDurable, (503, "not_durable", None)),
        ];
        for (error, expected) in cases {
            let shown = format!("{error:?}");
            assert_eq!(refusal(error), expected, "{shown}");
        }
    }

    #[test]
    fn every_security_refusal_is_401_or_403() {
        use SecurityError as S;
        let cases = [
            (
                S::IpNotAllowed("198.51.100.1".into()),
                (403, "ip_not_allowed", None),
            ),
            (S::MissingToken, (401, "missing_token", field("token"))),
            (S::InvalidToken, (401, "invalid_token", field("token"))),
            (
                S::MissingSignature,
                (401, "missing_signature", field("signature")),
            ),
            (
                S::MissingTimestamp,
                (401, "missing_signature", field("timestamp")),
            ),
            (
                S::InvalidTimestamp,
                (401, "invalid_signature", field("timestamp")),
            ),
            (
                S::MalformedSignature,
                (401, "invalid_signature", field("signature")),
            ),
            (
                S::SignatureMismatch,
                (401, "invalid_signature", field("signature")),
            ),
            (
                S::Expired {
                    age: 400,
                    max_age: 300,
                },
                (401, "signature_expired", field("timestamp")),
            ),
        ];
        for (error, expected) in cases {
            let shown = format!("{error:?}");
            assert_eq!(refusal(error.into()), expected, "{shown}");
        }
    }

    fn body_json(response: HttpResponse) -> serde_json::Value {
        let bytes = response.into_body().try_into_bytes().unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn json_answers_keep_their_shape() {
        let accepted = json(&Answer::of(&Ok(())), "pb-1");
        assert_eq!(accepted.status(), StatusCode::OK);
        assert_eq!(
            body_json(accepted),
            serde_json::json!({
                "status": 200, "code": "accepted", "message": "postback accepted",
                "postback_id": "pb-1"
            })
        );
        let refused = json(
            &Answer::refusal(&SecurityError::InvalidToken.into()),
            "pb-2",
        );
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            body_json(refused),
            serde_json::json!({
                "status": 401, "code": "invalid_token", "field": "token",
                "message": "token does not match", "postback_id": "pb-2"
            })
        );
        let unfielded = json(&Answer::refusal(&PostbackError::NotDurable), "pb-3");
        assert_eq!(body_json(unfielded)["field"], serde_json::Value::Null);
    }

    #[test]
    fn browser_answers_keep_the_status_and_carry_the_code() {
        let refused = Answer::refusal(&PostbackError::MissingClick);
        let pixel = pixel_answer(&refused, "pb-4");
        assert_eq!(pixel.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let headers = pixel.headers();
        assert_eq!(headers.get(header::CONTENT_TYPE).unwrap(), "image/gif");
        assert_eq!(
            headers.get(header::CACHE_CONTROL).unwrap(),
            "no-store, max-age=0"
        );
        assert_eq!(headers.get(CODE_HEADER).unwrap(), "missing_click");
        assert_eq!(headers.get(POSTBACK_ID_HEADER).unwrap(), "pb-4");
        assert_eq!(
            pixel.into_body().try_into_bytes().unwrap().as_ref(),
            PIXEL_GIF
        );
        let page = iframe_answer(&Answer::of(&Ok(())), "pb-5");
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers().get(CODE_HEADER).unwrap(), "accepted");
        let body = page.into_body().try_into_bytes().unwrap();
        assert!(String::from_utf8_lossy(&body).contains("<title>accepted</title>"));
    }

    #[test]
    fn pixel_is_a_1x1_gif() {
        assert_eq!(&PIXEL_GIF[..6], b"GIF89a");
        assert_eq!(u16::from_le_bytes([PIXEL_GIF[6], PIXEL_GIF[7]]), 1);
        assert_eq!(u16::from_le_bytes([PIXEL_GIF[8], PIXEL_GIF[9]]), 1);
        assert_eq!(PIXEL_GIF.last(), Some(&0x3B));
    }

    #[test]
    fn tag_defines_track_and_calls_the_pixel() {
        assert!(TAG_JS.contains("track"));
        assert!(TAG_JS.contains("/pixel.gif"));
    }
}

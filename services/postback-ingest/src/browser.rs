//! Browser-side (client-to-server) conversions: a 1×1 GIF pixel, an iframe page, and the
//! JavaScript tag that calls the pixel. They run the same checks and logging as S2S
//! postbacks; when the request names no click hash nor `vid`, the visitor ID comes from
//! the first-party cookie click-ingest set, so `flow` plus the cookie converts the
//! visitor's latest click in that flow.
//!
//! Each answer keeps the postback's real HTTP status (the log and the response agree);
//! the body is always a valid GIF or page, and `X-TraffSure-Code` carries the reason code.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};

use crate::postback::{process, Edge, Outcome};

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

async fn convert(edge: &Edge, req: &HttpRequest, payload: web::Payload) -> Outcome {
    let cookie = req
        .cookie(&edge.visitor_cookie)
        .map(|c| c.value().to_string());
    process(edge, req, payload, cookie).await
}

fn respond(outcome: &Outcome, content_type: &'static str) -> actix_web::HttpResponseBuilder {
    let mut response = HttpResponse::build(outcome.answer.status);
    response
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "no-store, max-age=0"))
        .insert_header((CODE_HEADER, outcome.answer.code));
    if let Ok(id) = HeaderValue::from_str(&outcome.postback_id) {
        response.insert_header((POSTBACK_ID_HEADER, id));
    }
    response
}

/// `GET /pixel.gif`: a conversion from an image tag.
pub async fn pixel(edge: web::Data<Edge>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let outcome = convert(&edge, &req, payload).await;
    crate::postback::count(&outcome.answer);
    respond(&outcome, "image/gif").body(PIXEL_GIF)
}

/// `GET /iframe`: a conversion from an iframe; the page is empty.
pub async fn iframe(
    edge: web::Data<Edge>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let outcome = convert(&edge, &req, payload).await;
    crate::postback::count(&outcome.answer);
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title></head><body></body></html>",
        outcome.answer.code
    );
    respond(&outcome, "text/html; charset=utf-8").body(page)
}

/// `GET /ts.js`: the JavaScript tag.
pub async fn tag() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/javascript; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(TAG_JS)
}

#[cfg(test)]
mod tests {
    use super::*;

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

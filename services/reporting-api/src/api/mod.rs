//! The JSON API under `/api/v1`, one module per resource: flows (the only writes, to the
//! `flows` topic), the dashboard and reports (aggregates), and the clicks, conversions,
//! postback log and outbound postback lists (raw tables, a page at a time). Login lives
//! in `auth`; routes are registered in `routes`.

use actix_web::HttpResponse;

pub mod clicks;
pub mod conversions;
pub mod dashboard;
pub mod flows;
pub mod outbound;
mod page;
pub mod postbacks;
pub mod reports;

/// The OpenAPI document of this API.
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(include_str!("../../openapi.json"))
}

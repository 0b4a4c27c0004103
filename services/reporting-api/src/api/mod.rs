//! The JSON API under `/api/v1`, one module per resource: flows (written to the `flows`
//! topic), exchange rates (written to ClickHouse), the dashboard and reports (aggregates), and the clicks, conversions,
//! postback log and outbound postback lists (raw tables, a page at a time). Login lives
//! in `auth`; routes are registered in `routes`.

use actix_web::HttpResponse;

pub mod audit;
pub mod clicks;
pub mod conversions;
pub mod costs;
pub mod dashboard;
pub mod exchange_rates;
pub mod flows;
pub mod objects;
pub mod outbound;
mod page;
pub mod postback_outcomes;
pub mod postbacks;
pub mod reports;
pub mod scoped_postbacks;
pub mod suggestions;
pub mod users;

/// The OpenAPI document of this API, generated from the code (`crate::openapi`).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "auth",
    summary = "This document",
    security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(crate::openapi::json())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::Value;
    use traffsure_core::vocab::Vocabulary;
    use traffsure_events::{
        ConversionStatus, DuplicatePolicy, FlowStatus, OutboundState, RedirectMode,
    };

    /// The OpenAPI document lists each enum with the words of `traffsure_core::vocab`.
    #[test]
    fn openapi_enums_are_the_vocabulary() {
        let doc: Value = serde_json::from_str(crate::openapi::json()).unwrap();
        let param = |path: &str, name: &str| -> Value {
            doc["paths"][path]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .map(|p| &p["schema"])
                // A comma-separated list names its words in its items.
                .map(|s| s.get("items").unwrap_or(s))
                .unwrap()["enum"]
                .clone()
        };
        let schema = |schema: &str, property: &str| -> Value {
            doc["components"]["schemas"][schema]["properties"][property]["enum"].clone()
        };
        for (listed, words) in [
            (schema("FlowSpec", "status"), FlowStatus::words()),
            (schema("FlowSpec", "redirect_mode"), RedirectMode::words()),
            (
                schema("GoalSpec", "duplicate_policy"),
                DuplicatePolicy::words(),
            ),
            (
                param("/api/v1/conversions", "status"),
                ConversionStatus::words(),
            ),
            (
                param("/api/v1/outbound-postbacks", "state"),
                OutboundState::words(),
            ),
            (
                param("/api/v1/postbacks", "outcome"),
                super::postback_outcomes::words(),
            ),
        ] {
            assert_eq!(listed, serde_json::json!(words));
        }
    }
}

//! Every route the service answers, registered in one place: the panel's pages and
//! assets, login, and the JSON API under `/api/v1`. Which of them need credentials is
//! decided by `auth`; health and metrics come from `traffsure_telemetry::ops_routes`.

use actix_web::web;

use crate::{api, auth, panel};

pub fn routes(cfg: &mut web::ServiceConfig) {
    for page in panel::PAGES {
        cfg.route(page, web::get().to(panel::shell));
    }
    cfg.route("/login", web::get().to(panel::login_page))
        .route("/assets/app.js", web::get().to(panel::app_js))
        .route("/assets/app.css", web::get().to(panel::app_css))
        .route("/api/v1/auth/login", web::post().to(auth::login))
        .route("/api/v1/auth/logout", web::post().to(auth::logout))
        .route("/api/v1/auth/session", web::get().to(auth::session))
        .route("/api/v1/openapi.json", web::get().to(api::openapi))
        .route(
            "/api/v1/dashboard",
            web::get().to(api::dashboard::dashboard),
        )
        .route("/api/v1/clicks", web::get().to(api::clicks::list))
        .route("/api/v1/conversions", web::get().to(api::conversions::list))
        .route("/api/v1/postbacks", web::get().to(api::postbacks::list))
        .route("/api/v1/postbacks/{id}", web::get().to(api::postbacks::get))
        .route(
            "/api/v1/outbound-postbacks",
            web::get().to(api::outbound::list),
        )
        .route(
            "/api/v1/outbound-postbacks/replay",
            web::post().to(api::outbound::replay),
        )
        .route(
            "/api/v1/outbound-postbacks/presets",
            web::get().to(api::outbound::presets),
        )
        .route(
            "/api/v1/flows/{flow}/outbound-postbacks/{id}/test",
            web::post().to(api::outbound::send_test),
        )
        .route("/api/v1/reports", web::get().to(api::reports::report))
        .route(
            "/api/v1/exchange-rates",
            web::get().to(api::exchange_rates::list),
        )
        .route(
            "/api/v1/exchange-rates",
            web::put().to(api::exchange_rates::put),
        )
        .service(
            web::resource("/api/v1/exchange-rates/import")
                // The ECB history file is a few MiB.
                .app_data(web::PayloadConfig::new(32 * 1024 * 1024))
                .route(web::post().to(api::exchange_rates::import)),
        )
        .route("/api/v1/flows", web::get().to(api::flows::list))
        .route("/api/v1/flows", web::post().to(api::flows::create))
        .route("/api/v1/flows/{id}", web::get().to(api::flows::get))
        .route("/api/v1/flows/{id}", web::put().to(api::flows::update));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    /// Every `/api/v1` route registered in this file is in the OpenAPI document.
    #[test]
    fn openapi_documents_every_route() {
        let doc: serde_json::Value = serde_json::from_str(include_str!("../openapi.json")).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let source = include_str!("routes.rs");
        let routes: Vec<&str> = source
            .split("\"/api/v1")
            .skip(1)
            .map(|rest| &rest[..rest.find('"').unwrap()])
            // Only route literals, not this test's own strings.
            .filter(|r| r.starts_with('/') && *r != "/{route}")
            .collect();
        assert!(routes.len() >= 14, "{routes:?}");
        for route in routes {
            let path = ["/api/v1", route].concat();
            assert!(paths.contains_key(&path), "{path} is not in openapi.json");
        }
    }
}

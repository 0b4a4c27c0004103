//! Every route the service answers, registered in one place: the panel's pages and
//! assets, login, and the JSON API under `/api/v1`. Which of them need credentials is
//! decided by `auth`; health and metrics come from `traffsure_telemetry::ops_routes`.

use actix_web::web;

use traffsure_core::objects::{
    AffiliateNetworkSpec, LanderSpec, ObjectSpec, OfferSpec, TrafficSourceSpec,
};

use crate::{api, auth, openapi, panel};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.default_service(web::to(crate::error::unknown_route));
    for page in panel::PAGES {
        cfg.route(page, web::get().to(panel::shell));
    }
    cfg.route("/login", web::get().to(panel::login_page))
        .route("/assets/app.js", web::get().to(panel::app_js))
        .route("/assets/app.css", web::get().to(panel::app_css))
        .route("/assets/objects.js", web::get().to(panel::objects_js))
        .route("/assets/objects.css", web::get().to(panel::objects_css))
        .route("/assets/dates.js", web::get().to(panel::dates_js))
        .route("/assets/lists.js", web::get().to(panel::lists_js))
        .route("/assets/charts.js", web::get().to(panel::charts_js))
        .route(
            "/assets/vendor/uPlot.iife.min.js",
            web::get().to(panel::uplot_js),
        )
        .route(
            "/assets/vendor/uPlot.min.css",
            web::get().to(panel::uplot_css),
        )
        .route("/assets/editors.js", web::get().to(panel::editors_js))
        .route("/assets/editors.css", web::get().to(panel::editors_css))
        .route(
            "/assets/postbacks-scope.js",
            web::get().to(panel::postbacks_scope_js),
        )
        .route("/assets/costs.js", web::get().to(panel::costs_js))
        .route("/api/v1/auth/login", web::post().to(auth::login))
        .route("/api/v1/auth/logout", web::post().to(auth::logout))
        .route("/api/v1/auth/session", web::get().to(auth::session))
        .route("/api/v1/openapi.json", web::get().to(api::openapi))
        .route("/api/docs", web::get().to(openapi::reference_page))
        .route(
            "/assets/api-docs.js",
            web::get().to(openapi::reference_script),
        )
        .route(
            "/assets/swagger-ui/swagger-ui-bundle.js",
            web::get().to(openapi::swagger_ui_js),
        )
        .route(
            "/assets/swagger-ui/swagger-ui.css",
            web::get().to(openapi::swagger_ui_css),
        )
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
            "/api/v1/outbound-postbacks/global",
            web::get().to(api::scoped_postbacks::get_global),
        )
        .route(
            "/api/v1/outbound-postbacks/global",
            web::put().to(api::scoped_postbacks::put_global),
        )
        .route(
            "/api/v1/flows/{flow}/outbound-postbacks/{id}/test",
            web::post().to(api::outbound::send_test),
        )
        .route("/api/v1/reports", web::get().to(api::reports::report))
        .route("/api/v1/suggestions", web::get().to(api::suggestions::list))
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
        .route("/api/v1/costs", web::get().to(api::costs::list))
        .route("/api/v1/costs", web::post().to(api::costs::create))
        .route("/api/v1/costs/import", web::post().to(api::costs::import))
        .route("/api/v1/flows", web::get().to(api::flows::list))
        .route("/api/v1/flows", web::post().to(api::flows::create))
        .route("/api/v1/flows/{id}", web::get().to(api::flows::get))
        .route("/api/v1/flows/{id}", web::put().to(api::flows::update))
        .route(
            "/api/v1/templates/traffic-sources",
            web::get().to(api::objects::source_templates),
        )
        .route(
            "/api/v1/templates/affiliate-networks",
            web::get().to(api::objects::network_templates),
        )
        .route(
            "/api/v1/traffic-sources/from-template",
            web::post().to(api::objects::source_from_template),
        )
        .route(
            "/api/v1/affiliate-networks/from-template",
            web::post().to(api::objects::network_from_template),
        );
    teams(cfg);
    objects::<TrafficSourceSpec>(
        cfg,
        [
            "/api/v1/traffic-sources",
            "/api/v1/traffic-sources/{id}",
            "/api/v1/traffic-sources/{id}/archive",
            "/api/v1/traffic-sources/{id}/unarchive",
        ],
    );
    objects::<AffiliateNetworkSpec>(
        cfg,
        [
            "/api/v1/affiliate-networks",
            "/api/v1/affiliate-networks/{id}",
            "/api/v1/affiliate-networks/{id}/archive",
            "/api/v1/affiliate-networks/{id}/unarchive",
        ],
    );
    objects::<OfferSpec>(
        cfg,
        [
            "/api/v1/offers",
            "/api/v1/offers/{id}",
            "/api/v1/offers/{id}/archive",
            "/api/v1/offers/{id}/unarchive",
        ],
    );
    objects::<LanderSpec>(
        cfg,
        [
            "/api/v1/landers",
            "/api/v1/landers/{id}",
            "/api/v1/landers/{id}/archive",
            "/api/v1/landers/{id}/unarchive",
        ],
    );
}

/// Users, their API keys, who is asking, and the audit log (with their panel scripts).
fn teams(cfg: &mut web::ServiceConfig) {
    cfg.route("/assets/users.js", web::get().to(panel::users_js))
        .route("/assets/audit.js", web::get().to(panel::audit_js))
        .route("/api/v1/me", web::get().to(api::users::me))
        .route("/api/v1/me", web::put().to(api::users::update_me))
        .route("/api/v1/users", web::get().to(api::users::list))
        .route("/api/v1/users", web::post().to(api::users::create))
        .route("/api/v1/users/{id}", web::get().to(api::users::get))
        .route("/api/v1/users/{id}", web::put().to(api::users::update))
        .route("/api/v1/users/{id}", web::delete().to(api::users::delete))
        .route(
            "/api/v1/users/{id}/api-keys",
            web::get().to(api::users::keys),
        )
        .route(
            "/api/v1/users/{id}/api-keys",
            web::post().to(api::users::create_key),
        )
        .route(
            "/api/v1/users/{id}/api-keys/{key}",
            web::delete().to(api::users::revoke_key),
        )
        .route("/api/v1/audit", web::get().to(api::audit::list));
}

/// The routes of one kind of object: the list, one object, archive and unarchive.
fn objects<S: ObjectSpec>(
    cfg: &mut web::ServiceConfig,
    [list, one, archive, unarchive]: [&str; 4],
) {
    cfg.route(list, web::get().to(api::objects::list::<S>))
        .route(list, web::post().to(api::objects::create::<S>))
        .route(one, web::get().to(api::objects::get::<S>))
        .route(one, web::put().to(api::objects::update::<S>))
        .route(archive, web::post().to(api::objects::archive::<S>))
        .route(unarchive, web::post().to(api::objects::unarchive::<S>));
}

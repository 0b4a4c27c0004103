//! The routes: the admin panel's pages and assets, and the JSON API under `/api/v1`
//! (flows here; reads in `pages` and `reports`; login in `auth`).

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use clickhouse::Client;
use rdkafka::producer::FutureProducer;
use serde::Serialize;
use traffsure_core::flow::{FlowSpec, FlowView};
use traffsure_core::now_ms;
use traffsure_events::Flow;
use traffsure_kafka::{FlowRegistry, Topics};

use crate::error::ApiError;

pub struct Api {
    pub registry: Arc<FlowRegistry>,
    pub clickhouse: Client,
    pub producer: FutureProducer,
    pub topics: Topics,
    pub tracking_base_url: String,
    pub postback_base_url: String,
    /// Base URL of the postback dispatcher's HTTP port, for manual replays.
    pub dispatcher_url: Option<String>,
    pub http: reqwest::Client,
}

/// The panel's pages: one HTML shell, each page drawn by `app.js` from the path, with
/// its filters in the query string so a view can be shared as a link.
const PANEL_PAGES: &[&str] = &[
    "/",
    "/flows",
    "/flows/new",
    "/flows/{id}",
    "/clicks",
    "/conversions",
    "/postbacks",
    "/postbacks/{id}",
    "/outbound",
    "/reports",
];

pub fn routes(cfg: &mut web::ServiceConfig) {
    for page in PANEL_PAGES {
        cfg.route(page, web::get().to(admin_panel));
    }
    cfg.route("/login", web::get().to(login_page))
        .route("/assets/app.js", web::get().to(app_js))
        .route("/assets/app.css", web::get().to(app_css))
        .route("/api/v1/auth/login", web::post().to(crate::auth::login))
        .route("/api/v1/auth/logout", web::post().to(crate::auth::logout))
        .route("/api/v1/auth/session", web::get().to(crate::auth::session))
        .route("/api/v1/openapi.json", web::get().to(openapi))
        .route("/api/v1/dashboard", web::get().to(crate::pages::dashboard))
        .route("/api/v1/clicks", web::get().to(crate::pages::clicks))
        .route(
            "/api/v1/conversions",
            web::get().to(crate::pages::conversions),
        )
        .route("/api/v1/postbacks", web::get().to(crate::pages::postbacks))
        .route(
            "/api/v1/postbacks/{id}",
            web::get().to(crate::pages::postback),
        )
        .route(
            "/api/v1/outbound-postbacks",
            web::get().to(crate::pages::outbound),
        )
        .route(
            "/api/v1/outbound-postbacks/replay",
            web::post().to(crate::pages::replay),
        )
        .route("/api/v1/reports", web::get().to(crate::reports::report))
        .route("/api/v1/flows", web::get().to(list_flows))
        .route("/api/v1/flows", web::post().to(create_flow))
        .route("/api/v1/flows/{id}", web::get().to(get_flow))
        .route("/api/v1/flows/{id}", web::put().to(update_flow));
}

async fn admin_panel() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("../static/index.html"))
}

async fn login_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("../static/login.html"))
}

async fn app_js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(include_str!("../static/app.js"))
}

async fn app_css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(include_str!("../static/app.css"))
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(include_str!("../openapi.json"))
}

/// A flow with the links a user copies from the flow editor.
#[derive(Serialize)]
struct FlowWithLinks {
    #[serde(flatten)]
    flow: FlowView,
    tracking_link: String,
    postback_url: String,
}

impl Api {
    fn with_links(&self, flow: &Flow) -> FlowWithLinks {
        let handle = if flow.slug.is_empty() {
            flow.id.to_string()
        } else {
            flow.slug.clone()
        };
        FlowWithLinks {
            flow: FlowView::from(flow),
            tracking_link: format!("{}/c/{handle}?sub_id={{sub_id}}&source={{source}}", self.tracking_base_url),
            postback_url: format!(
                "{}/postback?click={{click}}&goal={{goal}}&status={{status}}&revenue={{revenue}}&currency={{currency}}&uid={{uid}}",
                self.postback_base_url
            ),
        }
    }

    fn flow(&self, id: &str) -> Result<Arc<Flow>, ApiError> {
        self.registry
            .resolve(id)
            .ok_or_else(|| ApiError::NotFound(format!("flow {id} not found")))
    }

    /// Publishes the flow and waits for the broker, then serves it from memory at once.
    async fn save(&self, flow: Flow) -> Result<(), ApiError> {
        if !flow.slug.is_empty() {
            if let Some(other) = self
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
        traffsure_kafka::send_event(&self.producer, &self.topics.flows, key.as_bytes(), &flow)
            .await
            .inspect_err(|error| {
                traffsure_kafka::metrics::count_delivery_error("reporting-api", error)
            })?;
        self.registry.upsert(flow);
        Ok(())
    }
}

async fn list_flows(api: web::Data<Api>) -> HttpResponse {
    let flows: Vec<_> = api
        .registry
        .all()
        .iter()
        .map(|f| api.with_links(f))
        .collect();
    HttpResponse::Ok().json(serde_json::json!({ "flows": flows }))
}

async fn get_flow(api: web::Data<Api>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(api.with_links(api.flow(&id)?.as_ref())))
}

async fn create_flow(
    api: web::Data<Api>,
    spec: web::Json<FlowSpec>,
) -> Result<HttpResponse, ApiError> {
    let id = loop {
        let candidate = rand::random_range(1..=9_999_999u32);
        if api.registry.get(candidate).is_none() {
            break candidate;
        }
    };
    let mut flow = Flow {
        id,
        ..Flow::default()
    };
    spec.apply(&mut flow, now_ms())?;
    api.save(flow.clone()).await?;
    tracing::info!(flow = id, name = %flow.name, "flow created");
    Ok(HttpResponse::Created().json(api.with_links(&flow)))
}

async fn update_flow(
    api: web::Data<Api>,
    id: web::Path<String>,
    spec: web::Json<FlowSpec>,
) -> Result<HttpResponse, ApiError> {
    let mut flow = Flow::clone(api.flow(&id)?.as_ref());
    spec.apply(&mut flow, now_ms())?;
    api.save(flow.clone()).await?;
    Ok(HttpResponse::Ok().json(api.with_links(&flow)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    /// Every `/api/v1` route registered in this file is in the OpenAPI document.
    #[test]
    fn openapi_documents_every_route() {
        let doc: serde_json::Value = serde_json::from_str(include_str!("../openapi.json")).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let source = include_str!("api.rs");
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

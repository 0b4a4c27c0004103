//! The `/api/v1` routes: dashboard and flows, plus the admin panel page.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use clickhouse::Client;
use rdkafka::producer::FutureProducer;
use serde::Serialize;
use traffsure_core::flow::{FlowSpec, FlowView};
use traffsure_core::{format_micros, now_ms};
use traffsure_events::{Flow, FlowStatus};
use traffsure_kafka::{FlowRegistry, Topics};

use crate::error::ApiError;

pub struct Api {
    pub registry: Arc<FlowRegistry>,
    pub clickhouse: Client,
    pub producer: FutureProducer,
    pub topics: Topics,
    pub tracking_base_url: String,
    pub postback_base_url: String,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(admin_panel))
        .route("/api/v1/openapi.json", web::get().to(openapi))
        .route("/api/v1/dashboard", web::get().to(dashboard))
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

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(include_str!("../openapi.json"))
}

#[derive(Debug, Serialize, clickhouse::Row, serde::Deserialize)]
struct ConversionTotals {
    approved: u64,
    pending: u64,
    rejected: u64,
    revenue_micros: i64,
}

#[derive(Serialize)]
struct Dashboard {
    date: String,
    timezone: &'static str,
    clicks_today: u64,
    conversions_today: u64,
    conversions_by_status: ConversionsByStatus,
    revenue_today: String,
    active_flows: usize,
}

#[derive(Serialize)]
struct ConversionsByStatus {
    approved: u64,
    pending: u64,
    rejected: u64,
}

/// Today's figures (UTC): clicks, conversions (current status approved or pending),
/// approved revenue, and the flows in status active.
async fn dashboard(api: web::Data<Api>) -> Result<HttpResponse, ApiError> {
    let clicks_query = api
        .clickhouse
        .query("SELECT count() FROM clicks WHERE ts >= toStartOfDay(now()) AND is_bot = 0")
        .fetch_one::<u64>();
    let conversions_query = api
        .clickhouse
        .query(
            "SELECT countIf(status = 'approved') AS approved, countIf(status = 'pending') AS pending, \
                    countIf(status = 'rejected') AS rejected, \
                    toInt64(sumIf(revenue_micros, status = 'approved')) AS revenue_micros \
             FROM (SELECT conversion_id, argMax(status, version) AS status, \
                          argMax(revenue_micros, version) AS revenue_micros \
                   FROM conversions WHERE created_at >= toStartOfDay(now()) GROUP BY conversion_id)",
        )
        .fetch_one::<ConversionTotals>();
    let date_query = api
        .clickhouse
        .query("SELECT toString(today())")
        .fetch_one::<String>();
    let (clicks, conversions, date) =
        tokio::try_join!(clicks_query, conversions_query, date_query)?;
    let active_flows = api
        .registry
        .all()
        .iter()
        .filter(|f| f.status() == FlowStatus::Active)
        .count();
    Ok(HttpResponse::Ok().json(Dashboard {
        date,
        timezone: "UTC",
        clicks_today: clicks,
        conversions_today: conversions.approved + conversions.pending,
        conversions_by_status: ConversionsByStatus {
            approved: conversions.approved,
            pending: conversions.pending,
            rejected: conversions.rejected,
        },
        revenue_today: format_micros(conversions.revenue_micros),
        active_flows,
    }))
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
            .await?;
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

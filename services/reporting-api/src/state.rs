//! The state every handler shares: the flow and object registries (as the `flows` and
//! `objects` topics hold them), the ClickHouse client the reads go through, the producer flows are written
//! with, and the URLs the API shows or calls. Built once in `main`; handlers receive it
//! as `web::Data<AppState>`.

use std::sync::Arc;

use clickhouse::Client;
use rdkafka::producer::FutureProducer;
use traffsure_kafka::{FlowRegistry, ObjectRegistry, Topics};

use crate::error::ApiError;
use crate::sql::Sql;

pub struct AppState {
    pub registry: Arc<FlowRegistry>,
    /// Traffic sources, affiliate networks, offers and landers as the `objects` topic
    /// holds them.
    pub objects: Arc<ObjectRegistry>,
    /// Held while an object or a flow is written: object ids are counted up, and flows
    /// are filled in from the objects, one write at a time.
    pub writes: tokio::sync::Mutex<()>,
    pub clickhouse: Client,
    pub producer: FutureProducer,
    pub topics: Topics,
    /// Public base URL of click-ingest, for the tracking links the API shows.
    pub tracking_base_url: String,
    /// Public base URL of postback-ingest, for the postback URLs the API shows.
    pub postback_base_url: String,
    /// Base URL of the postback dispatcher's HTTP port, for manual replays.
    pub dispatcher_url: Option<String>,
    pub http: reqwest::Client,
    /// The currency every total is shown in.
    pub reporting_currency: String,
}

impl AppState {
    /// A state for unit tests: `registry`'s flows, ClickHouse (and the dispatcher, when
    /// given) at `backend`, a producer whose broker never answers.
    #[cfg(test)]
    #[allow(clippy::unwrap_used)]
    pub fn for_tests(registry: FlowRegistry, backend: &str, dispatcher_url: Option<&str>) -> Self {
        Self {
            registry: Arc::new(registry),
            objects: Arc::new(ObjectRegistry::new()),
            writes: tokio::sync::Mutex::new(()),
            clickhouse: Client::default().with_url(backend),
            producer: rdkafka::ClientConfig::new()
                .set("bootstrap.servers", "127.0.0.1:1")
                .create()
                .unwrap(),
            topics: Topics::new("test-"),
            tracking_base_url: String::new(),
            postback_base_url: String::new(),
            dispatcher_url: dispatcher_url.map(str::to_string),
            http: reqwest::Client::new(),
            reporting_currency: "USD".into(),
        }
    }

    /// The flow's name, or empty for a flow the registry does not know (any more).
    pub fn flow_name(&self, id: u32) -> String {
        self.registry
            .get(id)
            .map(|f| f.name.clone())
            .unwrap_or_default()
    }

    /// Checks a time zone with ClickHouse itself, so an unknown name is a 422.
    pub async fn check_timezone(&self, timezone: &str) -> Result<(), ApiError> {
        if timezone == "UTC" {
            return Ok(());
        }
        let mut sql = Sql::new("SELECT toString(toDateTime('2000-01-01 00:00:00', ");
        sql.str(timezone).push("))");
        sql.query(&self.clickhouse)
            .fetch_one::<String>()
            .await
            .map(|_| ())
            .map_err(|_| ApiError::invalid("timezone", format!("unknown time zone {timezone:?}")))
    }
}

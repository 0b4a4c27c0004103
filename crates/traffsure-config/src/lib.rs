//! Typed configuration for every service, layered with the `config` crate:
//! built-in defaults, then `config/default.toml` and `config/<service>.toml` if present
//! (or the file named by `TRAFFSURE_CONFIG`), then environment variables
//! `TRAFFSURE__SECTION__KEY` (e.g. `TRAFFSURE__KAFKA__BROKERS=10.0.0.5:9092`).
//!
//! Each service defines its own settings struct from the sections here; a bad value
//! stops the service at start with a message naming the key.

use serde::de::DeserializeOwned;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

/// Loads the settings of `service`.
pub fn load<T: DeserializeOwned>(service: &str) -> Result<T, ConfigError> {
    let mut builder = config::Config::builder()
        .add_source(config::File::with_name("config/default").required(false))
        .add_source(config::File::with_name(&format!("config/{service}")).required(false));
    if let Ok(path) = std::env::var("TRAFFSURE_CONFIG") {
        builder = builder.add_source(config::File::with_name(&path).required(true));
    }
    builder
        .add_source(
            config::Environment::with_prefix("TRAFFSURE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        )
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| ConfigError(e.to_string()))
}

/// Kafka connection and topic naming.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSettings {
    /// `bootstrap.servers`
    pub brokers: String,
    /// Prefix of every topic name, e.g. `traffsure.` gives `traffsure.clicks`.
    pub topic_prefix: String,
    /// Partitions of `clicks`, `postbacks` and `conversions` when this service creates them;
    /// they are co-partitioned, so the three must match.
    pub partitions: i32,
    /// Replication factor of topics this service creates.
    pub replication_factor: i32,
    /// `message.timeout.ms`: how long the producer keeps trying to deliver one event.
    pub message_timeout_ms: u32,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "traffsure.".into(),
            partitions: 4,
            replication_factor: 1,
            message_timeout_ms: 30_000,
        }
    }
}

/// ClickHouse over HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseSettings {
    pub url: String,
    pub database: String,
    pub user: String,
    pub password: String,
}

impl Default for ClickHouseSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            database: "traffsure".into(),
            user: "default".into(),
            password: String::new(),
        }
    }
}

/// Money in totals: the currency every total is shown in, and where exchange rates come
/// from besides the API.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CurrencySettings {
    /// The reporting currency, a three-letter code.
    pub reporting: String,
    /// A daily rates file in the ECB CSV layout (`Date,USD,JPY,...`, base EUR) fetched
    /// and imported every `fetch_minutes`; empty = rates come from the API alone.
    pub rates_url: String,
    pub fetch_minutes: u64,
}

impl CurrencySettings {
    /// The reporting currency in upper case, or an error naming the setting.
    pub fn reporting_currency(&self) -> Result<String, ConfigError> {
        let code = self.reporting.trim().to_ascii_uppercase();
        if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(code)
        } else {
            Err(ConfigError(format!(
                "currency.reporting must be a three-letter code, not {:?}",
                self.reporting
            )))
        }
    }
}

impl Default for CurrencySettings {
    fn default() -> Self {
        Self {
            reporting: "USD".into(),
            rates_url: String::new(),
            fetch_minutes: 60,
        }
    }
}

/// The HTTP listener of a service (the edge itself, or the health/metrics port).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    pub bind: String,
    /// actix-web worker threads; 0 means one per core.
    pub workers: usize,
}

impl HttpSettings {
    pub fn on(bind: &str) -> Self {
        Self {
            bind: bind.into(),
            workers: 0,
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self::on("127.0.0.1:0")
    }
}

/// Logs and traces.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `text` or `json`.
    pub log_format: String,
    /// A tracing filter such as `info` or `info,sink=debug`; `RUST_LOG` wins when set.
    pub log_level: String,
    /// OTLP/HTTP endpoint for traces, e.g. `http://127.0.0.1:4318`; empty disables export.
    pub otlp_endpoint: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_format: "text".into(),
            log_level: "info".into(),
            otlp_endpoint: String::new(),
        }
    }
}

/// Secrets that sign click hashes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHashSettings {
    /// `"<id>:<secret>,<id>:<secret>"`, ids 0–15, secrets of 16 bytes or more.
    pub keys: String,
    /// The key id that signs new click hashes; the highest configured id when unset.
    pub active_key: Option<u8>,
}

/// Who the client of an edge is behind a proxy (`TRAFFSURE__CLIENT_IP__*`), read by
/// click-ingest and postback-ingest alike.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientIpSettings {
    /// Header naming the client when the peer is a trusted proxy: `X-Forwarded-For`,
    /// `X-Real-IP`, `CF-Connecting-IP`, `Forwarded`, ...
    pub header: String,
    /// Comma-separated addresses or CIDR blocks of trusted proxies; empty trusts none.
    pub trusted_proxies: String,
}

impl Default for ClientIpSettings {
    fn default() -> Self {
        Self {
            header: "X-Forwarded-For".into(),
            trusted_proxies: String::new(),
        }
    }
}

//! Typed configuration for every service, layered with the `config` crate:
//! built-in defaults, then `config/default.toml` and `config/<service>.toml` if present
//! (or the file named by `TRAFFSURE_CONFIG`), then environment variables
//! `TRAFFSURE__SECTION__KEY` (e.g. `TRAFFSURE__KAFKA__BROKERS=10.0.0.5:9092`).
//!
//! Each service defines its own settings struct from the sections here; a bad value
//! stops the service at start with a message naming the key.
//!
//! Any setting can also come from a file, the convention of container secrets:
//! `TRAFFSURE__SECTION__KEY_FILE=/run/secrets/x` reads the file and uses its content, less
//! one trailing newline, as `TRAFFSURE__SECTION__KEY` (see [`environment`]). Setting both is
//! an error, so a stale value cannot silently win over the file.

use std::collections::HashMap;
use std::path::Path;

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
    let env = environment(std::env::vars_os().filter_map(|(k, v)| {
        // A variable whose name or value is not UTF-8 cannot be a setting.
        Some((k.into_string().ok()?, v.into_string().ok()?))
    }))?;
    builder
        .add_source(
            config::Environment::with_prefix("TRAFFSURE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        )
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| ConfigError(e.to_string()))
}

/// The prefix of every setting's environment variable.
const PREFIX: &str = "TRAFFSURE__";
/// The suffix that makes a variable name a file holding the setting's value.
const FILE_SUFFIX: &str = "_FILE";

/// The `TRAFFSURE__*` variables of `vars` as settings, each `TRAFFSURE__X_FILE` replaced by
/// `TRAFFSURE__X` with the file's content. Errors name the variable or the path, never
/// the content.
pub fn environment(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<HashMap<String, String>, ConfigError> {
    let vars: HashMap<String, String> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with(PREFIX))
        .collect();
    let mut settings = HashMap::with_capacity(vars.len());
    for (name, value) in &vars {
        let Some(target) = name.strip_suffix(FILE_SUFFIX) else {
            settings.insert(name.clone(), value.clone());
            continue;
        };
        if vars.contains_key(target) {
            return Err(ConfigError(format!(
                "{target} and {name} are both set: set one of them"
            )));
        }
        settings.insert(target.to_string(), read_secret(name, Path::new(value))?);
    }
    Ok(settings)
}

/// The content of a `_FILE` variable's file, less one trailing newline (`echo` and most
/// editors add one; a secret never ends with it).
fn read_secret(variable: &str, path: &Path) -> Result<String, ConfigError> {
    let content = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{variable}: cannot read {}: {e}", path.display())))?;
    let content = content
        .strip_suffix("\r\n")
        .or_else(|| content.strip_suffix('\n'))
        .unwrap_or(&content);
    Ok(content.to_string())
}

/// Kafka connection, security and topic naming.
#[derive(Clone, Deserialize)]
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
    /// `fetch.min.bytes` of the group consumers (sink, attribution, dispatcher): the broker
    /// answers a fetch once it holds this many bytes for it, or after `fetch_wait_max_ms`.
    /// With 1 (librdkafka's default) every postback the edge sends on its own wakes every
    /// consumer of its topics with a fetch of its own; batching them costs the broker
    /// and the consumers less per event (BENCHMARKS.md, "Pipeline").
    pub fetch_min_bytes: u32,
    /// `fetch.wait.max.ms` of the group consumers: the longest a fetch waits for
    /// `fetch_min_bytes`, and so what it adds to an event's way at low traffic.
    /// conversion-attribution keeps 50 ms of its own.
    pub fetch_wait_max_ms: u32,
    /// `security.protocol`: `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: KafkaSecurityProtocol,
    /// `sasl.mechanism`: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (the `sasl_*` protocols).
    pub sasl_mechanism: SaslMechanism,
    /// `sasl.username`
    pub sasl_username: String,
    /// `sasl.password`; never logged.
    pub sasl_password: String,
    /// `ssl.ca.location`: PEM file of the CA that signed the brokers' certificates;
    /// empty trusts the system's CA store.
    pub ssl_ca_location: String,
    /// `ssl.certificate.location`: this client's PEM certificate, for brokers that ask
    /// for one (mTLS); empty sends none.
    pub ssl_certificate_location: String,
    /// `ssl.key.location`: the PEM private key of `ssl_certificate_location`.
    pub ssl_key_location: String,
    /// `ssl.key.password`, when that key is encrypted; never logged.
    pub ssl_key_password: String,
    /// `ssl.endpoint.identification.algorithm`: whether a broker's certificate must name
    /// the host it was reached by (`https`) or any name will do (`none`).
    pub ssl_verify_hostname: bool,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "traffsure.".into(),
            partitions: 4,
            replication_factor: 1,
            message_timeout_ms: 30_000,
            fetch_min_bytes: 65_536,
            fetch_wait_max_ms: 100,
            security_protocol: KafkaSecurityProtocol::Plaintext,
            sasl_mechanism: SaslMechanism::Plain,
            sasl_username: String::new(),
            sasl_password: String::new(),
            ssl_ca_location: String::new(),
            ssl_certificate_location: String::new(),
            ssl_key_location: String::new(),
            ssl_key_password: String::new(),
            ssl_verify_hostname: true,
        }
    }
}

/// Passwords print as `[redacted]`, so a settings dump in a log or a panic keeps them.
impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("topic_prefix", &self.topic_prefix)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("message_timeout_ms", &self.message_timeout_ms)
            .field("fetch_min_bytes", &self.fetch_min_bytes)
            .field("fetch_wait_max_ms", &self.fetch_wait_max_ms)
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field("sasl_password", &redacted(&self.sasl_password))
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("ssl_certificate_location", &self.ssl_certificate_location)
            .field("ssl_key_location", &self.ssl_key_location)
            .field("ssl_key_password", &redacted(&self.ssl_key_password))
            .field("ssl_verify_hostname", &self.ssl_verify_hostname)
            .finish()
    }
}

/// What a secret shows in Debug output: whether it is set, never its value.
fn redacted(secret: &str) -> &'static str {
    if secret.is_empty() {
        ""
    } else {
        "[redacted]"
    }
}

/// How clients reach the brokers: TLS or not, SASL or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum KafkaSecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl KafkaSecurityProtocol {
    /// The `security.protocol` value librdkafka takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

impl TryFrom<String> for KafkaSecurityProtocol {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.to_ascii_lowercase().as_str() {
            "plaintext" => Ok(Self::Plaintext),
            "ssl" => Ok(Self::Ssl),
            "sasl_plaintext" => Ok(Self::SaslPlaintext),
            "sasl_ssl" => Ok(Self::SaslSsl),
            _ => Err(format!(
                "kafka.security_protocol must be plaintext, ssl, sasl_plaintext or sasl_ssl, not {value:?}"
            )),
        }
    }
}

/// The SASL mechanisms librdkafka has built in (no Kerberos).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    /// The `sasl.mechanism` value librdkafka takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl TryFrom<String> for SaslMechanism {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        match value.to_ascii_uppercase().replace('_', "-").as_str() {
            "PLAIN" => Ok(Self::Plain),
            "SCRAM-SHA-256" => Ok(Self::ScramSha256),
            "SCRAM-SHA-512" => Ok(Self::ScramSha512),
            _ => Err(format!(
                "kafka.sasl_mechanism must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, not {value:?}"
            )),
        }
    }
}

/// ClickHouse over HTTP or HTTPS.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseSettings {
    /// `http://host:8123` or `https://host:8443`.
    pub url: String,
    pub database: String,
    pub user: String,
    /// Never logged.
    pub password: String,
    /// PEM file of the CA that signed the server's certificate (an `https` URL); the
    /// public web CAs are trusted besides it, so empty suits a managed service.
    pub ca_path: String,
    /// A cluster of the server's `remote_servers`: migrations create replicated tables
    /// on every server of it (`ON CLUSTER`) and `Distributed` tables for reads in the
    /// database `<database>_distributed`. Empty: one server, plain tables.
    pub cluster: String,
    /// One server URL per shard of `cluster`, comma-separated, in the order of the
    /// cluster's `remote_servers`, the first being `url`: the sink writes Kafka partition
    /// `p`'s rows to shard `p mod N`, and migrations run their `ALTER`s and backfills on
    /// each. Empty: the one shard of `url`.
    pub shards: String,
}

impl Default for ClickHouseSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            database: "traffsure".into(),
            user: "default".into(),
            password: String::new(),
            ca_path: String::new(),
            cluster: String::new(),
            shards: String::new(),
        }
    }
}

/// The password prints as `[redacted]`.
impl std::fmt::Debug for ClickHouseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseSettings")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &redacted(&self.password))
            .field("ca_path", &self.ca_path)
            .field("cluster", &self.cluster)
            .field("shards", &self.shards)
            .finish()
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn secret_file(name: &str, content: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("traffsure-config-{}-{name}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn a_file_variable_gives_the_setting_less_one_trailing_newline() {
        let keys = secret_file("keys", "1:aaaaaaaaaaaaaaaaaaaa\n\n");
        let password = secret_file("password", "s3cret\r\n");
        let env = environment(vars(&[
            ("TRAFFSURE__CLICK_HASH__KEYS_FILE", keys.to_str().unwrap()),
            (
                "TRAFFSURE__ADMIN__PASSWORD_FILE",
                password.to_str().unwrap(),
            ),
            ("TRAFFSURE__HTTP__BIND", "0.0.0.0:8080"),
            ("HOME", "/root"),
        ]))
        .unwrap();
        assert_eq!(
            env["TRAFFSURE__CLICK_HASH__KEYS"],
            "1:aaaaaaaaaaaaaaaaaaaa\n"
        );
        assert_eq!(env["TRAFFSURE__ADMIN__PASSWORD"], "s3cret");
        assert_eq!(env["TRAFFSURE__HTTP__BIND"], "0.0.0.0:8080");
        assert_eq!(env.len(), 3, "{env:?}");
        std::fs::remove_file(keys).unwrap();
        std::fs::remove_file(password).unwrap();
    }

    #[test]
    fn both_the_setting_and_its_file_is_an_error_naming_the_variable() {
        let file = secret_file("both", "from-file");
        let err = environment(vars(&[
            ("TRAFFSURE__API_KEYS", "from-env-from-env-from-env"),
            ("TRAFFSURE__API_KEYS_FILE", file.to_str().unwrap()),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("TRAFFSURE__API_KEYS_FILE"), "{err}");
        assert!(
            !err.contains("from-env") && !err.contains("from-file"),
            "{err}"
        );
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn an_unreadable_file_is_an_error_naming_the_path() {
        let err = environment(vars(&[(
            "TRAFFSURE__KAFKA__SASL_PASSWORD_FILE",
            "/nonexistent/traffsure/secret",
        )]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/traffsure/secret"), "{err}");
        assert!(
            err.contains("TRAFFSURE__KAFKA__SASL_PASSWORD_FILE"),
            "{err}"
        );
    }

    #[test]
    fn any_setting_reads_from_a_file() {
        #[derive(Debug, Deserialize, Default)]
        #[serde(default)]
        struct Settings {
            clickhouse: ClickHouseSettings,
        }
        let password = secret_file("clickhouse", "ch-password\n");
        let env = environment(vars(&[(
            "TRAFFSURE__CLICKHOUSE__PASSWORD_FILE",
            password.to_str().unwrap(),
        )]))
        .unwrap();
        let settings: Settings = config::Config::builder()
            .add_source(
                config::Environment::with_prefix("TRAFFSURE")
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(env)),
            )
            .build()
            .and_then(|c| c.try_deserialize())
            .unwrap();
        assert_eq!(settings.clickhouse.password, "ch-password");
        std::fs::remove_file(password).unwrap();
    }

    #[test]
    fn security_protocol_reads_either_case_and_names_the_setting() {
        for (text, protocol) in [
            ("plaintext", KafkaSecurityProtocol::Plaintext),
            ("SSL", KafkaSecurityProtocol::Ssl),
            ("sasl_plaintext", KafkaSecurityProtocol::SaslPlaintext),
            ("SASL_SSL", KafkaSecurityProtocol::SaslSsl),
        ] {
            assert_eq!(
                KafkaSecurityProtocol::try_from(text.to_string()),
                Ok(protocol)
            );
        }
        let error = KafkaSecurityProtocol::try_from("tls".to_string()).expect_err("not a protocol");
        assert!(error.contains("kafka.security_protocol"), "{error}");
        assert!(KafkaSecurityProtocol::SaslSsl.uses_tls());
        assert!(KafkaSecurityProtocol::SaslSsl.uses_sasl());
        assert!(!KafkaSecurityProtocol::Ssl.uses_sasl());
        assert!(!KafkaSecurityProtocol::SaslPlaintext.uses_tls());
    }

    #[test]
    fn sasl_mechanism_takes_the_kafka_spelling() {
        for (text, mechanism) in [
            ("PLAIN", SaslMechanism::Plain),
            ("scram-sha-256", SaslMechanism::ScramSha256),
            ("SCRAM_SHA_512", SaslMechanism::ScramSha512),
        ] {
            assert_eq!(SaslMechanism::try_from(text.to_string()), Ok(mechanism));
        }
        assert!(SaslMechanism::try_from("GSSAPI".to_string()).is_err());
    }

    #[test]
    fn debug_output_never_shows_a_password() {
        let kafka = KafkaSettings {
            sasl_username: "tracker".into(),
            sasl_password: "kafka-secret-value".into(),
            ssl_key_password: "key-secret-value".into(),
            ..KafkaSettings::default()
        };
        let clickhouse = ClickHouseSettings {
            password: "clickhouse-secret-value".into(),
            ..ClickHouseSettings::default()
        };
        let printed = format!("{kafka:?} {clickhouse:?} {kafka:#?}");
        assert!(!printed.contains("secret-value"), "{printed}");
        assert!(printed.contains("tracker") && printed.contains("[redacted]"));
    }
}

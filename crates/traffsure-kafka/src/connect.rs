//! How every client reaches the brokers: the security settings each producer, consumer and
//! admin client gets, and the check at start that tells a wrong password or an untrusted
//! certificate (which librdkafka would retry forever) from a broker that is just slow.
//!
//! What a service does with a broker that does not answer at all stays with the caller.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use traffsure_config::KafkaSettings;

/// How long the start check waits for the brokers to answer before leaving the outcome
/// to the caller's own requests.
const CHECK_WINDOW: Duration = Duration::from_secs(15);

/// Why a client could not use the brokers.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The brokers refused the SASL credentials.
    #[error("kafka authentication failed: {0}")]
    Authentication(String),
    /// The TLS handshake failed: an untrusted or mismatched certificate, either side.
    #[error("kafka tls: {0}")]
    Tls(String),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// Sets `security.protocol` and, as the protocol needs them, the SASL and TLS properties.
pub fn apply_security(config: &mut ClientConfig, settings: &KafkaSettings) {
    let protocol = settings.security_protocol;
    config.set("security.protocol", protocol.as_str());
    if protocol.uses_sasl() {
        config
            .set("sasl.mechanism", settings.sasl_mechanism.as_str())
            .set("sasl.username", &settings.sasl_username)
            .set("sasl.password", &settings.sasl_password);
    }
    if protocol.uses_tls() {
        let optional = [
            ("ssl.ca.location", &settings.ssl_ca_location),
            (
                "ssl.certificate.location",
                &settings.ssl_certificate_location,
            ),
            ("ssl.key.location", &settings.ssl_key_location),
            ("ssl.key.password", &settings.ssl_key_password),
        ];
        for (property, value) in optional {
            if !value.is_empty() {
                config.set(property, value);
            }
        }
        let identification = if settings.ssl_verify_hostname {
            "https"
        } else {
            "none"
        };
        config.set("ssl.endpoint.identification.algorithm", identification);
    }
}

/// Asks the brokers for metadata until they answer, a definite authentication or TLS
/// failure is reported, or [`CHECK_WINDOW`] passes; only the failure is an error, since a
/// broker that is merely unreachable is the caller's to wait for or give up on.
pub async fn check_brokers(settings: &KafkaSettings) -> Result<(), ConnectError> {
    let config = crate::client_config(settings);
    tokio::task::spawn_blocking(move || check_blocking(&config))
        .await
        .map_err(|_| KafkaError::Canceled)?
}

fn check_blocking(config: &ClientConfig) -> Result<(), ConnectError> {
    let consumer: BaseConsumer<FailureWatch> =
        config.create_with_context(FailureWatch::default())?;
    let deadline = Instant::now() + CHECK_WINDOW;
    loop {
        let answered = consumer
            .client()
            .fetch_metadata(None, Duration::from_millis(500));
        if answered.is_ok() {
            return Ok(());
        }
        // Errors reach the context only when the client's queue is served.
        if let Some(Err(error)) = consumer.poll(Duration::ZERO) {
            tracing::debug!(%error, "kafka check poll");
        }
        if let Some(failure) = consumer.client().context().failure() {
            return Err(failure);
        }
        if Instant::now() > deadline {
            tracing::warn!(
                brokers = config.get("bootstrap.servers"),
                "kafka not answering yet"
            );
            return Ok(());
        }
    }
}

/// Keeps the first authentication or TLS failure librdkafka reports.
#[derive(Default)]
struct FailureWatch {
    failure: Mutex<Option<(RDKafkaErrorCode, String)>>,
}

impl FailureWatch {
    fn failure(&self) -> Option<ConnectError> {
        let failure = self.failure.lock().ok()?.clone()?;
        Some(classify(failure.0, failure.1))
    }
}

impl ClientContext for FailureWatch {
    fn error(&self, error: KafkaError, reason: &str) {
        let Some(code) = error.rdkafka_error_code() else {
            return;
        };
        if is_definite(code) {
            if let Ok(mut failure) = self.failure.lock() {
                if failure.is_none() {
                    *failure = Some((code, reason.to_string()));
                }
            }
        }
    }
}

impl ConsumerContext for FailureWatch {}

/// Whether librdkafka's error code is one that retrying cannot mend.
fn is_definite(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::SSL
    )
}

fn classify(code: RDKafkaErrorCode, reason: String) -> ConnectError {
    match code {
        RDKafkaErrorCode::SSL => ConnectError::Tls(reason),
        // librdkafka reports a handshake the broker cut short (our certificate refused)
        // as an authentication error whose text names SSL.
        _ if reason.contains("SSL handshake") => ConnectError::Tls(reason),
        _ => ConnectError::Authentication(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use traffsure_config::{KafkaSecurityProtocol, SaslMechanism};

    fn property(config: &ClientConfig, key: &str) -> Option<String> {
        config.get(key).map(str::to_string)
    }

    #[test]
    fn plaintext_sets_no_sasl_or_tls_property() {
        let config = crate::client_config(&KafkaSettings::default());
        assert_eq!(
            property(&config, "security.protocol").as_deref(),
            Some("plaintext")
        );
        for key in ["sasl.mechanism", "sasl.password", "ssl.ca.location"] {
            assert_eq!(property(&config, key), None, "{key}");
        }
    }

    #[test]
    fn sasl_ssl_sets_credentials_files_and_hostname_check() {
        let settings = KafkaSettings {
            security_protocol: KafkaSecurityProtocol::SaslSsl,
            sasl_mechanism: SaslMechanism::ScramSha512,
            sasl_username: "tracker".into(),
            sasl_password: "secret".into(),
            ssl_ca_location: "/etc/traffsure/ca.pem".into(),
            ssl_certificate_location: "/etc/traffsure/client.pem".into(),
            ssl_key_location: "/etc/traffsure/client.key".into(),
            ssl_verify_hostname: false,
            ..KafkaSettings::default()
        };
        for config in [
            crate::client_config(&settings),
            crate::producer_config(&settings),
            crate::group_consumer_config(&settings, "group"),
        ] {
            let expected = [
                ("security.protocol", "sasl_ssl"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.username", "tracker"),
                ("sasl.password", "secret"),
                ("ssl.ca.location", "/etc/traffsure/ca.pem"),
                ("ssl.certificate.location", "/etc/traffsure/client.pem"),
                ("ssl.key.location", "/etc/traffsure/client.key"),
                ("ssl.endpoint.identification.algorithm", "none"),
            ];
            for (key, value) in expected {
                assert_eq!(property(&config, key).as_deref(), Some(value), "{key}");
            }
            assert_eq!(property(&config, "ssl.key.password"), None);
        }
    }

    #[test]
    fn ssl_alone_sends_no_sasl_credentials() {
        let settings = KafkaSettings {
            security_protocol: KafkaSecurityProtocol::Ssl,
            sasl_password: "unused".into(),
            ..KafkaSettings::default()
        };
        let config = crate::client_config(&settings);
        assert_eq!(property(&config, "sasl.password"), None);
        assert_eq!(
            property(&config, "ssl.endpoint.identification.algorithm").as_deref(),
            Some("https")
        );
    }

    #[test]
    fn failures_name_their_cause() {
        let tls = classify(RDKafkaErrorCode::SSL, "certificate verify failed".into());
        assert_eq!(tls.to_string(), "kafka tls: certificate verify failed");
        let auth = classify(
            RDKafkaErrorCode::Authentication,
            "invalid credentials".into(),
        );
        assert_eq!(
            auth.to_string(),
            "kafka authentication failed: invalid credentials"
        );
        assert!(!is_definite(RDKafkaErrorCode::AllBrokersDown));
        assert!(!is_definite(RDKafkaErrorCode::BrokerTransportFailure));
    }
}

//! The secured side of the harness: TLS material made by `deploy/local/certs.sh`, and the
//! client settings of every secured private broker or ClickHouse a test started, found by
//! address. The services a [`crate::Stack`] starts and the harness's own Kafka clients
//! (topic readers, producers) look their address up here, so a test that points the stack
//! at a secured listener needs no other wiring.

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{bail, Context};
use traffsure_config::{ClickHouseSettings, KafkaSettings};

use crate::workspace_dir;

static KAFKA: Mutex<Vec<KafkaSettings>> = Mutex::new(Vec::new());
static CLICKHOUSE: Mutex<Vec<ClickHouseSettings>> = Mutex::new(Vec::new());

/// A directory of PEM files: a CA, a server certificate for 127.0.0.1 and localhost, a
/// client certificate, and an unrelated CA (see `deploy/local/certs.sh`).
pub struct Certificates {
    pub dir: PathBuf,
}

impl Certificates {
    /// Makes a fresh set under `target/secured-certs/`.
    pub fn make() -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = workspace_dir()
            .join("target")
            .join("secured-certs")
            .join(&id[..10]);
        let output = std::process::Command::new("bash")
            .arg(workspace_dir().join("deploy/local/certs.sh"))
            .arg(&dir)
            .output()
            .context("run deploy/local/certs.sh (is openssl installed?)")?;
        if !output.status.success() {
            bail!(
                "deploy/local/certs.sh failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(Self { dir })
    }

    /// The path of one of the files, as a setting takes it.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn register_kafka(settings: KafkaSettings) {
    if let Ok(mut known) = KAFKA.lock() {
        known.push(settings);
    }
}

pub(crate) fn register_clickhouse(settings: ClickHouseSettings) {
    if let Ok(mut known) = CLICKHOUSE.lock() {
        known.push(settings);
    }
}

/// The client settings for the brokers at `brokers`: a secured listener's own, or plain
/// ones.
pub fn kafka_settings(brokers: &str) -> KafkaSettings {
    KAFKA
        .lock()
        .ok()
        .and_then(|known| known.iter().find(|s| s.brokers == brokers).cloned())
        .unwrap_or_else(|| KafkaSettings {
            brokers: brokers.to_string(),
            ..KafkaSettings::default()
        })
}

/// The settings of a secured ClickHouse at `url`, if a test started one there.
pub fn clickhouse_settings(url: &str) -> Option<ClickHouseSettings> {
    CLICKHOUSE
        .lock()
        .ok()
        .and_then(|known| known.iter().find(|s| s.url == url).cloned())
}

/// The environment that gives a service `kafka`'s and `clickhouse`'s security settings,
/// as an operator would write it.
pub fn security_env(
    kafka: &KafkaSettings,
    clickhouse: Option<&ClickHouseSettings>,
) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "KAFKA__SECURITY_PROTOCOL",
            kafka.security_protocol.as_str().to_string(),
        ),
        (
            "KAFKA__SASL_MECHANISM",
            kafka.sasl_mechanism.as_str().to_string(),
        ),
        ("KAFKA__SASL_USERNAME", kafka.sasl_username.clone()),
        ("KAFKA__SASL_PASSWORD", kafka.sasl_password.clone()),
        ("KAFKA__SSL_CA_LOCATION", kafka.ssl_ca_location.clone()),
        (
            "KAFKA__SSL_CERTIFICATE_LOCATION",
            kafka.ssl_certificate_location.clone(),
        ),
        ("KAFKA__SSL_KEY_LOCATION", kafka.ssl_key_location.clone()),
        ("KAFKA__SSL_KEY_PASSWORD", kafka.ssl_key_password.clone()),
        (
            "KAFKA__SSL_VERIFY_HOSTNAME",
            kafka.ssl_verify_hostname.to_string(),
        ),
    ];
    if let Some(clickhouse) = clickhouse {
        env.push(("CLICKHOUSE__USER", clickhouse.user.clone()));
        env.push(("CLICKHOUSE__PASSWORD", clickhouse.password.clone()));
        env.push(("CLICKHOUSE__CA_PATH", clickhouse.ca_path.clone()));
    }
    env.into_iter()
        .map(|(key, value)| (format!("TRAFFSURE__{key}"), value))
        .collect()
}

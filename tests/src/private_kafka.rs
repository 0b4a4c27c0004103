//! A private single-node Kafka (KRaft, broker and controller in one JVM) for tests that
//! must take the broker away, or that need a secured listener: it runs from the jars
//! `make test` installed in `.local/kafka/libs`, on free loopback ports, with its data
//! under `target/`, so the shared broker is never touched.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};
use traffsure_config::{KafkaSecurityProtocol, KafkaSettings, SaslMechanism};

use crate::secured::Certificates;
use crate::{free_port, workspace_dir};

/// The SCRAM user every secured private broker knows.
pub const KAFKA_USER: &str = "traffsure";

pub struct PrivateKafka {
    pub port: u16,
    /// The client settings of the SASL_SSL listener, when the broker has one.
    pub secured: Option<KafkaSettings>,
    dir: PathBuf,
    props: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

fn libs_classpath() -> anyhow::Result<String> {
    let libs = workspace_dir().join(".local").join("kafka").join("libs");
    if !libs.is_dir() {
        bail!(
            "{} is missing: run deploy/local/install.sh (make test does)",
            libs.display()
        );
    }
    Ok(format!("{}/*", libs.display()))
}

impl PrivateKafka {
    /// Formats fresh storage and starts the broker; returns once it accepts clients.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(None).await
    }

    /// Starts a broker with a second listener on SASL_SSL beside the plain one: TLS with
    /// `certificates`' server certificate, client certificates required (mTLS), and SCRAM
    /// (SHA-256 and SHA-512) with a fresh password for [`KAFKA_USER`], created by Kafka's
    /// storage tool. Harness clients given its address use that listener's settings.
    pub async fn start_secured(certificates: &Certificates) -> anyhow::Result<Self> {
        Self::start_with(Some(certificates)).await
    }

    async fn start_with(certificates: Option<&Certificates>) -> anyhow::Result<Self> {
        let port = free_port()?;
        let controller_port = free_port()?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = workspace_dir()
            .join("target")
            .join("private-kafka")
            .join(&id[..10]);
        std::fs::create_dir_all(dir.join("data"))?;
        let props = dir.join("server.properties");
        let mut listeners =
            format!("PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}");
        let mut protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT".to_string();
        let mut secured_lines = String::new();
        let mut secured = None;
        let mut scram_arguments = Vec::new();
        if let Some(certificates) = certificates {
            let sasl_port = free_port()?;
            listeners.push_str(&format!(",SASL_SSL://127.0.0.1:{sasl_port}"));
            protocols.push_str(",SASL_SSL:SASL_SSL");
            secured_lines = sasl_ssl_listener(certificates);
            let password = uuid::Uuid::new_v4().simple().to_string();
            for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
                scram_arguments.push("--add-scram".to_string());
                scram_arguments.push(format!(
                    "{mechanism}=[name={KAFKA_USER},password={password}]"
                ));
            }
            secured = Some(KafkaSettings {
                brokers: format!("127.0.0.1:{sasl_port}"),
                security_protocol: KafkaSecurityProtocol::SaslSsl,
                sasl_mechanism: SaslMechanism::ScramSha512,
                sasl_username: KAFKA_USER.into(),
                sasl_password: password,
                ssl_ca_location: certificates.path("ca.pem"),
                ssl_certificate_location: certificates.path("client.pem"),
                ssl_key_location: certificates.path("client.key"),
                ..KafkaSettings::default()
            });
        }
        std::fs::write(
            &props,
            format!(
                "process.roles=broker,controller\n\
                 node.id=1\n\
                 controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}\n\
                 listeners={listeners}\n\
                 advertised.listeners={listeners}\n\
                 inter.broker.listener.name=PLAINTEXT\n\
                 controller.listener.names=CONTROLLER\n\
                 listener.security.protocol.map={protocols}\n\
                 {secured_lines}\
                 num.network.threads=1\n\
                 num.io.threads=2\n\
                 log.dirs={}\n\
                 offsets.topic.replication.factor=1\n\
                 transaction.state.log.replication.factor=1\n\
                 transaction.state.log.min.isr=1\n\
                 share.coordinator.state.topic.replication.factor=1\n\
                 share.coordinator.state.topic.min.isr=1\n\
                 default.replication.factor=1\n\
                 min.insync.replicas=1\n\
                 auto.create.topics.enable=false\n\
                 group.initial.rebalance.delay.ms=0\n",
                dir.join("data").display()
            ),
        )?;
        let log = dir.join("kafka.log");
        // A cluster id is 16 bytes in unpadded base64url; any fixed-shape value will do.
        let cluster_id = &uuid::Uuid::new_v4().simple().to_string()[..22];
        let cluster_id = cluster_id.replace(|c: char| !c.is_ascii_alphanumeric(), "A");
        let status = Command::new("java")
            .arg("-cp")
            .arg(libs_classpath()?)
            .arg(log4j_option())
            .args(["kafka.tools.StorageTool", "format", "--standalone", "-t"])
            .arg(&cluster_id)
            .arg("-c")
            .arg(&props)
            .args(&scram_arguments)
            .stdout(Stdio::from(std::fs::File::create(&log)?))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log)?,
            ))
            .status()
            .await
            .context("run the Kafka storage tool (is Java 17 installed?)")?;
        if !status.success() {
            bail!("kafka storage format failed:\n{}", crate::tail(&log));
        }
        let mut kafka = Self {
            port,
            secured,
            dir,
            props,
            log,
            child: None,
        };
        kafka.resume().await?;
        if let Some(settings) = &kafka.secured {
            crate::secured::register_kafka(settings.clone());
        }
        Ok(kafka)
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The SASL_SSL listener's address (empty when the broker has none).
    pub fn secured_brokers(&self) -> String {
        self.secured
            .as_ref()
            .map(|s| s.brokers.clone())
            .unwrap_or_default()
    }

    /// Starts the broker again on the same ports and data (after [`Self::stop`]).
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let offset = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let out = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.log)?;
        let child = Command::new("java")
            .args(["-Xms128m", "-Xmx512m", "-XX:+UseSerialGC"])
            .arg("-Djava.awt.headless=true")
            .arg(log4j_option())
            .arg("-cp")
            .arg(libs_classpath()?)
            .arg("kafka.Kafka")
            .arg(&self.props)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .context("start the private Kafka broker")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(150);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "private kafka exited with {status}:\n{}",
                        crate::tail(&self.log)
                    );
                }
            }
            let started = std::fs::read(&self.log)
                .map(|bytes| {
                    String::from_utf8_lossy(&bytes[(offset as usize).min(bytes.len())..])
                        .contains("Kafka Server started")
                })
                .unwrap_or(false);
            if started && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "private kafka not ready after 150 s:\n{}",
                    crate::tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the broker (SIGTERM, then SIGKILL after 60 s). Clients lose their
    /// connections at once either way; a clean stop keeps the single node's metadata log
    /// whole, so it starts again quickly even on a loaded machine.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status()?;
            }
            if tokio::time::timeout(Duration::from_secs(60), child.wait())
                .await
                .is_err()
            {
                child.kill().await?;
            }
        }
        Ok(())
    }
}

/// The broker properties of a SASL_SSL listener named `SASL_SSL`: SCRAM logins, the
/// server certificate as a PEM keystore, and client certificates signed by the local CA
/// required.
fn sasl_ssl_listener(certificates: &Certificates) -> String {
    let scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;";
    format!(
        "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512\n\
         listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram}\n\
         listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram}\n\
         listener.name.sasl_ssl.ssl.keystore.type=PEM\n\
         listener.name.sasl_ssl.ssl.keystore.location={}\n\
         listener.name.sasl_ssl.ssl.truststore.type=PEM\n\
         listener.name.sasl_ssl.ssl.truststore.location={}\n\
         listener.name.sasl_ssl.ssl.client.auth=required\n",
        certificates.path("server-keystore.pem"),
        certificates.path("ca.pem"),
    )
}

fn log4j_option() -> String {
    format!(
        "-Dlog4j2.configurationFile={}",
        workspace_dir()
            .join("deploy/local/kafka/log4j2.xml")
            .display()
    )
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
    }
}

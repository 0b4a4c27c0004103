//! The end-to-end harness: starts the service binaries as processes against the real
//! Kafka and ClickHouse (`make test` brings them up), each test with its own topic
//! prefix, consumer groups and ClickHouse database, and stops them when dropped.
//!
//! Binaries come from `target/debug` (or `TRAFFSURE_BIN_DIR`); Kafka and ClickHouse
//! from `TRAFFSURE_TEST_KAFKA` and `TRAFFSURE_TEST_CLICKHOUSE`, loopback by default.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

pub const SERVICES: &[&str] = &[
    "sink",
    "conversion-attribution",
    "click-ingest",
    "postback-ingest",
    "reporting-api",
];

/// The click hash secret every test stack signs with.
pub const CLICK_HASH_KEYS: &str = "1:end-to-end-test-secret-0001";

pub fn kafka_brokers() -> String {
    std::env::var("TRAFFSURE_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn clickhouse_url() -> String {
    std::env::var("TRAFFSURE_TEST_CLICKHOUSE").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

fn workspace_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TRAFFSURE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_dir().join("target"));
    target.join("debug")
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// One service process and where it listens.
pub struct Service {
    pub name: &'static str,
    pub base_url: String,
    pub log: PathBuf,
    child: Child,
}

/// A whole TraffSure stack for one test.
pub struct Stack {
    pub id: String,
    pub topic_prefix: String,
    pub database: String,
    pub services: BTreeMap<&'static str, Service>,
    pub http: reqwest::Client,
}

impl Stack {
    /// Starts every service and waits until each reports ready.
    pub async fn start() -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let topic_prefix = format!("test-{id}.");
        let database = format!("test_{id}");
        let log_dir = workspace_dir().join("target").join("test-logs").join(&id);
        std::fs::create_dir_all(&log_dir)?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut stack = Self {
            id,
            topic_prefix,
            database,
            services: BTreeMap::new(),
            http,
        };
        for name in SERVICES {
            let port = free_port()?;
            let log = log_dir.join(format!("{name}.log"));
            let child = stack.spawn(name, port, &log)?;
            stack.services.insert(
                name,
                Service {
                    name,
                    base_url: format!("http://127.0.0.1:{port}"),
                    log,
                    child,
                },
            );
        }
        for name in SERVICES {
            stack.wait_ready(name).await?;
        }
        Ok(stack)
    }

    fn spawn(&self, name: &str, port: u16, log: &PathBuf) -> anyhow::Result<Child> {
        let binary = bin_dir().join(name);
        if !binary.exists() {
            bail!(
                "{} is missing: run `cargo build --workspace` first",
                binary.display()
            );
        }
        let out = std::fs::File::create(log)?;
        let mut command = Command::new(&binary);
        command
            .current_dir(workspace_dir())
            .env("TRAFFSURE__HTTP__BIND", format!("127.0.0.1:{port}"))
            .env("TRAFFSURE__KAFKA__BROKERS", kafka_brokers())
            .env("TRAFFSURE__KAFKA__TOPIC_PREFIX", &self.topic_prefix)
            .env("TRAFFSURE__CLICKHOUSE__URL", clickhouse_url())
            .env("TRAFFSURE__CLICKHOUSE__DATABASE", &self.database)
            .env("TRAFFSURE__CLICK_HASH__KEYS", CLICK_HASH_KEYS)
            .env("TRAFFSURE__CLICK_HASH__ACTIVE_KEY", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        match name {
            "sink" => {
                command.env("TRAFFSURE__GROUP_ID", format!("sink-{}", self.id));
                command.env("TRAFFSURE__BATCH_INTERVAL_MS", "200");
            }
            "conversion-attribution" => {
                command.env("TRAFFSURE__GROUP_ID", format!("attribution-{}", self.id));
            }
            _ => {}
        }
        command
            .spawn()
            .with_context(|| format!("start {}", binary.display()))
    }

    pub fn url(&self, service: &str, path: &str) -> String {
        format!("{}{path}", self.services[service].base_url)
    }

    async fn wait_ready(&mut self, name: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let url = self.url(name, "/readyz");
        loop {
            let service = self.services.get_mut(name).context("unknown service")?;
            if let Some(status) = service.child.try_wait()? {
                bail!(
                    "{name} exited with {status} during start:\n{}",
                    tail(&service.log)
                );
            }
            if let Ok(response) = self.http.get(&url).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} not ready after 90 s:\n{}",
                    tail(&self.services[name].log)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs a query in this test's ClickHouse database and returns the text answer.
    pub async fn clickhouse(&self, sql: &str) -> anyhow::Result<String> {
        let response = self
            .http
            .post(clickhouse_url())
            .query(&[("database", self.database.as_str())])
            .body(sql.to_string())
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("clickhouse answered {status}: {text}");
        }
        Ok(text.trim().to_string())
    }

    /// The last lines of every service log, for failure messages.
    pub fn logs(&self) -> String {
        self.services
            .values()
            .map(|s| format!("--- {} ---\n{}", s.name, tail(&s.log)))
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for service in self.services.values_mut() {
            let _ = service.child.start_kill();
        }
    }
}

fn tail(path: &PathBuf) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Polls `check` until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        if Instant::now() > deadline {
            bail!("condition not met within {timeout:?}; last error: {last_error:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

//! The end-to-end harness: starts the service binaries as processes against the real
//! Kafka and ClickHouse (`make test` brings them up), each test with its own topic
//! prefix, consumer groups and ClickHouse database, and stops them when dropped.
//!
//! Binaries come from `target/debug` (or `TRAFFSURE_BIN_DIR`); Kafka and ClickHouse
//! from `TRAFFSURE_TEST_KAFKA` and `TRAFFSURE_TEST_CLICKHOUSE`, loopback by default.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

pub mod browser;
pub mod chdb;
pub mod http1;
pub mod kafka_topic;
pub mod openapi;
pub mod private_clickhouse;
pub mod private_kafka;
pub mod produce;
pub mod secured;

pub const SERVICES: &[&str] = &[
    "sink",
    "conversion-attribution",
    "click-ingest",
    "postback-ingest",
    "postback-dispatcher",
    "reporting-api",
];

/// The click hash secret every test stack signs with.
pub const CLICK_HASH_KEYS: &str = "1:end-to-end-test-secret-0001";

/// The admin login and API key every test stack's reporting-api accepts.
pub const ADMIN_USERNAME: &str = "admin";
pub const ADMIN_PASSWORD: &str = "end-to-end-admin-password";
pub const API_KEY: &str = "end-to-end-test-api-key-0001";
/// The key every test stack's reporting-api instances sign session cookies with.
pub const SESSION_SIGNING_KEY: &str = "end-to-end-session-signing-key-0001";

pub fn kafka_brokers() -> String {
    std::env::var("TRAFFSURE_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn clickhouse_url() -> String {
    std::env::var("TRAFFSURE_TEST_CLICKHOUSE").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

fn workspace_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where the service binaries are.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TRAFFSURE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_dir().join("target"));
    target.join("debug")
}

/// Sends `visitors × clicks_each` clicks to `track` concurrently (each visitor one after
/// another), each of which must be answered 302; returns their click hashes and the
/// slowest redirect.
pub async fn send_clicks(
    stack: &Stack,
    track: &str,
    visitors: usize,
    clicks_each: usize,
) -> anyhow::Result<(Vec<String>, Duration)> {
    let track = std::sync::Arc::new(track.to_string());
    let mut tasks = Vec::new();
    for _ in 0..visitors {
        let http = stack.http.clone();
        let track = track.clone();
        tasks.push(tokio::spawn(async move {
            let mut hashes = Vec::new();
            let mut slowest = Duration::ZERO;
            for _ in 0..clicks_each {
                let started = Instant::now();
                let response = http.get(track.as_str()).send().await?;
                slowest = slowest.max(started.elapsed());
                anyhow::ensure!(response.status() == 302, "answered {}", response.status());
                let location = response.headers()["location"].to_str()?.to_string();
                hashes.push(click_hash_of(&location));
            }
            anyhow::Ok((hashes, slowest))
        }));
    }
    let mut hashes = Vec::new();
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let (h, s) = task.await??;
        hashes.extend(h);
        slowest = slowest.max(s);
    }
    Ok((hashes, slowest))
}

/// A data file installed by `deploy/local/install.sh` under `.local/geoip`, as a path
/// for a service setting; an error naming the install step when it is missing.
pub fn geoip_file(name: &str) -> anyhow::Result<String> {
    let path = workspace_dir().join(".local/geoip").join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: run deploy/local/install.sh",
        path.display()
    );
    Ok(path.display().to_string())
}

/// The click hash in a redirect's `Location`, from its `c=` parameter (as the test flows
/// write their destinations), or an empty string.
pub fn click_hash_of(location: &str) -> String {
    let query = location.split_once('?').map(|(_, q)| q).unwrap_or_default();
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("c="))
        .unwrap_or_default()
        .to_string()
}

/// The query parameters of a redirect's `Location`, decoded, by name (the last of a
/// repeated name).
pub fn query_of(location: &str) -> std::collections::HashMap<String, String> {
    let query = location.split_once('?').map(|(_, q)| q).unwrap_or_default();
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// A free loopback port for a service a test starts.
///
/// Ports come from 20000–31999, below the kernel's ephemeral range (32768 and up), so that
/// no outgoing connection of a test running beside this one holds the port by the time the
/// service binds it; and each one is reserved for a while by a marker file, so that two test
/// processes side by side (`tests/run.sh`'s lanes) do not both hand out the same free port
/// before either service binds it.
pub fn free_port() -> anyhow::Result<u16> {
    const FIRST: u16 = 20_000;
    const COUNT: u16 = 12_000;
    // A reservation only has to outlive a service's start: after that the bind test fails.
    const RESERVED_FOR: Duration = Duration::from_secs(120);
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("traffsure-test-ports");
    std::fs::create_dir_all(&dir)?;
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..2_000 {
        let random = u16::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..2].try_into()?);
        let port = FIRST + random % COUNT;
        if given.contains(&port) {
            continue;
        }
        let marker = dir.join(port.to_string());
        let reserved = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker);
        if let Err(error) = reserved {
            if error.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(error.into());
            }
            let stale = std::fs::metadata(&marker)
                .and_then(|m| m.modified())
                .map(|at| at.elapsed().unwrap_or_default() > RESERVED_FOR)
                .unwrap_or(false);
            if !stale {
                continue;
            }
            // An old reservation: take it over.
            std::fs::write(&marker, b"")?;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return Ok(port);
        }
    }
    bail!("no free loopback port in {FIRST}–{}", FIRST + COUNT - 1)
}

/// Serves an HTTP endpoint of the test itself (a postback receiver, an OTLP collector) on
/// a free loopback port, configured by `configure`; answers with the port.
pub fn serve_local<F>(configure: F) -> anyhow::Result<u16>
where
    F: Fn(&mut actix_web::web::ServiceConfig) + Send + Clone + 'static,
{
    let server =
        actix_web::HttpServer::new(move || actix_web::App::new().configure(configure.clone()))
            .workers(2)
            .disable_signals()
            .bind(("127.0.0.1", 0))?;
    let port = server.addrs()[0].port();
    tokio::spawn(server.run());
    Ok(port)
}

/// One request a [`record_requests`] endpoint got.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Names lowercase, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Every request a [`record_requests`] endpoint got, in order.
pub type Requests = std::sync::Arc<std::sync::Mutex<Vec<Recorded>>>;

/// A local endpoint standing in for a postback receiver: answers every request 200 with
/// `ok` and records it. Answers with its port and the record.
pub fn record_requests() -> anyhow::Result<(u16, Requests)> {
    use actix_web::{web, HttpRequest, HttpResponse};
    let requests = Requests::default();
    let state = web::Data::new(requests.clone());
    let port = serve_local(move |app| {
        app.app_data(state.clone()).default_service(web::to(
            |req: HttpRequest, body: web::Bytes, got: web::Data<Requests>| async move {
                let headers = req
                    .headers()
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                got.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Recorded {
                        method: req.method().to_string(),
                        path: req.path().to_string(),
                        query: req.query_string().to_string(),
                        headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                HttpResponse::Ok().body("ok")
            },
        ));
    })?;
    Ok((port, requests))
}

/// Every service, the dispatcher allowed to send to loopback addresses, and a
/// [`record_requests`] receiver for its outbound postbacks: the stack, the receiver's port
/// and what it got.
pub async fn stack_with_receiver() -> anyhow::Result<(Stack, u16, Requests)> {
    let (port, received) = record_requests()?;
    let stack = Stack::start_with(StackOptions::default().env(
        "postback-dispatcher",
        "TRAFFSURE__OUTBOUND__ALLOW_PRIVATE_TARGETS",
        "true",
    ))
    .await?;
    Ok((stack, port, received))
}

/// Waits until click-ingest knows the flow behind `track` (its tracking link redirects),
/// and answers that first click's hash.
pub async fn first_click(stack: &Stack, track: &str) -> anyhow::Result<String> {
    eventually(Duration::from_secs(15), || async {
        let response = stack.http.get(track).send().await?;
        Ok((response.status() == 302)
            .then(|| click_hash_of(response.headers()["location"].to_str().unwrap_or_default())))
    })
    .await
}

/// One service process and where it listens.
pub struct Service {
    pub name: &'static str,
    pub base_url: String,
    pub log: PathBuf,
    port: u16,
    child: Child,
}

/// What to start: a subset of the services, extra environment per service, and other
/// Kafka / ClickHouse addresses (a private broker for an outage test, say).
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub services: Vec<&'static str>,
    /// (service, variable, value); a service of `"*"` means every service.
    pub env: Vec<(&'static str, String, String)>,
    /// (service, variable): variables the harness sets that this test leaves unset.
    pub env_removed: Vec<(&'static str, String)>,
    pub kafka_brokers: String,
    pub clickhouse_url: String,
    /// (service, count): services run as several instances, named `<service>`,
    /// `<service>#2`, … (distinct ports, instance ids and local files, one consumer group).
    pub instances: Vec<(&'static str, usize)>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            services: SERVICES.to_vec(),
            env: Vec::new(),
            env_removed: Vec::new(),
            kafka_brokers: kafka_brokers(),
            clickhouse_url: clickhouse_url(),
            instances: Vec::new(),
        }
    }
}

impl StackOptions {
    pub fn services(mut self, services: &[&'static str]) -> Self {
        self.services = services.to_vec();
        self
    }

    pub fn env(mut self, service: &'static str, key: &str, value: impl Into<String>) -> Self {
        self.env.push((service, key.to_string(), value.into()));
        self
    }

    /// Leaves a variable the harness would set unset (to give it as `…_FILE` instead).
    pub fn env_remove(mut self, service: &'static str, key: &str) -> Self {
        self.env_removed.push((service, key.to_string()));
        self
    }

    /// Runs `count` instances of `service` (`"*"`: of every service).
    pub fn instances(mut self, service: &'static str, count: usize) -> Self {
        self.instances.push((service, count.max(1)));
        self
    }

    /// How many instances of `service` to run.
    pub fn instance_count(&self, service: &str) -> usize {
        self.instances
            .iter()
            .rev()
            .find(|(s, _)| *s == service || *s == "*")
            .map(|(_, n)| *n)
            .unwrap_or(1)
    }
}

/// The name of instance `n` (from 1) of `service`: the service's own name for the first.
pub fn instance_name(service: &'static str, n: usize) -> &'static str {
    if n <= 1 {
        return service;
    }
    // A handful per test, kept for the test's life.
    Box::leak(format!("{service}#{n}").into_boxed_str())
}

/// The service an instance name belongs to, and the instance number (from 1).
pub fn split_instance(name: &str) -> (&str, usize) {
    match name.split_once('#') {
        Some((service, n)) => (service, n.parse().unwrap_or(1)),
        None => (name, 1),
    }
}

/// A whole TraffSure stack for one test.
pub struct Stack {
    pub id: String,
    pub topic_prefix: String,
    pub database: String,
    pub services: BTreeMap<&'static str, Service>,
    pub http: reqwest::Client,
    pub options: StackOptions,
    pub log_dir: PathBuf,
}

impl Stack {
    /// Starts every service and waits until each reports ready.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(StackOptions::default()).await
    }

    /// Starts the chosen services with extra settings and waits until each is ready.
    pub async fn start_with(options: StackOptions) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let topic_prefix = format!("test-{id}.");
        let database = format!("test_{id}");
        let log_dir = workspace_dir().join("target").join("test-logs").join(&id);
        std::fs::create_dir_all(&log_dir)?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            // Below ClickHouse's keep-alive (3 s) and actix-web's (5 s): a pooled
            // connection is never reused just as the server closes it ("connection
            // closed before message completed").
            .pool_idle_timeout(Duration::from_secs(2))
            .build()?;
        let names: Vec<&'static str> = options
            .services
            .iter()
            .flat_map(|service| {
                (1..=options.instance_count(service)).map(|n| instance_name(service, n))
            })
            .collect();
        let mut stack = Self {
            id,
            topic_prefix,
            database,
            services: BTreeMap::new(),
            http,
            options,
            log_dir,
        };
        for name in &names {
            let port = free_port()?;
            let log = stack.log_dir.join(format!("{name}.log"));
            let child = stack.spawn(name, port, &log)?;
            stack.services.insert(
                name,
                Service {
                    name,
                    base_url: format!("http://127.0.0.1:{port}"),
                    log,
                    port,
                    child,
                },
            );
        }
        for name in &names {
            stack.wait_ready(name).await?;
        }
        Ok(stack)
    }

    /// Kills a service at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let service = self.services.get_mut(name).context("unknown service")?;
        service.child.kill().await?;
        Ok(())
    }

    /// Sends `signal` (a name `kill` knows: `STOP`, `CONT`, …) to a running service.
    pub fn signal(&self, name: &str, signal: &str) -> anyhow::Result<()> {
        let service = self.services.get(name).context("unknown service")?;
        let pid = service.child.id().context("the service has exited")?;
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{signal} {pid} ({name}): {status}");
        }
        Ok(())
    }

    /// Stops a service with SIGTERM and waits for it to exit (up to 30 s, then SIGKILL).
    pub async fn terminate(&mut self, name: &str) -> anyhow::Result<()> {
        let service = self.services.get_mut(name).context("unknown service")?;
        if let Some(pid) = service.child.id() {
            std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()?;
        }
        if tokio::time::timeout(Duration::from_secs(30), service.child.wait())
            .await
            .is_err()
        {
            service.child.kill().await?;
        }
        Ok(())
    }

    /// Fails when any service has exited since it was last started (a test's kills are
    /// followed by restarts, so every instance should be running at its end).
    pub fn all_running(&mut self) -> anyhow::Result<()> {
        let mut exited = Vec::new();
        for service in self.services.values_mut() {
            if let Some(status) = service.child.try_wait()? {
                exited.push(format!(
                    "{} exited with {status}:\n{}",
                    service.name,
                    tail(&service.log)
                ));
            }
        }
        exited.sort();
        anyhow::ensure!(exited.is_empty(), "{}", exited.join("\n"));
        Ok(())
    }

    /// The services that have exited (gone, or a zombie not yet reaped) with their logs'
    /// tails; none while every one runs. Unlike `all_running` it needs no `&mut`, so a
    /// wait can ask it as it polls (`eventually_running`).
    pub fn exited(&self) -> Option<String> {
        let mut exited: Vec<String> = self
            .services
            .values()
            .filter(|service| !process_runs(service.child.id()))
            .map(|service| format!("{} exited:\n{}", service.name, tail(&service.log)))
            .collect();
        exited.sort();
        (!exited.is_empty()).then(|| exited.join("\n"))
    }

    /// `eventually`, failing at once when a service has exited: what the wait is for
    /// will not come, and waiting out the timeout would only delay the cause.
    pub async fn eventually_running<T, F, Fut>(
        &self,
        timeout: Duration,
        check: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
    {
        eventually_unless(timeout, || self.exited(), check).await
    }

    /// Starts a stopped or killed service again on the same port, appending to its log,
    /// and waits until it is ready.
    pub async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let (port, log) = {
            let service = self.services.get_mut(name).context("unknown service")?;
            let _ = service.child.kill().await;
            (service.port, service.log.clone())
        };
        let child = self.spawn_appending(name, port, &log)?;
        self.services
            .get_mut(name)
            .context("unknown service")?
            .child = child;
        self.wait_ready(name).await
    }

    fn spawn_appending(&self, name: &str, port: u16, log: &PathBuf) -> anyhow::Result<Child> {
        let out = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(log)?;
        self.spawn_to(name, port, out)
    }

    fn spawn(&self, name: &str, port: u16, log: &PathBuf) -> anyhow::Result<Child> {
        self.spawn_to(name, port, std::fs::File::create(log)?)
    }

    fn spawn_to(&self, instance: &str, port: u16, out: std::fs::File) -> anyhow::Result<Child> {
        let (name, number) = split_instance(instance);
        let binary = bin_dir().join(name);
        if !binary.exists() {
            bail!(
                "{} is missing: run `cargo build --workspace` first",
                binary.display()
            );
        }
        let mut command = Command::new(&binary);
        command
            .current_dir(workspace_dir())
            .env("TRAFFSURE__HTTP__BIND", format!("127.0.0.1:{port}"))
            .env("TRAFFSURE__KAFKA__BROKERS", &self.options.kafka_brokers)
            .env("TRAFFSURE__KAFKA__TOPIC_PREFIX", &self.topic_prefix)
            .env("TRAFFSURE__CLICKHOUSE__URL", &self.options.clickhouse_url)
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
            "postback-dispatcher" => {
                command.env("TRAFFSURE__GROUP_ID", format!("dispatcher-{}", self.id));
            }
            "reporting-api" => {
                command.env("TRAFFSURE__ADMIN__USERNAME", ADMIN_USERNAME);
                command.env("TRAFFSURE__ADMIN__PASSWORD", ADMIN_PASSWORD);
                command.env("TRAFFSURE__API_KEYS", API_KEY);
                command.env("TRAFFSURE__SESSION__SIGNING_KEY", SESSION_SIGNING_KEY);
                // The links the panel shows point at this stack's edges.
                if let Some(edge) = self.services.get("click-ingest") {
                    command.env("TRAFFSURE__TRACKING_BASE_URL", &edge.base_url);
                }
                if let Some(edge) = self.services.get("postback-ingest") {
                    command.env("TRAFFSURE__POSTBACK_BASE_URL", &edge.base_url);
                }
                if let Some(dispatcher) = self.services.get("postback-dispatcher") {
                    command.env("TRAFFSURE__DISPATCHER_URL", &dispatcher.base_url);
                }
            }
            _ => {}
        }
        if number > 1 {
            // Later instances of a service keep their own files and identity.
            let own = |suffix: &str| {
                self.log_dir
                    .join(format!("{name}-{number}{suffix}"))
                    .display()
                    .to_string()
            };
            command.env("TRAFFSURE__INSTANCE_ID", (number - 1).to_string());
            command.env("TRAFFSURE__STATE_DIR", own("-state"));
            command.env("TRAFFSURE__SPILL__PATH", own(".spill"));
        }
        // A secured broker or ClickHouse: the services get its settings, as an operator's
        // environment would give them (the test's own env below may still override them).
        let kafka = secured::kafka_settings(&self.options.kafka_brokers);
        let clickhouse = secured::clickhouse_settings(&self.options.clickhouse_url);
        if kafka.security_protocol.uses_tls()
            || kafka.security_protocol.uses_sasl()
            || clickhouse.is_some()
        {
            command.envs(secured::security_env(&kafka, clickhouse.as_ref()));
        }
        for (service, key) in &self.options.env_removed {
            if *service == "*" || *service == name || *service == instance {
                command.env_remove(key);
            }
        }
        for (service, key, value) in &self.options.env {
            if *service == "*" || *service == name || *service == instance {
                command.env(key, value);
            }
        }
        command
            .spawn()
            .with_context(|| format!("start {}", binary.display()))
    }

    pub fn url(&self, service: &str, path: &str) -> String {
        format!("{}{path}", self.services[service].base_url)
    }

    /// The sum of every sample of `service`'s Prometheus metrics whose line starts with
    /// `name` (a metric name, or a name with some of its labels).
    pub async fn metric(&self, service: &str, name: &str) -> anyhow::Result<f64> {
        let text = self.metrics_text(service).await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// The whole `/metrics` answer of `service`.
    pub async fn metrics_text(&self, service: &str) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(self.url(service, "/metrics"))
            .send()
            .await?
            .text()
            .await?)
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

    /// A request to the reporting API (`path` starts with `/api/v1`), with whatever
    /// credentials the test stack uses. Its answer is checked against the OpenAPI
    /// document (`openapi::Contract`): an undocumented path or status, or a JSON body
    /// that breaks its schema, is an error of `send`.
    pub fn api(&self, method: reqwest::Method, path: &str) -> ApiRequest<'_> {
        self.api_at("reporting-api", method, path)
    }

    /// A request to one instance of the reporting API (such as `reporting-api#2`).
    pub fn api_at(&self, instance: &str, method: reqwest::Method, path: &str) -> ApiRequest<'_> {
        ApiRequest {
            stack: self,
            instance: instance.to_string(),
            inner: self
                .http
                .request(method, self.url(instance, path))
                .bearer_auth(API_KEY),
        }
    }

    /// The OpenAPI contract the reporting API serves, fetched once per test process.
    pub async fn api_contract(&self, instance: &str) -> anyhow::Result<Arc<openapi::Contract>> {
        static CONTRACT: tokio::sync::OnceCell<Arc<openapi::Contract>> =
            tokio::sync::OnceCell::const_new();
        CONTRACT
            .get_or_try_init(|| async {
                let url = self.url(instance, "/api/v1/openapi.json");
                let document: serde_json::Value = self
                    .http
                    .get(&url)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await
                    .with_context(|| format!("reading {url}"))?;
                Ok::<_, anyhow::Error>(Arc::new(openapi::Contract::new(document)?))
            })
            .await
            .cloned()
    }

    /// Reads an answer of the reporting API that a test got without `api` (with a session
    /// cookie, say) and checks it against the OpenAPI document, as `api` does.
    pub async fn checked(
        &self,
        method: reqwest::Method,
        response: reqwest::Response,
    ) -> Result<ApiResponse, ApiCallError> {
        let check = async {
            let path = response.url().path().to_string();
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?.to_vec();
            let content_type = headers
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            self.api_contract("reporting-api").await?.check(
                method.as_str(),
                &path,
                status.as_u16(),
                content_type,
                &body,
            )?;
            Ok::<_, anyhow::Error>(ApiResponse {
                status,
                headers,
                body,
            })
        };
        Ok(check.await?)
    }

    /// Sends a request to the reporting API and returns its status and JSON body.
    pub async fn api_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut request = self.api(method.clone(), path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let json = serde_json::from_str(&text)
            .with_context(|| format!("{method} {path} answered {status} with {text:?}"))?;
        Ok((status, json))
    }

    /// A request to the reporting API that must answer `want`; returns the JSON body.
    pub async fn api_expect(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        want: u16,
    ) -> anyhow::Result<serde_json::Value> {
        let (status, json) = self.api_call(method.clone(), path, body).await?;
        if status != want {
            bail!("{method} {path} answered {status}, not {want}: {json}");
        }
        Ok(json)
    }

    /// The reporting API's dashboard (`GET /api/v1/dashboard`) as JSON.
    pub async fn dashboard(&self) -> anyhow::Result<serde_json::Value> {
        self.get_json("/api/v1/dashboard").await
    }

    /// The dashboard in `midday_timezone()` (`midday_dashboard_path`).
    pub async fn dashboard_at_midday(&self) -> anyhow::Result<serde_json::Value> {
        self.get_json(&midday_dashboard_path()).await
    }

    async fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        Ok(self
            .api(reqwest::Method::GET, path)
            .send()
            .await?
            .json()
            .await?)
    }

    /// Creates a flow through the API and returns its JSON view.
    pub async fn create_flow(&self, spec: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let response = self
            .api(reqwest::Method::POST, "/api/v1/flows")
            .json(&spec)
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        if !status.is_success() {
            bail!("creating a flow answered {status}: {body}");
        }
        Ok(body)
    }

    /// Runs a query in this test's ClickHouse database and returns the text answer.
    pub async fn clickhouse(&self, sql: &str) -> anyhow::Result<String> {
        self.clickhouse_at(&self.options.clickhouse_url, sql).await
    }

    /// Runs a query in this test's database on the ClickHouse server at `url` (one
    /// replica of a cluster, say) and returns the text answer.
    pub async fn clickhouse_at(&self, url: &str, sql: &str) -> anyhow::Result<String> {
        let response = self
            .http
            .post(url)
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

    /// The last lines of every service's log, by service name, for failure messages.
    pub fn logs(&self) -> String {
        let mut services: Vec<_> = self.services.values().collect();
        services.sort_by_key(|s| s.name);
        services
            .iter()
            .map(|s| format!("--- {} ---\n{}\n", s.name, tail(&s.log)))
            .collect()
    }

    /// On a failed test, prints the error, the services' logs, and the error again: a
    /// reader of the output's start or of its end sees what failed.
    pub fn print_failure<T>(&self, result: &anyhow::Result<T>) {
        if let Err(error) = result {
            eprintln!(
                "test failed: {error:#}\n{}\ntest failed: {error:#}",
                self.logs()
            );
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for service in self.services.values_mut() {
            let _ = service.child.start_kill();
        }
        delete_topics(&self.topic_prefix);
    }
}

/// Deletes a finished stack's topics from the shared broker, so that a whole run does not
/// pile up partitions: each keeps files open in the broker, whose open-file limit a run of
/// every test would otherwise approach. Best effort and bounded in time; a private broker
/// (secured or cluster tests) has none of them.
fn delete_topics(prefix: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let brokers = kafka_brokers();
    let prefix = prefix.to_string();
    let _ = std::thread::spawn(move || {
        let mut config = rdkafka::ClientConfig::new();
        config.set("bootstrap.servers", &brokers);
        let Ok(consumer) = config.create::<BaseConsumer>() else {
            return;
        };
        let Ok(metadata) = consumer.fetch_metadata(None, Duration::from_secs(5)) else {
            return;
        };
        let topics: Vec<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name().to_string())
            .filter(|name| name.starts_with(&prefix))
            .collect();
        if topics.is_empty() {
            return;
        }
        let Ok(admin) = config.create::<AdminClient<DefaultClientContext>>() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
        let _ = runtime.block_on(admin.delete_topics(&names, &options));
    })
    .join();
}

fn tail(path: &PathBuf) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// How much longer than written a wait may take: `TRAFFSURE_TEST_TIMEOUT_SCALE` (default 1;
/// `tests/run.sh` sets 2, since its lanes share the machine). Only a failing wait lasts
/// longer; a condition met is met as soon as before.
/// Whether process `pid` runs: it exists and is not a zombie (exited, not yet reaped).
/// None: the child was reaped already.
fn process_runs(pid: Option<u32>) -> bool {
    let Some(pid) = pid else { return false };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) state …": the name may hold spaces and parentheses.
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

pub fn timeout_scale() -> f64 {
    std::env::var("TRAFFSURE_TEST_TIMEOUT_SCALE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 1.0)
        .unwrap_or(1.0)
}

/// Polls `check` until it returns `Some`, or fails after `timeout` (times the
/// [`timeout_scale`]).
pub async fn eventually<T, F, Fut>(timeout: Duration, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    eventually_unless(timeout, || None, check).await
}

/// `eventually`, failing at once with what `stop` answers when it answers something.
pub async fn eventually_unless<T, F, Fut>(
    timeout: Duration,
    stop: impl Fn() -> Option<String>,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let timeout = timeout.mul_f64(timeout_scale());
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        if let Some(reason) = stop() {
            bail!("stopped waiting: {reason}");
        }
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

/// Sends a request to the reporting API with `key` (or the stack's configured key, the bootstrap owner's);
/// answers the status and the body. Every answer is checked against the OpenAPI document.
pub async fn call_as(
    stack: &Stack,
    key: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let response = match key {
        Some(key) => {
            let mut request = stack
                .http
                .request(method.clone(), stack.url("reporting-api", path))
                .bearer_auth(key);
            if let Some(body) = &body {
                request = request.json(body);
            }
            stack.checked(method, request.send().await?).await?
        }
        None => {
            let mut request = stack.api(method, path);
            if let Some(body) = &body {
                request = request.json(body);
            }
            request.send().await?
        }
    };
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    ))
}

/// A request to the reporting API (as [`call_as`]) that must answer `want`.
pub async fn expect_as(
    stack: &Stack,
    key: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
    want: u16,
) -> anyhow::Result<serde_json::Value> {
    let (status, json) = call_as(stack, key, method.clone(), path, body).await?;
    anyhow::ensure!(
        status == want,
        "{method} {path} answered {status}, not {want}: {json}"
    );
    Ok(json)
}

/// A request to the reporting API (`Stack::api`): a `reqwest::RequestBuilder` whose answer
/// is checked against the OpenAPI document when it arrives.
pub struct ApiRequest<'a> {
    stack: &'a Stack,
    instance: String,
    inner: reqwest::RequestBuilder,
}

impl ApiRequest<'_> {
    pub fn json<T: serde::Serialize + ?Sized>(mut self, body: &T) -> Self {
        self.inner = self.inner.json(body);
        self
    }

    pub fn query<T: serde::Serialize + ?Sized>(mut self, query: &T) -> Self {
        self.inner = self.inner.query(query);
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.inner = self.inner.header(name, value);
        self
    }

    pub fn body(mut self, body: impl Into<reqwest::Body>) -> Self {
        self.inner = self.inner.body(body);
        self
    }

    /// Sends the request, reads the whole answer and checks it against the contract.
    pub async fn send(self) -> Result<ApiResponse, ApiCallError> {
        self.send_checked().await.map_err(ApiCallError::from)
    }

    async fn send_checked(self) -> anyhow::Result<ApiResponse> {
        let request = self.inner.build()?;
        let method = request.method().clone();
        let path = request.url().path().to_string();
        let response = self.stack.http.execute(request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?.to_vec();
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        self.stack.api_contract(&self.instance).await?.check(
            method.as_str(),
            &path,
            status.as_u16(),
            content_type,
            &body,
        )?;
        Ok(ApiResponse {
            status,
            headers,
            body,
        })
    }
}

/// Why a call through `Stack::api` failed: the request itself, the answer's check against
/// the OpenAPI document, or reading the answer as what the test expects.
#[derive(Debug)]
pub struct ApiCallError(String);

impl From<anyhow::Error> for ApiCallError {
    fn from(error: anyhow::Error) -> Self {
        Self(format!("{error:#}"))
    }
}

impl std::fmt::Display for ApiCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ApiCallError {}

/// An answer of the reporting API, read whole and checked against the OpenAPI document.
pub struct ApiResponse {
    status: reqwest::StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl ApiResponse {
    pub fn status(&self) -> reqwest::StatusCode {
        self.status
    }

    pub fn headers(&self) -> &reqwest::header::HeaderMap {
        &self.headers
    }

    pub async fn text(self) -> Result<String, ApiCallError> {
        String::from_utf8(self.body).map_err(|e| ApiCallError(e.to_string()))
    }

    pub async fn bytes(self) -> Result<Vec<u8>, ApiCallError> {
        Ok(self.body)
    }

    pub async fn json<T: serde::de::DeserializeOwned>(self) -> Result<T, ApiCallError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ApiCallError(format!(
                "an answer {} that is not the JSON expected ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            ))
        })
    }
}

/// The dashboard's path in `midday_timezone()`: its "today" holds what a test made, even
/// when the test runs across midnight UTC.
pub fn midday_dashboard_path() -> String {
    format!("/api/v1/dashboard?timezone={}", midday_timezone())
}

/// A fixed-offset time zone (`Etc/GMT…`, '+' escaped for a query string) in which it is
/// about noon now, so that "today" in it holds everything of the next ten hours and the
/// last few: dashboards checked by a test that started before midnight UTC.
pub fn midday_timezone() -> String {
    let hour = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / 3600
        % 24) as i64;
    // Local time is UTC + offset; Etc/GMT's sign is the other way round.
    let offset = 12 - hour;
    match offset {
        0 => "UTC".to_string(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT%2B{}", -o),
    }
}

#[cfg(test)]
mod tests {
    use super::process_runs;

    #[test]
    fn a_zombie_or_a_reaped_child_does_not_run() {
        assert!(process_runs(Some(std::process::id())));
        assert!(!process_runs(None));
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        // Exited and not reaped: a zombie until `wait`.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_runs(Some(pid)) {
            assert!(std::time::Instant::now() < deadline, "true still runs");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.wait().expect("reap");
        assert!(!process_runs(Some(pid)));
    }
}

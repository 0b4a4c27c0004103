//! Kafka down: postback-ingest answers 503 `not_durable` (so the advertiser retries) and
//! never a 200 it cannot keep; once the broker is back, postbacks are accepted again.
//! Runs its own single-node Kafka (from the jars `make test` installed in `.local/`), so
//! the shared broker is never touched.

mod postback_support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use postback_support::{click_hash, get, postback_log, postbacks};
use tokio::process::{Child, Command};
use traffsure_tests::{Stack, StackOptions};

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A private single-node KRaft Kafka with its data in a temporary directory.
struct PrivateKafka {
    dir: PathBuf,
    props: PathBuf,
    port: u16,
    child: Option<Child>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn java(libs: &Path) -> Command {
    let mut command = Command::new("java");
    command
        .arg("-Xms128m")
        .arg("-Xmx384m")
        .arg("-XX:+UseSerialGC")
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            repo().join("deploy/local/kafka/log4j2.xml").display()
        ))
        .arg("-cp")
        .arg(format!("{}/*", libs.display()));
    command
}

impl PrivateKafka {
    async fn format() -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4();
        let dir = std::env::temp_dir().join(format!("traffsure-kafka-{}", id.simple()));
        std::fs::create_dir_all(dir.join("data"))?;
        let (port, controller) = (free_port()?, free_port()?);
        let template =
            std::fs::read_to_string(repo().join("deploy/local/kafka/server.properties"))?;
        let props = template
            .replace(
                "@LOCAL@/kafka/data",
                &dir.join("data").display().to_string(),
            )
            .replace("127.0.0.1:9092", &format!("127.0.0.1:{port}"))
            .replace("127.0.0.1:9093", &format!("127.0.0.1:{controller}"));
        let props_path = dir.join("server.properties");
        std::fs::write(&props_path, props)?;
        // A cluster id as Kafka makes them: 16 random bytes, unpadded base64url.
        let cluster_id = data_encoding::BASE64URL_NOPAD
            .encode(id.as_bytes())
            .replace('-', "A");
        let status = java(&Self::libs())
            .arg("kafka.tools.StorageTool")
            .args(["format", "--standalone", "-t", &cluster_id, "-c"])
            .arg(&props_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await?;
        if !status.success() {
            bail!("kafka storage format failed: {status}");
        }
        Ok(Self {
            dir,
            props: props_path,
            port,
            child: None,
        })
    }

    fn libs() -> PathBuf {
        repo().join(".local/kafka/libs")
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        let log = self.dir.join("kafka.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let offset = out.metadata()?.len() as usize;
        let child = java(&Self::libs())
            .arg("kafka.Kafka")
            .arg(&self.props)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .context("start java")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = std::fs::read(&log).unwrap_or_default();
            if String::from_utf8_lossy(&text[offset.min(text.len())..])
                .contains("Kafka Server started")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "private kafka not started within 120 s, see {}",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// SIGKILL, as a crash or a lost machine.
    async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_down_answers_503_and_recovers() -> anyhow::Result<()> {
    if !PrivateKafka::libs().exists() {
        bail!("Kafka jars missing in .local/kafka/libs: run deploy/local/install.sh");
    }
    let mut kafka = PrivateKafka::format().await?;
    kafka.start().await?;
    let mut options = StackOptions::default().services(&["postback-ingest"]).env(
        "postback-ingest",
        "TRAFFSURE__KAFKA__MESSAGE_TIMEOUT_MS",
        "4000",
    );
    options.kafka_brokers = kafka.brokers();
    let stack = Stack::start_with(options).await?;
    let result = run(&stack, &mut kafka).await;
    if result.is_err() {
        eprintln!("{}", stack.logs());
    }
    result
}

async fn run(stack: &Stack, kafka: &mut PrivateKafka) -> anyhow::Result<()> {
    let before = get(
        stack,
        &format!("/postback?click={}&uid=before", click_hash(5, 1)),
    )
    .await?;
    assert_eq!(
        (before.status, before.code.as_str()),
        (200, "accepted"),
        "{before:?}"
    );

    kafka.kill().await?;
    let started = Instant::now();
    let down = get(
        stack,
        &format!("/postback?click={}&uid=down", click_hash(5, 2)),
    )
    .await?;
    assert_eq!(
        (down.status, down.code.as_str()),
        (503, "not_durable"),
        "{down:?}"
    );
    assert!(down.message.contains("retry"), "{}", down.message);
    assert!(started.elapsed() < Duration::from_secs(20));

    kafka.start().await?;
    let after = traffsure_tests::eventually(Duration::from_secs(30), || async {
        let r = get(
            stack,
            &format!("/postback?click={}&uid=after", click_hash(5, 3)),
        )
        .await?;
        Ok((r.status == 200).then_some(r))
    })
    .await?;
    assert_eq!(after.code, "accepted");

    // What was acknowledged is in Kafka; the refused postback is not among the events.
    let mut events = postbacks(stack).await?;
    let kept = events
        .wait_for(&[before.postback_id.clone(), after.postback_id.clone()])
        .await?;
    assert_eq!(
        (kept[0].uid.as_str(), kept[1].uid.as_str()),
        ("before", "after")
    );
    assert!(
        !events
            .seen_after(&down.postback_id, Duration::from_secs(3))
            .await?
    );
    let mut log = postback_log(stack).await?;
    let logged = log.one(&after.postback_id).await?;
    assert_eq!(
        (logged.response_status, logged.reason.as_str()),
        (200, "accepted")
    );
    Ok(())
}

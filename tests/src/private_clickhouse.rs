//! A private ClickHouse server for tests that need ClickHouse to go down, or an https port
//! and a password: the Debian binary the local stack uses, on free loopback ports, with its
//! own data directory under `target/`, stopped and started by the test. The shared server
//! is never touched.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};
use traffsure_config::ClickHouseSettings;

use crate::secured::Certificates;

pub struct PrivateClickHouse {
    pub http_port: u16,
    /// The client settings of the https port (user `default` with a password), when the
    /// server has one.
    pub secured: Option<ClickHouseSettings>,
    dir: PathBuf,
    child: Option<Child>,
}

fn server_binary() -> anyhow::Result<PathBuf> {
    ["/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("clickhouse-server not found: run deploy/local/install.sh")
}

impl PrivateClickHouse {
    /// Starts a server with an empty data directory and waits until it answers.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(None).await
    }

    /// Starts a server that also listens on an https port with `certificates`' server
    /// certificate, its `default` user guarded by a fresh password (the plain port keeps
    /// answering `/ping` only to say the server is up: queries need the password too).
    pub async fn start_secured(certificates: &Certificates) -> anyhow::Result<Self> {
        Self::start_with(Some(certificates)).await
    }

    async fn start_with(certificates: Option<&Certificates>) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = root.join("target").join("private-clickhouse").join(id);
        std::fs::create_dir_all(&dir)?;
        let http_port = crate::free_port()?;
        let tcp_port = crate::free_port()?;
        let mut https = String::new();
        let mut secured = None;
        let mut users = std::fs::read_to_string(root.join("deploy/local/clickhouse/users.xml"))?;
        if let Some(certificates) = certificates {
            let https_port = crate::free_port()?;
            https = format!(
                "<https_port>{https_port}</https_port>\n    \
                 <openSSL><server>\
                 <certificateFile>{}</certificateFile>\
                 <privateKeyFile>{}</privateKeyFile>\
                 <verificationMode>none</verificationMode>\
                 <loadDefaultCAFile>false</loadDefaultCAFile>\
                 <disableProtocols>sslv2,sslv3</disableProtocols>\
                 </server></openSSL>",
                certificates.path("server.pem"),
                certificates.path("server.key"),
            );
            let password = uuid::Uuid::new_v4().simple().to_string();
            anyhow::ensure!(
                users.contains("<password></password>"),
                "users.xml no longer has the empty default password this replaces"
            );
            users = users.replace(
                "<password></password>",
                &format!("<password>{password}</password>"),
            );
            secured = Some(ClickHouseSettings {
                url: format!("https://127.0.0.1:{https_port}"),
                user: "default".into(),
                password,
                ca_path: certificates.path("ca.pem"),
                ..ClickHouseSettings::default()
            });
        }
        let config = format!(
            r#"<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/server.err.log</errorlog></logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    {https}
    <max_concurrent_queries>50</max_concurrent_queries>
    <mark_cache_size>67108864</mark_cache_size>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
</yandex>
"#,
            d = dir.display()
        );
        std::fs::write(dir.join("config.xml"), config)?;
        std::fs::write(dir.join("users.xml"), users)?;
        let mut server = Self {
            http_port,
            secured,
            dir,
            child: None,
        };
        server.resume().await?;
        if let Some(settings) = &server.secured {
            crate::secured::register_clickhouse(settings.clone());
        }
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Starts the stopped server again on the same ports and data.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stdout.log"))?;
        let child = Command::new(server_binary()?)
            .arg(format!(
                "--config-file={}",
                self.dir.join("config.xml").display()
            ))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start clickhouse-server")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.get(format!("{}/ping", self.url())).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "private clickhouse exited with {status}; see {}",
                        self.dir.display()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "private clickhouse not ready after 60 s; see {}",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the server (SIGTERM, then SIGKILL after 30 s) and waits until it is gone.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()?;
        }
        if tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .is_err()
        {
            child.kill().await?;
        }
        Ok(())
    }
}

impl Drop for PrivateClickHouse {
    /// Kills the server and deletes its data directory.
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
            // Wait (briefly) for the process to go before its files are removed.
            for _ in 0..50 {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! Running a `tests/browser/*.mjs` script (playwright-core driving Debian's headless
//! Chromium) against a test stack: the script, its environment and a screenshot folder
//! under `target/browser-screenshots/`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::{workspace_dir, Stack};

/// What a finished script printed, and where its screenshots are.
pub struct BrowserRun {
    pub stdout: String,
    pub screenshots: PathBuf,
}

impl BrowserRun {
    /// How many PNG screenshots the script left.
    pub fn screenshot_count(&self) -> anyhow::Result<usize> {
        Ok(std::fs::read_dir(&self.screenshots)?
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
            .count())
    }
}

/// `npm ci` when the pinned playwright-core is not installed yet (`make test` installs
/// it through deploy/local/install.sh; this covers a bare `cargo test`).
async fn ensure_node_modules(dir: &PathBuf) -> anyhow::Result<()> {
    if dir.join("node_modules/playwright-core").exists() {
        return Ok(());
    }
    let status = tokio::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .await
        .context("run npm ci in tests/browser (is npm installed?)")?;
    if !status.success() {
        bail!("npm ci in tests/browser failed with {status}");
    }
    Ok(())
}

/// Runs `tests/browser/<script>` with `PANEL_URL`, `CHROMIUM`, `SCREENSHOT_DIR`
/// (`target/browser-screenshots/<screenshots>`, emptied first) and `env`, for at most
/// `timeout`; fails with its output and the stack's logs unless it exits 0.
pub async fn run_script(
    stack: &Stack,
    script: &str,
    screenshots: &str,
    env: &[(&str, String)],
    timeout: Duration,
) -> anyhow::Result<BrowserRun> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !PathBuf::from(&chromium).exists() {
        bail!("{chromium} is missing: run deploy/local/install.sh (installs Debian's chromium)");
    }
    let browser_dir = workspace_dir().join("tests/browser");
    ensure_node_modules(&browser_dir).await?;
    let screenshots = workspace_dir()
        .join("target/browser-screenshots")
        .join(screenshots);
    let _ = std::fs::remove_dir_all(&screenshots);
    let run = tokio::process::Command::new("node")
        .arg(script)
        .current_dir(&browser_dir)
        .env("PANEL_URL", stack.url("reporting-api", ""))
        .env("SCREENSHOT_DIR", &screenshots)
        .env("CHROMIUM", &chromium)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(timeout, run)
        .await
        .with_context(|| format!("{script} ran over {timeout:?}"))??;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "{script} failed ({}):\n{stdout}\n{stderr}\n{}",
            output.status,
            stack.logs()
        );
    }
    Ok(BrowserRun {
        stdout,
        screenshots,
    })
}

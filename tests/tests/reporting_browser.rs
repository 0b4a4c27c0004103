//! The admin panel in a real browser: runs `tests/browser/panel.mjs` (playwright-core
//! driving Debian's headless Chromium) against a whole test stack. Screenshots of every
//! page land in `target/browser-screenshots/`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use traffsure_tests::{Stack, ADMIN_PASSWORD, ADMIN_USERNAME};

fn workspace_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_panel_pages_in_headless_chromium() -> anyhow::Result<()> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !PathBuf::from(&chromium).exists() {
        bail!("{chromium} is missing: run deploy/local/install.sh (installs Debian's chromium)");
    }
    let browser_dir = traffsure_tests::browser_dir().await?;
    let stack = Stack::start().await?;
    let screenshots = workspace_dir().join("target/browser-screenshots");
    let _ = std::fs::remove_dir_all(&screenshots);
    let run = tokio::process::Command::new("node")
        .arg("panel.mjs")
        .current_dir(&browser_dir)
        .env("PANEL_URL", stack.url("reporting-api", ""))
        .env("POSTBACK_URL", stack.url("postback-ingest", ""))
        .env("ADMIN_USERNAME", ADMIN_USERNAME)
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("SCREENSHOT_DIR", &screenshots)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .context("the browser test ran over 240 s")??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "panel.mjs failed ({}):\n{stdout}\n{stderr}\n{}",
            output.status,
            stack.logs()
        );
    }
    assert!(stdout.contains("panel ok"), "{stdout}\n{stderr}");
    let shots = std::fs::read_dir(&screenshots)?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .count();
    assert!(
        shots >= 12,
        "only {shots} screenshots in {}",
        screenshots.display()
    );
    Ok(())
}

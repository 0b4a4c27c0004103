//! The admin panel in a real browser: runs `tests/browser/panel.mjs` (playwright-core
//! driving Debian's headless Chromium) against a whole test stack. Screenshots of every
//! page land in `target/browser-screenshots/`.

use std::path::PathBuf;

use traffsure_tests::{Stack, ADMIN_PASSWORD, ADMIN_USERNAME};

fn workspace_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_panel_pages_in_headless_chromium() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let screenshots = workspace_dir().join("target/browser-screenshots");
    let env = [
        ("PANEL_URL", stack.url("reporting-api", "")),
        ("POSTBACK_URL", stack.url("postback-ingest", "")),
        ("ADMIN_USERNAME", ADMIN_USERNAME.to_string()),
        ("ADMIN_PASSWORD", ADMIN_PASSWORD.to_string()),
    ];
    let stdout = traffsure_tests::run_browser_script("panel.mjs", &env, &screenshots)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", stack.logs()))?;
    assert!(stdout.contains("panel ok"), "{stdout}");
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

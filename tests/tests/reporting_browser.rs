//! The admin panel in a real browser: runs `tests/browser/panel.mjs` (playwright-core
//! driving Debian's headless Chromium) against a whole test stack. Screenshots of every
//! page land in `target/browser-screenshots/panel/`.

use std::time::Duration;

use traffsure_tests::browser::run_script;
use traffsure_tests::{Stack, ADMIN_PASSWORD, ADMIN_USERNAME};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_panel_pages_in_headless_chromium() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let run = run_script(
        &stack,
        "panel.mjs",
        "panel",
        &[
            ("POSTBACK_URL", stack.url("postback-ingest", "")),
            ("ADMIN_USERNAME", ADMIN_USERNAME.into()),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
        ],
        Duration::from_secs(240),
    )
    .await?;
    assert!(run.stdout.contains("panel ok"), "{}", run.stdout);
    let shots = run.screenshot_count()?;
    assert!(
        shots >= 12,
        "only {shots} screenshots in {}",
        run.screenshots.display()
    );
    Ok(())
}

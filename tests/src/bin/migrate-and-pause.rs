//! A migrator process for the migration tests: applies the migrations to a database
//! with `traffsure_clickhouse::migrate_with`, and, given a step, stops there (prints
//! `paused at <step>` and sleeps) so the test can SIGKILL it halfway.
//!
//! `migrate-and-pause <clickhouse url> <database> <settle ms> <lease ms> [step]`

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use traffsure_clickhouse::{LockTimings, MigrateOptions};
use traffsure_config::ClickHouseSettings;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 5,
        "usage: migrate-and-pause <url> <database> <settle ms> <lease ms> [step]"
    );
    let millis =
        |i: usize| -> anyhow::Result<Duration> { Ok(Duration::from_millis(args[i].parse()?)) };
    let settings = ClickHouseSettings {
        url: args[1].clone(),
        database: args[2].clone(),
        ..ClickHouseSettings::default()
    };
    let pause_at = args.get(5).cloned();
    let options = MigrateOptions {
        lock: LockTimings {
            settle: millis(3)?,
            lease: millis(4)?,
            poll: Duration::from_millis(200),
        },
        after_step: Some(Arc::new(move |step: &str| {
            if pause_at.as_deref() == Some(step) {
                println!("paused at {step}");
                let _ = std::io::stdout().flush();
                // Blocks the only runtime thread, heartbeats included: to the other
                // migrators this process is dead until the test kills it.
                loop {
                    std::thread::sleep(Duration::from_secs(60));
                }
            }
        })),
    };
    traffsure_clickhouse::migrate_with(&settings, &options).await?;
    println!("migrated");
    Ok(())
}

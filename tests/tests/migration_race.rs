//! Migrations applied by many processes at once, and by a migrator killed halfway, count
//! the history once: a database at version 0005 holding clicks and conversions across
//! three months is migrated by four threads, two migrator processes, the sink and
//! reporting-api together, or by migrators SIGKILLed in the middle of the 0006 rebuild
//! and then started again; every time the rollups 0006 adds equal the raw tables exactly.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use traffsure_clickhouse::{LockTimings, MigrateOptions};
use traffsure_config::ClickHouseSettings;
use traffsure_tests::{clickhouse_url, Stack, StackOptions};

/// The history: clicks from 2026-09-20 every 1,900 s (66 days, under ClickHouse's 100
/// partitions per insert), conversions every 4,700 s, a third of them approved after
/// pending, in two currencies.
const HISTORY: &[&str] = &[
    "INSERT INTO clicks (click_hash, flow_id, ts, ts_ms, country, source, sub_id, device, os, browser, cost_micros, kafka_partition, kafka_offset) \
     SELECT concat('h', toString(number)), toUInt32(1 + number % 3), toDateTime('2026-09-20 00:00:00') + number * 1900, 0, \
         if(number % 2 = 0, 'US', 'DE'), 'push', toString(number % 5), 'desktop', 'linux', 'firefox', \
         toInt64(1000 + number % 7 * 250), toUInt16(number % 4), number \
     FROM system.numbers LIMIT 3000",
    "INSERT INTO conversions (conversion_id, version, click_hash, flow_id, goal, status, previous_status, revenue_micros, previous_revenue_micros, currency, created_at, country, source, sub_id, kafka_partition, kafka_offset) \
     SELECT toString(number), toUInt32(1), concat('h', toString(number)), toUInt32(1 + number % 3), 'sale', \
         if(number % 3 = 0, 'approved', 'pending'), if(number % 3 = 0, 'pending', ''), \
         toInt64(1000000 + number % 5 * 500000), if(number % 3 = 0, toInt64(500000), toInt64(0)), \
         if(number % 2 = 0, 'USD', 'EUR'), toDateTime('2026-09-20 00:00:00') + number * 4700, \
         'US', 'push', toString(number % 5), toUInt16(number % 4), number \
     FROM system.numbers LIMIT 1200",
];

/// Raw conversions by hour, status and currency (+1 for a status, −1 for the status it
/// replaced), as `conversions_hourly_currency` must hold them.
const RAW_CONVERSIONS: &str = "SELECT hour, status, currency, sum(n), sum(r) FROM (\
     SELECT toStartOfHour(created_at) AS hour, status, currency, toInt64(1) AS n, revenue_micros AS r \
     FROM conversions WHERE status != '' \
     UNION ALL \
     SELECT toStartOfHour(created_at) AS hour, previous_status AS status, currency, toInt64(-1) AS n, -previous_revenue_micros AS r \
     FROM conversions WHERE previous_status != '') \
     GROUP BY hour, status, currency HAVING sum(n) != 0 OR sum(r) != 0 \
     ORDER BY hour, status, currency FORMAT TSV";
const ROLLUP_CONVERSIONS: &str =
    "SELECT hour, status, currency, sum(conversions), sum(revenue_micros) \
     FROM conversions_hourly_currency GROUP BY hour, status, currency \
     HAVING sum(conversions) != 0 OR sum(revenue_micros) != 0 \
     ORDER BY hour, status, currency FORMAT TSV";
const RAW_COSTS: &str = "SELECT toStartOfHour(ts) AS hour, flow_id, sum(cost_micros) FROM clicks \
     GROUP BY hour, flow_id HAVING sum(cost_micros) != 0 ORDER BY hour, flow_id FORMAT TSV";
const ROLLUP_COSTS: &str = "SELECT hour, flow_id, sum(cost_micros) FROM clicks_cost_hourly \
     GROUP BY hour, flow_id HAVING sum(cost_micros) != 0 ORDER BY hour, flow_id FORMAT TSV";

/// A throwaway database migrated to version 0005 and holding the history.
struct Database {
    http: reqwest::Client,
    settings: ClickHouseSettings,
}

impl Database {
    async fn at_0005() -> anyhow::Result<Self> {
        let name = format!(
            "test_migrate_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let database = Self {
            http: reqwest::Client::new(),
            settings: ClickHouseSettings {
                url: clickhouse_url(),
                database: name.clone(),
                ..ClickHouseSettings::default()
            },
        };
        database
            .run(&format!("CREATE DATABASE {name}"), false)
            .await?;
        database
            .query(
                "CREATE TABLE schema_migrations (version UInt32, name String, applied_at DateTime) \
                 ENGINE = ReplacingMergeTree() ORDER BY version",
            )
            .await?;
        for (version, migration, sql) in &traffsure_clickhouse::MIGRATIONS[..5] {
            for statement in traffsure_clickhouse::statements(sql) {
                database.query(&statement).await?;
            }
            database
                .query(&format!(
                    "INSERT INTO schema_migrations SELECT {version}, '{migration}', now()"
                ))
                .await?;
        }
        for insert in HISTORY {
            database.query(insert).await?;
        }
        Ok(database)
    }

    fn name(&self) -> &str {
        &self.settings.database
    }

    async fn query(&self, sql: &str) -> anyhow::Result<String> {
        self.run(sql, true).await
    }

    async fn run(&self, sql: &str, in_database: bool) -> anyhow::Result<String> {
        let mut request = self.http.post(&self.settings.url).body(sql.to_string());
        if in_database {
            request = request.query(&[("database", self.name())]);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        anyhow::ensure!(status.is_success(), "clickhouse answered {status}: {text}");
        Ok(text.trim().to_string())
    }

    async fn recorded(&self, version: u32) -> anyhow::Result<bool> {
        Ok(self
            .query(&format!(
                "SELECT count() FROM schema_migrations WHERE version = {version}"
            ))
            .await?
            != "0")
    }

    /// Fails unless both rollups 0006 adds equal their raw tables, row for row.
    async fn assert_rollups_exact(&self) -> anyhow::Result<()> {
        let raw = self.query(RAW_CONVERSIONS).await?;
        anyhow::ensure!(raw.lines().count() > 1000, "too little history: {raw}");
        let rollup = self.query(ROLLUP_CONVERSIONS).await?;
        let differing = raw
            .lines()
            .zip(rollup.lines())
            .filter(|(a, b)| a != b)
            .count();
        anyhow::ensure!(
            raw == rollup,
            "conversions_hourly_currency against conversions: {} rows raw, {} rolled up, {differing} differ",
            raw.lines().count(),
            rollup.lines().count()
        );
        let totals =
            "SELECT sum(conversions), sum(revenue_micros) FROM conversions_hourly_currency";
        // 1,200 conversions, 400 of them approved after pending (+1 approved, −1 pending).
        let totals = self.query(totals).await?;
        let count = totals.split('\t').next().unwrap_or_default();
        anyhow::ensure!(count == "800", "{count} conversions rolled up, not 800");
        let raw = self.query(RAW_COSTS).await?;
        let rollup = self.query(ROLLUP_COSTS).await?;
        anyhow::ensure!(
            raw == rollup,
            "clicks_cost_hourly against clicks: {} rows raw, {} rolled up",
            raw.lines().count(),
            rollup.lines().count()
        );
        let stages = self
            .query(&format!(
                "SELECT count() FROM system.tables WHERE database = '{}' AND name LIKE '%_rebuild_%'",
                self.name()
            ))
            .await?;
        anyhow::ensure!(stages == "0", "{stages} staging tables left");
        Ok(())
    }

    async fn drop(&self) -> anyhow::Result<()> {
        self.run(&format!("DROP DATABASE IF EXISTS {}", self.name()), false)
            .await
            .map(drop)
    }
}

/// A `migrate-and-pause` process on `database` with `timings`, pausing at `step`.
fn migrator(
    database: &Database,
    timings: LockTimings,
    step: Option<&str>,
) -> anyhow::Result<Child> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_migrate-and-pause"));
    command
        .arg(&database.settings.url)
        .arg(database.name())
        .arg(timings.settle.as_millis().to_string())
        .arg(timings.lease.as_millis().to_string())
        .args(step)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    Ok(command.spawn()?)
}

/// Starts a migrator that pauses at `step`, and SIGKILLs it there.
async fn kill_at(database: &Database, timings: LockTimings, step: &str) -> anyhow::Result<()> {
    let mut process = migrator(database, timings, Some(step))?;
    wait_for_line(&mut process, "paused at", Duration::from_secs(60)).await?;
    process.kill().await?;
    Ok(())
}

/// Reads a migrator's output until a line starting with `prefix`.
async fn wait_for_line(child: &mut Child, prefix: &str, timeout: Duration) -> anyhow::Result<()> {
    let stdout = child.stdout.as_mut().context("migrator stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    tokio::time::timeout(timeout, async {
        while let Some(line) = lines.next_line().await? {
            if line.starts_with(prefix) {
                return anyhow::Ok(());
            }
        }
        anyhow::bail!("migrator ended before printing {prefix:?}")
    })
    .await
    .with_context(|| format!("no {prefix:?} from the migrator within {timeout:?}"))?
}

/// `migrate_with` on a thread of its own, as another process's library call would run.
fn migrate_on_thread(
    settings: ClickHouseSettings,
    options: MigrateOptions,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(traffsure_clickhouse::migrate_with(&settings, &options))?;
        Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrators_count_history_once() -> anyhow::Result<()> {
    let database = Database::at_0005().await?;
    // Threads and processes with the timings the services use, all at once.
    let threads: Vec<_> = (0..4)
        .map(|_| migrate_on_thread(database.settings.clone(), MigrateOptions::default()))
        .collect();
    let mut processes = Vec::new();
    for _ in 0..2 {
        processes.push(migrator(&database, LockTimings::default(), None)?);
    }
    let stack = Stack::start_with(
        StackOptions::default()
            .services(&["sink", "reporting-api"])
            .env("*", "TRAFFSURE__CLICKHOUSE__DATABASE", database.name()),
    )
    .await
    .context("sink and reporting-api did not start")?;
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a migrating thread panicked"))??;
    }
    for mut process in processes {
        wait_for_line(&mut process, "migrated", Duration::from_secs(120)).await?;
        anyhow::ensure!(process.wait().await?.success(), "a migrator process failed");
    }
    let result = async {
        anyhow::ensure!(database.recorded(6).await?, "0006 not recorded");
        let owners = database
            .query("SELECT uniqExact(owner) FROM schema_migration_claims")
            .await?;
        let owners: usize = owners.parse()?;
        anyhow::ensure!(
            owners >= 4,
            "only {owners} migrators contended for the lock"
        );
        database.assert_rollups_exact().await?;
        // The views go on counting what arrives after the migration.
        for insert in HISTORY {
            database
                .query(
                    &insert
                        .replace("2026-09-20", "2026-12-01")
                        .replace("'h'", "'n'"),
                )
                .await?;
        }
        let raw = database.query(RAW_COSTS).await?;
        anyhow::ensure!(
            raw == database.query(ROLLUP_COSTS).await?,
            "costs after the migration"
        );
        let raw = database.query(RAW_CONVERSIONS).await?;
        anyhow::ensure!(
            raw == database.query(ROLLUP_CONVERSIONS).await?,
            "conversions after the migration"
        );
        eprintln!("{owners} migrators contended; rollups equal raw");
        Ok(())
    }
    .await;
    stack.print_failure(&result);
    drop(stack);
    if result.is_ok() {
        database.drop().await?;
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrators_killed_halfway_leave_exact_rollups() -> anyhow::Result<()> {
    let database = Database::at_0005().await?;
    let timings = LockTimings {
        settle: Duration::from_secs(2),
        lease: Duration::from_secs(6),
        poll: Duration::from_millis(200),
    };
    // Killed with its first month staged, before any swap.
    kill_at(
        &database,
        timings,
        "staged conversions_hourly_currency 202609",
    )
    .await?;
    // The next takes over once the first's lease ran out, and is killed with two of the
    // three months of conversions swapped in and the costs not begun.
    kill_at(
        &database,
        timings,
        "replaced conversions_hourly_currency 202610",
    )
    .await?;
    anyhow::ensure!(
        !database.recorded(6).await?,
        "0006 recorded by a killed migrator"
    );
    anyhow::ensure!(
        database.query(RAW_CONVERSIONS).await? != database.query(ROLLUP_CONVERSIONS).await?,
        "the rollups were complete before the restart: the kills came too late"
    );
    anyhow::ensure!(
        database
            .query("SELECT count() FROM system.tables WHERE name LIKE '%_rebuild_%' AND database = currentDatabase()")
            .await?
            != "0",
        "the killed migrators left no staging table"
    );
    // Started again: a process and a library call together.
    let mut third = migrator(&database, timings, None)?;
    let thread = migrate_on_thread(
        database.settings.clone(),
        MigrateOptions {
            lock: timings,
            after_step: None,
        },
    );
    wait_for_line(&mut third, "migrated", Duration::from_secs(120)).await?;
    anyhow::ensure!(
        third.wait().await?.success(),
        "the restarted migrator failed"
    );
    thread
        .join()
        .map_err(|_| anyhow::anyhow!("the migrating thread panicked"))??;
    anyhow::ensure!(database.recorded(6).await?, "0006 not recorded");
    database.assert_rollups_exact().await?;
    database.drop().await?;
    Ok(())
}

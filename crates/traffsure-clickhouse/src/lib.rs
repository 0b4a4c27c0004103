//! ClickHouse for the services: the client (set up to work on ClickHouse 18.16 as well as
//! current releases, over `http` or `https`) and the numbered schema migrations in
//! `deploy/clickhouse/migrations`.

use clickhouse::Client;
use traffsure_config::ClickHouseSettings;

pub use clickhouse;
pub use connect::{check_access, AccessError};

mod connect;
pub mod queries;
pub mod rates;
pub mod retention;

/// The migrations, in order. Each is idempotent on its own, and applied ones are
/// recorded in `schema_migrations` so a start skips them.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "events",
        include_str!("../../../deploy/clickhouse/migrations/0001_events.sql"),
    ),
    (
        2,
        "rollups",
        include_str!("../../../deploy/clickhouse/migrations/0002_rollups.sql"),
    ),
    (
        3,
        "outbound_log",
        include_str!("../../../deploy/clickhouse/migrations/0003_outbound_log.sql"),
    ),
    (
        4,
        "sink_checkpoints",
        include_str!("../../../deploy/clickhouse/migrations/0004_sink_checkpoints.sql"),
    ),
    (
        5,
        "conversions_click_missing",
        include_str!("../../../deploy/clickhouse/migrations/0005_conversions_click_missing.sql"),
    ),
    (
        6,
        "currencies",
        include_str!("../../../deploy/clickhouse/migrations/0006_currencies.sql"),
    ),
];

/// Whether a migration statement's error means it already took effect: ClickHouse
/// 18.16 has no `ADD COLUMN IF NOT EXISTS`, so a migration interrupted after such an
/// `ALTER` meets the column again when it is applied on the next start.
fn already_applied(statement: &str, error: &clickhouse::error::Error) -> bool {
    statement.starts_with("ALTER TABLE")
        && statement.contains("ADD COLUMN")
        && error.to_string().contains("Code: 44")
}

/// A client for the configured database.
pub fn client(settings: &ClickHouseSettings) -> Client {
    server_client(settings).with_database(&settings.database)
}

/// A client with no database selected (for `CREATE DATABASE`).
fn server_client(settings: &ClickHouseSettings) -> Client {
    // ClickHouse 18.16 misreads compressed RowBinary inserts and the schema validation
    // queries of the crate; both are off so one client serves old and new servers.
    connect::http_client(settings)
        .with_url(&settings.url)
        .with_user(&settings.user)
        .with_password(&settings.password)
        .with_compression(clickhouse::Compression::None)
        .with_validation(false)
}

/// Splits a migration file into statements (on `;` at the end of a line), dropping
/// comment lines.
pub fn statements(sql: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            let statement = current.trim().trim_end_matches(';').trim().to_string();
            if !statement.is_empty() {
                statements.push(statement);
            }
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        statements.push(current.trim().to_string());
    }
    statements
}

/// Creates the database if needed and applies the migrations not yet applied.
pub async fn migrate(settings: &ClickHouseSettings) -> Result<(), clickhouse::error::Error> {
    server_client(settings)
        .query("CREATE DATABASE IF NOT EXISTS ?")
        .bind(clickhouse::sql::Identifier(&settings.database))
        .execute()
        .await?;
    let client = client(settings);
    client
        .query(
            "CREATE TABLE IF NOT EXISTS schema_migrations \
             (version UInt32, name String, applied_at DateTime) \
             ENGINE = ReplacingMergeTree() ORDER BY version",
        )
        .execute()
        .await?;
    for (version, name, sql) in MIGRATIONS {
        let applied: u64 = client
            .query("SELECT count() FROM schema_migrations WHERE version = ?")
            .bind(version)
            .fetch_one()
            .await?;
        if applied > 0 {
            continue;
        }
        for statement in statements(sql) {
            match client.query(&statement).execute().await {
                Err(error) if !already_applied(&statement, &error) => return Err(error),
                _ => {}
            }
        }
        client
            .query("INSERT INTO schema_migrations (version, name, applied_at) SELECT ?, ?, now()")
            .bind(version)
            .bind(name)
            .execute()
            .await?;
        tracing::info!(version, name, "migration applied");
    }
    Ok(())
}

/// Whether the server answers a trivial query.
pub async fn ping(client: &Client) -> bool {
    client.query("SELECT 1").fetch_one::<u8>().await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_migrations_into_statements() {
        let all: Vec<String> = MIGRATIONS
            .iter()
            .flat_map(|(_, _, sql)| statements(sql))
            .collect();
        assert!(all.len() >= 10);
        assert!(all
            .iter()
            .all(|s| s.starts_with("CREATE TABLE IF NOT EXISTS")
                || s.starts_with("CREATE MATERIALIZED VIEW IF NOT EXISTS")
                || s.starts_with("ALTER TABLE")
                || s.starts_with("INSERT INTO sink_checkpoints SELECT")
                || s.starts_with("INSERT INTO conversions_hourly_currency\nSELECT")
                || s.starts_with("INSERT INTO clicks_cost_hourly\nSELECT")));
        assert!(all.iter().all(|s| !s.contains(';')));
        assert_eq!(
            statements("-- c\nSELECT 1;\n\nSELECT 2"),
            vec!["SELECT 1", "SELECT 2"]
        );
    }
}

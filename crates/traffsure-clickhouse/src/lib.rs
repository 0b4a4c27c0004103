//! ClickHouse for the services: the client (set up to work on ClickHouse 18.16 as well as
//! current releases, over `http` or `https`) and the numbered schema migrations in
//! `deploy/clickhouse/migrations`, applied by one process at a time (`migration_lock`)
//! however many start together.

use std::sync::Arc;

use clickhouse::Client;
use traffsure_config::ClickHouseSettings;

pub use clickhouse;
pub use connect::{check_access, AccessError};
pub use migration_lock::LockTimings;
pub use rebuild::Rebuild;

pub mod cluster;
mod connect;
pub mod migration_lock;
pub mod queries;
pub mod rates;
pub mod rebuild;
pub mod retention;
pub mod shards;

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
    (
        7,
        "visitor_details",
        include_str!("../../../deploy/clickhouse/migrations/0007_visitor_details.sql"),
    ),
    (
        8,
        "fraud_signals",
        include_str!("../../../deploy/clickhouse/migrations/0008_fraud_signals.sql"),
    ),
    (
        9,
        "admin_sessions",
        include_str!("../../../deploy/clickhouse/migrations/0009_admin_sessions.sql"),
    ),
    (
        10,
        "funnel_objects",
        include_str!("../../../deploy/clickhouse/migrations/0010_funnel_objects.sql"),
    ),
    (
        15,
        "outbound_log_columns",
        include_str!("../../../deploy/clickhouse/migrations/0015_outbound_log_columns.sql"),
    ),
    (
        16,
        "cost_models",
        include_str!("../../../deploy/clickhouse/migrations/0016_cost_models.sql"),
    ),
    (
        17,
        "cost_updates",
        include_str!("../../../deploy/clickhouse/migrations/0017_cost_updates.sql"),
    ),
    (
        18,
        "caps_and_payout",
        include_str!("../../../deploy/clickhouse/migrations/0018_caps_and_payout.sql"),
    ),
    (
        19,
        "payout_rollup",
        include_str!("../../../deploy/clickhouse/migrations/0019_payout_rollup.sql"),
    ),
    (
        20,
        "impressions",
        include_str!("../../../deploy/clickhouse/migrations/0020_impressions.sql"),
    ),
    (
        21,
        "impression_links",
        include_str!("../../../deploy/clickhouse/migrations/0021_impression_links.sql"),
    ),
    (
        22,
        "outbound_log_scope",
        include_str!("../../../deploy/clickhouse/migrations/0022_outbound_log_scope.sql"),
    ),
    (
        23,
        "users",
        include_str!("../../../deploy/clickhouse/migrations/0023_users.sql"),
    ),
    (
        24,
        "audit_log",
        include_str!("../../../deploy/clickhouse/migrations/0024_audit_log.sql"),
    ),
    (
        25,
        "conversion_visitor",
        include_str!("../../../deploy/clickhouse/migrations/0025_conversion_visitor.sql"),
    ),
    (
        26,
        "impression_cost_source",
        include_str!("../../../deploy/clickhouse/migrations/0026_impression_cost_source.sql"),
    ),
    (
        27,
        "user_settings",
        include_str!("../../../deploy/clickhouse/migrations/0027_user_settings.sql"),
    ),
    (
        28,
        "sink_inserts",
        include_str!("../../../deploy/clickhouse/migrations/0028_sink_inserts.sql"),
    ),
];

/// Rollups a migration fills from the raw tables after its statements, by version.
pub const REBUILDS: &[(u32, Rebuild)] = &[
    (
        6,
        Rebuild {
            target: "conversions_hourly_currency",
            source: "conversions",
            month: "toYYYYMM(created_at)",
            selects: &[
                "SELECT toStartOfHour(created_at), flow_id, country, source, sub_id, goal, \
                 status, currency, toInt64(1), revenue_micros \
                 FROM conversions WHERE status != ''",
                "SELECT toStartOfHour(created_at), flow_id, country, source, sub_id, goal, \
                 previous_status, currency, toInt64(-1), -previous_revenue_micros \
                 FROM conversions WHERE previous_status != ''",
            ],
        },
    ),
    (
        6,
        Rebuild {
            target: "clicks_cost_hourly",
            source: "clicks",
            month: "toYYYYMM(ts)",
            selects: &[
                "SELECT toStartOfHour(ts) AS h, flow_id, country, source, sub_id, \
                 device, os, browser, cost_currency, sum(cost_micros) \
                 FROM clicks WHERE cost_micros != 0 \
                 GROUP BY h, flow_id, country, source, sub_id, device, os, browser, cost_currency",
            ],
        },
    ),
    (
        10,
        Rebuild {
            target: "clicks_funnel_hourly",
            source: "clicks",
            month: "toYYYYMM(ts)",
            selects: &[
                "SELECT toStartOfHour(ts) AS h, flow_id, traffic_source_id, offer_id, lander_id, \
                 network_id, kind, country, source, sub_id, device, os, browser, cost_currency, \
                 count(), sum(toUInt64(is_bot)), uniqState(visitor_id), sum(cost_micros) \
                 FROM clicks WHERE 1 \
                 GROUP BY h, flow_id, traffic_source_id, offer_id, lander_id, network_id, kind, \
                 country, source, sub_id, device, os, browser, cost_currency",
            ],
        },
    ),
    (
        10,
        Rebuild {
            target: "conversions_funnel_hourly",
            source: "conversions",
            month: "toYYYYMM(created_at)",
            selects: &[
                "SELECT toStartOfHour(created_at), flow_id, traffic_source_id, offer_id, \
                 lander_id, network_id, country, source, sub_id, goal, status, currency, \
                 toInt64(1), revenue_micros \
                 FROM conversions WHERE status != ''",
                "SELECT toStartOfHour(created_at), flow_id, traffic_source_id, offer_id, \
                 lander_id, network_id, country, source, sub_id, goal, previous_status, \
                 currency, toInt64(-1), -previous_revenue_micros \
                 FROM conversions WHERE previous_status != ''",
            ],
        },
    ),
    (
        16,
        Rebuild {
            target: "click_costs_hourly",
            source: "clicks",
            month: "toYYYYMM(ts)",
            selects: &[
                "SELECT toStartOfHour(ts) AS h, flow_id, traffic_source_id, offer_id, lander_id, \
                 network_id, kind, country, source, sub_id, device, os, browser, cost_currency, \
                 if(cost_source = 0 AND cost_micros != 0, toUInt8(1), cost_source) AS cs, \
                 count(), sum(cost_micros) \
                 FROM clicks WHERE 1 \
                 GROUP BY h, flow_id, traffic_source_id, offer_id, lander_id, network_id, kind, \
                 country, source, sub_id, device, os, browser, cost_currency, cs",
            ],
        },
    ),
    (
        26,
        Rebuild {
            target: "impression_costs_hourly",
            source: "impressions",
            month: "toYYYYMM(ts)",
            selects: &[
                "SELECT toStartOfHour(ts) AS h, flow_id, traffic_source_id, country, source, \
                 sub_id, device, os, browser, cost_currency, \
                 if(cost_source = 0 AND cost_micros != 0, toUInt8(1), cost_source) AS cs, \
                 count(), sum(cost_micros) \
                 FROM impressions WHERE cost_micros != 0 \
                 GROUP BY h, flow_id, traffic_source_id, country, source, sub_id, device, os, \
                 browser, cost_currency, cs",
            ],
        },
    ),
    (
        19,
        Rebuild {
            target: "conversions_payout_hourly",
            source: "conversions",
            month: "toYYYYMM(created_at)",
            selects: &[
                "SELECT toStartOfHour(created_at), flow_id, traffic_source_id, offer_id, \
                 lander_id, network_id, country, source, sub_id, goal, status, \
                 if(payout_currency = '', currency, payout_currency), \
                 if(payout_currency = '', revenue_micros, payout_micros) \
                 FROM conversions WHERE status != ''",
                "SELECT toStartOfHour(created_at), flow_id, traffic_source_id, offer_id, \
                 lander_id, network_id, country, source, sub_id, goal, previous_status, \
                 if(payout_currency = '', currency, payout_currency), \
                 -if(payout_currency = '', previous_revenue_micros, previous_payout_micros) \
                 FROM conversions WHERE previous_status != ''",
            ],
        },
    ),
];

const CREATE_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations \
     (version UInt32, name String, applied_at DateTime) \
     ENGINE = ReplacingMergeTree() ORDER BY version";

/// Where the schema goes: one server, or every server of a cluster (`cluster`).
struct Schema<'a> {
    database: &'a str,
    cluster: Option<&'a str>,
}

impl<'a> Schema<'a> {
    fn of(settings: &'a ClickHouseSettings) -> Self {
        Self {
            database: &settings.database,
            cluster: cluster::enabled(settings).then(|| settings.cluster.trim()),
        }
    }

    fn on_cluster(&self) -> String {
        self.cluster
            .map(|c| format!(" ON CLUSTER {c}"))
            .unwrap_or_default()
    }

    /// A migration statement as it runs here.
    fn statement(&self, statement: &str) -> String {
        match self.cluster {
            Some(cluster) => cluster::rewrite(statement, self.database, cluster),
            None => statement.to_string(),
        }
    }
}

/// Called with the name of each rebuild step as it completes.
pub type StepHook = Arc<dyn Fn(&str) + Send + Sync>;

/// How `migrate_with` runs: the lock's timings, and a hook called after each step of a
/// rollup rebuild (`rebuild::step_name`), by which tests stop a migrator halfway.
#[derive(Clone, Default)]
pub struct MigrateOptions {
    pub lock: LockTimings,
    pub after_step: Option<StepHook>,
}

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

/// The client reporting-api reads (and writes its own tables) through: in cluster mode
/// the `Distributed` tables of `<database>_distributed`, whose inserts reach a replica
/// of a shard before they answer, and whose `IN`/`JOIN` subqueries over distributed
/// tables run once and are sent to every shard (`GLOBAL`); otherwise [`client`].
pub fn reader(settings: &ClickHouseSettings) -> Client {
    if !cluster::enabled(settings) {
        return client(settings);
    }
    server_client(settings)
        .with_database(cluster::distributed_database(&settings.database))
        .with_setting("insert_distributed_sync", "1")
        .with_setting("distributed_product_mode", "global")
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
    migrate_with(settings, &MigrateOptions::default()).await
}

/// `migrate` with chosen lock timings and step hook. A start with nothing pending reads
/// `schema_migrations` and returns; otherwise the process that wins the migration lock
/// applies what is pending while the others wait for it.
///
/// With several shards (`clickhouse.shards`) a migration is pending while any shard
/// lacks it in its `schema_migrations`; the lock's claims live on the first shard.
pub async fn migrate_with(
    settings: &ClickHouseSettings,
    options: &MigrateOptions,
) -> Result<(), clickhouse::error::Error> {
    let schema = Schema::of(settings);
    let shards_error =
        |why: String| clickhouse::error::Error::Custom(format!("clickhouse.shards: {why}"));
    let shards = shards::clients(settings).map_err(shards_error)?;
    shards::check_cluster(settings)
        .await?
        .map_err(shards_error)?;
    server_client(settings)
        .query(&format!(
            "CREATE DATABASE IF NOT EXISTS ?{}",
            schema.on_cluster()
        ))
        .bind(clickhouse::sql::Identifier(&settings.database))
        .execute()
        .await?;
    let client = client(settings);
    for table in [CREATE_MIGRATIONS, migration_lock::CREATE_CLAIMS] {
        client.query(&schema.statement(table)).execute().await?;
    }
    let Some(&(latest, _, _)) = MIGRATIONS.last() else {
        return Ok(());
    };
    if migration_lock::recorded_everywhere(&shards, latest).await? {
        return Ok(());
    }
    migration_lock::exclusively(&client, &shards, latest, &options.lock, |owner| {
        apply_pending(&shards, &schema, owner, options)
    })
    .await?;
    Ok(())
}

/// Whether a migration statement, as it runs, reaches every shard by itself: on a
/// cluster the `CREATE`s and `DROP`s run `ON CLUSTER` (`cluster::rewrite`); the rest
/// (`ALTER`s, backfills) reach the shard of the server they run on only.
fn reaches_every_shard(statement: &str) -> bool {
    statement.starts_with("CREATE") || statement.starts_with("DROP")
}

/// Applies, in order, every migration some shard's `schema_migrations` does not record,
/// on the shards that lack it: the statements that reach every shard once, through the
/// first shard's server, the others (and the rollup rebuilds) once on each shard that
/// lacks the migration. A migration is recorded on those shards once all of them took
/// it, the first shard last (a waiting migrator reads the first shard's record as "done
/// everywhere"). Runs under the migration lock.
async fn apply_pending(
    shards: &[Client],
    schema: &Schema<'_>,
    owner: String,
    options: &MigrateOptions,
) -> Result<(), clickhouse::error::Error> {
    let no_hook = |_: &str| {};
    let hook: &(dyn Fn(&str) + Send + Sync) = match &options.after_step {
        Some(hook) => hook.as_ref(),
        None => &no_hook,
    };
    let Some(first) = shards.first() else {
        return Ok(());
    };
    for (version, name, sql) in MIGRATIONS {
        let mut pending = Vec::new();
        for shard in shards {
            if !migration_lock::recorded(shard, *version).await? {
                pending.push(shard);
            }
        }
        if pending.is_empty() {
            continue;
        }
        for statement in statements(sql) {
            let statement = schema.statement(&statement);
            let targets = if reaches_every_shard(&statement) {
                vec![first]
            } else {
                pending.clone()
            };
            for client in targets {
                match client.query(&statement).execute().await {
                    Err(error) if !already_applied(&statement, &error) => return Err(error),
                    _ => {}
                }
            }
        }
        let rebuilds: Vec<Rebuild> = REBUILDS
            .iter()
            .filter(|(v, _)| v == version)
            .map(|(_, rebuild)| *rebuild)
            .collect();
        for client in &pending {
            for rebuild in &rebuilds {
                rebuild::run(client, rebuild, schema.cluster.is_some(), &owner, hook).await?;
            }
            rebuild::drop_leftovers(client, &rebuilds).await?;
        }
        if let Some(cluster) = schema.cluster {
            cluster::sync_distributed(first, schema.database, cluster).await?;
        }
        for client in pending.iter().rev() {
            client
                .query(
                    "INSERT INTO schema_migrations (version, name, applied_at) SELECT ?, ?, now()",
                )
                .bind(version)
                .bind(name)
                .execute()
                .await?;
        }
        tracing::info!(version, name, shards = pending.len(), "migration applied");
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
                || s.starts_with("INSERT INTO sink_checkpoints SELECT")));
        assert!(all.iter().all(|s| !s.contains(';')));
        assert_eq!(
            statements("-- c\nSELECT 1;\n\nSELECT 2"),
            vec!["SELECT 1", "SELECT 2"]
        );
    }

    #[test]
    fn a_statement_runs_once_exactly_when_it_runs_on_the_cluster() {
        let schema = Schema {
            database: "db",
            cluster: Some("c"),
        };
        let mut once = 0;
        for (_, _, sql) in MIGRATIONS {
            for statement in statements(sql) {
                let statement = schema.statement(&statement);
                assert_eq!(
                    reaches_every_shard(&statement),
                    statement.contains(" ON CLUSTER c"),
                    "{statement}"
                );
                once += usize::from(reaches_every_shard(&statement));
            }
        }
        assert!(once > 10, "{once}");
        assert!(!reaches_every_shard(
            "ALTER TABLE clicks ADD COLUMN x UInt8"
        ));
        assert!(!reaches_every_shard(
            "INSERT INTO sink_checkpoints SELECT 1"
        ));
    }
}

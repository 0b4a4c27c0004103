//! Cluster mode (`clickhouse.cluster` set): the migrations, written for one server, made
//! to build the same schema on every server of a ClickHouse cluster.
//!
//! Each statement is rewritten as it is applied, so a migration needs no cluster
//! variant of its own:
//! - `CREATE TABLE` runs `ON CLUSTER`, and a `…MergeTree(args)` engine becomes
//!   `Replicated…MergeTree('/clickhouse/tables/{shard}/<database>.<table>', '{replica}',
//!   args)`: raw tables, rollups, `sink_checkpoints` and the migration tables alike, so
//!   every replica holds every part;
//! - `CREATE [MATERIALIZED] VIEW` runs `ON CLUSTER` with the tables it names qualified
//!   by the database (a server executing a distributed DDL statement resolves bare
//!   names in its `default` database). Each replica runs its views on the inserts it
//!   receives; a part a replica fetches from another is not run through its views
//!   again, and the rollup parts the views wrote arrive by replication themselves, so a
//!   row is counted once however many replicas hold it;
//! - `DROP TABLE` runs `ON CLUSTER`;
//! - anything else runs on the server the migrator talks to, and replicates: `INSERT …
//!   SELECT` backfills, and `ALTER TABLE` (every table is replicated, and a replicated
//!   table's `ALTER` reaches every replica of the shard through ZooKeeper). An `ALTER …
//!   ON CLUSTER` of a replicated table is what ClickHouse 18.16's distributed DDL gets
//!   wrong: both replicas may run it, the second fails on the column the first added,
//!   and its DDL worker stops on a ZooKeeper "node exists" error, holding up every later
//!   `ON CLUSTER` statement (met on the local cluster). With several shards
//!   (`crate::shards`) the migrator runs these once on each shard, through a server of
//!   each (`apply_pending`).
//!
//! After each migration every replicated table gets a `Distributed` table of the same
//! name and columns in `<database>_distributed` ([`sync_distributed`]), through which
//! reporting-api reads all shards ([`crate::reader`]). A `Distributed` table cannot be
//! altered `ON CLUSTER` on ClickHouse 18.16, so one whose columns no longer match is
//! dropped and created again.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use clickhouse::Client;
use regex::{Captures, Regex};
use traffsure_config::ClickHouseSettings;

/// The database of the `Distributed` tables of `database`.
pub fn distributed_database(database: &str) -> String {
    format!("{database}_distributed")
}

/// Whether `settings` name a cluster.
pub fn enabled(settings: &ClickHouseSettings) -> bool {
    !settings.cluster.trim().is_empty()
}

fn regex(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("valid pattern"))
}

/// `statement` as it runs on cluster `cluster`, its tables in `database`.
pub fn rewrite(statement: &str, database: &str, cluster: &str) -> String {
    static CREATE_TABLE: OnceLock<Regex> = OnceLock::new();
    static CREATE_VIEW: OnceLock<Regex> = OnceLock::new();
    static DROP: OnceLock<Regex> = OnceLock::new();
    let on_cluster = format!(" ON CLUSTER {cluster}");
    let create_table = regex(
        &CREATE_TABLE,
        r"^CREATE TABLE (IF NOT EXISTS )?([A-Za-z_][\w.]*)",
    );
    if let Some(c) = create_table.captures(statement) {
        let name = c[2].rsplit('.').next().unwrap_or(&c[2]).to_string();
        let head = format!("{}{on_cluster}", &c[0]);
        let rest = replicated_engine(&statement[c[0].len()..], database, &name);
        return format!("{head}{rest}");
    }
    let create_view = regex(
        &CREATE_VIEW,
        r"^CREATE (MATERIALIZED )?VIEW (IF NOT EXISTS )?[A-Za-z_][\w.]*",
    );
    if let Some(c) = create_view.find(statement) {
        let rest = qualify_tables(&statement[c.end()..], database);
        return format!("{}{on_cluster}{rest}", c.as_str());
    }
    let drop = regex(&DROP, r"^DROP TABLE (IF EXISTS )?[A-Za-z_][\w.]*");
    if let Some(c) = drop.find(statement) {
        return format!("{}{on_cluster}{}", c.as_str(), &statement[c.end()..]);
    }
    statement.to_string()
}

/// `…MergeTree[(args)]` made `Replicated…MergeTree(path, replica[, args])`.
fn replicated_engine(body: &str, database: &str, table: &str) -> String {
    static ENGINE: OnceLock<Regex> = OnceLock::new();
    let engine = regex(&ENGINE, r"ENGINE\s*=\s*(\w*)MergeTree\b(\s*\(([^)]*)\))?");
    engine
        .replace(body, |c: &Captures| {
            let family = &c[1];
            if family.starts_with("Replicated") {
                return c[0].to_string();
            }
            let args = c.get(3).map(|m| m.as_str().trim()).unwrap_or("");
            let extra = if args.is_empty() {
                String::new()
            } else {
                format!(", {args}")
            };
            format!(
                "ENGINE = Replicated{family}MergeTree('/clickhouse/tables/{{shard}}/{database}.{table}', '{{replica}}'{extra})"
            )
        })
        .into_owned()
}

/// Bare table names after `TO`, `FROM` and `JOIN` prefixed with `database.` (table
/// functions, subqueries and qualified names are left alone).
fn qualify_tables(body: &str, database: &str) -> String {
    static TABLE: OnceLock<Regex> = OnceLock::new();
    let table = regex(&TABLE, r"\b(TO|FROM|JOIN)(\s+)([A-Za-z_]\w*)\b(\s*[.(])?");
    table
        .replace_all(body, |c: &Captures| {
            if c.get(4).is_some() {
                return c[0].to_string();
            }
            format!("{}{}{database}.{}", &c[1], &c[2], &c[3])
        })
        .into_owned()
}

/// The engine of a replicated table's `engine_full` without replication: what a
/// staging table beside it uses (`REPLACE PARTITION` takes parts from any table of the
/// same structure, and a staging table must not share the replicated table's path).
pub fn local_engine(engine_full: &str) -> String {
    static REPLICATED: OnceLock<Regex> = OnceLock::new();
    let replicated = regex(
        &REPLICATED,
        r"^Replicated(\w*MergeTree)\(\s*'[^']*'\s*,\s*'[^']*'\s*(,\s*)?",
    );
    match replicated.captures(engine_full) {
        Some(c) => format!("{}({}", &c[1], &engine_full[c[0].len()..]),
        None => engine_full.to_string(),
    }
}

/// Creates `<database>_distributed` and in it a `Distributed` table over each
/// replicated table of the client's database that has none or one with other columns.
pub(crate) async fn sync_distributed(
    client: &Client,
    database: &str,
    cluster: &str,
) -> Result<(), clickhouse::error::Error> {
    let distributed = distributed_database(database);
    client
        .query(&format!(
            "CREATE DATABASE IF NOT EXISTS {distributed} ON CLUSTER {cluster}"
        ))
        .execute()
        .await?;
    let replicated: Vec<String> = client
        .query(
            "SELECT name FROM system.tables \
             WHERE database = ? AND startsWith(engine, 'Replicated') ORDER BY name",
        )
        .bind(database)
        .fetch_all()
        .await?;
    let local = columns(client, database).await?;
    let present = columns(client, &distributed).await?;
    // Tables made before their sharding key was 0 send reporting-api's inserts to a
    // random shard: made again.
    let random: Vec<String> = client
        .query(
            "SELECT name FROM system.tables WHERE database = ? AND engine = 'Distributed' \
             AND position(engine_full, 'rand()') > 0",
        )
        .bind(&distributed)
        .fetch_all()
        .await?;
    for table in replicated {
        if local.get(&table) == present.get(&table) && !random.contains(&table) {
            continue;
        }
        for statement in distributed_table(database, cluster, &table) {
            client.query(&statement).execute().await?;
        }
        tracing::info!(table, database = %distributed, "distributed table created");
    }
    Ok(())
}

/// The statements that (re)create the `Distributed` table over `database.table`. Its
/// sharding key is 0: what is inserted through it (reporting-api's own tables: users,
/// sessions, exchange rates, the audit log) goes to the first shard, whole, where
/// postback-dispatcher reads the exchange rates through its own server and a
/// `ReplacingMergeTree`'s versions of one key meet; the sink writes each shard's local
/// tables itself (`crate::shards`).
pub fn distributed_table(database: &str, cluster: &str, table: &str) -> [String; 2] {
    let distributed = distributed_database(database);
    [
        format!("DROP TABLE IF EXISTS {distributed}.{table} ON CLUSTER {cluster}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {distributed}.{table} ON CLUSTER {cluster} \
             AS {database}.{table} ENGINE = Distributed({cluster}, {database}, {table}, 0)"
        ),
    ]
}

/// Each table of `database` with its columns, `name type` joined by commas.
async fn columns(
    client: &Client,
    database: &str,
) -> Result<BTreeMap<String, String>, clickhouse::error::Error> {
    let rows: Vec<(String, String)> = client
        .query(
            "SELECT table, arrayStringConcat(groupArray(concat(name, ' ', type)), ',') \
             FROM (SELECT table, name, type FROM system.columns WHERE database = ?) \
             GROUP BY table",
        )
        .bind(database)
        .fetch_all()
        .await?;
    Ok(rows.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_become_replicated_on_the_cluster() {
        assert_eq!(
            rewrite(
                "CREATE TABLE IF NOT EXISTS flows\n(id UInt32)\nENGINE = ReplacingMergeTree(revision)\nORDER BY id",
                "traffsure",
                "c"
            ),
            "CREATE TABLE IF NOT EXISTS flows ON CLUSTER c\n(id UInt32)\n\
             ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/traffsure.flows', '{replica}', revision)\n\
             ORDER BY id"
        );
        assert_eq!(
            rewrite(
                "CREATE TABLE IF NOT EXISTS s (a UInt8) ENGINE = MergeTree PARTITION BY a ORDER BY a",
                "db",
                "c"
            ),
            "CREATE TABLE IF NOT EXISTS s ON CLUSTER c (a UInt8) \
             ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db.s', '{replica}') PARTITION BY a ORDER BY a"
        );
        assert_eq!(
            rewrite(
                "CREATE TABLE t (a UInt8) ENGINE = SummingMergeTree() ORDER BY a",
                "db",
                "c"
            ),
            "CREATE TABLE t ON CLUSTER c (a UInt8) \
             ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/db.t', '{replica}') ORDER BY a"
        );
    }

    #[test]
    fn views_name_their_tables_with_the_database() {
        assert_eq!(
            rewrite(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS v TO r AS\nSELECT toStartOfHour(ts) AS hour, count() AS n\n\
                 FROM clicks LEFT JOIN flows USING flow_id WHERE x IN (SELECT y FROM numbers(3)) GROUP BY hour",
                "db",
                "c"
            ),
            "CREATE MATERIALIZED VIEW IF NOT EXISTS v ON CLUSTER c TO db.r AS\n\
             SELECT toStartOfHour(ts) AS hour, count() AS n\n\
             FROM db.clicks LEFT JOIN db.flows USING flow_id WHERE x IN (SELECT y FROM numbers(3)) GROUP BY hour"
        );
        assert_eq!(
            rewrite("CREATE VIEW w AS SELECT 1 FROM other.t", "db", "c"),
            "CREATE VIEW w ON CLUSTER c AS SELECT 1 FROM other.t"
        );
    }

    #[test]
    fn drops_run_on_the_cluster_and_alters_and_inserts_replicate() {
        let alter = "ALTER TABLE clicks ADD COLUMN asn UInt32 AFTER ip";
        assert_eq!(rewrite(alter, "db", "c"), alter);
        assert_eq!(
            rewrite("DROP TABLE IF EXISTS x", "db", "c"),
            "DROP TABLE IF EXISTS x ON CLUSTER c"
        );
        let insert = "INSERT INTO sink_checkpoints SELECT 'clicks', 1 FROM clicks";
        assert_eq!(rewrite(insert, "db", "c"), insert);
    }

    #[test]
    fn staging_engines_drop_the_replication() {
        assert_eq!(
            local_engine(
                "ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/db.r', '{replica}') \
                 PARTITION BY toYYYYMM(hour) ORDER BY (hour, x) SETTINGS index_granularity = 8192"
            ),
            "SummingMergeTree() PARTITION BY toYYYYMM(hour) ORDER BY (hour, x) SETTINGS index_granularity = 8192"
        );
        assert_eq!(
            local_engine("ReplicatedReplacingMergeTree('/p', '{replica}', revision) ORDER BY id"),
            "ReplacingMergeTree(revision) ORDER BY id"
        );
    }
}

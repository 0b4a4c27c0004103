//! Backfills of new rollups, written so that running one twice, or again after a crash
//! at any point, leaves the same rows: each month of the rollup is computed from its raw
//! table into a staging table and swapped in whole with `REPLACE PARTITION` (atomic per
//! partition on ClickHouse 18.16), never added to what is there.
//!
//! A rollup's content is a function of its raw table alone (its materialized view adds
//! each raw row as it is inserted, and the rebuild computes the same rows from the raw
//! table), so the month computed from raw also covers rows the view added while the
//! migration ran. What it does not cover is a raw row written between the read of its
//! month and the swap: the migrations run before any process of this version writes,
//! and writers of an older version must be stopped while a migration with a rebuild runs
//! (deploy/README.md says so).

use clickhouse::Client;

/// One rollup filled from its raw table.
#[derive(Debug, Clone, Copy)]
pub struct Rebuild {
    /// The rollup, partitioned by `toYYYYMM(hour)`.
    pub target: &'static str,
    pub source: &'static str,
    /// The raw table's expression for the month a row's rollup row lands in.
    pub month: &'static str,
    /// `SELECT`s of rollup rows from `source`, each ending in a `WHERE` clause that the
    /// rebuild extends with the month.
    pub selects: &'static [&'static str],
}

/// A step of a rebuild, named for the hook tests kill a migrator at.
pub fn step_name(step: &str, target: &str, month: u32) -> String {
    format!("{step} {target} {month}")
}

/// Recomputes every month of `rebuild.target` that its raw table holds. `owner` keeps
/// the staging table apart from any other migrator's; `hook` is called after each step.
/// A `replicated` target gets a staging table of its engine without the replication:
/// local to the server the migrator talks to, whose `REPLACE PARTITION` replicates.
pub(crate) async fn run(
    client: &Client,
    rebuild: &Rebuild,
    replicated: bool,
    owner: &str,
    hook: &(dyn Fn(&str) + Send + Sync),
) -> Result<(), clickhouse::error::Error> {
    let stage = format!(
        "{}_rebuild_{}",
        rebuild.target,
        &owner[..owner.len().min(12)]
    );
    client
        .query(&format!("DROP TABLE IF EXISTS {stage}"))
        .execute()
        .await?;
    let engine = if replicated {
        let engine_full: String = client
            .query(
                "SELECT engine_full FROM system.tables \
                 WHERE database = currentDatabase() AND name = ?",
            )
            .bind(rebuild.target)
            .fetch_one()
            .await?;
        format!(" ENGINE = {}", crate::cluster::local_engine(&engine_full))
    } else {
        String::new()
    };
    client
        .query(&format!(
            "CREATE TABLE {stage} AS {}{engine}",
            rebuild.target
        ))
        .execute()
        .await?;
    let months: Vec<u32> = client
        .query(&format!(
            "SELECT DISTINCT toUInt32({}) AS m FROM {} ORDER BY m",
            rebuild.month, rebuild.source
        ))
        .fetch_all()
        .await?;
    for month in months {
        for select in rebuild.selects {
            let statement = month_select(select, rebuild.month, month);
            client
                .query(&format!("INSERT INTO {stage} {statement}"))
                .execute()
                .await?;
        }
        hook(&step_name("staged", rebuild.target, month));
        client
            .query(&format!(
                "ALTER TABLE {} REPLACE PARTITION {month} FROM {stage}",
                rebuild.target
            ))
            .execute()
            .await?;
        hook(&step_name("replaced", rebuild.target, month));
        client
            .query(&format!("ALTER TABLE {stage} DROP PARTITION {month}"))
            .execute()
            .await?;
        tracing::info!(table = rebuild.target, month, "rollup month rebuilt");
    }
    client
        .query(&format!("DROP TABLE IF EXISTS {stage}"))
        .execute()
        .await
}

/// Staging tables left by migrators that died, `<target>_rebuild_<owner>`.
pub(crate) async fn drop_leftovers(
    client: &Client,
    rebuilds: &[Rebuild],
) -> Result<(), clickhouse::error::Error> {
    for rebuild in rebuilds {
        let tables: Vec<String> = client
            .query(
                "SELECT name FROM system.tables \
                 WHERE database = currentDatabase() AND startsWith(name, ?)",
            )
            .bind(format!("{}_rebuild_", rebuild.target))
            .fetch_all()
            .await?;
        for table in tables {
            client
                .query(&format!("DROP TABLE IF EXISTS {table}"))
                .execute()
                .await?;
        }
    }
    Ok(())
}

/// `select` restricted to the rows of one month. A `GROUP BY` stays last.
fn month_select(select: &str, month_expr: &str, month: u32) -> String {
    let condition = format!("AND {month_expr} = {month}");
    match select.find(" GROUP BY ") {
        Some(at) => format!("{} {condition}{}", &select[..at], &select[at..]),
        None => format!("{select} {condition}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restricts_a_select_to_one_month_before_its_group_by() {
        assert_eq!(
            month_select("SELECT a FROM t WHERE x != 0", "toYYYYMM(ts)", 202611),
            "SELECT a FROM t WHERE x != 0 AND toYYYYMM(ts) = 202611"
        );
        assert_eq!(
            month_select(
                "SELECT a, sum(b) FROM t WHERE x != 0 GROUP BY a",
                "toYYYYMM(ts)",
                202611
            ),
            "SELECT a, sum(b) FROM t WHERE x != 0 AND toYYYYMM(ts) = 202611 GROUP BY a"
        );
    }
}

//! The schema statements of cluster mode parse on a current ClickHouse (26.x, through
//! chdb-core): every migration statement as `clickhouse.cluster` rewrites it, the
//! `Distributed` tables over them, and the staging engine of a rollup rebuild. chdb has
//! no ZooKeeper or Keeper, so replicated tables cannot be created in it: the statements
//! are checked with `EXPLAIN AST`, which parses without running. They run for real on
//! ClickHouse 18.16 with ZooKeeper in the cluster tests (`cluster_faults`).

use traffsure_clickhouse::cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_schema_statements_parse_on_current_clickhouse() -> anyhow::Result<()> {
    let mut statements = Vec::new();
    for (version, name, sql) in traffsure_clickhouse::MIGRATIONS {
        for statement in traffsure_clickhouse::statements(sql) {
            let rewritten = cluster::rewrite(&statement, "traffsure", "traffsure");
            statements.push((format!("migration {version} {name}"), rewritten));
        }
    }
    let creates = statements
        .iter()
        .filter(|(_, s)| s.starts_with("CREATE TABLE"))
        .count();
    let replicated = statements
        .iter()
        .filter(|(_, s)| s.contains("ON CLUSTER traffsure") && s.contains("ENGINE = Replicated"))
        .count();
    assert!(creates > 5, "{creates} tables");
    assert_eq!(creates, replicated, "every table replicated on the cluster");
    for table in ["clicks", "clicks_hourly", "sink_checkpoints"] {
        for statement in cluster::distributed_table("traffsure", "traffsure", table) {
            statements.push((format!("distributed {table}"), statement));
        }
    }
    let staging = cluster::local_engine(
        "ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/traffsure.clicks_cost_hourly', '{replica}') \
         PARTITION BY toYYYYMM(hour) ORDER BY (hour, flow_id) SETTINGS index_granularity = 8192",
    );
    statements.push((
        "rebuild staging".into(),
        format!("CREATE TABLE stage (hour DateTime, flow_id UInt32, cost_micros Int64) ENGINE = {staging}"),
    ));
    let explained: Vec<(String, String)> = statements
        .iter()
        .map(|(label, sql)| (label.clone(), format!("EXPLAIN AST {sql}")))
        .collect();
    let trees = traffsure_tests::chdb::run(&explained).await?;
    for ((label, sql), tree) in statements.iter().zip(&trees) {
        assert!(!tree.trim().is_empty(), "{label}: no syntax tree for {sql}");
    }
    // The staging table is an ordinary table: current ClickHouse creates it.
    let created = traffsure_tests::chdb::run(&statements[statements.len() - 1..]).await?;
    assert_eq!(created.len(), 1);
    Ok(())
}

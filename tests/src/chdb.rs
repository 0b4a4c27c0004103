//! Statements run on a current ClickHouse (26.x), in-process through the chdb-core
//! wheel that `deploy/local/install.sh` puts in `.local/chdb-venv`
//! (`deploy/clickhouse/chdb_run.py`), in one fresh session and database.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{bail, Context};
use tokio::io::AsyncWriteExt;

/// Runs `statements` (label, SQL) in order in the database `traffsure_check`; the answer
/// of each as TSV, or an error naming the first one refused.
pub async fn run(statements: &[(String, String)]) -> anyhow::Result<Vec<String>> {
    let python = std::env::var("TRAFFSURE_CHDB_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| crate::workspace_dir().join(".local/chdb-venv/bin/python"));
    if !python.exists() {
        bail!(
            "{} is missing: run deploy/local/install.sh (make test does)",
            python.display()
        );
    }
    let mut sql = vec![
        "CREATE DATABASE IF NOT EXISTS traffsure_check".to_string(),
        "USE traffsure_check".to_string(),
    ];
    sql.extend(statements.iter().map(|(_, s)| s.clone()));
    let mut child = tokio::process::Command::new(&python)
        .arg(crate::workspace_dir().join("deploy/clickhouse/chdb_run.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start chdb_run.py")?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin
        .write_all(serde_json::to_string(&sql)?.as_bytes())
        .await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        bail!(
            "chdb_run.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    if lines.len() != sql.len() {
        bail!(
            "chdb_run.py answered {} of {} statements",
            lines.len(),
            sql.len()
        );
    }
    let mut results = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(2) {
        let (label, statement) = &statements[i - 2];
        if line["ok"] != true {
            bail!(
                "ClickHouse 26.x refused {label}: {statement}\n{}",
                line["error"]
            );
        }
        results.push(line["result"].as_str().unwrap_or_default().to_string());
    }
    Ok(results)
}

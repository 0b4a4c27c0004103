//! What became of each postback in the log: the attribution's decision from
//! `postback_results` (one per postback, however many copies the table holds before its
//! merges) and, for a postback tied to a conversion, that conversion's latest version.
//! A postback accepted but not decided yet is `held`; one postback-ingest refused never
//! reaches attribution and is `refused`.

use std::collections::HashMap;

use clickhouse::Client;
use serde::Deserialize;
use serde_json::{json, Value};
use traffsure_core::format_micros;
use traffsure_core::vocab::Vocabulary;
use traffsure_events::PostbackOutcome;

use crate::error::ApiError;
use crate::sql::Sql;

/// Accepted by postback-ingest, not decided by attribution yet.
pub const HELD: &str = "held";
/// Refused by postback-ingest, so never attributed.
pub const REFUSED: &str = "refused";
/// The log's reason for a postback postback-ingest accepted.
const ACCEPTED: &str = "accepted";

/// Every outcome a log entry can show: attribution's words, then `held` and `refused`.
pub fn words() -> Vec<&'static str> {
    let mut words = PostbackOutcome::words();
    words.extend([HELD, REFUSED]);
    words
}

/// `SELECT * FROM (SELECT <columns>, <result columns>, outcome FROM (<page>) ANY LEFT
/// JOIN (<results of the postbacks in ids>) USING postback_id) WHERE 1`: `page` selects
/// log rows with `reason` among `columns`, `ids` their postback ids. A postback without a
/// result joins empty strings, which the outcome reads as held or refused. Conditions on
/// `outcome` go after the closing `WHERE 1`: ClickHouse 18.16 filters wrongly on an alias
/// in the `WHERE` beside the join itself.
pub fn joined(columns: &'static str, page: &Sql, ids: &Sql) -> Sql {
    let mut sql = Sql::new("SELECT * FROM (SELECT ");
    sql.push(columns)
        .push(
            ", r_conversion_id, r_message, r_decided, if(r_outcome != '', r_outcome, if(reason = ",
        )
        .str(ACCEPTED)
        .push(", ")
        .str(HELD)
        .push(", ")
        .str(REFUSED)
        .push(")) AS outcome FROM (")
        .append(page)
        // argMax by decision time: a replayed copy of a result is the same decision.
        .push(
            ") AS logged ANY LEFT JOIN (SELECT postback_id, argMax(outcome, decided_at) AS r_outcome, \
             argMax(conversion_id, decided_at) AS r_conversion_id, \
             argMax(message, decided_at) AS r_message, \
             toString(max(decided_at)) AS r_decided \
             FROM postback_results WHERE postback_id IN (",
        )
        .append(ids)
        .push(") GROUP BY postback_id) AS decided USING postback_id) WHERE 1");
    sql
}

/// A joined row's decision: empty strings (and `held` or `refused`) when there is none.
#[derive(Debug)]
pub struct Decision {
    pub conversion_id: String,
    pub message: String,
    pub decided_at: String,
    pub outcome: String,
}

/// A conversion's latest version, and which postback wrote each version.
#[derive(Debug, clickhouse::Row, Deserialize)]
struct ConversionRow {
    conversion_id: String,
    latest_version: u32,
    status: String,
    revenue_micros: i64,
    currency: String,
    postback_ids: Vec<String>,
    versions: Vec<u32>,
}

/// The conversions the decisions name, by conversion id.
pub struct Conversions(HashMap<String, ConversionRow>);

impl Conversions {
    pub async fn load<'a>(
        client: &Client,
        conversion_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, ApiError> {
        let mut ids: Vec<&str> = conversion_ids
            .into_iter()
            .filter(|id| !id.is_empty())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(Self(HashMap::new()));
        }
        let mut sql = Sql::new(
            "SELECT conversion_id, max(version) AS latest_version, \
                    argMax(status, version) AS status, \
                    argMax(revenue_micros, version) AS revenue_micros, \
                    argMax(currency, version) AS currency, \
                    groupArray(postback_id) AS postback_ids, groupArray(version) AS versions \
             FROM conversions WHERE conversion_id IN (",
        );
        for (i, id) in ids.into_iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.str(id);
        }
        sql.push(") GROUP BY conversion_id");
        let rows = sql.query(client).fetch_all::<ConversionRow>().await?;
        Ok(Self(
            rows.into_iter()
                .map(|r| (r.conversion_id.clone(), r))
                .collect(),
        ))
    }

    /// The outcome fields of one log entry.
    pub fn fields(&self, postback_id: &str, decision: Decision) -> Value {
        let conversion = (!decision.conversion_id.is_empty())
            .then(|| self.conversion(postback_id, &decision.conversion_id));
        json!({
            "outcome": decision.outcome,
            "outcome_message": decision.message,
            "decided_at": (!decision.decided_at.is_empty()).then_some(decision.decided_at),
            "conversion": conversion,
        })
    }

    /// The conversion a postback is tied to: the version it wrote (none for a duplicate)
    /// and the conversion's current status and revenue. Its fields are null while the
    /// conversion is not in the table yet.
    fn conversion(&self, postback_id: &str, conversion_id: &str) -> Value {
        let Some(c) = self.0.get(conversion_id) else {
            return json!({
                "conversion_id": conversion_id,
                "version": null,
                "latest_version": null,
                "status": null,
                "revenue": null,
                "currency": null,
            });
        };
        let version = c
            .postback_ids
            .iter()
            .zip(&c.versions)
            .filter(|(id, _)| *id == postback_id)
            .map(|(_, v)| *v)
            .max();
        json!({
            "conversion_id": conversion_id,
            "version": version,
            "latest_version": c.latest_version,
            "status": c.status,
            "revenue": format_micros(c.revenue_micros),
            "currency": c.currency,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_the_vocabulary_then_held_and_refused() {
        let words = words();
        assert_eq!(words[..words.len() - 2], PostbackOutcome::words()[..]);
        assert_eq!(words[words.len() - 2..], [HELD, REFUSED]);
        assert!(!PostbackOutcome::words().contains(&HELD));
    }

    #[test]
    fn the_join_binds_every_value() {
        let mut page = Sql::new("SELECT a, reason FROM postback_log WHERE 1 AND b = ");
        page.str("x'");
        let ids = Sql::new("SELECT postback_id FROM postback_log WHERE 1");
        let sql = joined("a", &page, &ids);
        assert!(!sql.text().contains("x'"));
        assert!(sql.text().contains("ANY LEFT JOIN"));
        assert_eq!(sql.text().matches('?').count(), 4);
    }

    fn row(pairs: &[(&str, u32)], latest: u32) -> ConversionRow {
        ConversionRow {
            conversion_id: "c1".into(),
            latest_version: latest,
            status: "approved".into(),
            revenue_micros: 12_500_000,
            currency: "USD".into(),
            postback_ids: pairs.iter().map(|(p, _)| p.to_string()).collect(),
            versions: pairs.iter().map(|(_, v)| *v).collect(),
        }
    }

    fn decision(conversion_id: &str, outcome: &str) -> Decision {
        Decision {
            conversion_id: conversion_id.into(),
            message: String::new(),
            decided_at: String::new(),
            outcome: outcome.into(),
        }
    }

    #[test]
    fn an_entry_shows_the_version_it_wrote_and_the_latest_state() {
        // Two copies of version 1 before a merge change nothing.
        let c = Conversions(HashMap::from([(
            "c1".to_string(),
            row(&[("p1", 1), ("p1", 1), ("p2", 2)], 2),
        )]));
        let first = c.fields("p1", decision("c1", "converted"));
        assert_eq!(first["conversion"]["version"], 1);
        assert_eq!(first["conversion"]["latest_version"], 2);
        assert_eq!(first["conversion"]["revenue"], "12.5");
        assert_eq!(first["decided_at"], Value::Null);
        let duplicate = c.fields("p3", decision("c1", "duplicate"));
        assert_eq!(duplicate["conversion"]["version"], Value::Null);
        assert_eq!(duplicate["conversion"]["status"], "approved");
        let held = c.fields("p4", decision("", HELD));
        assert_eq!(held["conversion"], Value::Null);
        assert_eq!(held["outcome"], "held");
        let unsunk = c.fields("p5", decision("c9", "converted"));
        assert_eq!(unsunk["conversion"]["conversion_id"], "c9");
        assert_eq!(unsunk["conversion"]["status"], Value::Null);
    }
}

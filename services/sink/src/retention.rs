//! How long each table keeps its data: the settings, and the task that drops a
//! table's partitions once they are older than that (dropping is
//! `traffsure_clickhouse::retention`'s).

use std::time::Duration;

use clickhouse::Client;
use serde::Deserialize;
use traffsure_clickhouse::retention::{drop_expired, today};

/// Days of data each table keeps (0: everything); older partitions are dropped.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    clicks_days: u32,
    /// `impressions` and `impressions_hourly` (0: everything).
    impressions_days: u32,
    conversions_days: u32,
    postback_log_days: u32,
    postback_results_days: u32,
    outbound_log_days: u32,
    clicks_hourly_days: u32,
    conversions_hourly_days: u32,
    /// How often the partitions are checked.
    interval_secs: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            clicks_days: 0,
            impressions_days: 0,
            conversions_days: 0,
            postback_log_days: 93,
            postback_results_days: 0,
            outbound_log_days: 93,
            clicks_hourly_days: 0,
            conversions_hourly_days: 0,
            interval_secs: 3600,
        }
    }
}

impl RetentionSettings {
    /// Each table with its days; the reporting-currency, funnel, cost and payout rollups
    /// follow the rollups they sit beside.
    fn tables(&self) -> [(&'static str, u32); 17] {
        [
            ("clicks", self.clicks_days),
            ("conversions", self.conversions_days),
            ("postback_log", self.postback_log_days),
            ("postback_results", self.postback_results_days),
            ("outbound_log", self.outbound_log_days),
            ("clicks_hourly", self.clicks_hourly_days),
            ("conversions_hourly", self.conversions_hourly_days),
            ("conversions_hourly_currency", self.conversions_hourly_days),
            ("clicks_cost_hourly", self.clicks_hourly_days),
            ("clicks_funnel_hourly", self.clicks_hourly_days),
            ("conversions_funnel_hourly", self.conversions_hourly_days),
            ("conversions_payout_hourly", self.conversions_hourly_days),
            ("impressions", self.impressions_days),
            ("impressions_hourly", self.impressions_days),
            ("impression_costs_hourly", self.impressions_days),
            ("click_costs_hourly", self.clicks_hourly_days),
            ("conversion_costs_hourly", self.conversions_hourly_days),
        ]
    }
}

/// Drops expired partitions now and then every `interval_secs`.
pub async fn enforce(client: Client, settings: RetentionSettings) {
    let mut tick = tokio::time::interval(Duration::from_secs(settings.interval_secs.max(1)));
    loop {
        tick.tick().await;
        for (table, days) in settings.tables() {
            if let Err(error) = drop_expired(&client, table, days, today()).await {
                tracing::warn!(table, %error, "retention check failed");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Tables the migrations create that retention leaves whole on purpose: state,
    /// settings, bookkeeping and what users entered (the audit log's partitions are
    /// dropped by hand, as its migration says), not events that pile up with traffic.
    const KEPT_WHOLE: &[&str] = &[
        "flows",
        "sink_checkpoints",
        "exchange_rates",
        "admin_session_revocations",
        "tracker_objects",
        "cost_updates",
        "users",
        "user_api_keys",
        "audit_log",
        "user_settings",
        "sink_inserts",
    ];

    /// The first name in `sql` right after the word `keyword` (any case).
    fn name_after<'a>(sql: &'a str, keyword: &str) -> Option<&'a str> {
        let words: Vec<&str> = sql.split_whitespace().collect();
        words.windows(2).find_map(|pair| {
            let name = pair[1].trim_end_matches([';', ',']);
            let is_name =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            (pair[0].eq_ignore_ascii_case(keyword) && is_name).then_some(name)
        })
    }

    /// Every `CREATE TABLE` of the migrations, and every materialized view's target with
    /// the table it reads.
    fn schema() -> (Vec<String>, Vec<(String, String)>) {
        let (mut tables, mut views) = (Vec::new(), Vec::new());
        for (_, _, sql) in traffsure_clickhouse::MIGRATIONS {
            for statement in traffsure_clickhouse::statements(sql) {
                let upper = statement.to_ascii_uppercase();
                if upper.contains("CREATE TABLE") {
                    let name = name_after(&statement, "EXISTS").unwrap();
                    tables.push(name.to_string());
                } else if upper.contains("CREATE MATERIALIZED VIEW") {
                    let target = name_after(&statement, "TO").unwrap();
                    let source = name_after(&statement, "FROM").unwrap();
                    views.push((target.to_string(), source.to_string()));
                }
            }
        }
        (tables, views)
    }

    /// Settings with a different number of days for every setting.
    fn distinct() -> RetentionSettings {
        RetentionSettings {
            clicks_days: 1,
            impressions_days: 2,
            conversions_days: 3,
            postback_log_days: 4,
            postback_results_days: 5,
            outbound_log_days: 6,
            clicks_hourly_days: 7,
            conversions_hourly_days: 8,
            interval_secs: 1,
        }
    }

    #[test]
    fn every_table_of_the_migrations_is_dropped_or_kept_on_purpose() {
        let (tables, _) = schema();
        assert!(tables.iter().any(|t| t == "clicks"), "{tables:?}");
        let settings = distinct();
        let dropped: Vec<&str> = settings.tables().iter().map(|(t, _)| *t).collect();
        for table in &tables {
            assert!(
                dropped.contains(&table.as_str()) || KEPT_WHOLE.contains(&table.as_str()),
                "retention does not know {table}"
            );
        }
        for table in &dropped {
            assert!(tables.iter().any(|t| t == table), "no table {table}");
            assert!(!KEPT_WHOLE.contains(table), "{table}");
        }
        let mut unique = dropped.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), dropped.len(), "{dropped:?}");
    }

    #[test]
    fn every_rollup_follows_the_hourly_rollup_of_its_source() {
        // A rollup fed from `clicks` keeps what `clicks_hourly` keeps, one fed from
        // `conversions` what `conversions_hourly` keeps, and so on.
        let settings = distinct();
        let days = |table: &str| {
            settings
                .tables()
                .iter()
                .find(|(t, _)| *t == table)
                .map(|(_, days)| *days)
        };
        let (_, views) = schema();
        let rollups: Vec<_> = views
            .iter()
            .filter(|(target, _)| !KEPT_WHOLE.contains(&target.as_str()))
            .collect();
        assert!(
            rollups
                .iter()
                .any(|(t, _)| t == "conversions_payout_hourly"),
            "{rollups:?}"
        );
        for (target, source) in rollups {
            let hourly = format!("{source}_hourly");
            assert!(days(&hourly).is_some(), "{source} has no hourly rollup");
            assert_eq!(days(target), days(&hourly), "{target} (from {source})");
        }
    }
}

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
    /// Each table with its days; the reporting-currency and funnel rollups follow the
    /// rollups they sit beside.
    fn tables(&self) -> [(&'static str, u32); 16] {
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

//! The fraud signals of a click — its autonomous system, whether its address is a
//! datacenter's, whether it exceeded this instance's per-address click rate — and
//! whether they make it a bot (`fraud.datacenter_is_bot`, `fraud.rate_is_bot`). The
//! lookups are `asn`, `hosting` and `rate`'s; the rules that test the signals are
//! `traffsure_core::routing`'s.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use traffsure_events::BotReason;

use crate::asn::AsnDatabase;
use crate::attributes::CityDatabase;
use crate::hosting::HostingRanges;
use crate::rate::RateLimiter;

/// `[fraud]` settings (docs/configuration.md).
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FraudSettings {
    /// ASN database: a directory with ip-location-db's `asn-ipv4.csv`/`asn-ipv6.csv`, one
    /// such CSV file, or a GeoLite2-ASN-layout `.mmdb`; empty = none.
    pub asn_database: String,
    /// iporigin's range table (`ranges.bin`); empty = no datacenter flag.
    pub hosting_ranges: String,
    /// Comma-separated range kinds that count as datacenter.
    pub datacenter_kinds: String,
    /// Datacenter clicks are bots (bot reason `datacenter`).
    pub datacenter_is_bot: bool,
    /// Most clicks one address may send to this instance within the window; 0 = off.
    pub rate_max_clicks: u32,
    pub rate_window_seconds: u32,
    /// Addresses the rate counter remembers at most (about 64 bytes each).
    pub rate_max_addresses: usize,
    /// Clicks over the rate are bots (bot reason `rate`).
    pub rate_is_bot: bool,
    /// City database (MMDB, ip-location-db or GeoIP2 city layout) for the `city` and
    /// `region` rule conditions; empty = none.
    pub city_database: String,
}

impl Default for FraudSettings {
    fn default() -> Self {
        Self {
            asn_database: String::new(),
            hosting_ranges: String::new(),
            datacenter_kinds: "hosting,cdn".into(),
            datacenter_is_bot: false,
            rate_max_clicks: 0,
            rate_window_seconds: 60,
            rate_max_addresses: 1_000_000,
            rate_is_bot: false,
            city_database: String::new(),
        }
    }
}

/// The loaded databases and the rate counter.
pub struct Signals {
    asn: AsnDatabase,
    hosting: HostingRanges,
    rate: RateLimiter,
    pub city: CityDatabase,
    datacenter_is_bot: bool,
    rate_is_bot: bool,
}

/// What the signals say about one click.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Assessment<'a> {
    pub asn: u32,
    pub as_org: &'a str,
    pub datacenter: bool,
    pub rate_exceeded: bool,
}

impl Signals {
    pub fn open(settings: &FraudSettings) -> anyhow::Result<Self> {
        if settings.rate_max_clicks > 0 && settings.rate_window_seconds == 0 {
            anyhow::bail!("fraud.rate_window_seconds: must be at least 1");
        }
        let kinds: Vec<String> = settings
            .datacenter_kinds
            .split(',')
            .map(|k| k.trim().to_ascii_lowercase())
            .filter(|k| !k.is_empty())
            .collect();
        let signals = Self {
            asn: AsnDatabase::open(&settings.asn_database).context("fraud.asn_database")?,
            hosting: HostingRanges::open(&settings.hosting_ranges, &kinds)
                .context("fraud.hosting_ranges")?,
            rate: RateLimiter::new(
                settings.rate_max_clicks,
                Duration::from_secs(u64::from(settings.rate_window_seconds)),
                settings.rate_max_addresses,
            ),
            city: CityDatabase::open(&settings.city_database).context("fraud.city_database")?,
            datacenter_is_bot: settings.datacenter_is_bot,
            rate_is_bot: settings.rate_is_bot,
        };
        tracing::info!(
            asn_ranges = signals.asn.len(),
            hosting_ranges = signals.hosting.len(),
            rate_max_clicks = settings.rate_max_clicks,
            rate_window_seconds = settings.rate_window_seconds,
            "fraud signals ready"
        );
        Ok(signals)
    }

    /// Looks the click's address up and counts it.
    pub fn assess(&self, ip: Option<IpAddr>) -> Assessment<'_> {
        let Some(ip) = ip else {
            return Assessment::default();
        };
        let info = self.asn.lookup(ip);
        Assessment {
            asn: info.asn,
            as_org: info.org,
            datacenter: self.hosting.datacenter(ip).is_some(),
            rate_exceeded: self.rate.exceeded(ip),
        }
    }

    /// Whether a click is a bot, and why, given whether it already is one and for what
    /// reason: a bot stays one for its reason; otherwise the signals may make it one.
    pub fn bot(&self, already: Option<BotReason>, found: &Assessment<'_>) -> Option<BotReason> {
        already
            .or((self.datacenter_is_bot && found.datacenter).then_some(BotReason::Datacenter))
            .or((self.rate_is_bot && found.rate_exceeded).then_some(BotReason::Rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signals_make_bots_only_when_set_to() {
        let mut signals =
            Signals::open(&FraudSettings::default()).unwrap_or_else(|e| panic!("{e}"));
        let dc = Assessment {
            datacenter: true,
            ..Assessment::default()
        };
        let fast = Assessment {
            rate_exceeded: true,
            ..Assessment::default()
        };
        assert_eq!(signals.bot(None, &dc), None);
        signals.datacenter_is_bot = true;
        signals.rate_is_bot = true;
        assert_eq!(signals.bot(None, &dc), Some(BotReason::Datacenter));
        assert_eq!(signals.bot(None, &fast), Some(BotReason::Rate));
        assert_eq!(
            signals.bot(Some(BotReason::Crawler), &dc),
            Some(BotReason::Crawler)
        );
        assert_eq!(signals.bot(None, &Assessment::default()), None);
        assert_eq!(signals.assess(None), Assessment::default());
    }
}

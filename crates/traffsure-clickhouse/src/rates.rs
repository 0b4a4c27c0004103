//! Which exchange rate converts an amount to the reporting currency. Rates are data
//! (`exchange_rates`: how many units of a currency one unit of a base buys on a day). An
//! amount of day D (UTC) in currency C is converted through a base quoting both C and the
//! reporting currency R, with the rate of each on D or, when D has none, on the nearest
//! earlier day that has one (cross rate `R / C`; the base itself counts 1). A later day's
//! rate never applies. An amount with no such rate is not converted: what to do with it
//! (count it apart, leave a macro empty) is the caller's decision.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use clickhouse::Client;
use serde::Deserialize;

/// The rates that may convert amounts of a range of days.
#[derive(Debug, Clone)]
pub struct Rates {
    reporting: String,
    /// (base, currency) → day (`YYYY-MM-DD`) → rate.
    quotes: HashMap<(String, String), BTreeMap<String, f64>>,
    bases: BTreeSet<String>,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct RateRow {
    day: String,
    base: String,
    currency: String,
    rate: f64,
}

impl Rates {
    pub fn new(reporting: &str) -> Self {
        Self {
            reporting: reporting.to_string(),
            quotes: HashMap::new(),
            bases: BTreeSet::new(),
        }
    }

    pub fn reporting(&self) -> &str {
        &self.reporting
    }

    pub fn insert(&mut self, day: &str, base: &str, currency: &str, rate: f64) {
        self.bases.insert(base.to_string());
        self.quotes
            .entry((base.to_string(), currency.to_string()))
            .or_default()
            .insert(day.to_string(), rate);
    }

    /// The rates of days `from..=to` (`YYYY-MM-DD`), and for each base and currency the
    /// latest rate before `from`, so the nearest earlier day is always at hand.
    pub async fn load(
        client: &Client,
        reporting: &str,
        from: &str,
        to: &str,
    ) -> Result<Self, clickhouse::error::Error> {
        let rows = client
            .query(&crate::queries::sql(
                "exchange_rates_for_days",
                "exchange_rates",
            ))
            .bind(to)
            .bind(from)
            .bind(from)
            .fetch_all::<RateRow>()
            .await?;
        let mut rates = Self::new(reporting);
        for row in rows {
            rates.insert(&row.day, &row.base, &row.currency, row.rate);
        }
        Ok(rates)
    }

    /// The rate of `currency` against `base` on `day` or the nearest earlier day, with
    /// the day it is from.
    fn quote(&self, base: &str, currency: &str, day: &str) -> Option<(String, f64)> {
        if currency == base {
            return Some((day.to_string(), 1.0));
        }
        self.quotes
            .get(&(base.to_string(), currency.to_string()))?
            .range(..=day.to_string())
            .next_back()
            .map(|(d, r)| (d.clone(), *r))
    }

    /// `amount_micros` of `currency` on `day` in the reporting currency, or `None` when
    /// no rate converts it. Of several bases, the one whose older quote is the most
    /// recent wins (then the first by name).
    pub fn convert(&self, amount_micros: i64, day: &str, currency: &str) -> Option<i64> {
        if currency == self.reporting {
            return Some(amount_micros);
        }
        let mut best: Option<(String, f64, f64)> = None;
        for base in &self.bases {
            let (Some((rd, r)), Some((cd, c))) = (
                self.quote(base, &self.reporting, day),
                self.quote(base, currency, day),
            ) else {
                continue;
            };
            let fresh = rd.min(cd);
            if best.as_ref().is_none_or(|(f, _, _)| fresh > *f) {
                best = Some((fresh, r, c));
            }
        }
        let (_, r, c) = best?;
        if !(r > 0.0 && c > 0.0) {
            return None;
        }
        let converted = (amount_micros as f64 * r / c).round();
        converted.is_finite().then_some(converted as i64)
    }
}

/// The UTC day (`YYYY-MM-DD`) of a time in milliseconds since 1970.
pub fn utc_day(ms: i64) -> String {
    // Civil from days (Howard Hinnant's algorithm).
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates() -> Rates {
        let mut r = Rates::new("USD");
        r.insert("2026-03-02", "EUR", "USD", 1.25);
        r.insert("2026-03-02", "EUR", "JPY", 187.5);
        r.insert("2026-03-04", "EUR", "USD", 1.5);
        r
    }

    #[test]
    fn cross_rates_convert_through_the_base() {
        let r = rates();
        assert_eq!(r.convert(10_000_000, "2026-03-02", "EUR"), Some(12_500_000));
        assert_eq!(
            r.convert(1_500_000_000, "2026-03-02", "JPY"),
            Some(10_000_000)
        );
        assert_eq!(r.convert(7_000_000, "2026-01-01", "USD"), Some(7_000_000));
    }

    #[test]
    fn a_day_without_rates_takes_the_nearest_earlier_day() {
        let r = rates();
        assert_eq!(r.convert(10_000_000, "2026-03-03", "EUR"), Some(12_500_000));
        assert_eq!(r.convert(10_000_000, "2026-03-05", "EUR"), Some(15_000_000));
        // JPY of 03-02 with USD of 03-04: each currency's nearest earlier quote.
        assert_eq!(
            r.convert(1_500_000_000, "2026-03-04", "JPY"),
            Some(12_000_000)
        );
        assert_eq!(r.convert(10_000_000, "2026-03-01", "EUR"), None);
        assert_eq!(r.convert(10_000_000, "2026-03-05", "GBP"), None);
    }

    #[test]
    fn the_reporting_currency_may_be_the_base() {
        let mut r = rates();
        r.reporting = "EUR".into();
        assert_eq!(r.convert(12_500_000, "2026-03-02", "USD"), Some(10_000_000));
        assert_eq!(r.convert(3_000_000, "2026-03-02", "EUR"), Some(3_000_000));
    }

    #[test]
    fn utc_days_of_milliseconds() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(1_772_360_100_000), "2026-03-01");
        assert_eq!(utc_day(1_709_251_199_999), "2024-02-29");
    }
}

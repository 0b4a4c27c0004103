//! Money in the reporting currency for the API: the "without rate" figure (amounts no
//! rate converts, counted apart by currency and never summed into a total), the rows
//! `exchange_rates` takes, and the ECB rates file. Which rate converts an amount is
//! decided by `traffsure_clickhouse::rates`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};
use traffsure_core::format_micros;

pub use traffsure_clickhouse::rates::Rates;

/// One stored rate, as `exchange_rates` takes it (RowBinary: `Date` is days since 1970).
#[derive(Debug, clickhouse::Row, Serialize)]
pub struct NewRate {
    pub day: u16,
    pub base: String,
    pub currency: String,
    pub rate: f64,
    pub updated_at: u32,
}

/// Amounts that had no rate, by currency: the number of conversions and their amount in
/// the currency the advertiser sent.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WithoutRate(pub BTreeMap<String, (i64, i64)>);

impl WithoutRate {
    pub fn add(&mut self, currency: &str, conversions: i64, amount_micros: i64) {
        let entry = self.0.entry(currency.to_string()).or_default();
        entry.0 += conversions;
        entry.1 += amount_micros;
    }

    pub fn merge(&mut self, other: &WithoutRate) {
        for (currency, (n, amount)) in &other.0 {
            self.add(currency, *n, *amount);
        }
    }

    pub fn conversions(&self) -> i64 {
        self.0.values().map(|(n, _)| n).sum()
    }

    /// `{conversions, by_currency: [{currency, conversions, revenue}]}`.
    pub fn json(&self) -> Value {
        let by_currency: Vec<Value> = self
            .0
            .iter()
            .map(|(currency, (n, amount))| {
                json!({"currency": currency, "conversions": n, "revenue": format_micros(*amount)})
            })
            .collect();
        json!({"conversions": self.conversions(), "by_currency": by_currency})
    }
}

/// A currency code as rates and conversions carry it: three letters, upper case.
pub fn currency_code(value: &str) -> Option<String> {
    let code = value.trim().to_ascii_uppercase();
    (code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())).then_some(code)
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (ClickHouse's `Date`), if it is one.
pub fn day_number(date: &str) -> Option<u16> {
    let b = date.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = date.get(0..4)?.parse().ok()?;
    let m: i64 = date.get(5..7)?.parse().ok()?;
    let d: i64 = date.get(8..10)?.parse().ok()?;
    let month_days = [
        31,
        28 + i64::from(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)),
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d < 1 || d > month_days[(m - 1) as usize] {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u16::try_from(days).ok()
}

/// A date of the ECB files: `2026-12-04` (history) or `4 December 2026` (daily file).
fn ecb_date(value: &str) -> Option<String> {
    let value = value.trim();
    if day_number(value).is_some() {
        return Some(value.to_string());
    }
    const MONTHS: [&str; 12] = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    let mut parts = value.split_whitespace();
    let (d, m, y) = (parts.next()?, parts.next()?, parts.next()?);
    let m = MONTHS.iter().position(|n| n.eq_ignore_ascii_case(m))? + 1;
    let date = format!("{y:0>4}-{m:02}-{:0>2}", d);
    day_number(&date).map(|_| date)
}

/// The rates of an ECB-layout CSV (`Date,USD,JPY,...` then one line per day, base EUR):
/// `(day, currency, rate)`. Empty and `N/A` cells are days without that rate.
pub fn parse_ecb(text: &str) -> Result<Vec<(String, String, f64)>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().ok_or("the file is empty")?;
    let mut columns = header.split(',');
    if !columns.next().is_some_and(|c| {
        c.trim()
            .trim_start_matches('\u{feff}')
            .eq_ignore_ascii_case("date")
    }) {
        return Err("the first column must be Date".into());
    }
    let currencies: Vec<Option<String>> = columns
        .map(|c| {
            let c = c.trim();
            if c.is_empty() {
                Ok(None)
            } else {
                currency_code(c)
                    .map(Some)
                    .ok_or_else(|| format!("column {c:?} is not a currency code"))
            }
        })
        .collect::<Result<_, String>>()?;
    let mut rates = Vec::new();
    for (n, line) in lines.enumerate() {
        let mut cells = line.split(',');
        let date = cells.next().unwrap_or_default();
        let day = ecb_date(date).ok_or_else(|| format!("line {}: bad date {date:?}", n + 2))?;
        for (currency, cell) in currencies.iter().zip(cells) {
            let (Some(currency), cell) = (currency, cell.trim()) else {
                continue;
            };
            if cell.is_empty() || cell.eq_ignore_ascii_case("N/A") {
                continue;
            }
            match cell.parse::<f64>() {
                Ok(rate) if rate.is_finite() && rate > 0.0 => {
                    rates.push((day.clone(), currency.clone(), rate))
                }
                _ => return Err(format!("line {}: bad rate {cell:?} for {currency}", n + 2)),
            }
        }
    }
    Ok(rates)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn without_rate_sums_by_currency() {
        let mut w = WithoutRate::default();
        w.add("GBP", 2, 5_000_000);
        w.add("GBP", 1, 1_000_000);
        w.add("CHF", 1, 2_000_000);
        assert_eq!(w.conversions(), 4);
        assert_eq!(
            w.json(),
            json!({"conversions": 4, "by_currency": [
                {"currency": "CHF", "conversions": 1, "revenue": "2"},
                {"currency": "GBP", "conversions": 3, "revenue": "6"},
            ]})
        );
    }

    #[test]
    fn ecb_files_are_read_in_both_layouts() {
        let hist = "Date,USD,JPY,BGN,\n2026-03-02,1.25,187.5,N/A,\n2026-02-27,1.2,,1.9558,\n";
        assert_eq!(
            parse_ecb(hist).unwrap(),
            vec![
                ("2026-03-02".into(), "USD".into(), 1.25),
                ("2026-03-02".into(), "JPY".into(), 187.5),
                ("2026-02-27".into(), "USD".into(), 1.2),
                ("2026-02-27".into(), "BGN".into(), 1.9558),
            ]
        );
        let daily = "Date, USD, JPY, \n04 December 2026, 1.0841, 162.5, \n";
        assert_eq!(
            parse_ecb(daily).unwrap()[1],
            ("2026-12-04".into(), "JPY".into(), 162.5)
        );
        assert!(parse_ecb("Day,USD\n").is_err());
        assert!(parse_ecb("Date,USD\n2026-03-02,-1\n").is_err());
        assert!(parse_ecb("Date,USD\n2026-02-30,1\n").is_err());
        assert!(parse_ecb("Date,dollars\n").is_err());
    }

    #[test]
    fn day_numbers_are_clickhouse_dates() {
        assert_eq!(day_number("1970-01-01"), Some(0));
        assert_eq!(day_number("2026-03-02"), Some(20_514));
        assert_eq!(day_number("2024-02-29"), Some(19_782));
        assert_eq!(day_number("2023-02-29"), None);
        assert_eq!(day_number("2026-3-02"), None);
    }
}

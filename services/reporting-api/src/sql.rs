//! The one place where queries are put together. SQL text can only come from `&'static
//! str` (fragments written in this crate, and identifiers picked from allow-lists);
//! every value a user sends is a bound argument, escaped into a typed literal by the
//! clickhouse crate's `?` binding. ClickHouse 18.16 has no `{x:Type}` query parameters,
//! so this is what "bound" means on both old and new servers.

use clickhouse::query::Query;
use clickhouse::Client;
use traffsure_core::vocab::Vocabulary;
use traffsure_events::ConversionStatus;

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Str(String),
    U32(u32),
    I64(i64),
    U64(u64),
}

#[derive(Debug, Default, Clone)]
pub struct Sql {
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    pub fn new(text: &'static str) -> Self {
        Self {
            text: text.to_string(),
            args: Vec::new(),
        }
    }

    /// Appends trusted SQL text.
    pub fn push(&mut self, text: &'static str) -> &mut Self {
        debug_assert!(!text.contains('?'), "placeholders come from arg()");
        self.text.push_str(text);
        self
    }

    /// Appends a `?` placeholder bound to `arg`.
    pub fn arg(&mut self, arg: Arg) -> &mut Self {
        self.text.push('?');
        self.args.push(arg);
        self
    }

    pub fn str(&mut self, value: impl Into<String>) -> &mut Self {
        self.arg(Arg::Str(value.into()))
    }

    /// Appends another builder (its text and arguments, in order).
    pub fn append(&mut self, other: &Sql) -> &mut Self {
        self.text.push_str(&other.text);
        self.args.extend(other.args.iter().cloned());
        self
    }

    /// The columns `a, p, r, rev`: conversions approved, pending and rejected, and the
    /// approved revenue. `count` opens the aggregate that counts conversions in a status
    /// (`"sumIf(conversions, "` on a rollup, `"countIf("` on the raw table).
    pub fn conversions_by_status(&mut self, count: &'static str) -> &mut Self {
        let columns = [
            (ConversionStatus::Approved, " AS a, "),
            (ConversionStatus::Pending, " AS p, "),
            (ConversionStatus::Rejected, " AS r, "),
        ];
        for (status, alias) in columns {
            self.push("toInt64(")
                .push(count)
                .push("status = ")
                .str(status.word())
                .push("))")
                .push(alias);
        }
        self.push("toInt64(sumIf(revenue_micros, status = ")
            .str(ConversionStatus::Approved.word())
            .push(")) AS rev")
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn query(&self, client: &Client) -> Query {
        tracing::debug!(sql = %self.text(), args = self.args.len(), "query");
        let mut query = client.query(&self.text);
        for arg in &self.args {
            query = match arg {
                Arg::Str(s) => query.bind(s.as_str()),
                Arg::U32(v) => query.bind(*v),
                Arg::I64(v) => query.bind(*v),
                Arg::U64(v) => query.bind(*v),
            };
        }
        query
    }
}

/// Dates and times a filter accepts: `YYYY-MM-DD` or `YYYY-MM-DD[T ]HH:MM[:SS]`,
/// returned as `YYYY-MM-DD HH:MM:SS`. `end_of_day` turns a bare date into its last second.
pub fn parse_datetime(field: &str, value: &str, end_of_day: bool) -> Result<String, ApiError> {
    let bad = || {
        ApiError::invalid(
            field,
            format!("{field} must be YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS, got {value:?}"),
        )
    };
    let value = value.trim();
    let digits_at = |s: &str, positions: &[usize]| {
        positions
            .iter()
            .all(|&i| s.as_bytes().get(i).is_some_and(|b| b.is_ascii_digit()))
    };
    let date = value.get(..10).ok_or_else(bad)?;
    if !digits_at(date, &[0, 1, 2, 3, 5, 6, 8, 9]) || &date[4..5] != "-" || &date[7..8] != "-" {
        return Err(bad());
    }
    let (month, day): (u32, u32) = (
        date[5..7].parse().map_err(|_| bad())?,
        date[8..10].parse().map_err(|_| bad())?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    let rest = &value[10..];
    if rest.is_empty() {
        let time = if end_of_day { "23:59:59" } else { "00:00:00" };
        return Ok(format!("{date} {time}"));
    }
    let time = rest
        .strip_prefix('T')
        .or_else(|| rest.strip_prefix(' '))
        .ok_or_else(bad)?
        .trim_end_matches('Z');
    let time = match time.len() {
        5 => format!("{time}:00"),
        8 => time.to_string(),
        _ => return Err(bad()),
    };
    if !digits_at(&time, &[0, 1, 3, 4, 6, 7]) || &time[2..3] != ":" || &time[5..6] != ":" {
        return Err(bad());
    }
    let (h, m, s): (u32, u32, u32) = (
        time[0..2].parse().map_err(|_| bad())?,
        time[3..5].parse().map_err(|_| bad())?,
        time[6..8].parse().map_err(|_| bad())?,
    );
    if h > 23 || m > 59 || s > 59 {
        return Err(bad());
    }
    Ok(format!("{date} {time}"))
}

/// An IANA time zone name, checked for shape here and by ClickHouse before use.
pub fn check_timezone_shape(value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "timezone",
            format!("timezone must be an IANA name such as Europe/Berlin, got {value:?}"),
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn values_only_travel_as_arguments() {
        let mut sql = Sql::new("SELECT 1 WHERE a = ");
        sql.str("x' OR 1=1 --").push(" AND b = ").arg(Arg::U32(7));
        assert_eq!(sql.text(), "SELECT 1 WHERE a = ? AND b = ?");
        assert_eq!(sql.args.len(), 2);
        assert!(!sql.text().contains("OR 1=1"));
    }

    #[test]
    fn statuses_are_bound_words() {
        let mut sql = Sql::default();
        sql.conversions_by_status("countIf(");
        assert_eq!(
            sql.text(),
            "toInt64(countIf(status = ?)) AS a, toInt64(countIf(status = ?)) AS p, \
             toInt64(countIf(status = ?)) AS r, toInt64(sumIf(revenue_micros, status = ?)) AS rev"
        );
        assert_eq!(
            sql.args,
            ["approved", "pending", "rejected", "approved"].map(|w| Arg::Str(w.into()))
        );
    }

    #[test]
    fn datetimes_are_strict() {
        assert_eq!(
            parse_datetime("from", "2026-11-02", false).unwrap(),
            "2026-11-02 00:00:00"
        );
        assert_eq!(
            parse_datetime("to", "2026-11-02", true).unwrap(),
            "2026-11-02 23:59:59"
        );
        assert_eq!(
            parse_datetime("from", "2026-11-02T10:30", false).unwrap(),
            "2026-11-02 10:30:00"
        );
        assert_eq!(
            parse_datetime("from", "2026-11-02 10:30:05Z", false).unwrap(),
            "2026-11-02 10:30:05"
        );
        for bad in [
            "",
            "2026-13-01",
            "2026-1-01",
            "yesterday",
            "2026-11-02T25:00",
            "2026-11-02' OR '1",
        ] {
            let err = parse_datetime("from", bad, false).unwrap_err();
            assert!(
                matches!(err, ApiError::Invalid { ref field, .. } if field == "from"),
                "{bad}"
            );
        }
    }

    #[test]
    fn timezones_have_a_safe_shape() {
        assert!(check_timezone_shape("Europe/Berlin").is_ok());
        assert!(check_timezone_shape("Etc/GMT+3").is_ok());
        assert!(check_timezone_shape("UTC') --").is_err());
        assert!(check_timezone_shape("").is_err());
    }
}

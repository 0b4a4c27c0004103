//! Retention by dropping whole partitions: a table partitioned by day (`YYYYMMDD`) or by
//! month (`YYYYMM`) loses a partition once every day in it is older than the table's
//! retention. Unpartitioned tables are left alone.

use clickhouse::Client;

use crate::queries;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    let next = if month == 12 {
        days_from_civil(year + 1, 1, 1)
    } else {
        days_from_civil(year, month + 1, 1)
    };
    (next - days_from_civil(year, month, 1)) as u32
}

/// The last day (days since the epoch) a partition id `YYYYMMDD` or `YYYYMM` covers;
/// `None` for any other partition (`tuple()`, say).
pub fn partition_last_day(partition: &str) -> Option<i64> {
    if !partition.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| partition.get(range)?.parse::<u32>().ok();
    let year = i64::from(number(0..4)?);
    let month = number(4..6).filter(|m| (1..=12).contains(m))?;
    match partition.len() {
        6 => Some(days_from_civil(year, month, days_in_month(year, month))),
        8 => {
            let day = number(6..8).filter(|d| (1..=days_in_month(year, month)).contains(d))?;
            Some(days_from_civil(year, month, day))
        }
        _ => None,
    }
}

/// The partitions to drop so that `keep_days` whole days before `today` remain.
pub fn expired(partitions: &[String], today: i64, keep_days: u32) -> Vec<u64> {
    partitions
        .iter()
        .filter(|p| partition_last_day(p).is_some_and(|last| last < today - i64::from(keep_days)))
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Drops the partitions of `table` past `keep_days` (0 keeps everything) and returns them.
pub async fn drop_expired(
    client: &Client,
    table: &str,
    keep_days: u32,
    today: i64,
) -> Result<Vec<u64>, clickhouse::error::Error> {
    if keep_days == 0 {
        return Ok(Vec::new());
    }
    let partitions: Vec<String> = client
        .query(&queries::sql("table_partitions", table))
        .bind(table)
        .fetch_all()
        .await?;
    let expired = expired(&partitions, today, keep_days);
    for partition in &expired {
        client
            .query(&queries::sql("drop_partition", table))
            .bind(*partition)
            .execute()
            .await?;
        tracing::info!(table, partition, "dropped expired partition");
    }
    Ok(expired)
}

/// Today, in days since the epoch (UTC).
pub fn today() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs / 86_400) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(
            days_from_civil(2024, 2, 29) + 1,
            days_from_civil(2024, 3, 1)
        );
    }

    #[test]
    fn partitions_cover_their_last_day() {
        assert_eq!(
            partition_last_day("20260131"),
            Some(days_from_civil(2026, 1, 31))
        );
        assert_eq!(
            partition_last_day("202402"),
            Some(days_from_civil(2024, 2, 29))
        );
        assert_eq!(partition_last_day("tuple()"), None);
        assert_eq!(partition_last_day("20261399"), None);
        assert_eq!(partition_last_day("2026"), None);
    }

    #[test]
    fn drops_only_partitions_wholly_past_retention() {
        let today = days_from_civil(2026, 5, 10);
        let parts: Vec<String> = [
            "20260101", "20260209", "20260210", "20260211", "202601", "202602", "202603", "tuple()",
        ]
        .map(String::from)
        .to_vec();
        // Keeping 90 days before 2026-05-10 keeps 2026-02-09 onwards.
        assert_eq!(expired(&parts, today, 90), vec![20260101, 202601]);
        assert_eq!(expired(&parts, today, 0).len(), 7);
    }
}

//! Conversions' visitor details and fraud signals in reports (the `CLICK_ONLY`
//! dimensions and filters): each conversion stored since migration 25 carries its click's
//! (`visitor_details` = 1), so a report reads them from the conversions table alone. A
//! conversion stored before (`visitor_details` = 0) has none, and its values come from
//! its click, joined by click hash, as every report did before: the join runs only when
//! the report's range (or the list's) holds such a conversion. Either way a report's
//! conversions query reads the values under `v_<column>`; the list reads the table's own
//! columns when it can.

use std::sync::LazyLock;

use clickhouse::Client;

use super::parse::{Filters, CLICK_ONLY};
use super::query::Range;
use crate::error::ApiError;
use crate::filters::{eq, range_condition};
use crate::sql::{Arg, Sql};

/// Each `CLICK_ONLY` column: its `v_` name and how a report's key reads it.
const COLUMNS: &[(&str, &str, &str)] = &[
    ("browser_family", "v_browser_family", "v_browser_family"),
    ("browser_major", "v_browser_major", "v_browser_major"),
    ("browser_minor", "v_browser_minor", "v_browser_minor"),
    ("os_family", "v_os_family", "v_os_family"),
    ("os_major", "v_os_major", "v_os_major"),
    ("os_minor", "v_os_minor", "v_os_minor"),
    ("device_family", "v_device_family", "v_device_family"),
    ("device_brand", "v_device_brand", "v_device_brand"),
    ("device_model", "v_device_model", "v_device_model"),
    ("bot_reason", "v_bot_reason", "v_bot_reason"),
    ("asn", "v_asn", "toString(v_asn)"),
    ("as_org", "v_as_org", "v_as_org"),
    ("datacenter", "v_datacenter", "toString(v_datacenter)"),
    (
        "rate_exceeded",
        "v_rate_exceeded",
        "toString(v_rate_exceeded)",
    ),
];

fn entry(column: &str) -> Option<&'static (&'static str, &'static str, &'static str)> {
    COLUMNS.iter().find(|(c, _, _)| *c == column)
}

/// Whether a report groups or filters conversions by a `CLICK_ONLY` column.
pub fn uses_visitor_columns(dims: &[&'static str], filters: &Filters) -> bool {
    dims.iter().any(|d| CLICK_ONLY.contains(d)) || filters.on_click_only_columns()
}

/// How a report's key reads dimension `dim` (a `CLICK_ONLY` column) on conversions.
pub fn conversion_visitor_column(dim: &str) -> &'static str {
    entry(dim).map_or("''", |e| e.2)
}

/// The report's filters on `CLICK_ONLY` columns, on conversions.
pub fn conversion_visitor_filters(sql: &mut Sql, filters: &Filters) {
    for (column, value) in &filters.agent {
        if let Some((_, v, _)) = entry(column) {
            eq(sql, v, Arg::Str(value.clone()));
        }
    }
    if let Some(asn) = filters.asn {
        eq(sql, "v_asn", Arg::U32(asn));
    }
    if let Some(datacenter) = filters.datacenter {
        eq(sql, "v_datacenter", Arg::U32(u32::from(datacenter)));
    }
    if let Some(exceeded) = filters.rate_exceeded {
        eq(sql, "v_rate_exceeded", Arg::U32(u32::from(exceeded)));
    }
}

/// Conversions as they carry the visitor columns.
static STORED: LazyLock<String> = LazyLock::new(|| {
    let columns: Vec<String> = COLUMNS
        .iter()
        .map(|(c, v, _)| format!("{c} AS {v}"))
        .collect();
    format!("(SELECT *, {} FROM conversions)", columns.join(", "))
});

/// Conversions with the visitor columns they carry, or their click's where they were
/// stored without them (`visitor_details` = 0).
static JOINED: LazyLock<String> = LazyLock::new(|| {
    let merged: Vec<String> = COLUMNS
        .iter()
        .map(|(c, v, _)| format!("if(visitor_details = 1, {c}, c_{c}) AS {v}"))
        .collect();
    let clicks: Vec<String> = COLUMNS
        .iter()
        .map(|(c, _, _)| format!("{c} AS c_{c}"))
        .collect();
    format!(
        "(SELECT *, {} FROM conversions ANY LEFT JOIN (SELECT click_hash, {} FROM clicks) \
         AS clicked USING click_hash)",
        merged.join(", "),
        clicks.join(", ")
    )
});

/// The conversions a report grouped or filtered by visitor columns reads.
pub fn conversion_visitor_source(joined: bool) -> &'static str {
    if joined {
        JOINED.as_str()
    } else {
        STORED.as_str()
    }
}

/// Whether a conversion version in the report's range (and flow) was stored without its
/// click's visitor details: then the report reads them from the clicks.
pub async fn stored_without_visitor(
    client: &Client,
    filters: &Filters,
    range: &Range,
) -> Result<bool, ApiError> {
    let (from, to) = (Some(range.from.clone()), Some(range.to.clone()));
    stored_without_visitor_in(client, filters.flow, &from, &to, &filters.timezone).await
}

/// Whether a conversion version of `flow` created within `from`..`to` (either open) was
/// stored without its click's visitor details.
pub async fn stored_without_visitor_in(
    client: &Client,
    flow: Option<u32>,
    from: &Option<String>,
    to: &Option<String>,
    timezone: &str,
) -> Result<bool, ApiError> {
    let mut sql = Sql::new("SELECT count() FROM conversions WHERE visitor_details = 0");
    if let Some(flow) = flow {
        eq(&mut sql, "flow_id", Arg::U32(flow));
    }
    range_condition(&mut sql, "created_at", from, to, timezone);
    let old = sql.query(client).fetch_one::<u64>().await?;
    Ok(old > 0)
}

/// The conversion list's visitor columns, each conversion's latest version's, in the
/// order of `COLUMNS`: read from the table as stored, or from `conversion_visitor_source`
/// when `joined`.
pub fn list_select(joined: bool) -> &'static str {
    static SELECTS: LazyLock<[String; 2]> = LazyLock::new(|| {
        [false, true].map(|joined| {
            COLUMNS
                .iter()
                .map(|(c, v, _)| {
                    let read = if joined { v } else { c };
                    format!("argMax({read}, version) AS {c}_, ")
                })
                .collect()
        })
    });
    SELECTS[usize::from(joined)].as_str()
}

/// The conversions the list reads: the table, or with the clicks' values when `joined`.
pub fn list_source(joined: bool) -> &'static str {
    if joined {
        JOINED.as_str()
    } else {
        "conversions"
    }
}

/// The conversion list's filters on visitor columns (`AGENT_FILTERS`).
pub fn list_filters(sql: &mut Sql, agent: Vec<(&'static str, String)>, joined: bool) {
    for (column, value) in agent {
        if let Some((c, v, _)) = entry(column) {
            eq(sql, if joined { v } else { c }, Arg::Str(value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_click_only_column_has_its_conversion_column() {
        for column in CLICK_ONLY {
            assert!(entry(column).is_some(), "{column}");
        }
        assert_eq!(COLUMNS.len(), CLICK_ONLY.len());
    }

    #[test]
    fn stored_conversions_need_no_join_and_old_ones_join_their_click() {
        assert!(!conversion_visitor_source(false).contains("JOIN"));
        assert!(conversion_visitor_source(false).contains("asn AS v_asn"));
        let joined = conversion_visitor_source(true);
        assert!(joined.contains("ANY LEFT JOIN"), "{joined}");
        assert!(
            joined.contains(
                "if(visitor_details = 1, device_brand, c_device_brand) AS v_device_brand"
            ),
            "{joined}"
        );
    }
}

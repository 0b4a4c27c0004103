//! A report's SQL, built and run: clicks and conversions are aggregated by separate
//! queries (joined by group key in `merge`, which is simpler and more portable than a
//! FULL JOIN on ClickHouse 18.16). Each side reads its funnel rollup when the rollup has
//! every asked dimension and filter, the raw table otherwise. Filters a side has no column for
//! (a goal or `click_missing` on clicks) leave that side whole; conversions grouped or
//! filtered by a click's visitor details or fraud signals read the copies they carry, or
//! their click's where some were stored without (`super::visitor`). Conversions come by UTC day and currency as well, for `merge`
//! to convert their revenue.
//!
//! A click row is a visit or a lander click-through (`kind`, ClickKind's number): clicks,
//! bots and unique clicks count visits only; lander views, lander clicks and offer clicks
//! count people (no bots) at each step of the funnel (`FUNNEL`).

use clickhouse::Client;
use serde::Deserialize;

use super::parse::{Filters, ReportRequest, CLICK_ONLY, DIMENSIONS};
use super::visitor::{
    conversion_visitor_column, conversion_visitor_filters, conversion_visitor_source,
    stored_without_visitor, uses_visitor_columns,
};
use crate::currency::Rates;
use crate::error::ApiError;
use crate::filters::{eq, flow_condition, range_condition};
use crate::object_names::object_dimension;
use crate::sql::{Arg, Sql};

/// The dimensions both funnel rollups have: the first ten (time, flow, the objects,
/// country, source, sub_id); clicks' have the coarse device, OS and browser too,
/// conversions' the goal.
const ROLLUP_DIMS: &[&str] = DIMENSIONS.split_at(10).0;
const CLICK_ROLLUP_DIMS: &[&str] = &["device", "os", "browser"];
const CONVERSION_ROLLUP_DIMS: &[&str] = &["goal"];

/// Whether a rollup with `ROLLUP_DIMS` and `own` has dimension `dim`.
fn in_rollup(dim: &str, own: &[&str]) -> bool {
    ROLLUP_DIMS.contains(&dim) || own.contains(&dim)
}

/// The click counts of a report, each a condition on a click row (`kind` 1 is
/// ClickKind::LanderClick): visits (`c`, without bots), visits that showed a lander
/// (`lv`), lander click-throughs (`lc`), and clicks sent to an offer (`oc`: lander
/// click-throughs, and visits sent straight to an offer). Bots count in none of them.
pub const FUNNEL: &[(&str, &str)] = &[
    (" AS c, ", "kind != 1"),
    (" AS lv, ", "kind != 1 AND lander_id != 0"),
    (" AS lc, ", "kind = 1"),
    (" AS oc, ", "kind = 1 OR (lander_id = 0 AND offer_id != 0)"),
];

/// The time range a report covers, both bounds read in its time zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    pub from: String,
    pub to: String,
}

/// One group's clicks, as the clicks query returns them.
#[derive(Debug, clickhouse::Row, Deserialize)]
pub struct ClickAgg {
    pub keys: Vec<String>,
    pub clicks: i64,
    pub lander_views: i64,
    pub lander_clicks: i64,
    pub offer_clicks: i64,
    pub bots: i64,
    pub unique_clicks: u64,
}

/// One group's cost of one day (UTC) and currency (empty: the reporting currency), from
/// one cost source (`COST_*`), with the clicks it came from.
#[derive(Debug, clickhouse::Row, Deserialize)]
pub struct CostAgg {
    pub keys: Vec<String>,
    pub day: String,
    pub currency: String,
    pub cost_micros: i64,
    pub source: u8,
    pub clicks: u64,
}

/// Cost sources of `CostAgg` (CostSource's numbers in clicks.proto for clicks): the
/// tracking link, the flow's click model (cpc, cpm), the conversion models (cpa,
/// revshare).
pub const COST_LINK: u8 = 1;
pub const COST_MODEL: u8 = 2;
pub const COST_CONVERSION_MODEL: u8 = 3;

/// A click's cost source, a click of before cost models with a cost counted as the
/// link's (as the rebuild of `click_costs_hourly` does).
pub const CLICK_COST_SOURCE: &str =
    "if(cost_source = 0 AND cost_micros != 0, toUInt8(1), cost_source)";

/// One group's conversions of one day (UTC) and currency, as the conversions query
/// returns them: the day and currency pick the rate that converts the revenue.
#[derive(Debug, clickhouse::Row, Deserialize)]
pub struct ConversionAgg {
    pub keys: Vec<String>,
    pub day: String,
    pub currency: String,
    pub approved: i64,
    pub pending: i64,
    pub rejected: i64,
    pub revenue_micros: i64,
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Side {
    ClickRollup,
    ClickRaw,
    ConversionRollup,
    ConversionRaw,
}

impl Side {
    pub(super) fn time_column(self) -> &'static str {
        match self {
            Side::ClickRollup | Side::ConversionRollup => "hour",
            Side::ClickRaw => "ts",
            Side::ConversionRaw => "created_at",
        }
    }
}

/// The asked range, a missing bound filled in from the report's "today": by default the
/// last seven days up to the end of today.
pub async fn range(client: &Client, filters: &Filters) -> Result<Range, ApiError> {
    if let (Some(from), Some(to)) = (&filters.from, &filters.to) {
        return Ok(Range {
            from: from.clone(),
            to: to.clone(),
        });
    }
    let mut sql = Sql::new("SELECT toString(toDate(now(), ");
    sql.str(filters.timezone.as_str())
        .push(") - 6), toString(toDate(now(), ")
        .str(filters.timezone.as_str())
        .push("))");
    let (week_ago, today) = sql.query(client).fetch_one::<(String, String)>().await?;
    Ok(Range {
        from: filters
            .from
            .clone()
            .unwrap_or_else(|| format!("{week_ago} 00:00:00")),
        to: filters
            .to
            .clone()
            .unwrap_or_else(|| format!("{today} 23:59:59")),
    })
}

/// The rates that convert the report's revenue: its range read in any time zone spans
/// the UTC days from the day before `from` to the day after `to`.
pub async fn rates(client: &Client, reporting: &str, range: &Range) -> Result<Rates, ApiError> {
    let (from, to) = client
        .query(&traffsure_clickhouse::queries::sql(
            "rate_days_of_range",
            "exchange_rates",
        ))
        .bind(range.from.as_str())
        .bind(range.to.as_str())
        .fetch_one::<(String, String)>()
        .await?;
    Rates::load(client, reporting, &from, &to)
        .await
        .map_err(ApiError::from)
}

/// One group's impressions (people only), as the impressions query returns them.
#[derive(Debug, clickhouse::Row, Deserialize)]
pub struct ImpressionAgg {
    pub keys: Vec<String>,
    pub impressions: i64,
}

/// What both sides of a report return.
pub struct Sides {
    pub clicks: Vec<ClickAgg>,
    pub conversions: Vec<ConversionAgg>,
    /// Click costs, then impression costs (a pixel's own `cost` or a cpm model's).
    pub costs: Vec<CostAgg>,
    pub impressions: Vec<ImpressionAgg>,
    /// Approved payout by day and currency (docs/caps.md).
    pub payouts: Vec<PayoutAgg>,
}

/// One group's approved payout of one day (UTC) and payout currency.
#[derive(Debug, clickhouse::Row, Deserialize)]
pub struct PayoutAgg {
    pub keys: Vec<String>,
    pub day: String,
    pub currency: String,
    pub payout_micros: i64,
}

/// Runs both sides of the report (clicks with their costs, and conversions) at once.
pub async fn run(
    client: &Client,
    request: &ReportRequest,
    range: &Range,
) -> Result<Sides, ApiError> {
    let clicks = clicks_sql(&request.dims, &request.filters, range);
    let joined = uses_visitor_columns(&request.dims, &request.filters)
        && stored_without_visitor(client, &request.filters, range).await?;
    let conversions = conversions_sql_with(&request.dims, &request.filters, range, joined);
    let costs = costs_sql(&request.dims, &request.filters, range);
    let payouts = payouts_sql(&request.dims, &request.filters, range);
    let conversion_costs = conversion_costs_sql(&request.dims, &request.filters, range);
    let (clicks, conversions, mut costs, payouts, conversion_costs) = tokio::try_join!(
        clicks.query(client).fetch_all::<ClickAgg>(),
        conversions.query(client).fetch_all::<ConversionAgg>(),
        costs.query(client).fetch_all::<CostAgg>(),
        payouts.query(client).fetch_all::<PayoutAgg>(),
        conversion_costs.query(client).fetch_all::<CostAgg>(),
    )?;
    costs.extend(conversion_costs);
    let (mut impressions, mut impression_costs) =
        match impressions_sql(&request.dims, &request.filters, range) {
            Some((counts, costs)) => tokio::try_join!(
                counts.query(client).fetch_all::<ImpressionAgg>(),
                costs.query(client).fetch_all::<CostAgg>(),
            )?,
            None => (Vec::new(), Vec::new()),
        };
    // Grouped only by dimensions impressions lack, every key is the constant '', and
    // ClickHouse then aggregates without keys: one row of zeros even over no rows. A
    // group with nothing to add is no group.
    impressions.retain(|row| row.impressions != 0);
    impression_costs.retain(|row| row.cost_micros != 0);
    costs.extend(impression_costs);
    Ok(Sides {
        clicks,
        conversions,
        costs,
        impressions,
        payouts,
    })
}

/// The dimensions the impressions rollup (`impressions_hourly`) has; a report by any
/// other dimension counts its impressions under an empty key there.
const IMPRESSION_DIMS: &[&str] = &[
    "day",
    "hour",
    "flow",
    "traffic_source",
    "country",
    "source",
    "sub_id",
    "device",
    "os",
    "browser",
];

/// The impressions of a report, from `impressions_hourly`, and their cost by UTC day,
/// currency and cost source, from `impression_costs_hourly`; `None` when a filter names what impressions do not have (an
/// offer, lander or network, a click's visitor details or fraud signals): no impression
/// passes such a filter. A goal filter leaves them whole, as it leaves clicks.
fn impressions_sql(dims: &[&'static str], filters: &Filters, range: &Range) -> Option<(Sql, Sql)> {
    if filters.on_click_only_columns()
        || filters
            .objects
            .iter()
            .any(|(column, _)| *column != "traffic_source_id")
    {
        return None;
    }
    let side = Side::ClickRollup;
    let keys = |sql: &mut Sql| {
        sql.push("[");
        for (i, dim) in dims.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            if IMPRESSION_DIMS.contains(dim) {
                dimension_at(sql, dim, side, side.time_column(), &filters.timezone);
            } else if crate::object_names::object_dimension(dim).is_some() {
                // An impression goes through no offer, lander or network: the key clicks
                // without one have (id 0), so both land in one row.
                sql.push("'0'");
            } else {
                sql.push("''");
            }
        }
        sql.push("] AS keys");
    };
    let mut counts = Sql::new("SELECT ");
    keys(&mut counts);
    counts.push(", toInt64(sum(impressions - bots)) AS i FROM impressions_hourly");
    where_clause(&mut counts, filters, range, side);
    counts.push(" GROUP BY keys");
    let mut costs = Sql::new("SELECT ");
    keys(&mut costs);
    costs
        .push(", toString(toDate(hour, 'UTC')) AS d, cost_currency AS cur, ")
        // By where it came from: the pixel's own `cost` (link) or a cpm model per
        // impression (model), each costed impression counting for its source.
        .push("toInt64(sum(cost_micros)) AS cost, cost_source AS src, ")
        .push("toUInt64(sum(impressions)) AS n FROM impression_costs_hourly");
    where_clause(&mut costs, filters, range, side);
    costs.push(" GROUP BY keys, d, cur, src");
    Some((counts, costs))
}

/// The SQL for one dimension on one side; a side without such a column (clicks have no
/// goal) gives an empty key.
/// With the time read from `time` (a raw table may be read by the hour, as its rollup).
fn dimension_at(sql: &mut Sql, dim: &str, side: Side, time: &'static str, timezone: &str) {
    if let Some(object) = object_dimension(dim) {
        sql.push("toString(").push(object.column).push(")");
        return;
    }
    let column: Option<&'static str> = match dim {
        "day" => {
            sql.push("toString(toDate(")
                .push(time)
                .push(", ")
                .str(timezone)
                .push("))");
            return;
        }
        "hour" => {
            sql.push("toString(toStartOfHour(")
                .push(time)
                .push("), ")
                .str(timezone)
                .push(")");
            return;
        }
        "flow" => {
            sql.push("toString(flow_id)");
            return;
        }
        "goal" if matches!(side, Side::ClickRollup | Side::ClickRaw) => None,
        "goal" => Some("lower(goal)"),
        d if CLICK_ONLY.contains(&d) && side == Side::ConversionRollup => None,
        d if CLICK_ONLY.contains(&d) && side == Side::ConversionRaw => {
            sql.push(conversion_visitor_column(d));
            return;
        }
        "asn" => Some("toString(asn)"),
        "datacenter" => Some("toString(datacenter)"),
        "rate_exceeded" => Some("toString(rate_exceeded)"),
        other => DIMENSIONS.iter().find(|d| **d == other).copied(),
    };
    match column {
        Some(column) => sql.push(column),
        None => sql.push("''"),
    };
}

fn where_clause(sql: &mut Sql, filters: &Filters, range: &Range, side: Side) {
    where_clause_at(sql, filters, range, side, side.time_column())
}

/// `where_clause` with the range on `time` (a raw table read by the hour, as its rollup).
pub(super) fn where_clause_at(
    sql: &mut Sql,
    filters: &Filters,
    range: &Range,
    side: Side,
    time: &'static str,
) {
    sql.push(" WHERE 1");
    flow_condition(sql, "flow_id", filters.flow, &filters.scope);
    if let Some(country) = &filters.country {
        eq(sql, "country", Arg::Str(country.clone()));
    }
    if let Some(source) = &filters.source {
        eq(sql, "source", Arg::Str(source.clone()));
    }
    if let Some(sub_id) = &filters.sub_id {
        eq(sql, "sub_id", Arg::Str(sub_id.clone()));
    }
    for (column, id) in &filters.objects {
        eq(sql, column, Arg::U32(*id));
    }
    if let (Some(goal), Side::ConversionRaw | Side::ConversionRollup) = (&filters.goal, side) {
        sql.push(" AND lower(goal) = lower(")
            .str(goal.clone())
            .push(")");
    }
    // The rollup has no such column: a report filtered by it reads the raw table.
    if let (Some(missing), Side::ConversionRaw) = (filters.click_missing, side) {
        eq(sql, "click_missing", Arg::U32(u32::from(missing)));
    }
    if let (Some(over_cap), Side::ConversionRaw) = (filters.over_cap, side) {
        eq(sql, "over_cap", Arg::U32(u32::from(over_cap)));
    }
    if side == Side::ClickRaw {
        for (column, value) in &filters.agent {
            eq(sql, column, Arg::Str(value.clone()));
        }
        if let Some(asn) = filters.asn {
            eq(sql, "asn", Arg::U32(asn));
        }
        if let Some(datacenter) = filters.datacenter {
            eq(sql, "datacenter", Arg::U32(u32::from(datacenter)));
        }
        if let Some(exceeded) = filters.rate_exceeded {
            eq(sql, "rate_exceeded", Arg::U32(u32::from(exceeded)));
        }
    }
    if side == Side::ConversionRaw {
        conversion_visitor_filters(sql, filters);
    }
    let (from, to) = (Some(range.from.clone()), Some(range.to.clone()));
    // Rollup rows stand for whole hours: they keep the hours that start inside the range.
    range_condition(sql, time, &from, &to, &filters.timezone);
}

fn keys(sql: &mut Sql, dims: &[&'static str], side: Side, timezone: &str) {
    keys_at(sql, dims, side, side.time_column(), timezone)
}

/// `keys` with the time read from `time`.
pub(super) fn keys_at(
    sql: &mut Sql,
    dims: &[&'static str],
    side: Side,
    time: &'static str,
    timezone: &str,
) {
    sql.push("[");
    for (i, dim) in dims.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        dimension_at(sql, dim, side, time, timezone);
    }
    sql.push("] AS keys");
}

/// Clicks and costs read their rollups when they have every asked dimension and filter.
pub(super) fn click_side(dims: &[&'static str], filters: &Filters) -> (bool, Side) {
    let rollup =
        dims.iter().all(|d| in_rollup(d, CLICK_ROLLUP_DIMS)) && !filters.on_click_only_columns();
    (
        rollup,
        if rollup {
            Side::ClickRollup
        } else {
            Side::ClickRaw
        },
    )
}

fn clicks_sql(dims: &[&'static str], filters: &Filters, range: &Range) -> Sql {
    let (rollup, side) = click_side(dims, filters);
    let mut sql = Sql::new("SELECT ");
    keys(&mut sql, dims, side, &filters.timezone);
    sql.push(", ");
    for (alias, condition) in FUNNEL {
        if rollup {
            sql.push("toInt64(sumIf(clicks - bots, ");
        } else {
            sql.push("toInt64(countIf(is_bot = 0 AND (");
        }
        sql.push(condition)
            .push(if rollup { "))" } else { ")))" })
            .push(alias);
    }
    if rollup {
        sql.push("toInt64(sumIf(bots, kind != 1)) AS b, ");
        if filters.unique_clicks {
            sql.push("toUInt64(uniqMergeIf(unique_clicks, kind != 1))");
        } else {
            sql.push("toUInt64(0)");
        }
        sql.push(" AS u FROM clicks_funnel_hourly");
    } else {
        sql.push("toInt64(countIf(is_bot = 1 AND kind != 1)) AS b, ");
        if filters.unique_clicks {
            sql.push("toUInt64(uniqIf(visitor_id, kind != 1))");
        } else {
            sql.push("toUInt64(0)");
        }
        sql.push(" AS u FROM clicks");
    }
    where_clause(&mut sql, filters, range, side);
    sql.push(" GROUP BY keys");
    sql
}

/// Costs by UTC day, currency and cost source, apart from the clicks: unique clicks
/// would not add up over days and currencies.
fn costs_sql(dims: &[&'static str], filters: &Filters, range: &Range) -> Sql {
    let (rollup, side) = click_side(dims, filters);
    let mut sql = Sql::new("SELECT ");
    keys(&mut sql, dims, side, &filters.timezone);
    sql.push(", toString(toDate(")
        .push(side.time_column())
        .push(", 'UTC')) AS d, cost_currency AS cur, toInt64(sum(cost_micros)) AS cost, ");
    if rollup {
        sql.push("cost_source AS src, toUInt64(sum(clicks)) AS n FROM click_costs_hourly");
    } else {
        sql.push(CLICK_COST_SOURCE)
            .push(" AS src, toUInt64(count()) AS n FROM clicks");
    }
    where_clause(&mut sql, filters, range, side);
    sql.push(" GROUP BY keys, d, cur, src");
    sql
}

/// ` FROM (…)`: the latest version of each conversion of `source` in range, for a raw
/// conversions query to group.
fn latest_versions(
    sql: &mut Sql,
    source: &'static str,
    filters: &Filters,
    range: &Range,
    side: Side,
) {
    let mut inner = Sql::default();
    where_clause(&mut inner, filters, range, side);
    sql.push(" FROM (SELECT * FROM ").push(source);
    sql.append(&inner);
    sql.push(" AND (conversion_id, version) IN (SELECT conversion_id, max(version) FROM ")
        .push(source);
    sql.append(&inner);
    sql.push(" GROUP BY conversion_id))");
}

/// Where conversions are read from, and whether from their rollups.
pub(super) fn conversion_side(
    dims: &[&'static str],
    filters: &Filters,
) -> (&'static str, bool, Side) {
    let signals = uses_visitor_columns(dims, filters);
    let source = if signals {
        conversion_visitor_source(true)
    } else {
        "conversions"
    };
    let rollup = dims.iter().all(|d| in_rollup(d, CONVERSION_ROLLUP_DIMS))
        && filters.click_missing.is_none()
        && filters.over_cap.is_none()
        && !signals;
    let side = if rollup {
        Side::ConversionRollup
    } else {
        Side::ConversionRaw
    };
    (source, rollup, side)
}

/// The cost conversions carry under the cpa and revshare models, by the UTC day of their
/// creation and the cost's currency: the latest version of each conversion.
fn conversion_costs_sql(dims: &[&'static str], filters: &Filters, range: &Range) -> Sql {
    let (source, rollup, side) = conversion_side(dims, filters);
    let mut sql = Sql::new("SELECT ");
    keys(&mut sql, dims, side, &filters.timezone);
    sql.push(", toString(toDate(")
        .push(side.time_column())
        .push(", 'UTC')) AS d, cost_currency AS cur, toInt64(sum(cost_micros)) AS cost, ")
        .push("toUInt8(3) AS src, toUInt64(countIf(cost_micros != 0)) AS n");
    if rollup {
        sql.push(" FROM conversion_costs_hourly");
        where_clause(&mut sql, filters, range, side);
    } else {
        latest_versions(&mut sql, source, filters, range, side);
    }
    sql.push(" GROUP BY keys, d, cur HAVING cost != 0");
    sql
}

/// Approved payout by UTC day and payout currency, from the payout rollup when the
/// conversions side reads its rollup, else from the latest version of each conversion (a
/// conversion from before payouts pays its revenue).
fn payouts_sql(dims: &[&'static str], filters: &Filters, range: &Range) -> Sql {
    let (source, rollup, side) = conversion_side(dims, filters);
    let mut sql = Sql::new("SELECT ");
    keys(&mut sql, dims, side, &filters.timezone);
    sql.push(", toString(toDate(")
        .push(side.time_column())
        .push(", 'UTC')) AS d, ");
    if rollup {
        sql.push("currency AS cur, toInt64(sumIf(payout_micros, status = ")
            .str(traffsure_core::vocab::Vocabulary::word(
                traffsure_events::ConversionStatus::Approved,
            ))
            .push(")) AS pay FROM conversions_payout_hourly");
        where_clause(&mut sql, filters, range, side);
    } else {
        sql.push("if(payout_currency = '', currency, payout_currency) AS cur, ")
            .push(
                "toInt64(sumIf(if(payout_currency = '', revenue_micros, payout_micros), status = ",
            )
            .str(traffsure_core::vocab::Vocabulary::word(
                traffsure_events::ConversionStatus::Approved,
            ))
            .push(")) AS pay");
        latest_versions(&mut sql, source, filters, range, side);
    }
    // A rollup group whose payout summed to nothing may be merged away: leave those out
    // everywhere, so the rollup and the raw table agree.
    sql.push(" GROUP BY keys, d, cur HAVING pay != 0");
    sql
}

#[cfg(test)]
fn conversions_sql(dims: &[&'static str], filters: &Filters, range: &Range) -> Sql {
    conversions_sql_with(dims, filters, range, true)
}

/// The conversions query; `joined`: some conversion in range was stored without its
/// click's visitor details, which are then read from the click (`conversion_visitor_source`).
fn conversions_sql_with(
    dims: &[&'static str],
    filters: &Filters,
    range: &Range,
    joined: bool,
) -> Sql {
    let signals = uses_visitor_columns(dims, filters);
    let source = if signals {
        conversion_visitor_source(joined)
    } else {
        "conversions"
    };
    let rollup = dims.iter().all(|d| in_rollup(d, CONVERSION_ROLLUP_DIMS))
        && filters.click_missing.is_none()
        && filters.over_cap.is_none()
        && !signals;
    let side = if rollup {
        Side::ConversionRollup
    } else {
        Side::ConversionRaw
    };
    let mut sql = Sql::new("SELECT ");
    keys(&mut sql, dims, side, &filters.timezone);
    sql.push(", toString(toDate(")
        .push(side.time_column())
        .push(", 'UTC')) AS d, currency AS cur");
    if rollup {
        sql.push(", ")
            .conversions_by_status("sumIf(conversions, ")
            .push(" FROM conversions_funnel_hourly");
        where_clause(&mut sql, filters, range, side);
    } else {
        // The latest version of each conversion in range, then grouped.
        sql.push(", ").conversions_by_status("countIf(");
        latest_versions(&mut sql, source, filters, range, side);
    }
    sql.push(" GROUP BY keys, d, cur");
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters() -> Filters {
        Filters {
            unique_clicks: true,
            flow: Some(7),
            scope: crate::users::FlowScope::All,
            country: Some("DE".into()),
            source: None,
            sub_id: None,
            goal: Some("sale".into()),
            click_missing: None,
            over_cap: None,
            agent: Vec::new(),
            objects: Vec::new(),
            asn: None,
            datacenter: None,
            rate_exceeded: None,
            from: None,
            to: None,
            timezone: "Europe/Berlin".into(),
        }
    }

    fn range() -> Range {
        Range {
            from: "2026-01-01 00:00:00".into(),
            to: "2026-01-31 23:59:59".into(),
        }
    }

    #[test]
    fn impressions_count_under_no_object_where_clicks_without_one_do() {
        let plain = Filters {
            flow: None,
            country: None,
            goal: None,
            ..filters()
        };
        let (counts, _) = impressions_sql(&["offer", "lander", "country"], &plain, &range())
            .expect("impressions have no object filter here");
        assert!(
            counts.text().starts_with("SELECT ['0', '0', "),
            "{}",
            counts.text()
        );
        let (counts, _) = impressions_sql(&["city"], &plain, &range()).expect("no filter");
        assert!(
            counts.text().starts_with("SELECT [''] AS keys"),
            "{}",
            counts.text()
        );
    }

    #[test]
    fn rollups_serve_what_they_have() {
        let sql = clicks_sql(&["day", "flow", "country"], &filters(), &range());
        assert!(
            sql.text().contains("FROM clicks_funnel_hourly"),
            "{}",
            sql.text()
        );
        let sql = clicks_sql(&["sub3"], &filters(), &range());
        assert!(sql.text().contains("FROM clicks "), "{}", sql.text());
        let sql = conversions_sql(&["goal", "hour"], &filters(), &range());
        assert!(
            sql.text().contains("FROM conversions_funnel_hourly"),
            "{}",
            sql.text()
        );
        let sql = conversions_sql(&["device"], &filters(), &range());
        assert!(sql.text().contains("max(version)"), "{}", sql.text());
        assert!(!sql.text().contains("sale") && !sql.text().contains("Berlin"));
    }

    #[test]
    fn rollups_filter_by_the_hour_and_raw_tables_by_the_event_time() {
        let sql = clicks_sql(&["day"], &filters(), &range());
        assert!(
            sql.text().contains(" AND hour >= toDateTime(?, ?)"),
            "{}",
            sql.text()
        );
        let sql = clicks_sql(&["os", "sub1"], &filters(), &range());
        assert!(
            sql.text().contains(" AND ts >= toDateTime(?, ?)"),
            "{}",
            sql.text()
        );
        let sql = conversions_sql(&["device"], &filters(), &range());
        assert!(
            sql.text().contains(" AND created_at <= toDateTime(?, ?)"),
            "{}",
            sql.text()
        );
    }

    #[test]
    fn fraud_signals_read_raw_clicks_and_conversions_with_their_clicks() {
        let fraud = Filters {
            datacenter: Some(true),
            asn: Some(16509),
            ..filters()
        };
        let sql = clicks_sql(&["day"], &fraud, &range());
        assert!(sql.text().contains("FROM clicks "), "{}", sql.text());
        assert!(sql.text().contains(" AND datacenter = ?"), "{}", sql.text());
        assert!(sql.text().contains(" AND asn = ?"), "{}", sql.text());
        let sql = costs_sql(&["day"], &fraud, &range());
        assert!(sql.text().contains("FROM clicks "), "{}", sql.text());
        let sql = clicks_sql(&["asn", "rate_exceeded"], &filters(), &range());
        assert!(
            sql.text()
                .contains("[toString(asn), toString(rate_exceeded)] AS keys"),
            "{}",
            sql.text()
        );
        // Conversions are grouped and filtered by their click's signals: as they carry
        // them, or read from their click where some were stored without.
        let sql = conversions_sql(&["asn", "as_org"], &fraud, &range());
        assert!(
            sql.text().contains("[toString(v_asn), v_as_org] AS keys"),
            "{}",
            sql.text()
        );
        assert_eq!(
            sql.text().matches(" AND v_datacenter = ?").count(),
            2,
            "{}",
            sql.text()
        );
        assert_eq!(
            sql.text().matches("ANY LEFT JOIN").count(),
            2,
            "{}",
            sql.text()
        );
        let stored = conversions_sql_with(&["asn", "as_org"], &fraud, &range(), false);
        assert!(!stored.text().contains("JOIN"), "{}", stored.text());
        assert!(
            stored
                .text()
                .contains("[toString(v_asn), v_as_org] AS keys"),
            "{}",
            stored.text()
        );
        let sql = conversions_sql(&["day"], &filters(), &range());
        assert!(!sql.text().contains("JOIN"), "{}", sql.text());
    }

    #[test]
    fn click_missing_reads_raw_conversions_and_leaves_clicks_whole() {
        let missing = Filters {
            click_missing: Some(true),
            ..filters()
        };
        let sql = conversions_sql(&["day"], &missing, &range());
        assert!(!sql.text().contains("_hourly"), "{}", sql.text());
        assert_eq!(sql.text().matches(" AND click_missing = ?").count(), 2);
        let sql = clicks_sql(&["day"], &missing, &range());
        assert!(!sql.text().contains("click_missing"), "{}", sql.text());
        let sql = conversions_sql(&["day"], &filters(), &range());
        assert!(!sql.text().contains("click_missing"), "{}", sql.text());
    }

    #[test]
    fn visitor_dimensions_and_filters_read_raw_clicks_and_conversions_through_their_click() {
        let brand = Filters {
            agent: vec![
                ("device_brand", "Cubot".into()),
                ("bot_reason", "crawler".into()),
            ],
            ..filters()
        };
        let sql = clicks_sql(&["day"], &brand, &range());
        assert!(sql.text().contains("FROM clicks "), "{}", sql.text());
        assert!(
            sql.text().contains(" AND device_brand = ?"),
            "{}",
            sql.text()
        );
        assert!(sql.text().contains(" AND bot_reason = ?"), "{}", sql.text());
        let sql = costs_sql(&["day"], &brand, &range());
        assert!(
            sql.text().contains(" AND device_brand = ?"),
            "{}",
            sql.text()
        );
        let sql = conversions_sql(&["day"], &brand, &range());
        assert!(sql.text().contains("ANY LEFT JOIN"), "{}", sql.text());
        assert!(
            sql.text().contains(" AND v_device_brand = ?"),
            "{}",
            sql.text()
        );
        let sql = clicks_sql(&["os_major", "bot_reason"], &filters(), &range());
        assert!(
            sql.text().contains("[os_major, bot_reason] AS keys"),
            "{}",
            sql.text()
        );
        assert!(sql.text().contains("FROM clicks "), "{}", sql.text());
        let sql = conversions_sql(&["device_model"], &filters(), &range());
        assert!(
            sql.text().contains("[v_device_model] AS keys"),
            "{}",
            sql.text()
        );
        assert!(sql.text().contains("ANY LEFT JOIN"), "{}", sql.text());
    }

    #[test]
    fn costs_come_by_day_and_currency_from_their_rollup_or_the_raw_clicks() {
        let sql = costs_sql(&["flow"], &filters(), &range());
        assert!(
            sql.text().contains("FROM click_costs_hourly"),
            "{}",
            sql.text()
        );
        assert!(
            sql.text().ends_with(" GROUP BY keys, d, cur, src"),
            "{}",
            sql.text()
        );
        let sql = conversion_costs_sql(&["flow"], &filters(), &range());
        assert!(
            sql.text().contains("FROM conversion_costs_hourly"),
            "{}",
            sql.text()
        );
        let sql = conversion_costs_sql(&["sub3"], &filters(), &range());
        assert!(sql.text().contains("max(version)"), "{}", sql.text());
        let sql = costs_sql(&["sub3"], &filters(), &range());
        assert!(
            sql.text().contains("cost_currency AS cur"),
            "{}",
            sql.text()
        );
        assert!(sql.text().contains("FROM clicks WHERE"), "{}", sql.text());
        let sql = clicks_sql(&["flow"], &filters(), &range());
        assert!(!sql.text().contains("cost"), "{}", sql.text());
    }

    #[test]
    fn objects_group_and_filter_both_sides_on_their_rollups() {
        let offer = Filters {
            objects: vec![("offer_id", 12)],
            ..filters()
        };
        let sql = clicks_sql(&["traffic_source", "lander"], &offer, &range());
        assert!(
            sql.text()
                .contains("[toString(traffic_source_id), toString(lander_id)] AS keys"),
            "{}",
            sql.text()
        );
        assert!(sql.text().contains(" AND offer_id = ?"), "{}", sql.text());
        assert!(sql.text().contains("FROM clicks_funnel_hourly"));
        let sql = conversions_sql(&["network"], &offer, &range());
        assert!(sql.text().contains("FROM conversions_funnel_hourly"));
        assert!(sql.text().contains(" AND offer_id = ?"), "{}", sql.text());
        let sql = clicks_sql(&["offer", "sub2"], &offer, &range());
        assert!(sql.text().contains("FROM clicks "), "{}", sql.text());
        assert!(
            sql.text().contains("countIf(is_bot = 0 AND (kind = 1))"),
            "{}",
            sql.text()
        );
    }

    #[test]
    fn both_rollups_have_time_flow_objects_country_source_and_sub_id() {
        assert_eq!(ROLLUP_DIMS.last(), Some(&"sub_id"));
        assert!(ROLLUP_DIMS.contains(&"network"));
        assert!(in_rollup("browser", CLICK_ROLLUP_DIMS));
        assert!(!in_rollup("goal", CLICK_ROLLUP_DIMS));
        assert!(in_rollup("goal", CONVERSION_ROLLUP_DIMS));
        assert!(!in_rollup("sub1", CONVERSION_ROLLUP_DIMS));
    }

    #[test]
    fn the_funnel_counts_lander_click_throughs_apart_from_visits() {
        assert_eq!(traffsure_events::ClickKind::LanderClick as i32, 1);
        let sql = clicks_sql(&["day"], &filters(), &range());
        assert!(
            sql.text()
                .contains("toInt64(sumIf(clicks - bots, kind != 1)) AS c, "),
            "{}",
            sql.text()
        );
        assert!(
            sql.text().contains("uniqMergeIf(unique_clicks, kind != 1)"),
            "{}",
            sql.text()
        );
    }

    #[test]
    fn clicks_have_no_goal() {
        let sql = clicks_sql(&["goal"], &filters(), &range());
        assert!(
            sql.text().starts_with("SELECT [''] AS keys"),
            "{}",
            sql.text()
        );
        assert!(!sql.text().contains("goal"), "{}", sql.text());
    }
}

//! Cost updates in a report (docs/costs.md). A click is owned by the newest update that
//! covers it (its flow, its whole-hour range, its sub values), and so is the cost of
//! that click's conversions. An owned click's own cost (link or model) and its
//! conversions' model cost leave the report; instead each update's amount is spread over
//! the visits it owns, bots included, an equal share per visit (`traffsure_core::cost::
//! spread`, exact to the micro over the whole update). An update that owns no visit adds
//! nothing.
//!
//! Three queries on the raw tables, whatever the report reads otherwise: the visits each
//! update owns in all (not only in the report), and the report's owned visits and owned
//! conversions by group, day and currency. The report's range is read by the hour where the
//! rest of the report reads rollups, so what is taken out is what was put in.

use std::collections::BTreeMap;

use clickhouse::Client;
use serde::Deserialize;

use super::merge::Totals;
use super::parse::ReportRequest;
use super::query::{
    click_side, conversion_side, keys_at, where_clause_at, Range, Side, CLICK_COST_SOURCE,
    COST_CONVERSION_MODEL, COST_LINK, COST_MODEL,
};
use crate::api::costs::{CostUpdateRow, COLUMNS, SUB_COLUMNS};
use crate::currency::Rates;
use crate::error::ApiError;
use crate::sql::{Arg, Sql};

/// The most updates one report takes into account.
const MAX_UPDATES: u64 = 5_000;

/// What an update owns in the report: a group's clicks (or conversions) of one day and
/// currency, their own cost and its source.
#[derive(Debug, clickhouse::Row, Deserialize)]
pub struct Owned {
    pub owner: String,
    pub keys: Vec<String>,
    pub day: String,
    pub currency: String,
    pub source: u8,
    pub count: u64,
    pub cost_micros: i64,
}

/// The updates of a report and what they own.
#[derive(Debug, Default)]
pub struct Adjustments {
    updates: Vec<CostUpdateRow>,
    /// Visits each update owns, in all.
    totals: BTreeMap<String, u64>,
    clicks: Vec<Owned>,
    conversions: Vec<Owned>,
}

/// `multiIf(<covered by the newest>, id, <by the next>, id, …, '')`: the update owning a
/// row of `time` (`ts` of a click, `click_ts` of a conversion).
fn owner(sql: &mut Sql, updates: &[CostUpdateRow], time: &'static str) {
    sql.push("multiIf(");
    for u in updates {
        sql.push("flow_id = ")
            .arg(Arg::U32(u.flow_id))
            .push(" AND ")
            .push(time)
            .push(" >= toDateTime(")
            .arg(Arg::U32(u.from_ts))
            .push(") AND ")
            .push(time)
            .push(" < toDateTime(")
            .arg(Arg::U32(u.to_ts))
            .push(")");
        if !u.sub_id.is_empty() {
            sql.push(" AND sub_id = ").str(u.sub_id.clone());
        }
        if !u.source.is_empty() {
            sql.push(" AND source = ").str(u.source.clone());
        }
        for (column, value) in SUB_COLUMNS.iter().zip(&u.subs) {
            if !value.is_empty() {
                sql.push(" AND ")
                    .push(column)
                    .push(" = ")
                    .str(value.clone());
            }
        }
        sql.push(", ").str(u.id.clone()).push(", ");
    }
    sql.push("'')");
}

/// The updates that matter to the report: those overlapping its range (of its flow, if
/// it has one), and the newer ones overlapping those, which own part of their clicks.
async fn relevant(
    client: &Client,
    request: &ReportRequest,
    range: &Range,
) -> Result<Vec<CostUpdateRow>, ApiError> {
    let mut sql = Sql::new("SELECT ");
    sql.push(COLUMNS).push(" FROM cost_updates WHERE 1");
    if let Some(flow) = request.filters.flow {
        sql.push(" AND flow_id = ").arg(Arg::U32(flow));
    }
    sql.push(" ORDER BY created_at_ms DESC, id DESC LIMIT ")
        .arg(Arg::U64(MAX_UPDATES));
    let all = sql.query(client).fetch_all::<CostUpdateRow>().await?;
    if all.is_empty() {
        return Ok(all);
    }
    let tz = request.filters.timezone.as_str();
    let mut bounds = Sql::new("SELECT toUInt32(toDateTime(");
    bounds
        .str(range.from.as_str())
        .push(", ")
        .str(tz)
        .push(")), toUInt32(toDateTime(")
        .str(range.to.as_str())
        .push(", ")
        .str(tz)
        .push("))");
    let (from, to) = bounds.query(client).fetch_one::<(u32, u32)>().await?;
    // Whole hours the report reads (a rollup reads the hours starting in its range).
    let (from, to) = (from - from % 3600, to - to % 3600 + 3600);
    let overlaps = |a: &CostUpdateRow, b: &CostUpdateRow| {
        a.flow_id == b.flow_id && a.from_ts < b.to_ts && b.from_ts < a.to_ts
    };
    let in_report: Vec<&CostUpdateRow> = all
        .iter()
        .filter(|u| u.from_ts < to && from < u.to_ts)
        .collect();
    // `all` is newest first: keep the report's, and any newer one overlapping one of them.
    Ok(all
        .iter()
        .filter(|u| {
            in_report.iter().any(|r| {
                r.id == u.id
                    || ((u.created_at_ms, &u.id) > (r.created_at_ms, &r.id) && overlaps(u, r))
            })
        })
        .cloned()
        .collect())
}

/// Runs the queries of the report's updates; nothing when it has none.
pub async fn run(
    client: &Client,
    request: &ReportRequest,
    range: &Range,
) -> Result<Adjustments, ApiError> {
    let updates = relevant(client, request, range).await?;
    if updates.is_empty() {
        return Ok(Adjustments::default());
    }
    let (dims, filters) = (&request.dims, &request.filters);
    let tz = filters.timezone.as_str();

    // The visits each update owns in all.
    let mut totals = Sql::new("SELECT o, toUInt64(count()) FROM (SELECT ");
    owner(&mut totals, &updates, "ts");
    totals.push(" AS o FROM clicks WHERE kind != 1 AND ts >= toDateTime(");
    totals
        .arg(Arg::U32(
            updates.iter().map(|u| u.from_ts).min().unwrap_or(0),
        ))
        .push(") AND ts < toDateTime(")
        .arg(Arg::U32(updates.iter().map(|u| u.to_ts).max().unwrap_or(0)))
        .push(")) WHERE o != '' GROUP BY o");

    // The report's owned visits.
    let (rollup, _) = click_side(dims, filters);
    let time = if rollup { "toStartOfHour(ts)" } else { "ts" };
    let mut clicks =
        Sql::new("SELECT o, keys, d, cur, src, toUInt64(count()), toInt64(sum(c)) FROM (SELECT ");
    owner(&mut clicks, &updates, "ts");
    clicks.push(" AS o, ");
    keys_at(&mut clicks, dims, Side::ClickRaw, time, tz);
    clicks
        .push(", toString(toDate(ts, 'UTC')) AS d, cost_currency AS cur, ")
        .push(CLICK_COST_SOURCE)
        .push(" AS src, cost_micros AS c FROM clicks");
    where_clause_at(&mut clicks, filters, range, Side::ClickRaw, time);
    clicks.push(" AND kind != 1) WHERE o != '' GROUP BY o, keys, d, cur, src");

    // The report's conversions of owned clicks, latest versions, with a model cost.
    let (source, rollup, _) = conversion_side(dims, filters);
    let time = if rollup {
        "toStartOfHour(created_at)"
    } else {
        "created_at"
    };
    let mut conversions = Sql::new(
        "SELECT o, keys, d, cur, toUInt8(3), toUInt64(count()), toInt64(sum(c)) FROM (SELECT ",
    );
    owner(&mut conversions, &updates, "click_ts");
    conversions.push(" AS o, ");
    keys_at(&mut conversions, dims, Side::ConversionRaw, time, tz);
    conversions
        .push(", toString(toDate(created_at, 'UTC')) AS d, cost_currency AS cur, cost_micros AS c FROM ")
        .push(source);
    let mut inner = Sql::default();
    where_clause_at(&mut inner, filters, range, Side::ConversionRaw, time);
    conversions.append(&inner);
    conversions
        .push(" AND cost_micros != 0 AND (conversion_id, version) IN (SELECT conversion_id, max(version) FROM ")
        .push(source);
    conversions.append(&inner);
    conversions.push(" GROUP BY conversion_id)) WHERE o != '' GROUP BY o, keys, d, cur");

    // One condition per update: past the default 256 KiB of query text with a few
    // thousand of them.
    let big = |sql: &Sql| sql.query(client).with_setting("max_query_size", "16777216");
    let (totals, clicks, conversions) = tokio::try_join!(
        big(&totals).fetch_all::<(String, u64)>(),
        big(&clicks).fetch_all::<Owned>(),
        big(&conversions).fetch_all::<Owned>(),
    )?;
    Ok(Adjustments {
        updates,
        totals: totals.into_iter().collect(),
        clicks,
        conversions,
    })
}

/// Adds `micros` of `currency` (empty: the reporting currency) on `day` to a group's cost.
pub fn add_cost(t: &mut Totals, micros: i64, day: &str, currency: &str, rates: &Rates) {
    let currency = if currency.is_empty() {
        rates.reporting()
    } else {
        currency
    };
    match rates.convert(micros, day, currency) {
        Some(cost) => t.cost_micros += cost,
        None if micros != 0 => {
            *t.cost_without_rate.entry(currency.to_string()).or_default() += micros
        }
        None => {}
    }
}

/// Takes owned cost out of the groups and puts each update's share in.
pub fn apply(groups: &mut BTreeMap<Vec<String>, Totals>, adjustments: Adjustments, rates: &Rates) {
    let Adjustments {
        updates,
        totals,
        clicks,
        conversions,
    } = adjustments;
    // Visits of each update in the report, by group and day.
    let mut cells: BTreeMap<&str, BTreeMap<(Vec<String>, String), u64>> = BTreeMap::new();
    for row in &clicks {
        let t = groups.entry(row.keys.clone()).or_default();
        add_cost(t, -row.cost_micros, &row.day, &row.currency, rates);
        match row.source {
            COST_LINK => t.cost_sources.link -= row.count as i64,
            COST_MODEL => t.cost_sources.model -= row.count as i64,
            _ => {}
        }
        *cells
            .entry(row.owner.as_str())
            .or_default()
            .entry((row.keys.clone(), row.day.clone()))
            .or_default() += row.count;
    }
    for row in &conversions {
        let t = groups.entry(row.keys.clone()).or_default();
        add_cost(t, -row.cost_micros, &row.day, &row.currency, rates);
        if row.source == COST_CONVERSION_MODEL {
            t.cost_sources.model -= row.count as i64;
        }
    }
    for update in &updates {
        let Some(cells) = cells.get(update.id.as_str()) else {
            continue;
        };
        let total = totals.get(&update.id).copied().unwrap_or(0);
        let counts: Vec<u64> = cells.values().copied().collect();
        let shares = traffsure_core::cost::spread(update.amount_micros, &counts, total);
        for (((keys, day), n), share) in cells.iter().zip(shares) {
            let t = groups.entry(keys.clone()).or_default();
            add_cost(t, share, day, &update.currency, rates);
            t.cost_sources.update += *n as i64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(id: &str, amount_micros: i64) -> CostUpdateRow {
        CostUpdateRow {
            id: id.into(),
            flow_id: 1,
            from_ts: 0,
            to_ts: 3600,
            amount_micros,
            currency: "USD".into(),
            sub_id: String::new(),
            source: String::new(),
            subs: vec![String::new(); 10],
            created_at: 0,
            created_at_ms: 0,
            created_by: "admin".into(),
        }
    }

    fn owned(owner: &str, key: &str, source: u8, count: u64, cost_micros: i64) -> Owned {
        Owned {
            owner: owner.into(),
            keys: vec![key.into()],
            day: "2026-03-01".into(),
            currency: String::new(),
            source,
            count,
            cost_micros,
        }
    }

    #[test]
    fn an_update_replaces_the_own_cost_of_its_visits_and_sums_exactly() {
        let rates = Rates::new("USD");
        let mut groups = BTreeMap::new();
        for (key, link, cost) in [("b", 2, 2_000_000), ("c", 1, 1_000_000), ("d", 1, 500_000)] {
            let t: &mut Totals = groups.entry(vec![key.to_string()]).or_default();
            t.cost_micros = cost;
            t.cost_sources.link = link;
        }
        // u1 owns b's two visits and c's one (of three in all); d is nobody's.
        let adjustments = Adjustments {
            updates: vec![update("u1", 10_000_000), update("u0", 99_000_000)],
            totals: [("u1".to_string(), 3)].into_iter().collect(),
            clicks: vec![
                owned("u1", "b", COST_LINK, 2, 2_000_000),
                owned("u1", "c", COST_LINK, 1, 1_000_000),
            ],
            conversions: vec![owned("u1", "c", COST_CONVERSION_MODEL, 1, 4_000_000)],
        };
        if let Some(t) = groups.get_mut(&vec!["c".to_string()]) {
            t.cost_micros += 4_000_000;
        }
        apply(&mut groups, adjustments, &rates);
        let cost = |k: &str| groups[&vec![k.to_string()]].cost_micros;
        assert_eq!(cost("b"), 6_666_666);
        assert_eq!(cost("c"), 3_333_334);
        assert_eq!(cost("b") + cost("c"), 10_000_000);
        assert_eq!(cost("d"), 500_000);
        let word = |k: &str| groups[&vec![k.to_string()]].cost_sources.word();
        assert_eq!(
            (word("b"), word("c"), word("d")),
            ("update", "update", "link")
        );
    }
}

//! Reports: clicks and conversions grouped by up to four dimensions from an allow-list,
//! with derived metrics (CR, profit, ROI, EPC), a time zone, a sort key and CSV export.
//!
//! Clicks and conversions are aggregated separately and joined here by group key, which
//! is simpler and more portable than a FULL JOIN on ClickHouse 18.16. Each side reads
//! its rollup when the rollup has every asked dimension and filter, the raw table
//! otherwise.

use std::collections::{BTreeMap, HashMap};

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use traffsure_core::format_micros;

use crate::error::ApiError;
use crate::filters::{eq, range_condition, Params};
use crate::sql::{Arg, Sql};
use crate::state::AppState;

/// Every dimension a report groups by.
pub const DIMENSIONS: &[&str] = &[
    "day", "hour", "flow", "country", "source", "sub_id", "sub1", "sub2", "sub3", "sub4", "sub5",
    "sub6", "sub7", "sub8", "sub9", "sub10", "goal", "device", "os", "browser",
];

/// Every metric a report returns, in order.
pub const METRICS: &[&str] = &[
    "clicks",
    "unique_clicks",
    "bots",
    "conversions",
    "approved",
    "pending",
    "rejected",
    "cr",
    "revenue",
    "cost",
    "profit",
    "roi",
    "epc",
];

const CLICK_ROLLUP_DIMS: &[&str] = &[
    "day", "hour", "flow", "country", "source", "sub_id", "device", "os", "browser",
];
const CONVERSION_ROLLUP_DIMS: &[&str] =
    &["day", "hour", "flow", "country", "source", "sub_id", "goal"];

#[derive(Clone, Copy, PartialEq)]
enum Side {
    ClickRollup,
    ClickRaw,
    ConversionRollup,
    ConversionRaw,
}

impl Side {
    fn time_column(self) -> &'static str {
        match self {
            Side::ClickRollup | Side::ConversionRollup => "hour",
            Side::ClickRaw => "ts",
            Side::ConversionRaw => "created_at",
        }
    }
}

/// The SQL for one dimension on one side; `None` when the side has no such column
/// (clicks have no goal), and the key is then empty on that side.
fn dimension(sql: &mut Sql, dim: &str, side: Side, timezone: &str) {
    let time = side.time_column();
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
        other => DIMENSIONS.iter().find(|d| **d == other).copied(),
    };
    match column {
        Some(column) => sql.push(column),
        None => sql.push("''"),
    };
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct ClickAgg {
    keys: Vec<String>,
    clicks: i64,
    bots: i64,
    unique_clicks: u64,
    cost_micros: i64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct ConversionAgg {
    keys: Vec<String>,
    approved: i64,
    pending: i64,
    rejected: i64,
    revenue_micros: i64,
}

/// A metric's name, its JSON value, and the number it sorts by.
type Metric = (&'static str, Value, f64);
/// A report row: its group keys, then its metrics.
type Row = (Map<String, Value>, Vec<Metric>);

#[derive(Default, Clone)]
struct Totals {
    with_uniques: bool,
    clicks: i64,
    unique_clicks: u64,
    bots: i64,
    approved: i64,
    pending: i64,
    rejected: i64,
    revenue_micros: i64,
    cost_micros: i64,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.with_uniques = o.with_uniques;
        self.clicks += o.clicks;
        self.unique_clicks += o.unique_clicks;
        self.bots += o.bots;
        self.approved += o.approved;
        self.pending += o.pending;
        self.rejected += o.rejected;
        self.revenue_micros += o.revenue_micros;
        self.cost_micros += o.cost_micros;
    }

    /// Metrics by name; money as decimal text, ratios as numbers rounded to 4 places.
    fn metrics(&self) -> Vec<Metric> {
        let conversions = self.approved + self.pending;
        let profit = self.revenue_micros - self.cost_micros;
        let ratio = |num: f64, den: f64| if den == 0.0 { 0.0 } else { num / den };
        let round = |v: f64| (v * 10_000.0).round() / 10_000.0;
        let cr = round(ratio(conversions as f64 * 100.0, self.clicks as f64));
        let roi = round(ratio(profit as f64 * 100.0, self.cost_micros as f64));
        let epc_micros = ratio(self.revenue_micros as f64, self.clicks as f64).round() as i64;
        vec![
            ("clicks", json!(self.clicks), self.clicks as f64),
            (
                "unique_clicks",
                if self.with_uniques {
                    json!(self.unique_clicks)
                } else {
                    Value::Null
                },
                self.unique_clicks as f64,
            ),
            ("bots", json!(self.bots), self.bots as f64),
            ("conversions", json!(conversions), conversions as f64),
            ("approved", json!(self.approved), self.approved as f64),
            ("pending", json!(self.pending), self.pending as f64),
            ("rejected", json!(self.rejected), self.rejected as f64),
            ("cr", json!(cr), cr),
            (
                "revenue",
                json!(format_micros(self.revenue_micros)),
                self.revenue_micros as f64,
            ),
            (
                "cost",
                json!(format_micros(self.cost_micros)),
                self.cost_micros as f64,
            ),
            ("profit", json!(format_micros(profit)), profit as f64),
            ("roi", json!(roi), roi),
            ("epc", json!(format_micros(epc_micros)), epc_micros as f64),
        ]
    }
}

struct Filters {
    /// Merging unique-click states is the costly part of a rollup read: only on request.
    unique_clicks: bool,
    flow: Option<u32>,
    country: Option<String>,
    source: Option<String>,
    sub_id: Option<String>,
    goal: Option<String>,
    from: String,
    to: String,
    timezone: String,
}

fn where_clause(sql: &mut Sql, filters: &Filters, side: Side) {
    sql.push(" WHERE 1");
    if let Some(flow) = filters.flow {
        eq(sql, "flow_id", Arg::U32(flow));
    }
    if let Some(country) = &filters.country {
        eq(sql, "country", Arg::Str(country.clone()));
    }
    if let Some(source) = &filters.source {
        eq(sql, "source", Arg::Str(source.clone()));
    }
    if let Some(sub_id) = &filters.sub_id {
        eq(sql, "sub_id", Arg::Str(sub_id.clone()));
    }
    if let (Some(goal), Side::ConversionRaw | Side::ConversionRollup) = (&filters.goal, side) {
        sql.push(" AND lower(goal) = lower(")
            .str(goal.clone())
            .push(")");
    }
    let (from, to) = (Some(filters.from.clone()), Some(filters.to.clone()));
    let time = side.time_column();
    if side == Side::ClickRollup || side == Side::ConversionRollup {
        // Rollup rows stand for whole hours: keep the hours that start inside the range.
        range_condition(sql, "hour", &from, &to, &filters.timezone);
    } else {
        range_condition(sql, time, &from, &to, &filters.timezone);
    }
}

fn keys(sql: &mut Sql, dims: &[&'static str], side: Side, timezone: &str) {
    sql.push("[");
    for (i, dim) in dims.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        dimension(sql, dim, side, timezone);
    }
    sql.push("] AS keys");
}

fn clicks_sql(dims: &[&'static str], filters: &Filters) -> Sql {
    let rollup = dims.iter().all(|d| CLICK_ROLLUP_DIMS.contains(d));
    let side = if rollup {
        Side::ClickRollup
    } else {
        Side::ClickRaw
    };
    let mut sql = Sql::new("SELECT ");
    keys(&mut sql, dims, side, &filters.timezone);
    if rollup {
        sql.push(", toInt64(sum(clicks) - sum(bots)) AS c, toInt64(sum(bots)) AS b, ");
        if filters.unique_clicks {
            sql.push("toUInt64(uniqMerge(unique_clicks))");
        } else {
            sql.push("toUInt64(0)");
        }
        sql.push(" AS u, toInt64(sum(cost_micros)) AS cost FROM clicks_hourly");
    } else {
        sql.push(", toInt64(countIf(is_bot = 0)) AS c, toInt64(countIf(is_bot = 1)) AS b, ");
        if filters.unique_clicks {
            sql.push("toUInt64(uniq(visitor_id))");
        } else {
            sql.push("toUInt64(0)");
        }
        sql.push(" AS u, toInt64(sum(cost_micros)) AS cost FROM clicks");
    }
    where_clause(&mut sql, filters, side);
    sql.push(" GROUP BY keys");
    sql
}

fn conversions_sql(dims: &[&'static str], filters: &Filters) -> Sql {
    let rollup = dims.iter().all(|d| CONVERSION_ROLLUP_DIMS.contains(d));
    let side = if rollup {
        Side::ConversionRollup
    } else {
        Side::ConversionRaw
    };
    let mut sql = Sql::new("SELECT ");
    keys(&mut sql, dims, side, &filters.timezone);
    if rollup {
        sql.push(
            ", toInt64(sumIf(conversions, status = 'approved')) AS a, \
             toInt64(sumIf(conversions, status = 'pending')) AS p, \
             toInt64(sumIf(conversions, status = 'rejected')) AS r, \
             toInt64(sumIf(revenue_micros, status = 'approved')) AS rev FROM conversions_hourly",
        );
        where_clause(&mut sql, filters, side);
    } else {
        // The latest version of each conversion in range, then grouped.
        sql.push(
            ", toInt64(countIf(status = 'approved')) AS a, toInt64(countIf(status = 'pending')) AS p, \
             toInt64(countIf(status = 'rejected')) AS r, \
             toInt64(sumIf(revenue_micros, status = 'approved')) AS rev \
             FROM (SELECT * FROM conversions",
        );
        let mut inner = Sql::default();
        where_clause(&mut inner, filters, side);
        sql.append(&inner);
        sql.push(
            " AND (conversion_id, version) IN (SELECT conversion_id, max(version) FROM conversions",
        );
        sql.append(&inner);
        sql.push(" GROUP BY conversion_id))");
    }
    sql.push(" GROUP BY keys");
    sql
}

/// `GET /state/v1/reports`. Unique clicks are merged from their `uniq` states only with
/// `unique_clicks=true` (they are `null` otherwise): over a month of rollups that merge
/// costs more than everything else in the report together.
pub async fn report(
    state: web::Data<AppState>,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let params = Params::new(
        query.into_inner(),
        &[
            "group_by",
            "from",
            "to",
            "timezone",
            "flow",
            "country",
            "source",
            "sub_id",
            "goal",
            "sort",
            "format",
            "unique_clicks",
        ],
    )?;
    let dims: Vec<&'static str> = params
        .get("group_by")
        .unwrap_or("day")
        .split(',')
        .map(|d| {
            let d = d.trim();
            DIMENSIONS
                .iter()
                .find(|x| x.eq_ignore_ascii_case(d))
                .copied()
                .ok_or_else(|| {
                    ApiError::invalid(
                        "group_by",
                        format!(
                            "cannot group by {d:?}; choose from {}",
                            DIMENSIONS.join(", ")
                        ),
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    if dims.len() > 4 {
        return Err(ApiError::invalid(
            "group_by",
            "group by at most four dimensions",
        ));
    }
    if (1..dims.len()).any(|i| dims[..i].contains(&dims[i])) {
        return Err(ApiError::invalid("group_by", "a dimension is listed twice"));
    }
    let timezone = params.timezone()?;
    let (from, to) = params.range()?;
    let format = params.one_of("format", &["json", "csv"])?.unwrap_or("json");
    let (sort_key, descending) = match params.get("sort") {
        None => (dims[0].to_string(), false),
        Some(s) => {
            let (key, desc) = s.strip_prefix('-').map_or((s, false), |k| (k, true));
            let known = dims.contains(&key) || METRICS.contains(&key) || key == "flow_name";
            if !known {
                return Err(ApiError::invalid(
                    "sort",
                    format!("cannot sort by {key:?}: use a grouped dimension or a metric, with - for descending"),
                ));
            }
            (key.to_string(), desc)
        }
    };
    state.check_timezone(&timezone).await?;
    let now_date = state
        .clickhouse
        .query("SELECT toString(toDate(now(), ?))")
        .bind(timezone.as_str())
        .fetch_one::<String>()
        .await?;
    let default_from = {
        let mut sql = Sql::new("SELECT toString(toDate(now(), ");
        sql.str(timezone.as_str()).push(") - 6)");
        sql.query(&state.clickhouse).fetch_one::<String>().await?
    };
    let unique_clicks = params.one_of("unique_clicks", &["true", "false"])? == Some("true");
    if sort_key == "unique_clicks" && !unique_clicks {
        return Err(ApiError::invalid(
            "sort",
            "sorting by unique_clicks needs unique_clicks=true",
        ));
    }
    let filters = Filters {
        unique_clicks,
        flow: params.flow(&state.registry)?,
        country: params.country()?,
        source: params.text("source", 200)?,
        sub_id: params.text("sub_id", 200)?,
        goal: params.text("goal", 100)?,
        from: from.unwrap_or_else(|| format!("{default_from} 00:00:00")),
        to: to.unwrap_or_else(|| format!("{now_date} 23:59:59")),
        timezone: timezone.clone(),
    };

    let clicks = clicks_sql(&dims, &filters);
    let conversions = conversions_sql(&dims, &filters);
    let (click_rows, conversion_rows) = tokio::try_join!(
        clicks.query(&state.clickhouse).fetch_all::<ClickAgg>(),
        conversions
            .query(&state.clickhouse)
            .fetch_all::<ConversionAgg>(),
    )?;
    let mut groups: BTreeMap<Vec<String>, Totals> = BTreeMap::new();
    for row in click_rows {
        let t = groups.entry(row.keys).or_default();
        t.with_uniques = unique_clicks;
        t.clicks += row.clicks;
        t.bots += row.bots;
        t.unique_clicks += row.unique_clicks;
        t.cost_micros += row.cost_micros;
    }
    for row in conversion_rows {
        let t = groups.entry(row.keys).or_default();
        t.with_uniques = unique_clicks;
        t.approved += row.approved;
        t.pending += row.pending;
        t.rejected += row.rejected;
        t.revenue_micros += row.revenue_micros;
    }

    let mut total = Totals {
        with_uniques: unique_clicks,
        ..Totals::default()
    };
    let mut rows: Vec<Row> = groups
        .iter()
        .map(|(keys, t)| {
            total.add(t);
            let mut row = Map::new();
            for (dim, key) in dims.iter().zip(keys) {
                row.insert((*dim).to_string(), json!(key));
                if *dim == "flow" {
                    let name = key
                        .parse()
                        .map(|id| state.flow_name(id))
                        .unwrap_or_default();
                    row.insert("flow_name".into(), json!(name));
                }
            }
            (row, t.metrics())
        })
        .collect();
    let sort_value = |row: &Row| -> (f64, String) {
        if let Some((_, _, n)) = row.1.iter().find(|(name, _, _)| *name == sort_key) {
            return (*n, String::new());
        }
        let text = row
            .0
            .get(&sort_key)
            .and_then(Value::as_str)
            .unwrap_or_default();
        (0.0, text.to_string())
    };
    rows.sort_by(|a, b| {
        let (a, b) = (sort_value(a), sort_value(b));
        let order = a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1));
        if descending {
            order.reverse()
        } else {
            order
        }
    });

    if format == "csv" {
        let mut header: Vec<String> = Vec::new();
        for dim in &dims {
            header.push((*dim).to_string());
            if *dim == "flow" {
                header.push("flow_name".into());
            }
        }
        header.extend(METRICS.iter().map(|m| m.to_string()));
        let mut csv = csv_line(&header);
        for (keys, metrics) in &rows {
            let mut line: Vec<String> = header
                .iter()
                .take(header.len() - METRICS.len())
                .map(|h| {
                    keys.get(h)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                })
                .collect();
            line.extend(metrics.iter().map(|(_, v, _)| match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            }));
            csv.push_str(&csv_line(&line));
        }
        return Ok(HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header(("content-disposition", "attachment; filename=\"report.csv\""))
            .body(csv));
    }

    let rows: Vec<Value> = rows
        .into_iter()
        .map(|(mut keys, metrics)| {
            for (name, value, _) in metrics {
                keys.insert(name.into(), value);
            }
            Value::Object(keys)
        })
        .collect();
    let totals: Map<String, Value> = total
        .metrics()
        .into_iter()
        .map(|(name, value, _)| (name.to_string(), value))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "group_by": dims,
        "timezone": timezone,
        "from": filters.from,
        "to": filters.to,
        "rows": rows,
        "totals": totals,
    })))
}

/// One CSV line; fields with a comma, quote or line break are quoted, and fields that a
/// spreadsheet would run as a formula get a leading apostrophe.
fn csv_line(fields: &[String]) -> String {
    let mut line = fields
        .iter()
        .map(|f| {
            let f = if f.starts_with(['=', '+', '@'])
                || (f.starts_with('-') && f.parse::<f64>().is_err())
            {
                format!("'{f}")
            } else {
                f.clone()
            };
            if f.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters() -> Filters {
        Filters {
            unique_clicks: true,
            flow: Some(7),
            country: Some("DE".into()),
            source: None,
            sub_id: None,
            goal: Some("sale".into()),
            from: "2026-01-01 00:00:00".into(),
            to: "2026-01-31 23:59:59".into(),
            timezone: "Europe/Berlin".into(),
        }
    }

    #[test]
    fn rollups_serve_what_they_have() {
        let sql = clicks_sql(&["day", "flow", "country"], &filters());
        assert!(sql.text().contains("FROM clicks_hourly"), "{}", sql.text());
        let sql = clicks_sql(&["sub3"], &filters());
        assert!(sql.text().contains("FROM clicks "), "{}", sql.text());
        let sql = conversions_sql(&["goal", "hour"], &filters());
        assert!(
            sql.text().contains("FROM conversions_hourly"),
            "{}",
            sql.text()
        );
        let sql = conversions_sql(&["device"], &filters());
        assert!(sql.text().contains("max(version)"), "{}", sql.text());
        assert!(!sql.text().contains("sale") && !sql.text().contains("Berlin"));
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(csv_line(&["a".into(), "b,c".into()]), "a,\"b,c\"\r\n");
        assert_eq!(csv_line(&["=1+1".into(), "-2.5".into()]), "'=1+1,-2.5\r\n");
        assert_eq!(csv_line(&["say \"hi\"".into()]), "\"say \"\"hi\"\"\"\r\n");
    }

    #[test]
    fn metrics_are_derived_from_totals() {
        let t = Totals {
            clicks: 200,
            approved: 3,
            pending: 1,
            revenue_micros: 30_000_000,
            cost_micros: 20_000_000,
            ..Totals::default()
        };
        let m: HashMap<_, _> = t.metrics().into_iter().map(|(k, v, _)| (k, v)).collect();
        assert_eq!(m["conversions"], json!(4));
        assert_eq!(m["cr"], json!(2.0));
        assert_eq!(m["profit"], json!(format_micros(10_000_000)));
        assert_eq!(m["roi"], json!(50.0));
        assert_eq!(m["epc"], json!(format_micros(150_000)));
    }
}

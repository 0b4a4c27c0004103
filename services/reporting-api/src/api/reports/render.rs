//! A finished report as JSON (rows, totals and what was asked) or as CSV (one line per
//! row, keys then metrics, safe to open in a spreadsheet).

use serde_json::{json, Map, Value};

use super::merge::{Row, Totals};
use super::parse::{ReportRequest, METRICS};
use super::query::Range;
use crate::currency::Rates;
use crate::object_names::name_column;

/// Money in `rates`' reporting currency; `without_rate` lists, by currency, the approved
/// revenue no rate converts (in none of the sums).
pub fn json(
    request: &ReportRequest,
    range: &Range,
    rows: Vec<Row>,
    total: &Totals,
    rates: &Rates,
) -> Value {
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
    json!({
        "group_by": request.dims,
        "timezone": request.filters.timezone,
        "from": range.from,
        "to": range.to,
        "rows": rows,
        "totals": totals,
        "reporting_currency": rates.reporting(),
        "without_rate": total.without_rate.json(),
        "cost_without_rate": total.cost_without_rate_json(),
    })
}

/// A header line (the dimensions, each followed by its name column if it has one, then
/// every metric) and one line per row.
pub fn csv(dims: &[&'static str], rows: &[Row]) -> String {
    let mut header: Vec<String> = Vec::new();
    for dim in dims {
        header.push((*dim).to_string());
        if let Some(name) = name_column(dim) {
            header.push(name.into());
        }
    }
    let key_count = header.len();
    header.extend(METRICS.iter().map(|m| m.to_string()));
    let mut csv = csv_line(&header);
    for (keys, metrics) in rows {
        let mut line: Vec<String> = header
            .iter()
            .take(key_count)
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
    csv
}

/// One CSV line; fields with a comma, quote or line break are quoted, and fields that a
/// spreadsheet would run as a formula get a leading apostrophe.
pub(crate) fn csv_line(fields: &[String]) -> String {
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

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(csv_line(&["a".into(), "b,c".into()]), "a,\"b,c\"\r\n");
        assert_eq!(csv_line(&["=1+1".into(), "-2.5".into()]), "'=1+1,-2.5\r\n");
        assert_eq!(csv_line(&["say \"hi\"".into()]), "\"say \"\"hi\"\"\"\r\n");
    }

    #[test]
    fn csv_has_flow_name_beside_flow_and_every_metric() {
        let mut keys = Map::new();
        keys.insert("flow".into(), json!("7"));
        keys.insert("flow_name".into(), json!("Summer, sale"));
        let total = Totals {
            clicks: 3,
            ..Totals::default()
        };
        let csv = csv(&["flow"], &[(keys, total.metrics())]);
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some(["flow,flow_name", &METRICS.join(",")].join(",").as_str())
        );
        assert_eq!(
            lines.next(),
            Some("7,\"Summer, sale\",3,,0,0,0,0,0,0.0,0,0,0,0.0,0,0,0,0,0.0,0,0.0,0,0.0,0,0,0,")
        );
    }
}

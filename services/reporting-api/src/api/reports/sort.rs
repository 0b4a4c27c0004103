//! The order of a report's rows: by a metric's number, or by a key's text (a grouped
//! dimension or `flow_name`), ascending or descending.

use serde_json::Value;

use super::merge::Row;
use super::parse::Sort;

pub fn sort(rows: &mut [Row], sort: &Sort) {
    let value = |row: &Row| -> (f64, String) {
        if let Some((_, _, n)) = row.1.iter().find(|(name, _, _)| *name == sort.key) {
            return (*n, String::new());
        }
        let text = row
            .0
            .get(&sort.key)
            .and_then(Value::as_str)
            .unwrap_or_default();
        (0.0, text.to_string())
    };
    rows.sort_by(|a, b| {
        let (a, b) = (value(a), value(b));
        let order = a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1));
        if sort.descending {
            order.reverse()
        } else {
            order
        }
    });
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Map};

    use super::*;

    fn row(country: &str, clicks: f64) -> Row {
        let mut keys = Map::new();
        keys.insert("country".into(), json!(country));
        (keys, vec![("clicks", json!(clicks), clicks)])
    }

    fn countries(rows: &[Row]) -> Vec<&str> {
        rows.iter()
            .filter_map(|r| r.0["country"].as_str())
            .collect()
    }

    #[test]
    fn sorts_by_metric_or_key_either_way() {
        let mut rows = vec![row("US", 5.0), row("DE", 9.0), row("FR", 1.0)];
        let by = |key: &str, descending| Sort {
            key: key.into(),
            descending,
        };
        sort(&mut rows, &by("clicks", true));
        assert_eq!(countries(&rows), ["DE", "US", "FR"]);
        sort(&mut rows, &by("clicks", false));
        assert_eq!(countries(&rows), ["FR", "US", "DE"]);
        sort(&mut rows, &by("country", false));
        assert_eq!(countries(&rows), ["DE", "FR", "US"]);
        sort(&mut rows, &by("country", true));
        assert_eq!(countries(&rows), ["US", "FR", "DE"]);
    }
}

//! The named query shapes of `deploy/clickhouse/queries.sql`: the SQL the services run,
//! kept in one file so the tests can run every shape on ClickHouse 18.16 and on a current
//! ClickHouse.

use std::sync::OnceLock;

/// The query file, compiled in.
pub const QUERIES_SQL: &str = include_str!("../../../deploy/clickhouse/queries.sql");

/// One query shape: `{table}` stands for a table name, `?` for a bound value.
#[derive(Debug, Clone)]
pub struct NamedQuery {
    pub name: &'static str,
    /// The tables the shape runs on.
    pub tables: Vec<&'static str>,
    /// One SQL literal per `?`, for the checks on both ClickHouse versions.
    pub example: Vec<&'static str>,
    pub sql: String,
}

impl NamedQuery {
    /// The statement for `table`, with `?` left for binding.
    pub fn for_table(&self, table: &str) -> String {
        self.sql.replace("{table}", table)
    }

    /// The statement for `table` with the example values in place of every `?`.
    pub fn example_for(&self, table: &str) -> String {
        let mut out = String::new();
        let mut values = self.example.iter();
        for c in self.for_table(table).chars() {
            match (c, values.clone().next()) {
                ('?', Some(value)) => {
                    out.push_str(value);
                    values.next();
                }
                _ => out.push(c),
            }
        }
        out
    }
}

/// Every named query, in file order.
pub fn all() -> &'static [NamedQuery] {
    static QUERIES: OnceLock<Vec<NamedQuery>> = OnceLock::new();
    QUERIES.get_or_init(|| parse(QUERIES_SQL))
}

/// The named query `name`. The names are constants of the code, and a unit test checks
/// that each one exists, so a missing name is a programming error.
pub fn get(name: &str) -> &'static NamedQuery {
    all()
        .iter()
        .find(|q| q.name == name)
        .unwrap_or_else(|| panic!("no query named {name} in deploy/clickhouse/queries.sql"))
}

/// The statement `name` for `table`, with `?` left for binding.
pub fn sql(name: &str, table: &str) -> String {
    get(name).for_table(table)
}

/// Every query shape on every table it runs on, with the example values filled in.
pub fn examples() -> Vec<(String, String)> {
    all()
        .iter()
        .flat_map(|q| {
            q.tables
                .iter()
                .map(move |t| (format!("{} on {t}", q.name), q.example_for(t)))
        })
        .collect()
}

fn parse(text: &'static str) -> Vec<NamedQuery> {
    let mut queries = Vec::new();
    for block in text.split("-- name: ").skip(1) {
        let mut lines = block.lines();
        let name = lines.next().unwrap_or_default().trim();
        let mut query = NamedQuery {
            name,
            tables: Vec::new(),
            example: Vec::new(),
            sql: String::new(),
        };
        for line in lines {
            if let Some(tables) = line.strip_prefix("-- tables:") {
                query.tables = tables.split_whitespace().collect();
            } else if let Some(example) = line.strip_prefix("-- example:") {
                query.example = split_values(example.trim());
            } else if !line.trim_start().starts_with("--") && !line.trim().is_empty() {
                query.sql.push_str(line.trim());
                query.sql.push(' ');
            }
        }
        query.sql = query.sql.trim().trim_end_matches(';').to_string();
        queries.push(query);
    }
    queries
}

/// Splits `a, f(b, c), 'd,e'` on the commas outside parentheses and quotes.
fn split_values(text: &'static str) -> Vec<&'static str> {
    let (mut values, mut depth, mut quoted, mut start) = (Vec::new(), 0i32, false, 0);
    for (i, c) in text.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                values.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if !text[start..].trim().is_empty() {
        values.push(text[start..].trim());
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_has_tables_and_one_example_value_per_placeholder() {
        assert!(all().len() >= 7);
        for q in all() {
            assert!(!q.tables.is_empty(), "{}", q.name);
            assert_eq!(
                q.for_table("t").matches('?').count(),
                q.example.len(),
                "{}: placeholders and example values",
                q.name
            );
            assert!(!q.sql.contains(';'), "{}", q.name);
            for (_, sql) in examples() {
                assert!(!sql.contains('?') && !sql.contains("{table}"), "{sql}");
            }
        }
    }

    #[test]
    fn splits_values_outside_parentheses_and_quotes() {
        assert_eq!(
            split_values("0, toDateTime('a, b'), f(1, 2)"),
            vec!["0", "toDateTime('a, b')", "f(1, 2)"]
        );
        assert!(split_values("").is_empty());
    }

    #[test]
    fn fills_examples_in_order() {
        let q = get("drop_partition");
        assert_eq!(
            q.example_for("clicks"),
            "ALTER TABLE clicks DROP PARTITION 19700101"
        );
        assert_eq!(
            get("checkpoints").example_for("sink_checkpoints"),
            "SELECT kafka_partition AS partition, max_offset, fingerprint FROM sink_checkpoints WHERE source_table = 'clicks' ORDER BY kafka_partition, written_at DESC, max_offset DESC LIMIT 1 BY kafka_partition"
        );
    }
}

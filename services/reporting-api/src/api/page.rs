//! One page of a raw-table list: newest first, a keyset cursor on (time, id) so rows
//! inserted while a user pages never shift or repeat what the next page shows. The
//! query fetches one row beyond the page to learn whether another page follows.

use std::collections::HashMap;

use actix_web::{web, HttpResponse};
use serde::Serialize;
use serde_json::json;

use super::reports::render::csv_line;

/// A list endpoint's raw query string, checked by `filters::Params`.
pub type Query = web::Query<HashMap<String, String>>;

/// Cuts the one row fetched beyond a page off `rows`; when it was there, returns the
/// cursor of the page's last row, from which the next page starts.
pub fn split_page<R>(
    rows: &mut Vec<R>,
    size: u64,
    cursor: impl Fn(&R) -> String,
) -> Option<String> {
    if rows.len() as u64 <= size {
        return None;
    }
    rows.truncate(size as usize);
    rows.last().map(cursor)
}

pub fn page_json<T: Serialize>(items: Vec<T>, size: u64, next: Option<String>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "items": items,
        "page_size": size,
        "next_cursor": next,
    }))
}

/// A page of a list as CSV: a header of `columns`, then one line per item with each
/// column's JSON value (strings as they are, `null` empty); the next page's cursor, if
/// any, in the `x-next-cursor` header.
pub fn page_csv(
    filename: &'static str,
    columns: &[&str],
    items: &[serde_json::Value],
    next: Option<String>,
) -> HttpResponse {
    let header: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    let mut csv = csv_line(&header);
    for item in items {
        let line: Vec<String> = columns
            .iter()
            .map(|c| match &item[*c] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => String::new(),
                other => other.to_string(),
            })
            .collect();
        csv.push_str(&csv_line(&line));
    }
    let mut response = HttpResponse::Ok();
    response
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            "content-disposition",
            format!("attachment; filename=\"{filename}\""),
        ));
    if let Some(next) = next {
        response.insert_header(("x-next-cursor", next));
    }
    response.body(csv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_row_beyond_the_page_gives_the_cursor() {
        let mut rows = vec![5, 4, 3];
        assert_eq!(
            split_page(&mut rows, 2, |r| r.to_string()),
            Some("4".into())
        );
        assert_eq!(rows, [5, 4]);
        let mut rows = vec![5, 4];
        assert_eq!(split_page(&mut rows, 2, |r| r.to_string()), None);
        assert_eq!(rows, [5, 4]);
    }
}

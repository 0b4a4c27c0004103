//! `GET /api/v1/audit`: the audit log (written by `crate::audit`), newest first, a page
//! at a time, as JSON or CSV. Filters: user (username), user_id, object (its kind),
//! object_id, action, from, to (in `timezone`). A user restricted to some flows reads
//! only the entries of those flows.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::page::{page_csv, page_json, split_page, Query};
use crate::audit::{ACTIONS, KINDS};
use crate::error::ApiError;
use crate::filters::{cursor, eq, flow_condition, range_condition, Params};
use crate::sql::{Arg, Sql};
use crate::state::AppState;
use crate::users::FlowScope;

#[derive(Debug, clickhouse::Row, Deserialize)]
struct AuditRow {
    id: String,
    at: String,
    at_ms: i64,
    user_id: u32,
    username: String,
    role: String,
    via: String,
    object_kind: String,
    object_id: String,
    flow_id: u32,
    action: String,
    before_json: String,
    after_json: String,
}

/// The CSV columns, in order.
const COLUMNS: &[&str] = &[
    "time",
    "username",
    "user_id",
    "role",
    "via",
    "action",
    "object",
    "object_id",
    "flow_id",
    "before",
    "after",
];

fn parsed(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
    }
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "users",
    summary = "The audit log, newest first; JSON or CSV",
    params(crate::openapi::bodies::AuditFilters, crate::openapi::bodies::PageParams),
    responses(
        (status = 200, description = "One page", headers(
            ("x-next-cursor" = String, description = "CSV only: the next page's cursor, absent on the last page"),
        ), content(
            (crate::openapi::bodies::AuditPage = "application/json"),
            (String = "text/csv"),
        )),
        (status = 403, description = "Analysts cannot read the audit log", body = traffsure_core::ErrorBody),
        (status = 422, description = "Invalid filter, named in field", body = traffsure_core::ErrorBody),
    ))]
pub async fn list(
    state: web::Data<AppState>,
    query: Query,
    scope: FlowScope,
) -> Result<HttpResponse, ApiError> {
    let params = Params::new(
        query.into_inner(),
        &[
            "user",
            "user_id",
            "object",
            "object_id",
            "action",
            "from",
            "to",
            "timezone",
            "cursor",
            "limit",
            "format",
        ],
    )?;
    let user = params.text("user", 64)?;
    let user_id = params.number::<u32>("user_id")?;
    let object = params.one_of("object", KINDS)?;
    let object_id = params.text("object_id", 100)?;
    let action = params.one_of("action", ACTIONS)?;
    let timezone = params.timezone()?;
    let (from, to) = params.range()?;
    let cursor = cursor(&params)?;
    let size = params.page_size()?;
    let csv = params.one_of("format", &["json", "csv"])? == Some("csv");
    state.check_timezone(&timezone).await?;

    let mut sql = Sql::new(
        "SELECT id, toString(at) AS t, at_ms, user_id, username, role, via, object_kind, \
         object_id, flow_id, action, before_json, after_json FROM audit_log WHERE 1",
    );
    flow_condition(&mut sql, "flow_id", None, &scope);
    if let Some(user) = user {
        eq(&mut sql, "username", Arg::Str(user));
    }
    if let Some(user_id) = user_id {
        eq(&mut sql, "user_id", Arg::U32(user_id));
    }
    if let Some(object) = object {
        eq(&mut sql, "object_kind", Arg::Str(object.into()));
    }
    if let Some(object_id) = object_id {
        eq(&mut sql, "object_id", Arg::Str(object_id));
    }
    if let Some(action) = action {
        eq(&mut sql, "action", Arg::Str(action.into()));
    }
    range_condition(&mut sql, "at", &from, &to, &timezone);
    if let Some((ms, id)) = &cursor {
        sql.push(" AND (at_ms < ").arg(Arg::I64(*ms));
        sql.push(" OR (at_ms = ").arg(Arg::I64(*ms));
        sql.push(" AND id < ").str(id.as_str()).push("))");
    }
    sql.push(" ORDER BY at_ms DESC, id DESC LIMIT ")
        .arg(Arg::U64(size + 1));
    let mut rows = sql.query(&state.clickhouse).fetch_all::<AuditRow>().await?;
    let next = split_page(&mut rows, size, |r| format!("{}_{}", r.at_ms, r.id));
    let items: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            json!({
                "id": r.id,
                "time": r.at,
                "time_ms": r.at_ms,
                "user_id": r.user_id,
                "username": r.username,
                "role": r.role,
                "via": r.via,
                "object": r.object_kind,
                "object_id": r.object_id,
                "flow_id": r.flow_id,
                "action": r.action,
                "before": parsed(&r.before_json),
                "after": parsed(&r.after_json),
            })
        })
        .collect();
    if csv {
        let flat: Vec<Value> = items
            .iter()
            .map(|item| {
                let mut item = item.clone();
                for side in ["before", "after"] {
                    item[side] = match &item[side] {
                        Value::Null => Value::Null,
                        other => Value::String(other.to_string()),
                    };
                }
                item
            })
            .collect();
        return Ok(page_csv("audit.csv", COLUMNS, &flat, next));
    }
    Ok(page_json(items, size, next))
}

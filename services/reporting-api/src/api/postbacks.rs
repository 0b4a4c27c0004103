//! The postback log: every postback postback-ingest answered, newest first, a page at a
//! time, and one entry with its full payload.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::page::{page_json, split_page, Query};
use crate::error::ApiError;
use crate::filters::{cursor, eq, range_condition, Params};
use crate::sql::{Arg, Sql};
use crate::state::AppState;

#[derive(Debug, clickhouse::Row, Deserialize)]
struct PostbackRow {
    postback_id: String,
    received: String,
    received_at_ms: i64,
    flow_id: u32,
    click_hash: String,
    goal: String,
    response_status: u16,
    reason: String,
    message: String,
    ip: String,
    method: String,
    content_type: String,
    path: String,
    param_names: Vec<String>,
    param_values: Vec<String>,
    params_truncated: u8,
    delta_ms: i64,
}

const POSTBACK_COLUMNS: &str =
    "SELECT postback_id, toString(received_at) AS received, received_at_ms, flow_id, \
        click_hash, goal, response_status, reason, message, ip, method, content_type, path, \
        param_names, param_values, params_truncated, delta_ms FROM postback_log WHERE 1";

fn postback_json(state: &AppState, r: PostbackRow, full: bool) -> serde_json::Value {
    let mut value = json!({
        "postback_id": r.postback_id,
        "flow_id": r.flow_id,
        "flow_name": state.flow_name(r.flow_id),
        "click_hash": r.click_hash,
        "goal": r.goal,
        "response_status": r.response_status,
        "reason": r.reason,
        "message": r.message,
        "ip": r.ip,
        "time": r.received,
        "delta_ms": r.delta_ms,
    });
    if full {
        let params: Vec<_> = r
            .param_names
            .iter()
            .zip(&r.param_values)
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect();
        value["payload"] = json!({
            "method": r.method,
            "content_type": r.content_type,
            "path": r.path,
            "params": params,
            "truncated": r.params_truncated == 1,
        });
    }
    value
}

/// The postback log: filters flow, click (hash), response_status (the HTTP code answered;
/// `status` is its older name), from, to, and `q`, a case-insensitive partial match over
/// every postback parameter.
pub async fn list(state: web::Data<AppState>, query: Query) -> Result<HttpResponse, ApiError> {
    let params = Params::with_aliases(
        query.into_inner(),
        &[
            "flow",
            "click",
            "response_status",
            "q",
            "from",
            "to",
            "timezone",
            "cursor",
            "limit",
        ],
        &[("status", "response_status")],
    )?;
    let flow = params.flow(&state.registry)?;
    let click = params.text("click", 100)?;
    let response_status = params.number::<u16>("response_status")?;
    if response_status.is_some_and(|s| !(100..=599).contains(&s)) {
        let field = params.field("response_status");
        return Err(ApiError::invalid(
            field,
            format!("{field} must be an HTTP status code"),
        ));
    }
    let search = params.text("q", 200)?;
    let timezone = params.timezone()?;
    let (from, to) = params.range()?;
    let cursor = cursor(&params)?;
    let size = params.page_size()?;
    state.check_timezone(&timezone).await?;

    let mut sql = Sql::new(POSTBACK_COLUMNS);
    if let Some(flow) = flow {
        eq(&mut sql, "flow_id", Arg::U32(flow));
    }
    if let Some(click) = click {
        eq(&mut sql, "click_hash", Arg::Str(click));
    }
    if let Some(response_status) = response_status {
        eq(
            &mut sql,
            "response_status",
            Arg::U32(response_status.into()),
        );
    }
    if let Some(q) = search {
        sql.push(" AND (arrayExists(v -> positionCaseInsensitiveUTF8(v, ")
            .str(q.as_str())
            .push(") > 0, param_values) OR positionCaseInsensitiveUTF8(click_hash, ")
            .str(q)
            .push(") > 0)");
    }
    range_condition(&mut sql, "received_at", &from, &to, &timezone);
    if let Some((ms, id)) = &cursor {
        sql.push(" AND received_at <= toDateTime(")
            .arg(Arg::I64(ms.div_euclid(1000)));
        sql.push(") AND (received_at_ms < ").arg(Arg::I64(*ms));
        sql.push(" OR (received_at_ms = ").arg(Arg::I64(*ms));
        sql.push(" AND postback_id < ").str(id.as_str()).push("))");
    }
    sql.push(" ORDER BY received_at_ms DESC, postback_id DESC LIMIT ")
        .arg(Arg::U64(size + 1));
    let mut rows = sql
        .query(&state.clickhouse)
        .fetch_all::<PostbackRow>()
        .await?;
    let next = split_page(&mut rows, size, |r| {
        format!("{}_{}", r.received_at_ms, r.postback_id)
    });
    let items: Vec<_> = rows
        .into_iter()
        .map(|r| postback_json(&state, r, false))
        .collect();
    Ok(page_json(items, size, next))
}

/// One postback log entry with its full payload.
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mut sql = Sql::new(POSTBACK_COLUMNS);
    eq(&mut sql, "postback_id", Arg::Str(id.into_inner()));
    sql.push(" LIMIT 1");
    let row = sql
        .query(&state.clickhouse)
        .fetch_optional::<PostbackRow>()
        .await?
        .ok_or_else(|| ApiError::NotFound("no such postback log entry".into()))?;
    Ok(HttpResponse::Ok().json(postback_json(&state, row, true)))
}

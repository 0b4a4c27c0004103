//! The postback log: every postback postback-ingest answered, newest first, a page at a
//! time, and one entry with its full payload, each with what became of it
//! (`postback_outcomes`).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use traffsure_core::postback_params;

use super::page::{page_csv, page_json, split_page, Query};
use super::postback_outcomes::{self, Conversions, Decision};
use crate::error::ApiError;
use crate::filters::{cursor, eq, flow_condition, range_condition, Params};
use crate::sql::{Arg, Sql};
use crate::state::AppState;
use crate::users::FlowScope;

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
    r_conversion_id: String,
    r_message: String,
    r_decided: String,
    outcome: String,
}

/// The log columns, as the page selects them and the join passes them on.
macro_rules! log_columns {
    () => {
        "postback_id, received, received_at_ms, flow_id, click_hash, goal, response_status, \
         reason, message, ip, method, content_type, path, param_names, param_values, \
         params_truncated, delta_ms"
    };
}

const PAGE: &str = "SELECT postback_id, toString(received_at) AS received, received_at_ms, \
        flow_id, click_hash, goal, response_status, reason, message, ip, method, content_type, \
        path, param_names, param_values, params_truncated, delta_ms FROM postback_log WHERE 1";
const IDS: &str = "SELECT postback_id FROM postback_log WHERE 1";
const NEWEST_FIRST: &str = " ORDER BY received_at_ms DESC, postback_id DESC LIMIT ";

/// Log entries matching `filter` (conditions on `postback_log`) joined with their
/// outcomes, newest first, at most `limit`. Without an outcome filter the page is cut
/// before the join, so only its own results are read.
fn entries(filter: &Sql, outcome: Option<&'static str>, limit: u64) -> Sql {
    let mut page = Sql::new(PAGE);
    let mut ids = Sql::new(IDS);
    page.append(filter);
    ids.append(filter);
    if outcome.is_none() {
        page.push(NEWEST_FIRST).arg(Arg::U64(limit));
        ids.push(NEWEST_FIRST).arg(Arg::U64(limit));
    }
    let mut sql = postback_outcomes::joined(log_columns!(), &page, &ids);
    if let Some(outcome) = outcome {
        sql.push(" AND outcome = ").str(outcome);
    }
    sql.push(NEWEST_FIRST).arg(Arg::U64(limit));
    sql
}

/// A stored parameter under one of `names` (any case) whose value is `value`; `lower`
/// compares the value case-insensitively too.
fn param_condition(sql: &mut Sql, names: &[&str], value: String, lower: bool) {
    sql.push(" AND arrayExists((n, v) -> has([");
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.str(*name);
    }
    if lower {
        sql.push("], lower(n)) AND lower(v) = lower(")
            .str(value)
            .push(")");
    } else {
        sql.push("], lower(n)) AND v = ").str(value);
    }
    sql.push(", param_names, param_values)");
}

fn postback_json(
    state: &AppState,
    conversions: &Conversions,
    r: PostbackRow,
    full: bool,
) -> serde_json::Value {
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
    let decision = Decision {
        conversion_id: r.r_conversion_id,
        message: r.r_message,
        decided_at: r.r_decided,
        outcome: r.outcome,
    };
    if let (Some(value), serde_json::Value::Object(fields)) = (
        value.as_object_mut(),
        conversions.fields(&r.postback_id, decision),
    ) {
        value.extend(fields);
    }
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

/// The columns of the postback log's CSV form, in order (the conversion's id is in
/// `conversion_id`; the payload is on the entry's own page).
const COLUMNS: &[&str] = &[
    "postback_id",
    "time",
    "flow_id",
    "flow_name",
    "click_hash",
    "goal",
    "response_status",
    "reason",
    "outcome",
    "outcome_message",
    "decided_at",
    "conversion_id",
    "message",
    "ip",
    "delta_ms",
];

/// The postback log, as JSON or CSV (`format`): filters flow, click (hash), goal, uid (the action id, under any of
/// its parameter names), raw_status (the status parameter as sent), response_status (the
/// HTTP code answered; `status` is its older name), outcome, from, to, and `q`, a
/// case-insensitive partial match over every postback parameter.
#[utoipa::path(get, path = "/api/v1/postbacks", tag = "logs",
    summary = "The postback log, newest first; JSON or CSV",
    params(crate::openapi::bodies::PostbackFilters, crate::openapi::bodies::PageParams),
    responses(
        (status = 200, description = "One page", headers(
            ("x-next-cursor" = String, description = "CSV only: the next page's cursor, absent on the last page"),
        ), content(
            (crate::openapi::bodies::PostbackPage = "application/json"),
            (String = "text/csv"),
        )),
        (status = 422, description = "Invalid filter, named in field", body = traffsure_core::ErrorBody),
    ))]
pub async fn list(
    state: web::Data<AppState>,
    query: Query,
    scope: FlowScope,
) -> Result<HttpResponse, ApiError> {
    let params = Params::with_aliases(
        query.into_inner(),
        &[
            "flow",
            "click",
            "goal",
            "uid",
            "raw_status",
            "response_status",
            "outcome",
            "q",
            "from",
            "to",
            "timezone",
            "cursor",
            "limit",
            "format",
        ],
        &[("status", "response_status")],
    )?;
    let flow = params.flow(&state.registry)?;
    let csv = params.one_of("format", &["json", "csv"])? == Some("csv");
    let click = params.text("click", 100)?;
    let goal = params.text("goal", 100)?;
    let uid = params.text("uid", 256)?;
    let raw_status = params.text("raw_status", 64)?;
    let response_status = params.number::<u16>("response_status")?;
    if response_status.is_some_and(|s| !(100..=599).contains(&s)) {
        let field = params.field("response_status");
        return Err(ApiError::invalid(
            field,
            format!("{field} must be an HTTP status code"),
        ));
    }
    let outcome = params.one_of("outcome", &postback_outcomes::words())?;
    let search = params.text("q", 200)?;
    let timezone = params.timezone()?;
    let (from, to) = params.range()?;
    let cursor = cursor(&params)?;
    let size = params.page_size()?;
    state.check_timezone(&timezone).await?;

    let mut filter = Sql::default();
    flow_condition(&mut filter, "flow_id", flow, &scope);
    if let Some(click) = click {
        eq(&mut filter, "click_hash", Arg::Str(click));
    }
    if let Some(goal) = goal {
        filter.push(" AND lower(goal) = lower(").str(goal).push(")");
    }
    if let Some(uid) = uid {
        param_condition(&mut filter, postback_params::UID, uid, false);
    }
    if let Some(raw_status) = raw_status {
        param_condition(&mut filter, postback_params::STATUS, raw_status, true);
    }
    if let Some(response_status) = response_status {
        eq(
            &mut filter,
            "response_status",
            Arg::U32(response_status.into()),
        );
    }
    if let Some(q) = search {
        filter
            .push(" AND (arrayExists(v -> positionCaseInsensitiveUTF8(v, ")
            .str(q.as_str())
            .push(") > 0, param_values) OR positionCaseInsensitiveUTF8(click_hash, ")
            .str(q)
            .push(") > 0)");
    }
    range_condition(&mut filter, "received_at", &from, &to, &timezone);
    if let Some((ms, id)) = &cursor {
        filter
            .push(" AND received_at <= toDateTime(")
            .arg(Arg::I64(ms.div_euclid(1000)));
        filter.push(") AND (received_at_ms < ").arg(Arg::I64(*ms));
        filter.push(" OR (received_at_ms = ").arg(Arg::I64(*ms));
        filter
            .push(" AND postback_id < ")
            .str(id.as_str())
            .push("))");
    }
    let mut rows = entries(&filter, outcome, size + 1)
        .query(&state.clickhouse)
        .fetch_all::<PostbackRow>()
        .await?;
    let next = split_page(&mut rows, size, |r| {
        format!("{}_{}", r.received_at_ms, r.postback_id)
    });
    let conversions = Conversions::load(
        &state.clickhouse,
        rows.iter().map(|r| r.r_conversion_id.as_str()),
    )
    .await?;
    let items: Vec<_> = rows
        .into_iter()
        .map(|r| postback_json(&state, &conversions, r, false))
        .collect();
    if csv {
        let rows: Vec<_> = items
            .iter()
            .map(|item| {
                let mut row = item.clone();
                row["conversion_id"] = item["conversion"]["conversion_id"].clone();
                row
            })
            .collect();
        return Ok(page_csv("postbacks.csv", COLUMNS, &rows, next));
    }
    Ok(page_json(items, size, next))
}

/// One postback log entry with its outcome and full payload.
#[utoipa::path(get, path = "/api/v1/postbacks/{id}", tag = "logs",
    summary = "One postback log entry with its full payload",
    params(("id" = String, Path, description = "The postback id")),
    responses(
        (status = 200, description = "The entry", body = crate::openapi::bodies::PostbackEntry),
        (status = 404, description = "No such entry", body = traffsure_core::ErrorBody),
    ))]
pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
    scope: FlowScope,
) -> Result<HttpResponse, ApiError> {
    let mut filter = Sql::default();
    eq(&mut filter, "postback_id", Arg::Str(id.into_inner()));
    flow_condition(&mut filter, "flow_id", None, &scope);
    let row = entries(&filter, None, 1)
        .query(&state.clickhouse)
        .fetch_optional::<PostbackRow>()
        .await?
        .ok_or_else(|| ApiError::NotFound("no such postback log entry".into()))?;
    let conversions = Conversions::load(&state.clickhouse, [row.r_conversion_id.as_str()]).await?;
    Ok(HttpResponse::Ok().json(postback_json(&state, &conversions, row, true)))
}

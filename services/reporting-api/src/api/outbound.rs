//! Outbound postbacks: every delivery attempt the dispatcher logged, newest first, a
//! page at a time, and manual replays, forwarded to the dispatcher's HTTP port.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use traffsure_core::format_micros;
use traffsure_core::vocab::Vocabulary;
use traffsure_events::OutboundState;

use super::page::{page_json, split_page, Query};
use crate::error::ApiError;
use crate::filters::{cursor, eq, Params};
use crate::sql::{Arg, Sql};
use crate::state::AppState;

#[derive(Debug, clickhouse::Row, Deserialize)]
struct OutboundRow {
    attempt_id: String,
    conversion_id: String,
    outbound_id: String,
    flow_id: u32,
    click_hash: String,
    goal: String,
    status: String,
    revenue_micros: i64,
    currency: String,
    method: String,
    url: String,
    http_status: u32,
    error: String,
    latency_ms: u32,
    attempt: u32,
    state: String,
    attempted_at_ms: i64,
    manual: u8,
}

/// Outbound postbacks, every attempt: filters flow, conversion_id (`conversion` is its
/// older name), state, from, to.
pub async fn list(state: web::Data<AppState>, query: Query) -> Result<HttpResponse, ApiError> {
    let params = Params::with_aliases(
        query.into_inner(),
        &[
            "flow",
            "conversion_id",
            "state",
            "from",
            "to",
            "timezone",
            "cursor",
            "limit",
        ],
        &[("conversion", "conversion_id")],
    )?;
    let flow = params.flow(&state.registry)?;
    let conversion_id = params.text("conversion_id", 100)?;
    let delivery_state = params.word::<OutboundState>("state")?;
    let timezone = params.timezone()?;
    let (from, to) = params.range()?;
    let cursor = cursor(&params)?;
    let size = params.page_size()?;
    state.check_timezone(&timezone).await?;

    let mut sql = Sql::new(
        "SELECT attempt_id, conversion_id, outbound_id, toUInt32(flow_id), click_hash, goal, \
                toString(status), toInt64(revenue_micros), currency, method, url, toUInt32(http_status), \
                error, toUInt32(latency_ms), toUInt32(attempt), toString(state), toInt64(attempted_at_ms), \
                toUInt8(manual) FROM outbound_log WHERE 1",
    );
    if let Some(flow) = flow {
        eq(&mut sql, "flow_id", Arg::U32(flow));
    }
    if let Some(conversion_id) = conversion_id {
        eq(&mut sql, "conversion_id", Arg::Str(conversion_id));
    }
    if let Some(delivery_state) = delivery_state {
        sql.push(" AND toString(state) = ")
            .str(delivery_state.word());
    }
    if let Some(from) = &from {
        sql.push(" AND attempted_at_ms >= toInt64(toUInt32(toDateTime(")
            .str(from.as_str())
            .push(", ")
            .str(timezone.as_str())
            .push("))) * 1000");
    }
    if let Some(to) = &to {
        sql.push(" AND attempted_at_ms < (toInt64(toUInt32(toDateTime(")
            .str(to.as_str())
            .push(", ")
            .str(timezone.as_str())
            .push("))) + 1) * 1000");
    }
    if let Some((ms, id)) = &cursor {
        sql.push(" AND (attempted_at_ms < ").arg(Arg::I64(*ms));
        sql.push(" OR (attempted_at_ms = ").arg(Arg::I64(*ms));
        sql.push(" AND attempt_id < ").str(id.as_str()).push("))");
    }
    sql.push(" ORDER BY attempted_at_ms DESC, attempt_id DESC LIMIT ")
        .arg(Arg::U64(size + 1));
    let mut rows = sql
        .query(&state.clickhouse)
        .fetch_all::<OutboundRow>()
        .await?;
    let next = split_page(&mut rows, size, |r| {
        format!("{}_{}", r.attempted_at_ms, r.attempt_id)
    });
    let items: Vec<_> = rows
        .into_iter()
        .map(|r| {
            json!({
                "attempt_id": r.attempt_id,
                "conversion_id": r.conversion_id,
                "outbound_id": r.outbound_id,
                "flow_id": r.flow_id,
                "flow_name": state.flow_name(r.flow_id),
                "click_hash": r.click_hash,
                "goal": r.goal,
                "status": r.status,
                "revenue": format_micros(r.revenue_micros),
                "currency": r.currency,
                "method": r.method,
                "url": r.url,
                "http_status": r.http_status,
                "error": r.error,
                "latency_ms": r.latency_ms,
                "attempt": r.attempt,
                "state": r.state,
                "time_ms": r.attempted_at_ms,
                "manual": r.manual == 1,
            })
        })
        .collect();
    Ok(page_json(items, size, next))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    conversion_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outbound_id: Option<String>,
}

/// Forwards a manual replay to the postback dispatcher.
pub async fn replay(
    state: web::Data<AppState>,
    body: web::Json<Replay>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.conversion_id.trim().is_empty() {
        return Err(ApiError::invalid(
            "conversion_id",
            "conversion_id is required",
        ));
    }
    let Some(base) = state.dispatcher_url.as_deref() else {
        return Err(ApiError::Unavailable(
            "the postback dispatcher is not configured (dispatcher_url)".into(),
        ));
    };
    let response = state
        .http
        .post(format!("{base}/replay"))
        .json(&body)
        .send()
        .await
        .map_err(|e| {
            ApiError::Unavailable(format!("the postback dispatcher is unreachable: {e}"))
        })?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.map_err(|e| {
        ApiError::Unavailable(format!("the postback dispatcher answered badly: {e}"))
    })?;
    if !status.is_success() {
        let code = actix_web::http::StatusCode::from_u16(status.as_u16())
            .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
        return Ok(HttpResponse::build(code).json(answer));
    }
    tracing::info!(conversion = %body.conversion_id, "outbound postbacks replayed");
    Ok(HttpResponse::Ok().json(answer))
}

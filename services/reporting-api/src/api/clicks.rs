//! The click list: raw clicks, newest first, a page at a time, filtered by flow,
//! country, sub_id, source, time range (in a time zone) and bots.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use traffsure_core::format_micros;

use super::page::{page_json, split_page, Query};
use crate::error::ApiError;
use crate::filters::{cursor, eq, range_condition, Params};
use crate::sql::{Arg, Sql};
use crate::state::AppState;

#[derive(Debug, clickhouse::Row, Deserialize)]
struct ClickRow {
    click_hash: String,
    flow_id: u32,
    ts: String,
    ts_ms: i64,
    ip: String,
    country: String,
    sub_id: String,
    source: String,
    device: String,
    os: String,
    browser: String,
    destination_url: String,
    cost_micros: i64,
    is_bot: u8,
}

/// Clicks: filters flow, country, sub_id, source, from, to (in `timezone`), bots.
pub async fn list(state: web::Data<AppState>, query: Query) -> Result<HttpResponse, ApiError> {
    let params = Params::new(
        query.into_inner(),
        &[
            "flow", "country", "sub_id", "source", "from", "to", "timezone", "bots", "cursor",
            "limit",
        ],
    )?;
    let flow = params.flow(&state.registry)?;
    let country = params.country()?;
    let sub_id = params.text("sub_id", 200)?;
    let source = params.text("source", 200)?;
    let timezone = params.timezone()?;
    let (from, to) = params.range()?;
    let bots = params.one_of("bots", &["include", "exclude", "only"])?;
    let cursor = cursor(&params)?;
    let size = params.page_size()?;
    state.check_timezone(&timezone).await?;

    let mut sql = Sql::new(
        "SELECT click_hash, flow_id, toString(ts) AS t, ts_ms, ip, country, sub_id, source, device, os, \
                browser, destination_url, cost_micros, is_bot FROM clicks WHERE 1",
    );
    if let Some(flow) = flow {
        eq(&mut sql, "flow_id", Arg::U32(flow));
    }
    if let Some(country) = country {
        eq(&mut sql, "country", Arg::Str(country));
    }
    if let Some(sub_id) = sub_id {
        eq(&mut sql, "sub_id", Arg::Str(sub_id));
    }
    if let Some(source) = source {
        eq(&mut sql, "source", Arg::Str(source));
    }
    match bots {
        Some("exclude") => {
            sql.push(" AND is_bot = 0");
        }
        Some("only") => {
            sql.push(" AND is_bot = 1");
        }
        _ => {}
    }
    range_condition(&mut sql, "ts", &from, &to, &timezone);
    if let Some((ms, hash)) = &cursor {
        sql.push(" AND ts <= toDateTime(")
            .arg(Arg::I64(ms.div_euclid(1000)));
        sql.push(") AND (ts_ms < ").arg(Arg::I64(*ms));
        sql.push(" OR (ts_ms = ").arg(Arg::I64(*ms));
        sql.push(" AND click_hash < ").str(hash.as_str()).push("))");
    }
    sql.push(" ORDER BY ts_ms DESC, click_hash DESC LIMIT ")
        .arg(Arg::U64(size + 1));
    let mut rows = sql.query(&state.clickhouse).fetch_all::<ClickRow>().await?;
    let next = split_page(&mut rows, size, |r| format!("{}_{}", r.ts_ms, r.click_hash));
    let items: Vec<_> = rows
        .into_iter()
        .map(|r| {
            json!({
                "click_hash": r.click_hash,
                "flow_id": r.flow_id,
                "flow_name": state.flow_name(r.flow_id),
                "time": r.ts,
                "ip": r.ip,
                "country": r.country,
                "sub_id": r.sub_id,
                "source": r.source,
                "device": r.device,
                "os": r.os,
                "browser": r.browser,
                "destination_url": r.destination_url,
                "cost": format_micros(r.cost_micros),
                "is_bot": r.is_bot == 1,
            })
        })
        .collect();
    Ok(page_json(items, size, next))
}

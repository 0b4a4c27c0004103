//! The read endpoints behind the panel's pages: dashboard (from the rollups), clicks,
//! conversions, postback log and outbound postbacks (raw tables, newest first, 50 a
//! page). Pages move with a keyset cursor on (time, id), so rows inserted while a user
//! pages never shift or repeat what the next page shows.

use std::collections::HashMap;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use traffsure_core::format_micros;
use traffsure_events::FlowStatus;

use crate::api::Api;
use crate::error::ApiError;
use crate::filters::{cursor, eq, range_condition, Params};
use crate::sql::{Arg, Sql};

type Query = web::Query<HashMap<String, String>>;

impl Api {
    pub fn flow_name(&self, id: u32) -> String {
        self.registry
            .get(id)
            .map(|f| f.name.clone())
            .unwrap_or_default()
    }

    /// Checks a time zone with ClickHouse itself, so an unknown name is a 422.
    pub async fn check_timezone(&self, timezone: &str) -> Result<(), ApiError> {
        if timezone == "UTC" {
            return Ok(());
        }
        let mut sql = Sql::new("SELECT toString(toDateTime('2000-01-01 00:00:00', ");
        sql.str(timezone).push("))");
        sql.query(&self.clickhouse)
            .fetch_one::<String>()
            .await
            .map(|_| ())
            .map_err(|_| ApiError::invalid("timezone", format!("unknown time zone {timezone:?}")))
    }
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct HourCount {
    hour: String,
    clicks: i64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct HourConversions {
    hour: String,
    approved: i64,
    pending: i64,
    rejected: i64,
    revenue_micros: i64,
}

#[derive(Serialize, Default, Clone)]
struct HourPoint {
    hour: u8,
    clicks: i64,
    conversions: i64,
    revenue: String,
}

/// Today's four figures (UTC) and today against yesterday by hour, from the rollups.
pub async fn dashboard(api: web::Data<Api>) -> Result<HttpResponse, ApiError> {
    let clicks = api
        .clickhouse
        .query(
            "SELECT toString(hour) AS h, toInt64(sum(clicks) - sum(bots)) AS c \
             FROM clicks_hourly WHERE hour >= toDateTime(yesterday()) GROUP BY h",
        )
        .fetch_all::<HourCount>();
    let conversions = api
        .clickhouse
        .query(
            "SELECT toString(hour) AS h, toInt64(sumIf(conversions, status = 'approved')) AS a, \
                    toInt64(sumIf(conversions, status = 'pending')) AS p, \
                    toInt64(sumIf(conversions, status = 'rejected')) AS r, \
                    toInt64(sumIf(revenue_micros, status = 'approved')) AS rev \
             FROM conversions_hourly WHERE hour >= toDateTime(yesterday()) GROUP BY h",
        )
        .fetch_all::<HourConversions>();
    let date = api
        .clickhouse
        .query("SELECT toString(today())")
        .fetch_one::<String>();
    let (clicks, conversions, date) = tokio::try_join!(clicks, conversions, date)?;

    let mut today = vec![(0i64, 0i64, 0i64); 24];
    let mut yesterday = vec![(0i64, 0i64, 0i64); 24];
    let (mut approved, mut pending, mut rejected) = (0, 0, 0);
    let slot = |hour: &str| -> Option<(bool, usize)> {
        let is_today = hour.get(..10) == Some(date.as_str());
        let h: usize = hour.get(11..13)?.parse().ok()?;
        (h < 24).then_some((is_today, h))
    };
    for row in &clicks {
        if let Some((is_today, h)) = slot(&row.hour) {
            let series = if is_today { &mut today } else { &mut yesterday };
            series[h].0 += row.clicks;
        }
    }
    for row in &conversions {
        if let Some((is_today, h)) = slot(&row.hour) {
            let series = if is_today { &mut today } else { &mut yesterday };
            series[h].1 += row.approved + row.pending;
            series[h].2 += row.revenue_micros;
            if is_today {
                approved += row.approved;
                pending += row.pending;
                rejected += row.rejected;
            }
        }
    }
    let points = |series: &[(i64, i64, i64)]| -> Vec<HourPoint> {
        series
            .iter()
            .enumerate()
            .map(|(h, (c, v, r))| HourPoint {
                hour: h as u8,
                clicks: *c,
                conversions: *v,
                revenue: format_micros(*r),
            })
            .collect()
    };
    let active_flows = api
        .registry
        .all()
        .iter()
        .filter(|f| f.status() == FlowStatus::Active)
        .count();
    Ok(HttpResponse::Ok().json(json!({
        "date": date,
        "timezone": "UTC",
        "clicks_today": today.iter().map(|p| p.0).sum::<i64>(),
        "conversions_today": approved + pending,
        "conversions_by_status": {"approved": approved, "pending": pending, "rejected": rejected},
        "revenue_today": format_micros(today.iter().map(|p| p.2).sum::<i64>()),
        "active_flows": active_flows,
        "hourly": {"today": points(&today), "yesterday": points(&yesterday)},
    })))
}

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

/// Cuts the one row fetched beyond a page off `rows`; when it was there, returns the
/// cursor of the page's last row, from which the next page starts.
fn split_page<R>(rows: &mut Vec<R>, size: u64, cursor: impl Fn(&R) -> String) -> Option<String> {
    if rows.len() as u64 <= size {
        return None;
    }
    rows.truncate(size as usize);
    rows.last().map(cursor)
}

fn page_json<T: Serialize>(items: Vec<T>, size: u64, next: Option<String>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "items": items,
        "page_size": size,
        "next_cursor": next,
    }))
}

/// Clicks: filters flow, country, sub_id, source, from, to (in `timezone`), bots.
pub async fn clicks(api: web::Data<Api>, query: Query) -> Result<HttpResponse, ApiError> {
    let params = Params::new(
        query.into_inner(),
        &[
            "flow", "country", "sub_id", "source", "from", "to", "timezone", "bots", "cursor",
            "limit",
        ],
    )?;
    let flow = params.flow(&api.registry)?;
    let country = params.country()?;
    let sub_id = params.text("sub_id", 200)?;
    let source = params.text("source", 200)?;
    let timezone = params.timezone()?;
    let (from, to) = params.range()?;
    let bots = params.one_of("bots", &["include", "exclude", "only"])?;
    let cursor = cursor(&params)?;
    let size = params.page_size()?;
    api.check_timezone(&timezone).await?;

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
    let mut rows = sql.query(&api.clickhouse).fetch_all::<ClickRow>().await?;
    let next = split_page(&mut rows, size, |r| format!("{}_{}", r.ts_ms, r.click_hash));
    let items: Vec<_> = rows
        .into_iter()
        .map(|r| {
            json!({
                "click_hash": r.click_hash,
                "flow_id": r.flow_id,
                "flow_name": api.flow_name(r.flow_id),
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

#[derive(Debug, clickhouse::Row, Deserialize)]
struct ConversionRow {
    conversion_id: String,
    click_hash: String,
    flow_id: u32,
    goal: String,
    status: String,
    revenue_micros: i64,
    currency: String,
    uid: String,
    created: String,
    created_unix: i64,
    updated: String,
    version: u32,
}

/// Conversions in their current state: filters flow, goal, status, from, to.
pub async fn conversions(api: web::Data<Api>, query: Query) -> Result<HttpResponse, ApiError> {
    let params = Params::new(
        query.into_inner(),
        &[
            "flow", "goal", "status", "from", "to", "timezone", "cursor", "limit",
        ],
    )?;
    let flow = params.flow(&api.registry)?;
    let goal = params.text("goal", 100)?;
    let status = params.one_of("status", &["approved", "pending", "rejected"])?;
    let timezone = params.timezone()?;
    let (from, to) = params.range()?;
    let cursor = cursor(&params)?;
    let size = params.page_size()?;
    api.check_timezone(&timezone).await?;

    let mut sql = Sql::new(
        "SELECT conversion_id, argMax(click_hash, version) AS ch, any(flow_id) AS f, \
                argMax(goal, version) AS g, argMax(status, version) AS st, \
                argMax(revenue_micros, version) AS rev, argMax(currency, version) AS cur, \
                argMax(uid, version) AS u, toString(min(created_at)) AS created, \
                toInt64(min(toUInt32(created_at))) AS created_unix, toString(max(updated_at)) AS updated, \
                max(version) AS v \
         FROM conversions WHERE 1",
    );
    if let Some(flow) = flow {
        eq(&mut sql, "flow_id", Arg::U32(flow));
    }
    if let Some(goal) = goal {
        sql.push(" AND lower(goal) = lower(").str(goal).push(")");
    }
    range_condition(&mut sql, "created_at", &from, &to, &timezone);
    if let Some((secs, id)) = &cursor {
        sql.push(" AND (created_at < toDateTime(")
            .arg(Arg::I64(*secs));
        sql.push(") OR (created_at = toDateTime(")
            .arg(Arg::I64(*secs));
        sql.push(") AND conversion_id < ")
            .str(id.as_str())
            .push("))");
    }
    sql.push(" GROUP BY conversion_id");
    if let Some(status) = status {
        sql.push(" HAVING st = ").str(status);
    }
    sql.push(" ORDER BY created_unix DESC, conversion_id DESC LIMIT ")
        .arg(Arg::U64(size + 1));
    let mut rows = sql
        .query(&api.clickhouse)
        .fetch_all::<ConversionRow>()
        .await?;
    let next = split_page(&mut rows, size, |r| {
        format!("{}_{}", r.created_unix, r.conversion_id)
    });
    let items: Vec<_> = rows
        .into_iter()
        .map(|r| {
            json!({
                "conversion_id": r.conversion_id,
                "click_hash": r.click_hash,
                "flow_id": r.flow_id,
                "flow_name": api.flow_name(r.flow_id),
                "goal": r.goal,
                "status": r.status,
                "revenue": format_micros(r.revenue_micros),
                "currency": r.currency,
                "uid": r.uid,
                "time": r.created,
                "updated_at": r.updated,
                "version": r.version,
            })
        })
        .collect();
    Ok(page_json(items, size, next))
}

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

fn postback_json(api: &Api, r: PostbackRow, full: bool) -> serde_json::Value {
    let mut value = json!({
        "postback_id": r.postback_id,
        "flow_id": r.flow_id,
        "flow_name": api.flow_name(r.flow_id),
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

/// The postback log: filters flow, click (hash), status (HTTP code), from, to, and `q`,
/// a case-insensitive partial match over every postback parameter.
pub async fn postbacks(api: web::Data<Api>, query: Query) -> Result<HttpResponse, ApiError> {
    let params = Params::new(
        query.into_inner(),
        &[
            "flow", "click", "status", "q", "from", "to", "timezone", "cursor", "limit",
        ],
    )?;
    let flow = params.flow(&api.registry)?;
    let click = params.text("click", 100)?;
    let status = params.number::<u16>("status")?;
    if status.is_some_and(|s| !(100..=599).contains(&s)) {
        return Err(ApiError::invalid(
            "status",
            "status must be an HTTP status code",
        ));
    }
    let search = params.text("q", 200)?;
    let timezone = params.timezone()?;
    let (from, to) = params.range()?;
    let cursor = cursor(&params)?;
    let size = params.page_size()?;
    api.check_timezone(&timezone).await?;

    let mut sql = Sql::new(POSTBACK_COLUMNS);
    if let Some(flow) = flow {
        eq(&mut sql, "flow_id", Arg::U32(flow));
    }
    if let Some(click) = click {
        eq(&mut sql, "click_hash", Arg::Str(click));
    }
    if let Some(status) = status {
        eq(&mut sql, "response_status", Arg::U32(status.into()));
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
        .query(&api.clickhouse)
        .fetch_all::<PostbackRow>()
        .await?;
    let next = split_page(&mut rows, size, |r| {
        format!("{}_{}", r.received_at_ms, r.postback_id)
    });
    let items: Vec<_> = rows
        .into_iter()
        .map(|r| postback_json(&api, r, false))
        .collect();
    Ok(page_json(items, size, next))
}

/// One postback log entry with its full payload.
pub async fn postback(
    api: web::Data<Api>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mut sql = Sql::new(POSTBACK_COLUMNS);
    eq(&mut sql, "postback_id", Arg::Str(id.into_inner()));
    sql.push(" LIMIT 1");
    let row = sql
        .query(&api.clickhouse)
        .fetch_optional::<PostbackRow>()
        .await?
        .ok_or_else(|| ApiError::NotFound("no such postback log entry".into()))?;
    Ok(HttpResponse::Ok().json(postback_json(&api, row, true)))
}

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

/// Outbound postbacks, every attempt: filters flow, conversion, state, from, to.
pub async fn outbound(api: web::Data<Api>, query: Query) -> Result<HttpResponse, ApiError> {
    let params = Params::new(
        query.into_inner(),
        &[
            "flow",
            "conversion",
            "state",
            "from",
            "to",
            "timezone",
            "cursor",
            "limit",
        ],
    )?;
    let flow = params.flow(&api.registry)?;
    let conversion = params.text("conversion", 100)?;
    let state = params.text("state", 30)?;
    let timezone = params.timezone()?;
    let (from, to) = params.range()?;
    let cursor = cursor(&params)?;
    let size = params.page_size()?;
    api.check_timezone(&timezone).await?;

    let mut sql = Sql::new(
        "SELECT attempt_id, conversion_id, outbound_id, toUInt32(flow_id), click_hash, goal, \
                toString(status), toInt64(revenue_micros), currency, method, url, toUInt32(http_status), \
                error, toUInt32(latency_ms), toUInt32(attempt), toString(state), toInt64(attempted_at_ms), \
                toUInt8(manual) FROM outbound_log WHERE 1",
    );
    if let Some(flow) = flow {
        eq(&mut sql, "flow_id", Arg::U32(flow));
    }
    if let Some(conversion) = conversion {
        eq(&mut sql, "conversion_id", Arg::Str(conversion));
    }
    if let Some(state) = state {
        sql.push(" AND lower(toString(state)) = lower(")
            .str(state)
            .push(")");
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
        .query(&api.clickhouse)
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
                "flow_name": api.flow_name(r.flow_id),
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
    api: web::Data<Api>,
    body: web::Json<Replay>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.conversion_id.trim().is_empty() {
        return Err(ApiError::invalid(
            "conversion_id",
            "conversion_id is required",
        ));
    }
    let Some(base) = api.dispatcher_url.as_deref() else {
        return Err(ApiError::Unavailable(
            "the postback dispatcher is not configured (dispatcher_url)".into(),
        ));
    };
    let response = api
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

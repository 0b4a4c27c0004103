//! Outbound postbacks: every delivery attempt the dispatcher logged, newest first, a
//! page at a time, and manual replays, forwarded to the dispatcher's HTTP port.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use traffsure_core::postback_params::MAX_REASON_BYTES;
use traffsure_core::vocab::{self, Vocabulary};
use traffsure_core::{format_micros, parse_micros};
use traffsure_events::{ConversionStatus, OutboundState};

use super::page::{page_csv, page_json, split_page, Query};
use crate::audit::Entry;
use crate::error::ApiError;
use crate::filters::{cursor, eq, flow_condition, Params};
use crate::sql::{Arg, Sql};
use crate::state::AppState;
use crate::users::{FlowScope, Principal};

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
    date: String,
    manual: u8,
    traffic_source_id: u32,
    offer_id: u32,
    reason: String,
    integration: String,
    postback_type: String,
    scope: String,
    cap_action: String,
}

/// An attempt's fields, in JSON and CSV order: Affise's affiliate postback log (postback
/// URL, conversion, flow, traffic source, offer, goal, status, payout, revenue, currency,
/// notice as `reason`, HTTP code, error, date, integration type, postback type), then the
/// delivery's own.
const COLUMNS: &[&str] = &[
    "attempt_id",
    "url",
    "conversion_id",
    "flow_id",
    "flow_name",
    "traffic_source_id",
    "offer_id",
    "goal",
    "status",
    "payout",
    "revenue",
    "currency",
    "reason",
    "http_status",
    "error",
    "date",
    "time_ms",
    "integration",
    "postback_type",
    "scope",
    "outbound_id",
    "click_hash",
    "method",
    "latency_ms",
    "attempt",
    "state",
    "manual",
    "cap_action",
];

/// Outbound postbacks, every attempt, as JSON or CSV (`format`): filters flow,
/// conversion_id (`conversion` is its older name), outbound_id, traffic_source_id, offer_id,
/// goal, status, payout / revenue (exact amount), currency, reason, http_status, error and
/// url (parts of them), integration, postback_type, state, from, to.
#[utoipa::path(get, path = "/api/v1/outbound-postbacks", tag = "logs",
    summary = "Outbound postback attempts, newest first; JSON or CSV",
    params(crate::openapi::bodies::OutboundFilters, crate::openapi::bodies::PageParams),
    responses(
        (status = 200, description = "One page", headers(
            ("x-next-cursor" = String, description = "CSV only: the next page's cursor, absent on the last page"),
        ), content(
            (crate::openapi::bodies::OutboundPage = "application/json"),
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
            "conversion_id",
            "outbound_id",
            "traffic_source_id",
            "offer_id",
            "goal",
            "status",
            "revenue",
            "currency",
            "reason",
            "http_status",
            "error",
            "url",
            "integration",
            "postback_type",
            "scope",
            "state",
            "from",
            "to",
            "timezone",
            "cursor",
            "limit",
            "format",
        ],
        &[("conversion", "conversion_id"), ("payout", "revenue")],
    )?;
    let flow = params.flow(&state.registry)?;
    let conversion_id = params.text("conversion_id", 100)?;
    let outbound_id = params.text("outbound_id", 64)?;
    let traffic_source_id = params.number::<u32>("traffic_source_id")?;
    let offer_id = params.number::<u32>("offer_id")?;
    let goal = params.text("goal", 64)?;
    let status = params.word::<ConversionStatus>("status")?;
    let revenue = params
        .get("revenue")
        .map(|value| {
            parse_micros(value).map_err(|e| {
                let name = params.field("revenue");
                ApiError::invalid(name, format!("{name} {e}: {value:?}"))
            })
        })
        .transpose()?;
    let currency = params.text("currency", 3)?;
    let reason = params.text("reason", MAX_REASON_BYTES)?;
    let http_status = params.number::<u32>("http_status")?;
    let error = params.text("error", 200)?;
    let url = params.text("url", 200)?;
    let integration = params.one_of("integration", vocab::OUTBOUND_INTEGRATIONS)?;
    let postback_type = params.one_of("postback_type", vocab::OUTBOUND_POSTBACK_TYPES)?;
    let postback_scope = scope_filter(params.text("scope", 32)?)?;
    let delivery_state = params.word::<OutboundState>("state")?;
    let csv = params.one_of("format", &["json", "csv"])? == Some("csv");
    let timezone = params.timezone()?;
    let (from, to) = params.range()?;
    let cursor = cursor(&params)?;
    let size = params.page_size()?;
    state.check_timezone(&timezone).await?;

    let mut sql = Sql::new(
        "SELECT attempt_id, conversion_id, outbound_id, toUInt32(flow_id), click_hash, goal, \
                toString(status), toInt64(revenue_micros), currency, method, url, toUInt32(http_status), \
                error, toUInt32(latency_ms), toUInt32(attempt), toString(state), toInt64(attempted_at_ms), \
                toString(attempted_at, ",
    );
    sql.str(timezone.as_str());
    sql.push(
        "), toUInt8(manual), toUInt32(traffic_source_id), toUInt32(offer_id), reason, \
         integration, postback_type, scope, cap_action FROM outbound_log WHERE 1",
    );
    flow_condition(&mut sql, "flow_id", flow, &scope);
    for (column, value) in [
        ("conversion_id", conversion_id),
        ("outbound_id", outbound_id),
        ("goal", goal.map(|g| g.to_ascii_lowercase())),
        ("currency", currency.map(|c| c.to_ascii_uppercase())),
    ] {
        if let Some(value) = value {
            eq(&mut sql, column, Arg::Str(value));
        }
    }
    for (column, value) in [
        ("traffic_source_id", traffic_source_id),
        ("offer_id", offer_id),
        ("http_status", http_status),
    ] {
        if let Some(value) = value {
            eq(&mut sql, column, Arg::U32(value));
        }
    }
    if let Some(status) = status {
        sql.push(" AND toString(status) = ").str(status.word());
    }
    if let Some(revenue) = revenue {
        eq(&mut sql, "revenue_micros", Arg::I64(revenue));
    }
    if let Some(reason) = reason {
        sql.push(" AND lowerUTF8(reason) = lowerUTF8(")
            .str(reason.trim())
            .push(")");
    }
    for (column, part) in [("error", error), ("url", url)] {
        if let Some(part) = part {
            sql.push(" AND positionCaseInsensitiveUTF8(")
                .push(column)
                .push(", ")
                .str(part)
                .push(") > 0");
        }
    }
    // Attempts logged before these columns existed were conversion postbacks over S2S.
    for (column, value, default) in [
        ("integration", integration, vocab::OUTBOUND_INTEGRATIONS[0]),
        (
            "postback_type",
            postback_type,
            vocab::OUTBOUND_POSTBACK_TYPES[0],
        ),
    ] {
        match value {
            Some(value) if value == default => {
                sql.push(" AND ")
                    .push(column)
                    .push(" IN ('', ")
                    .str(value)
                    .push(")");
            }
            Some(value) => eq(&mut sql, column, Arg::Str(value.to_string())),
            None => {}
        }
    }
    match postback_scope {
        // Attempts logged before scopes were recorded read as the flow's.
        Some(ScopeFilter::Exact(value)) if value == "flow" => {
            sql.push(" AND scope IN ('', 'flow')");
        }
        Some(ScopeFilter::Exact(value)) => eq(&mut sql, "scope", Arg::Str(value)),
        Some(ScopeFilter::Kind(kind)) => {
            sql.push(" AND positionCaseInsensitiveUTF8(scope, ")
                .str(format!("{kind}:"))
                .push(") = 1");
        }
        None => {}
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
    let or_default = |value: String, default: &str| {
        if value.is_empty() {
            default.to_string()
        } else {
            value
        }
    };
    let items: Vec<_> = rows
        .into_iter()
        .map(|r| {
            let amount = format_micros(r.revenue_micros);
            json!({
                "attempt_id": r.attempt_id,
                "conversion_id": r.conversion_id,
                "outbound_id": r.outbound_id,
                "flow_id": r.flow_id,
                "flow_name": state.flow_name(r.flow_id),
                "traffic_source_id": r.traffic_source_id,
                "offer_id": r.offer_id,
                "click_hash": r.click_hash,
                "goal": r.goal,
                "status": r.status,
                // A conversion carries one amount, the {payout} and {revenue} macros both.
                "payout": amount,
                "revenue": amount,
                "currency": r.currency,
                "reason": r.reason,
                "method": r.method,
                "url": r.url,
                "http_status": r.http_status,
                "error": r.error,
                "latency_ms": r.latency_ms,
                "attempt": r.attempt,
                "state": r.state,
                "date": r.date,
                "time_ms": r.attempted_at_ms,
                "manual": r.manual == 1,
                "integration": or_default(r.integration, vocab::OUTBOUND_INTEGRATIONS[0]),
                "postback_type": or_default(r.postback_type, vocab::OUTBOUND_POSTBACK_TYPES[0]),
                // Attempts logged before scopes existed were all the flow's.
                "scope": or_default(r.scope, "flow"),
                // Why an over-cap conversion's postback was not sent: held or suppressed.
                "cap_action": r.cap_action,
            })
        })
        .collect();
    if csv {
        return Ok(page_csv("outbound-postbacks.csv", COLUMNS, &items, next));
    }
    Ok(page_json(items, size, next))
}

/// A replay: one conversion's outbound postbacks, or one of them.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    conversion_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outbound_id: Option<String>,
}

/// Forwards a manual replay to the postback dispatcher.
#[utoipa::path(post, path = "/api/v1/outbound-postbacks/replay", tag = "logs",
    summary = "Replay a conversion's outbound postbacks through the postback dispatcher",
    request_body = Replay,
    responses(
        (status = 200, description = "The dispatcher's answer", body = crate::openapi::bodies::Replayed),
        (status = 404, description = "No such conversion", body = traffsure_core::ErrorBody),
        (status = 422, description = "A field is not acceptable, named in field", body = traffsure_core::ErrorBody),
        (status = 503, description = "The dispatcher is not configured (dispatcher_url) or unreachable", body = traffsure_core::ErrorBody),
    ))]
pub async fn replay(
    state: web::Data<AppState>,
    body: web::Json<Replay>,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if body.conversion_id.trim().is_empty() {
        return Err(ApiError::invalid(
            "conversion_id",
            "conversion_id is required",
        ));
    }
    // The conversion's flow, from its attempts: a replay outside the user's flows is
    // not found, as the attempts are not in their lists.
    let mut sql = Sql::new("SELECT toUInt32(any(flow_id)), count() FROM outbound_log WHERE 1");
    eq(
        &mut sql,
        "conversion_id",
        Arg::Str(body.conversion_id.clone()),
    );
    let (flow_id, attempts) = sql
        .query(&state.clickhouse)
        .fetch_one::<(u32, u64)>()
        .await?;
    if who.scope.is_restricted() && (attempts == 0 || !who.scope.allows(flow_id)) {
        return Err(ApiError::NotFound(format!(
            "conversion {} not found",
            body.conversion_id
        )));
    }
    let answer = forward(&state, "/replay", &body).await?;
    if answer.status().is_success() {
        tracing::info!(conversion = %body.conversion_id, "outbound postbacks replayed");
        let entry = Entry::new("outbound_postback", &body.conversion_id, "replay");
        entry
            .flow(flow_id)
            .after(&body)
            .record(&state, &who)
            .await?;
    }
    Ok(answer)
}

/// Fires one outbound postback of a flow once (`POST
/// /api/v1/flows/{flow}/outbound-postbacks/{id}/test`) through the dispatcher, for a
/// made-up approved conversion, and answers what the receiver said.
#[utoipa::path(post, path = "/api/v1/flows/{flow}/outbound-postbacks/{id}/test", tag = "flows",
    summary = "Send one outbound postback of a flow once, for a made-up approved conversion, and answer the receiver's answer",
    params(
        ("flow" = String, Path, description = "Flow id or slug"),
        ("id" = String, Path, description = "Outbound postback id"),
    ),
    responses(
        (status = 200, description = "What was sent and answered", body = crate::openapi::bodies::TestSend),
        (status = 404, description = "No such flow or outbound postback", body = traffsure_core::ErrorBody),
        (status = 503, description = "The dispatcher is not configured (dispatcher_url) or unreachable", body = traffsure_core::ErrorBody),
    ))]
pub async fn send_test(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    let (flow, outbound_id) = path.into_inner();
    let flow_id = state
        .registry
        .resolve(&flow)
        .map(|f| f.id)
        .filter(|id| who.scope.allows(*id))
        .ok_or_else(|| ApiError::NotFound(format!("flow {flow:?} not found")))?;
    let request = json!({"flow_id": flow_id, "outbound_id": outbound_id});
    let answer = forward(&state, "/test", &request).await?;
    // Only a test the dispatcher sent is audited: a refusal (no such outbound postback,
    // 404) sent nothing.
    if answer.status().is_success() {
        let entry = Entry::new(
            "outbound_postback",
            format!("{flow_id}/{outbound_id}"),
            "test",
        );
        entry
            .flow(flow_id)
            .after(&request)
            .record(&state, &who)
            .await?;
    }
    Ok(answer)
}

/// Ready outbound postbacks to start from: `crm`, a JSON push of every macro to a CRM's
/// API with a secret `Authorization` header.
#[utoipa::path(get, path = "/api/v1/outbound-postbacks/presets", tag = "flows",
    summary = "Ready outbound postbacks to start from",
    responses((status = 200, description = "Presets by name", body = crate::openapi::bodies::Presets)))]
pub async fn presets() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "crm": traffsure_core::flow::crm_push_preset() }))
}

/// Sends `body` to the dispatcher's `path` and answers with its answer.
async fn forward(
    state: &AppState,
    path: &'static str,
    body: &impl Serialize,
) -> Result<HttpResponse, ApiError> {
    let Some(base) = state.dispatcher_url.as_deref() else {
        return Err(ApiError::Unavailable(
            "the postback dispatcher is not configured (dispatcher_url)".into(),
        ));
    };
    let response = state
        .http
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .map_err(|e| {
            ApiError::Unavailable(format!("the postback dispatcher is unreachable: {e}"))
        })?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.map_err(|e| {
        ApiError::Unavailable(format!("the postback dispatcher answered badly: {e}"))
    })?;
    let code = actix_web::http::StatusCode::from_u16(status.as_u16())
        .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
    Ok(HttpResponse::build(code).json(answer))
}

/// The `scope` filter: one scope (`flow`, `global`, `offer:3`, `source:2`) or every scope
/// of a kind (`offer`, `source`).
#[derive(Debug, PartialEq, Eq)]
enum ScopeFilter {
    Exact(String),
    Kind(&'static str),
}

fn scope_filter(value: Option<String>) -> Result<Option<ScopeFilter>, ApiError> {
    let Some(value) = value.map(|v| v.trim().to_ascii_lowercase()) else {
        return Ok(None);
    };
    let filter = match value.split_once(':') {
        None if value == "flow" || value == "global" => ScopeFilter::Exact(value),
        None if value == "offer" => ScopeFilter::Kind("offer"),
        None if value == "source" => ScopeFilter::Kind("source"),
        Some(("offer" | "source", id)) if id.parse::<u32>().is_ok_and(|id| id != 0) => {
            ScopeFilter::Exact(value)
        }
        _ => {
            return Err(ApiError::invalid(
                "scope",
                "must be flow, global, offer, source, offer:<id> or source:<id>",
            ))
        }
    };
    Ok(Some(filter))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_filter_takes_a_scope_or_a_kind() {
        let filter = |v: &str| scope_filter(Some(v.into()));
        assert_eq!(
            filter("Global").unwrap(),
            Some(ScopeFilter::Exact("global".into()))
        );
        assert_eq!(
            filter("offer:3").unwrap(),
            Some(ScopeFilter::Exact("offer:3".into()))
        );
        assert_eq!(filter("source").unwrap(), Some(ScopeFilter::Kind("source")));
        assert_eq!(scope_filter(None).unwrap(), None);
        for bad in ["offer:0", "offer:x", "lander:2", "everything"] {
            assert!(filter(bad).is_err(), "{bad}");
        }
    }

    /// A stand-in for both the dispatcher (its `/test` answers `status`) and ClickHouse
    /// (every other request, such as an audit entry's insert, is counted and answers 200);
    /// its base URL and the count.
    fn backends(
        status: u16,
    ) -> (
        String,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
        actix_web::dev::ServerHandle,
    ) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let inserts = Arc::new(AtomicUsize::new(0));
        let counted = inserts.clone();
        let server = actix_web::HttpServer::new(move || {
            let counted = counted.clone();
            actix_web::App::new()
                .route(
                    "/test",
                    web::post().to(move || async move {
                        let code = actix_web::http::StatusCode::from_u16(status).unwrap();
                        HttpResponse::build(code).json(json!({"message": "from the dispatcher"}))
                    }),
                )
                .default_service(web::to(move || {
                    counted.fetch_add(1, Ordering::SeqCst);
                    async { HttpResponse::Ok().finish() }
                }))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
        let base = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        (base, inserts, handle)
    }

    /// reporting-api's state with one flow (id 5, slug `tested`) whose outbound postback
    /// is `crm`, the dispatcher and ClickHouse at `base`.
    fn state(base: &str) -> web::Data<AppState> {
        let registry = traffsure_kafka::FlowRegistry::new();
        registry.upsert(traffsure_events::Flow {
            id: 5,
            slug: "tested".into(),
            revision: 1,
            outbound_postbacks: vec![traffsure_events::OutboundPostback {
                id: "crm".into(),
                url: "https://crm.test/?c={click}".into(),
                enabled: true,
                ..Default::default()
            }],
            ..Default::default()
        });
        web::Data::new(AppState::for_tests(registry, base, Some(base)))
    }

    async fn test_send(state: &web::Data<AppState>, outbound: &str) -> u16 {
        let path = web::Path::from(("tested".to_string(), outbound.to_string()));
        send_test(state.clone(), path, Principal::system("test"))
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    #[actix_web::test]
    async fn only_a_test_that_was_sent_is_audited() {
        use std::sync::atomic::Ordering;
        // The dispatcher knows no such outbound postback: nothing was sent, nothing is
        // audited.
        let (base, inserts, server) = backends(404);
        assert_eq!(test_send(&state(&base), "nosuch").await, 404);
        assert_eq!(
            inserts.load(Ordering::SeqCst),
            0,
            "a refused test was audited"
        );
        server.stop(false).await;
        // Sent (whatever the receiver answered): one audit entry.
        let (base, inserts, server) = backends(200);
        assert_eq!(test_send(&state(&base), "crm").await, 200);
        assert_eq!(inserts.load(Ordering::SeqCst), 1);
        server.stop(false).await;
    }
}

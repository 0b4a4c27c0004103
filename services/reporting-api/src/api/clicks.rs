//! The click list: raw clicks, newest first, a page at a time, filtered by flow,
//! country, sub_id, source, time range (in a time zone), bots, bot reason, the
//! visitor's browser, OS and device, the click's kind and the objects it went through
//! (traffic source, offer, lander, affiliate network, by id; shown with their names).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use traffsure_core::format_micros;

use super::page::{page_csv, page_json, split_page, Query};
use crate::error::ApiError;
use crate::filters::{
    cursor, eq, flow_condition, range_condition, Params, AGENT_FILTERS, CLICK_FILTERS,
    OBJECT_FILTERS,
};
use crate::object_names::{push_id_array, set_ids_and_names, ObjectNames};
use crate::sql::{Arg, Sql};
use crate::state::AppState;
use crate::users::FlowScope;

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
    browser_family: String,
    browser_major: String,
    browser_minor: String,
    os_family: String,
    os_major: String,
    os_minor: String,
    device_family: String,
    device_brand: String,
    device_model: String,
    destination_url: String,
    cost_micros: i64,
    is_bot: u8,
    bot_reason: String,
    kind: u8,
    parent_click_hash: String,
    external_id: String,
    subs: Vec<String>,
    asn: u32,
    as_org: String,
    datacenter: u8,
    rate_exceeded: u8,
    /// The objects' ids, in the order of `OBJECT_DIMENSIONS`.
    objects: Vec<u32>,
}

/// A click's kind by ClickKind's number: a visit through the tracking link, a lander
/// click-through to an offer, a visit the direct-tracking script recorded.
const KINDS: [&str; 3] = ["visit", "lander_click", "direct_visit"];

/// The columns of the CSV form, in order: every field of a click's JSON.
const COLUMNS: &[&str] = &[
    "click_hash",
    "time",
    "flow_id",
    "flow_name",
    "kind",
    "ip",
    "country",
    "sub_id",
    "source",
    "traffic_source_id",
    "traffic_source_name",
    "offer_id",
    "offer_name",
    "lander_id",
    "lander_name",
    "network_id",
    "network_name",
    "device",
    "os",
    "browser",
    "browser_family",
    "browser_major",
    "browser_minor",
    "os_family",
    "os_major",
    "os_minor",
    "device_family",
    "device_brand",
    "device_model",
    "destination_url",
    "cost",
    "is_bot",
    "bot_reason",
    "parent_click_hash",
    "external_id",
    "sub1",
    "sub2",
    "sub3",
    "sub4",
    "sub5",
    "sub6",
    "sub7",
    "sub8",
    "sub9",
    "sub10",
    "asn",
    "as_org",
    "datacenter",
    "rate_exceeded",
];

/// Clicks, as JSON or CSV (`format`): filters flow, country, sub_id, source, from, to (in
/// `timezone`), bots, kind (one or more, comma-separated), the visitor columns
/// (`AGENT_FILTERS`), subs, device, OS and browser (`CLICK_FILTERS`) and the objects
/// (`OBJECT_FILTERS`).
#[utoipa::path(get, path = "/api/v1/clicks", tag = "logs",
    summary = "Clicks, newest first; JSON or CSV",
    params(crate::openapi::bodies::ClickFilters, crate::openapi::bodies::SubFilters, crate::openapi::bodies::AgentFilters, crate::openapi::bodies::ObjectFilters, crate::openapi::bodies::PageParams, crate::openapi::bodies::FormatParam),
    responses(
        (status = 200, description = "One page", headers(
            ("x-next-cursor" = String, description = "CSV only: the next page's cursor, absent on the last page"),
        ), content(
            (crate::openapi::bodies::ClickPage = "application/json"),
            (String = "text/csv"),
        )),
        (status = 422, description = "Invalid filter, named in field", body = traffsure_core::ErrorBody),
    ))]
pub async fn list(
    state: web::Data<AppState>,
    query: Query,
    scope: FlowScope,
) -> Result<HttpResponse, ApiError> {
    let names: Vec<&str> = [
        "flow", "country", "sub_id", "source", "from", "to", "timezone", "bots", "kind", "cursor",
        "limit", "format",
    ]
    .into_iter()
    .chain(AGENT_FILTERS.iter().copied())
    .chain(CLICK_FILTERS.iter().copied())
    .chain(OBJECT_FILTERS.iter().copied())
    .collect();
    let params = Params::new(query.into_inner(), &names)?;
    let agent = params.agent_filters()?;
    let objects = params.object_filters()?;
    let kinds = params.list_of("kind", &KINDS)?;
    let columns = params.text_filters(CLICK_FILTERS)?;
    let csv = params.one_of("format", &["json", "csv"])? == Some("csv");
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
                browser, browser_family, browser_major, browser_minor, os_family, os_major, \
                os_minor, device_family, device_brand, device_model, destination_url, \
                cost_micros, is_bot, bot_reason, kind, parent_click_hash, external_id, \
                [sub1, sub2, sub3, sub4, sub5, sub6, sub7, sub8, sub9, sub10], asn, as_org, \
                datacenter, rate_exceeded, ",
    );
    push_id_array(&mut sql, "", "");
    sql.push(" FROM clicks WHERE 1");
    flow_condition(&mut sql, "flow_id", flow, &scope);
    if let Some(country) = country {
        eq(&mut sql, "country", Arg::Str(country));
    }
    if let Some(sub_id) = sub_id {
        eq(&mut sql, "sub_id", Arg::Str(sub_id));
    }
    if let Some(source) = source {
        eq(&mut sql, "source", Arg::Str(source));
    }
    for (column, value) in agent {
        eq(&mut sql, column, Arg::Str(value));
    }
    for (column, id) in objects {
        eq(&mut sql, column, Arg::U32(id));
    }
    for (column, value) in columns {
        eq(&mut sql, column, Arg::Str(value));
    }
    if !kinds.is_empty() {
        sql.push(" AND kind IN (");
        for (i, kind) in kinds.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            let number = KINDS.iter().position(|k| k == kind).unwrap_or_default();
            sql.arg(Arg::U32(number as u32));
        }
        sql.push(")");
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
    let object_names = ObjectNames::load(&state.clickhouse).await?;
    let items: Vec<_> = rows
        .into_iter()
        .map(|r| {
            let mut item = json!({
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
                "browser_family": r.browser_family,
                "browser_major": r.browser_major,
                "browser_minor": r.browser_minor,
                "os_family": r.os_family,
                "os_major": r.os_major,
                "os_minor": r.os_minor,
                "device_family": r.device_family,
                "device_brand": r.device_brand,
                "device_model": r.device_model,
                "destination_url": r.destination_url,
                "cost": format_micros(r.cost_micros),
                "is_bot": r.is_bot == 1,
                "bot_reason": r.bot_reason,
                "kind": KINDS.get(usize::from(r.kind)).copied().unwrap_or_default(),
                "parent_click_hash": r.parent_click_hash,
                "external_id": r.external_id,
                "asn": r.asn,
                "as_org": r.as_org,
                "datacenter": r.datacenter == 1,
                "rate_exceeded": r.rate_exceeded == 1,
            });
            for (n, sub) in r.subs.into_iter().enumerate() {
                item[format!("sub{}", n + 1)] = json!(sub);
            }
            set_ids_and_names(&mut item, &r.objects, &object_names);
            item
        })
        .collect();
    if csv {
        return Ok(page_csv("clicks.csv", COLUMNS, &items, next));
    }
    Ok(page_json(items, size, next))
}

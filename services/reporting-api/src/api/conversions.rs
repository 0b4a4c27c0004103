//! The conversion list: each conversion in its current state (its latest version),
//! newest first, a page at a time, filtered by flow, goal, status, time range, the
//! objects its click went through (traffic source, offer, lander, affiliate network, by
//! id; shown with their names) and whether it was made without its click
//! (`click_missing`, from its click hash alone), and its click's visitor details and
//! fraud signals (`AGENT_FILTERS`; read from the click for a conversion stored without
//! them, `reports::visitor`). Each shows
//! its revenue as the advertiser sent it and in the reporting currency (`null` while no
//! rate converts it).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use traffsure_core::format_micros;
use traffsure_core::vocab::Vocabulary;
use traffsure_events::ConversionStatus;

use super::page::{page_csv, page_json, split_page, Query};
use super::reports::visitor;
use crate::currency::Rates;
use crate::error::ApiError;
use crate::filters::{
    cursor, eq, flow_condition, in_list, range_condition, Params, AGENT_FILTERS, CLICK_FILTERS,
    OBJECT_FILTERS,
};
use crate::object_names::{push_id_array, set_ids_and_names, ObjectNames};
use crate::sql::{Arg, Sql};
use crate::state::AppState;
use crate::users::FlowScope;

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
    created_day: String,
    created_unix: i64,
    updated: String,
    version: u32,
    click_missing: u8,
    reason: String,
    external_id: String,
    over_cap: u8,
    payout_micros: i64,
    payout_currency: String,
    /// Copied from the click when the conversion was made.
    country: String,
    source: String,
    sub_id: String,
    device: String,
    os: String,
    browser: String,
    subs: Vec<String>,
    /// The click's visitor details and fraud signals (`reports::visitor`).
    browser_family: String,
    browser_major: String,
    browser_minor: String,
    os_family: String,
    os_major: String,
    os_minor: String,
    device_family: String,
    device_brand: String,
    device_model: String,
    bot_reason: String,
    asn: u32,
    as_org: String,
    datacenter: u8,
    rate_exceeded: u8,
    /// The objects' ids, in the order of `OBJECT_DIMENSIONS`.
    objects: Vec<u32>,
}

/// The columns of the CSV form, in order: every field of a conversion's JSON.
const COLUMNS: &[&str] = &[
    "conversion_id",
    "time",
    "updated_at",
    "version",
    "click_hash",
    "flow_id",
    "flow_name",
    "traffic_source_id",
    "traffic_source_name",
    "offer_id",
    "offer_name",
    "lander_id",
    "lander_name",
    "network_id",
    "network_name",
    "goal",
    "status",
    "revenue",
    "currency",
    "revenue_converted",
    "currency_converted",
    "uid",
    "click_missing",
    "reason",
    "external_id",
    "over_cap",
    "payout",
    "payout_currency",
    "country",
    "source",
    "sub_id",
    "device",
    "os",
    "browser",
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
    "browser_family",
    "browser_major",
    "browser_minor",
    "os_family",
    "os_major",
    "os_minor",
    "device_family",
    "device_brand",
    "device_model",
    "bot_reason",
    "asn",
    "as_org",
    "datacenter",
    "rate_exceeded",
];

/// Conversions in their current state, as JSON or CSV (`format`): filters flow, goal,
/// status (one or more, comma-separated), click_missing, over_cap, from, to, the click's country,
/// source, sub_id, subs, device, OS and browser (`CLICK_FILTERS`) and the objects
/// (`OBJECT_FILTERS`).
#[utoipa::path(get, path = "/api/v1/conversions", tag = "logs",
    summary = "Conversions in their current state, newest first; JSON or CSV",
    params(crate::openapi::bodies::ConversionFilters, crate::openapi::bodies::SubFilters, crate::openapi::bodies::AgentFilters, crate::openapi::bodies::ObjectFilters, crate::openapi::bodies::PageParams, crate::openapi::bodies::FormatParam),
    responses(
        (status = 200, description = "One page", headers(
            ("x-next-cursor" = String, description = "CSV only: the next page's cursor, absent on the last page"),
        ), content(
            (crate::openapi::bodies::ConversionPage = "application/json"),
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
        "flow",
        "goal",
        "status",
        "click_missing",
        "over_cap",
        "from",
        "to",
        "timezone",
        "cursor",
        "limit",
        "format",
        "country",
        "source",
        "sub_id",
    ]
    .into_iter()
    .chain(OBJECT_FILTERS.iter().copied())
    .chain(CLICK_FILTERS.iter().copied())
    .chain(AGENT_FILTERS.iter().copied())
    .collect();
    let params = Params::new(query.into_inner(), &names)?;
    let agent = params.agent_filters()?;
    let objects = params.object_filters()?;
    let flow = params.flow(&state.registry)?;
    let goal = params.text("goal", 100)?;
    let statuses = params.list_of("status", &ConversionStatus::words())?;
    let country = params.country()?;
    let columns = params.text_filters(&["source", "sub_id"])?;
    let click_columns = params.text_filters(CLICK_FILTERS)?;
    let csv = params.one_of("format", &["json", "csv"])? == Some("csv");
    let click_missing = params.flag("click_missing")?;
    let over_cap = params.flag("over_cap")?;
    let timezone = params.timezone()?;
    let (from, to) = params.range()?;
    let cursor = cursor(&params)?;
    let size = params.page_size()?;
    state.check_timezone(&timezone).await?;
    let joined =
        visitor::stored_without_visitor_in(&state.clickhouse, flow, &from, &to, &timezone).await?;

    let mut sql = Sql::new(
        "SELECT conversion_id, argMax(click_hash, version) AS ch, any(flow_id) AS f, \
                argMax(goal, version) AS g, argMax(status, version) AS st, \
                argMax(revenue_micros, version) AS rev, argMax(currency, version) AS cur, \
                argMax(uid, version) AS u, toString(min(created_at)) AS created, \
                toString(toDate(min(created_at), 'UTC')) AS created_day, \
                toInt64(min(toUInt32(created_at))) AS created_unix, toString(max(updated_at)) AS updated, \
                max(version) AS v, max(click_missing) AS cm, argMax(reason, version) AS rsn, \
                argMax(external_id, version) AS ext, max(over_cap) AS oc, \
                argMax(if(payout_currency = '', revenue_micros, payout_micros), version) AS pay, \
                argMax(if(payout_currency = '', currency, payout_currency), version) AS pcur, \
                argMax(country, version) AS ctry, argMax(source, version) AS src, \
                argMax(sub_id, version) AS sid, argMax(device, version) AS dev, \
                argMax(os, version) AS o, argMax(browser, version) AS br, \
                [argMax(sub1, version), argMax(sub2, version), argMax(sub3, version), \
                 argMax(sub4, version), argMax(sub5, version), argMax(sub6, version), \
                 argMax(sub7, version), argMax(sub8, version), argMax(sub9, version), \
                 argMax(sub10, version)] AS subs, ",
    );
    sql.push(visitor::list_select(joined));
    push_id_array(&mut sql, "argMax(", ", version)");
    sql.push(" AS objects FROM ")
        .push(visitor::list_source(joined))
        .push(" WHERE 1");
    visitor::list_filters(&mut sql, agent, joined);
    flow_condition(&mut sql, "flow_id", flow, &scope);
    if let Some(goal) = goal {
        sql.push(" AND lower(goal) = lower(").str(goal).push(")");
    }
    // Copied from the click when a conversion is made: every version carries the same ids.
    for (column, id) in objects {
        eq(&mut sql, column, Arg::U32(id));
    }
    // Copied from the click when a conversion is made, like the objects.
    if let Some(country) = country {
        eq(&mut sql, "country", Arg::Str(country));
    }
    for (column, value) in columns.into_iter().chain(click_columns) {
        eq(&mut sql, column, Arg::Str(value));
    }
    // Decided when a conversion is made: every version of it carries the same value.
    if let Some(missing) = click_missing {
        eq(&mut sql, "click_missing", Arg::U32(u32::from(missing)));
    }
    if let Some(over_cap) = over_cap {
        eq(&mut sql, "over_cap", Arg::U32(u32::from(over_cap)));
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
    if !statuses.is_empty() {
        sql.push(" HAVING 1");
        in_list(&mut sql, "st", &statuses);
    }
    sql.push(" ORDER BY created_unix DESC, conversion_id DESC LIMIT ")
        .arg(Arg::U64(size + 1));
    let mut rows = sql
        .query(&state.clickhouse)
        .fetch_all::<ConversionRow>()
        .await?;
    let next = split_page(&mut rows, size, |r| {
        format!("{}_{}", r.created_unix, r.conversion_id)
    });
    let days = rows.iter().map(|r| r.created_day.as_str());
    let rates = match (days.clone().min(), days.max()) {
        (Some(first), Some(last)) => {
            Rates::load(&state.clickhouse, &state.reporting_currency, first, last).await?
        }
        _ => Rates::new(&state.reporting_currency),
    };
    let object_names = ObjectNames::load(&state.clickhouse).await?;
    let items: Vec<_> = rows
        .into_iter()
        .map(|r| {
            let mut item = json!({
                "conversion_id": r.conversion_id,
                "click_hash": r.click_hash,
                "flow_id": r.flow_id,
                "flow_name": state.flow_name(r.flow_id),
                "goal": r.goal,
                "status": r.status,
                "revenue": format_micros(r.revenue_micros),
                "currency": r.currency,
                "revenue_converted": rates
                    .convert(r.revenue_micros, &r.created_day, &r.currency)
                    .map(format_micros),
                "currency_converted": rates.reporting(),
                "uid": r.uid,
                "time": r.created,
                "updated_at": r.updated,
                "version": r.version,
                "click_missing": r.click_missing != 0,
                "reason": r.reason,
                "external_id": r.external_id,
                // Caps and payout (docs/caps.md).
                "over_cap": r.over_cap != 0,
                "payout": format_micros(r.payout_micros),
                "payout_currency": r.payout_currency,
                "country": r.country,
                "source": r.source,
                "sub_id": r.sub_id,
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
                "bot_reason": r.bot_reason,
                "asn": r.asn,
                "as_org": r.as_org,
                "datacenter": r.datacenter != 0,
                "rate_exceeded": r.rate_exceeded != 0,
            });
            for (n, sub) in r.subs.into_iter().enumerate() {
                item[format!("sub{}", n + 1)] = json!(sub);
            }
            set_ids_and_names(&mut item, &r.objects, &object_names);
            item
        })
        .collect();
    if csv {
        return Ok(page_csv("conversions.csv", COLUMNS, &items, next));
    }
    Ok(page_json(items, size, next))
}

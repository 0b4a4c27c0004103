//! The conversion list: each conversion in its current state (its latest version),
//! newest first, a page at a time, filtered by flow, goal, status, time range, the
//! objects its click went through (traffic source, offer, lander, affiliate network, by
//! id; shown with their names) and whether it was made without its click
//! (`click_missing`, from its click hash alone). Each shows
//! its revenue as the advertiser sent it and in the reporting currency (`null` while no
//! rate converts it).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use traffsure_core::format_micros;
use traffsure_core::vocab::Vocabulary;
use traffsure_events::ConversionStatus;

use super::page::{page_json, split_page, Query};
use crate::currency::Rates;
use crate::error::ApiError;
use crate::filters::{cursor, eq, range_condition, Params, OBJECT_FILTERS};
use crate::object_names::{push_id_array, set_ids_and_names, ObjectNames};
use crate::sql::{Arg, Sql};
use crate::state::AppState;

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
    /// The objects' ids, in the order of `OBJECT_DIMENSIONS`.
    objects: Vec<u32>,
}

/// Conversions in their current state: filters flow, goal, status, click_missing, from,
/// to and the objects (`OBJECT_FILTERS`).
#[utoipa::path(get, path = "/api/v1/conversions", tag = "logs",
    summary = "Conversions in their current state, newest first",
    params(crate::openapi::bodies::ConversionFilters, crate::openapi::bodies::ObjectFilters, crate::openapi::bodies::PageParams),
    responses(
        (status = 200, description = "One page", body = crate::openapi::bodies::ConversionPage),
        (status = 422, description = "Invalid filter, named in field", body = traffsure_core::ErrorBody),
    ))]
pub async fn list(state: web::Data<AppState>, query: Query) -> Result<HttpResponse, ApiError> {
    let names: Vec<&str> = [
        "flow",
        "goal",
        "status",
        "click_missing",
        "from",
        "to",
        "timezone",
        "cursor",
        "limit",
    ]
    .into_iter()
    .chain(OBJECT_FILTERS.iter().copied())
    .collect();
    let params = Params::new(query.into_inner(), &names)?;
    let objects = params.object_filters()?;
    let flow = params.flow(&state.registry)?;
    let goal = params.text("goal", 100)?;
    let status = params.word::<ConversionStatus>("status")?;
    let click_missing = params.flag("click_missing")?;
    let timezone = params.timezone()?;
    let (from, to) = params.range()?;
    let cursor = cursor(&params)?;
    let size = params.page_size()?;
    state.check_timezone(&timezone).await?;

    let mut sql = Sql::new(
        "SELECT conversion_id, argMax(click_hash, version) AS ch, any(flow_id) AS f, \
                argMax(goal, version) AS g, argMax(status, version) AS st, \
                argMax(revenue_micros, version) AS rev, argMax(currency, version) AS cur, \
                argMax(uid, version) AS u, toString(min(created_at)) AS created, \
                toString(toDate(min(created_at), 'UTC')) AS created_day, \
                toInt64(min(toUInt32(created_at))) AS created_unix, toString(max(updated_at)) AS updated, \
                max(version) AS v, max(click_missing) AS cm, argMax(reason, version) AS rsn, \
                argMax(external_id, version) AS ext, ",
    );
    push_id_array(&mut sql, "argMax(", ", version)");
    sql.push(" AS objects FROM conversions WHERE 1");
    if let Some(flow) = flow {
        eq(&mut sql, "flow_id", Arg::U32(flow));
    }
    if let Some(goal) = goal {
        sql.push(" AND lower(goal) = lower(").str(goal).push(")");
    }
    // Copied from the click when a conversion is made: every version carries the same ids.
    for (column, id) in objects {
        eq(&mut sql, column, Arg::U32(id));
    }
    // Decided when a conversion is made: every version of it carries the same value.
    if let Some(missing) = click_missing {
        eq(&mut sql, "click_missing", Arg::U32(u32::from(missing)));
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
        sql.push(" HAVING st = ").str(status.word());
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
            });
            set_ids_and_names(&mut item, &r.objects, &object_names);
            item
        })
        .collect();
    Ok(page_json(items, size, next))
}

//! `GET /api/v1/reports`: clicks and conversions grouped by up to four dimensions from an
//! allow-list (objects among them, named from `tracker_objects`), with derived metrics
//! (CR, profit, ROI, EPC, the lander and offer funnel), money in the reporting
//! currency, a time zone, a sort key and CSV export. A report goes through five steps, one module each: `parse` (query string
//! → typed request), `query` (SQL built and run), `merge` (both sides joined by group
//! key), `sort` and `render` (JSON or CSV).

use actix_web::HttpResponse;

use super::page::Query;
use crate::error::ApiError;
use crate::filters::Params;
use crate::object_names::{object_dimension, ObjectNames};
use crate::state::AppState;
use crate::users::FlowScope;

mod merge;
mod parse;
mod query;
pub(crate) mod render;
mod sort;
mod updates;

/// Today's report totals (the day `date` in `timezone`, of the user's flows), for the
/// dashboard's cost figures: cost with cost updates and conversion models as reports
/// count it, profit, ROI, CPC, CPA, EPC, cost source.
pub async fn today_totals(
    state: &AppState,
    date: &str,
    timezone: &str,
    scope: FlowScope,
) -> Result<Vec<merge::Metric>, ApiError> {
    let raw: std::collections::HashMap<String, String> = [
        ("group_by", "flow".to_string()),
        ("from", format!("{date} 00:00:00")),
        ("to", format!("{date} 23:59:59")),
        ("timezone", timezone.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let params = Params::new(raw, &parse::parameters())?;
    let mut request = parse::request(&params, &state.registry)?;
    // The user's flows only, as every other figure of theirs.
    request.filters.scope = scope;
    let range = query::range(&state.clickhouse, &request.filters).await?;
    let sides = query::run(&state.clickhouse, &request, &range).await?;
    let adjustments = updates::run(&state.clickhouse, &request, &range).await?;
    let rates = query::rates(&state.clickhouse, &state.reporting_currency, &range).await?;
    let mut groups = merge::groups(sides, false, &rates);
    updates::apply(&mut groups, adjustments, &rates);
    let (_, total) = merge::rows(
        &groups,
        &request.dims,
        false,
        |_| String::new(),
        &ObjectNames::default(),
    );
    Ok(total.metrics())
}
pub(crate) mod visitor;

/// Unique clicks are merged from their `uniq` states only with `unique_clicks=true`
/// (they are `null` otherwise): over a month of rollups that merge costs more than
/// everything else in the report together.
#[utoipa::path(get, path = "/api/v1/reports", tag = "reports",
    summary = "A report grouped by up to four dimensions",
    params(crate::openapi::bodies::ReportParams, crate::openapi::bodies::AgentFilters, crate::openapi::bodies::ObjectFilters),
    responses(
        (status = 200, description = "Rows and totals", content(
            (crate::openapi::bodies::Report = "application/json"),
            (String = "text/csv"),
        )),
        (status = 422, description = "Invalid parameter, named in field", body = traffsure_core::ErrorBody),
    ))]
pub async fn report(
    state: actix_web::web::Data<AppState>,
    query: Query,
    scope: FlowScope,
) -> Result<HttpResponse, ApiError> {
    let params = Params::new(query.into_inner(), &parse::parameters())?;
    let mut request = parse::request(&params, &state.registry)?;
    request.filters.scope = scope;
    state.check_timezone(&request.filters.timezone).await?;
    let range = query::range(&state.clickhouse, &request.filters).await?;
    let sides = query::run(&state.clickhouse, &request, &range).await?;
    let adjustments = updates::run(&state.clickhouse, &request, &range).await?;
    let rates = query::rates(&state.clickhouse, &state.reporting_currency, &range).await?;
    let names = if request.dims.iter().any(|d| object_dimension(d).is_some()) {
        ObjectNames::load(&state.clickhouse).await?
    } else {
        ObjectNames::default()
    };

    let unique_clicks = request.filters.unique_clicks;
    let mut groups = merge::groups(sides, unique_clicks, &rates);
    updates::apply(&mut groups, adjustments, &rates);
    let (mut rows, total) = merge::rows(
        &groups,
        &request.dims,
        unique_clicks,
        |id| state.flow_name(id),
        &names,
    );
    sort::sort(&mut rows, &request.sort);

    Ok(match request.format {
        parse::Format::Csv => HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header(("content-disposition", "attachment; filename=\"report.csv\""))
            .body(render::csv(&request.dims, &rows)),
        parse::Format::Json => {
            HttpResponse::Ok().json(render::json(&request, &range, rows, &total, &rates))
        }
    })
}

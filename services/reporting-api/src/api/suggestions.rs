//! Values seen in recent clicks, for the flow editor's rule conditions: the countries,
//! devices, operating systems, browsers, sources, sub values and networks of the last
//! days, most clicked first, for one flow or all of them. It only reads the raw `clicks`
//! table; what a condition accepts is still decided when the flow is saved.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::page::Query;
use crate::error::ApiError;
use crate::filters::{flow_condition, Params};
use crate::sql::{Arg, Sql};
use crate::state::AppState;
use crate::users::FlowScope;

/// Rule condition fields with a click column behind them, and the expression that reads
/// it as a condition's value (empty = not known for that click).
#[rustfmt::skip]
pub const FIELDS: &[(&str, &str)] = &[
    ("country", "country"), ("device", "device"), ("os", "os"), ("browser", "browser"),
    ("source", "source"), ("sub_id", "sub_id"),
    ("sub1", "sub1"), ("sub2", "sub2"), ("sub3", "sub3"), ("sub4", "sub4"), ("sub5", "sub5"),
    ("sub6", "sub6"), ("sub7", "sub7"), ("sub8", "sub8"), ("sub9", "sub9"), ("sub10", "sub10"),
    ("device_brand", "device_brand"), ("as_org", "as_org"),
    ("asn", "if(asn = 0, '', toString(asn))"),
    ("os_version", "os_major"), ("browser_version", "browser_major"),
];

/// Days looked back without `days`, and the most a request may ask for.
const DEFAULT_DAYS: u32 = 7;
const MAX_DAYS: u32 = 90;
const DEFAULT_LIMIT: u64 = 20;
const MAX_LIMIT: u64 = 100;

#[derive(Debug, clickhouse::Row, Deserialize, Serialize)]
struct ValueRow {
    value: String,
    clicks: u64,
}

/// `GET /api/v1/suggestions?field=country[&flow=…][&days=7][&q=…][&limit=20]`.
#[utoipa::path(get, path = "/api/v1/suggestions", tag = "flows",
    summary = "Values of a rule condition field seen in recent clicks, most clicked first",
    params(crate::openapi::bodies::SuggestionParams),
    responses(
        (status = 200, description = "The values", body = crate::openapi::bodies::Suggestions),
        (status = 422, description = "Invalid parameter, named in field", body = traffsure_core::ErrorBody),
    ))]
pub async fn list(
    state: web::Data<AppState>,
    query: Query,
    scope: FlowScope,
) -> Result<HttpResponse, ApiError> {
    let params = Params::new(query.into_inner(), &["field", "flow", "days", "q", "limit"])?;
    let Some(name) = params.get("field") else {
        return Err(ApiError::invalid("field", "field is required"));
    };
    let Some(&(field, expression)) = FIELDS.iter().find(|(f, _)| f.eq_ignore_ascii_case(name))
    else {
        let known: Vec<&str> = FIELDS.iter().map(|(f, _)| *f).collect();
        return Err(ApiError::invalid(
            "field",
            format!("field must be one of {}, got {name:?}", known.join(", ")),
        ));
    };
    let flow = params.flow(&state.registry)?;
    let days = params.number::<u32>("days")?.unwrap_or(DEFAULT_DAYS);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::invalid(
            "days",
            format!("days must be between 1 and {MAX_DAYS}"),
        ));
    }
    let limit = params.number::<u64>("limit")?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let contains = params.text("q", 200)?;

    let mut sql = Sql::new("SELECT ");
    sql.push(expression)
        .push(" AS value, count() AS clicks FROM clicks WHERE ts >= subtractDays(now(), ")
        .arg(Arg::U32(days))
        .push(")");
    flow_condition(&mut sql, "flow_id", flow, &scope);
    sql.push(" GROUP BY value HAVING value != ''");
    if let Some(contains) = contains {
        sql.push(" AND positionCaseInsensitiveUTF8(value, ")
            .str(contains)
            .push(") > 0");
    }
    sql.push(" ORDER BY clicks DESC, value ASC LIMIT ")
        .arg(Arg::U64(limit));
    let values = sql.query(&state.clickhouse).fetch_all::<ValueRow>().await?;
    Ok(HttpResponse::Ok().json(json!({
        "field": field,
        "flow": flow,
        "days": days,
        "values": values,
    })))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::FIELDS;
    use traffsure_core::flow::RULE_FIELDS;

    /// Every field suggested is one a rule condition accepts.
    #[test]
    fn suggested_fields_are_rule_fields() {
        for (field, _) in FIELDS {
            assert!(RULE_FIELDS.contains(field), "{field} is not a rule field");
        }
    }

    /// The OpenAPI document lists exactly these fields.
    #[test]
    fn openapi_lists_the_fields() {
        let doc: serde_json::Value = serde_json::from_str(crate::openapi::json()).unwrap();
        let listed = &doc["paths"]["/api/v1/suggestions"]["get"]["parameters"][0]["schema"]["enum"];
        let fields: Vec<&str> = FIELDS.iter().map(|(f, _)| *f).collect();
        assert_eq!(listed, &serde_json::json!(fields));
    }
}

//! Cost updates (docs/costs.md): the real spend of a flow over whole UTC hours, optionally
//! narrowed by sub values, sent one at a time (`POST /api/v1/costs`) or as a CSV file
//! (`POST /api/v1/costs/import`, all rows or none), listed with who made each and when
//! (`GET /api/v1/costs`). Every update is kept; how reports spread them over clicks, and
//! which of two overlapping updates owns a click, is decided in `reports::updates`.

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Digest;

use super::page::Query;
use crate::error::ApiError;
use crate::filters::Params;
use crate::sql::{Arg, Sql};
use crate::state::AppState;
use crate::users::{FlowScope, Principal, Via};

/// The sub columns an update can be narrowed by, in the order of `subs`.
pub const SUB_COLUMNS: [&str; 10] = [
    "sub1", "sub2", "sub3", "sub4", "sub5", "sub6", "sub7", "sub8", "sub9", "sub10",
];

/// The most rows one CSV import takes.
const MAX_IMPORT_ROWS: usize = 10_000;

/// A flow as a cost update names it: its id, or its slug as the lists' `flow` filter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum FlowRef {
    Id(u32),
    Slug(String),
}

impl Default for FlowRef {
    fn default() -> Self {
        Self::Id(0)
    }
}

impl std::fmt::Display for FlowRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => write!(f, "{id}"),
            Self::Slug(slug) => write!(f, "{slug:?}"),
        }
    }
}

/// One update as the API takes it (and as a CSV row's columns name it).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostUpdateSpec {
    /// The flow: its id or slug.
    pub flow: FlowRef,
    /// Start of the range, UTC, on a whole hour (`2026-03-01 00:00:00` or a date).
    pub from: String,
    /// End of the range (excluded), UTC, on a whole hour.
    pub to: String,
    /// What the range cost, decimal text or a number.
    pub amount: Value,
    /// The amount's currency; the reporting currency when absent.
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub sub_id: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub sub1: Option<String>,
    #[serde(default)]
    pub sub2: Option<String>,
    #[serde(default)]
    pub sub3: Option<String>,
    #[serde(default)]
    pub sub4: Option<String>,
    #[serde(default)]
    pub sub5: Option<String>,
    #[serde(default)]
    pub sub6: Option<String>,
    #[serde(default)]
    pub sub7: Option<String>,
    #[serde(default)]
    pub sub8: Option<String>,
    #[serde(default)]
    pub sub9: Option<String>,
    #[serde(default)]
    pub sub10: Option<String>,
}

/// A stored update, as the table holds it.
#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
pub struct CostUpdateRow {
    pub id: String,
    pub flow_id: u32,
    /// Unix seconds, UTC.
    pub from_ts: u32,
    pub to_ts: u32,
    pub amount_micros: i64,
    pub currency: String,
    pub sub_id: String,
    pub source: String,
    /// sub1..sub10; empty = any.
    pub subs: Vec<String>,
    pub created_at: u32,
    pub created_at_ms: i64,
    pub created_by: String,
}

/// The columns of `cost_updates`, in `CostUpdateRow`'s order.
pub const COLUMNS: &str = "id, flow_id, toUInt32(from_ts), toUInt32(to_ts), amount_micros, \
     currency, sub_id, source, subs, toUInt32(created_at), created_at_ms, created_by";

fn sub_value(field: &str, value: &Option<String>) -> Result<String, ApiError> {
    let value = value.as_deref().unwrap_or_default().trim();
    if value.len() > 500 {
        return Err(ApiError::invalid(field, "must be at most 500 characters"));
    }
    Ok(value.to_string())
}

impl CostUpdateSpec {
    fn subs(&self) -> [&Option<String>; 10] {
        [
            &self.sub1,
            &self.sub2,
            &self.sub3,
            &self.sub4,
            &self.sub5,
            &self.sub6,
            &self.sub7,
            &self.sub8,
            &self.sub9,
            &self.sub10,
        ]
    }

    /// The checked update; `at` prefixes the fields errors name (`rows[2].`).
    pub fn to_row(
        &self,
        at: &str,
        state: &AppState,
        created_by: &str,
        now_ms: i64,
    ) -> Result<CostUpdateRow, ApiError> {
        let field = |name: &str| format!("{at}{name}");
        let flow = match &self.flow {
            FlowRef::Id(id) => state.registry.get(*id),
            FlowRef::Slug(slug) => state.registry.resolve(slug),
        };
        let Some(flow_id) = flow.map(|f| f.id).filter(|id| *id != 0) else {
            return Err(ApiError::invalid(
                field("flow"),
                format!("no flow with id or slug {}", self.flow),
            ));
        };
        let from = traffsure_core::cost::hour_bound(&field("from"), &self.from)?;
        let to = traffsure_core::cost::hour_bound(&field("to"), &self.to)?;
        if to <= from {
            return Err(ApiError::invalid(field("to"), "must be after from"));
        }
        let (Ok(from_ts), Ok(to_ts)) = (u32::try_from(from), u32::try_from(to)) else {
            return Err(ApiError::invalid(
                field("from"),
                "must be between 1970 and 2106",
            ));
        };
        let amount = match &self.amount {
            Value::String(s) => traffsure_core::parse_micros(s.trim()),
            Value::Number(n) => traffsure_core::parse_micros(&n.to_string()),
            _ => {
                return Err(ApiError::invalid(
                    field("amount"),
                    "must be a decimal number",
                ))
            }
        }
        .map_err(|e| ApiError::invalid(field("amount"), e.to_string()))?;
        if amount < 0 {
            return Err(ApiError::invalid(field("amount"), "must not be negative"));
        }
        let currency = match self.currency.as_deref().map(str::trim) {
            None | Some("") => state.reporting_currency.clone(),
            Some(code) => crate::currency::currency_code(code).ok_or_else(|| {
                ApiError::invalid(
                    field("currency"),
                    format!("{code:?} is not a three-letter currency code"),
                )
            })?,
        };
        let mut subs = Vec::with_capacity(10);
        for (name, value) in SUB_COLUMNS.iter().zip(self.subs()) {
            subs.push(sub_value(&field(name), value)?);
        }
        let id_bytes: [u8; 6] = rand::random();
        let id = format!(
            "{now_ms:013}-{}",
            id_bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        Ok(CostUpdateRow {
            id,
            flow_id,
            from_ts,
            to_ts,
            amount_micros: amount,
            currency,
            sub_id: sub_value(&field("sub_id"), &self.sub_id)?,
            source: sub_value(&field("source"), &self.source)?,
            subs,
            created_at: u32::try_from(now_ms / 1000).unwrap_or(u32::MAX),
            created_at_ms: now_ms,
            created_by: created_by.to_string(),
        })
    }
}

/// Who sends the request: the user (with the key's id when through one of their API
/// keys), or for one of the configured API keys `api-key:` and the first 8 hex digits of
/// its SHA-256 (the key itself is never stored).
pub fn who(req: &HttpRequest) -> String {
    let Some(principal) = req.extensions().get::<Principal>().cloned() else {
        return String::new();
    };
    match &principal.via {
        Via::ApiKey { key_id } => format!("{} (api-key:{key_id})", principal.username),
        Via::ConfiguredKey => {
            let key = req
                .headers()
                .get(actix_web::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim_start_matches("Bearer ").trim())
                .unwrap_or_default();
            let digest = sha2::Sha256::digest(key.as_bytes());
            let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
            format!("api-key:{hex}")
        }
        _ => principal.username.clone(),
    }
}

fn format_ts(ts: u32) -> String {
    traffsure_core::cost::format_utc(i64::from(ts))
}

/// An update as the API shows it.
pub fn view(row: &CostUpdateRow, state: &AppState) -> Value {
    let mut v = json!({
        "id": row.id,
        "flow": row.flow_id,
        "flow_name": state.flow_name(row.flow_id),
        "from": format_ts(row.from_ts),
        "to": format_ts(row.to_ts),
        "amount": traffsure_core::format_micros(row.amount_micros),
        "currency": row.currency,
        "sub_id": row.sub_id,
        "source": row.source,
        "created_at": format_ts(row.created_at),
        "created_by": row.created_by,
    });
    for (name, value) in SUB_COLUMNS.iter().zip(&row.subs) {
        v[*name] = json!(value);
    }
    v
}

async fn store(state: &AppState, rows: &[CostUpdateRow]) -> Result<(), ApiError> {
    let mut insert = state
        .clickhouse
        .insert::<CostUpdateRow>("cost_updates")
        .await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await?;
    Ok(())
}

/// `POST /api/v1/costs`: stores one update.
#[utoipa::path(post, path = "/api/v1/costs", tag = "costs",
    summary = "Store one cost update",
    request_body = crate::openapi::bodies::NewCostUpdate,
    responses(
        (status = 201, description = "Stored", body = crate::openapi::bodies::CostUpdate),
        (status = 422, description = "A field is not acceptable, named in field", body = traffsure_core::ErrorBody),
    ))]
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<CostUpdateSpec>,
) -> Result<HttpResponse, ApiError> {
    let row = body.to_row("", &state, &who(&req), traffsure_core::now_ms())?;
    store(&state, std::slice::from_ref(&row)).await?;
    tracing::info!(id = %row.id, flow = row.flow_id, by = %row.created_by, "cost update stored");
    Ok(HttpResponse::Created().json(view(&row, &state)))
}

/// `GET /api/v1/costs`: updates newest first; filters `flow`, `limit` (1 to 10000).
#[utoipa::path(get, path = "/api/v1/costs", tag = "costs",
    summary = "Cost updates, newest first, with who sent each",
    params(crate::openapi::bodies::CostFilters),
    responses(
        (status = 200, description = "The updates", body = crate::openapi::bodies::CostList),
        (status = 422, description = "Invalid parameter, named in field", body = traffsure_core::ErrorBody),
    ))]
pub async fn list(
    state: web::Data<AppState>,
    query: Query,
    scope: FlowScope,
) -> Result<HttpResponse, ApiError> {
    let params = Params::new(query.into_inner(), &["flow", "limit"])?;
    let mut sql = Sql::new("SELECT ");
    sql.push(COLUMNS).push(" FROM cost_updates WHERE 1");
    // The user's flows only, as every list.
    crate::filters::flow_condition(&mut sql, "flow_id", params.flow(&state.registry)?, &scope);
    let limit = params.number::<u64>("limit")?.unwrap_or(1000);
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::invalid("limit", "limit must be 1 to 10000"));
    }
    sql.push(" ORDER BY created_at_ms DESC, id DESC LIMIT ")
        .arg(Arg::U64(limit));
    let rows = sql
        .query(&state.clickhouse)
        .fetch_all::<CostUpdateRow>()
        .await?;
    let costs: Vec<Value> = rows.iter().map(|r| view(r, &state)).collect();
    Ok(HttpResponse::Ok().json(json!({ "costs": costs })))
}

/// The updates of a CSV file: a header line naming the columns (`flow`, `from`, `to`,
/// `amount`, and any of `currency`, `sub_id`, `source`, `sub1`…`sub10`), then one update
/// per line. Errors name the row (`rows[3].amount`, counting data rows from 1).
pub fn parse_csv(text: &str) -> Result<Vec<CostUpdateSpec>, ApiError> {
    let mut lines = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty());
    let header: Vec<String> = match lines.next() {
        Some(line) => split_csv(line)
            .into_iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect(),
        None => return Err(ApiError::invalid("body", "the file is empty")),
    };
    for required in ["flow", "from", "to", "amount"] {
        if !header.iter().any(|h| h == required) {
            return Err(ApiError::invalid(
                "header",
                format!("the header line must name the column {required:?}"),
            ));
        }
    }
    let mut specs = Vec::new();
    for (i, line) in lines.enumerate() {
        let row = i + 1;
        if row > MAX_IMPORT_ROWS {
            return Err(ApiError::invalid(
                "body",
                format!("at most {MAX_IMPORT_ROWS} rows"),
            ));
        }
        let values = split_csv(line);
        if values.len() != header.len() {
            return Err(ApiError::invalid(
                format!("rows[{row}]"),
                format!(
                    "row {row} has {} values, the header {}",
                    values.len(),
                    header.len()
                ),
            ));
        }
        let mut object = serde_json::Map::new();
        for (name, value) in header.iter().zip(values) {
            let value = value.trim().to_string();
            // A flow's id as a number; anything else is a slug, checked with the row.
            let value = if name == "flow" {
                value
                    .parse::<u32>()
                    .map_or_else(|_| json!(value), |id| json!(id))
            } else {
                json!(value)
            };
            object.insert(name.clone(), value);
        }
        let spec: CostUpdateSpec = serde_json::from_value(Value::Object(object))
            .map_err(|e| ApiError::invalid(format!("rows[{row}]"), format!("row {row}: {e}")))?;
        specs.push(spec);
    }
    if specs.is_empty() {
        return Err(ApiError::invalid("body", "the file has no rows"));
    }
    Ok(specs)
}

/// One CSV line's fields; a quoted field may hold commas and doubled quotes.
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            other => field.push(other),
        }
    }
    fields.push(field);
    fields
}

/// `POST /api/v1/costs/import`: a CSV file of updates, stored all or none.
#[utoipa::path(post, path = "/api/v1/costs/import", tag = "costs",
    summary = "Store a CSV file of cost updates, all rows or none",
    request_body(content = String, content_type = "text/csv",
        description = "A header naming the columns (flow, from, to, amount, and any of currency, sub_id, source, sub1…sub10), then one update a line"),
    responses(
        (status = 200, description = "Stored", body = crate::openapi::bodies::CostsImported),
        (status = 422, description = "A row is not acceptable, named in field (rows[3].amount)", body = traffsure_core::ErrorBody),
    ))]
pub async fn import(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::invalid("body", "the file must be UTF-8 text"))?;
    let specs = parse_csv(text)?;
    let by = who(&req);
    let now_ms = traffsure_core::now_ms();
    let rows = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            // Rows of one file are newer one after the other, in file order.
            spec.to_row(&format!("rows[{}].", i + 1), &state, &by, now_ms + i as i64)
                .map_err(|e| match e {
                    ApiError::Invalid { field, message } => ApiError::Invalid {
                        message: format!("row {}: {message}", i + 1),
                        field,
                    },
                    other => other,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    store(&state, &rows).await?;
    tracing::info!(rows = rows.len(), by = %by, "cost updates imported");
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    Ok(HttpResponse::Ok().json(json!({"imported": rows.len(), "ids": ids})))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_become_specs_and_errors_name_the_row() {
        let specs = parse_csv(
            "flow,from,to,amount,currency,sub1\r\n\
             7,2026-03-01 00:00:00,2026-03-02,\"1,5\",EUR,\"zone \"\"a\"\"\"\n\
             8,2026-03-01,2026-03-02,2.5,,\n",
        )
        .unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].flow, FlowRef::Id(7));
        assert_eq!(specs[0].amount, json!("1,5"));
        assert_eq!(specs[0].sub1.as_deref(), Some("zone \"a\""));
        assert_eq!(specs[1].currency.as_deref(), Some(""));
        let field = |text: &str| match parse_csv(text).unwrap_err() {
            ApiError::Invalid { field, .. } => field,
            other => panic!("{other}"),
        };
        assert_eq!(field("flow,from,to\n1,a,b\n"), "header");
        let by_slug = parse_csv("flow,from,to,amount\nsummer,a,b,1\n").unwrap();
        assert_eq!(by_slug[0].flow, FlowRef::Slug("summer".into()));
        assert_eq!(field("flow,from,to,amount\n1,a,b\n"), "rows[1]");
        assert_eq!(field("flow,from,to,amount,sub11\n1,a,b,1,x\n"), "rows[1]");
        assert_eq!(field(""), "body");
    }
}

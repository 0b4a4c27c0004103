//! Exchange rates as data: listed, written one day at a time (`PUT`), imported from a
//! rates file in the ECB layout, and fetched from the URL the operator names. A rate
//! written again for the same day, base and currency replaces the older one. Which rate
//! converts what is decided in `crate::currency`.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use clickhouse::Client;
use serde::Deserialize;
use serde_json::json;

use super::page::Query;
use crate::audit::Entry;
use crate::currency::{currency_code, day_number, parse_ecb, NewRate};
use crate::error::ApiError;
use crate::filters::Params;
use crate::sql::{Arg, Sql};
use crate::state::AppState;
use crate::users::Principal;

/// The base of the ECB rates files.
const ECB_BASE: &str = "EUR";
/// The most rows one list answers.
const MAX_LIST: u64 = 10_000;

#[derive(Debug, clickhouse::Row, Deserialize)]
struct RateRow {
    day: String,
    base: String,
    currency: String,
    rate: f64,
    updated_at: String,
}

/// One day's rates against one base: `{"day", "base", "rates": {"USD": 1.0841}}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DayRates {
    day: String,
    base: String,
    rates: BTreeMap<String, f64>,
}

/// Rates stored, newest day first: filters from, to (days), base, currency, limit.
#[utoipa::path(get, path = "/api/v1/exchange-rates", tag = "exchange rates",
    summary = "Exchange rates stored, newest day first",
    params(crate::openapi::bodies::RateFilters),
    responses(
        (status = 200, description = "The rates", body = crate::openapi::bodies::ExchangeRates),
        (status = 422, description = "Invalid parameter, named in field", body = traffsure_core::ErrorBody),
    ))]
pub async fn list(state: web::Data<AppState>, query: Query) -> Result<HttpResponse, ApiError> {
    let params = Params::new(
        query.into_inner(),
        &["from", "to", "base", "currency", "limit"],
    )?;
    let mut sql = Sql::new(
        "SELECT toString(day) AS d, base, currency, argMax(rate, updated_at) AS r, \
                toString(max(updated_at)) AS u FROM exchange_rates WHERE 1",
    );
    let mut days = Vec::new();
    for (name, op) in [
        ("from", " AND day >= toDate("),
        ("to", " AND day <= toDate("),
    ] {
        if let Some(value) = params.get(name) {
            let day = checked_day(name, value)?;
            sql.push(op).str(day).push(")");
            days.push((name, day_number(day)));
        }
    }
    // As the other lists: a range that ends before it starts is refused, not empty.
    if let [("from", from), ("to", to)] = days[..] {
        if to < from {
            return Err(ApiError::invalid("to", "to is before from"));
        }
    }
    for (name, column) in [("base", " AND base = "), ("currency", " AND currency = ")] {
        if let Some(value) = params.get(name) {
            sql.push(column).str(code(name, value)?);
        }
    }
    let limit = params.number::<u64>("limit")?.unwrap_or(1000);
    if limit == 0 || limit > MAX_LIST {
        return Err(ApiError::invalid(
            "limit",
            format!("limit must be 1 to {MAX_LIST}"),
        ));
    }
    sql.push(" GROUP BY day, base, currency ORDER BY day DESC, base, currency LIMIT ")
        .arg(Arg::U64(limit));
    let rows = sql.query(&state.clickhouse).fetch_all::<RateRow>().await?;
    let rates: Vec<_> = rows
        .into_iter()
        .map(|r| {
            json!({"day": r.day, "base": r.base, "currency": r.currency, "rate": r.rate, "updated_at": r.updated_at})
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "reporting_currency": state.reporting_currency,
        "rates": rates,
    })))
}

/// Stores one day's rates against one base.
#[utoipa::path(put, path = "/api/v1/exchange-rates", tag = "exchange rates",
    summary = "Store one day's rates against one base (a rate written again replaces the older one)",
    request_body = DayRates,
    responses(
        (status = 200, description = "Stored", body = crate::openapi::bodies::RatesStored),
        (status = 422, description = "A field is not acceptable, named in field", body = traffsure_core::ErrorBody),
    ))]
pub async fn put(
    state: web::Data<AppState>,
    body: web::Json<DayRates>,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let day = checked_day("day", &body.day)?.to_string();
    let base = code("base", &body.base)?;
    if body.rates.is_empty() {
        return Err(ApiError::invalid(
            "rates",
            "rates must name one currency or more",
        ));
    }
    let mut rates = Vec::new();
    for (currency, rate) in &body.rates {
        let currency = code("rates", currency)?;
        if !(rate.is_finite() && *rate > 0.0) {
            return Err(ApiError::invalid(
                "rates",
                format!("the rate of {currency} must be a positive number"),
            ));
        }
        rates.push((day.clone(), currency, *rate));
    }
    let before = day_rates(&state.clickhouse, &day, &base).await?;
    let stored = store(&state.clickhouse, &base, &rates).await?;
    tracing::info!(day = %day, base = %base, stored, "exchange rates stored");
    let after = day_rates(&state.clickhouse, &day, &base).await?;
    let entry = Entry::new("exchange_rates", format!("{base}/{day}"), "update");
    entry
        .before(&before)
        .after(&after)
        .record(&state, &who)
        .await?;
    Ok(HttpResponse::Ok().json(json!({"day": day, "base": base, "stored": stored})))
}

/// One day's stored rates against `base`, as `{"day", "base", "rates": {currency: rate}}`
/// (for the audit log).
async fn day_rates(client: &Client, day: &str, base: &str) -> Result<serde_json::Value, ApiError> {
    let rows = client
        .query(
            "SELECT currency, argMax(rate, updated_at) FROM exchange_rates \
             WHERE day = toDate(?) AND base = ? GROUP BY currency ORDER BY currency",
        )
        .bind(day)
        .bind(base)
        .fetch_all::<(String, f64)>()
        .await?;
    let rates: BTreeMap<String, f64> = rows.into_iter().collect();
    Ok(json!({"day": day, "base": base, "rates": rates}))
}

/// Imports a rates file in the ECB layout (`Date,USD,JPY,...`, base EUR).
#[utoipa::path(post, path = "/api/v1/exchange-rates/import", tag = "exchange rates",
    summary = "Import a daily rates file in the ECB layout (Date,USD,JPY,… with base EUR)",
    request_body(content = String, content_type = "text/csv"),
    responses(
        (status = 200, description = "Imported", body = crate::openapi::bodies::RatesImported),
        (status = 422, description = "Not a rates file (field body)", body = traffsure_core::ErrorBody),
    ))]
pub async fn import(
    state: web::Data<AppState>,
    body: web::Bytes,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::invalid("body", "the rates file must be UTF-8 text"))?;
    let rates = parse_ecb(text).map_err(|message| ApiError::invalid("body", message))?;
    let days = rates
        .iter()
        .map(|(day, _, _)| day.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let stored = store(&state.clickhouse, ECB_BASE, &rates).await?;
    tracing::info!(days, stored, "exchange rates imported");
    let first_last = (
        rates.iter().map(|r| &r.0).min(),
        rates.iter().map(|r| &r.0).max(),
    );
    let summary = json!({"base": ECB_BASE, "days": days, "stored": stored,
        "from": first_last.0, "to": first_last.1});
    let entry = Entry::new("exchange_rates", ECB_BASE, "import").after(&summary);
    entry.record(&state, &who).await?;
    Ok(HttpResponse::Ok().json(json!({"base": ECB_BASE, "days": days, "stored": stored})))
}

/// Fetches the rates file at `url` every `every` and imports it; a failed fetch is
/// logged and tried again at the next turn.
pub async fn fetch_forever(client: Client, http: reqwest::Client, url: String, every: Duration) {
    loop {
        match fetch_once(&client, &http, &url).await {
            Ok(stored) => {
                tracing::info!(url = %url, stored, "exchange rates fetched");
                let entry = Entry::new("exchange_rates", ECB_BASE, "import")
                    .after(&json!({"base": ECB_BASE, "stored": stored, "url": url}));
                // A failed entry is logged by `record_in`; the next fetch goes on.
                let _ = entry
                    .record_in(&client, &Principal::system("rates fetch"))
                    .await;
            }
            Err(error) => tracing::warn!(url = %url, error = %error, "exchange rates fetch failed"),
        }
        tokio::time::sleep(every).await;
    }
}

async fn fetch_once(client: &Client, http: &reqwest::Client, url: &str) -> anyhow::Result<usize> {
    let text = http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let rates = parse_ecb(&text).map_err(anyhow::Error::msg)?;
    Ok(store(client, ECB_BASE, &rates).await?)
}

async fn store(
    client: &Client,
    base: &str,
    rates: &[(String, String, f64)],
) -> Result<usize, ApiError> {
    let updated_at = u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default(),
    )
    .unwrap_or(u32::MAX);
    let rows = rates
        .iter()
        .map(|(day, currency, rate)| {
            let day = day_number(day)
                .ok_or_else(|| ApiError::invalid("day", format!("{day:?} is not a date")))?;
            Ok(NewRate {
                day,
                base: base.to_string(),
                currency: currency.clone(),
                rate: *rate,
                updated_at,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let mut insert = client.insert::<NewRate>("exchange_rates").await?;
    for row in &rows {
        insert.write(row).await?;
    }
    insert.end().await?;
    Ok(rates.len())
}

fn checked_day<'a>(field: &str, value: &'a str) -> Result<&'a str, ApiError> {
    day_number(value).map(|_| value).ok_or_else(|| {
        ApiError::invalid(field, format!("{field} must be YYYY-MM-DD, got {value:?}"))
    })
}

fn code(field: &str, value: &str) -> Result<String, ApiError> {
    currency_code(value).ok_or_else(|| {
        ApiError::invalid(
            field,
            format!("{value:?} is not a three-letter currency code"),
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// reporting-api's state with nothing behind it: ClickHouse and Kafka are unreachable,
    /// so a request gets past the checks of its parameters only to fail there.
    fn unreachable() -> web::Data<AppState> {
        web::Data::new(AppState::for_tests(
            traffsure_kafka::FlowRegistry::new(),
            "http://127.0.0.1:1",
            None,
        ))
    }

    async fn listed(query: &str) -> Result<HttpResponse, ApiError> {
        list(unreachable(), Query::from_query(query).unwrap()).await
    }

    #[actix_web::test]
    async fn a_range_that_ends_before_it_starts_is_refused() {
        // Like the clicks list: 422 naming `to`, not an empty list.
        match listed("from=2026-12-05&to=2026-12-01").await {
            Err(ApiError::Invalid { field, message }) => {
                assert_eq!(
                    (field.as_str(), message.as_str()),
                    ("to", "to is before from")
                );
            }
            other => panic!("{:?}", other.map(|r| r.status())),
        }
        // A one-day range, and either bound alone, pass the checks (and reach ClickHouse).
        for query in [
            "from=2026-12-01&to=2026-12-01",
            "from=2026-12-05",
            "to=2026-12-01",
            "to=2026-12-05&from=2026-12-01",
        ] {
            assert!(
                matches!(listed(query).await, Err(ApiError::ClickHouse(_))),
                "{query}"
            );
        }
        assert!(matches!(
            listed("from=2026-12-32").await,
            Err(ApiError::Invalid { field, .. }) if field == "from"
        ));
    }
}

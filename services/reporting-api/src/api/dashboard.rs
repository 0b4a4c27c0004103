//! The dashboard: today's four figures (UTC) and today against yesterday by hour, read
//! from the hourly rollups, plus the number of active flows from the registry. Revenue
//! is in the reporting currency (`crate::currency`); today's revenue without a rate is
//! shown apart, by currency.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use traffsure_core::format_micros;
use traffsure_core::vocab::Vocabulary;
use traffsure_events::{ConversionStatus, FlowStatus};

use crate::currency::{Rates, WithoutRate};
use crate::error::ApiError;
use crate::sql::Sql;
use crate::state::AppState;

#[derive(Debug, clickhouse::Row, Deserialize)]
struct HourCount {
    hour: String,
    clicks: i64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct HourConversions {
    hour: String,
    currency: String,
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
pub async fn dashboard(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let clicks = state
        .clickhouse
        .query(
            "SELECT toString(hour) AS h, toInt64(sum(clicks) - sum(bots)) AS c \
             FROM clicks_hourly WHERE hour >= toDateTime(yesterday()) GROUP BY h",
        )
        .fetch_all::<HourCount>();
    let mut conversions = Sql::new("SELECT toString(hour) AS h, currency AS cur, ");
    conversions
        .conversions_by_status("sumIf(conversions, ")
        .push(
        " FROM conversions_hourly_currency WHERE hour >= toDateTime(yesterday()) GROUP BY h, cur",
    );
    let conversions = conversions
        .query(&state.clickhouse)
        .fetch_all::<HourConversions>();
    let date = state
        .clickhouse
        .query("SELECT toString(today()), toString(yesterday())")
        .fetch_one::<(String, String)>();
    let (clicks, conversions, (date, yesterday_date)) =
        tokio::try_join!(clicks, conversions, date)?;
    let rates = Rates::load(
        &state.clickhouse,
        &state.reporting_currency,
        &yesterday_date,
        &date,
    )
    .await?;
    let mut without_rate = WithoutRate::default();

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
            let day = row.hour.get(..10).unwrap_or_default();
            match rates.convert(row.revenue_micros, day, &row.currency) {
                Some(revenue) => series[h].2 += revenue,
                None if is_today && row.revenue_micros != 0 => {
                    without_rate.add(&row.currency, row.approved, row.revenue_micros)
                }
                None => {}
            }
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
    let active_flows = state
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
        "conversions_by_status": {
            ConversionStatus::Approved.word(): approved,
            ConversionStatus::Pending.word(): pending,
            ConversionStatus::Rejected.word(): rejected,
        },
        "revenue_today": format_micros(today.iter().map(|p| p.2).sum::<i64>()),
        "reporting_currency": rates.reporting(),
        "without_rate_today": without_rate.json(),
        "active_flows": active_flows,
        "hourly": {"today": points(&today), "yesterday": points(&yesterday)},
    })))
}

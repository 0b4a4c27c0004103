//! The dashboard: today's four figures and today against yesterday by hour, in a time
//! zone (`timezone`, UTC by default: the hourly rollups' hours read in it), read
//! from the hourly rollups, plus the number of active flows from the registry, and
//! today's top flows, countries, traffic sources (by clicks) and offers (by offer
//! clicks). Revenue is in the reporting currency (`crate::currency`); today's revenue
//! without a rate is shown apart, by currency.

use std::collections::HashMap;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use traffsure_core::format_micros;
use traffsure_core::vocab::Vocabulary;
use traffsure_events::{ConversionStatus, FlowStatus, ObjectKind};

use super::page::Query;
use crate::currency::{Rates, WithoutRate};
use crate::error::ApiError;
use crate::filters::{flow_condition, Params};
use crate::object_names::ObjectNames;
use crate::sql::Sql;
use crate::state::AppState;
use crate::users::FlowScope;

#[derive(Debug, clickhouse::Row, Deserialize)]
struct HourCount {
    hour: String,
    clicks: i64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct HourConversions {
    hour: String,
    /// The UTC day, whose rate converts the revenue.
    day: String,
    currency: String,
    approved: i64,
    pending: i64,
    rejected: i64,
    revenue_micros: i64,
}

/// Today's clicks and offer clicks of one flow, country, traffic source and offer.
#[derive(Debug, clickhouse::Row, Deserialize)]
struct TodayGroup {
    flow_id: u32,
    country: String,
    traffic_source_id: u32,
    offer_id: u32,
    clicks: i64,
    offer_clicks: i64,
}

/// How many entries each top list shows.
const TOP: usize = 5;

/// The `TOP` keys of `counts` with the most `(clicks, offer clicks)` by `rank` (ties
/// by key), leaving out empty keys and keys with nothing to rank by.
fn top<K: Ord + Clone>(
    counts: &HashMap<K, (i64, i64)>,
    rank: impl Fn(&(i64, i64)) -> i64,
    empty: &K,
) -> Vec<(K, (i64, i64))> {
    let mut entries: Vec<(K, (i64, i64))> = counts
        .iter()
        .filter(|(k, v)| *k != empty && rank(v) > 0)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    entries.sort_by(|a, b| rank(&b.1).cmp(&rank(&a.1)).then_with(|| a.0.cmp(&b.0)));
    entries.truncate(TOP);
    entries
}

/// A top list's entry: what it is (`{"id", "name"}`, `{"country"}`), and its counts.
fn entry(mut what: Value, (clicks, offer_clicks): (i64, i64)) -> Value {
    what["clicks"] = json!(clicks);
    what["offer_clicks"] = json!(offer_clicks);
    what
}

#[derive(Serialize, Default, Clone)]
struct HourPoint {
    hour: u8,
    clicks: i64,
    conversions: i64,
    revenue: String,
}

/// Today's four figures and today against yesterday by hour, in `timezone` (UTC by
/// default), from the rollups.
#[utoipa::path(get, path = "/api/v1/dashboard", tag = "reports",
    summary = "Today's figures and today against yesterday by hour",
    params(("timezone" = Option<String>, Query, description = "IANA time zone of today and the hours (default UTC)")),
    responses(
        (status = 200, description = "The dashboard", body = crate::openapi::bodies::Dashboard),
        (status = 422, description = "Unknown time zone or parameter, named in field", body = traffsure_core::ErrorBody),
    ))]
pub async fn dashboard(
    state: web::Data<AppState>,
    query: Query,
    scope: FlowScope,
) -> Result<HttpResponse, ApiError> {
    let params = Params::new(query.into_inner(), &["timezone"])?;
    let timezone = params.timezone()?;
    state.check_timezone(&timezone).await?;
    let tz = timezone.as_str();
    let mut days = Sql::new("SELECT toString(toDate(now(), ");
    days.str(tz)
        .push(")), toString(toDate(now(), ")
        .str(tz)
        .push(") - 1)");
    let (date, yesterday_date) = days
        .query(&state.clickhouse)
        .fetch_one::<(String, String)>()
        .await?;
    // Where today and yesterday start in the time zone.
    let today_start = format!("{date} 00:00:00");
    let yesterday_start = format!("{yesterday_date} 00:00:00");

    let mut clicks = Sql::new("SELECT toString(hour, ");
    clicks
        .str(tz)
        .push(
            ") AS h, toInt64(sumIf(clicks - bots, kind != 1)) AS c \
             FROM clicks_funnel_hourly WHERE hour >= toDateTime(",
        )
        .str(yesterday_start.as_str())
        .push(", ")
        .str(tz)
        .push(")");
    flow_condition(&mut clicks, "flow_id", None, &scope);
    clicks.push(" GROUP BY h");
    let clicks = clicks.query(&state.clickhouse).fetch_all::<HourCount>();
    // Offer clicks as the reports count them (query::FUNNEL).
    let mut groups = Sql::new(
        "SELECT flow_id, country, traffic_source_id, offer_id, \
         toInt64(sumIf(clicks - bots, kind != 1)) AS c, \
         toInt64(sumIf(clicks - bots, kind = 1 OR (lander_id = 0 AND offer_id != 0))) AS oc \
         FROM clicks_funnel_hourly WHERE hour >= toDateTime(",
    );
    groups
        .str(today_start.as_str())
        .push(", ")
        .str(tz)
        .push(")");
    flow_condition(&mut groups, "flow_id", None, &scope);
    groups.push(" GROUP BY flow_id, country, traffic_source_id, offer_id");
    let groups = groups.query(&state.clickhouse).fetch_all::<TodayGroup>();
    let mut conversions = Sql::new("SELECT toString(hour, ");
    conversions
        .str(tz)
        .push(") AS h, toString(toDate(hour, 'UTC')) AS d, currency AS cur, ")
        .conversions_by_status("sumIf(conversions, ")
        .push(" FROM conversions_hourly_currency WHERE hour >= toDateTime(")
        .str(yesterday_start.as_str())
        .push(", ")
        .str(tz)
        .push(")");
    flow_condition(&mut conversions, "flow_id", None, &scope);
    conversions.push(" GROUP BY h, d, cur");
    let conversions = conversions
        .query(&state.clickhouse)
        .fetch_all::<HourConversions>();
    let (clicks, conversions, groups) = tokio::try_join!(clicks, conversions, groups)?;
    let names = ObjectNames::load(&state.clickhouse).await?;
    let rates = match (
        conversions.iter().map(|r| r.day.as_str()).min(),
        conversions.iter().map(|r| r.day.as_str()).max(),
    ) {
        (Some(first), Some(last)) => {
            Rates::load(&state.clickhouse, &state.reporting_currency, first, last).await?
        }
        _ => Rates::new(&state.reporting_currency),
    };
    let mut without_rate = WithoutRate::default();

    let mut today = vec![(0i64, 0i64, 0i64); 24];
    let mut yesterday = vec![(0i64, 0i64, 0i64); 24];
    let (mut approved, mut pending, mut rejected) = (0, 0, 0);
    // An hour of today or yesterday in the time zone (a zone whose offset is not whole
    // hours shows each rollup hour at the hour it starts in).
    let slot = |hour: &str| -> Option<(bool, usize)> {
        let day = hour.get(..10)?;
        let is_today = day == date.as_str();
        if !is_today && day != yesterday_date.as_str() {
            return None;
        }
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
            match rates.convert(row.revenue_micros, &row.day, &row.currency) {
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
    let mut flows: HashMap<u32, (i64, i64)> = HashMap::new();
    let mut countries: HashMap<String, (i64, i64)> = HashMap::new();
    let mut sources: HashMap<u32, (i64, i64)> = HashMap::new();
    let mut offers: HashMap<u32, (i64, i64)> = HashMap::new();
    for g in &groups {
        for entry in [
            flows.entry(g.flow_id).or_default(),
            countries.entry(g.country.clone()).or_default(),
            sources.entry(g.traffic_source_id).or_default(),
            offers.entry(g.offer_id).or_default(),
        ] {
            entry.0 += g.clicks;
            entry.1 += g.offer_clicks;
        }
    }
    let by_clicks = |v: &(i64, i64)| v.0;
    let by_offer_clicks = |v: &(i64, i64)| v.1;
    let object = |kind: ObjectKind, id: u32| json!({"id": id, "name": names.name(kind, id)});
    let top_flows: Vec<Value> = top(&flows, by_clicks, &0)
        .into_iter()
        .map(|(id, counts)| entry(json!({"id": id, "name": state.flow_name(id)}), counts))
        .collect();
    let top_countries: Vec<Value> = top(&countries, by_clicks, &String::new())
        .into_iter()
        .map(|(country, counts)| entry(json!({ "country": country }), counts))
        .collect();
    let top_sources: Vec<Value> = top(&sources, by_clicks, &0)
        .into_iter()
        .map(|(id, counts)| entry(object(ObjectKind::TrafficSource, id), counts))
        .collect();
    let top_offers: Vec<Value> = top(&offers, by_offer_clicks, &0)
        .into_iter()
        .map(|(id, counts)| entry(object(ObjectKind::Offer, id), counts))
        .collect();
    let active_flows = state
        .registry
        .all()
        .iter()
        .filter(|f| f.status() == FlowStatus::Active && scope.allows(f.id))
        .count();
    let costs = super::reports::today_totals(&state, &date, tz, scope.clone()).await?;
    let mut body = json!({
        "date": date,
        "yesterday": yesterday_date,
        "timezone": timezone,
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
        "top_today": {
            "flows": top_flows,
            "countries": top_countries,
            "traffic_sources": top_sources,
            "offers": top_offers,
        },
    });
    // Cost as reports count it (docs/costs.md): `cost_today`, `profit_today`, ….
    for (name, value, _) in costs {
        if matches!(
            name,
            "cost" | "profit" | "roi" | "cpc" | "cpa" | "epc" | "cost_source"
        ) {
            body[format!("{name}_today")] = value;
        }
    }
    Ok(HttpResponse::Ok().json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_lists_rank_by_their_count_without_empty_keys() {
        let counts: HashMap<u32, (i64, i64)> = (0..8u32)
            .map(|id| (id, (i64::from(id % 4), i64::from(id))))
            .collect();
        let by_clicks = top(&counts, |v| v.0, &0);
        let ids: Vec<u32> = by_clicks.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [3, 7, 2, 6, 1]);
        let by_offer_clicks = top(&counts, |v| v.1, &0);
        let ids: Vec<u32> = by_offer_clicks.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [7, 6, 5, 4, 3]);
    }
}

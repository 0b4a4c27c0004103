//! Clicks and conversions joined by group key into one row per group with its totals,
//! and the derived metrics (CR, profit, ROI, EPC, lander CTR, offer CR) of each row and
//! of the whole report.
//! Revenue is converted to the reporting currency here, at the rate of its day; revenue
//! without a rate is kept apart (`without_rate`) and is in no sum.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use traffsure_core::format_micros;
use traffsure_core::vocab::Vocabulary;
use traffsure_events::ConversionStatus;

use super::query::Sides;
use crate::currency::{Rates, WithoutRate};
use crate::object_names::{object_dimension, ObjectNames};

/// A metric's name, its JSON value, and the number it sorts by.
pub type Metric = (&'static str, Value, f64);
/// A report row: its group keys (with `flow_name` beside `flow`), then its metrics.
pub type Row = (Map<String, Value>, Vec<Metric>);

/// The counts of one group, or of the whole report.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Totals {
    /// Whether unique clicks were counted (they show as `null` otherwise).
    pub with_uniques: bool,
    pub clicks: i64,
    pub unique_clicks: u64,
    pub bots: i64,
    pub lander_views: i64,
    pub lander_clicks: i64,
    pub offer_clicks: i64,
    pub approved: i64,
    pub pending: i64,
    pub rejected: i64,
    /// Approved revenue in the reporting currency.
    pub revenue_micros: i64,
    pub cost_micros: i64,
    /// Impressions of people (bots left out, as clicks).
    pub impressions: i64,
    /// Approved revenue no rate converts, by currency.
    pub without_rate: WithoutRate,
    /// Cost no rate converts, by currency.
    pub cost_without_rate: BTreeMap<String, i64>,
    /// Approved payout to affiliates in the reporting currency (docs/caps.md); payout no
    /// rate converts is left out, as its conversions are counted in `without_rate`.
    pub payout_micros: i64,
    /// Where the cost came from (`cost_source`).
    pub cost_sources: CostSources,
}

/// How many clicks (or conversions) of a group took their cost from each source: the
/// tracking link, a cost model, a cost update.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CostSources {
    pub link: i64,
    pub model: i64,
    pub update: i64,
}

impl CostSources {
    /// `link`, `model` or `update` when the cost came from one of them alone, `mixed`
    /// from several, empty from none.
    pub fn word(&self) -> &'static str {
        let found: Vec<&'static str> = [
            (self.link, "link"),
            (self.model, "model"),
            (self.update, "update"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(_, w)| w)
        .collect();
        match found.as_slice() {
            [] => "",
            [one] => one,
            _ => "mixed",
        }
    }
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.with_uniques = o.with_uniques;
        self.clicks += o.clicks;
        self.unique_clicks += o.unique_clicks;
        self.bots += o.bots;
        self.lander_views += o.lander_views;
        self.lander_clicks += o.lander_clicks;
        self.offer_clicks += o.offer_clicks;
        self.approved += o.approved;
        self.pending += o.pending;
        self.rejected += o.rejected;
        self.revenue_micros += o.revenue_micros;
        self.cost_micros += o.cost_micros;
        self.impressions += o.impressions;
        self.payout_micros += o.payout_micros;
        self.without_rate.merge(&o.without_rate);
        for (currency, cost) in &o.cost_without_rate {
            *self.cost_without_rate.entry(currency.clone()).or_default() += cost;
        }
        self.cost_sources.link += o.cost_sources.link;
        self.cost_sources.model += o.cost_sources.model;
        self.cost_sources.update += o.cost_sources.update;
    }

    /// `[{currency, cost}]`: cost no rate converts, in the currency it was sent in. A
    /// currency whose cost came to nothing (a cost update replaced it) is not listed.
    pub fn cost_without_rate_json(&self) -> Value {
        self.cost_without_rate
            .iter()
            .filter(|(_, cost)| **cost != 0)
            .map(|(currency, cost)| json!({"currency": currency, "cost": format_micros(*cost)}))
            .collect()
    }

    /// Metrics by name, in the order of `parse::METRICS`; money as decimal text, ratios
    /// as numbers rounded to 4 places.
    pub fn metrics(&self) -> Vec<Metric> {
        let conversions = self.approved + self.pending;
        let profit = traffsure_core::cost::profit(self.revenue_micros, self.cost_micros);
        let ratio = |num: f64, den: f64| if den == 0.0 { 0.0 } else { num / den };
        let round = |v: f64| (v * 10_000.0).round() / 10_000.0;
        let cr = round(ratio(conversions as f64 * 100.0, self.clicks as f64));
        let roi = round(ratio(profit as f64 * 100.0, self.cost_micros as f64));
        let epc_micros = ratio(self.revenue_micros as f64, self.clicks as f64).round() as i64;
        let cpc_micros = ratio(self.cost_micros as f64, self.clicks as f64).round() as i64;
        let cpa_micros = ratio(self.cost_micros as f64, conversions as f64).round() as i64;
        let lander_ctr = round(ratio(
            self.lander_clicks as f64 * 100.0,
            self.lander_views as f64,
        ));
        let offer_cr = round(ratio(conversions as f64 * 100.0, self.offer_clicks as f64));
        // Clicks per impression, in percent.
        let ctr = round(ratio(self.clicks as f64 * 100.0, self.impressions as f64));
        vec![
            ("clicks", json!(self.clicks), self.clicks as f64),
            (
                "unique_clicks",
                if self.with_uniques {
                    json!(self.unique_clicks)
                } else {
                    Value::Null
                },
                self.unique_clicks as f64,
            ),
            ("bots", json!(self.bots), self.bots as f64),
            ("conversions", json!(conversions), conversions as f64),
            (
                ConversionStatus::Approved.word(),
                json!(self.approved),
                self.approved as f64,
            ),
            (
                ConversionStatus::Pending.word(),
                json!(self.pending),
                self.pending as f64,
            ),
            (
                ConversionStatus::Rejected.word(),
                json!(self.rejected),
                self.rejected as f64,
            ),
            ("cr", json!(cr), cr),
            (
                "revenue",
                json!(format_micros(self.revenue_micros)),
                self.revenue_micros as f64,
            ),
            (
                "cost",
                json!(format_micros(self.cost_micros)),
                self.cost_micros as f64,
            ),
            ("profit", json!(format_micros(profit)), profit as f64),
            ("roi", json!(roi), roi),
            ("epc", json!(format_micros(epc_micros)), epc_micros as f64),
            (
                "without_rate",
                json!(self.without_rate.conversions()),
                self.without_rate.conversions() as f64,
            ),
            (
                "lander_views",
                json!(self.lander_views),
                self.lander_views as f64,
            ),
            (
                "lander_clicks",
                json!(self.lander_clicks),
                self.lander_clicks as f64,
            ),
            ("lander_ctr", json!(lander_ctr), lander_ctr),
            (
                "offer_clicks",
                json!(self.offer_clicks),
                self.offer_clicks as f64,
            ),
            ("offer_cr", json!(offer_cr), offer_cr),
            (
                "impressions",
                json!(self.impressions),
                self.impressions as f64,
            ),
            ("ctr", json!(ctr), ctr),
            (
                "payout",
                json!(format_micros(self.payout_micros)),
                self.payout_micros as f64,
            ),
            ("cpc", json!(format_micros(cpc_micros)), cpc_micros as f64),
            ("cpa", json!(format_micros(cpa_micros)), cpa_micros as f64),
            (
                "cost_source",
                json!(self.cost_sources.word()),
                f64::from(self.cost_sources.word().len() as u32),
            ),
        ]
    }
}

/// Both sides' rows summed by group key (a group either side lacks counts zero there),
/// revenue and cost converted with `rates` (a cost without a currency is in the
/// reporting currency).
pub fn groups(sides: Sides, with_uniques: bool, rates: &Rates) -> BTreeMap<Vec<String>, Totals> {
    let mut groups: BTreeMap<Vec<String>, Totals> = BTreeMap::new();
    for row in sides.clicks {
        let t = groups.entry(row.keys).or_default();
        t.with_uniques = with_uniques;
        t.clicks += row.clicks;
        t.lander_views += row.lander_views;
        t.lander_clicks += row.lander_clicks;
        t.offer_clicks += row.offer_clicks;
        t.bots += row.bots;
        t.unique_clicks += row.unique_clicks;
    }
    for row in sides.costs {
        let t = groups.entry(row.keys).or_default();
        t.with_uniques = with_uniques;
        match row.source {
            super::query::COST_LINK => t.cost_sources.link += row.clicks as i64,
            super::query::COST_MODEL | super::query::COST_CONVERSION_MODEL => {
                t.cost_sources.model += row.clicks as i64
            }
            _ => {}
        }
        let currency = if row.currency.is_empty() {
            rates.reporting()
        } else {
            row.currency.as_str()
        };
        match rates.convert(row.cost_micros, &row.day, currency) {
            Some(cost) => t.cost_micros += cost,
            None if row.cost_micros != 0 => {
                *t.cost_without_rate.entry(currency.to_string()).or_default() += row.cost_micros
            }
            None => {}
        }
    }
    for row in sides.impressions {
        let t = groups.entry(row.keys).or_default();
        t.with_uniques = with_uniques;
        t.impressions += row.impressions;
    }
    for row in sides.payouts {
        let t = groups.entry(row.keys).or_default();
        t.with_uniques = with_uniques;
        if let Some(payout) = rates.convert(row.payout_micros, &row.day, &row.currency) {
            t.payout_micros += payout;
        }
    }
    for row in sides.conversions {
        let t = groups.entry(row.keys).or_default();
        t.with_uniques = with_uniques;
        t.approved += row.approved;
        t.pending += row.pending;
        t.rejected += row.rejected;
        match rates.convert(row.revenue_micros, &row.day, &row.currency) {
            Some(revenue) => t.revenue_micros += revenue,
            None if row.revenue_micros != 0 => {
                t.without_rate
                    .add(&row.currency, row.approved, row.revenue_micros)
            }
            None => {}
        }
    }
    groups
}

/// One row per group, its keys named by `dims` (a `flow` key gets its `flow_name` from
/// `flow_name`, an object's key its name from `names`), and the report's totals.
pub fn rows(
    groups: &BTreeMap<Vec<String>, Totals>,
    dims: &[&'static str],
    with_uniques: bool,
    flow_name: impl Fn(u32) -> String,
    names: &ObjectNames,
) -> (Vec<Row>, Totals) {
    let mut total = Totals {
        with_uniques,
        ..Totals::default()
    };
    let rows = groups
        .iter()
        .map(|(keys, t)| {
            total.add(t);
            let mut row = Map::new();
            for (dim, key) in dims.iter().zip(keys) {
                row.insert((*dim).to_string(), json!(key));
                if *dim == "flow" {
                    let name = key.parse().map(&flow_name).unwrap_or_default();
                    row.insert("flow_name".into(), json!(name));
                }
                if let Some(object) = object_dimension(dim) {
                    let name = key
                        .parse()
                        .map(|id| names.name(object.kind, id))
                        .unwrap_or_default();
                    row.insert(object.name_column.into(), json!(name));
                }
            }
            (row, t.metrics())
        })
        .collect();
    (rows, total)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::parse::METRICS;
    use super::super::query::{ClickAgg, ConversionAgg, CostAgg};
    use super::*;

    #[test]
    fn the_cost_source_is_one_word_or_mixed() {
        let mut s = CostSources::default();
        assert_eq!(s.word(), "");
        s.update = 3;
        assert_eq!(s.word(), "update");
        s.link = 1;
        assert_eq!(s.word(), "mixed");
        s = CostSources {
            link: 0,
            model: 2,
            update: 0,
        };
        assert_eq!(s.word(), "model");
    }

    #[test]
    fn metrics_are_derived_from_totals() {
        let t = Totals {
            clicks: 200,
            approved: 3,
            pending: 1,
            revenue_micros: 30_000_000,
            cost_micros: 20_000_000,
            ..Totals::default()
        };
        let m: HashMap<_, _> = t.metrics().into_iter().map(|(k, v, _)| (k, v)).collect();
        assert_eq!(m["conversions"], json!(4));
        assert_eq!(m["cr"], json!(2.0));
        assert_eq!(m["profit"], json!(format_micros(10_000_000)));
        assert_eq!(m["roi"], json!(50.0));
        assert_eq!(m["epc"], json!(format_micros(150_000)));
        assert_eq!(m["unique_clicks"], Value::Null);
        let names: Vec<_> = t.metrics().iter().map(|(name, _, _)| *name).collect();
        assert_eq!(names, METRICS);
    }

    #[test]
    fn both_sides_join_by_key_and_sum_into_the_totals() {
        let key = |k: &str| vec![k.to_string()];
        let clicks = vec![
            ClickAgg {
                keys: key("1"),
                clicks: 10,
                lander_views: 6,
                lander_clicks: 3,
                offer_clicks: 5,
                bots: 1,
                unique_clicks: 7,
            },
            ClickAgg {
                keys: key("2"),
                clicks: 4,
                lander_views: 0,
                lander_clicks: 0,
                offer_clicks: 4,
                bots: 0,
                unique_clicks: 4,
            },
        ];
        let conversions = vec![ConversionAgg {
            keys: key("1"),
            day: "2026-03-02".into(),
            currency: "USD".into(),
            approved: 2,
            pending: 1,
            rejected: 1,
            revenue_micros: 8_000_000,
        }];
        let costs = vec![CostAgg {
            keys: key("1"),
            day: "2026-03-02".into(),
            currency: String::new(),
            cost_micros: 5_000_000,
            source: super::super::query::COST_LINK,
            clicks: 10,
        }];
        let sides = Sides {
            clicks,
            conversions,
            costs,
            impressions: vec![super::super::query::ImpressionAgg {
                keys: key("1"),
                impressions: 40,
            }],
            payouts: Vec::new(),
        };
        let groups = groups(sides, true, &Rates::new("USD"));
        assert_eq!(groups[&key("1")].impressions, 40);
        let metrics = groups[&key("1")].metrics();
        let ctr = metrics.iter().find(|m| m.0 == "ctr").map(|m| m.2);
        assert_eq!(ctr, Some(25.0), "10 clicks of 40 impressions");
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[&key("1")].approved, 2);
        assert_eq!(groups[&key("1")].clicks, 10);
        assert_eq!(groups[&key("2")].approved, 0);

        let (rows, total) = rows(
            &groups,
            &["flow"],
            true,
            |id| format!("flow {id}"),
            &ObjectNames::default(),
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0["flow"], "1");
        assert_eq!(rows[0].0["flow_name"], "flow 1");
        assert_eq!(total.clicks, 14);
        assert_eq!(total.offer_clicks, 9);
        let m: HashMap<_, _> = rows[0].1.iter().map(|(k, v, _)| (*k, v.clone())).collect();
        assert_eq!(m["lander_ctr"], json!(50.0));
        assert_eq!(m["offer_cr"], json!(60.0));
        assert_eq!(total.unique_clicks, 11);
        assert_eq!(total.revenue_micros, 8_000_000);
        assert_eq!(total.cost_micros, 5_000_000);
        assert_eq!(m["cost_source"], json!("link"));
        assert_eq!(m["cpc"], json!("0.5"));
        assert_eq!(m["cpa"], json!("1.666667"));
        assert!(total.with_uniques);
    }

    #[test]
    fn revenue_is_converted_by_day_and_currency_and_never_summed_without_a_rate() {
        let mut rates = Rates::new("USD");
        rates.insert("2026-03-02", "EUR", "USD", 1.25);
        rates.insert("2026-03-02", "EUR", "JPY", 187.5);
        let row = |day: &str, currency: &str, approved: i64, revenue_micros: i64| ConversionAgg {
            keys: vec!["1".into()],
            day: day.into(),
            currency: currency.into(),
            approved,
            pending: 0,
            rejected: 0,
            revenue_micros,
        };
        let conversions = vec![
            row("2026-03-02", "USD", 1, 7_000_000),
            row("2026-03-02", "EUR", 2, 10_000_000),
            row("2026-03-03", "JPY", 1, 1_500_000_000),
            row("2026-03-02", "GBP", 3, 9_000_000),
            row("2026-03-01", "EUR", 1, 4_000_000),
        ];
        let cost = |day: &str, currency: &str, cost_micros: i64| CostAgg {
            keys: vec!["1".into()],
            day: day.into(),
            currency: currency.into(),
            cost_micros,
            source: super::super::query::COST_MODEL,
            clicks: 1,
        };
        let costs = vec![
            cost("2026-03-02", "", 1_000_000),
            cost("2026-03-02", "EUR", 2_000_000),
            cost("2026-03-02", "GBP", 3_000_000),
        ];
        let sides = Sides {
            clicks: Vec::new(),
            conversions,
            costs,
            impressions: Vec::new(),
            payouts: Vec::new(),
        };
        let groups = groups(sides, false, &rates);
        let (_, total) = rows(
            &groups,
            &["flow"],
            false,
            |_| String::new(),
            &ObjectNames::default(),
        );
        assert_eq!(total.revenue_micros, 7_000_000 + 12_500_000 + 10_000_000);
        assert_eq!(total.cost_micros, 1_000_000 + 2_500_000);
        assert_eq!(
            total.cost_without_rate_json(),
            json!([{"currency": "GBP", "cost": "3"}])
        );
        // A cost update that replaced a currency's cost leaves nothing of it to list.
        let mut replaced = total.clone();
        replaced.cost_without_rate.insert("EUR".into(), 0);
        assert_eq!(
            replaced.cost_without_rate_json(),
            json!([{"currency": "GBP", "cost": "3"}])
        );
        assert_eq!(total.approved, 8);
        let mut expected = WithoutRate::default();
        expected.add("GBP", 3, 9_000_000);
        expected.add("EUR", 1, 4_000_000);
        assert_eq!(total.without_rate, expected);
        let m: HashMap<_, _> = total
            .metrics()
            .into_iter()
            .map(|(k, v, _)| (k, v))
            .collect();
        assert_eq!(m["without_rate"], json!(4));
        assert_eq!(m["revenue"], json!("29.5"));
        assert_eq!(m["profit"], json!("26"));
    }
}

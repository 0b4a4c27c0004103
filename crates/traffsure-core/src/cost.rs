//! What traffic cost (docs/costs.md): cost models as the API takes them and their checks,
//! the cost of one click or one conversion version under a model, profit, the ranges of
//! cost updates, and how an update's amount is spread over its clicks. The edges and
//! attribution apply the model current when an event happens; reporting-api stores and
//! reads the updates.

use serde::{Deserialize, Serialize};
use traffsure_events::{ConversionStatus, CostModel, CostModelKind, CostSource};

use crate::flow::validate::{currency_from, invalid, FlowError};
use crate::money::{format_micros, parse_micros};
use crate::vocab::Vocabulary;

/// The words of the cost model kinds, as the API and the panel use them.
pub const KINDS: &[(CostModelKind, &str)] = &[
    (CostModelKind::Auto, "auto"),
    (CostModelKind::Cpc, "cpc"),
    (CostModelKind::Cpm, "cpm"),
    (CostModelKind::Cpa, "cpa"),
    (CostModelKind::Revshare, "revshare"),
];

/// The word of a model kind (`auto`, `cpc`, …).
pub fn kind_word(kind: CostModelKind) -> &'static str {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, w)| *w)
        .unwrap_or("auto")
}

/// The word of a click's cost source: `link`, `model`, or empty when unknown.
pub fn source_word(source: CostSource) -> &'static str {
    match source {
        CostSource::Link => "link",
        CostSource::Model => "model",
        CostSource::Unspecified => "",
    }
}

/// A cost model as the API takes and shows it: `{"kind": "cpc", "amount": "0.05",
/// "currency": "USD"}`, `{"kind": "revshare", "percent": "30"}`, `{"kind": "cpa",
/// "amount": "12", "status": "approved"}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostModelSpec {
    pub kind: String,
    /// cpc, cpm, cpa: decimal text or a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<serde_json::Value>,
    /// cpc, cpm, cpa: the amount's currency (USD when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// revshare: percent of the conversion's revenue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<serde_json::Value>,
    /// cpa, revshare: the status that costs (approved when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// cpm: what the amount is paid per thousand of, `visit` (when absent) or
    /// `impression`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<String>,
}

/// `CostModel.per` of a cpm model paid per thousand impressions.
pub const PER_IMPRESSION: &str = "impression";

/// Whether `model` is a cpm model paid per thousand impressions (its visits cost nothing
/// under it).
pub fn per_impression(model: &CostModel) -> bool {
    model.kind() == CostModelKind::Cpm && model.per == PER_IMPRESSION
}

fn decimal(field: &str, value: &Option<serde_json::Value>) -> Result<Option<i64>, FlowError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => parse_micros(s.trim())
            .map(Some)
            .map_err(|e| invalid(field, e.to_string())),
        Some(serde_json::Value::Number(n)) => parse_micros(&n.to_string())
            .map(Some)
            .map_err(|e| invalid(field, e.to_string())),
        Some(_) => Err(invalid(field, "must be a decimal number")),
    }
}

impl CostModelSpec {
    /// The checked model; `at` names it in errors (`cost_model`). `auto` takes no values.
    pub fn to_model(&self, at: &str) -> Result<CostModel, FlowError> {
        let field = |name: &str| format!("{at}.{name}");
        let word = self.kind.trim().to_ascii_lowercase();
        let Some((kind, _)) = KINDS.iter().find(|(_, w)| *w == word) else {
            let words: Vec<_> = KINDS.iter().map(|(_, w)| *w).collect();
            return Err(invalid(
                field("kind"),
                format!("must be one of {}", words.join(", ")),
            ));
        };
        let mut model = CostModel {
            kind: *kind as i32,
            ..CostModel::default()
        };
        let amount = decimal(&field("amount"), &self.amount)?;
        let percent = decimal(&field("percent"), &self.percent)?;
        if let Some(per) = &self.per {
            if *kind != CostModelKind::Cpm {
                return Err(invalid(field("per"), "only cpm takes per"));
            }
            match per.trim().to_ascii_lowercase().as_str() {
                "visit" => {}
                PER_IMPRESSION => model.per = PER_IMPRESSION.into(),
                _ => return Err(invalid(field("per"), "must be visit or impression")),
            }
        }
        match kind {
            CostModelKind::Auto => {
                if amount.is_some() || percent.is_some() {
                    return Err(invalid(
                        field("kind"),
                        "auto takes the tracking link's cost and no amount or percent",
                    ));
                }
                return Ok(model);
            }
            CostModelKind::Cpc | CostModelKind::Cpm | CostModelKind::Cpa => {
                let amount = amount.ok_or_else(|| invalid(field("amount"), "is required"))?;
                if amount <= 0 {
                    return Err(invalid(field("amount"), "must be greater than 0"));
                }
                // A visit's share of a CPM amount is exact in micros.
                if *kind == CostModelKind::Cpm && amount % 1000 != 0 {
                    return Err(invalid(
                        field("amount"),
                        "a cpm amount has at most 3 decimals, so each visit costs a whole micro",
                    ));
                }
                if percent.is_some() {
                    return Err(invalid(field("percent"), "only revshare takes a percent"));
                }
                model.amount_micros = amount;
                model.currency = currency_from(&field("currency"), self.currency.as_deref())?;
            }
            CostModelKind::Revshare => {
                let percent = percent.ok_or_else(|| invalid(field("percent"), "is required"))?;
                if percent <= 0 || percent > 100_000_000 {
                    return Err(invalid(
                        field("percent"),
                        "must be greater than 0 and at most 100",
                    ));
                }
                if amount.is_some() || self.currency.is_some() {
                    return Err(invalid(
                        field("amount"),
                        "revshare takes a percent of the revenue, in the revenue's currency",
                    ));
                }
                model.percent_micros = percent;
            }
        }
        if matches!(kind, CostModelKind::Cpa | CostModelKind::Revshare) {
            let status = self
                .status
                .as_deref()
                .unwrap_or("approved")
                .trim()
                .to_ascii_lowercase();
            if ConversionStatus::from_word(&status).is_none() {
                return Err(invalid(
                    field("status"),
                    format!("must be {}", ConversionStatus::words().join(", ")),
                ));
            }
            model.status = status;
        } else if self.status.is_some() {
            return Err(invalid(
                field("status"),
                "only cpa and revshare take a status",
            ));
        }
        Ok(model)
    }

    /// The spec of a stored model, as the API shows it (it can be submitted back).
    pub fn of(model: &CostModel) -> Self {
        let kind = model.kind();
        let mut spec = Self {
            kind: kind_word(kind).into(),
            ..Self::default()
        };
        match kind {
            CostModelKind::Auto => {}
            CostModelKind::Cpc | CostModelKind::Cpm | CostModelKind::Cpa => {
                spec.amount = Some(format_micros(model.amount_micros).into());
                spec.currency = Some(model.currency.clone());
            }
            CostModelKind::Revshare => {
                spec.percent = Some(format_micros(model.percent_micros).into());
            }
        }
        if !model.status.is_empty() {
            spec.status = Some(model.status.clone());
        }
        if per_impression(model) {
            spec.per = Some(PER_IMPRESSION.into());
        }
        spec
    }
}

/// The cost of one visit: under cpc the amount, under cpm a thousandth of it (from the
/// model, whatever the link sent); under cpa, revshare and cpm per impression nothing
/// (their cost goes on conversions or impressions); under auto, or without a model, the
/// link's own cost.
pub fn click_cost<'a>(
    model: Option<&'a CostModel>,
    link_micros: i64,
    link_currency: &'a str,
) -> (i64, &'a str, CostSource) {
    let link = || {
        let source = if link_micros != 0 {
            CostSource::Link
        } else {
            CostSource::Unspecified
        };
        (link_micros, link_currency, source)
    };
    let Some(model) = model else { return link() };
    match model.kind() {
        CostModelKind::Auto => link(),
        CostModelKind::Cpc => (model.amount_micros, &model.currency, CostSource::Model),
        CostModelKind::Cpm if per_impression(model) => (0, "", CostSource::Model),
        CostModelKind::Cpm => (
            model.amount_micros / 1000,
            &model.currency,
            CostSource::Model,
        ),
        CostModelKind::Cpa | CostModelKind::Revshare => (0, "", CostSource::Model),
    }
}

/// The cost of one impression (`GET /i/{flow}`): the pixel's own `cost` parameter when
/// sent (as under auto); otherwise, under a cpm model per impression, a thousandth of its
/// amount; otherwise nothing.
pub fn impression_cost<'a>(
    model: Option<&'a CostModel>,
    link_micros: i64,
    link_currency: &'a str,
) -> (i64, &'a str, CostSource) {
    if link_micros != 0 {
        return (link_micros, link_currency, CostSource::Link);
    }
    match model {
        Some(model) if per_impression(model) => (
            model.amount_micros / 1000,
            &model.currency,
            CostSource::Model,
        ),
        _ => (0, link_currency, CostSource::Unspecified),
    }
}

/// The cost of a conversion version of `status` and `revenue_micros` (in
/// `revenue_currency`) under the model current now, given the previous version's cost
/// (`previous`: amount and currency; zero for a new conversion). `None` keeps the previous
/// cost: the model is not a conversion model (a change of model never moves cost recorded
/// before it), or its currency differs from the one the conversion's cost is already in.
pub fn conversion_cost(
    model: Option<&CostModel>,
    status: ConversionStatus,
    revenue_micros: i64,
    revenue_currency: &str,
    previous: (i64, &str),
) -> Option<(i64, String)> {
    let model = model?;
    let costs = status.word() == model.status;
    let (amount, currency) = match model.kind() {
        CostModelKind::Cpa => (
            if costs { model.amount_micros } else { 0 },
            model.currency.as_str(),
        ),
        CostModelKind::Revshare => (
            if costs {
                (i128::from(revenue_micros) * i128::from(model.percent_micros) / 100_000_000) as i64
            } else {
                0
            },
            revenue_currency,
        ),
        _ => return None,
    };
    let (previous_micros, previous_currency) = previous;
    if previous_micros != 0 && previous_currency != currency {
        return None;
    }
    Some((amount, currency.to_string()))
}

/// Profit: revenue less cost. Where a conversion carries a payout to an affiliate, that
/// payout is subtracted as well; this is the one place that decides it.
pub fn profit(revenue_micros: i64, cost_micros: i64) -> i64 {
    revenue_micros - cost_micros
}

/// Spreads `amount` over cells of `counts` clicks out of `total` clicks: each cell gets
/// `amount × (clicks up to and including it) / total`, rounded down, less what the cells
/// before it got. When the cells hold all `total` clicks they sum to `amount` exactly;
/// otherwise to `amount × their clicks / total`, rounded down. With `total` 0 nothing is
/// spread.
pub fn spread(amount: i64, counts: &[u64], total: u64) -> Vec<i64> {
    if total == 0 {
        return vec![0; counts.len()];
    }
    let mut seen: u64 = 0;
    let mut given: i64 = 0;
    counts
        .iter()
        .map(|n| {
            seen += n;
            let upto = (i128::from(amount) * i128::from(seen) / i128::from(total)) as i64;
            let share = upto - given;
            given = upto;
            share
        })
        .collect()
}

/// A cost update's range bound: `YYYY-MM-DD HH:00:00` (or `YYYY-MM-DDTHH:00:00Z`, or a
/// date for its midnight), UTC, on a whole hour, as Unix seconds. `field` names it.
pub fn hour_bound(field: &str, text: &str) -> Result<i64, FlowError> {
    let text = text.trim();
    let text = text.strip_suffix('Z').unwrap_or(text).replacen('T', " ", 1);
    let full = if text.len() == 10 {
        format!("{text} 00:00:00")
    } else {
        text
    };
    let civil: jiff::civil::DateTime = full.parse().map_err(|_| {
        invalid(
            field,
            "must be a UTC time as YYYY-MM-DD HH:00:00 (or a date)",
        )
    })?;
    if civil.minute() != 0 || civil.second() != 0 || civil.subsec_nanosecond() != 0 {
        return Err(invalid(
            field,
            "must be on a whole hour (HH:00:00): updates cover whole hours",
        ));
    }
    let ts = civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map_err(|e| invalid(field, e.to_string()))?;
    Ok(ts.timestamp().as_second())
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS`, UTC.
pub fn format_utc(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// A sub filter of a cost update: `sub_id`, `source` or `sub1`…`sub10`.
pub fn is_sub_filter(name: &str) -> bool {
    matches!(name, "sub_id" | "source")
        || name
            .strip_prefix("sub")
            .and_then(|n| n.parse::<u8>().ok())
            .is_some_and(|n| (1..=10).contains(&n) && name.len() <= 5 && !name.starts_with("sub0"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn model(json: serde_json::Value) -> Result<CostModel, FlowError> {
        serde_json::from_value::<CostModelSpec>(json)
            .unwrap()
            .to_model("cost_model")
    }

    #[test]
    fn models_are_checked_and_shown_back() {
        let cpc =
            model(serde_json::json!({"kind": "CPC", "amount": "0.05", "currency": "eur"})).unwrap();
        assert_eq!(
            (cpc.kind(), cpc.amount_micros, cpc.currency.as_str()),
            (CostModelKind::Cpc, 50_000, "EUR")
        );
        let rs = model(serde_json::json!({"kind": "revshare", "percent": 30})).unwrap();
        assert_eq!(
            (rs.percent_micros, rs.status.as_str()),
            (30_000_000, "approved")
        );
        let cpa =
            model(serde_json::json!({"kind": "cpa", "amount": 12, "status": "pending"})).unwrap();
        assert_eq!(
            (
                cpa.amount_micros,
                cpa.currency.as_str(),
                cpa.status.as_str()
            ),
            (12_000_000, "USD", "pending")
        );
        for m in [&cpc, &rs, &cpa] {
            let back = serde_json::to_value(CostModelSpec::of(m)).unwrap();
            assert_eq!(&model(back).unwrap(), m);
        }
        let bad = |json: serde_json::Value| model(json).unwrap_err().field;
        assert_eq!(bad(serde_json::json!({"kind": "cpx"})), "cost_model.kind");
        assert_eq!(bad(serde_json::json!({"kind": "cpc"})), "cost_model.amount");
        assert_eq!(
            bad(serde_json::json!({"kind": "cpc", "amount": "-1"})),
            "cost_model.amount"
        );
        assert_eq!(
            bad(serde_json::json!({"kind": "cpm", "amount": "2.0005"})),
            "cost_model.amount"
        );
        assert_eq!(
            bad(serde_json::json!({"kind": "cpc", "amount": "1", "currency": "dollars"})),
            "cost_model.currency"
        );
        assert_eq!(
            bad(serde_json::json!({"kind": "revshare", "percent": "101"})),
            "cost_model.percent"
        );
        assert_eq!(
            bad(serde_json::json!({"kind": "cpa", "amount": "1", "status": "paid"})),
            "cost_model.status"
        );
        assert_eq!(
            bad(serde_json::json!({"kind": "auto", "amount": "1"})),
            "cost_model.kind"
        );
    }

    #[test]
    fn clicks_cost_by_the_model_or_the_link() {
        assert_eq!(click_cost(None, 7, "EUR"), (7, "EUR", CostSource::Link));
        assert_eq!(click_cost(None, 0, ""), (0, "", CostSource::Unspecified));
        let cpm = model(serde_json::json!({"kind": "cpm", "amount": "2.5"})).unwrap();
        assert_eq!(
            click_cost(Some(&cpm), 7, "EUR"),
            (2_500, "USD", CostSource::Model)
        );
        let cpc = model(serde_json::json!({"kind": "cpc", "amount": "0.1"})).unwrap();
        assert_eq!(
            click_cost(Some(&cpc), 0, ""),
            (100_000, "USD", CostSource::Model)
        );
        let auto = model(serde_json::json!({"kind": "auto"})).unwrap();
        assert_eq!(click_cost(Some(&auto), 3, ""), (3, "", CostSource::Link));
        let cpa = model(serde_json::json!({"kind": "cpa", "amount": "1"})).unwrap();
        assert_eq!(click_cost(Some(&cpa), 3, ""), (0, "", CostSource::Model));
    }

    #[test]
    fn cpm_per_impression_costs_impressions_and_not_visits() {
        let per_impression = model(
            serde_json::json!({"kind": "cpm", "amount": "2.5", "currency": "eur", "per": "Impression"}),
        )
        .unwrap();
        assert_eq!(per_impression.per, PER_IMPRESSION);
        let back = serde_json::to_value(CostModelSpec::of(&per_impression)).unwrap();
        assert_eq!(back["per"], "impression");
        assert_eq!(model(back).unwrap(), per_impression);
        // Per visit is the default, stored as no `per` and shown without one.
        let per_visit =
            model(serde_json::json!({"kind": "cpm", "amount": "2.5", "per": "visit"})).unwrap();
        assert_eq!(per_visit.per, "");
        assert_eq!(
            serde_json::to_value(CostModelSpec::of(&per_visit)).unwrap()["per"],
            serde_json::Value::Null
        );
        // An impression costs a thousandth of the amount, unless the pixel sent a cost.
        assert_eq!(
            impression_cost(Some(&per_impression), 0, ""),
            (2_500, "EUR", CostSource::Model)
        );
        assert_eq!(
            impression_cost(Some(&per_impression), 7, "USD"),
            (7, "USD", CostSource::Link)
        );
        assert_eq!(
            impression_cost(Some(&per_visit), 0, ""),
            (0, "", CostSource::Unspecified)
        );
        assert_eq!(
            impression_cost(None, 9, "GBP"),
            (9, "GBP", CostSource::Link)
        );
        // Its visits cost nothing under the model, whatever the link sent.
        assert_eq!(
            click_cost(Some(&per_impression), 7, "USD"),
            (0, "", CostSource::Model)
        );
        assert_eq!(
            click_cost(Some(&per_visit), 7, "USD"),
            (2_500, "USD", CostSource::Model)
        );
        let bad = |json: serde_json::Value| model(json).unwrap_err().field;
        for kind in ["cpc", "cpa", "revshare", "auto"] {
            let mut json = serde_json::json!({"kind": kind, "per": "impression"});
            if kind == "revshare" {
                json["percent"] = "10".into();
            } else if kind != "auto" {
                json["amount"] = "1".into();
            }
            assert_eq!(bad(json), "cost_model.per", "{kind}");
        }
        assert_eq!(
            bad(serde_json::json!({"kind": "cpm", "amount": "1", "per": "click"})),
            "cost_model.per"
        );
    }

    #[test]
    fn conversions_cost_by_their_status_and_keep_their_cost_otherwise() {
        let cpa =
            model(serde_json::json!({"kind": "cpa", "amount": "4", "currency": "EUR"})).unwrap();
        let approved = ConversionStatus::Approved;
        assert_eq!(
            conversion_cost(Some(&cpa), approved, 0, "USD", (0, "")),
            Some((4_000_000, "EUR".into()))
        );
        assert_eq!(
            conversion_cost(
                Some(&cpa),
                ConversionStatus::Rejected,
                0,
                "USD",
                (4_000_000, "EUR")
            ),
            Some((0, "EUR".into()))
        );
        let rs = model(serde_json::json!({"kind": "revshare", "percent": "12.5"})).unwrap();
        assert_eq!(
            conversion_cost(Some(&rs), approved, 8_000_000, "GBP", (0, "")),
            Some((1_000_000, "GBP".into()))
        );
        // Another currency than the cost already recorded, or no conversion model: kept.
        assert_eq!(
            conversion_cost(Some(&rs), approved, 8_000_000, "GBP", (4_000_000, "EUR")),
            None
        );
        let cpc = model(serde_json::json!({"kind": "cpc", "amount": "1"})).unwrap();
        assert_eq!(
            conversion_cost(Some(&cpc), approved, 1, "USD", (0, "")),
            None
        );
        assert_eq!(conversion_cost(None, approved, 1, "USD", (0, "")), None);
    }

    #[test]
    fn spreading_sums_exactly() {
        assert_eq!(spread(100, &[1, 1, 1], 3), vec![33, 33, 34]);
        assert_eq!(spread(100, &[1, 1, 1], 3).iter().sum::<i64>(), 100);
        assert_eq!(
            spread(10_000_000, &[2, 5], 7).iter().sum::<i64>(),
            10_000_000
        );
        assert_eq!(spread(100, &[1], 3), vec![33]);
        assert_eq!(spread(100, &[0, 0], 0), vec![0, 0]);
        assert_eq!(profit(10, 4), 6);
    }

    #[test]
    fn update_bounds_are_whole_utc_hours() {
        assert_eq!(hour_bound("from", "1970-01-01 01:00:00").unwrap(), 3600);
        assert_eq!(hour_bound("from", "1970-01-02").unwrap(), 86_400);
        assert_eq!(format_utc(86_400 + 3600), "1970-01-02 01:00:00");
        assert_eq!(hour_bound("from", "1970-01-01T02:00:00Z").unwrap(), 7200);
        assert_eq!(
            hour_bound("to", "1970-01-01 01:30:00").unwrap_err().field,
            "to"
        );
        assert_eq!(hour_bound("to", "yesterday").unwrap_err().field, "to");
        assert!(is_sub_filter("sub10") && is_sub_filter("sub_id") && is_sub_filter("source"));
        assert!(!is_sub_filter("sub11") && !is_sub_filter("sub0") && !is_sub_filter("country"));
    }
}

//! The spec of each kind of object: its fields as the API takes them, and their checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use traffsure_events::{ConversionStatus, Goal, ObjectKind, OutboundPostback};

use super::{ObjectError, ObjectSpec, Reference};
use crate::flow::validate::{
    currency_from, goals_from, invalid, is_key, payout_from, status_map_from, validate_url_template,
};
use crate::flow::{
    GoalSpec, OutboundSpec, DESTINATION_MACROS, OUTBOUND_MACROS, SOURCE_POSTBACK_PREFIX,
};
use crate::money::format_micros;
use crate::templates::{
    self, fill_placeholders, is_tracking_parameter, ordered_pairs, placeholder_names, url_breaking,
    TemplateError,
};
use crate::vocab::Vocabulary;

/// Most offer links one lander page may have (`/lp/click/1` … `/lp/click/20`).
pub const MAX_LANDER_OFFERS: u32 = 20;

/// Most tracking-link parameters a source fills.
const MAX_PARAMETERS: usize = 20;

/// A traffic source: which tracking-link parameters it fills with which of its own macros,
/// and the postback that reports conversions of its traffic back to it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSourceSpec {
    pub name: String,
    /// Tracking-link parameter → the source's macro (`"sub1": "{zoneid}"`), in link order.
    #[serde(default, with = "ordered_pairs")]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub parameters: Vec<(String, String)>,
    /// The source's postback URL: TraffSure's outbound macros (`{external_id}`,
    /// `{payout}`) and `{{name}}` placeholders filled from `placeholders`; none = no
    /// postback to the source.
    #[serde(default)]
    pub postback_url: Option<String>,
    /// Goals that fire the postback; empty = every goal.
    #[serde(default)]
    pub postback_goals: Vec<String>,
    /// approved (default), pending, rejected or any.
    #[serde(default = "approved")]
    pub postback_on_status: String,
    /// The values of the postback URL's `{{name}}` placeholders (account tokens, goal ids).
    #[serde(default)]
    pub placeholders: BTreeMap<String, String>,
    /// The catalogue template the source was made from.
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub notes: String,
    /// Outbound postbacks every flow of this source fires (docs/postbacks.md#scopes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound_postbacks: Vec<OutboundSpec>,
    /// What the source's traffic costs (docs/costs.md); none = auto, the tracking link's
    /// cost. A flow's own model overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_model: Option<crate::cost::CostModelSpec>,
}

fn approved() -> String {
    ConversionStatus::Approved.word().into()
}

/// An affiliate network: where its offer links take TraffSure's click hash, and what its
/// conversion statuses mean.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AffiliateNetworkSpec {
    pub name: String,
    /// The offer-link parameter the network takes the click hash in (`aff_sub`, `s2`);
    /// empty = the offer URLs place `{click}` themselves.
    #[serde(default)]
    pub click_param: String,
    /// The network's status word → approved, pending or rejected.
    #[serde(default)]
    pub status_map: BTreeMap<String, String>,
    /// The catalogue template the network was made from (its postback URL format).
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub notes: String,
}

/// An offer: the advertiser's URL, its network and its payout.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferSpec {
    pub name: String,
    /// URL template with destination macros.
    pub url: String,
    /// The offer's affiliate network; none = 0 or absent.
    #[serde(default)]
    pub network_id: Option<u32>,
    /// Fixed payout as decimal text (`"12.50"`); null = from the postback or the goal.
    #[serde(default)]
    pub payout: Option<serde_json::Value>,
    #[serde(default = "usd")]
    pub currency: String,
    /// The offer's goals, each with its own payout: a postback without revenue for one of
    /// these keys takes its payout before the offer's fixed one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub goals: Vec<GoalSpec>,
    /// Caps (docs/caps.md): at most so many clicks or conversions per period, across every
    /// flow that uses the offer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<crate::caps::CapSpec>,
    /// IANA time zone the caps' periods are read in; empty = UTC.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time_zone: String,
    /// Outbound postbacks of over-cap conversions: `send`, `hold` or `suppress`; empty =
    /// the flow's setting.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub over_cap_postbacks: String,
    #[serde(default)]
    pub notes: String,
    /// Outbound postbacks fired for conversions of this offer, in every flow whose paths
    /// have it (docs/postbacks.md#scopes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound_postbacks: Vec<OutboundSpec>,
}

fn usd() -> String {
    "USD".into()
}

/// A lander: a page in front of the offers, linking to them through `/lp/click`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanderSpec {
    pub name: String,
    /// URL template with destination macros.
    pub url: String,
    /// How many offer links the page has (`/lp/click/1` … `/lp/click/N`).
    #[serde(default = "one")]
    pub offers: u32,
    #[serde(default)]
    pub notes: String,
}

fn one() -> u32 {
    1
}

fn checked_name(name: &str) -> Result<String, ObjectError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(invalid("name", "must be 1 to 200 characters"));
    }
    Ok(name.to_string())
}

fn checked_notes(notes: &str) -> Result<String, ObjectError> {
    if notes.chars().count() > 4000 {
        return Err(invalid("notes", "must be at most 4000 characters"));
    }
    Ok(notes.trim().to_string())
}

impl TrafficSourceSpec {
    /// The postback URL with the placeholders filled in; `None` without one.
    pub fn filled_postback_url(&self) -> Result<Option<String>, ObjectError> {
        let Some(template) = self
            .postback_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
        else {
            return Ok(None);
        };
        fill_placeholders(template.trim(), &self.placeholders)
            .map(Some)
            .map_err(|e| match e {
                TemplateError::MissingPlaceholder(name) => invalid(
                    format!("placeholders.{name}"),
                    format!("needs a value: the postback URL uses {{{{{name}}}}}"),
                ),
                other => invalid("postback_url", other.to_string()),
            })
    }

    /// The outbound postback fired for conversions of the source's traffic, with id
    /// `source-<id>`; `None` without a postback URL.
    pub fn postback(&self, id: u32) -> Result<Option<OutboundPostback>, ObjectError> {
        Ok(self.filled_postback_url()?.map(|url| OutboundPostback {
            id: format!("{SOURCE_POSTBACK_PREFIX}{id}"),
            url,
            method: "GET".into(),
            goals: self.postback_goals.clone(),
            on_status: self.postback_on_status.clone(),
            enabled: true,
            ..OutboundPostback::default()
        }))
    }

    /// The source's cost model; none = auto.
    pub fn cost_model(&self) -> Result<Option<traffsure_events::CostModel>, ObjectError> {
        self.cost_model
            .as_ref()
            .map(|m| m.to_model("cost_model"))
            .transpose()
    }

    /// The tracking link's query with the source's macros: `sub1={zoneid}&cost={cost}`.
    pub fn tracking_query(&self) -> String {
        templates::tracking_query(&self.parameters)
    }
}

impl ObjectSpec for TrafficSourceSpec {
    const KIND: ObjectKind = ObjectKind::TrafficSource;

    fn name(&self) -> &str {
        &self.name
    }

    fn checked(&self) -> Result<Self, ObjectError> {
        if self.parameters.len() > MAX_PARAMETERS {
            return Err(invalid(
                "parameters",
                format!("at most {MAX_PARAMETERS} parameters"),
            ));
        }
        let mut parameters = Vec::with_capacity(self.parameters.len());
        for (param, source_macro) in &self.parameters {
            let param = param.trim();
            let source_macro = source_macro.trim();
            if !is_tracking_parameter(param) {
                return Err(invalid(
                    format!("parameters.{param}"),
                    "is not a tracking parameter (sub1 to sub10, sub_id, source, cost, cost_currency, external_id)",
                ));
            }
            if source_macro.is_empty()
                || source_macro.len() > 200
                || source_macro.contains(url_breaking)
            {
                return Err(invalid(
                    format!("parameters.{param}"),
                    "must be the source's macro, 1 to 200 characters without spaces, &, #, = or ?",
                ));
            }
            parameters.push((param.to_string(), source_macro.to_string()));
        }
        let postback_url = self
            .postback_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(String::from);
        let mut placeholders = BTreeMap::new();
        for (name, value) in &self.placeholders {
            let value = value.trim();
            if value.is_empty() || value.len() > 500 {
                return Err(invalid(
                    format!("placeholders.{name}"),
                    "must be 1 to 500 characters",
                ));
            }
            let used = postback_url
                .as_deref()
                .is_some_and(|url| placeholder_names(url).contains(&name.as_str()));
            if !used {
                return Err(invalid(
                    format!("placeholders.{name}"),
                    "is not a {{placeholder}} of the postback URL",
                ));
            }
            placeholders.insert(name.clone(), value.to_string());
        }
        let mut postback_goals = Vec::with_capacity(self.postback_goals.len());
        for goal in &self.postback_goals {
            let goal = goal.trim().to_ascii_lowercase();
            if !is_key(&goal, 64) {
                return Err(invalid(
                    "postback_goals",
                    format!("{goal:?} is not a goal key (1 to 64 of a-z, 0-9, - and _)"),
                ));
            }
            postback_goals.push(goal);
        }
        let postback_on_status = self.postback_on_status.trim().to_ascii_lowercase();
        if postback_on_status != "any" && ConversionStatus::from_word(&postback_on_status).is_none()
        {
            return Err(invalid(
                "postback_on_status",
                format!("must be {} or any", ConversionStatus::words().join(", ")),
            ));
        }
        let template = checked_template(&self.template, |id| {
            templates::catalogue().is_ok_and(|c| c.traffic_source(id).is_some())
        })?;
        let spec = Self {
            name: checked_name(&self.name)?,
            parameters,
            postback_url,
            postback_goals,
            postback_on_status,
            placeholders,
            template,
            notes: checked_notes(&self.notes)?,
            outbound_postbacks: checked_scoped(&self.outbound_postbacks)?,
            cost_model: match &self.cost_model {
                None => None,
                Some(model) => Some(crate::cost::CostModelSpec::of(
                    &model.to_model("cost_model")?,
                )),
            },
        };
        if let Some(filled) = spec.filled_postback_url()? {
            validate_url_template("postback_url", &filled, OUTBOUND_MACROS)?;
        }
        Ok(spec)
    }
}

/// A source's or an offer's outbound postbacks, checked and normalised (no secret
/// headers: the object's view shows its spec as stored).
fn checked_scoped(specs: &[OutboundSpec]) -> Result<Vec<OutboundSpec>, ObjectError> {
    Ok(super::scoped::outbound_specs(
        &super::scoped::checked_postbacks(specs, &[], false)?,
    ))
}

/// A template id that must be in the catalogue (`known`); none for absent or empty.
fn checked_template(
    template: &Option<String>,
    known: impl Fn(&str) -> bool,
) -> Result<Option<String>, ObjectError> {
    match template.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(id) if known(id) => Ok(Some(id.to_string())),
        Some(id) => Err(invalid(
            "template",
            format!("{id:?} is not a template of the catalogue"),
        )),
    }
}

impl ObjectSpec for AffiliateNetworkSpec {
    const KIND: ObjectKind = ObjectKind::AffiliateNetwork;

    fn name(&self) -> &str {
        &self.name
    }

    fn checked(&self) -> Result<Self, ObjectError> {
        let click_param = self.click_param.trim();
        if click_param.len() > 64
            || !click_param
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(invalid(
                "click_param",
                "must be at most 64 of a-z, A-Z, 0-9, _, - and .",
            ));
        }
        Ok(Self {
            name: checked_name(&self.name)?,
            click_param: click_param.to_string(),
            status_map: status_map_from(&self.status_map)?,
            template: checked_template(&self.template, |id| {
                templates::catalogue().is_ok_and(|c| c.affiliate_network(id).is_some())
            })?,
            notes: checked_notes(&self.notes)?,
        })
    }
}

impl OfferSpec {
    /// The fixed payout in micros; `None` = from the postback or the goal.
    pub fn payout_micros(&self) -> Result<Option<i64>, ObjectError> {
        payout_from("payout", &self.payout)
    }

    /// The offer's goals as a flow carries them; a goal without a currency is paid in the
    /// offer's. Duplicates are the flow's goal's business, so an offer's goal sets none.
    pub fn goals(&self) -> Result<Vec<Goal>, ObjectError> {
        if let Some(i) = self.goals.iter().position(|g| g.duplicate_policy.is_some()) {
            return Err(invalid(
                format!("goals[{i}].duplicate_policy"),
                "an offer's goal sets its payout only; duplicates follow the flow's goal",
            ));
        }
        let specs: Vec<GoalSpec> = self
            .goals
            .iter()
            .map(|g| GoalSpec {
                currency: g.currency.clone().or_else(|| Some(self.currency.clone())),
                ..g.clone()
            })
            .collect();
        goals_from(&specs)
    }
}

/// An IANA time zone name, trimmed; empty = UTC.
fn checked_time_zone(zone: &str) -> Result<String, ObjectError> {
    let zone = zone.trim();
    if crate::routing::zone(zone).is_none() {
        return Err(invalid(
            "time_zone",
            format!("{zone:?} is not an IANA time zone (Europe/Berlin)"),
        ));
    }
    Ok(zone.to_string())
}

impl ObjectSpec for OfferSpec {
    const KIND: ObjectKind = ObjectKind::Offer;

    fn name(&self) -> &str {
        &self.name
    }

    fn checked(&self) -> Result<Self, ObjectError> {
        let name = checked_name(&self.name)?;
        validate_url_template("url", &self.url, DESTINATION_MACROS)?;
        let payout = self
            .payout_micros()?
            .map(|micros| serde_json::Value::String(format_micros(micros)));
        Ok(Self {
            name,
            url: self.url.trim().to_string(),
            network_id: self.network_id.filter(|id| *id != 0),
            payout,
            currency: currency_from("currency", Some(&self.currency))?,
            goals: self
                .goals()?
                .into_iter()
                .map(|g| GoalSpec {
                    key: g.key,
                    name: Some(g.name),
                    payout: Some(serde_json::Value::String(format_micros(g.payout_micros))),
                    currency: Some(g.currency),
                    duplicate_policy: None,
                    affiliate_payout: g.has_affiliate_payout.then(|| {
                        serde_json::Value::String(format_micros(g.affiliate_payout_micros))
                    }),
                })
                .collect(),
            caps: crate::caps::caps_from("caps", &self.caps)?
                .iter()
                .map(crate::caps::CapSpec::of)
                .collect(),
            time_zone: checked_time_zone(&self.time_zone)?,
            over_cap_postbacks: crate::caps::over_cap_postbacks_from(
                "over_cap_postbacks",
                Some(&self.over_cap_postbacks),
                true,
            )?,
            notes: checked_notes(&self.notes)?,
            outbound_postbacks: checked_scoped(&self.outbound_postbacks)?,
        })
    }

    fn references(&self) -> Vec<Reference> {
        self.network_id
            .filter(|id| *id != 0)
            .map(|id| Reference::new("network_id", ObjectKind::AffiliateNetwork, id))
            .into_iter()
            .collect()
    }
}

impl ObjectSpec for LanderSpec {
    const KIND: ObjectKind = ObjectKind::Lander;

    fn name(&self) -> &str {
        &self.name
    }

    fn checked(&self) -> Result<Self, ObjectError> {
        let name = checked_name(&self.name)?;
        validate_url_template("url", &self.url, DESTINATION_MACROS)?;
        if !(1..=MAX_LANDER_OFFERS).contains(&self.offers) {
            return Err(invalid(
                "offers",
                format!("must be from 1 to {MAX_LANDER_OFFERS}"),
            ));
        }
        Ok(Self {
            name,
            url: self.url.trim().to_string(),
            offers: self.offers,
            notes: checked_notes(&self.notes)?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn checked<S: ObjectSpec>(json: serde_json::Value) -> Result<S, ObjectError> {
        serde_json::from_value::<S>(json).unwrap().checked()
    }

    #[test]
    fn a_source_fills_its_postback_placeholders() {
        // From text, as the API reads it: the parameters keep their order.
        let source: TrafficSourceSpec = serde_json::from_str::<TrafficSourceSpec>(
            r#"{"name": "Push A",
                "parameters": {"sub1": "{zoneid}", "cost": "{cost}", "external_id": "${SUBID}"},
                "postback_url": "https://push.test/pb?aid={{aid}}&click={external_id}&p={payout}",
                "placeholders": {"aid": "a b"}, "postback_goals": ["Sale"]}"#,
        )
        .unwrap()
        .checked()
        .unwrap();
        assert_eq!(
            source.tracking_query(),
            "sub1={zoneid}&cost={cost}&external_id=${SUBID}"
        );
        let postback = source.postback(7).unwrap().unwrap();
        assert_eq!(postback.id, "source-7");
        assert_eq!(
            postback.url,
            "https://push.test/pb?aid=a%20b&click={external_id}&p={payout}"
        );
        assert_eq!(postback.goals, ["sale"]);
        assert_eq!(postback.on_status, "approved");
        // No postback URL, no postback.
        let plain: TrafficSourceSpec = checked(serde_json::json!({"name": "Organic"})).unwrap();
        assert_eq!(plain.postback(1).unwrap(), None);
    }

    #[test]
    fn normalises_offers_landers_and_networks() {
        let offer: OfferSpec = checked(serde_json::json!({
            "name": "Offer", "url": " https://o.test/?c={click} ", "network_id": 2,
            "payout": 12.50, "currency": "eur"
        }))
        .unwrap();
        assert_eq!(offer.payout, Some(serde_json::json!("12.5")));
        assert_eq!(offer.currency, "EUR");
        assert_eq!(offer.url, "https://o.test/?c={click}");
        assert_eq!(offer.references()[0].id, 2);
        let none: OfferSpec = checked(
            serde_json::json!({"name": "O", "url": "https://o.test/", "network_id": 0, "payout": null}),
        )
        .unwrap();
        assert_eq!((none.network_id, &none.payout), (None, &None));
        // Goals: checked like a flow's, in the offer's currency unless they name one.
        let goals: OfferSpec = checked(serde_json::json!({
            "name": "G", "url": "https://o.test/", "currency": "eur",
            "goals": [{"key": " Lead ", "payout": "1.5"}, {"key": "sale", "name": "Sale", "payout": 30, "currency": "usd"}]
        }))
        .unwrap();
        let carried = goals.goals().unwrap();
        assert_eq!(
            carried
                .iter()
                .map(|g| (
                    g.key.as_str(),
                    g.name.as_str(),
                    g.payout_micros,
                    g.currency.as_str()
                ))
                .collect::<Vec<_>>(),
            [
                ("lead", "lead", 1_500_000, "EUR"),
                ("sale", "Sale", 30_000_000, "USD")
            ]
        );
        assert_eq!(goals.goals[0].payout, Some(serde_json::json!("1.5")));
        for (goals, field) in [
            (serde_json::json!([{"key": "a"}, {"key": "A"}]), "goals"),
            (
                serde_json::json!([{"key": "a", "payout": "x"}]),
                "goals[0].payout",
            ),
            (serde_json::json!([{"key": "a b"}]), "goals[0].key"),
            (
                serde_json::json!([{"key": "a", "duplicate_policy": "allow"}]),
                "goals[0].duplicate_policy",
            ),
        ] {
            let spec: OfferSpec = serde_json::from_value(
                serde_json::json!({"name": "G", "url": "https://o.test/", "goals": goals}),
            )
            .unwrap();
            assert_eq!(spec.checked().unwrap_err().field, field);
        }
        assert!(none.references().is_empty());
        let network: AffiliateNetworkSpec = checked(serde_json::json!({
            "name": "Net", "click_param": "aff_sub", "status_map": {"1": "Approved", "Declined": "rejected"}
        }))
        .unwrap();
        assert_eq!(network.status_map["declined"], "rejected");
        assert_eq!(network.status_map["1"], "approved");
        let lander: LanderSpec =
            checked(serde_json::json!({"name": "LP", "url": "https://lp.test/"})).unwrap();
        assert_eq!(lander.offers, 1);
    }

    #[test]
    fn names_the_bad_field() {
        let source = |extra: serde_json::Value| {
            let mut json =
                serde_json::json!({"name": "S", "postback_url": "https://s.test/?c={external_id}"});
            for (k, v) in extra.as_object().unwrap() {
                json[k] = v.clone();
            }
            checked::<TrafficSourceSpec>(json).unwrap_err().field
        };
        assert_eq!(source(serde_json::json!({"name": " "})), "name");
        assert_eq!(
            source(serde_json::json!({"parameters": {"zone": "{zoneid}"}})),
            "parameters.zone"
        );
        assert_eq!(
            source(serde_json::json!({"parameters": {"sub1": "{a}&b"}})),
            "parameters.sub1"
        );
        assert_eq!(
            source(serde_json::json!({"postback_url": "https://s.test/?c={clickid}"})),
            "postback_url"
        );
        assert_eq!(
            source(serde_json::json!({"postback_url": "ftp://s.test/"})),
            "postback_url"
        );
        assert_eq!(
            source(serde_json::json!({"postback_url": "https://s.test/?a={{aid}}"})),
            "placeholders.aid"
        );
        assert_eq!(
            source(serde_json::json!({"placeholders": {"aid": "1"}})),
            "placeholders.aid"
        );
        assert_eq!(
            source(serde_json::json!({"postback_on_status": "paid"})),
            "postback_on_status"
        );
        assert_eq!(
            source(serde_json::json!({"postback_goals": ["a b"]})),
            "postback_goals"
        );
        assert_eq!(
            source(serde_json::json!({"template": "no-such-source"})),
            "template"
        );
        let offer = |json: serde_json::Value| checked::<OfferSpec>(json).unwrap_err().field;
        assert_eq!(
            offer(serde_json::json!({"name": "O", "url": "https://o.test/{nope}"})),
            "url"
        );
        assert_eq!(
            offer(serde_json::json!({"name": "O", "url": "https://o.test/", "payout": "-1"})),
            "payout"
        );
        assert_eq!(
            offer(serde_json::json!({"name": "O", "url": "https://o.test/", "payout": "abc"})),
            "payout"
        );
        assert_eq!(
            offer(
                serde_json::json!({"name": "O", "url": "https://o.test/", "currency": "dollars"})
            ),
            "currency"
        );
        let lander = |json: serde_json::Value| checked::<LanderSpec>(json).unwrap_err().field;
        assert_eq!(
            lander(serde_json::json!({"name": "L", "url": "https://l.test/", "offers": 0})),
            "offers"
        );
        assert_eq!(
            lander(serde_json::json!({"name": "L", "url": "javascript:x"})),
            "url"
        );
        let network =
            |json: serde_json::Value| checked::<AffiliateNetworkSpec>(json).unwrap_err().field;
        assert_eq!(
            network(serde_json::json!({"name": "N", "click_param": "a b"})),
            "click_param"
        );
        assert_eq!(
            network(serde_json::json!({"name": "N", "status_map": {"1": "paid"}})),
            "status_map.1"
        );
        assert_eq!(
            network(serde_json::json!({"name": "N", "template": "nope"})),
            "template"
        );
    }

    #[test]
    fn catalogue_templates_are_accepted() {
        let catalogue = templates::catalogue().unwrap();
        let source = &catalogue.traffic_sources()[0];
        let spec: TrafficSourceSpec = checked(serde_json::json!({
            "name": source.name, "template": source.id,
        }))
        .unwrap();
        assert_eq!(spec.template.as_deref(), Some(source.id.as_str()));
        let network = &catalogue.affiliate_networks()[0];
        let spec: AffiliateNetworkSpec = checked(serde_json::json!({
            "name": network.name, "template": network.id, "click_param": network.click_id_param,
            "status_map": network.status_map,
        }))
        .unwrap();
        assert_eq!(spec.click_param, network.click_id_param);
    }
}

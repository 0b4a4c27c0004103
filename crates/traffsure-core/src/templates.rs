//! The templates catalogue: ready-made traffic sources and affiliate networks a buyer starts
//! from ("New from template"), each researched from the vendor's own documentation and
//! citing it. This module decides what a template may say — which tracking-link parameters,
//! which outbound macros, which postback parameters and statuses — loads the two embedded
//! files once, and fills a template in: a source's tracking link and postback URL, a
//! network's offer parameter and postback URL. Storing the objects made from a template is
//! left to the API.
//!
//! Two kinds of braces appear in a traffic source's postback URL: `{name}` is one of
//! TraffSure's outbound macros, filled per conversion by the dispatcher; `{{name}}` is a
//! placeholder for a fixed part of the vendor's URL (an account token, a goal ID) that the
//! buyer fills once, listed in the template's `placeholders`. A network's postback URL starts
//! with `{tracker_postback_base}` — TraffSure's public address, filled when the URL is shown
//! — and the rest is the network's own macros in the network's own syntax.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use traffsure_events::ConversionStatus;

use crate::flow::OUTBOUND_MACROS;
use crate::macros::encode_component;
use crate::postback_params;
use crate::vocab::Vocabulary;

const TRAFFIC_SOURCES_JSON: &str = include_str!("../templates/traffic_sources.json");
const AFFILIATE_NETWORKS_JSON: &str = include_str!("../templates/affiliate_networks.json");

/// Whether a traffic source template may fill this tracking-link parameter: one of
/// click-ingest's own fields (`sub1`…`sub10`, `sub_id`, `source`, `cost`, `cost_currency`)
/// or `external_id`.
pub fn is_tracking_parameter(name: &str) -> bool {
    let sub = name
        .strip_prefix("sub")
        .filter(|n| !n.starts_with('0'))
        .and_then(|n| n.parse::<u8>().ok());
    matches!(sub, Some(1..=10))
        || matches!(
            name,
            "sub_id" | "source" | "cost" | "cost_currency" | "external_id"
        )
}

/// Where a network's postback URL puts TraffSure's public address.
pub const TRACKER_POSTBACK_BASE: &str = "{tracker_postback_base}";

/// Every network postback URL starts with this: postback-ingest's `/postback` route.
const NETWORK_POSTBACK_PREFIX: &str = "{tracker_postback_base}/postback?";

/// What a loaded or filled-in template can go wrong with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read {file}: {message}")]
    Parse { file: &'static str, message: String },
    #[error("invalid templates: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("{field} must be an http(s) URL without query or fragment: {value:?}")]
    BadBase { field: &'static str, value: String },
    #[error("flow must not be empty")]
    EmptyFlow,
    #[error("placeholder {0} needs a value")]
    MissingPlaceholder(String),
    #[error("placeholder {0} is not one of this template's")]
    UnknownPlaceholder(String),
}

/// A page of the vendor's documentation a template is built from.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocLink {
    pub url: String,
    pub title: String,
    /// What the page documents that the template relies on.
    pub documents: String,
}

/// The kind of traffic a source sells.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceCategory {
    Push,
    Pop,
    Native,
    Search,
    Social,
    Display,
    Video,
    Adult,
    Other,
}

/// How a source bills, where its documentation says.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CostModel {
    Cpc,
    Cpm,
    Cpa,
    Revshare,
}

/// The tracking software a network runs on; `own` for in-house platforms.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Affise,
    Everflow,
    Cake,
    Hasoffers,
    Trackier,
    Scaleo,
    Altercpa,
    Own,
}

/// A fixed part of a vendor's postback URL the buyer fills once, written `{{name}}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placeholder {
    pub name: String,
    pub description: String,
}

/// A traffic source: which tracking-link parameters it fills with which of its macros, and
/// the postback that reports conversions of its traffic back to it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSourceTemplate {
    pub id: String,
    pub name: String,
    pub category: SourceCategory,
    /// The vendor's hosts (optionally `host/path` for a hosted help centre) its cited pages
    /// must be on.
    pub domains: Vec<String>,
    pub docs: Vec<DocLink>,
    /// TraffSure's tracking-link parameter → the source's macro, in link order.
    #[serde(with = "ordered_pairs")]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub parameters: Vec<(String, String)>,
    /// `None` where the vendor takes conversions another way or the URL is per account
    /// (`notes` say which).
    pub postback_url: Option<String>,
    #[serde(default)]
    pub placeholders: Vec<Placeholder>,
    #[serde(default)]
    pub cost_models: Vec<CostModel>,
    #[serde(default)]
    pub notes: String,
}

/// An affiliate network: where its offer links take TraffSure's click hash, and the postback
/// URL to paste into it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AffiliateNetworkTemplate {
    pub id: String,
    pub name: String,
    pub platform: Platform,
    pub domains: Vec<String>,
    pub docs: Vec<DocLink>,
    /// The offer-link parameter that carries the click hash (`sub1`, `s2`, `aff_click_id`).
    pub click_id_param: String,
    /// The network's macro that returns that parameter's value in its postbacks.
    pub click_id_macro: String,
    /// `{tracker_postback_base}/postback?` and TraffSure's postback parameters filled with
    /// the network's macros.
    pub postback_url: String,
    /// Network status word (lowercase) → `approved`, `pending` or `rejected`; a flow's
    /// `status_map` in the same form.
    #[serde(default)]
    pub status_map: BTreeMap<String, String>,
    #[serde(default)]
    pub notes: String,
}

/// Both template lists, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Catalogue {
    traffic_sources: Vec<TrafficSourceTemplate>,
    affiliate_networks: Vec<AffiliateNetworkTemplate>,
}

/// The embedded catalogue, parsed and validated on first use.
pub fn catalogue() -> Result<&'static Catalogue, &'static TemplateError> {
    static CATALOGUE: OnceLock<Result<Catalogue, TemplateError>> = OnceLock::new();
    CATALOGUE
        .get_or_init(|| Catalogue::parse(TRAFFIC_SOURCES_JSON, AFFILIATE_NETWORKS_JSON))
        .as_ref()
}

impl Catalogue {
    /// Parses both files and checks every template; every problem found is reported.
    pub fn parse(traffic_sources: &str, affiliate_networks: &str) -> Result<Self, TemplateError> {
        let traffic_sources: Vec<TrafficSourceTemplate> = serde_json::from_str(traffic_sources)
            .map_err(|e| TemplateError::Parse {
                file: "traffic_sources.json",
                message: e.to_string(),
            })?;
        let affiliate_networks: Vec<AffiliateNetworkTemplate> =
            serde_json::from_str(affiliate_networks).map_err(|e| TemplateError::Parse {
                file: "affiliate_networks.json",
                message: e.to_string(),
            })?;
        let catalogue = Self {
            traffic_sources,
            affiliate_networks,
        };
        let problems = catalogue.problems();
        if problems.is_empty() {
            Ok(catalogue)
        } else {
            Err(TemplateError::Invalid(problems))
        }
    }

    pub fn traffic_sources(&self) -> &[TrafficSourceTemplate] {
        &self.traffic_sources
    }

    pub fn affiliate_networks(&self) -> &[AffiliateNetworkTemplate] {
        &self.affiliate_networks
    }

    pub fn traffic_source(&self, id: &str) -> Option<&TrafficSourceTemplate> {
        self.traffic_sources.iter().find(|t| t.id == id)
    }

    pub fn affiliate_network(&self, id: &str) -> Option<&AffiliateNetworkTemplate> {
        self.affiliate_networks.iter().find(|t| t.id == id)
    }

    /// Every broken rule, as `traffic source "x": problem`.
    fn problems(&self) -> Vec<String> {
        let mut problems = labelled_problems(
            "traffic source",
            self.traffic_sources
                .iter()
                .map(|t| (t.id.as_str(), t.problems())),
        );
        problems.extend(labelled_problems(
            "affiliate network",
            self.affiliate_networks
                .iter()
                .map(|t| (t.id.as_str(), t.problems())),
        ));
        problems
    }
}

/// Prefixes each template's problems with its kind and id, and reports an id used twice.
fn labelled_problems<'t>(
    kind: &str,
    templates: impl Iterator<Item = (&'t str, Vec<String>)>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for (id, own) in templates {
        let label = format!("{kind} {id:?}");
        if seen.contains(&id) {
            problems.push(format!("{label}: duplicate id"));
        }
        seen.push(id);
        problems.extend(own.into_iter().map(|p| format!("{label}: {p}")));
    }
    problems
}

impl TrafficSourceTemplate {
    /// The tracking link's query: `sub1={zoneid}&external_id=${SUBID}`, the source's macros
    /// written as the source expects them.
    pub fn tracking_query(&self) -> String {
        tracking_query(&self.parameters)
    }

    /// The link to give the source: `{click_base}/c/{flow}?sub1={zoneid}&…`.
    pub fn tracking_link(&self, click_base: &str, flow: &str) -> Result<String, TemplateError> {
        let base = checked_base("click_base", click_base)?;
        if flow.is_empty() {
            return Err(TemplateError::EmptyFlow);
        }
        let mut link = format!("{base}/c/{}", encode_component(flow));
        if !self.parameters.is_empty() {
            link.push('?');
            link.push_str(&self.tracking_query());
        }
        Ok(link)
    }

    /// The postback URL with the buyer's placeholder values filled in (URL-encoded) and
    /// TraffSure's outbound macros left for the dispatcher; `None` when the template has no
    /// postback URL.
    pub fn postback_url(
        &self,
        fills: &BTreeMap<String, String>,
    ) -> Result<Option<String>, TemplateError> {
        let Some(template) = &self.postback_url else {
            return Ok(None);
        };
        if let Some(unknown) = fills
            .keys()
            .find(|name| !self.placeholders.iter().any(|p| &p.name == *name))
        {
            return Err(TemplateError::UnknownPlaceholder(unknown.clone()));
        }
        fill_placeholders(template, fills).map(Some)
    }

    /// The outbound macros the postback URL uses, in order.
    pub fn postback_macros(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for token in self.postback_url.as_deref().map(tokens).unwrap_or_default() {
            if let Token::Macro(name) = token {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = common_problems(&self.id, &self.name, &self.domains, &self.docs);
        if self.parameters.is_empty() {
            problems.push("no tracking parameters".to_string());
        }
        for (param, source_macro) in &self.parameters {
            if !is_tracking_parameter(param) {
                problems.push(format!(
                    "{param} is not a tracking parameter TraffSure reads"
                ));
            }
            if source_macro.is_empty() || source_macro.contains(url_breaking) {
                problems.push(format!(
                    "{param}: macro {source_macro:?} is empty or breaks a query string"
                ));
            }
        }
        let mut seen_models = Vec::new();
        for model in &self.cost_models {
            if seen_models.contains(model) {
                problems.push(format!("cost model {model:?} listed twice"));
            }
            seen_models.push(*model);
        }
        for (i, placeholder) in self.placeholders.iter().enumerate() {
            if !is_macro_name(&placeholder.name) || placeholder.description.trim().is_empty() {
                problems.push(format!(
                    "placeholder {:?} needs a name and a description",
                    placeholder.name
                ));
            }
            if self.placeholders[..i]
                .iter()
                .any(|p| p.name == placeholder.name)
            {
                problems.push(format!("placeholder {} listed twice", placeholder.name));
            }
        }
        match &self.postback_url {
            None => {
                if self.notes.trim().is_empty() {
                    problems.push("no postback URL and no notes saying why".to_string());
                }
                if !self.placeholders.is_empty() {
                    problems.push("placeholders without a postback URL".to_string());
                }
            }
            Some(template) => problems.extend(self.postback_problems(template)),
        }
        problems
    }

    fn postback_problems(&self, template: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if !(template.starts_with("https://") || template.starts_with("http://")) {
            problems.push("postback URL must start with http:// or https://".to_string());
        }
        if template.contains(char::is_whitespace) || template.contains('#') {
            problems.push("postback URL has whitespace or a fragment".to_string());
        }
        let mut used = Vec::new();
        for token in tokens(template) {
            match token {
                Token::Text(text) => {
                    if text.contains('{') || text.contains('}') {
                        problems.push(format!("postback URL has a stray brace in {text:?}"));
                    }
                }
                Token::Placeholder(name) => {
                    if !self.placeholders.iter().any(|p| p.name == name) {
                        problems.push(format!("placeholder {{{{{name}}}}} is not declared"));
                    }
                    used.push(name);
                }
                Token::Macro(name) => {
                    if !OUTBOUND_MACROS.contains(&name) {
                        problems.push(format!("{{{name}}} is not an outbound macro"));
                    }
                    if is_tracking_parameter(name)
                        && name != "source"
                        && !self.parameters.iter().any(|(p, _)| p == name)
                    {
                        problems.push(format!(
                            "postback sends {{{name}}} but the tracking link does not fill {name}"
                        ));
                    }
                }
            }
        }
        for placeholder in &self.placeholders {
            if !used.contains(&placeholder.name.as_str()) {
                problems.push(format!("placeholder {} is never used", placeholder.name));
            }
        }
        if !self.postback_macros().contains(&"external_id") {
            problems
                .push("postback does not return the source's click ID {external_id}".to_string());
        }
        problems
    }
}

impl AffiliateNetworkTemplate {
    /// The query pair to add to the network's offer link: `sub1={click}`.
    pub fn offer_parameter(&self) -> String {
        format!("{}={{click}}", self.click_id_param)
    }

    /// The postback URL to paste into the network, on TraffSure's public postback address
    /// (`https://track.example.com`); the network's macros are left as the network writes
    /// them.
    pub fn postback_url(&self, tracker_postback_base: &str) -> Result<String, TemplateError> {
        let base = checked_base("tracker_postback_base", tracker_postback_base)?;
        Ok(self.postback_url.replacen(TRACKER_POSTBACK_BASE, base, 1))
    }

    /// The postback's parameters: TraffSure's name → the network's macro.
    pub fn postback_pairs(&self) -> Vec<(&str, &str)> {
        self.postback_url
            .strip_prefix(NETWORK_POSTBACK_PREFIX)
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .collect()
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = common_problems(&self.id, &self.name, &self.domains, &self.docs);
        if self.click_id_param.is_empty()
            || !self
                .click_id_param
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            problems.push(format!(
                "click_id_param {:?} is not a plain parameter name",
                self.click_id_param
            ));
        }
        if !self.postback_url.starts_with(NETWORK_POSTBACK_PREFIX) {
            problems.push(format!(
                "postback URL must start with {NETWORK_POSTBACK_PREFIX}"
            ));
        }
        let rest = self
            .postback_url
            .get(TRACKER_POSTBACK_BASE.len()..)
            .unwrap_or_default();
        if rest.contains(TRACKER_POSTBACK_BASE) || self.postback_url.contains(char::is_whitespace) {
            problems.push("postback URL repeats the base or has whitespace".to_string());
        }
        let pairs = self.postback_pairs();
        let mut click_pairs = 0;
        for (i, (name, value)) in pairs.iter().enumerate() {
            if !accepted_postback_param(name) {
                problems.push(format!("{name} is not a parameter postback-ingest reads"));
            }
            if value.is_empty() || value.contains('=') {
                problems.push(format!("{name} needs one value, has {value:?}"));
            }
            if pairs[..i].iter().any(|(n, _)| n == name) {
                problems.push(format!("{name} sent twice"));
            }
            if postback_params::CLICK.contains(name) {
                click_pairs += 1;
                if *value != self.click_id_macro {
                    problems.push(format!(
                        "{name} must carry the click ID macro {}, not {value}",
                        self.click_id_macro
                    ));
                }
            }
        }
        if click_pairs != 1 {
            problems.push(format!(
                "postback must name the click exactly once (one of {}), names it {click_pairs} times",
                postback_params::CLICK.join(", ")
            ));
        }
        if !self.status_map.is_empty()
            && !pairs
                .iter()
                .any(|(n, _)| postback_params::STATUS.contains(n))
        {
            problems.push("status_map without a status parameter in the postback".to_string());
        }
        for (raw, status) in &self.status_map {
            if raw.is_empty() || raw.trim() != raw || raw.to_lowercase() != *raw {
                problems.push(format!("status {raw:?} must be lowercase and trimmed"));
            }
            if ConversionStatus::from_word(status).is_none() {
                problems.push(format!(
                    "status {raw:?} maps to {status:?}, not {}",
                    ConversionStatus::word_list()
                ));
            }
        }
        problems
    }
}

/// Checks shared by both kinds: id, name, cited pages on the vendor's domains.
fn common_problems(id: &str, name: &str, domains: &[String], docs: &[DocLink]) -> Vec<String> {
    let mut problems = Vec::new();
    if !is_slug(id) {
        problems.push("id must be a slug (lowercase letters and digits joined by -)".to_string());
    }
    if name.trim().is_empty() {
        problems.push("no name".to_string());
    }
    if domains.is_empty() || domains.iter().any(|d| d.is_empty() || d.contains("://")) {
        problems.push("domains must list the vendor's hosts".to_string());
    }
    if docs.is_empty() {
        problems.push("cites no documentation".to_string());
    }
    for doc in docs {
        if doc.title.trim().is_empty() || doc.documents.trim().is_empty() {
            problems.push(format!("{} needs a title and what it documents", doc.url));
        }
        match https_host_and_path(&doc.url) {
            None => problems.push(format!("{} is not an https URL", doc.url)),
            Some((host, path)) => {
                if !domains.iter().any(|d| on_domain(host, path, d)) {
                    problems.push(format!("{} is not on the vendor's domains", doc.url));
                }
            }
        }
    }
    problems
}

fn accepted_postback_param(name: &str) -> bool {
    [
        postback_params::CLICK,
        postback_params::GOAL,
        postback_params::STATUS,
        postback_params::REVENUE,
        postback_params::CURRENCY,
        postback_params::UID,
        postback_params::REASON,
        postback_params::VISITOR,
        postback_params::FLOW,
        postback_params::DISABLE_POSTBACKS,
    ]
    .iter()
    .any(|names| names.contains(&name))
}

/// `https://host/path?…` → (`host`, `/path`).
fn https_host_and_path(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("https://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(end);
    let path = tail.split(['?', '#']).next().unwrap_or_default();
    (!host.is_empty() && !host.contains(['@', ':'])).then_some((host, path))
}

/// A domain entry is `host` (its subdomains included) or `host/path` for a help centre
/// hosted under a shared host.
fn on_domain(host: &str, path: &str, domain: &str) -> bool {
    let (domain_host, domain_path) = domain.split_once('/').unwrap_or((domain, ""));
    let host_matches = host == domain_host
        || host
            .strip_suffix(domain_host)
            .is_some_and(|prefix| prefix.ends_with('.'));
    host_matches
        && (domain_path.is_empty()
            || path
                .strip_prefix('/')
                .is_some_and(|p| p.starts_with(domain_path)))
}

fn is_slug(id: &str) -> bool {
    !id.is_empty()
        && id.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// A tracking link's query from its parameters: `sub1={zoneid}&external_id=${SUBID}`, each
/// source macro written as the source expects it.
pub fn tracking_query(parameters: &[(String, String)]) -> String {
    parameters
        .iter()
        .map(|(param, source_macro)| format!("{param}={source_macro}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Fills a source postback template's `{{name}}` placeholders with the buyer's values
/// (URL-encoded), leaving TraffSure's `{macro}`s for the dispatcher.
pub fn fill_placeholders(
    template: &str,
    fills: &BTreeMap<String, String>,
) -> Result<String, TemplateError> {
    let mut url = String::with_capacity(template.len());
    for token in tokens(template) {
        match token {
            Token::Text(text) => url.push_str(text),
            Token::Macro(name) => {
                url.push('{');
                url.push_str(name);
                url.push('}');
            }
            Token::Placeholder(name) => match fills.get(name).filter(|v| !v.is_empty()) {
                Some(value) => url.push_str(&encode_component(value)),
                None => return Err(TemplateError::MissingPlaceholder(name.to_string())),
            },
        }
    }
    Ok(url)
}

/// The `{{name}}` placeholders a source postback template uses, in order.
pub fn placeholder_names(template: &str) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for token in tokens(template) {
        if let Token::Placeholder(name) = token {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

fn is_macro_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A character a source macro cannot hold inside a tracking link's query.
pub(crate) fn url_breaking(c: char) -> bool {
    c.is_whitespace() || matches!(c, '&' | '#' | '=' | '?')
}

/// Checks a base URL and drops its trailing slash.
fn checked_base<'b>(field: &'static str, base: &'b str) -> Result<&'b str, TemplateError> {
    let trimmed = base.trim_end_matches('/');
    let bad = || TemplateError::BadBase {
        field,
        value: base.to_string(),
    };
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .ok_or_else(bad)?;
    if rest.is_empty()
        || rest.starts_with('/')
        || rest.contains(['?', '#', '{', '}'])
        || rest.contains(char::is_whitespace)
    {
        return Err(bad());
    }
    Ok(trimmed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'t> {
    Text(&'t str),
    /// `{name}`: an outbound macro.
    Macro(&'t str),
    /// `{{name}}`: a placeholder the buyer fills.
    Placeholder(&'t str),
}

/// Splits a source postback template into text, `{macro}` and `{{placeholder}}`; a brace
/// that opens neither stays text (and is reported by validation).
fn tokens(template: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let (doubled, name_start) = if rest[open..].starts_with("{{") {
            (true, open + 2)
        } else {
            (false, open + 1)
        };
        let name_len = rest[name_start..]
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        let close = if doubled { "}}" } else { "}" };
        let name = &rest[name_start..name_start + name_len];
        if name_len > 0 && rest[name_start + name_len..].starts_with(close) {
            if open > 0 {
                out.push(Token::Text(&rest[..open]));
            }
            out.push(if doubled {
                Token::Placeholder(name)
            } else {
                Token::Macro(name)
            });
            rest = &rest[name_start + name_len + close.len()..];
        } else {
            out.push(Token::Text(&rest[..=open]));
            rest = &rest[open + 1..];
        }
    }
    if !rest.is_empty() {
        out.push(Token::Text(rest));
    }
    out
}

/// A JSON object read and written as ordered pairs: a tracking link keeps the order the
/// template gives, and a parameter named twice is refused.
pub(crate) mod ordered_pairs {
    use super::fmt;
    use serde::de::{self, MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(pairs: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(pairs.len()))?;
        for (key, value) in pairs {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Vec<(String, String)>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of parameter names to macros")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs: Vec<(String, String)> = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, String>()? {
                    if pairs.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format!("parameter {key} given twice")));
                    }
                    pairs.push((key, value));
                }
                Ok(pairs)
            }
        }
        d.deserialize_map(Pairs)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::macros::render;
    use crate::status::map_status_with;

    fn loaded() -> &'static Catalogue {
        match catalogue() {
            Ok(catalogue) => catalogue,
            Err(e) => panic!("the embedded catalogue is broken: {e}"),
        }
    }

    /// The catalogue with one template changed as JSON, parsed again.
    fn parse_with(
        file: &str,
        id: &str,
        change: impl FnOnce(&mut serde_json::Value),
    ) -> Result<Catalogue, TemplateError> {
        let mut sources: serde_json::Value = serde_json::from_str(TRAFFIC_SOURCES_JSON).unwrap();
        let mut networks: serde_json::Value =
            serde_json::from_str(AFFILIATE_NETWORKS_JSON).unwrap();
        let list = if file == "sources" {
            &mut sources
        } else {
            &mut networks
        };
        let template = list
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|t| t["id"] == id)
            .unwrap();
        change(template);
        Catalogue::parse(&sources.to_string(), &networks.to_string())
    }

    fn problems_of(result: Result<Catalogue, TemplateError>) -> String {
        match result {
            Err(TemplateError::Invalid(problems)) => problems.join("\n"),
            other => panic!("expected invalid templates, got {other:?}"),
        }
    }

    #[test]
    fn catalogue_loads_with_enough_vendors() {
        let catalogue = loaded();
        assert!(
            catalogue.traffic_sources().len() >= 25,
            "{}",
            catalogue.traffic_sources().len()
        );
        assert!(
            catalogue.affiliate_networks().len() >= 15,
            "{}",
            catalogue.affiliate_networks().len()
        );
        assert_eq!(
            catalogue.traffic_source("mgid").map(|t| t.name.as_str()),
            Some("MGID")
        );
        assert_eq!(
            catalogue.affiliate_network("affise").map(|t| t.platform),
            Some(Platform::Affise)
        );
        assert!(catalogue.traffic_source("nope").is_none());
    }

    #[test]
    fn ids_are_unique_slugs() {
        let catalogue = loaded();
        let mut ids: Vec<&str> = catalogue
            .traffic_sources()
            .iter()
            .map(|t| t.id.as_str())
            .collect();
        ids.extend(catalogue.affiliate_networks().iter().map(|t| t.id.as_str()));
        for id in &ids {
            assert!(is_slug(id), "{id}");
        }
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len(), "an id is used twice");
        for bad in ["", "Upper", "a_b", "-a", "a-", "a--b", "a b"] {
            assert!(!is_slug(bad), "{bad}");
        }
    }

    #[test]
    fn every_cited_page_is_https_on_the_vendors_domain() {
        let catalogue = loaded();
        let entries = catalogue
            .traffic_sources()
            .iter()
            .map(|t| (&t.id, &t.domains, &t.docs))
            .chain(
                catalogue
                    .affiliate_networks()
                    .iter()
                    .map(|t| (&t.id, &t.domains, &t.docs)),
            );
        for (id, domains, docs) in entries {
            assert!(!docs.is_empty(), "{id} cites nothing");
            for doc in docs {
                let url =
                    url::Url::parse(&doc.url).unwrap_or_else(|e| panic!("{id}: {}: {e}", doc.url));
                assert_eq!(url.scheme(), "https", "{id}: {}", doc.url);
                let host = url.host_str().unwrap_or_default();
                assert!(
                    domains.iter().any(|d| on_domain(host, url.path(), d)),
                    "{id}: {} is not on {domains:?}",
                    doc.url
                );
                assert!(
                    !doc.title.is_empty() && !doc.documents.is_empty(),
                    "{id}: {}",
                    doc.url
                );
            }
        }
        assert!(on_domain("help.mgid.com", "/x", "mgid.com"));
        assert!(!on_domain("evilmgid.com", "/x", "mgid.com"));
        assert!(on_domain(
            "intercom.help",
            "/outbrain_dsp/en/a",
            "intercom.help/outbrain_dsp"
        ));
        assert!(!on_domain(
            "intercom.help",
            "/other/en/a",
            "intercom.help/outbrain_dsp"
        ));
    }

    #[test]
    fn tracking_links_use_only_parameters_traffsure_reads_and_round_trip() {
        for source in loaded().traffic_sources() {
            for (param, _) in &source.parameters {
                assert!(is_tracking_parameter(param), "{}: {param}", source.id);
            }
            let link = source
                .tracking_link("https://t.example.com/", "summer-7")
                .unwrap_or_else(|e| panic!("{}: {e}", source.id));
            let url =
                url::Url::parse(&link).unwrap_or_else(|e| panic!("{}: {link}: {e}", source.id));
            assert_eq!(url.path(), "/c/summer-7", "{}", source.id);
            // The source must see each of its macros as written, in the template's order.
            let read: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            assert_eq!(read, source.parameters, "{}: {link}", source.id);
        }
    }

    #[test]
    fn every_source_postback_renders_to_a_valid_url_with_known_macros() {
        let mut with_postback = 0;
        for source in loaded().traffic_sources() {
            let fills: BTreeMap<String, String> = source
                .placeholders
                .iter()
                .enumerate()
                .map(|(i, p)| (p.name.clone(), format!("p{i}.example")))
                .collect();
            let Some(filled) = source
                .postback_url(&fills)
                .unwrap_or_else(|e| panic!("{}: {e}", source.id))
            else {
                assert!(
                    !source.notes.is_empty(),
                    "{} has neither postback nor notes",
                    source.id
                );
                continue;
            };
            with_postback += 1;
            assert!(!filled.contains("{{"), "{}: {filled}", source.id);
            let mut unknown = Vec::new();
            let conversion = render(&filled, |name| {
                if OUTBOUND_MACROS.contains(&name) {
                    Some(format!("v-{name}").into())
                } else {
                    unknown.push(name.to_string());
                    None
                }
            });
            assert!(
                unknown.is_empty(),
                "{}: unknown macros {unknown:?}",
                source.id
            );
            assert!(
                source.postback_macros().contains(&"external_id"),
                "{}",
                source.id
            );
            let url = url::Url::parse(&conversion)
                .unwrap_or_else(|e| panic!("{}: {conversion}: {e}", source.id));
            assert!(matches!(url.scheme(), "http" | "https"), "{}", source.id);
            assert!(
                url.host_str().is_some_and(|h| h.contains('.')),
                "{}: {conversion}",
                source.id
            );
            assert!(
                url.query_pairs().any(|(_, v)| v == "v-external_id"),
                "{}: the click ID is not sent back: {conversion}",
                source.id
            );
        }
        assert!(with_postback >= 12, "{with_postback}");
    }

    #[test]
    fn placeholders_are_filled_encoded_and_required() {
        let source = loaded().traffic_source("taboola").unwrap();
        let fills = BTreeMap::from([("event_name".to_string(), "lead & sale".to_string())]);
        assert_eq!(
            source.postback_url(&fills).unwrap().as_deref(),
            Some(
                "https://trc.taboola.com/actions-handler/log/3/s2s-action?click-id={external_id}\
                 &name=lead%20%26%20sale&revenue={revenue}&currency={currency}&orderid={conversion}"
            )
        );
        assert_eq!(
            source.postback_url(&BTreeMap::new()),
            Err(TemplateError::MissingPlaceholder("event_name".into()))
        );
        let typo = BTreeMap::from([("event".to_string(), "x".to_string())]);
        assert_eq!(
            source.postback_url(&typo),
            Err(TemplateError::UnknownPlaceholder("event".into()))
        );
        let google = loaded().traffic_source("google-ads").unwrap();
        assert_eq!(google.postback_url(&BTreeMap::new()), Ok(None));
    }

    #[test]
    fn tracking_link_checks_its_base() {
        let source = loaded().traffic_source("clickadu").unwrap();
        assert_eq!(
            source.tracking_link("https://t.example.com", "42").unwrap(),
            "https://t.example.com/c/42?external_id=${SUBID}&sub1={zoneid}&sub2={campaignid}&cost={cost}"
        );
        for bad in [
            "",
            "t.example.com",
            "ftp://t.example.com",
            "https://t.example.com/?a=1",
            "https://",
        ] {
            assert!(
                matches!(
                    source.tracking_link(bad, "42"),
                    Err(TemplateError::BadBase { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            source.tracking_link("https://t.example.com", ""),
            Err(TemplateError::EmptyFlow)
        );
    }

    #[test]
    fn every_network_postback_names_the_click_and_only_parameters_postback_ingest_reads() {
        for network in loaded().affiliate_networks() {
            let rendered = network
                .postback_url("https://track.example.com/")
                .unwrap_or_else(|e| panic!("{}: {e}", network.id));
            assert!(
                rendered.starts_with("https://track.example.com/postback?"),
                "{rendered}"
            );
            let pairs = network.postback_pairs();
            let clicks: Vec<_> = pairs
                .iter()
                .filter(|(name, _)| postback_params::CLICK.contains(name))
                .collect();
            assert_eq!(clicks.len(), 1, "{}: {rendered}", network.id);
            assert_eq!(clicks[0].1, network.click_id_macro, "{}", network.id);
            for (name, _) in &pairs {
                assert!(accepted_postback_param(name), "{}: {name}", network.id);
            }
            // What the network sends once it has filled its macros.
            let sent: Vec<String> = pairs
                .iter()
                .enumerate()
                .map(|(i, (name, _))| format!("{name}=value{i}"))
                .collect();
            let fired = format!("https://track.example.com/postback?{}", sent.join("&"));
            let url = url::Url::parse(&fired).unwrap_or_else(|e| panic!("{}: {e}", network.id));
            let names: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
            let expected: Vec<&str> = pairs.iter().map(|(n, _)| *n).collect();
            assert_eq!(names, expected, "{}", network.id);
            assert_eq!(
                network.offer_parameter(),
                format!("{}={{click}}", network.click_id_param)
            );
        }
        let cake = loaded().affiliate_network("cake").unwrap();
        assert_eq!(
            cake.postback_url("http://pb.example.org").unwrap(),
            "http://pb.example.org/postback?click=#s2#&payout=#price#&txid=#leadid#"
        );
        assert!(matches!(
            cake.postback_url("pb.example.org"),
            Err(TemplateError::BadBase { .. })
        ));
    }

    #[test]
    fn status_maps_name_traffsure_statuses_and_drive_map_status_with() {
        for network in loaded().affiliate_networks() {
            for (raw, status) in &network.status_map {
                assert!(
                    ConversionStatus::from_word(status).is_some(),
                    "{}: {raw} → {status}",
                    network.id
                );
            }
        }
        let affise = &loaded().affiliate_network("affise").unwrap().status_map;
        assert_eq!(map_status_with("1", affise), ConversionStatus::Approved);
        assert_eq!(map_status_with("2", affise), ConversionStatus::Pending);
        assert_eq!(map_status_with("3", affise), ConversionStatus::Rejected);
        assert_eq!(map_status_with("5", affise), ConversionStatus::Pending);
        let lucky = &loaded()
            .affiliate_network("luckyonline")
            .unwrap()
            .status_map;
        assert_eq!(map_status_with("Trash", lucky), ConversionStatus::Rejected);
    }

    #[test]
    fn broken_templates_are_refused_with_the_reason() {
        type Change = Box<dyn FnOnce(&mut serde_json::Value)>;
        fn set(path: &'static [&'static str], value: serde_json::Value) -> Change {
            Box::new(move |t| {
                let mut at = t;
                for key in path {
                    at = match key.parse::<usize>() {
                        Ok(i) if at.is_array() => &mut at[i],
                        _ => &mut at[*key],
                    };
                }
                *at = value;
            })
        }
        let cases: Vec<(&str, &str, Change, &str)> = vec![
            (
                "sources",
                "mgid",
                set(&["parameters", "zone"], "{widget_id}".into()),
                "zone is not a tracking parameter",
            ),
            (
                "sources",
                "mgid",
                set(
                    &["postback_url"],
                    "https://a.mgid.com/postback?c={external_id}&e={{event}}&r={profit}".into(),
                ),
                "{profit} is not an outbound macro",
            ),
            (
                "sources",
                "mgid",
                set(
                    &["postback_url"],
                    "https://a.mgid.com/postback?c={external_id}&e={{evnt}}".into(),
                ),
                "{{evnt}} is not declared",
            ),
            (
                "sources",
                "mgid",
                set(
                    &["postback_url"],
                    "https://a.mgid.com/postback?c={external_id}".into(),
                ),
                "placeholder event is never used",
            ),
            (
                "sources",
                "mgid",
                set(&["parameters", "sub1"], "{widget id}".into()),
                "breaks a query string",
            ),
            (
                "sources",
                "kadam",
                set(
                    &["postback_url"],
                    "http://kdtrk.net/ru/postback/?data={click}".into(),
                ),
                "does not return the source's click ID",
            ),
            (
                "sources",
                "clickadilla",
                set(
                    &["parameters"],
                    serde_json::json!({"external_id": "[CLICK_ID]"}),
                ),
                "the tracking link does not fill sub1",
            ),
            (
                "sources",
                "taboola",
                set(
                    &["docs", "0", "url"],
                    "http://developers.taboola.com/pixel/docs/the-postback-url".into(),
                ),
                "is not an https URL",
            ),
            (
                "sources",
                "taboola",
                set(
                    &["docs", "0", "url"],
                    "https://some-blog.example.com/taboola".into(),
                ),
                "is not on the vendor's domains",
            ),
            (
                "sources",
                "taboola",
                set(&["docs"], serde_json::json!([])),
                "cites no documentation",
            ),
            (
                "sources",
                "meta",
                set(&["id"], "mgid".into()),
                "traffic source \"mgid\": duplicate id",
            ),
            (
                "sources",
                "meta",
                set(&["id"], "Meta".into()),
                "id must be a slug",
            ),
            (
                "sources",
                "meta",
                set(&["notes"], "".into()),
                "no postback URL and no notes",
            ),
            (
                "networks",
                "trackier",
                set(
                    &["postback_url"],
                    "{tracker_postback_base}/postback?payout={payout}".into(),
                ),
                "must name the click exactly once",
            ),
            (
                "networks",
                "trackier",
                set(
                    &["postback_url"],
                    "{tracker_postback_base}/postback?click={p1}&amount_usd={payout}".into(),
                ),
                "amount_usd is not a parameter postback-ingest reads",
            ),
            (
                "networks",
                "trackier",
                set(
                    &["postback_url"],
                    "https://track.example.com/postback?click={p1}".into(),
                ),
                "postback URL must start with {tracker_postback_base}",
            ),
            (
                "networks",
                "affise",
                set(&["click_id_macro"], "{sub2}".into()),
                "must carry the click ID macro {sub2}",
            ),
            (
                "networks",
                "affise",
                set(&["status_map", "5"], "declined".into()),
                "maps to \"declined\"",
            ),
            (
                "networks",
                "affise",
                set(&["status_map", "Hold"], "pending".into()),
                "must be lowercase",
            ),
            (
                "networks",
                "trackier",
                set(&["status_map"], serde_json::json!({"ok": "approved"})),
                "status_map without a status parameter",
            ),
        ];
        for (file, id, change, expected) in cases {
            let problems = problems_of(parse_with(file, id, change));
            assert!(
                problems.contains(expected),
                "{id}: expected {expected:?} in {problems}"
            );
        }
    }

    #[test]
    fn malformed_files_are_refused() {
        let err = Catalogue::parse("[{\"id\": \"x\"}]", "[]").unwrap_err();
        assert!(
            matches!(
                err,
                TemplateError::Parse {
                    file: "traffic_sources.json",
                    ..
                }
            ),
            "{err}"
        );
        let twice = TRAFFIC_SOURCES_JSON.replacen(
            "\"external_id\": \"{click_id}\"",
            "\"external_id\": \"{click_id}\", \"external_id\": \"{x}\"",
            1,
        );
        let err = Catalogue::parse(&twice, AFFILIATE_NETWORKS_JSON).unwrap_err();
        assert!(
            err.to_string()
                .contains("parameter external_id given twice"),
            "{err}"
        );
        let unknown_field =
            AFFILIATE_NETWORKS_JSON.replacen("\"platform\"", "\"plaform\": 1, \"platform\"", 1);
        assert!(matches!(
            Catalogue::parse(TRAFFIC_SOURCES_JSON, &unknown_field),
            Err(TemplateError::Parse {
                file: "affiliate_networks.json",
                ..
            })
        ));
    }

    #[test]
    fn tracking_parameters_are_click_ingests_fields_and_external_id() {
        for name in [
            "sub1",
            "sub10",
            "sub_id",
            "source",
            "cost",
            "cost_currency",
            "external_id",
        ] {
            assert!(is_tracking_parameter(name), "{name}");
        }
        for name in ["sub0", "sub01", "sub11", "sub", "zone", "clickid", "Sub1"] {
            assert!(!is_tracking_parameter(name), "{name}");
        }
    }

    #[test]
    fn tokens_split_macros_placeholders_and_text() {
        assert_eq!(
            tokens("a{b}c{{d}}{e"),
            vec![
                Token::Text("a"),
                Token::Macro("b"),
                Token::Text("c"),
                Token::Placeholder("d"),
                Token::Text("{"),
                Token::Text("e"),
            ]
        );
    }

    #[test]
    fn templates_page_names_every_vendor_and_cited_page() {
        let page = include_str!("../../../docs/templates.md");
        let catalogue = loaded();
        let cited = catalogue
            .traffic_sources()
            .iter()
            .map(|t| (&t.id, &t.docs))
            .chain(
                catalogue
                    .affiliate_networks()
                    .iter()
                    .map(|t| (&t.id, &t.docs)),
            );
        for (id, docs) in cited {
            assert!(
                page.contains(&format!("`{id}`")),
                "docs/templates.md lacks {id}"
            );
            for doc in docs {
                assert!(
                    page.contains(&doc.url),
                    "docs/templates.md lacks {}",
                    doc.url
                );
            }
        }
    }
}

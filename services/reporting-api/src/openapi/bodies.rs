//! The shapes of the answers the handlers build with `json!` (the raw-table lists, the
//! dashboard, reports, exchange rates) and of the query strings they check with
//! `filters::Params`, written as types for the OpenAPI document alone: nothing builds
//! them. A field added to an answer and not here, or a field here that an answer lacks,
//! fails the end-to-end tests, which validate every answer against the document.

// Documentation types: read by utoipa's derives only, never constructed.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// The postback outcome words (`postback_outcomes::words`).
fn postback_outcomes() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(crate::api::postback_outcomes::words()))
        .build()
}

/// A comma-separated list of `words` (`style=form`, `explode=false`).
fn list_of(words: utoipa::openapi::schema::Object) -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(words)
        .build()
}

fn conversion_statuses() -> utoipa::openapi::schema::Array {
    list_of(traffsure_core::openapi::conversion_status())
}

fn click_kinds() -> utoipa::openapi::schema::Array {
    list_of(
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(["visit", "lander_click", "direct_visit"]))
            .build(),
    )
}

/// The filters every raw-table list takes for the time range and paging.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Start, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS, in `timezone`
    from: Option<String>,
    /// End (a bare date includes the whole day)
    to: Option<String>,
    /// IANA time zone for from/to (default UTC)
    timezone: Option<String>,
    /// next_cursor of the previous page
    cursor: Option<String>,
    /// Page size, 1–500 (default 50)
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// Filters by the objects a click went through (0 matches none).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ObjectFilters {
    /// Traffic source id
    traffic_source: Option<u32>,
    /// Offer id
    offer: Option<u32>,
    /// Lander id
    lander: Option<u32>,
    /// Affiliate network id
    network: Option<u32>,
}

/// Filters on the click's visitor columns, each an exact value.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AgentFilters {
    /// Why the click is a bot (one of the bot reason words)
    bot_reason: Option<String>,
    browser_family: Option<String>,
    browser_major: Option<String>,
    os_family: Option<String>,
    os_major: Option<String>,
    device_family: Option<String>,
    device_brand: Option<String>,
    device_model: Option<String>,
}

/// Filters on the click's sub values and its device, OS and browser, each an exact value.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubFilters {
    sub1: Option<String>,
    sub2: Option<String>,
    sub3: Option<String>,
    sub4: Option<String>,
    sub5: Option<String>,
    sub6: Option<String>,
    sub7: Option<String>,
    sub8: Option<String>,
    sub9: Option<String>,
    sub10: Option<String>,
    device: Option<String>,
    os: Option<String>,
    browser: Option<String>,
}

/// `format` of the lists that also answer CSV.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FormatParam {
    /// json (default) or csv: the same page as CSV, the next page's cursor in the
    /// X-Next-Cursor header
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClickFilters {
    /// Flow id or slug
    flow: Option<String>,
    /// Two-letter country code
    country: Option<String>,
    sub_id: Option<String>,
    source: Option<String>,
    /// include (default), exclude or only
    #[param(pattern = "^(include|exclude|only)$")]
    bots: Option<String>,
    /// Comma-separated kinds, any of: visit (through the tracking link), lander_click (a
    /// click-through from a lander to an offer), direct_visit (recorded by the
    /// direct-tracking script)
    #[param(style = Form, explode = false, schema_with = click_kinds)]
    kind: Option<Vec<String>>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConversionFilters {
    /// Flow id or slug
    flow: Option<String>,
    /// Goal key (any case)
    goal: Option<String>,
    /// Current status of the conversion; comma-separated for several (approved,pending)
    #[param(style = Form, explode = false, schema_with = conversion_statuses)]
    status: Option<Vec<String>>,
    /// true: only conversions made from their click hash alone (the click never arrived
    /// within attribution's hold timeout); false: only the others
    click_missing: Option<bool>,
    /// true: only conversions over a cap of their offer or source; false: only the others
    over_cap: Option<bool>,
    /// Two-letter country code of the click
    country: Option<String>,
    /// The click's source
    source: Option<String>,
    /// The click's sub_id
    sub_id: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PostbackFilters {
    /// Flow id or slug
    flow: Option<String>,
    /// Click hash
    click: Option<String>,
    /// HTTP status answered to the postback, e.g. 200, 404, 422
    response_status: Option<u16>,
    /// Older name of response_status, still accepted (send one of the two)
    status: Option<u16>,
    /// What became of the postback: an attribution outcome, held (accepted, not decided
    /// yet) or refused (answered with an error, never attributed)
    #[param(schema_with = postback_outcomes)]
    outcome: Option<String>,
    /// Goal as logged (case-insensitive)
    goal: Option<String>,
    /// Action id sent under uid or an alias (tx, txid, transaction_id, action_id, tid), exact
    uid: Option<String>,
    /// The status parameter as sent (case-insensitive), e.g. approved, 1
    raw_status: Option<String>,
    /// Case-insensitive partial match over every postback parameter value and the click hash
    q: Option<String>,
    /// json (default) or csv: the same page as CSV, the next page's cursor in the
    /// X-Next-Cursor header
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboundFilters {
    /// Flow id or slug
    flow: Option<String>,
    conversion_id: Option<String>,
    /// Older name of conversion_id, still accepted (send one of the two)
    conversion: Option<String>,
    /// Outbound postback id
    outbound_id: Option<String>,
    /// Traffic source id of the conversion
    traffic_source_id: Option<u32>,
    /// Offer id of the conversion
    offer_id: Option<u32>,
    /// Goal key
    goal: Option<String>,
    /// Conversion status
    #[param(schema_with = traffsure_core::openapi::conversion_status)]
    status: Option<String>,
    /// Exact amount, e.g. 2.5
    revenue: Option<String>,
    /// Another name for revenue (a conversion carries one amount)
    payout: Option<String>,
    /// Three-letter currency
    currency: Option<String>,
    /// Rejection reason, case-insensitive
    reason: Option<String>,
    /// Receiver's HTTP code (0 = no answer)
    http_status: Option<u32>,
    /// Part of the error text, case-insensitive
    error: Option<String>,
    /// Part of the URL sent, case-insensitive
    url: Option<String>,
    /// Integration type: s2s or pixel
    integration: Option<String>,
    /// Type of postback: conversion, click, impression or event
    #[param(pattern = "^(conversion|click|impression|event)$")]
    postback_type: Option<String>,
    /// Whose postback it was: flow, global, offer, source, offer:<id> or source:<id>
    scope: Option<String>,
    /// json (default) or csv: the same page as CSV, the next cursor in X-Next-Cursor
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
    /// State after the attempt
    #[param(schema_with = traffsure_core::openapi::outbound_state)]
    state: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// Comma-separated dimensions (up to four), from: day, hour, flow, traffic_source,
    /// offer, lander, network, country, source, sub_id, sub1…sub10, goal, device, os,
    /// browser, browser_family, browser_major, browser_minor, os_family, os_major,
    /// os_minor, device_family, device_brand, device_model, bot_reason, asn, as_org,
    /// datacenter, rate_exceeded (default day)
    group_by: Option<String>,
    /// Start date or time in `timezone` (default: 7 days ago)
    from: Option<String>,
    /// End date or time in `timezone`
    to: Option<String>,
    /// IANA time zone for days, hours and the range (default UTC)
    timezone: Option<String>,
    /// Flow id or slug
    flow: Option<String>,
    /// Two-letter code
    country: Option<String>,
    source: Option<String>,
    sub_id: Option<String>,
    /// Goal (filters conversions)
    goal: Option<String>,
    /// Count only conversions made without their click (true) or only those with it (false)
    click_missing: Option<bool>,
    /// Count only conversions over a cap (true) or only the others (false)
    over_cap: Option<bool>,
    /// Only clicks of this autonomous system (13335 or AS13335)
    asn: Option<String>,
    /// Only clicks from datacenter addresses (true) or the others (false)
    datacenter: Option<bool>,
    /// Only clicks over the per-address rate (true) or the others (false)
    rate_exceeded: Option<bool>,
    /// A grouped dimension, its name column or a metric; prefix - for descending
    sort: Option<String>,
    /// json (default) or csv
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
    /// true: also merge unique clicks (costly over long ranges); otherwise unique_clicks is null
    unique_clicks: Option<bool>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RateFilters {
    /// First day, YYYY-MM-DD
    from: Option<String>,
    /// Last day, YYYY-MM-DD
    to: Option<String>,
    base: Option<String>,
    currency: Option<String>,
    /// 1 to 10000 (default 1000)
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

/// One click.
#[derive(ToSchema)]
pub struct Click {
    click_hash: String,
    flow_id: u32,
    flow_name: String,
    /// `YYYY-MM-DD hh:mm:ss`, UTC
    time: String,
    ip: String,
    country: String,
    sub_id: String,
    source: String,
    device: String,
    os: String,
    browser: String,
    browser_family: String,
    browser_major: String,
    browser_minor: String,
    os_family: String,
    os_major: String,
    os_minor: String,
    device_family: String,
    device_brand: String,
    device_model: String,
    destination_url: String,
    /// Decimal
    cost: String,
    is_bot: bool,
    /// Why the click is a bot; empty for a person
    bot_reason: String,
    #[schema(pattern = "^(visit|lander_click|direct_visit)$")]
    kind: String,
    /// For a lander click: its visit's click hash
    parent_click_hash: String,
    /// The traffic source's own click id
    external_id: String,
    /// The link's `sub1`…`sub10` (`sub2` … `sub10` alike)
    sub1: String,
    sub2: String,
    sub3: String,
    sub4: String,
    sub5: String,
    sub6: String,
    sub7: String,
    sub8: String,
    sub9: String,
    sub10: String,
    /// The address's autonomous system; 0 when not known
    asn: u32,
    /// The autonomous system's organisation
    as_org: String,
    /// The address is a hosting provider's, cloud's or CDN's
    datacenter: bool,
    /// The address went over the edge's per-address click rate
    rate_exceeded: bool,
    /// Traffic source id, 0 for none
    traffic_source_id: u32,
    /// The object's current name; `#<id>` for an id no object has, empty for none
    traffic_source_name: String,
    offer_id: u32,
    offer_name: String,
    lander_id: u32,
    lander_name: String,
    network_id: u32,
    network_name: String,
}

/// One page of clicks, newest first.
#[derive(ToSchema)]
pub struct ClickPage {
    items: Vec<Click>,
    page_size: u64,
    /// The cursor of the next page; null on the last one
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// One conversion in its current state.
#[derive(ToSchema)]
pub struct Conversion {
    conversion_id: String,
    click_hash: String,
    flow_id: u32,
    flow_name: String,
    goal: String,
    status: String,
    /// Decimal, in `currency`
    revenue: String,
    currency: String,
    /// The revenue in the reporting currency at the rate of the conversion's day (or the
    /// nearest earlier day with one); null while no rate converts it
    #[schema(required = true)]
    revenue_converted: Option<String>,
    /// The reporting currency
    currency_converted: String,
    uid: String,
    time: String,
    updated_at: String,
    version: u32,
    /// Made from its click hash alone: the click never arrived within the hold timeout
    click_missing: bool,
    /// The latest version's rejection reason (empty: none)
    reason: String,
    /// The traffic source's own click id, from the click
    external_id: String,
    traffic_source_id: u32,
    traffic_source_name: String,
    offer_id: u32,
    offer_name: String,
    lander_id: u32,
    lander_name: String,
    network_id: u32,
    network_name: String,
    /// Over a cap of its offer or source when it arrived
    over_cap: bool,
    /// Decimal, in `payout_currency`: what the traffic source is paid for it
    payout: String,
    payout_currency: String,
    /// The click's, copied when the conversion was made
    country: String,
    source: String,
    sub_id: String,
    device: String,
    os: String,
    browser: String,
    /// The link's `sub1`…`sub10` (`sub2` … `sub10` alike)
    sub1: String,
    sub2: String,
    sub3: String,
    sub4: String,
    sub5: String,
    sub6: String,
    sub7: String,
    sub8: String,
    sub9: String,
    sub10: String,
    /// The click's visitor columns
    browser_family: String,
    browser_major: String,
    browser_minor: String,
    os_family: String,
    os_major: String,
    os_minor: String,
    device_family: String,
    device_brand: String,
    device_model: String,
    /// Why the click is a bot; empty for a person
    bot_reason: String,
    /// Autonomous system number of the click's address, 0 when unknown
    asn: u32,
    as_org: String,
    datacenter: bool,
    rate_exceeded: bool,
}

#[derive(ToSchema)]
pub struct ConversionPage {
    items: Vec<Conversion>,
    page_size: u64,
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// The conversion a postback is tied to; its fields are null while the conversion is not
/// in the table yet.
#[derive(ToSchema)]
pub struct PostbackConversion {
    conversion_id: String,
    /// The version this postback wrote (null for a duplicate)
    #[schema(required = true)]
    version: Option<u32>,
    #[schema(required = true)]
    latest_version: Option<u32>,
    #[schema(required = true)]
    status: Option<String>,
    #[schema(required = true)]
    revenue: Option<String>,
    #[schema(required = true)]
    currency: Option<String>,
}

/// One postback log entry.
#[derive(ToSchema)]
pub struct Postback {
    postback_id: String,
    flow_id: u32,
    flow_name: String,
    click_hash: String,
    goal: String,
    response_status: u16,
    reason: String,
    message: String,
    ip: String,
    time: String,
    delta_ms: i64,
    /// What became of it: an attribution outcome, held or refused
    outcome: String,
    outcome_message: String,
    #[schema(required = true)]
    decided_at: Option<String>,
    #[schema(required = true)]
    conversion: Option<PostbackConversion>,
}

#[derive(ToSchema)]
pub struct PostbackPage {
    items: Vec<Postback>,
    page_size: u64,
    #[schema(required = true)]
    next_cursor: Option<String>,
}

#[derive(ToSchema)]
pub struct PostbackParam {
    name: String,
    value: String,
}

/// The request as received.
#[derive(ToSchema)]
pub struct PostbackPayload {
    method: String,
    content_type: String,
    path: String,
    params: Vec<PostbackParam>,
    /// Whether parameters were left out for size
    truncated: bool,
}

/// One postback log entry with its full payload.
#[derive(ToSchema)]
pub struct PostbackEntry {
    postback_id: String,
    flow_id: u32,
    flow_name: String,
    click_hash: String,
    goal: String,
    response_status: u16,
    reason: String,
    message: String,
    ip: String,
    time: String,
    delta_ms: i64,
    outcome: String,
    outcome_message: String,
    #[schema(required = true)]
    decided_at: Option<String>,
    #[schema(required = true)]
    conversion: Option<PostbackConversion>,
    payload: PostbackPayload,
}

/// One attempt to send an outbound postback, with the columns of Affise's affiliate
/// postback log.
#[derive(ToSchema)]
pub struct OutboundAttempt {
    attempt_id: String,
    conversion_id: String,
    outbound_id: String,
    flow_id: u32,
    flow_name: String,
    traffic_source_id: u32,
    offer_id: u32,
    click_hash: String,
    goal: String,
    status: String,
    /// The conversion's amount (the {payout} macro)
    payout: String,
    /// The same amount (the {revenue} macro)
    revenue: String,
    currency: String,
    reason: String,
    method: String,
    url: String,
    /// The receiver's HTTP code, 0 for no answer
    http_status: u32,
    error: String,
    latency_ms: u32,
    attempt: u32,
    state: String,
    date: String,
    time_ms: i64,
    manual: bool,
    #[schema(pattern = "^(s2s|pixel)$")]
    integration: String,
    #[schema(pattern = "^(conversion|click|impression|event)$")]
    postback_type: String,
    /// Whose postback it was: flow, global, offer:<id> or source:<id>
    scope: String,
    /// Why an over-cap conversion's postback was not sent: held or suppressed; empty
    /// otherwise
    cap_action: String,
}

#[derive(ToSchema)]
pub struct OutboundPage {
    items: Vec<OutboundAttempt>,
    page_size: u64,
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// `POST /api/v1/outbound-postbacks/replay`: the dispatcher's answer.
#[derive(ToSchema)]
pub struct Replayed {
    /// How many outbound postbacks were sent again
    replayed: u32,
}

/// What a test send sent and what the receiver answered.
#[derive(ToSchema)]
pub struct TestSend {
    method: String,
    url: String,
    /// 0 when no answer
    http_status: u32,
    /// The answer's first bytes
    response: String,
    error: String,
    latency_ms: u64,
}

/// Ready outbound postbacks to start from, by name.
#[derive(ToSchema)]
pub struct Presets {
    /// A JSON POST of every macro with a secret Authorization header
    crm: traffsure_core::flow::OutboundSpec,
}

/// Approved revenue no exchange rate converts yet (on or before its day): counted here,
/// in none of the sums, and converted once a rate arrives.
#[derive(ToSchema)]
pub struct WithoutRate {
    conversions: i64,
    by_currency: Vec<WithoutRateCurrency>,
}

#[derive(ToSchema)]
pub struct WithoutRateCurrency {
    currency: String,
    conversions: i64,
    /// Decimal, in that currency
    revenue: String,
}

#[derive(ToSchema)]
pub struct ConversionsByStatus {
    approved: i64,
    pending: i64,
    rejected: i64,
}

/// One hour of today or yesterday (UTC).
#[derive(ToSchema)]
pub struct HourPoint {
    #[schema(maximum = 23)]
    hour: u8,
    clicks: i64,
    conversions: i64,
    revenue: String,
}

#[derive(ToSchema)]
pub struct Hourly {
    today: Vec<HourPoint>,
    yesterday: Vec<HourPoint>,
}

/// A flow, traffic source or offer of a top list.
#[derive(ToSchema)]
pub struct TopObject {
    id: u32,
    name: String,
    clicks: i64,
    offer_clicks: i64,
}

#[derive(ToSchema)]
pub struct TopCountry {
    country: String,
    clicks: i64,
    offer_clicks: i64,
}

/// Today's (UTC) top five flows, countries and traffic sources by clicks, and offers by
/// offer clicks.
#[derive(ToSchema)]
pub struct TopToday {
    flows: Vec<TopObject>,
    countries: Vec<TopCountry>,
    traffic_sources: Vec<TopObject>,
    offers: Vec<TopObject>,
}

/// Today's figures (in `timezone`) and today against yesterday by hour.
#[derive(ToSchema)]
pub struct Dashboard {
    /// Today, YYYY-MM-DD
    date: String,
    /// Yesterday, YYYY-MM-DD
    yesterday: String,
    timezone: String,
    clicks_today: i64,
    /// Conversions created today whose current status is approved or pending
    conversions_today: i64,
    conversions_by_status: ConversionsByStatus,
    /// Approved revenue in the reporting currency, decimal
    revenue_today: String,
    /// The currency of every revenue figure
    reporting_currency: String,
    without_rate_today: WithoutRate,
    active_flows: u64,
    hourly: Hourly,
    top_today: TopToday,
    /// Today's cost as reports count it (cost updates over tracked cost), decimal in the
    /// reporting currency
    cost_today: String,
    /// Revenue less cost, decimal
    profit_today: String,
    /// Profit over cost, in percent
    roi_today: f64,
    /// Cost per click, decimal
    cpc_today: String,
    /// Cost per conversion, decimal
    cpa_today: String,
    /// Revenue per click, decimal
    epc_today: String,
    /// Where today's cost comes from: link, model or update alone, mixed from several,
    /// empty from none
    #[schema(pattern = "^(link|model|update|mixed|)$")]
    cost_source_today: String,
}

#[derive(ToSchema)]
pub struct CostWithoutRate {
    currency: String,
    /// Decimal, in that currency
    cost: String,
}

/// A report: one row per group, and the totals.
#[derive(ToSchema)]
pub struct Report {
    group_by: Vec<String>,
    timezone: String,
    from: String,
    to: String,
    /// One key per grouped dimension (plus its name column: flow_name, offer_name, …)
    /// and every metric: clicks, unique_clicks, bots, conversions, approved, pending,
    /// rejected, cr, revenue, cost, profit, roi, epc, without_rate, lander_views,
    /// lander_clicks, lander_ctr, offer_clicks, offer_cr, impressions, ctr, payout, cpc,
    /// cpa, cost_source
    rows: Vec<BTreeMap<String, Value>>,
    /// Every metric over the whole range
    totals: BTreeMap<String, Value>,
    /// The currency of revenue, profit and EPC
    reporting_currency: String,
    without_rate: WithoutRate,
    /// Cost no exchange rate converts yet, by currency (in no sum)
    cost_without_rate: Vec<CostWithoutRate>,
}

#[derive(ToSchema)]
pub struct ExchangeRate {
    /// YYYY-MM-DD
    day: String,
    base: String,
    currency: String,
    /// Units of currency one unit of base buys on day
    rate: f64,
    updated_at: String,
}

#[derive(ToSchema)]
pub struct ExchangeRates {
    reporting_currency: String,
    rates: Vec<ExchangeRate>,
}

/// `PUT /api/v1/exchange-rates`: what was stored.
#[derive(ToSchema)]
pub struct RatesStored {
    day: String,
    base: String,
    stored: u64,
}

/// `POST /api/v1/exchange-rates/import`: what was imported.
#[derive(ToSchema)]
pub struct RatesImported {
    base: String,
    days: u64,
    stored: u64,
}

/// The current login: an admin's session with its CSRF token, or an API key's
/// (`username` null, `api_key` true).
#[derive(ToSchema)]
pub struct Session {
    #[schema(required = true)]
    username: Option<String>,
    /// Send it back in `X-CSRF-Token` with every write made with the session cookie
    csrf_token: Option<String>,
    api_key: Option<bool>,
    /// The session's user; 0 for the configured admin
    user_id: Option<u32>,
    #[schema(schema_with = role)]
    role: Option<String>,
    /// The flows the user sees; empty for all
    flows: Option<Vec<u32>>,
    /// Login only: where the page goes next (a path on this site)
    next: Option<String>,
}

#[derive(ToSchema)]
pub struct LoggedOut {
    logged_out: bool,
}

#[derive(ToSchema)]
pub struct FlowList {
    flows: Vec<crate::api::flows::FlowWithLinks>,
}

#[derive(ToSchema)]
pub struct SourceTemplates {
    templates: Vec<traffsure_core::templates::TrafficSourceTemplate>,
}

#[derive(ToSchema)]
pub struct NetworkTemplates {
    templates: Vec<traffsure_core::templates::AffiliateNetworkTemplate>,
}

/// The rule condition fields `GET /api/v1/suggestions` reads (`suggestions::FIELDS`).
fn suggestion_fields() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(
            crate::api::suggestions::FIELDS.iter().map(|(f, _)| *f),
        ))
        .build()
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SuggestionParams {
    /// The rule condition field whose values are wanted
    #[param(schema_with = suggestion_fields)]
    field: String,
    /// Flow id or slug (default: every flow the user sees)
    flow: Option<String>,
    /// Days looked back, 1–90 (default 7)
    #[param(minimum = 1, maximum = 90)]
    days: Option<u32>,
    /// Only values containing this, case-insensitive
    q: Option<String>,
    /// How many values, 1–100 (default 20)
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

#[derive(ToSchema)]
pub struct SuggestedValue {
    value: String,
    /// Clicks with that value in the range
    clicks: u64,
}

/// Values of a field seen in recent clicks, most clicked first.
#[derive(ToSchema)]
pub struct Suggestions {
    field: String,
    /// The flow asked for; null for every flow
    #[schema(required = true)]
    flow: Option<u32>,
    days: u32,
    values: Vec<SuggestedValue>,
}

/// What a user may do: owner (everything, users included), admin (everything but
/// users), analyst (reads only).
fn role() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(crate::users::Role::WORDS))
        .build()
}

/// `GET /api/v1/me`: who the request is from.
#[derive(ToSchema)]
pub struct Me {
    /// The user's id; 0 for the configured admin
    id: u32,
    username: String,
    #[schema(schema_with = role)]
    role: String,
    /// The flows the user sees; empty for all
    flows: Vec<u32>,
    /// Whether the user sees only some flows
    restricted: bool,
    /// session, api_key, configured_key or system
    via: String,
    /// The configured admin (user 0)
    bootstrap: bool,
    /// The IANA time zone the panel reads days and hours in for this user (UTC unless set)
    timezone: String,
}

/// `PUT /api/v1/me`: one's own settings.
#[derive(ToSchema)]
pub struct MeChange {
    /// An IANA time zone, such as Asia/Tokyo
    timezone: String,
}

/// An API key as lists show it: its prefix and name, never the secret.
#[derive(ToSchema)]
pub struct ApiKeyView {
    key_id: String,
    /// `ts_<key_id>_`: how the key starts
    prefix: String,
    name: String,
    user_id: u32,
    created_at: String,
}

/// A new API key, with the key itself: shown once.
#[derive(ToSchema)]
pub struct NewApiKeyView {
    key_id: String,
    prefix: String,
    name: String,
    user_id: u32,
    created_at: String,
    /// The whole key: send it as `Authorization: Bearer <key>`
    key: String,
    #[schema(schema_with = role)]
    role: String,
}

#[derive(ToSchema)]
pub struct ApiKeyList {
    api_keys: Vec<ApiKeyView>,
}

/// A user. The configured admin is user 0 (`bootstrap` true, no times).
#[derive(ToSchema)]
pub struct UserView {
    id: u32,
    username: String,
    #[schema(schema_with = role)]
    role: String,
    /// Flow ids the user is restricted to; empty for all
    flows: Vec<u32>,
    created_at: Option<String>,
    updated_at: Option<String>,
    /// Only on the configured admin
    bootstrap: Option<bool>,
    /// The user's API keys (`GET /api/v1/users/{id}` of a stored user)
    api_keys: Option<Vec<ApiKeyView>>,
    /// The IANA time zone the panel reads days and hours in for this user (UTC unless
    /// set); absent only in audit entries written before it was stored
    timezone: Option<String>,
}

#[derive(ToSchema)]
pub struct UserList {
    users: Vec<UserView>,
}

/// `POST /api/v1/users`.
#[derive(ToSchema)]
pub struct NewUser {
    username: String,
    /// At least 10 characters
    password: String,
    #[schema(schema_with = role)]
    role: String,
    /// Flow ids or slugs the user is restricted to; none for every flow
    flows: Option<Vec<Value>>,
    /// An IANA time zone; UTC when absent
    timezone: Option<String>,
}

/// `PUT /api/v1/users/{id}`: the fields to change.
#[derive(ToSchema)]
pub struct UserChange {
    username: Option<String>,
    password: Option<String>,
    #[schema(schema_with = role)]
    role: Option<String>,
    flows: Option<Vec<Value>>,
    /// An IANA time zone; the only field the configured admin (user 0) takes
    timezone: Option<String>,
}

/// `POST /api/v1/users/{id}/api-keys`.
#[derive(ToSchema)]
pub struct NewKey {
    /// 1 to 100 characters
    name: String,
}

#[derive(ToSchema)]
pub struct UserDeleted {
    /// The id of the user deleted
    deleted: u32,
}

#[derive(ToSchema)]
pub struct KeyRevoked {
    /// The key id revoked
    revoked: String,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilters {
    /// Username, exact
    user: Option<String>,
    user_id: Option<u32>,
    /// The kind of object changed
    object: Option<String>,
    object_id: Option<String>,
    /// What was done
    action: Option<String>,
    /// json (default) or csv: the same page as CSV, the next cursor in X-Next-Cursor
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
}

/// One change, who made it and how.
#[derive(ToSchema)]
pub struct AuditEntry {
    id: String,
    time: String,
    time_ms: i64,
    user_id: u32,
    username: String,
    role: String,
    via: String,
    /// The kind of object changed
    object: String,
    object_id: String,
    /// The flow it is about; 0 for none
    flow_id: u32,
    action: String,
    /// The object before the change; null for a creation
    #[schema(required = true)]
    before: Option<Value>,
    /// The object after the change; null for a deletion
    #[schema(required = true)]
    after: Option<Value>,
}

#[derive(ToSchema)]
pub struct AuditPage {
    items: Vec<AuditEntry>,
    page_size: u64,
    #[schema(required = true)]
    next_cursor: Option<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CostFilters {
    /// Flow id
    flow: Option<u32>,
    /// 1 to 10000 (default 1000)
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

/// A cost update: what a flow's traffic cost over whole UTC hours, optionally narrowed
/// by sub values (empty = any).
#[derive(ToSchema)]
pub struct CostUpdate {
    id: String,
    flow: u32,
    flow_name: String,
    /// `YYYY-MM-DD hh:mm:ss`, UTC
    from: String,
    /// End, excluded
    to: String,
    /// Decimal, in `currency`
    amount: String,
    currency: String,
    sub_id: String,
    source: String,
    sub1: Option<String>,
    sub2: Option<String>,
    sub3: Option<String>,
    sub4: Option<String>,
    sub5: Option<String>,
    sub6: Option<String>,
    sub7: Option<String>,
    sub8: Option<String>,
    sub9: Option<String>,
    sub10: Option<String>,
    created_at: String,
    /// Who sent it
    created_by: String,
}

#[derive(ToSchema)]
pub struct CostList {
    costs: Vec<CostUpdate>,
}

/// A flow by its id or its slug.
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub enum FlowIdOrSlug {
    Id(u32),
    Slug(String),
}

/// `POST /api/v1/costs`: one update.
#[derive(ToSchema)]
pub struct NewCostUpdate {
    /// The flow: its id, or its slug
    flow: FlowIdOrSlug,
    /// Start, UTC, on a whole hour (`2026-03-01 00:00:00` or a date)
    from: String,
    /// End (excluded), UTC, on a whole hour
    to: String,
    /// What the range cost: decimal text or a number
    amount: Value,
    /// The reporting currency when absent
    currency: Option<String>,
    sub_id: Option<String>,
    source: Option<String>,
    sub1: Option<String>,
    sub2: Option<String>,
    sub3: Option<String>,
    sub4: Option<String>,
    sub5: Option<String>,
    sub6: Option<String>,
    sub7: Option<String>,
    sub8: Option<String>,
    sub9: Option<String>,
    sub10: Option<String>,
}

/// `POST /api/v1/costs/import`: what was stored.
#[derive(ToSchema)]
pub struct CostsImported {
    imported: u64,
    ids: Vec<String>,
}

/// The global outbound postbacks, every flow fires them (secret header values masked).
#[derive(ToSchema)]
pub struct GlobalPostbacks {
    outbound_postbacks: Vec<traffsure_core::flow::OutboundSpec>,
    /// 0 while they were never saved
    revision: u64,
    updated_at_ms: i64,
}

/// `PUT /api/v1/outbound-postbacks/global`: the new list (a secret header sent back as
/// the mask keeps its stored value).
#[derive(ToSchema)]
pub struct GlobalPostbacksChange {
    outbound_postbacks: Option<Vec<traffsure_core::flow::OutboundSpec>>,
}

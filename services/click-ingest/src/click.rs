//! The tracking link: resolve the flow, mint a click hash, fill the destination's macros,
//! redirect, and hand the click event to the Kafka producer queue.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use traffsure_core::cidr::CidrList;
use traffsure_core::client_ip::ClientIpResolver;
use traffsure_core::routing::{self, ClickAttributes, LazyAttributes, Step};
use traffsure_core::ua_data::UaData;
use traffsure_core::{bots, macros, now_ms, user_agent, visitor, ClickHashKeys};
use traffsure_events::{BotReason, Flow, FlowStatus, RedirectMode};
use traffsure_kafka::FlowRegistry;
use traffsure_telemetry::prometheus::IntCounter;

use crate::event::{ClickEvent, Funnel};
use crate::publisher::Publisher;

/// Longest tracking link (path and query) accepted; longer ones answer 414.
pub const MAX_URI_BYTES: usize = 8192;

pub struct Edge {
    pub registry: Arc<FlowRegistry>,
    pub keys: ClickHashKeys,
    pub geo: crate::geo::GeoIp,
    pub signals: crate::signals::Signals,
    pub publisher: Publisher,
    /// The impression log and producer (`impressions` topic), kept like the clicks'.
    pub impressions: Publisher,
    pub unknown_flow_url: String,
    pub visitor_cookie: String,
    pub client_ip: ClientIp,
    pub bots: BotFilter,
    /// uap-core's regexes and the crawler patterns, reloaded when their files change.
    pub user_agents: Arc<UaData>,
    /// OTLP tracing is on: each click gets a span whose W3C trace context travels with
    /// the click event in Kafka headers. Off, a click pays for neither.
    pub trace_clicks: bool,
    /// The shared count behind caps (`crate::caps`).
    pub caps: traffsure_kafka::caps::SharedCounter,
}

/// Where the visitor's address comes from: the rule of `traffsure_core::client_ip`, with
/// its header name parsed once rather than on every click.
pub struct ClientIp {
    resolver: ClientIpResolver,
    header: header::HeaderName,
}

impl ClientIp {
    pub fn new(resolver: ClientIpResolver) -> Result<Self, header::InvalidHeaderName> {
        let header = header::HeaderName::from_bytes(resolver.header().as_bytes())?;
        Ok(Self { resolver, header })
    }

    /// The visitor's address: the peer, or what a trusted proxy's header says.
    pub fn of(&self, req: &HttpRequest) -> Option<IpAddr> {
        let forwarded = req
            .headers()
            .get(&self.header)
            .and_then(|v| v.to_str().ok());
        self.resolver
            .client_ip(req.peer_addr().map(|addr| addr.ip()), forwarded)
    }

    /// Whether the visitor reached the edge over HTTPS: the edge itself speaks plain HTTP,
    /// so only a trusted proxy can say so.
    pub fn behind_https(&self, req: &HttpRequest) -> bool {
        let text = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        self.resolver.forwarded_https(
            req.peer_addr().map(|addr| addr.ip()),
            text(header::HeaderName::from_static("x-forwarded-proto")),
            text(header::FORWARDED),
        )
    }
}

/// Bot flagging beyond what the user agent alone says (crawlers, headless browsers).
pub struct BotFilter {
    pub ips: CidrList,
    pub user_agent_markers: Vec<String>,
    /// Clicks without a user agent are bots.
    pub empty_user_agent: bool,
}

impl BotFilter {
    /// Why the click is a bot: the first reason that applies, the configured lists before
    /// what the user agent says; `None` for a person.
    pub fn reason(
        &self,
        parsed: &user_agent::UserAgent,
        raw: &str,
        ip: Option<IpAddr>,
    ) -> Option<BotReason> {
        if self.empty_user_agent && raw.trim().is_empty() {
            Some(BotReason::EmptyUa)
        } else if bots::matches_any(raw, &self.user_agent_markers) {
            Some(BotReason::UaList)
        } else if ip.is_some_and(|ip| self.ips.contains(ip)) {
            Some(BotReason::IpList)
        } else {
            parsed.bot
        }
    }
}

/// `traffsure_clicks_total` by outcome, the label values resolved once: a click bumps
/// one counter without hashing labels.
pub(crate) struct Clicks {
    redirected: IntCounter,
    redirected_bot: IntCounter,
    uri_too_long: IntCounter,
    inactive_flow: IntCounter,
    unknown_flow: IntCounter,
    /// Lander click-throughs redirected to an offer (`/lp/click`).
    pub(crate) lander_click: IntCounter,
}

pub(crate) fn clicks_total() -> &'static Clicks {
    static METRIC: std::sync::OnceLock<Clicks> = std::sync::OnceLock::new();
    METRIC.get_or_init(|| {
        let total = traffsure_telemetry::counter_vec(
            "traffsure_clicks_total",
            "Tracking-link requests by outcome",
            &["outcome"],
        );
        Clicks {
            redirected: total.with_label_values(&["redirected"]),
            redirected_bot: total.with_label_values(&["redirected_bot"]),
            uri_too_long: total.with_label_values(&["uri_too_long"]),
            inactive_flow: total.with_label_values(&["inactive_flow"]),
            unknown_flow: total.with_label_values(&["unknown_flow"]),
            lander_click: total.with_label_values(&["lander_click"]),
        }
    })
}

thread_local! {
    /// Each HTTP worker encodes its click events into one reused buffer (the producer
    /// copies the bytes).
    static EVENT_BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(1024));
}

/// Most extra parameters kept per click, and most parameters read from one query.
const MAX_EXTRA: usize = 32;
const MAX_PARAMS: usize = 64;
/// Longest `external_id` kept (bytes): a tracking link's longer one is cut, a direct
/// visit's refused.
pub const MAX_EXTERNAL_ID: usize = 255;

/// The tracking-link query parameters that have a field of their own in a click.
#[derive(Debug, Default)]
pub struct ClickParams {
    pub sub_id: String,
    pub source: String,
    pub subs: Vec<String>,
    /// The cost as sent when it is a valid decimal, else empty.
    pub cost: String,
    pub cost_micros: i64,
    /// The currency of the cost (`cost_currency`, three letters), upper case; empty when
    /// not sent or not a currency code (the cost is then in the reporting currency).
    pub cost_currency: String,
    /// The traffic source's own click id (`external_id`) as sent; a click keeps
    /// `external_id()`.
    pub external_id: String,
    /// Everything else, including a `cost` that is not a number and a `cost_currency`
    /// that is not a currency code (kept, not trusted).
    pub extra: std::collections::BTreeMap<String, String>,
}

impl ClickParams {
    pub fn parse(query: &str) -> Self {
        let mut params = Self {
            subs: vec![String::new(); 10],
            ..Self::default()
        };
        for (name, value) in form_pairs(query) {
            match name.as_ref() {
                "sub_id" => params.sub_id = value.into_owned(),
                "source" => params.source = value.into_owned(),
                "external_id" => params.external_id = value.into_owned(),
                "cost" => match traffsure_core::parse_micros(value.trim()) {
                    Ok(micros) if micros >= 0 => {
                        params.cost = value.trim().to_string();
                        params.cost_micros = micros;
                    }
                    _ => {
                        params.cost.clear();
                        params.cost_micros = 0;
                        params.extra.insert(name.into_owned(), value.into_owned());
                    }
                },
                "cost_currency" => {
                    let code = value.trim();
                    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphabetic()) {
                        params.cost_currency = code.to_ascii_uppercase();
                    } else {
                        params.cost_currency.clear();
                        params.extra.insert(name.into_owned(), value.into_owned());
                    }
                }
                other => match sub_index(other) {
                    Some(i) => params.subs[i] = value.into_owned(),
                    None => {
                        if params.extra.len() < MAX_EXTRA || params.extra.contains_key(other) {
                            params.extra.insert(name.into_owned(), value.into_owned());
                        }
                    }
                },
            }
        }
        params
    }

    /// The traffic source's click id as a click keeps it: cut to `MAX_EXTERNAL_ID` bytes.
    pub fn external_id(&self) -> &str {
        macros::truncate_str(&self.external_id, MAX_EXTERNAL_ID)
    }

    /// The value of a tracking-parameter macro (`sub_id`, `source`, `sub1`…`sub10`,
    /// `cost`, `external_id`).
    pub fn value(&self, name: &str) -> Option<&str> {
        match name {
            "sub_id" => Some(&self.sub_id),
            "source" => Some(&self.source),
            "cost" => Some(&self.cost),
            "external_id" => Some(self.external_id()),
            other => sub_index(other).map(|i| self.subs[i].as_str()),
        }
    }
}

/// `sub1`…`sub10` → 0…9.
fn sub_index(name: &str) -> Option<usize> {
    match name.strip_prefix("sub")?.parse::<usize>().ok()? {
        n @ 1..=10 if !name[3..].starts_with('0') => Some(n - 1),
        _ => None,
    }
}

/// Decodes `a=b&c=d` leniently: bad percent-encoding and invalid UTF-8 are kept as
/// replacement characters instead of failing the click.
fn form_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .take(MAX_PARAMS)
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
}

/// A path segment, percent-decoded (invalid UTF-8 becomes replacement characters, which
/// match no flow).
pub(crate) fn percent_decode(segment: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy()
}

/// A query name or value, `+` as space and percent-decoded; borrowed when there is
/// nothing to decode, as in most tracking links.
fn decode(text: &str) -> Cow<'_, str> {
    if !text.bytes().any(|b| b == b'+' || b == b'%') {
        return Cow::Borrowed(text);
    }
    let text = text.replace('+', " ");
    Cow::Owned(
        percent_encoding::percent_decode_str(&text)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

/// A header's text, borrowed unless it is not valid UTF-8.
pub(crate) fn header_text(req: &HttpRequest, name: impl header::AsHeaderName) -> Cow<'_, str> {
    req.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .unwrap_or_default()
}

/// `GET /c/{flow}`: mounted as the default service of the `/c` scope, so the flow is
/// read from the path directly rather than through a pattern match on every click.
/// Recorded in the HTTP metrics as route `/c`.
/// The edge is borrowed from the app data rather than extracted (which would bump a
/// reference count both workers share on every click).
pub async fn track(req: HttpRequest) -> HttpResponse {
    let started = std::time::Instant::now();
    let response = match req.app_data::<web::Data<Edge>>() {
        Some(edge) => answer(edge, &req),
        None => HttpResponse::InternalServerError().finish(),
    };
    traffsure_telemetry::record_request("/c", response.status().as_u16(), started);
    response
}

/// Flows this worker thread has resolved, valid while the registry's version is
/// unchanged: a click reads its flow without the registry's lock or a shared reference
/// count. Any flow change empties it; so does reaching `FLOW_CACHE_MAX` entries.
#[derive(Default)]
struct FlowCache {
    version: u64,
    flows: rustc_hash::FxHashMap<String, Arc<Flow>>,
}

const FLOW_CACHE_MAX: usize = 50_000;

thread_local! {
    static FLOWS: std::cell::RefCell<FlowCache> = std::cell::RefCell::new(FlowCache::default());
}

/// Calls `f` with the flow `flow_ref` (id or slug) names, or `None` when there is none.
pub(crate) fn with_flow<R>(
    registry: &FlowRegistry,
    flow_ref: &str,
    f: impl FnOnce(Option<&Flow>) -> R,
) -> R {
    FLOWS.with_borrow_mut(|cache| {
        let version = registry.version();
        if cache.version != version {
            cache.flows.clear();
            cache.version = version;
        }
        if let Some(flow) = cache.flows.get(flow_ref) {
            return f(Some(flow.as_ref()));
        }
        let Some(flow) = registry.resolve(flow_ref) else {
            return f(None);
        };
        if cache.flows.len() >= FLOW_CACHE_MAX {
            cache.flows.clear();
        }
        let flow = cache.flows.entry(flow_ref.to_string()).or_insert(flow);
        f(Some(flow.as_ref()))
    })
}

fn answer(edge: &Edge, req: &HttpRequest) -> HttpResponse {
    if req.method() != actix_web::http::Method::GET {
        return HttpResponse::MethodNotAllowed()
            .insert_header((header::ALLOW, "GET"))
            .finish();
    }
    if let Some(too_long) = uri_too_long(req) {
        return too_long;
    }
    let flow_ref = req.path().strip_prefix("/c/").unwrap_or_default();
    with_flow(
        &edge.registry,
        &percent_decode(flow_ref),
        |flow| match flow {
            Some(flow) => click(edge, req, flow),
            None => edge.unknown_flow(),
        },
    )
}

/// 414 for a request longer than `MAX_URI_BYTES` (path and query).
pub(crate) fn uri_too_long(req: &HttpRequest) -> Option<HttpResponse> {
    let uri_len = req.uri().path().len() + req.query_string().len();
    (uri_len > MAX_URI_BYTES).then(|| {
        clicks_total().uri_too_long.inc();
        HttpResponse::UriTooLong()
            .content_type("text/plain; charset=utf-8")
            .body(format!(
                "tracking link is longer than {MAX_URI_BYTES} bytes"
            ))
    })
}

/// A tracking link of a known flow.
fn click(edge: &Edge, req: &HttpRequest, flow: &Flow) -> HttpResponse {
    let params = ClickParams::parse(req.query_string());
    if !matches!(flow.status(), FlowStatus::Active | FlowStatus::Unspecified) {
        return edge.inactive_flow(flow, &params);
    }
    let cookie_vid = cookie_value(req, &edge.visitor_cookie)
        .and_then(|vid| Some((vid, visitor::routing_key(vid)?)));
    let new_visitor = cookie_vid.is_none();
    let (visitor_id, routing_key) = match cookie_vid {
        Some((vid, key)) => (Cow::Borrowed(vid), key),
        None => {
            let (vid, key) = visitor::new_visitor();
            (Cow::Owned(vid), key)
        }
    };
    let ts_ms = now_ms();
    let click_hash = edge.keys.generate(ts_ms, flow.id, routing_key);
    let seen = edge.visitor(req);
    let lazy = seen.lazy();
    let choice = routing::choose(
        flow,
        &seen.attributes(&params, flow, ts_ms, &lazy),
        rand::random(),
    );
    let path = routing::path_of(flow, choice.route);
    let step = path
        .and_then(|path| routing::first_step(path, rand::random()))
        .filter(|step| !step.url().is_empty());
    let (step, cap_fallback) = match choice.route {
        routing::Route::Bot => (step, false),
        _ => match crate::caps::route(&edge.caps, flow, path, step, ts_ms) {
            crate::caps::CapRoute::Open(step) => (step, false),
            crate::caps::CapRoute::Fallback if flow.cap_fallback_url.is_empty() => {
                return edge.inactive_flow(flow, &params)
            }
            crate::caps::CapRoute::Fallback => (None, true),
        },
    };
    let mut funnel = Funnel {
        traffic_source_id: flow.traffic_source_id,
        external_id: params.external_id(),
        impression_id: crate::impression::named_by(&edge.keys, &params),
        ..Funnel::default()
    };
    let values = MacroValues {
        click_hash: &click_hash,
        flow_id: flow.id,
        seen: &seen,
        ts_ms,
        visitor_id: &visitor_id,
        params: &params,
    };
    let destination = match step {
        Some(Step::Lander(lander)) => {
            funnel.lander_id = lander.lander_id;
            values.render(&lander.url)
        }
        Some(Step::Offer(offer)) => {
            funnel.offer_id = offer.offer_id;
            funnel.network_id = offer.network_id;
            offer_url(offer, &values)
        }
        None if cap_fallback => values.render(&flow.cap_fallback_url),
        None => values.render(choice.url),
    };
    let offer_id = funnel.offer_id;
    let mut event = seen.event(&values, routing_key, &destination, funnel);
    event.cost_by(flow);
    if let Err(refused) = edge.record(&event, edge.click_trace(&event)) {
        return refused.answer();
    }
    crate::caps::count(&edge.caps, flow, &click_hash, offer_id, false, ts_ms);
    if seen.bot_reason.is_some() {
        traffsure_telemetry::inc_local(&clicks_total().redirected_bot);
    } else {
        traffsure_telemetry::inc_local(&clicks_total().redirected);
    }

    let mut response = edge.send_to(flow, destination);
    let secure = || edge.client_ip.behind_https(req);
    if new_visitor {
        if let Some(cookie) = edge.visitor_cookie_header(&visitor_id, secure()) {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
    if let Some(Step::Lander(lander)) = step {
        let visit = crate::lander::VisitCookie {
            click_hash: &click_hash,
            route: choice.route,
            lander_id: lander.lander_id,
        };
        if let Some(cookie) = visit.header(secure()) {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }
    response
}

/// An offer's URL for a click: its macros filled, and the click hash in the network's
/// `click_param` when it has one (replacing one the URL already carries).
pub(crate) fn offer_url(offer: &traffsure_events::PathOffer, values: &MacroValues<'_>) -> String {
    let url = values.render(&offer.url);
    if offer.click_param.is_empty() {
        url
    } else {
        macros::set_query_param(&url, &offer.click_param, values.click_hash)
    }
}

/// What the edge works out from one request about its visitor: the address and its
/// country, the user agent, the fraud signals and whether it is a bot. Tracking links and
/// lander click-throughs derive it alike.
pub(crate) struct Visitor<'r> {
    pub ip: Option<IpAddr>,
    pub country: crate::geo::CountryCode,
    pub user_agent: Cow<'r, str>,
    pub agent: Arc<user_agent::UserAgent>,
    pub found: crate::signals::Assessment<'r>,
    pub bot_reason: Option<BotReason>,
    pub referrer: Cow<'r, str>,
    pub accept_language: Cow<'r, str>,
    city_db: crate::attributes::CityDatabaseRef<'r>,
}

impl Visitor<'_> {
    /// The attributes rules read lazily (city, language, versions…).
    pub fn lazy(&self) -> crate::attributes::Lazy<'_> {
        crate::attributes::Lazy::new(
            &self.city_db,
            self.ip,
            &self.accept_language,
            &self.referrer,
            &self.user_agent,
            self.agent.os,
            self.agent.browser,
        )
    }

    /// What the flow's rules test, for a click at `ts_ms` with `params`.
    pub fn attributes<'s>(
        &'s self,
        params: &'s ClickParams,
        flow: &'s Flow,
        ts_ms: i64,
        lazy: &'s dyn LazyAttributes,
    ) -> ClickAttributes<'s> {
        ClickAttributes {
            country: self.country.as_str(),
            device: self.agent.device,
            os: self.agent.os,
            browser: self.agent.browser,
            ip: self.ip,
            sub_id: &params.sub_id,
            source: &params.source,
            subs: &params.subs,
            is_bot: self.bot_reason.is_some(),
            asn: self.found.asn,
            as_org: self.found.as_org,
            datacenter: self.found.datacenter,
            rate_exceeded: self.found.rate_exceeded,
            ts_ms,
            time_zone: &flow.time_zone,
            lazy,
        }
    }

    /// The click event of this request.
    pub fn event<'a>(
        &'a self,
        values: &'a MacroValues<'a>,
        routing_key: u16,
        destination: &'a str,
        funnel: Funnel<'a>,
    ) -> ClickEvent<'a> {
        let params = values.params;
        ClickEvent {
            click_hash: values.click_hash,
            flow_id: values.flow_id,
            ts_ms: values.ts_ms,
            routing_key,
            visitor_id: values.visitor_id,
            ip: self.ip,
            country: self.country.as_str(),
            user_agent: &self.user_agent,
            device: self.agent.device,
            os: self.agent.os,
            browser: self.agent.browser,
            referrer: &self.referrer,
            sub_id: &params.sub_id,
            source: &params.source,
            subs: &params.subs,
            cost_micros: params.cost_micros,
            cost_currency: &params.cost_currency,
            destination_url: destination,
            is_bot: self.bot_reason.is_some(),
            bot_reason: self.bot_reason.unwrap_or(BotReason::Unspecified),
            agent: &self.agent,
            extra: &params.extra,
            asn: self.found.asn,
            as_org: self.found.as_org,
            datacenter: self.found.datacenter,
            rate_exceeded: self.found.rate_exceeded,
            funnel,
            cost_source: traffsure_events::CostSource::Unspecified,
        }
    }
}

/// The values destination macros take for one click.
pub(crate) struct MacroValues<'a> {
    pub click_hash: &'a str,
    pub flow_id: u32,
    pub seen: &'a Visitor<'a>,
    pub ts_ms: i64,
    pub visitor_id: &'a str,
    pub params: &'a ClickParams,
}

impl MacroValues<'_> {
    /// `template` with its macros filled in.
    pub fn render(&self, template: &str) -> String {
        let agent = &self.seen.agent;
        macros::render(template, |name| {
            let value: &str = match name {
                "click" => self.click_hash,
                "flow" => return Some(Cow::Owned(self.flow_id.to_string())),
                "country" => self.seen.country.as_str(),
                "device" => agent.device,
                "os" => agent.os,
                "browser" => agent.browser,
                "ts" => return Some(Cow::Owned((self.ts_ms / 1000).to_string())),
                "visitor" => self.visitor_id,
                other => self.params.value(other)?,
            };
            Some(Cow::Borrowed(value))
        })
    }
}

/// The value of cookie `name` in the request's `Cookie` headers, without parsing the
/// others.
pub(crate) fn cookie_value<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key.trim() == name).then(|| value.trim().trim_matches('"'))
        })
}

/// The click log could not take a click.
#[derive(Debug)]
pub(crate) struct NotRecorded;

impl NotRecorded {
    /// 503: the visitor may try again.
    pub fn answer(&self) -> HttpResponse {
        HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "1"))
            .content_type("text/plain; charset=utf-8")
            .body("clicks cannot be recorded right now")
    }
}

impl Edge {
    /// What this request tells about its visitor, found the same way for every kind of
    /// click; counts the address for the rate signal.
    pub(crate) fn visitor<'r>(&'r self, req: &'r HttpRequest) -> Visitor<'r> {
        let ip = self.client_ip.of(req);
        let country = ip.map(|ip| self.geo.country(ip)).unwrap_or_default();
        let user_agent = header_text(req, header::USER_AGENT);
        let (agent, cached) = self.user_agents.parse_cached(&user_agent);
        crate::user_agents::count_lookup(cached);
        let found = self.signals.assess(ip);
        let bot_reason = self
            .signals
            .bot(self.bots.reason(&agent, &user_agent, ip), &found);
        Visitor {
            ip,
            country,
            referrer: header_text(req, header::REFERER),
            accept_language: header_text(req, header::ACCEPT_LANGUAGE),
            user_agent,
            agent,
            found,
            bot_reason,
            city_db: crate::attributes::CityDatabaseRef(&self.signals.city),
        }
    }

    /// Writes the click event to the click log and hands it to the producer, with
    /// `headers` (trace context) for Kafka. On an error, answer `NotRecorded::answer` (or
    /// the endpoint's own refusal) instead of a redirect: no redirect without a record of
    /// the click.
    pub(crate) fn record(
        &self,
        event: &ClickEvent<'_>,
        headers: Option<rdkafka::message::OwnedHeaders>,
    ) -> Result<(), NotRecorded> {
        let logged = EVENT_BUFFER.with_borrow_mut(|buffer| {
            buffer.clear();
            event.encode(buffer);
            self.publisher.publish(event.routing_key, buffer, headers)
        });
        logged.map_err(|_| NotRecorded)
    }

    /// The trace context of a tracking-link or lander click, when tracing is on: each
    /// gets a span whose W3C context travels with the event in Kafka headers.
    pub(crate) fn click_trace(
        &self,
        event: &ClickEvent<'_>,
    ) -> Option<rdkafka::message::OwnedHeaders> {
        self.trace_clicks.then(|| {
            tracing::info_span!("click", flow = event.flow_id, click_hash = %event.click_hash)
                .in_scope(traffsure_kafka::trace::trace_headers)
        })
    }

    /// Sends the visitor to `destination` in the flow's redirect mode.
    pub(crate) fn send_to(&self, flow: &Flow, destination: String) -> HttpResponse {
        if flow.redirect_mode() == RedirectMode::DoubleMetaRefresh {
            crate::refresh::first_hop(&self.keys, &destination)
        } else {
            redirect(flow, destination)
        }
    }

    /// A lander click-through when the flow, or every offer, is capped: to the flow's
    /// `cap_fallback_url`, with the flow and the link's parameters filled in.
    pub(crate) fn cap_fallback(&self, flow: &Flow, params: &ClickParams) -> HttpResponse {
        self.redirect_plain(&flow.cap_fallback_url, flow, params)
    }

    /// A paused or archived flow: its own inactive URL (no click is recorded), else the
    /// answer for unknown flows.
    pub(crate) fn inactive_flow(&self, flow: &Flow, params: &ClickParams) -> HttpResponse {
        if flow.inactive_url.is_empty() {
            return self.unknown_flow();
        }
        clicks_total().inactive_flow.inc();
        self.redirect_plain(&flow.inactive_url, flow, params)
    }

    /// A redirect to `template` with the flow and the link's parameters filled in and the
    /// click's own macros empty (no click was recorded).
    fn redirect_plain(&self, template: &str, flow: &Flow, params: &ClickParams) -> HttpResponse {
        let flow_id = flow.id.to_string();
        let url = macros::render(template, |name| match name {
            "flow" => Some(Cow::Borrowed(flow_id.as_str())),
            "click" | "country" | "device" | "os" | "browser" | "ts" | "visitor" => {
                Some(Cow::Borrowed(""))
            }
            other => params.value(other).map(Cow::Borrowed),
        });
        HttpResponse::Found()
            .insert_header((header::LOCATION, url))
            .insert_header(no_store())
            .finish()
    }

    /// `Set-Cookie` for a new visitor: first-party, a year long, `SameSite=Lax`,
    /// `HttpOnly`, and `Secure` when the visitor reached the edge over HTTPS.
    fn visitor_cookie_header(&self, visitor_id: &str, secure: bool) -> Option<HeaderValue> {
        const ATTRIBUTES: &str = "; HttpOnly; SameSite=Lax; Path=/; Max-Age=31536000";
        let mut text = String::with_capacity(
            self.visitor_cookie.len() + 1 + visitor_id.len() + ATTRIBUTES.len() + 8,
        );
        text.push_str(&self.visitor_cookie);
        text.push('=');
        text.push_str(visitor_id);
        text.push_str(ATTRIBUTES);
        if secure {
            text.push_str("; Secure");
        }
        HeaderValue::try_from(text).ok()
    }

    fn unknown_flow(&self) -> HttpResponse {
        clicks_total().unknown_flow.inc();
        if self.unknown_flow_url.is_empty() {
            HttpResponse::NotFound()
                .content_type("text/plain; charset=utf-8")
                .body("flow not found or not active")
        } else {
            HttpResponse::Found()
                .insert_header((header::LOCATION, self.unknown_flow_url.clone()))
                .finish()
        }
    }
}

pub(crate) fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn no_store() -> (header::HeaderName, HeaderValue) {
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store"))
}

fn redirect(flow: &Flow, destination: String) -> HttpResponse {
    // The rendered URL only holds bytes a Location header may carry (macro values are
    // percent-encoded, flow URLs validated); an unexpected one answers 500, not a panic.
    let location = |destination: String| HeaderValue::try_from(destination);
    match flow.redirect_mode() {
        RedirectMode::Temporary307 => match location(destination) {
            Ok(url) => HttpResponse::TemporaryRedirect()
                .insert_header((header::LOCATION, url))
                .finish(),
            Err(_) => bad_destination(),
        },
        // The double refresh's first hop is answered before this (`refresh`); here it
        // is one refresh without a referrer.
        mode @ (RedirectMode::MetaRefresh | RedirectMode::DoubleMetaRefresh) => {
            let referrer = if mode == RedirectMode::DoubleMetaRefresh {
                r#"<meta name="referrer" content="no-referrer">"#
            } else {
                ""
            };
            let url = html_escape(&destination);
            HttpResponse::Ok()
                .content_type("text/html; charset=utf-8")
                .insert_header(no_store())
                .body(format!(
                    "<!doctype html><html><head>{referrer}<meta http-equiv=\"refresh\" content=\"0;url={url}\"></head>\
                     <body><a href=\"{url}\">Continue</a></body></html>"
                ))
        }
        RedirectMode::Found302 | RedirectMode::Unspecified => match location(destination) {
            Ok(url) => HttpResponse::Found()
                .insert_header((header::LOCATION, url))
                .insert_header(no_store())
                .finish(),
            Err(_) => bad_destination(),
        },
    }
}

fn bad_destination() -> HttpResponse {
    HttpResponse::InternalServerError()
        .content_type("text/plain; charset=utf-8")
        .body("the flow's destination is not a valid URL")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keeps_garbage_cost_out_of_the_cost_field() {
        for bad in ["abc", "1e5", "-1", "0.5.5", "NaN", "%FF"] {
            let p = ClickParams::parse(&format!("cost={bad}"));
            assert_eq!((p.cost.as_str(), p.cost_micros), ("", 0), "{bad}");
            assert!(p.extra.contains_key("cost"), "{bad}");
        }
        let p = ClickParams::parse("cost=0.0123");
        assert_eq!((p.cost.as_str(), p.cost_micros), ("0.0123", 12_300));
        assert_eq!(p.cost_currency, "");
        let eur = ClickParams::parse("cost=2&cost_currency=eur");
        assert_eq!(
            (eur.cost_micros, eur.cost_currency.as_str()),
            (2_000_000, "EUR")
        );
        let bad = ClickParams::parse("cost=2&cost_currency=euros");
        assert_eq!(bad.cost_currency, "");
        assert_eq!(
            bad.extra.get("cost_currency").map(String::as_str),
            Some("euros")
        );
        assert_eq!(p.value("cost"), Some("0.0123"));
        assert_eq!(p.value("sub01"), None);
        assert_eq!(p.value("sub10"), Some(""));
        assert_eq!(p.value("other"), None);
    }

    #[test]
    fn query_parser_round_trips_random_parameters() {
        // Property: whatever names and values a link carries, form-encoding them and
        // parsing the result gives them back, each in its own field.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet: Vec<char> = "aZ09 &=+%?#/é€\u{0}\u{fffd}{}sub_".chars().collect();
        for _ in 0..2_000 {
            let mut text = |max: usize| -> String {
                let len = rng.random_range(0..max);
                (0..len)
                    .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                    .collect()
            };
            let sub_id = text(12);
            let sub4 = text(12);
            let name = format!("x{}", text(6));
            let value = text(20);
            let query = serde_urlencoded::to_string([
                ("sub_id", sub_id.as_str()),
                ("sub4", sub4.as_str()),
                (name.as_str(), value.as_str()),
            ])
            .unwrap();
            let p = ClickParams::parse(&query);
            assert_eq!(p.sub_id, sub_id, "{query}");
            assert_eq!(p.subs[3], sub4, "{query}");
            assert_eq!(p.extra.get(&name), Some(&value), "{query}");
        }
    }

    #[test]
    fn query_parser_never_panics_on_raw_bytes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let pieces = [
            "%", "%F", "%FF", "%C3%A9", "&", "=", "+", "sub", "1", "0", "cost", "é", "\u{0}", "==",
            "&&", "page", "http://", "?", "#", "ref", "vid",
        ];
        for _ in 0..5_000 {
            let n = rng.random_range(0..24);
            let query: String = (0..n)
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect();
            let p = ClickParams::parse(&query);
            assert_eq!(p.subs.len(), 10);
            assert!(p.extra.len() <= MAX_EXTRA);
            // A direct visit's parameters go through the same parser.
            if let Ok(direct) = crate::direct::DirectParams::parse(&query) {
                assert_eq!(direct.click.subs.len(), 10);
            }
        }
    }

    #[test]
    fn client_ip_reads_the_configured_header_from_a_trusted_peer() {
        use actix_web::test::TestRequest;
        let client_ip =
            ClientIp::new(ClientIpResolver::new("X-Real-IP", "10.0.0.0/8").unwrap()).unwrap();
        let request = |peer: &str, headers: &[(&str, &str)]| {
            let mut req = TestRequest::default().peer_addr(peer.parse().unwrap());
            for (name, value) in headers {
                req = req.insert_header((*name, *value));
            }
            req.to_http_request()
        };
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        let proxied = request(
            "10.1.2.3:40000",
            &[("x-real-ip", "8.8.8.8"), ("x-forwarded-proto", "https")],
        );
        assert_eq!(client_ip.of(&proxied), ip("8.8.8.8"));
        assert!(client_ip.behind_https(&proxied));
        let direct = request(
            "9.9.9.9:40000",
            &[("x-real-ip", "8.8.8.8"), ("x-forwarded-proto", "https")],
        );
        assert_eq!(client_ip.of(&direct), ip("9.9.9.9"));
        assert!(!client_ip.behind_https(&direct));
        let other_header = request("10.1.2.3:40000", &[("x-forwarded-for", "8.8.8.8")]);
        assert_eq!(client_ip.of(&other_header), ip("10.1.2.3"));
    }

    #[test]
    fn finds_the_visitor_cookie_among_others() {
        use actix_web::test::TestRequest;
        let value = |cookies: &[&str]| {
            let mut req = TestRequest::default();
            for cookie in cookies {
                req = req.append_header((header::COOKIE, *cookie));
            }
            cookie_value(&req.to_http_request(), "ts_vid").map(str::to_string)
        };
        assert_eq!(value(&["ts_vid=abc"]).as_deref(), Some("abc"));
        assert_eq!(value(&["a=1; ts_vid=abc; b=2"]).as_deref(), Some("abc"));
        assert_eq!(value(&["a=1", "ts_vid=\"abc\""]).as_deref(), Some("abc"));
        assert_eq!(value(&["xts_vid=abc; ts_vidx=def"]), None);
        assert_eq!(value(&["ts_vid"]), None);
        assert_eq!(value(&[]), None);
    }

    #[test]
    fn parses_tracking_parameters() {
        let p = ClickParams::parse(
            "sub_id=s1&source=fb&sub3=x%20y&sub10=z&cost=0.05&gclid=abc&sub11=no&bad=%ZZ%FF",
        );
        assert_eq!(p.sub_id, "s1");
        assert_eq!(p.source, "fb");
        assert_eq!(p.subs[2], "x y");
        assert_eq!(p.subs[9], "z");
        assert_eq!(p.cost, "0.05");
        assert_eq!(p.extra.get("gclid").map(String::as_str), Some("abc"));
        assert!(p.extra.contains_key("sub11"));
        assert_eq!(p.extra.get("bad").map(String::as_str), Some("%ZZ\u{fffd}"));
    }

    #[test]
    fn renders_exactly_the_macros_a_destination_may_use() {
        // The flow, lander and offer validation (`DESTINATION_MACROS`) and what a click
        // fills into its destination must agree: a macro allowed but never filled would
        // reach the visitor as `{name}`, one filled but refused could not be used.
        use traffsure_core::flow::{
            CLICK_POSTBACK_MACROS, DESTINATION_MACROS, IMPRESSION_POSTBACK_MACROS, OUTBOUND_MACROS,
        };
        let city = crate::attributes::CityDatabase::default();
        let seen = Visitor {
            ip: None,
            country: crate::geo::CountryCode::new("DE"),
            user_agent: Cow::Borrowed("test"),
            agent: Arc::new(user_agent::UserAgent::default()),
            found: crate::signals::Assessment::default(),
            bot_reason: None,
            referrer: Cow::Borrowed(""),
            accept_language: Cow::Borrowed(""),
            city_db: crate::attributes::CityDatabaseRef(&city),
        };
        let params = ClickParams::parse("sub_id=s&source=src&sub1=a&cost=0.5&external_id=ext-9");
        let values = MacroValues {
            click_hash: "h1",
            flow_id: 7,
            seen: &seen,
            ts_ms: 1_700_000_000_000,
            visitor_id: "v1",
            params: &params,
        };
        let filled = |name: &str| {
            let template = format!("https://a.test/?v={{{name}}}");
            values.render(&template) != template
        };
        for name in DESTINATION_MACROS {
            assert!(filled(name), "{{{name}}} is allowed but not filled in");
        }
        assert_eq!(
            values.render("https://a.test/?e={external_id}"),
            "https://a.test/?e=ext-9"
        );
        let others = OUTBOUND_MACROS
            .iter()
            .chain(CLICK_POSTBACK_MACROS)
            .chain(IMPRESSION_POSTBACK_MACROS)
            .chain(&["sub0", "sub01", "sub11", "cost_currency", "imp", "gclid"])
            .filter(|name| !DESTINATION_MACROS.contains(name));
        for name in others {
            assert!(!filled(name), "{{{name}}} is filled in but not allowed");
        }
    }

    #[test]
    fn escapes_meta_refresh_urls() {
        assert_eq!(
            html_escape("https://a.test/?a=1&b=\"<x>\""),
            "https://a.test/?a=1&amp;b=&quot;&lt;x&gt;&quot;"
        );
    }
}

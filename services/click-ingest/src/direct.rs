//! Direct visits: `GET /v/{flow}` records a click for a page the visitor reached without
//! the tracking link (organic, direct or ad-platform traffic), and answers its click hash
//! as JSON for the tag (`ts.js`) to keep first-party on the page's own site. The click
//! goes through the same visitor checks, click log and producer as `/c/`; nothing is
//! redirected and no cookie is set (the tracker's host is a third party to the page).
//! Whether the page already has a click hash, so that no visit is needed, is the tag's
//! decision; this endpoint records one visit per request.

use std::borrow::Cow;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use traffsure_core::flow::DEFAULT_WINDOW_DAYS;
use traffsure_core::{now_ms, visitor};
use traffsure_events::{BotReason, ClickKind, Flow, FlowStatus};
use traffsure_telemetry::prometheus::IntCounterVec;

use crate::click::{header_text, percent_decode, with_flow, ClickParams, Edge};
use crate::event::{ClickEvent, Funnel};

/// Longest page URL and referrer kept.
const MAX_URL_BYTES: usize = 2048;
/// Longest `external_id` (a traffic source's own click id).
const MAX_EXTERNAL_ID_BYTES: usize = crate::click::MAX_EXTERNAL_ID;

pub fn routes(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/v/{flow}")
            .route(web::get().to(visit))
            .route(web::method(actix_web::http::Method::OPTIONS).to(preflight))
            .default_service(web::to(|| async {
                refusal(405, "method_not_allowed", None, "use GET".into())
            })),
    );
}

/// Counts a request in `traffsure_direct_visits_total{outcome}`.
fn count(outcome: &str) {
    static METRIC: std::sync::OnceLock<IntCounterVec> = std::sync::OnceLock::new();
    METRIC
        .get_or_init(|| {
            traffsure_telemetry::counter_vec(
                "traffsure_direct_visits_total",
                "Direct-visit requests (/v/) by outcome",
                &["outcome"],
            )
        })
        .with_label_values(&[outcome])
        .inc();
}

/// A parameter of `/v/` that cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("page must be an http or https URL of at most {MAX_URL_BYTES} bytes")]
    Page,
    #[error("ref must be at most {MAX_URL_BYTES} bytes")]
    Referrer,
    #[error("vid must be a visitor ID (32 hexadecimal digits)")]
    Visitor,
    #[error("external_id must be at most {MAX_EXTERNAL_ID_BYTES} bytes")]
    ExternalId,
}

impl ParamError {
    fn code_and_field(&self) -> (&'static str, &'static str) {
        match self {
            Self::Page => ("invalid_page", "page"),
            Self::Referrer => ("invalid_referrer", "ref"),
            Self::Visitor => ("invalid_visitor", "vid"),
            Self::ExternalId => ("invalid_external_id", "external_id"),
        }
    }
}

/// What the tag sends: the page's URL (`page`, whose query holds the tracking parameters
/// the page was opened with), the page's referrer (`ref`: the request's own `Referer` is
/// the page), a visitor ID stored on the page's site (`vid`), and tracking parameters of
/// its own (`sub_id`, `source`, `sub1`…`sub10`, `cost`, `cost_currency`, `external_id`,
/// anything else), which win over the page's.
#[derive(Debug, Default)]
pub struct DirectParams {
    pub page: String,
    pub referrer: String,
    pub visitor_id: String,
    pub external_id: String,
    pub click: ClickParams,
}

impl DirectParams {
    pub fn parse(query: &str) -> Result<Self, ParamError> {
        let mut direct = Self::default();
        let mut own = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "page" => direct.page = form_value(value).into_owned(),
                "ref" => direct.referrer = form_value(value).into_owned(),
                "vid" => direct.visitor_id = form_value(value).into_owned(),
                _ => own.push(pair),
            }
        }
        if !direct.page.is_empty() && !is_web_url(&direct.page) {
            return Err(ParamError::Page);
        }
        if direct.referrer.len() > MAX_URL_BYTES {
            return Err(ParamError::Referrer);
        }
        if !direct.visitor_id.is_empty() && visitor::routing_key(&direct.visitor_id).is_none() {
            return Err(ParamError::Visitor);
        }
        let page_query = direct
            .page
            .split_once('?')
            .map(|(_, rest)| rest.split('#').next().unwrap_or_default())
            .unwrap_or_default();
        // Later pairs win: the tag's own parameters over the page's.
        let merged = [page_query, &own.join("&")].join("&");
        direct.click = ClickParams::parse(&merged);
        direct.external_id = std::mem::take(&mut direct.click.external_id);
        if direct.external_id.len() > MAX_EXTERNAL_ID_BYTES {
            return Err(ParamError::ExternalId);
        }
        Ok(direct)
    }
}

fn form_value(text: &str) -> Cow<'_, str> {
    if text.contains('+') {
        Cow::Owned(percent_decode(&text.replace('+', " ")).into_owned())
    } else {
        percent_decode(text)
    }
}

fn is_web_url(text: &str) -> bool {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"));
    text.len() <= MAX_URL_BYTES
        && rest.is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
        && !text.chars().any(char::is_control)
}

/// `GET /v/{flow}`.
async fn visit(req: HttpRequest, edge: web::Data<Edge>) -> HttpResponse {
    let uri_len = req.uri().path().len() + req.query_string().len();
    if uri_len > crate::click::MAX_URI_BYTES {
        count("refused");
        return refusal(
            414,
            "uri_too_long",
            None,
            format!(
                "the request is longer than {} bytes",
                crate::click::MAX_URI_BYTES
            ),
        );
    }
    let params = match DirectParams::parse(req.query_string()) {
        Ok(params) => params,
        Err(error) => {
            count("refused");
            let (code, field) = error.code_and_field();
            return refusal(400, code, Some(field), error.to_string());
        }
    };
    let flow_ref = req.match_info().get("flow").unwrap_or_default();
    with_flow(
        &edge.registry,
        &percent_decode(flow_ref),
        |flow| match flow {
            Some(flow) if matches!(flow.status(), FlowStatus::Active | FlowStatus::Unspecified) => {
                record(&edge, &req, flow, &params)
            }
            _ => {
                count("unknown_flow");
                refusal(
                    404,
                    "unknown_flow",
                    Some("flow"),
                    "flow not found or not active".into(),
                )
            }
        },
    )
}

fn record(edge: &Edge, req: &HttpRequest, flow: &Flow, params: &DirectParams) -> HttpResponse {
    let (visitor_id, routing_key) = match visitor::routing_key(&params.visitor_id) {
        Some(key) => (params.visitor_id.clone(), key),
        None => visitor::new_visitor(),
    };
    let ts_ms = now_ms();
    let click_hash = edge.keys.generate(ts_ms, flow.id, routing_key);
    let visitor = edge.visitor(req);
    let (agent, found) = (&visitor.agent, &visitor.found);
    // Without `page` the request's Referer is the page (an origin at least).
    let page = if params.page.is_empty() {
        header_text(req, header::REFERER)
    } else {
        Cow::Borrowed(params.page.as_str())
    };
    let mut click = ClickEvent {
        click_hash: &click_hash,
        flow_id: flow.id,
        ts_ms,
        routing_key,
        visitor_id: &visitor_id,
        ip: visitor.ip,
        country: visitor.country.as_str(),
        user_agent: &visitor.user_agent,
        device: agent.device,
        os: agent.os,
        browser: agent.browser,
        referrer: &params.referrer,
        sub_id: &params.click.sub_id,
        source: &params.click.source,
        subs: &params.click.subs,
        cost_micros: params.click.cost_micros,
        cost_currency: &params.click.cost_currency,
        destination_url: &page,
        is_bot: visitor.bot_reason.is_some(),
        bot_reason: visitor.bot_reason.unwrap_or(BotReason::Unspecified),
        agent,
        extra: &params.click.extra,
        asn: found.asn,
        as_org: found.as_org,
        datacenter: found.datacenter,
        rate_exceeded: found.rate_exceeded,
        funnel: Funnel {
            kind: ClickKind::DirectVisit,
            traffic_source_id: flow.traffic_source_id,
            external_id: &params.external_id,
            ..Funnel::default()
        },
        cost_source: traffsure_events::CostSource::Unspecified,
    };
    click.cost_by(flow);
    let headers = edge.trace_clicks.then(|| {
        tracing::info_span!("direct visit", flow = flow.id, click_hash = %click_hash)
            .in_scope(traffsure_kafka::trace::trace_headers)
    });
    if edge.record(&click, headers).is_err() {
        return refusal(
            503,
            "not_recorded",
            None,
            "visits cannot be recorded right now".into(),
        );
    }
    count(if visitor.bot_reason.is_some() {
        "recorded_bot"
    } else {
        "recorded"
    });
    let window_days = Some(flow.attribution_window_days)
        .filter(|d| *d > 0)
        .unwrap_or(DEFAULT_WINDOW_DAYS);
    with_cors(HttpResponse::Ok()).json(serde_json::json!({
        "click": click_hash,
        "flow": flow.id,
        "visitor": visitor_id,
        "window_days": window_days,
    }))
}

/// Any page may call `/v/` or load the pixel `/i/`; it sends no credentials and gets none.
pub(crate) fn with_cors(
    mut builder: actix_web::HttpResponseBuilder,
) -> actix_web::HttpResponseBuilder {
    builder
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        ))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    builder
}

/// A plain GET needs no preflight; this answers one a page's fetch options may cause
/// (an `Accept: application/json` asking the pixel for its JSON answer, say).
pub(crate) async fn preflight() -> HttpResponse {
    with_cors(HttpResponse::NoContent())
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET"),
        ))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Accept"),
        ))
        .insert_header((
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        ))
        .finish()
}

pub(crate) fn refusal(
    status: u16,
    code: &str,
    field: Option<&str>,
    message: String,
) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    let mut builder = with_cors(HttpResponse::build(status));
    if status == actix_web::http::StatusCode::SERVICE_UNAVAILABLE {
        builder.insert_header((header::RETRY_AFTER, "1"));
    }
    let mut body = traffsure_core::ErrorBody::new(status.as_u16(), code, message);
    if let Some(field) = field {
        body = body.with_field(field);
    }
    builder.json(body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tracking_parameters_from_the_page_url() {
        let page =
            "https://lander.test/summer?sub1=zone%209&source=google&gclid=G1&external_id=EXT-1#top";
        let query =
            serde_urlencoded::to_string([("page", page), ("ref", "https://www.google.com/")])
                .unwrap();
        let p = DirectParams::parse(&query).unwrap();
        assert_eq!(p.page, page);
        assert_eq!(p.referrer, "https://www.google.com/");
        assert_eq!(p.click.subs[0], "zone 9");
        assert_eq!(p.click.source, "google");
        assert_eq!(p.click.extra.get("gclid").map(String::as_str), Some("G1"));
        assert_eq!(p.external_id, "EXT-1");
        assert!(!p.click.extra.contains_key("external_id"));
        assert!(!p.click.extra.contains_key("page"));
        assert_eq!(p.visitor_id, "");
    }

    #[test]
    fn the_tags_own_parameters_win_over_the_pages() {
        let query = serde_urlencoded::to_string([
            ("sub1", "mine"),
            ("page", "http://lander.test/?sub1=page&sub2=kept&cost=0.25"),
            ("sub_id", "s-9"),
            ("vid", "0123456789abcdef0123456789abcdef"),
            ("cost", "0.5"),
        ])
        .unwrap();
        let p = DirectParams::parse(&query).unwrap();
        assert_eq!(
            (p.click.subs[0].as_str(), p.click.subs[1].as_str()),
            ("mine", "kept")
        );
        assert_eq!(p.click.sub_id, "s-9");
        assert_eq!(p.click.cost_micros, 500_000);
        assert_eq!(p.visitor_id, "0123456789abcdef0123456789abcdef");
        // Without a page, only the tag's parameters count.
        let bare = DirectParams::parse("source=newsletter&sub3=a+b").unwrap();
        assert_eq!(
            (bare.click.source.as_str(), bare.click.subs[2].as_str()),
            ("newsletter", "a b")
        );
        assert_eq!(bare.page, "");
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let long = format!("https://lander.test/{}", "a".repeat(MAX_URL_BYTES));
        let cases: [(String, ParamError); 7] = [
            ("page=javascript:alert(1)".into(), ParamError::Page),
            ("page=lander.test/".into(), ParamError::Page),
            ("page=https:///path".into(), ParamError::Page),
            (format!("page={long}"), ParamError::Page),
            (format!("ref={long}"), ParamError::Referrer),
            ("vid=not-a-visitor".into(), ParamError::Visitor),
            (
                format!("external_id={}", "x".repeat(MAX_EXTERNAL_ID_BYTES + 1)),
                ParamError::ExternalId,
            ),
        ];
        for (query, error) in cases {
            assert_eq!(DirectParams::parse(&query).err(), Some(error), "{query}");
        }
        assert_eq!(
            ParamError::Visitor.code_and_field(),
            ("invalid_visitor", "vid")
        );
    }
}

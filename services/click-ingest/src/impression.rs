//! Impressions: `GET /i/{flow}` records that an ad was shown. It answers a 1×1 GIF (an
//! `<img>` pixel), or JSON with the impression id when asked (`?format=json` or
//! `Accept: application/json`), and redirects nowhere. The visitor is found as for a
//! click (address, country, user agent, bot checks) and the pixel's tracking parameters
//! are read as a tracking link's (`sub_id`, `source`, `sub1`…`sub10`, `cost`,
//! `cost_currency`, `external_id`, anything else), so an impression carries the same
//! dimensions as a click.
//!
//! An impression event is a `Click`-compatible `Impression` (impressions.proto), written
//! with the click encoder to an impression log of its own and handed to its own producer
//! (`impressions` topic): the click log's mechanism, so an answered impression is neither
//! lost nor doubled by a broker outage or a crash. Its id is `i` followed by a click
//! hash minted for it: a click names it with `imp=` on the tracking link, and the prefix
//! keeps it from ever passing for a click hash in a postback.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use traffsure_core::{now_ms, visitor, ClickHashKeys};
use traffsure_events::{BotReason, ClickKind, Flow, FlowStatus};
use traffsure_telemetry::prometheus::IntCounterVec;

use crate::click::{cookie_value, percent_decode, with_flow, ClickParams, Edge};
use crate::direct::{preflight, refusal, with_cors};
use crate::event::{ClickEvent, Funnel};

/// What an impression id starts with, before its click-hash part.
pub const ID_PREFIX: char = 'i';

/// The smallest transparent GIF (1×1, 43 bytes).
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

pub fn routes(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/i/{flow}")
            .route(web::get().to(impression))
            .route(web::method(actix_web::http::Method::OPTIONS).to(preflight))
            .default_service(web::to(|| async {
                refusal(405, "method_not_allowed", None, "use GET".into())
            })),
    );
}

/// The impression id a tracking link names with `imp=`, when it is one this tracker
/// minted (signed with its click-hash keys); empty otherwise.
pub fn named_by<'p>(keys: &ClickHashKeys, params: &'p ClickParams) -> &'p str {
    match params.extra.get("imp") {
        Some(id) if is_impression_id(keys, id) => id,
        _ => "",
    }
}

fn is_impression_id(keys: &ClickHashKeys, id: &str) -> bool {
    id.strip_prefix(ID_PREFIX)
        .is_some_and(|hash| keys.verify(hash).is_ok())
}

/// Counts a request in `traffsure_impressions_total{outcome}`.
fn count(outcome: &str) {
    static METRIC: std::sync::OnceLock<IntCounterVec> = std::sync::OnceLock::new();
    METRIC
        .get_or_init(|| {
            traffsure_telemetry::counter_vec(
                "traffsure_impressions_total",
                "Impression pixel requests (/i/) by outcome",
                &["outcome"],
            )
        })
        .with_label_values(&[outcome])
        .inc();
}

/// Whether the answer is JSON rather than the GIF.
fn wants_json(req: &HttpRequest, params: &ClickParams) -> bool {
    params.extra.get("format").is_some_and(|f| f == "json")
        || req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| {
                accept
                    .split(',')
                    .any(|part| part.trim().starts_with("application/json"))
            })
}

/// `GET /i/{flow}`.
async fn impression(req: HttpRequest, edge: web::Data<Edge>) -> HttpResponse {
    if req.uri().path().len() + req.query_string().len() > crate::click::MAX_URI_BYTES {
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
    let mut params = ClickParams::parse(req.query_string());
    let json = wants_json(&req, &params);
    params.extra.remove("format");
    let visitor_param = params.extra.remove("vid").unwrap_or_default();
    if !visitor_param.is_empty() && visitor::routing_key(&visitor_param).is_none() {
        count("refused");
        return refusal(
            400,
            "invalid_visitor",
            Some("vid"),
            "vid must be a visitor ID (32 hexadecimal digits)".into(),
        );
    }
    let flow_ref = req.match_info().get("flow").unwrap_or_default();
    with_flow(
        &edge.registry,
        &percent_decode(flow_ref),
        |flow| match flow {
            Some(flow) if matches!(flow.status(), FlowStatus::Active | FlowStatus::Unspecified) => {
                record(&edge, &req, flow, &params, &visitor_param, json)
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

fn record(
    edge: &Edge,
    req: &HttpRequest,
    flow: &Flow,
    params: &ClickParams,
    visitor_param: &str,
    json: bool,
) -> HttpResponse {
    let known = [Some(visitor_param), cookie_value(req, &edge.visitor_cookie)]
        .into_iter()
        .flatten()
        .find_map(|vid| Some((vid.to_string(), visitor::routing_key(vid)?)));
    let (visitor_id, routing_key) = known.unwrap_or_else(visitor::new_visitor);
    let ts_ms = now_ms();
    let impression_id = format!(
        "{ID_PREFIX}{}",
        edge.keys.generate(ts_ms, flow.id, routing_key)
    );
    // The pixel's own `cost` parameter when sent; otherwise a cpm model's per impression.
    let (cost_micros, cost_currency, cost_source) = traffsure_core::cost::impression_cost(
        flow.cost_model.as_deref(),
        params.cost_micros,
        &params.cost_currency,
    );
    let visitor = edge.visitor(req);
    let (agent, found) = (&visitor.agent, &visitor.found);
    let event = ClickEvent {
        click_hash: &impression_id,
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
        referrer: &visitor.referrer,
        sub_id: &params.sub_id,
        source: &params.source,
        subs: &params.subs,
        cost_micros,
        cost_currency,
        cost_source,
        destination_url: "",
        is_bot: visitor.bot_reason.is_some(),
        bot_reason: visitor.bot_reason.unwrap_or(BotReason::Unspecified),
        agent,
        extra: &params.extra,
        asn: found.asn,
        as_org: found.as_org,
        datacenter: found.datacenter,
        rate_exceeded: found.rate_exceeded,
        funnel: Funnel {
            kind: ClickKind::Visit,
            traffic_source_id: flow.traffic_source_id,
            external_id: params.external_id(),
            ..Funnel::default()
        },
    };
    let mut buffer = Vec::with_capacity(1024);
    event.encode(&mut buffer);
    if edge
        .impressions
        .publish(routing_key, &buffer, None)
        .is_err()
    {
        count("not_recorded");
        return refusal(
            503,
            "not_recorded",
            None,
            "impressions cannot be recorded right now".into(),
        );
    }
    count(if visitor.bot_reason.is_some() {
        "recorded_bot"
    } else {
        "recorded"
    });
    if json {
        with_cors(HttpResponse::Ok()).json(serde_json::json!({
            "impression": impression_id,
            "flow": flow.id,
            "visitor": visitor_id,
        }))
    } else {
        with_cors(HttpResponse::Ok())
            .content_type("image/gif")
            .body(PIXEL)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn the_pixel_is_a_one_by_one_gif() {
        assert_eq!(&PIXEL[..6], b"GIF89a");
        assert_eq!(u16::from_le_bytes([PIXEL[6], PIXEL[7]]), 1);
        assert_eq!(u16::from_le_bytes([PIXEL[8], PIXEL[9]]), 1);
        assert_eq!(PIXEL.last(), Some(&0x3b));
    }

    #[test]
    fn a_click_names_only_an_impression_id_this_tracker_minted() {
        let keys = ClickHashKeys::parse("1:impression-test-secret-0123456789", 1).unwrap();
        let hash = keys.generate(1_700_000_000_000, 7, 42);
        let id = format!("{ID_PREFIX}{hash}");
        let named = ClickParams::parse(&format!("imp={id}&sub1=a"));
        assert_eq!(named_by(&keys, &named), id);
        // A click hash without the prefix, a forged one and garbage are not impressions.
        for imp in [hash.as_str(), "inot-a-hash", ""] {
            let params = ClickParams::parse(&format!("imp={imp}"));
            assert_eq!(named_by(&keys, &params), "", "{imp}");
        }
        let other = ClickHashKeys::parse("1:another-secret-0123456789abcdef", 1).unwrap();
        assert_eq!(named_by(&other, &named), "");
    }

    #[test]
    fn the_click_encoder_writes_an_impression() {
        let agent = traffsure_core::user_agent::UserAgent::default();
        let extra = std::collections::BTreeMap::from([("zone".to_string(), "z1".to_string())]);
        let subs = vec!["s1".to_string(), String::new()];
        let event = ClickEvent {
            click_hash: "iABC",
            flow_id: 9,
            ts_ms: 1_700_000_000_123,
            routing_key: 77,
            visitor_id: "0123456789abcdef0123456789abcdef",
            ip: "203.0.113.9".parse().ok(),
            country: "DE",
            user_agent: "Mozilla/5.0",
            device: "desktop",
            os: "linux",
            browser: "firefox",
            referrer: "https://publisher.test/",
            sub_id: "sid",
            source: "src",
            subs: &subs,
            cost_micros: 2_500,
            cost_currency: "EUR",
            cost_source: traffsure_events::CostSource::Unspecified,
            destination_url: "",
            is_bot: true,
            bot_reason: BotReason::Headless,
            agent: &agent,
            extra: &extra,
            asn: 64_500,
            as_org: "Example",
            datacenter: true,
            rate_exceeded: false,
            funnel: Funnel {
                traffic_source_id: 3,
                external_id: "ext-1",
                ..Funnel::default()
            },
        };
        let mut buf = Vec::new();
        event.encode(&mut buf);
        let imp = traffsure_events::Impression::decode(buf.as_slice()).unwrap();
        assert_eq!(imp.impression_id, "iABC");
        assert_eq!(
            (imp.flow_id, imp.ts_ms, imp.routing_key),
            (9, 1_700_000_000_123, 77)
        );
        assert_eq!(
            (imp.ip.as_str(), imp.country.as_str()),
            ("203.0.113.9", "DE")
        );
        assert_eq!(imp.subs, subs);
        assert_eq!(
            (imp.cost_micros, imp.cost_currency.as_str()),
            (2_500, "EUR")
        );
        assert!(imp.is_bot && imp.datacenter);
        assert_eq!(imp.bot_reason(), BotReason::Headless);
        assert_eq!(imp.extra.get("zone").map(String::as_str), Some("z1"));
        assert_eq!(
            (imp.traffic_source_id, imp.external_id.as_str()),
            (3, "ext-1")
        );
        assert_eq!(imp.referrer, "https://publisher.test/");
        // The log's recovery reads an impression as a click: its id is the click hash.
        let as_click = traffsure_events::Click::decode(buf.as_slice()).unwrap();
        assert_eq!(as_click.click_hash, "iABC");
    }
}

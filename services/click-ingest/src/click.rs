//! The tracking link: resolve the flow, mint a click hash, fill the destination's macros,
//! redirect, and hand the click event to the Kafka producer queue.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use prost::Message as _;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use traffsure_config::KafkaSettings;
use traffsure_core::{macros, now_ms, visitor, ClickHashKeys};
use traffsure_events::{Click, Flow, FlowStatus, RedirectMode};
use traffsure_kafka::FlowRegistry;
use traffsure_telemetry::prometheus::IntCounterVec;

pub struct Edge {
    pub registry: Arc<FlowRegistry>,
    pub keys: ClickHashKeys,
    pub geo: crate::geo::GeoIp,
    pub publisher: Publisher,
    pub unknown_flow_url: String,
    pub visitor_cookie: String,
}

fn clicks_total() -> &'static IntCounterVec {
    static METRIC: std::sync::OnceLock<IntCounterVec> = std::sync::OnceLock::new();
    METRIC.get_or_init(|| {
        traffsure_telemetry::counter_vec(
            "traffsure_clicks_total",
            "Tracking-link requests by outcome",
            &["outcome"],
        )
    })
}

fn deliveries_total() -> &'static IntCounterVec {
    static METRIC: std::sync::OnceLock<IntCounterVec> = std::sync::OnceLock::new();
    METRIC.get_or_init(|| {
        traffsure_telemetry::counter_vec(
            "traffsure_click_deliveries_total",
            "Click events by Kafka delivery result",
            &["result"],
        )
    })
}

/// The tracking-link query parameters that have a field of their own in a click.
struct ClickParams {
    sub_id: String,
    source: String,
    subs: Vec<String>,
    cost: String,
    extra: std::collections::BTreeMap<String, String>,
}

impl ClickParams {
    fn parse(query: &str) -> Self {
        let mut params = Self {
            sub_id: String::new(),
            source: String::new(),
            subs: vec![String::new(); 10],
            cost: String::new(),
            extra: Default::default(),
        };
        for (name, value) in form_pairs(query) {
            match name.as_str() {
                "sub_id" => params.sub_id = value,
                "source" => params.source = value,
                "cost" => params.cost = value,
                other => match other
                    .strip_prefix("sub")
                    .and_then(|n| n.parse::<usize>().ok())
                {
                    Some(n @ 1..=10) => params.subs[n - 1] = value,
                    _ => {
                        if params.extra.len() < 32 {
                            params.extra.insert(name, value);
                        }
                    }
                },
            }
        }
        params
    }
}

/// Decodes `a=b&c=d` leniently: bad percent-encoding and invalid UTF-8 are kept as
/// replacement characters instead of failing the click.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .take(64)
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let text = text.replace('+', " ");
    percent_encoding::percent_decode_str(&text)
        .decode_utf8_lossy()
        .into_owned()
}

fn client_ip(req: &HttpRequest) -> Option<IpAddr> {
    req.peer_addr().map(|addr| addr.ip())
}

pub async fn track(
    edge: web::Data<Edge>,
    req: HttpRequest,
    flow: web::Path<String>,
) -> HttpResponse {
    let flow = match edge.registry.resolve(&flow) {
        Some(flow)
            if flow.status() == FlowStatus::Active || flow.status() == FlowStatus::Unspecified =>
        {
            flow
        }
        _ => return edge.unknown_flow(),
    };
    if req.query_string().len() > 8192 {
        clicks_total().with_label_values(&["uri_too_long"]).inc();
        return HttpResponse::UriTooLong().body("tracking link query is longer than 8192 bytes");
    }
    let params = ClickParams::parse(req.query_string());
    let cookie_vid = req
        .cookie(&edge.visitor_cookie)
        .map(|c| c.value().to_string())
        .filter(|v| visitor::routing_key(v).is_some());
    let visitor_id = cookie_vid.clone().unwrap_or_else(visitor::new_visitor_id);
    let routing_key = visitor::routing_key(&visitor_id).unwrap_or_default();
    let ts_ms = now_ms();
    let click_hash = edge.keys.generate(ts_ms, flow.id, routing_key);
    let ip = client_ip(&req);
    let country = ip.map(|ip| edge.geo.country(ip)).unwrap_or_default();
    let cost_micros = traffsure_core::parse_micros(&params.cost).unwrap_or(0);

    let destination = macros::render(&flow.destination_url, |name| {
        let value: Cow<'_, str> = match name {
            "click" => click_hash.as_str().into(),
            "flow" => flow.id.to_string().into(),
            "sub_id" => params.sub_id.as_str().into(),
            "source" => params.source.as_str().into(),
            "country" => country.as_str().into(),
            "cost" => params.cost.as_str().into(),
            "ts" => (ts_ms / 1000).to_string().into(),
            "visitor" => visitor_id.as_str().into(),
            "device" | "os" | "browser" => "".into(),
            other => match other
                .strip_prefix("sub")
                .and_then(|n| n.parse::<usize>().ok())
            {
                Some(n @ 1..=10) => params.subs[n - 1].as_str().into(),
                _ => return None,
            },
        };
        Some(Cow::Owned(value.into_owned()))
    });

    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let referrer = req
        .headers()
        .get(header::REFERER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let click = Click {
        click_hash,
        flow_id: flow.id,
        ts_ms,
        routing_key: u32::from(routing_key),
        visitor_id: visitor_id.clone(),
        ip: ip.map(|ip| ip.to_string()).unwrap_or_default(),
        country,
        user_agent,
        referrer,
        sub_id: params.sub_id,
        source: params.source,
        subs: params.subs,
        cost_micros,
        destination_url: destination.clone(),
        extra: params.extra,
        ..Click::default()
    };
    edge.publisher.publish(&click);
    clicks_total().with_label_values(&["redirected"]).inc();

    let mut response = redirect(&flow, &destination);
    if cookie_vid.is_none() {
        let cookie = Cookie::build(edge.visitor_cookie.clone(), visitor_id)
            .path("/")
            .max_age(actix_web::cookie::time::Duration::days(365))
            .same_site(SameSite::Lax)
            .http_only(true)
            .secure(req.connection_info().scheme() == "https")
            .finish();
        let _ = response.add_cookie(&cookie);
    }
    response
}

impl Edge {
    fn unknown_flow(&self) -> HttpResponse {
        clicks_total().with_label_values(&["unknown_flow"]).inc();
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

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn redirect(flow: &Flow, destination: &str) -> HttpResponse {
    match flow.redirect_mode() {
        RedirectMode::Temporary307 => HttpResponse::TemporaryRedirect()
            .insert_header((header::LOCATION, destination))
            .finish(),
        mode @ (RedirectMode::MetaRefresh | RedirectMode::DoubleMetaRefresh) => {
            let referrer = if mode == RedirectMode::DoubleMetaRefresh {
                r#"<meta name="referrer" content="no-referrer">"#
            } else {
                ""
            };
            let url = html_escape(destination);
            HttpResponse::Ok()
                .content_type("text/html; charset=utf-8")
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .body(format!(
                    "<!doctype html><html><head>{referrer}<meta http-equiv=\"refresh\" content=\"0;url={url}\"></head>\
                     <body><a href=\"{url}\">Continue</a></body></html>"
                ))
        }
        RedirectMode::Found302 | RedirectMode::Unspecified => HttpResponse::Found()
            .insert_header((header::LOCATION, destination))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
    }
}

/// Counts delivery reports, so lost clicks show in `/metrics`.
pub struct DeliveryCounter;

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        match result {
            Ok(_) => deliveries_total().with_label_values(&["delivered"]).inc(),
            Err((error, _)) => {
                deliveries_total().with_label_values(&["failed"]).inc();
                tracing::error!(%error, "click event not delivered");
            }
        }
    }
}

/// Publishes click events through librdkafka's queue; the redirect never waits for it.
#[derive(Clone)]
pub struct Publisher {
    producer: Arc<ThreadedProducer<DeliveryCounter>>,
    topic: String,
}

impl Publisher {
    pub fn new(settings: &KafkaSettings, topic: String) -> Result<Self, KafkaError> {
        let producer =
            traffsure_kafka::producer_config(settings).create_with_context(DeliveryCounter)?;
        Ok(Self {
            producer: Arc::new(producer),
            topic,
        })
    }

    pub fn publish(&self, click: &Click) {
        let payload = click.encode_to_vec();
        let key = traffsure_kafka::routing_key_bytes(click.routing_key as u16);
        let record = BaseRecord::to(&self.topic).key(&key[..]).payload(&payload);
        if let Err((error, _)) = self.producer.send(record) {
            deliveries_total()
                .with_label_values(&["enqueue_failed"])
                .inc();
            tracing::error!(%error, click_hash = %click.click_hash, "click event not queued");
        }
    }

    pub fn flush(&self) {
        if let Err(error) = self.producer.flush(Duration::from_secs(15)) {
            tracing::error!(%error, "click events left unflushed at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn escapes_meta_refresh_urls() {
        assert_eq!(
            html_escape("https://a.test/?a=1&b=\"<x>\""),
            "https://a.test/?a=1&amp;b=&quot;&lt;x&gt;&quot;"
        );
    }
}

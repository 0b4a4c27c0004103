//! One postback request: read it, decide whether it converts, make it durable, log it.
//! Every refusal is a `PostbackError`; how each is answered over HTTP (JSON, pixel or
//! page) is `answer.rs`'s to say.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use futures::StreamExt;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::FutureProducer;
use traffsure_core::client_ip::ClientIpResolver;
use traffsure_core::{now_ms, status, visitor, ClickHashError, ClickHashKeys, MoneyError};
use traffsure_events::{Param, Postback, PostbackLogEntry};
use traffsure_kafka::{FlowRegistry, Topics};

use crate::params::{self, Params};
use crate::security::{self, SecurityError};

pub struct Edge {
    pub registry: Arc<FlowRegistry>,
    pub keys: ClickHashKeys,
    pub producer: FutureProducer,
    pub topics: Topics,
    pub max_body_bytes: usize,
    /// Clicks older than this are answered 404, as if never made.
    pub click_retention_ms: i64,
    /// Who the client is behind a trusted proxy.
    pub client_ip: ClientIpResolver,
    /// `client_ip.header()`, parsed once for lookups.
    pub client_ip_header: header::HeaderName,
    /// Cookie holding the visitor ID that click-ingest sets.
    pub visitor_cookie: String,
}

/// Why a postback is refused, or not stored. `field` is the parameter at fault, under
/// the name it was sent.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PostbackError {
    #[error(
        "click is missing (also read as clickid, click_id, cid, subid, hit, cnv_id, transaction_id, or vid with flow)"
    )]
    MissingClick,
    #[error("click hash not found: {error}")]
    ClickNotFound {
        field: String,
        error: ClickHashError,
    },
    #[error("click hash not found: the click is {days} days old, past retention")]
    ClickPastRetention { field: String, days: i64 },
    #[error("vid is not a visitor ID")]
    InvalidVisitor,
    #[error("a vid postback needs the flow parameter")]
    MissingFlow,
    /// `p` that is not an offer id.
    #[error("{field} must be an offer id (a number from 1)")]
    InvalidOffer { field: String },
    /// The flow as named, cut to 64 bytes.
    #[error("flow {0:?} not found")]
    FlowNotFound(String),
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error("revenue {error}: {value:?}")]
    InvalidRevenue {
        field: String,
        error: MoneyError,
        value: String,
    },
    #[error("currency must be a three-letter code, not {value:?}")]
    InvalidCurrency { field: String, value: String },
    #[error("goal is longer than 64 characters")]
    InvalidGoal { field: String },
    #[error("uid is longer than 256 characters")]
    InvalidUid { field: String },
    #[error("{field} (the rejection reason) is longer than {max} bytes", max = params::MAX_REASON_BYTES)]
    InvalidReason { field: String },
    #[error("request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    /// A body that cannot be read as its content type says.
    #[error("{0}")]
    InvalidBody(String),
    /// The broker did not acknowledge the postback.
    #[error("postback could not be stored, retry later")]
    NotDurable,
}

/// What a postback says once checked: the event to publish, and the click's time.
#[derive(Debug)]
pub struct Accepted {
    pub postback: Postback,
    pub click_ts_ms: Option<i64>,
}

/// A postback refused, with what was learnt before refusing it (for the log).
#[derive(Debug)]
pub struct Refused {
    pub error: PostbackError,
    pub click_ts_ms: Option<i64>,
    pub flow_id: u32,
}

impl From<PostbackError> for Refused {
    fn from(error: PostbackError) -> Self {
        Self {
            error,
            click_ts_ms: None,
            flow_id: 0,
        }
    }
}

/// Where a postback comes from and when, as the checks need it.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub postback_id: &'a str,
    pub received_at_ms: i64,
    pub ip: Option<IpAddr>,
    pub click_retention_ms: i64,
}

/// Checks a postback (click hash or visitor, flow security, parameters) and builds its
/// event, or says why not.
pub fn decide(
    keys: &ClickHashKeys,
    registry: &FlowRegistry,
    params: &Params,
    origin: Origin<'_>,
) -> Result<Accepted, Refused> {
    let mut postback = Postback {
        postback_id: origin.postback_id.to_string(),
        received_at_ms: origin.received_at_ms,
        ip: origin.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        ..Postback::default()
    };
    let mut click_ts_ms = None;
    let flow = match (params.click(), params.visitor()) {
        (Some((field, click)), _) => {
            let info = keys
                .verify(click)
                .map_err(|error| PostbackError::ClickNotFound {
                    field: field.to_string(),
                    error,
                })?;
            let age_ms = origin.received_at_ms - info.ts_ms;
            if age_ms > origin.click_retention_ms {
                return Err(PostbackError::ClickPastRetention {
                    field: field.to_string(),
                    days: age_ms / 86_400_000,
                }
                .into());
            }
            postback.click_hash = click.to_ascii_lowercase();
            postback.flow_id = info.flow_id;
            postback.routing_key = u32::from(info.routing_key);
            click_ts_ms = Some(info.ts_ms);
            registry.get(info.flow_id)
        }
        (None, Some(vid)) => {
            let routing_key = visitor::routing_key(vid).ok_or(PostbackError::InvalidVisitor)?;
            let flow = params.get(params::FLOW).ok_or(PostbackError::MissingFlow)?;
            let flow = registry
                .resolve(flow)
                .ok_or_else(|| PostbackError::FlowNotFound(truncate(flow).to_string()))?;
            postback.visitor_id = vid.to_ascii_lowercase();
            postback.flow_id = flow.id;
            postback.routing_key = u32::from(routing_key);
            if let Some((field, offer)) = params.find(params::OFFER) {
                postback.offer_id =
                    offer
                        .parse::<u32>()
                        .ok()
                        .filter(|id| *id != 0)
                        .ok_or_else(|| PostbackError::InvalidOffer {
                            field: field.to_string(),
                        })?;
            }
            Some(flow)
        }
        (None, None) => return Err(PostbackError::MissingClick.into()),
    };
    let refuse = |error: PostbackError| Refused {
        error,
        click_ts_ms,
        flow_id: postback.flow_id,
    };
    if let Some(security) = flow.as_ref().and_then(|f| f.postback_security.as_ref()) {
        security::check(
            security,
            params,
            origin.ip,
            origin.received_at_ms.div_euclid(1000),
        )
        .map_err(|e| refuse(e.into()))?;
    }
    if let Some((field, revenue)) = params.find(params::REVENUE) {
        match traffsure_core::parse_micros(revenue) {
            Ok(micros) => {
                postback.has_revenue = true;
                postback.revenue_micros = micros;
            }
            Err(error) => {
                return Err(refuse(PostbackError::InvalidRevenue {
                    field: field.to_string(),
                    error,
                    value: truncate(revenue).to_string(),
                }))
            }
        }
    }
    if let Some((field, currency)) = params.find(params::CURRENCY) {
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(refuse(PostbackError::InvalidCurrency {
                field: field.to_string(),
                value: truncate(currency).to_string(),
            }));
        }
        postback.currency = currency.to_ascii_uppercase();
    }
    if let Some((field, goal)) = params.find(params::GOAL) {
        if goal.len() > 64 {
            return Err(refuse(PostbackError::InvalidGoal {
                field: field.to_string(),
            }));
        }
        postback.goal = goal.to_ascii_lowercase();
    }
    if let Some((field, uid)) = params.uid() {
        if uid.len() > 256 {
            return Err(refuse(PostbackError::InvalidUid {
                field: field.to_string(),
            }));
        }
        postback.uid = uid.to_string();
    }
    if let Some((field, reason)) = params.find(params::REASON) {
        if reason.len() > params::MAX_REASON_BYTES {
            return Err(refuse(PostbackError::InvalidReason {
                field: field.to_string(),
            }));
        }
        postback.reason = reason.to_string();
    }
    let raw_status = params.get(params::STATUS).unwrap_or_default();
    postback.raw_status = truncate(raw_status).to_string();
    postback.set_status(match &flow {
        Some(flow) => status::map_status_with(raw_status, &flow.status_map),
        None => status::map_status(raw_status),
    });
    postback.disable_postbacks = params
        .get(params::DISABLE_POSTBACKS)
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
    Ok(Accepted {
        postback,
        click_ts_ms,
    })
}

fn truncate(text: &str) -> &str {
    traffsure_core::macros::truncate_str(text, 64)
}

enum Body {
    Read(web::Bytes),
    TooLarge,
}

async fn read_body(mut payload: web::Payload, limit: usize) -> Body {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else { break };
        if body.len() + chunk.len() > limit {
            return Body::TooLarge;
        }
        body.extend_from_slice(&chunk);
    }
    Body::Read(body.freeze())
}

/// Queues the log entry without holding the answer back for its acknowledgement: the
/// answer depends only on the postback being durable. A delivery failure is reported in
/// the service log and the `traffsure_postback_log_failures_total` counter; SIGTERM
/// flushes whatever is still queued.
fn publish_log(edge: &Edge, log: &PostbackLogEntry, trace: Option<OwnedHeaders>) {
    use prost::Message as _;
    let payload = log.encode_to_vec();
    let mut record = rdkafka::producer::FutureRecord::to(&edge.topics.postback_log)
        .key(log.click_hash.as_bytes())
        .payload(&payload);
    if let Some(headers) = trace {
        record = record.headers(headers);
    }
    let postback_id = log.postback_id.clone();
    match edge.producer.send_result(record) {
        Ok(delivery) => {
            actix_web::rt::spawn(async move {
                match delivery.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((error, _))) => {
                        traffsure_kafka::metrics::count_delivery_error("postback-ingest", &error);
                        log_failed(&postback_id, &error.to_string())
                    }
                    Err(_) => log_failed(&postback_id, "delivery canceled"),
                }
            });
        }
        Err((error, _)) => {
            traffsure_kafka::metrics::count_delivery_error("postback-ingest", &error);
            log_failed(&postback_id, &error.to_string())
        }
    }
}

fn log_failed(postback_id: &str, error: &str) {
    static METRIC: std::sync::OnceLock<traffsure_telemetry::prometheus::IntCounter> =
        std::sync::OnceLock::new();
    METRIC
        .get_or_init(|| {
            traffsure_telemetry::counter_vec(
                "traffsure_postback_log_failures_total",
                "Postback log entries Kafka did not accept",
                &[],
            )
            .with_label_values::<&str>(&[])
        })
        .inc();
    tracing::error!(error, postback_id, "postback log entry not stored");
}

/// A request read, decided and (when accepted) published: its postback ID, its result,
/// and its `postback-log` entry, which waits for the answer's status and reason.
pub struct Handled {
    pub postback_id: String,
    pub result: Result<(), PostbackError>,
    log: PostbackLogEntry,
    trace: Option<OwnedHeaders>,
    span: tracing::Span,
}

impl Handled {
    /// Logs the request in `postback-log` with the answer it got.
    pub fn log(mut self, edge: &Edge, status: u16, reason: &str, message: &str) {
        self.log.response_status = u32::from(status);
        self.log.reason = reason.to_string();
        self.log.message = message.to_string();
        publish_log(edge, &self.log, self.trace);
        drop(self.span);
    }
}

/// Reads, decides and publishes one request; the caller answers it and logs it.
/// `visitor_cookie` is the visitor ID a browser endpoint read from its cookie, used when
/// the request names no click or vid.
pub async fn process(
    edge: &Edge,
    req: &HttpRequest,
    payload: web::Payload,
    visitor_cookie: Option<String>,
) -> Handled {
    let received_at_ms = now_ms();
    let postback_id = uuid::Uuid::now_v7().to_string();
    // The request's span, whose context the postback and its log entry carry on to
    // attribution, the sink and the dispatcher; none without trace export.
    let span = if traffsure_telemetry::otlp_enabled() {
        tracing::info_span!("postback", postback_id = %postback_id, path = req.path())
    } else {
        tracing::Span::none()
    };
    let trace = span.in_scope(traffsure_kafka::trace::headers_if_traced);
    let forwarded = req
        .headers()
        .get(&edge.client_ip_header)
        .and_then(|v| v.to_str().ok());
    let ip = edge
        .client_ip
        .client_ip(req.peer_addr().map(|a| a.ip()), forwarded);
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let body = read_body(payload, edge.max_body_bytes).await;
    let (params, decision) = match body {
        Body::TooLarge => {
            let params = Params::collect(req.query_string(), "", b"").unwrap_or_else(|(p, _)| p);
            let error = PostbackError::BodyTooLarge(edge.max_body_bytes);
            (params, Err(error.into()))
        }
        Body::Read(body) => match Params::collect(req.query_string(), &content_type, &body) {
            Ok(mut params) => {
                params.visitor_cookie = visitor_cookie;
                let decision = decide(
                    &edge.keys,
                    &edge.registry,
                    &params,
                    Origin {
                        postback_id: &postback_id,
                        received_at_ms,
                        ip,
                        click_retention_ms: edge.click_retention_ms,
                    },
                );
                (params, decision)
            }
            Err((params, params::BodyError::Json(message))) => {
                (params, Err(PostbackError::InvalidBody(message).into()))
            }
        },
    };

    let mut log = PostbackLogEntry {
        postback_id: postback_id.clone(),
        received_at_ms,
        ip: ip.map(|ip| ip.to_string()).unwrap_or_default(),
        method: req.method().to_string(),
        content_type,
        path: req.path().to_string(),
        params: params
            .for_log()
            .map(|(name, value, truncated)| Param {
                name: name.to_string(),
                value: value.into_owned(),
                truncated,
            })
            .collect(),
        delta_ms: -1,
        ..PostbackLogEntry::default()
    };
    let result = match decision {
        Ok(accepted) => {
            let postback = accepted.postback;
            log.flow_id = postback.flow_id;
            log.click_hash = postback.click_hash.clone();
            log.goal = postback.goal.clone();
            log.delta_ms = accepted
                .click_ts_ms
                .map(|ts| received_at_ms - ts)
                .unwrap_or(-1);
            let key = traffsure_kafka::routing_key_bytes(postback.routing_key as u16);
            match traffsure_kafka::send_event_with_headers(
                &edge.producer,
                &edge.topics.postbacks,
                &key,
                &postback,
                trace.clone(),
            )
            .await
            {
                Ok(_) => Ok(()),
                Err(error) => {
                    traffsure_kafka::metrics::count_delivery_error("postback-ingest", &error);
                    tracing::error!(%error, postback_id, "postback not durable");
                    Err(PostbackError::NotDurable)
                }
            }
        }
        Err(refused) => {
            log.flow_id = refused.flow_id;
            log.click_hash = params
                .click()
                .map(|(_, c)| truncate(c).to_string())
                .unwrap_or_default();
            log.goal = params
                .get(params::GOAL)
                .map(|g| truncate(g).to_ascii_lowercase())
                .unwrap_or_default();
            log.delta_ms = refused
                .click_ts_ms
                .map(|ts| received_at_ms - ts)
                .unwrap_or(-1);
            Err(refused.error)
        }
    };
    Handled {
        postback_id,
        result,
        log,
        trace,
        span,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::answer::Answer;
    use actix_web::http::StatusCode;
    use traffsure_events::ConversionStatus;

    fn answer(refused: &Refused) -> Answer {
        Answer::refusal(&refused.error)
    }

    fn keys() -> ClickHashKeys {
        ClickHashKeys::parse("1:unit-test-secret-0001", 1).unwrap()
    }

    fn origin(received_at_ms: i64) -> Origin<'static> {
        Origin {
            postback_id: "pb1",
            received_at_ms,
            ip: "127.0.0.1".parse().ok(),
            click_retention_ms: 90 * 86_400_000,
        }
    }

    fn run(query: &str) -> Result<Accepted, Refused> {
        let params = Params::collect(query, "", b"").unwrap();
        decide(&keys(), &FlowRegistry::new(), &params, origin(2_000))
    }

    #[test]
    fn accepts_a_full_postback() {
        let click = keys().generate(1_000, 9, 77);
        let accepted = run(&format!(
            "clickid={click}&payout=2.5&currency=eur&tx=T1&event=Sale&status=hold"
        ))
        .unwrap();
        let p = accepted.postback;
        assert_eq!(
            (p.flow_id, p.routing_key, p.goal.as_str(), p.uid.as_str()),
            (9, 77, "sale", "T1")
        );
        assert_eq!(
            (p.has_revenue, p.revenue_micros, p.currency.as_str()),
            (true, 2_500_000, "EUR")
        );
        assert_eq!(p.status(), ConversionStatus::Pending);
        assert_eq!(accepted.click_ts_ms, Some(1_000));
    }

    #[test]
    fn answers_each_rejection_with_its_code() {
        let click = keys().generate(1_000, 9, 77);
        let code = |query: &str| answer(&run(query).unwrap_err());
        assert_eq!(code("goal=lead").code, "missing_click");
        assert_eq!(code("goal=lead").status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(code("click=nope").status, StatusCode::NOT_FOUND);
        assert_eq!(code("cid=nope").field.as_deref(), Some("cid"));
        assert_eq!(
            run(&format!("click={click}&Payout=ten")).unwrap_err().error,
            PostbackError::InvalidRevenue {
                field: "Payout".into(),
                error: traffsure_core::MoneyError::NotANumber,
                value: "ten".into(),
            }
        );
        assert_eq!(
            code(&format!("click={click}&revenue=abc")).code,
            "invalid_revenue"
        );
        assert_eq!(
            code(&format!("click={click}&currency=dollars")).code,
            "invalid_currency"
        );
        assert_eq!(code("vid=zz&flow=1").code, "invalid_visitor");
        assert_eq!(
            code("vid=beef0000000000000000000000000000&flow=1").code,
            "flow_not_found"
        );
        assert_eq!(
            code("vid=beef0000000000000000000000000000").code,
            "missing_flow"
        );
    }

    /// Property: any bytes as query, content type and body give an answer with a stable
    /// code and a log view within bounds, and never a panic.
    #[test]
    fn any_bytes_get_an_answer() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x7aff_5ce7);
        let click = keys().generate(1_000, 9, 77);
        let alphabet: Vec<u8> = b"&=%+;{}[]\":,. aZ09\x00\xff\xe2\x82".to_vec();
        let content_types = [
            "",
            "application/json",
            "application/x-www-form-urlencoded",
            "text/plain",
        ];
        for round in 0..5_000 {
            let mut bytes = |max: usize| -> Vec<u8> {
                let len = rng.random_range(0..max);
                (0..len)
                    .map(|_| {
                        if rng.random_bool(0.5) {
                            alphabet[rng.random_range(0..alphabet.len())]
                        } else {
                            rng.random()
                        }
                    })
                    .collect()
            };
            let mut query = String::from_utf8_lossy(&bytes(80)).into_owned();
            if round % 3 == 0 {
                query = format!("click={click}&{query}");
            }
            let body = bytes(120);
            let content_type = content_types[round % content_types.len()];
            let params = match Params::collect(&query, content_type, &body) {
                Ok(params) => params,
                Err((params, _)) => params,
            };
            assert!(params.pairs.len() <= params::MAX_PARAMS);
            for (_, value, truncated) in params.for_log() {
                assert!(value.len() <= params::MAX_LOGGED_VALUE);
                assert!(!truncated || value.len() > params::MAX_LOGGED_VALUE - 4);
            }
            let answer = match decide(&keys(), &FlowRegistry::new(), &params, origin(2_000)) {
                Ok(accepted) => {
                    assert!(!accepted.postback.click_hash.is_empty());
                    continue;
                }
                Err(refused) => answer(&refused),
            };
            assert!(
                [404, 422].contains(&answer.status.as_u16()),
                "{query:?}: {answer:?}"
            );
            assert!(!answer.code.is_empty() && !answer.message.is_empty());
        }
    }

    #[test]
    fn clicks_past_retention_are_not_found() {
        let click = keys().generate(1_000, 9, 77);
        let params = Params::collect(&format!("click={click}"), "", b"").unwrap();
        let late = decide(
            &keys(),
            &FlowRegistry::new(),
            &params,
            origin(1_000 + 91 * 86_400_000),
        )
        .unwrap_err();
        let late = answer(&late);
        assert_eq!(
            (late.status, late.code),
            (StatusCode::NOT_FOUND, "click_not_found")
        );
        assert!(late.message.contains("91 days"), "{}", late.message);
    }

    fn registry_with(flow: traffsure_events::Flow) -> FlowRegistry {
        let registry = FlowRegistry::new();
        registry.upsert(flow);
        registry
    }

    #[test]
    fn applies_the_flow_status_map_and_security() {
        let flow = traffsure_events::Flow {
            id: 9,
            slug: "nine".into(),
            status_map: [("2".to_string(), "rejected".to_string())].into(),
            postback_security: Some(Box::new(traffsure_events::PostbackSecurity {
                token: "t0k3n".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let registry = registry_with(flow);
        let click = keys().generate(1_000, 9, 77);
        let run = |query: String| {
            let params = Params::collect(&query, "", b"").unwrap();
            decide(&keys(), &registry, &params, origin(2_000))
        };
        let accepted = run(format!("click={click}&status=2&token=t0k3n")).unwrap();
        assert_eq!(accepted.postback.status(), ConversionStatus::Rejected);
        assert_eq!(accepted.postback.raw_status, "2");
        let refused = run(format!("click={click}&status=2&token=wrong")).unwrap_err();
        assert_eq!(
            (refused.error, refused.flow_id),
            (SecurityError::InvalidToken.into(), 9)
        );
        assert_eq!(refused.click_ts_ms, Some(1_000));
        // A visitor postback names the flow, so its security applies too.
        let vid = run("vid=beef0000000000000000000000000000&flow=nine".into()).unwrap_err();
        assert_eq!(vid.error, SecurityError::MissingToken.into());
        let vid = run("vid=beef0000000000000000000000000000&flow=nine&token=t0k3n".into());
        assert_eq!(vid.unwrap().postback.routing_key, 0xBEEF);
    }

    #[test]
    fn a_visitor_postback_may_name_the_offer_that_converted() {
        let registry = registry_with(traffsure_events::Flow {
            id: 4,
            slug: "ff".into(),
            ..Default::default()
        });
        let run = |query: &str| {
            let params = Params::collect(query, "", b"").unwrap();
            decide(&keys(), &registry, &params, origin(2_000))
        };
        let vid = "vid=beef0000000000000000000000000000&flow=ff";
        assert_eq!(run(vid).unwrap().postback.offer_id, 0);
        assert_eq!(run(&format!("{vid}&p=12")).unwrap().postback.offer_id, 12);
        for bad in ["p=0", "p=x", "p=-3"] {
            let refused = run(&format!("{vid}&{bad}")).unwrap_err();
            assert_eq!(
                refused.error,
                PostbackError::InvalidOffer { field: "p".into() }
            );
            assert_eq!(refused.flow_id, 0);
        }
        // Beside a click hash (a hit), `p` is not read: the hit is one visit already.
        let click = keys().generate(1_000, 4, 77);
        assert_eq!(
            run(&format!("click={click}&p=x"))
                .unwrap()
                .postback
                .offer_id,
            0
        );
    }
}

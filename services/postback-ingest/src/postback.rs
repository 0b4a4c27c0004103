//! One postback request: read it, decide the answer, make it durable, log it.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use rdkafka::producer::FutureProducer;
use serde::Serialize;
use traffsure_core::{now_ms, status, visitor, ClickHashKeys};
use traffsure_events::{Param, Postback, PostbackLogEntry};
use traffsure_kafka::{FlowRegistry, Topics};
use traffsure_telemetry::prometheus::IntCounterVec;

use crate::params::{self, Params};

pub struct Edge {
    pub registry: Arc<FlowRegistry>,
    pub keys: ClickHashKeys,
    pub producer: FutureProducer,
    pub topics: Topics,
    pub max_body_bytes: usize,
}

/// The answer to a postback: status, stable reason code, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Answer {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

#[derive(Serialize)]
struct AnswerBody<'a> {
    status: u16,
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    postback_id: Option<&'a str>,
}

fn answers_total() -> &'static IntCounterVec {
    static METRIC: std::sync::OnceLock<IntCounterVec> = std::sync::OnceLock::new();
    METRIC.get_or_init(|| {
        traffsure_telemetry::counter_vec(
            "traffsure_postbacks_total",
            "Postback requests by answer",
            &["status", "code"],
        )
    })
}

/// What a postback says once checked: the event to publish, and the click's time.
#[derive(Debug)]
pub struct Accepted {
    pub postback: Postback,
    pub click_ts_ms: Option<i64>,
}

/// Checks the parameters of a postback and builds its event, or says why not.
pub fn decide(
    keys: &ClickHashKeys,
    registry: &FlowRegistry,
    params: &Params,
    postback_id: &str,
    received_at_ms: i64,
    ip: &str,
) -> Result<Accepted, (Answer, Option<i64>, u32)> {
    let mut postback = Postback {
        postback_id: postback_id.to_string(),
        received_at_ms,
        ip: ip.to_string(),
        ..Postback::default()
    };
    let mut click_ts_ms = None;
    match (params.get(params::CLICK), params.get(params::VISITOR)) {
        (Some(click), _) => {
            let info = keys.verify(click).map_err(|e| {
                (
                    Answer::new(
                        StatusCode::NOT_FOUND,
                        "click_not_found",
                        format!("click hash not found: {e}"),
                    ),
                    None,
                    0,
                )
            })?;
            postback.click_hash = click.to_ascii_lowercase();
            postback.flow_id = info.flow_id;
            postback.routing_key = u32::from(info.routing_key);
            click_ts_ms = Some(info.ts_ms);
        }
        (None, Some(vid)) => {
            let routing_key = visitor::routing_key(vid).ok_or_else(|| {
                (
                    Answer::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_visitor",
                        "vid is not a visitor ID",
                    ),
                    None,
                    0,
                )
            })?;
            let flow = params.get(params::FLOW).ok_or_else(|| {
                (
                    Answer::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "missing_flow",
                        "a vid postback needs the flow parameter",
                    ),
                    None,
                    0,
                )
            })?;
            let flow = registry.resolve(flow).ok_or_else(|| {
                (
                    Answer::new(
                        StatusCode::NOT_FOUND,
                        "flow_not_found",
                        format!("flow {flow:?} not found"),
                    ),
                    None,
                    0,
                )
            })?;
            postback.visitor_id = vid.to_ascii_lowercase();
            postback.flow_id = flow.id;
            postback.routing_key = u32::from(routing_key);
        }
        (None, None) => {
            return Err((
                Answer::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "missing_click",
                    "click is missing (also read as clickid, cid, subid, hit, or vid with flow)",
                ),
                None,
                0,
            ))
        }
    }
    let reject = |code, message: String| {
        Err((
            Answer::new(StatusCode::UNPROCESSABLE_ENTITY, code, message),
            click_ts_ms,
            postback.flow_id,
        ))
    };
    if let Some(revenue) = params.get(params::REVENUE) {
        match traffsure_core::parse_micros(revenue) {
            Ok(micros) => {
                postback.has_revenue = true;
                postback.revenue_micros = micros;
            }
            Err(e) => {
                return reject(
                    "invalid_revenue",
                    format!("revenue {e}: {:?}", truncate(revenue)),
                )
            }
        }
    }
    if let Some(currency) = params.get(params::CURRENCY) {
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_alphabetic()) {
            return reject(
                "invalid_currency",
                format!(
                    "currency must be a three-letter code, not {:?}",
                    truncate(currency)
                ),
            );
        }
        postback.currency = currency.to_ascii_uppercase();
    }
    if let Some(goal) = params.get(params::GOAL) {
        if goal.len() > 64 {
            return reject("invalid_goal", "goal is longer than 64 characters".into());
        }
        postback.goal = goal.to_ascii_lowercase();
    }
    if let Some(uid) = params.get(params::UID) {
        if uid.len() > 256 {
            return reject("invalid_uid", "uid is longer than 256 characters".into());
        }
        postback.uid = uid.to_string();
    }
    let raw_status = params.get(params::STATUS).unwrap_or_default();
    postback.raw_status = truncate(raw_status).to_string();
    postback.set_status(status::map_status(raw_status));
    postback.disable_postbacks = params
        .get(params::DISABLE_POSTBACKS)
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
    Ok(Accepted {
        postback,
        click_ts_ms,
    })
}

fn truncate(text: &str) -> &str {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
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

pub async fn receive(
    edge: web::Data<Edge>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let received_at_ms = now_ms();
    let postback_id = uuid::Uuid::now_v7().to_string();
    let ip = req
        .peer_addr()
        .map(|a| a.ip())
        .map(|ip: IpAddr| ip.to_string())
        .unwrap_or_default();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let body = read_body(payload, edge.max_body_bytes).await;
    let (params, decision) = match body {
        Body::TooLarge => {
            let params = Params::collect(req.query_string(), "", b"").unwrap_or_else(|(p, _)| p);
            let answer = Answer::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body is larger than {} bytes", edge.max_body_bytes),
            );
            (params, Err((answer, None, 0)))
        }
        Body::Read(body) => match Params::collect(req.query_string(), &content_type, &body) {
            Ok(params) => {
                let decision = decide(
                    &edge.keys,
                    &edge.registry,
                    &params,
                    &postback_id,
                    received_at_ms,
                    &ip,
                );
                (params, decision)
            }
            Err((params, params::BodyError::Json(message))) => (
                params,
                Err((
                    Answer::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message),
                    None,
                    0,
                )),
            ),
        },
    };

    let mut log = PostbackLogEntry {
        postback_id: postback_id.clone(),
        received_at_ms,
        ip,
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
    let answer = match decision {
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
            match traffsure_kafka::send_event(
                &edge.producer,
                &edge.topics.postbacks,
                &key,
                &postback,
            )
            .await
            {
                Ok(_) => Answer::new(StatusCode::OK, "accepted", "postback accepted"),
                Err(error) => {
                    tracing::error!(%error, postback_id, "postback not durable");
                    Answer::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not_durable",
                        "postback could not be stored, retry later",
                    )
                }
            }
        }
        Err((answer, click_ts_ms, flow_id)) => {
            log.flow_id = flow_id;
            log.click_hash = params
                .get(params::CLICK)
                .map(|c| truncate(c).to_string())
                .unwrap_or_default();
            log.goal = params
                .get(params::GOAL)
                .map(|g| truncate(g).to_ascii_lowercase())
                .unwrap_or_default();
            log.delta_ms = click_ts_ms.map(|ts| received_at_ms - ts).unwrap_or(-1);
            answer
        }
    };
    log.response_status = u32::from(answer.status.as_u16());
    log.reason = answer.code.to_string();
    log.message = answer.message.clone();
    let log_key = log.click_hash.clone();
    if let Err(error) = traffsure_kafka::send_event(
        &edge.producer,
        &edge.topics.postback_log,
        log_key.as_bytes(),
        &log,
    )
    .await
    {
        tracing::error!(%error, postback_id, "postback log entry not stored");
    }
    answers_total()
        .with_label_values(&[answer.status.as_str(), answer.code])
        .inc();
    HttpResponse::build(answer.status).json(AnswerBody {
        status: answer.status.as_u16(),
        code: answer.code,
        message: &answer.message,
        postback_id: Some(&postback_id),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use traffsure_events::ConversionStatus;

    fn keys() -> ClickHashKeys {
        ClickHashKeys::parse("1:unit-test-secret-0001", 1).unwrap()
    }

    fn run(query: &str) -> Result<Accepted, (Answer, Option<i64>, u32)> {
        let params = Params::collect(query, "", b"").unwrap();
        decide(
            &keys(),
            &FlowRegistry::new(),
            &params,
            "pb1",
            2_000,
            "127.0.0.1",
        )
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
        let code = |query: &str| run(query).unwrap_err().0;
        assert_eq!(code("goal=lead").code, "missing_click");
        assert_eq!(code("goal=lead").status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(code("click=nope").status, StatusCode::NOT_FOUND);
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
    }
}

//! A postback's trace continues through Kafka: with every service exporting OTLP to a
//! receiver inside the test, one postback ends in spans from postback-ingest,
//! conversion-attribution, the sink and postback-dispatcher that share one trace id.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpResponse};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use serde_json::json;
use traffsure_tests::{eventually, serve_local, Stack, StackOptions};

/// One exported span: the service that sent it, its trace id (hex) and its name.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    trace_id: String,
    name: String,
}

/// Receives OTLP/HTTP trace exports (protobuf) on `/v1/traces`, and outbound postbacks
/// anywhere else.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    outbound: Arc<Mutex<usize>>,
}

impl Collector {
    async fn start(&self) -> anyhow::Result<u16> {
        let state = web::Data::new(self.clone());
        serve_local(move |app| {
            app.app_data(state.clone())
                .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                .route("/v1/traces", web::post().to(export))
                .default_service(web::to(outbound));
        })
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn export(body: web::Bytes, collector: web::Data<Collector>) -> HttpResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body.as_ref()) else {
        return HttpResponse::BadRequest().body("not an ExportTraceServiceRequest");
    };
    let mut spans = collector.spans.lock().unwrap_or_else(|p| p.into_inner());
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref())
            .and_then(|v| match &v.value {
                Some(AnyValue::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(Span {
                    service: service.clone(),
                    trace_id: span.trace_id.iter().map(|b| format!("{b:02x}")).collect(),
                    name: span.name,
                });
            }
        }
    }
    // An empty ExportTraceServiceResponse.
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .body(Vec::<u8>::new())
}

async fn outbound(collector: web::Data<Collector>) -> HttpResponse {
    *collector.outbound.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    HttpResponse::Ok().body("ok")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_postback_is_one_trace_through_every_service() -> anyhow::Result<()> {
    let collector = Collector::default();
    let port = collector.start().await?;
    let stack = Stack::start_with(
        StackOptions::default()
            .env(
                "*",
                "TRAFFSURE__TELEMETRY__OTLP_ENDPOINT",
                format!("http://127.0.0.1:{port}"),
            )
            // Export every 200 ms instead of every 5 s.
            .env("*", "OTEL_BSP_SCHEDULE_DELAY", "200")
            // Spans are exported whatever the log level.
            .env("*", "RUST_LOG", "warn")
            .env(
                "postback-dispatcher",
                "TRAFFSURE__OUTBOUND__ALLOW_PRIVATE_TARGETS",
                "true",
            ),
    )
    .await?;
    let result = run(&stack, &collector, port).await;
    stack.print_failure(&result);
    result
}

async fn run(stack: &Stack, collector: &Collector, port: u16) -> anyhow::Result<()> {
    let slug = format!("traced-{}", stack.id);
    stack
        .create_flow(json!({
            "name": "Traced",
            "slug": slug,
            "destination_url": "https://offer.example/land?c={click}",
            "goals": [{"key": "sale", "payout": "2"}],
            "outbound_postbacks": [{
                "url": format!("http://127.0.0.1:{port}/ob?click={{click}}"),
                "on_status": "any"
            }]
        }))
        .await?;
    let track = stack.url("click-ingest", &format!("/c/{slug}"));
    let redirect = eventually(Duration::from_secs(20), || async {
        let response = stack.http.get(&track).send().await?;
        Ok((response.status() == 302).then_some(response))
    })
    .await?;
    let location = redirect.headers()["location"].to_str()?.to_string();
    let click = location
        .split_once("c=")
        .map(|(_, c)| c.to_string())
        .unwrap_or_default();
    // The click is in ClickHouse, so attribution has most likely read it too: a postback
    // held for its click is attributed later, under the click's trace.
    eventually(Duration::from_secs(30), || async {
        Ok((stack.clickhouse("SELECT count() FROM clicks").await? == "1").then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let postback = stack.url(
        "postback-ingest",
        &format!("/postback?click={click}&uid=traced-1&revenue=2"),
    );
    let http = &stack.http;
    eventually(Duration::from_secs(20), || async {
        Ok((http.get(&postback).send().await?.status() == 200).then_some(()))
    })
    .await?;

    // The trace the postback started, seen from every service it passed.
    let wanted: BTreeSet<&str> = [
        "postback-ingest",
        "conversion-attribution",
        "sink",
        "postback-dispatcher",
    ]
    .into_iter()
    .collect();
    let trace = eventually(Duration::from_secs(60), || async {
        let mut by_trace: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for span in collector.spans() {
            let entry = by_trace.entry(span.trace_id).or_default();
            entry.insert(span.service.clone());
            entry.insert(format!("{}: {}", span.service, span.name));
        }
        // Every service, and the dispatcher's attempt as well as its recording.
        Ok(by_trace.into_iter().find(|(_, seen)| {
            wanted.iter().all(|service| seen.contains(*service))
                && seen.contains("postback-dispatcher: outbound postback")
        }))
    })
    .await
    .map_err(|e| {
        let seen: Vec<String> = collector
            .spans()
            .iter()
            .map(|s| format!("{} {} {}", s.service, s.trace_id, s.name))
            .collect();
        anyhow::anyhow!("no trace through every service ({e}); spans: {seen:#?}")
    })?;
    let names: Vec<String> = collector
        .spans()
        .into_iter()
        .filter(|s| s.trace_id == trace.0)
        .map(|s| format!("{}: {}", s.service, s.name))
        .collect();
    eprintln!("trace {}: {names:#?}", trace.0);
    assert!(
        names
            .iter()
            .any(|n| n == "conversion-attribution: attribute"),
        "{names:?}"
    );
    assert!(
        *collector.outbound.lock().unwrap_or_else(|p| p.into_inner()) >= 1,
        "the outbound postback was not sent"
    );
    Ok(())
}

//! The benchmark's framework floor: actix-web answering every request with a constant 302
//! and no other work, with the same worker count as click-ingest, so `bench/click.sh`
//! can tell what the framework costs per redirect apart from what click-ingest adds.
//! With `metrics`, the floor also records every request with the HTTP metrics middleware
//! click-ingest mounts, to show what that costs.
//! Usage: actix_floor BIND WORKERS [metrics]

use actix_web::http::header;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;

async fn redirect() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "https://offer.example/?c=baseline"))
        .finish()
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (bind, workers, metrics) = match args.as_slice() {
        [_, bind, workers] => (bind, workers, false),
        [_, bind, workers, m] if m == "metrics" => (bind, workers, true),
        _ => anyhow::bail!("usage: actix_floor BIND WORKERS [metrics]"),
    };
    let workers: usize = workers.parse().context("WORKERS")?;
    let server = if metrics {
        HttpServer::new(|| {
            App::new()
                .wrap(actix_web::middleware::from_fn(
                    traffsure_telemetry::http_metrics,
                ))
                .default_service(web::to(redirect))
        })
        .workers(workers)
        .bind(bind)
        .with_context(|| format!("bind {bind}"))?
        .run()
    } else {
        HttpServer::new(|| App::new().default_service(web::to(redirect)))
            .workers(workers)
            .bind(bind)
            .with_context(|| format!("bind {bind}"))?
            .run()
    };
    server.await?;
    Ok(())
}

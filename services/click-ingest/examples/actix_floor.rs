//! The benchmark's framework floor: actix-web answering every request with a constant 302
//! and no other work, with the same worker count as click-ingest, so `bench/click.sh`
//! can tell what the framework costs per redirect apart from what click-ingest adds.
//! Usage: actix_floor BIND WORKERS

use actix_web::http::header;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, bind, workers] = args.as_slice() else {
        anyhow::bail!("usage: actix_floor BIND WORKERS");
    };
    let workers: usize = workers.parse().context("WORKERS")?;
    HttpServer::new(|| {
        App::new().default_service(web::to(|| async {
            HttpResponse::Found()
                .insert_header((header::LOCATION, "https://offer.example/?c=baseline"))
                .finish()
        }))
    })
    .workers(workers)
    .bind(bind)
    .with_context(|| format!("bind {bind}"))?
    .run()
    .await?;
    Ok(())
}

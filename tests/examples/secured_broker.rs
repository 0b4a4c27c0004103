//! A private broker with a SASL_SSL listener beside its plain one, for benchmarks that
//! compare the two on one broker in one run (`bench/kafka_security.sh`). Writes
//! `plaintext.env` and `sasl_ssl.env` into DIR (the `TRAFFSURE__KAFKA__…` lines that reach
//! each listener, one `KEY=value` a line) and runs until it is terminated.
//! Usage: secured_broker DIR

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use traffsure_tests::private_kafka::PrivateKafka;
use traffsure_tests::secured::{security_env, Certificates};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .context("usage: secured_broker DIR")?;
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir)?;
    let mut terminate = signal(SignalKind::terminate())?;
    let certificates = Certificates::make()?;
    let kafka = PrivateKafka::start_secured(&certificates).await?;
    let secured = kafka
        .secured
        .clone()
        .context("the broker has no secured listener")?;
    let lines = |env: Vec<(String, String)>| -> String {
        env.into_iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    };
    std::fs::write(
        dir.join("plaintext.env"),
        format!("TRAFFSURE__KAFKA__BROKERS={}\n", kafka.brokers()),
    )?;
    std::fs::write(
        dir.join("sasl_ssl.env"),
        format!(
            "TRAFFSURE__KAFKA__BROKERS={}\n{}",
            secured.brokers,
            lines(security_env(&secured, None))
        ),
    )?;
    println!("ready");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(kafka);
    drop(certificates);
    Ok(())
}

//! Deletes every topic whose name starts with a prefix: a benchmark removes what it wrote,
//! so the local broker does not keep gigabytes of bench clicks from run to run.
//! Usage: drop_topics BROKERS TOPIC_PREFIX

use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, brokers, prefix] = args.as_slice() else {
        anyhow::bail!("usage: drop_topics BROKERS TOPIC_PREFIX");
    };
    anyhow::ensure!(
        !prefix.is_empty(),
        "an empty prefix would delete every topic"
    );
    let settings = traffsure_config::KafkaSettings {
        brokers: brokers.clone(),
        ..Default::default()
    };
    let admin: AdminClient<DefaultClientContext> =
        traffsure_kafka::client_config(&settings).create()?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .context("listing topics")?;
    let topics: Vec<&str> = metadata
        .topics()
        .iter()
        .map(|t| t.name())
        .filter(|name| name.starts_with(prefix.as_str()))
        .collect();
    if topics.is_empty() {
        return Ok(());
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.delete_topics(&topics, &options).await? {
        if let Err((topic, code)) = result {
            eprintln!("drop_topics: {topic}: {code}");
        }
    }
    eprintln!(
        "drop_topics: deleted {} topics starting with {prefix}",
        topics.len()
    );
    Ok(())
}

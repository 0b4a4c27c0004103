//! Restoring a newly owned partition's state: its log file first, then what the file
//! lacks of the `clicks` and `conversions` partitions, read up to their ends. Only
//! committed data is read, so the state never holds an aborted transaction's effects.
//! Where the group consumer resumes is the processor's call.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use prost::Message as _;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Message, Offset, TopicPartitionList};
use traffsure_events::{Click, Conversion};
use traffsure_kafka::Topics;

use crate::attribute::ClickInfo;
use crate::metrics;
use crate::retention::Retention;
use crate::store::PartitionState;
use crate::Settings;

/// How long a watermark query may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Loads the state of `partition`: its log file, then the clicks and conversions the file
/// lacks, up to the partitions' ends. The file is brought up to date before returning.
pub fn restore(
    settings: &Settings,
    topics: &Topics,
    state_dir: &Path,
    partition: i32,
    retention: &mut Retention,
) -> anyhow::Result<PartitionState> {
    let started = Instant::now();
    let mut state = PartitionState::open(state_dir, partition, &mut |ts, flow| {
        retention.keeps(ts, flow)
    })
    .with_context(|| format!("open the state of partition {partition}"))?;
    state.set_compact_min_bytes(settings.compact_min_bytes);
    let from_file = state.clicks.len();
    let file_elapsed = started.elapsed();
    let reader = catch_up_reader(settings)?;
    let mut read = 0usize;
    read_to_end(
        &reader,
        &topics.clicks,
        partition,
        state.clicks_next,
        |offset, payload| {
            read += 1;
            match Click::decode(payload) {
                Ok(click) => {
                    let keep = retention.keeps(click.ts_ms, click.flow_id);
                    state.add_click(offset, ClickInfo::from(&click), keep)?;
                }
                Err(error) => {
                    tracing::warn!(partition, offset, %error, "skipping undecodable click")
                }
            }
            Ok(())
        },
    )?;
    let mut conversions_end = state.conversions_next;
    read_to_end(
        &reader,
        &topics.conversions,
        partition,
        state.conversions_next,
        |offset, payload| {
            if let Ok(conversion) = Conversion::decode(payload) {
                if retention.keeps(conversion.click_ts_ms, conversion.flow_id) {
                    state.record_conversion(&conversion)?;
                    state.insert_conversion(conversion);
                }
            }
            conversions_end = offset + 1;
            Ok(())
        },
    )?;
    state.record_conversions_checkpoint(conversions_end)?;
    state.flush()?;
    let m = metrics::metrics();
    m.restore_seconds
        .with_label_values(&["file"])
        .observe(file_elapsed.as_secs_f64());
    m.restore_seconds
        .with_label_values(&["topic"])
        .observe((started.elapsed() - file_elapsed).as_secs_f64());
    tracing::info!(
        partition,
        from_file,
        from_topic = read,
        clicks = state.clicks.len(),
        conversions = state.conversions.len(),
        bytes = state.file_bytes(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "partition state loaded"
    );
    Ok(state)
}
/// Keeps the end-of-partition events of catch-up reads out of the error log.
pub struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF);
        if !eof {
            tracing::warn!(%error, reason, "catch-up reader error");
        }
    }
}

impl ConsumerContext for QuietEof {}

/// A consumer outside the group that reads committed data of single partitions.
fn catch_up_reader(settings: &Settings) -> anyhow::Result<BaseConsumer<QuietEof>> {
    Ok(traffsure_kafka::client_config(&settings.kafka)
        .set("group.id", "traffsure-attribution-restore") // never joined, never committed
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .set("fetch.message.max.bytes", "4194304")
        .create_with_context(QuietEof)?)
}

/// Reads `topic`/`partition` from `from` up to its end (the last committed message).
fn read_to_end(
    reader: &BaseConsumer<QuietEof>,
    topic: &str,
    partition: i32,
    from: i64,
    mut apply: impl FnMut(i64, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let (_, high) = reader.fetch_watermarks(topic, partition, TIMEOUT)?;
    if high <= from {
        return Ok(());
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(from))?;
    reader.assign(&assignment)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                apply(message.offset(), message.payload().unwrap_or_default())?;
                if message.offset() + 1 >= high {
                    break;
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange))) => {
                anyhow::bail!("{topic} partition {partition} no longer holds offset {from}")
            }
            Some(Err(error)) => tracing::warn!(topic, partition, %error, "catch-up read failed"),
            None => {}
        }
        if Instant::now() > deadline {
            anyhow::bail!("{topic} partition {partition}: catch-up did not finish");
        }
    }
    reader.unassign()?;
    Ok(())
}

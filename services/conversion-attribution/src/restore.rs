//! Restoring a newly owned partition's state: its log file first, then what the file
//! lacks of the `clicks` and `conversions` partitions, read up to their ends. Only
//! committed data is read, so the state never holds an aborted transaction's effects.
//! Where the group consumer resumes is the processor's call.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use prost::Message as _;
use rdkafka::{Message, Offset};
use traffsure_events::Conversion;
use traffsure_kafka::reader::PartitionReader;
use traffsure_kafka::Topics;

use crate::metrics;
use crate::retention::Retention;
use crate::store::PartitionState;
use crate::Settings;

/// How long reading one partition of a topic up to its end may take.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(600);

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
    let mut read = 0usize;
    reader(settings, &topics.clicks, partition, state.clicks_next)?.read_to_end(
        CATCH_UP_LIMIT,
        |message| {
            let offset = message.offset();
            match traffsure_events::clicks_of(message.payload().unwrap_or_default()) {
                Ok(clicks) => {
                    read += clicks.len();
                    state.add_clicks(offset, clicks, |state, click| {
                        let keep = retention.keeps(click.ts_ms, click.flow_id);
                        (state.click_of(&click), keep)
                    })?;
                }
                Err(error) => {
                    tracing::warn!(partition, offset, %error, "skipping undecodable clicks")
                }
            }
            Ok(())
        },
    )?;
    let mut conversions_end = state.conversions_next;
    reader(
        settings,
        &topics.conversions,
        partition,
        state.conversions_next,
    )?
    .read_to_end(CATCH_UP_LIMIT, |message| {
        if let Ok(conversion) = Conversion::decode(message.payload().unwrap_or_default()) {
            if retention.keeps(conversion.click_ts_ms, conversion.flow_id) {
                state.record_conversion(&conversion)?;
                state.insert_conversion(conversion);
            }
        }
        conversions_end = message.offset() + 1;
        Ok(())
    })?;
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

/// A reader of `topic`/`partition` from `from` to the partition's end.
fn reader(
    settings: &Settings,
    topic: &str,
    partition: i32,
    from: i64,
) -> anyhow::Result<PartitionReader> {
    PartitionReader::open(&settings.kafka, topic, &[(partition, Offset::Offset(from))])
        .with_context(|| format!("read {topic} partition {partition} from {from}"))
}

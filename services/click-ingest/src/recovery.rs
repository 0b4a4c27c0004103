//! What a start does with the click log the last run left: its records are in doubt
//! (delivered or not, the killed process could not tell), so the `clicks` topic is read
//! for their click hashes, and only records whose click Kafka lacks are written back to
//! the log to be sent. Kafka then holds each click once, and nothing downstream has to
//! tell copies apart.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use traffsure_config::KafkaSettings;
use traffsure_kafka::reader::PartitionReader;
use traffsure_kafka::retry::{forever_blocking, Backoff};

use crate::clicklog::{ClickLog, Recovered};

/// How far before the oldest in-doubt segment's creation the clicks topic is read: a
/// margin for the wall clock stepping back between writing and sending.
const CLOCK_MARGIN_MS: i64 = 10_000;
/// Longest one attempt may spend reading the clicks topic for in-doubt clicks.
const READ_LIMIT: Duration = Duration::from_secs(120);

/// Recovers `recovered` into `log`, looking the in-doubt clicks up in `topic` from shortly
/// before the oldest recovered segment was created. Waits for the broker: one that has
/// just come back can fail offset requests for a while (an unknown leader epoch), and the
/// start waits rather than guess.
pub fn from_kafka(
    log: &mut ClickLog,
    recovered: &Recovered,
    settings: &KafkaSettings,
    topic: &str,
) -> anyhow::Result<Recovery> {
    let since = recovered.oldest_ms.unwrap_or(0) - CLOCK_MARGIN_MS;
    recover(log, recovered, |wanted| {
        Ok(forever_blocking(
            "read clicks for in-doubt click events",
            &Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
            || in_kafka(settings, topic, since, wanted),
        ))
    })
}

/// What a start found in the click log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records the last run left.
    pub in_doubt: usize,
    /// Of those, records whose click Kafka holds.
    pub in_kafka: usize,
    /// Records written back to the log to be sent.
    pub to_send: usize,
}

/// Writes back to the log, to be replayed, the recovered records whose click `in_kafka`
/// does not find (the first of each click hash; a record that is no click event is
/// sent), then deletes the recovered segments. Reads the recovered segments twice rather
/// than hold them: click hashes are kept as 128-bit fingerprints.
fn recover(
    log: &mut ClickLog,
    recovered: &Recovered,
    in_kafka: impl FnOnce(&HashSet<u128>) -> anyhow::Result<HashSet<u128>>,
) -> anyhow::Result<Recovery> {
    let mut recovery = Recovery::default();
    let mut wanted = HashSet::new();
    recovered.for_each(|record| {
        recovery.in_doubt += 1;
        wanted.extend(fingerprint(&record.payload));
        Ok(())
    })?;
    let (torn, corrupt) = recovered.damaged();
    if torn + corrupt > 0 {
        tracing::warn!(
            torn,
            corrupt,
            "click log records failing their checksum at start are not sent: torn ones were never written whole (a machine crash between syncs), corrupt ones were damaged on disk"
        );
    }
    let found = if wanted.is_empty() {
        HashSet::new()
    } else {
        in_kafka(&wanted)?
    };
    let mut chunk = Vec::new();
    recovered.for_each(|record| {
        match fingerprint(&record.payload) {
            Some(print) if found.contains(&print) => recovery.in_kafka += 1,
            // A second record of one click: the log wrote it again after a failure.
            Some(print) if !wanted.remove(&print) => {}
            _ => {
                chunk.push(record);
                recovery.to_send += 1;
                if chunk.len() >= 10_000 {
                    log.write_recovered(&chunk)?;
                    chunk.clear();
                }
            }
        }
        Ok(())
    })?;
    log.write_recovered(&chunk)?;
    log.finish_recovery(recovered)?;
    Ok(recovery)
}

/// A 128-bit fingerprint of a click event's click hash; `None` for a payload that is no
/// click event or has no click hash. (Two SipHash-1-3 sums with fixed keys: click hashes
/// are keyed MACs, not chosen to collide, and 128 bits make a collision among a full
/// log's millions negligible.)
fn fingerprint(payload: &[u8]) -> Option<u128> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let hash = traffsure_events::Click::decode(payload).ok()?.click_hash;
    if hash.is_empty() {
        return None;
    }
    let half = |salt: u8| {
        let mut hasher = DefaultHasher::new();
        salt.hash(&mut hasher);
        hash.hash(&mut hasher);
        hasher.finish()
    };
    Some((u128::from(half(1)) << 64) | u128::from(half(2)))
}

/// Which of `wanted` the clicks topic holds in messages written at `since_ms` or later.
fn in_kafka(
    settings: &KafkaSettings,
    topic: &str,
    since_ms: i64,
    wanted: &HashSet<u128>,
) -> anyhow::Result<HashSet<u128>> {
    let timeout = Duration::from_secs(10);
    let consumer: BaseConsumer = traffsure_kafka::client_config(settings).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut times = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            times.add_partition_offset(topic, p.id(), Offset::Offset(since_ms.max(0)))?;
        }
    }
    let mut starts = Vec::new();
    for element in consumer.offsets_for_times(times, timeout)?.elements() {
        // A partition whose start is unknown cannot be read: failing the start beats
        // sending a click twice.
        element.error()?;
        starts.push((element.partition(), element.offset()));
    }
    let started = Instant::now();
    let mut reader = PartitionReader::open(settings, topic, &starts)?;
    let mut found = HashSet::new();
    let mut read = 0u64;
    reader.read_to_end(READ_LIMIT, |message| {
        read += 1;
        // A record may hold a batch of clicks; one that does not decode holds none.
        let clicks = traffsure_events::click_payloads(message.payload().unwrap_or_default())
            .unwrap_or_default();
        for click in clicks {
            if let Some(print) = fingerprint(click) {
                if wanted.contains(&print) {
                    found.insert(print);
                }
            }
        }
        Ok(())
    })?;
    tracing::info!(
        read,
        found = found.len(),
        ms = started.elapsed().as_millis() as u64,
        "clicks topic read for in-doubt click events"
    );
    Ok(found)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    /// An encoded click event with only its click hash.
    pub(crate) fn click(hash: &str) -> Vec<u8> {
        traffsure_events::Click {
            click_hash: hash.into(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn a_start_sends_back_the_first_of_each_click_kafka_lacks() {
        let dir = std::env::temp_dir().join(format!("click-recover-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut log, _) = ClickLog::recover(&dir, u64::MAX).unwrap();
        for (key, payload) in [
            (1, click("a")),
            (2, click("b")),
            (3, click("a")),
            (4, click("c")),
            (5, b"not a click".to_vec()),
            (6, click("b")),
        ] {
            log.append(key, &payload, false).unwrap();
        }
        drop(log);
        let (mut log, recovered) = ClickLog::recover(&dir, u64::MAX).unwrap();
        let recovery = recover(&mut log, &recovered, |wanted| {
            assert_eq!(wanted.len(), 3, "a, b and c");
            Ok(fingerprint(&click("b")).into_iter().collect())
        })
        .unwrap();
        assert_eq!(
            recovery,
            Recovery {
                in_doubt: 6,
                in_kafka: 2,
                to_send: 3
            }
        );
        drop(log);
        let (mut log, recovered) = ClickLog::recover(&dir, u64::MAX).unwrap();
        let recovery = recover(&mut log, &recovered, |_| Ok(HashSet::new())).unwrap();
        assert_eq!(recovery.to_send, 3);
        let mut keys = Vec::new();
        drop(log);
        let (_, recovered) = ClickLog::recover(&dir, u64::MAX).unwrap();
        recovered
            .for_each(|record| {
                keys.push(record.routing_key);
                Ok(())
            })
            .unwrap();
        assert_eq!(keys, [1, 4, 5], "in log order, once each, b left out");
    }

    #[test]
    fn a_start_sends_no_record_failing_its_checksum() {
        let dir = std::env::temp_dir().join(format!("click-recover-torn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut log, _) = ClickLog::recover(&dir, u64::MAX).unwrap();
        for (key, hash) in [(1, "a"), (2, "b"), (3, "c")] {
            log.append(key, &click(hash), false).unwrap();
        }
        // What a machine crash between syncs can leave: the segment as mapped, the last
        // record's length on disk and the end of its payload not.
        let path = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "log"))
            .unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        drop(log);
        let end = bytes.iter().rposition(|&b| b != 0).unwrap();
        bytes[end] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (mut log, recovered) = ClickLog::recover(&dir, u64::MAX).unwrap();
        let recovery = recover(&mut log, &recovered, |wanted| {
            assert_eq!(wanted.len(), 2, "the torn record's click is not asked for");
            Ok(HashSet::new())
        })
        .unwrap();
        assert_eq!(recovered.damaged(), (1, 0));
        assert_eq!(
            recovery,
            Recovery {
                in_doubt: 2,
                in_kafka: 0,
                to_send: 2
            }
        );
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fingerprints_tell_click_hashes_apart() {
        assert_eq!(fingerprint(&click("a")), fingerprint(&click("a")));
        assert_ne!(fingerprint(&click("a")), fingerprint(&click("b")));
        assert_eq!(fingerprint(&click("")), None);
    }
}

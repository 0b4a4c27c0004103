//! The sink's tables, one `TableSink` per event topic, and the batching policy over
//! them: which topic feeds which table, when a table's batch goes to ClickHouse (full,
//! old enough, or forced at shutdown), and what the finished inserts leave to store
//! and to dead-letter. Reading Kafka, storing offsets and publishing dead letters are
//! the consume loop's (`consume`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickhouse::{RowOwned, RowWrite};
use rdkafka::message::Headers;
use rdkafka::{Offset, TopicPartitionList};
use traffsure_kafka::retry::Retrying;
use traffsure_kafka::trace::BatchTraces;
use traffsure_kafka::Topics;

use crate::identity::TopicIdentity;
use crate::rows;
use crate::shards::Shards;
use crate::table::{Accepted, InsertsInFlight, Refused, TableSink};
use crate::SINK_BACKOFF;

/// When a table's batch is inserted.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// A batch is inserted when its messages give this many rows (a record of several
    /// clicks gives a row per click)...
    pub rows: usize,
    /// ...or when its oldest row has waited this long.
    pub interval: Duration,
}

impl BatchPolicy {
    /// Whether a batch of `len` rows is full: its table's insert in flight is waited
    /// for, so the loop reads no more meanwhile.
    fn full(&self, len: usize) -> bool {
        len >= self.rows
    }

    /// Whether a batch of `len` rows, the oldest from `oldest`, is to be inserted `now`.
    fn due(&self, len: usize, oldest: Option<Instant>, now: Instant, force: bool) -> bool {
        force
            || self.full(len)
            || oldest.is_some_and(|o| now.saturating_duration_since(o) >= self.interval)
    }
}

pub struct Tables {
    clicks: TableSink<rows::ClickRow>,
    conversions: TableSink<rows::ConversionRow>,
    postback_log: TableSink<rows::PostbackLogRow>,
    postback_results: TableSink<rows::PostbackResultRow>,
    outbound_log: TableSink<rows::OutboundRow>,
    flows: TableSink<rows::FlowRow>,
    tracker_objects: TableSink<rows::ObjectRow>,
    impressions: TableSink<rows::ImpressionRow>,
    policy: BatchPolicy,
    /// Trace contexts of the rows waiting in each topic's batch.
    traced: HashMap<String, BatchTraces>,
}

/// Runs `$body` with `$t` bound to each table in turn.
macro_rules! each_table {
    ($tables:expr, $t:ident => $body:expr) => {
        each_table!(@fields $tables, $t => $body;
            clicks conversions postback_log postback_results outbound_log flows tracker_objects
            impressions)
    };
    (@fields $tables:expr, $t:ident => $body:expr; $($field:ident)*) => {{
        $({
            let $t = &mut $tables.$field;
            $body
        })*
    }};
}

/// The table fed by the topic of the same name.
macro_rules! table_of {
    ($topics:ident . $name:ident, $decode:expr) => {
        TableSink::new(stringify!($name), $topics.$name.clone(), $decode)
    };
}

/// The decoder of a table of one row per message, from the function building that row.
macro_rules! one_row {
    ($row:path) => {
        |payload, at, rows| {
            rows.push($row(payload, at)?);
            Ok(())
        }
    };
}

/// A message read from Kafka, for its table.
pub struct Incoming<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: &'a [u8],
    pub payload: &'a [u8],
}

/// What a table needs to read a partition's checkpoint.
pub struct CheckpointSources<'a> {
    pub shards: &'a Shards,
    pub identity: &'a Arc<TopicIdentity>,
}

/// A message ClickHouse refused, with the topic and table it was for.
pub struct RefusedMessage {
    pub topic: String,
    pub table: &'static str,
    pub message: Refused,
}

/// What a flush leaves to the consume loop: messages to dead-letter, then offsets to
/// store (every message now in a table, dead-lettered or a replay).
pub struct Flushed {
    pub refused: Vec<RefusedMessage>,
    pub offsets: TopicPartitionList,
}

impl Tables {
    pub fn new(topics: &Topics, policy: BatchPolicy) -> Self {
        Self {
            clicks: table_of!(topics.clicks, rows::click_rows)
                .with_row_count(rows::click_row_count),
            conversions: table_of!(topics.conversions, one_row!(rows::conversion_row)),
            postback_log: table_of!(topics.postback_log, one_row!(rows::postback_log_row)),
            postback_results: table_of!(
                topics.postback_results,
                one_row!(rows::postback_result_row)
            ),
            outbound_log: table_of!(topics.outbound_log, one_row!(rows::outbound_row)),
            flows: table_of!(topics.flows, one_row!(rows::flow_row)),
            tracker_objects: TableSink::new(
                "tracker_objects",
                topics.objects.clone(),
                one_row!(rows::object_row),
            ),
            impressions: table_of!(topics.impressions, one_row!(rows::impression_row)),
            policy,
            traced: HashMap::new(),
        }
    }

    pub fn topics(&mut self) -> Vec<String> {
        let mut topics = Vec::new();
        each_table!(self, t => topics.push(t.topic.clone()));
        topics
    }

    async fn accept(
        &mut self,
        at: &CheckpointSources<'_>,
        m: &Incoming<'_>,
    ) -> anyhow::Result<Option<(&'static str, Accepted)>> {
        each_table!(self, t => if t.topic == m.topic {
            let accepted = t.accept(at.shards, at.identity, m.partition, m.offset, m.key, m.payload).await?;
            return Ok(Some((t.table, accepted)));
        });
        Ok(None)
    }

    /// Hands a message to its table, retrying while the partition's checkpoint cannot
    /// be read or checked (ClickHouse or Kafka down, say): a message is never passed
    /// over. None: no table is fed by its topic.
    pub async fn accept_retrying(
        &mut self,
        at: &CheckpointSources<'_>,
        m: &Incoming<'_>,
    ) -> Option<(&'static str, Accepted)> {
        let what = format!("checkpoint read of {} partition {}", m.topic, m.partition);
        let mut retrying = Retrying::new(&what, &SINK_BACKOFF);
        loop {
            match self.accept(at, m).await {
                Ok(accepted) => return accepted,
                Err(error) => retrying.wait(&error).await,
            }
        }
    }

    /// Keeps the trace context of a row just accepted from `topic`, for its insert.
    pub fn observe_trace<H: Headers>(&mut self, topic: &str, headers: Option<&H>) {
        self.traced
            .entry(topic.to_string())
            .or_default()
            .observe(headers);
    }

    /// Forgets the pending rows and checkpoints of partitions that moved: a revoked
    /// partition's new owner replays them from the stored offsets, and an assigned one
    /// resumes from what its table holds now.
    pub fn forget_moved(&mut self, moved: impl IntoIterator<Item = (String, i32)>) {
        for (topic, partition) in moved {
            self.forget(&topic, partition);
        }
    }

    pub fn forget(&mut self, topic: &str, partition: i32) {
        each_table!(self, t => if t.topic == topic {
            t.forget(partition);
        });
    }

    /// Collects the inserts that finished, and starts one for every table whose batch
    /// is full or old enough (all of them when `force`, waiting for each). A table
    /// whose next batch is full while its insert runs waits for that insert: the
    /// loop reads no more meanwhile.
    pub async fn flush(
        &mut self,
        shards: &Shards,
        inserts: &Arc<InsertsInFlight>,
        force: bool,
    ) -> anyhow::Result<Flushed> {
        let mut flushed = Flushed {
            refused: Vec::new(),
            offsets: TopicPartitionList::new(),
        };
        let (policy, traced) = (self.policy, &mut self.traced);
        each_table!(self, t => {
            flush_table(t, policy, force, shards, inserts, traced, &mut flushed).await?;
        });
        Ok(flushed)
    }
}

/// The insert decision for one table; what it leaves goes to `flushed`.
async fn flush_table<R: RowOwned + RowWrite + Send + Sync + 'static>(
    t: &mut TableSink<R>,
    policy: BatchPolicy,
    force: bool,
    shards: &Shards,
    inserts: &Arc<InsertsInFlight>,
    traced: &mut HashMap<String, BatchTraces>,
    flushed: &mut Flushed,
) -> anyhow::Result<()> {
    let full = policy.full(t.len());
    let due = policy.due(t.len(), t.oldest(), Instant::now(), force);
    let mut done = Vec::new();
    if t.insert_finished() || (t.inserting() && (force || full)) {
        done.push(t.finish().await?);
    }
    if due && !t.inserting() {
        let span = traced
            .get_mut(&t.topic)
            .map(|b| b.take_span("sink insert"))
            .unwrap_or_else(tracing::Span::none);
        t.start_insert(shards, inserts, span);
        if force {
            done.push(t.finish().await?);
        }
    }
    for d in done {
        for message in d.refused {
            flushed.refused.push(RefusedMessage {
                topic: t.topic.clone(),
                table: t.table,
                message,
            });
        }
        for (partition, offset) in d.offsets {
            flushed
                .offsets
                .add_partition_offset(&t.topic, partition, Offset::Offset(offset))?;
        }
    }
    if let Some(next) = t.take_idle_offsets() {
        for (partition, offset) in next {
            flushed
                .offsets
                .add_partition_offset(&t.topic, partition, Offset::Offset(offset))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_due_when_full_old_enough_or_forced() {
        let policy = BatchPolicy {
            rows: 3,
            interval: Duration::from_secs(1),
        };
        let first = Some(Instant::now());
        let soon = Instant::now() + Duration::from_millis(10);
        let later = Instant::now() + Duration::from_secs(2);
        assert!(!policy.due(0, None, later, false));
        assert!(!policy.due(2, first, soon, false));
        assert!(policy.due(3, first, soon, false));
        assert!(policy.due(1, first, later, false));
        assert!(policy.due(0, None, soon, true));
        assert!(policy.full(3));
        assert!(!policy.full(2));
    }
}

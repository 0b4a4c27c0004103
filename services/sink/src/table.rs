//! One table's rows on their way to ClickHouse: the batch being filled from one topic,
//! the insert in flight, the Kafka positions they came from, and the checkpoints that
//! keep replays out.
//!
//! Exactly-once rests on four rules. Within a Kafka partition rows reach the table in
//! offset order, so the highest stored offset is the partition's checkpoint; a
//! materialized view writes it to `sink_checkpoints` inside the same INSERT as the rows,
//! so reading it costs a lookup in a small table, not a scan of the raw one. Before
//! every insert the checkpoints are read again and rows at or below them are dropped,
//! so an insert whose acknowledgement was lost, or rows another instance wrote
//! meanwhile, are never written twice (materialized views do not deduplicate, so this
//! is what keeps the rollups exact). After every insert the checkpoints must show the
//! rows; an insert that reported success without them is an error, never a skip. And a
//! partition's checkpoint counts only if the topic still holds the message stored at it
//! (`identity`): a recreated topic is consumed from its start.
//!
//! One insert per table runs at a time, in a task of its own, while the next batch
//! fills: the two never overlap in offsets, as the next batch holds only later
//! messages, and the next insert starts only after the previous one is confirmed.
//! At most two batches per table are in memory; when the next one is full the loop
//! waits for the insert, and Kafka holds the rest.
//!
//! A ClickHouse INSERT writes the raw rows first, then runs each materialized view on
//! the same block (the rollups and the checkpoint), and answers only after all of them.
//! A crash of the sink cannot split that: the server writes nothing of a body that did
//! not arrive whole, and finishes a whole one whether the client still listens or not;
//! the next checkpoint read then tells which of the two happened. What the sink cannot
//! prevent is ClickHouse itself failing between the raw part and a view's part (the
//! server killed mid-insert, ZooKeeper lost, a view over its memory limit): the raw rows
//! are then stored without that view's rows, and the insert answers an error. So after
//! every failed insert, before anything else is written to the table, `repair` looks at
//! what of the rows it sent is stored and writes the parts of the views that are missing
//! (see there why that is exact).
//!
//! With several ClickHouse shards (`shards`) all of this holds per shard: partition `p`'s
//! rows go to shard `p mod N`, an insert splits into one block per shard, and each block
//! is filtered by, checked against and repaired on its own shard's checkpoints and
//! tables. The one read across shards is a partition's floor on its first message: the
//! highest checkpoint any shard holds (a partition moved between shards by a change of
//! N has its older rows, and checkpoint, on its old shard).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument;

use clickhouse::error::Error;
use clickhouse::{Client, RowOwned, RowWrite};
use tokio::task::JoinHandle;
use traffsure_clickhouse::queries;

use crate::identity::{TopicIdentity, Verdict};
use crate::markers;
use crate::metrics;
use crate::repair::{self, Sent};
use crate::rows::{fingerprint, Position};
use crate::shards::Shards;

/// How many inserts are running, for a rebalance to wait on before it hands a
/// partition over.
#[derive(Default)]
pub struct InsertsInFlight {
    count: Mutex<usize>,
    idle: Condvar,
}

pub struct InsertGuard(Arc<InsertsInFlight>);

impl InsertsInFlight {
    fn start(self: &Arc<Self>) -> InsertGuard {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        InsertGuard(self.clone())
    }

    /// Blocks until no insert runs or `timeout` passes; whether none runs.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        let (count, _) = self
            .idle
            .wait_timeout_while(count, timeout, |count| *count > 0)
            .unwrap_or_else(|e| e.into_inner());
        *count == 0
    }
}

impl Drop for InsertGuard {
    fn drop(&mut self) {
        let mut count = self.0.count.lock().unwrap_or_else(|e| e.into_inner());
        *count = count.saturating_sub(1);
        self.0.idle.notify_all();
    }
}

/// Appends the rows of one message: one for most tables, one per click for the clicks
/// table (a record may hold a batch of clicks), all at the message's position. On an
/// error the caller drops whatever it appended: a message is stored whole or not at all.
pub type Decode<R> = fn(&[u8], Position, &mut Vec<R>) -> Result<(), prost::DecodeError>;

/// A message waiting for its insert, still encoded: the insert task decodes it, so
/// the loop only reads Kafka, and a waiting batch costs little memory.
struct Pending {
    partition: i32,
    offset: i64,
    /// The rows it will give (`TableSink::rows_in`).
    rows: usize,
    fingerprint: u64,
    payload: Vec<u8>,
}

/// A message decoded into its rows (these of the batch's rows), in the insert task.
struct Decoded<'a> {
    message: &'a Pending,
    rows: Range<usize>,
}

/// A message ClickHouse refused as bad data, for the dead-letter topic.
pub struct Refused {
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
    pub reason: String,
}

/// A partition's checkpoint: the highest offset stored and that message's fingerprint
/// (0: stored before fingerprints were kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    pub offset: i64,
    pub fingerprint: u64,
}

/// Checkpoints of partitions whose topic was recreated: they name messages of the old
/// topic and count as nothing until this sink stores newer ones.
type Void = HashMap<i32, Checkpoint>;

/// An insert running in its own task (one block per shard, side by side), and the
/// offsets to store once it is done.
struct InFlight {
    task: JoinHandle<Result<Vec<Refused>, tokio::task::JoinError>>,
    offsets: Vec<(i32, i64)>,
}

/// What a finished insert leaves to the loop: messages to dead-letter, then offsets to
/// store.
#[derive(Default)]
pub struct Done {
    pub refused: Vec<Refused>,
    pub offsets: Vec<(i32, i64)>,
}

pub struct TableSink<R> {
    pub table: &'static str,
    pub topic: String,
    decode: Decode<R>,
    /// How many rows a message will give, counted without decoding it: one, or a click
    /// batch's clicks. Batches are full by rows, not messages.
    rows_in: fn(&[u8]) -> usize,
    rows: Vec<Pending>,
    /// The rows `rows` will give.
    pending_rows: usize,
    /// Per partition: the next offset to store once nothing before it is pending.
    next_offsets: BTreeMap<i32, i64>,
    /// Whether `next_offsets` moved since they were last handed out.
    offsets_moved: bool,
    /// Per partition: the checkpoint read when its first message came (None: nothing
    /// stored), below which messages are replays.
    floors: HashMap<i32, Option<i64>>,
    void: Void,
    /// Partitions whose latest insert markers were settled since they came.
    settled: HashSet<i32>,
    /// The server's refusals of settling a partition's markers, in a row.
    settle_refusals: repair::Refusals,
    in_flight: Option<InFlight>,
    oldest: Option<Instant>,
}

/// What became of one message.
pub enum Accepted {
    Row,
    /// Already in the table (a replay after a crash or rebalance).
    AlreadyStored,
    /// In a block already stored, but undecodable: its dead letter was due after that
    /// insert, and a sink that died between the two never sent it. Sent now (again, if
    /// it had been): a dead letter is kept at least once.
    StoredUndecodable(Refused),
    /// The partition's topic was recreated and the consumer is past its start: read the
    /// partition again from `low` (this message comes again).
    Rewind {
        low: i64,
    },
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct CheckpointRow {
    partition: u16,
    max_offset: u64,
    fingerprint: u64,
}

/// ClickHouse error codes that mean the data itself is wrong, so retrying cannot help:
/// CANNOT_PARSE_TEXT, CANNOT_PARSE_INPUT_ASSERTION_FAILED, TYPE_MISMATCH,
/// CANNOT_CONVERT_TYPE, CANNOT_PARSE_NUMBER, INCORRECT_DATA.
const BAD_DATA_CODES: &[u32] = &[6, 27, 53, 70, 72, 117];

/// Whether ClickHouse refused an insert for its data rather than for a passing reason.
pub fn is_bad_data(error: &Error) -> bool {
    has_code(error, BAD_DATA_CODES)
}

/// Whether the error's text names one of the ClickHouse error `codes` (`Code: N.` in
/// current servers, `Code: N,` in 18.16).
pub fn has_code(error: &Error, codes: &[u32]) -> bool {
    let text = error.to_string();
    codes.iter().any(|code| {
        text.contains(&format!("Code: {code}.")) || text.contains(&format!("Code: {code},"))
    })
}

/// Per partition, the last offset of a run of rows.
fn last_offsets(positions: impl Iterator<Item = (i32, i64)>) -> BTreeMap<i32, i64> {
    let mut last = BTreeMap::new();
    for (partition, offset) in positions {
        let entry = last.entry(partition).or_insert(offset);
        *entry = (*entry).max(offset);
    }
    last
}

/// The table's current checkpoints, less the void ones.
async fn checkpoints(
    client: &Client,
    table: &'static str,
    void: &Void,
    reason: &str,
) -> Result<HashMap<i32, Checkpoint>, Error> {
    metrics::checkpoint_reads()
        .with_label_values(&[table, reason])
        .inc();
    let rows: Vec<CheckpointRow> = client
        .query(&queries::sql("checkpoints", "sink_checkpoints"))
        .bind(table)
        .fetch_all()
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                i32::from(r.partition),
                Checkpoint {
                    offset: r.max_offset as i64,
                    fingerprint: r.fingerprint,
                },
            )
        })
        .filter(|(partition, checkpoint)| void.get(partition) != Some(checkpoint))
        .collect())
}

/// The table's checkpoints on every shard, less the void ones: per partition the one of
/// the highest offset. A partition's rows are on one shard while N stays the same; after
/// a change of N its earlier rows and checkpoint are on its old shard, and the rows it
/// holds there are stored as much as those on its new one.
async fn checkpoints_everywhere(
    shards: &Shards,
    table: &'static str,
    void: &Void,
    reason: &str,
) -> Result<HashMap<i32, Checkpoint>, Error> {
    let mut highest: HashMap<i32, Checkpoint> = HashMap::new();
    for client in shards.all() {
        for (partition, checkpoint) in checkpoints(client, table, void, reason).await? {
            let entry = highest.entry(partition).or_insert(checkpoint);
            if checkpoint.offset > entry.offset {
                *entry = checkpoint;
            }
        }
    }
    Ok(highest)
}

impl<R: RowOwned + RowWrite + Send + Sync + 'static> TableSink<R> {
    pub fn new(table: &'static str, topic: String, decode: Decode<R>) -> Self {
        Self {
            table,
            topic,
            decode,
            rows_in: |_| 1,
            rows: Vec::new(),
            pending_rows: 0,
            next_offsets: BTreeMap::new(),
            offsets_moved: false,
            floors: HashMap::new(),
            void: HashMap::new(),
            settled: HashSet::new(),
            settle_refusals: repair::Refusals::default(),
            in_flight: None,
            oldest: None,
        }
    }

    /// Counts the rows of each message with `rows_in` (a table whose messages may give
    /// several rows).
    pub fn with_row_count(mut self, rows_in: fn(&[u8]) -> usize) -> Self {
        self.rows_in = rows_in;
        self
    }

    /// The rows of the pending messages.
    pub fn len(&self) -> usize {
        self.pending_rows
    }

    pub fn oldest(&self) -> Option<Instant> {
        self.oldest
    }

    pub fn inserting(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether the insert in flight has finished, so `finish` will not wait.
    pub fn insert_finished(&self) -> bool {
        self.in_flight
            .as_ref()
            .is_some_and(|f| f.task.is_finished())
    }

    /// Forgets a partition that moved to or from this instance: its pending rows (the
    /// owner replays them from the stored offsets) and its checkpoint (another instance
    /// may have written since, or the topic may be another one now).
    pub fn forget(&mut self, partition: i32) {
        self.rows.retain(|r| r.partition != partition);
        self.pending_rows = self.rows.iter().map(|r| r.rows).sum();
        self.next_offsets.remove(&partition);
        self.floors.remove(&partition);
        self.settled.remove(&partition);
        self.void.remove(&partition);
        if self.rows.is_empty() {
            self.oldest = None;
        }
    }

    /// The checkpoint below which `partition`'s messages are replays, read from every
    /// shard (and checked against the topic) on its first message.
    async fn floor(
        &mut self,
        shards: &Shards,
        identity: &Arc<TopicIdentity>,
        partition: i32,
        offset: i64,
    ) -> anyhow::Result<Result<Option<i64>, i64>> {
        if let Some(floor) = self.floors.get(&partition) {
            return Ok(Ok(*floor));
        }
        if !self.settled.contains(&partition) {
            self.settle(shards, partition).await?;
            self.settled.insert(partition);
        }
        let Some(stored) = checkpoints_everywhere(shards, self.table, &self.void, "assign")
            .await?
            .remove(&partition)
        else {
            self.floors.insert(partition, None);
            return Ok(Ok(None));
        };
        let (identity, topic) = (identity.clone(), self.topic.clone());
        let verdict = tokio::task::spawn_blocking(move || {
            identity.check(&topic, partition, stored.offset, stored.fingerprint)
        })
        .await??;
        match verdict {
            Verdict::Same => {
                tracing::info!(
                    table = self.table,
                    partition,
                    offset = stored.offset,
                    "resuming after stored offset"
                );
                self.floors.insert(partition, Some(stored.offset));
                Ok(Ok(Some(stored.offset)))
            }
            Verdict::Recreated { low, reason } => {
                tracing::warn!(
                    table = self.table,
                    topic = self.topic,
                    partition,
                    stored = stored.offset,
                    from = low,
                    reason,
                    "topic was recreated: its stored checkpoint is set aside and the partition is read from its start"
                );
                metrics::recreated_topics()
                    .with_label_values(&[self.table])
                    .inc();
                self.void.insert(partition, stored);
                self.floors.insert(partition, None);
                Ok(if offset > low { Err(low) } else { Ok(None) })
            }
        }
    }

    /// Settles the latest insert marker of `partition` on every shard (`markers`), before
    /// its checkpoint is read: the last insert of a sink that is gone gets its cut views
    /// completed. A query error, or refusals that repeat, give up (logged, counted) as
    /// the repair after a failed insert does; other errors are retried by the caller.
    async fn settle(&mut self, shards: &Shards, partition: i32) -> anyhow::Result<()> {
        for client in shards.all() {
            let result = match markers::settle(client, self.table, partition).await {
                Ok(settled) => {
                    self.settle_refusals.reset();
                    settled.label()
                }
                Err(error) if self.settle_refusals.give_up(self.table, &error) => {
                    tracing::error!(table = self.table, partition, %error, "cannot settle the partition's last insert; its views are not repaired");
                    "failed"
                }
                Err(error) => return Err(error.into()),
            };
            metrics::marker_checks()
                .with_label_values(&[self.table, result])
                .inc();
        }
        Ok(())
    }

    pub async fn accept(
        &mut self,
        shards: &Shards,
        identity: &Arc<TopicIdentity>,
        partition: i32,
        offset: i64,
        key: &[u8],
        payload: &[u8],
    ) -> anyhow::Result<Accepted> {
        let floor = match self.floor(shards, identity, partition, offset).await? {
            Ok(floor) => floor,
            Err(low) => return Ok(Accepted::Rewind { low }),
        };
        self.next_offsets.insert(partition, offset + 1);
        self.offsets_moved = true;
        if floor.is_some_and(|floor| offset <= floor) {
            let position = Position {
                partition: partition as u16,
                offset: offset as u64,
                fingerprint: fingerprint(key, payload),
            };
            return Ok(match (self.decode)(payload, position, &mut Vec::new()) {
                Ok(()) => Accepted::AlreadyStored,
                Err(error) => Accepted::StoredUndecodable(Refused {
                    partition,
                    offset,
                    payload: payload.to_vec(),
                    reason: error.to_string(),
                }),
            });
        }
        let rows = (self.rows_in)(payload);
        self.pending_rows += rows;
        self.rows.push(Pending {
            partition,
            offset,
            rows,
            fingerprint: fingerprint(key, payload),
            payload: payload.to_vec(),
        });
        self.oldest.get_or_insert_with(Instant::now);
        Ok(Accepted::Row)
    }

    /// Starts inserting the pending rows in a task of its own: one block per shard, the
    /// shards side by side, each on its own server. The caller finishes the previous
    /// insert first.
    /// `span` (the batch's trace, or none) covers the insert.
    pub fn start_insert(
        &mut self,
        shards: &Shards,
        inserts: &Arc<InsertsInFlight>,
        span: tracing::Span,
    ) {
        debug_assert!(self.in_flight.is_none(), "one insert per table at a time");
        if self.rows.is_empty() {
            return;
        }
        let rows = std::mem::take(&mut self.rows);
        self.pending_rows = 0;
        self.oldest = None;
        self.offsets_moved = false;
        let offsets = self.next_offsets.iter().map(|(p, o)| (*p, *o)).collect();
        let guard = inserts.start();
        // Each shard's rows in the order they came: a partition's in offset order.
        let mut blocks: BTreeMap<usize, Vec<Pending>> = BTreeMap::new();
        for row in rows {
            blocks
                .entry(shards.index(row.partition))
                .or_default()
                .push(row);
        }
        let blocks: Vec<(Client, Vec<Pending>)> = blocks
            .into_iter()
            .map(|(shard, rows)| (shards.all()[shard].clone(), rows))
            .collect();
        let (table, void, decode) = (self.table, self.void.clone(), self.decode);
        let task = tokio::spawn(
            async move {
                let writes: Vec<_> = blocks
                    .into_iter()
                    .map(|(client, rows)| {
                        tokio::spawn(
                            write_batch(client, table, rows, decode, void.clone())
                                .instrument(tracing::Span::current()),
                        )
                    })
                    .collect();
                // Every block is waited for, even after one failed: the offsets are
                // stored only once all of them are in.
                let mut refused = Vec::new();
                let mut failed = None;
                for write in writes {
                    match write.await {
                        Ok(mut r) => refused.append(&mut r),
                        Err(error) => failed = Some(error),
                    }
                }
                drop(guard);
                match failed {
                    Some(error) => Err(error),
                    None => Ok(refused),
                }
            }
            .instrument(span),
        );
        self.in_flight = Some(InFlight { task, offsets });
    }

    /// Waits for the insert in flight, if any: what it refused and the offsets that are
    /// now safe to store.
    pub async fn finish(&mut self) -> anyhow::Result<Done> {
        let Some(in_flight) = self.in_flight.take() else {
            return Ok(Done::default());
        };
        let refused = in_flight.task.await??;
        Ok(Done {
            refused,
            offsets: in_flight.offsets,
        })
    }

    /// The offsets to store when nothing is pending nor in flight and something moved
    /// since the last call (replays only, or dead letters).
    pub fn take_idle_offsets(&mut self) -> Option<Vec<(i32, i64)>> {
        if !self.rows.is_empty() || self.in_flight.is_some() || !self.offsets_moved {
            return None;
        }
        self.offsets_moved = false;
        Some(self.next_offsets.iter().map(|(p, o)| (*p, *o)).collect())
    }
}

/// Decodes and inserts `messages`, retrying with backoff until every row is in the
/// table or refused (returned, for the dead-letter topic): rows are never skipped.
/// Undecodable messages are refused; a batch ClickHouse refuses as bad data is split,
/// between messages, until the refused messages are alone. A message's rows share its
/// offset, and the checkpoints and `repair` hold only if they go in one insert.
async fn write_batch<R: RowOwned + RowWrite>(
    client: Client,
    table: &'static str,
    messages: Vec<Pending>,
    decode: Decode<R>,
    void: Void,
) -> Vec<Refused> {
    let started = Instant::now();
    let mut refused = Vec::new();
    let mut rows = Vec::with_capacity(messages.len());
    let mut decoded = Vec::with_capacity(messages.len());
    for message in &messages {
        let position = Position {
            partition: message.partition as u16,
            offset: message.offset as u64,
            fingerprint: message.fingerprint,
        };
        let first = rows.len();
        match decode(&message.payload, position, &mut rows) {
            Ok(()) => decoded.push(Decoded {
                message,
                rows: first..rows.len(),
            }),
            Err(error) => {
                // A record of several clicks goes whole: none of its rows are kept.
                rows.truncate(first);
                tracing::warn!(table, partition = message.partition, offset = message.offset, %error, "dead-lettering undecodable message");
                refused.push(Refused {
                    partition: message.partition,
                    offset: message.offset,
                    payload: message.payload.clone(),
                    reason: error.to_string(),
                });
            }
        }
    }
    let mut written = 0;
    let mut retry = 0;
    // Chunks of `decoded`: whole messages, never part of one.
    let mut chunks = VecDeque::new();
    if !decoded.is_empty() {
        chunks.push_back(0..decoded.len());
    }
    // The rows of an insert that failed, until their views are checked (`repair`).
    let mut cut: Option<Sent> = None;
    let mut refusals = repair::Refusals::default();
    while let Some(chunk) = chunks.pop_front() {
        if let Some(sent) = &cut {
            match repair::repair(&client, table, sent).await {
                Ok(()) => cut = None,
                Err(error) if refusals.give_up(table, &error) => {
                    tracing::error!(table, %error, "cannot check a failed insert's views; they are not repaired");
                    cut = None;
                }
                Err(error) => {
                    metrics::insert_errors().with_label_values(&[table]).inc();
                    let delay = crate::SINK_BACKOFF.delay(retry);
                    tracing::warn!(table, %error, retry_ms = delay.as_millis() as u64, "checking a failed insert's views failed, retrying");
                    tokio::time::sleep(delay).await;
                    retry += 1;
                    chunks.push_front(chunk);
                    continue;
                }
            }
        }
        let mut sent = None;
        match insert_chunk(
            &client,
            table,
            &decoded,
            &rows,
            chunk.clone(),
            &void,
            &mut sent,
        )
        .await
        {
            Ok(n) => {
                written += n;
                retry = 0;
            }
            Err(error) if is_bad_data(&error) => match split_at_message(&decoded, chunk.clone()) {
                Some((first, second)) => {
                    chunks.push_front(second);
                    chunks.push_front(first);
                }
                // One message, however many rows it has: refused whole.
                None => {
                    for d in decoded.get(chunk).unwrap_or_default() {
                        let m = d.message;
                        tracing::warn!(table, partition = m.partition, offset = m.offset, rows = d.rows.len(), %error, "clickhouse refused a message's rows");
                        refused.push(Refused {
                            partition: m.partition,
                            offset: m.offset,
                            payload: m.payload.clone(),
                            reason: error.to_string(),
                        });
                    }
                }
            },
            Err(error) => {
                metrics::insert_errors().with_label_values(&[table]).inc();
                let delay = crate::SINK_BACKOFF.delay(retry);
                tracing::warn!(table, %error, retry_ms = delay.as_millis() as u64, "insert failed, retrying");
                tokio::time::sleep(delay).await;
                retry += 1;
                // Whatever of this chunk did reach the table gets its views completed
                // first; the next attempt reads the checkpoints again, so it is not
                // written twice.
                cut = sent;
                chunks.push_front(chunk);
            }
        }
    }
    metrics::rows_inserted()
        .with_label_values(&[table])
        .inc_by(written as u64);
    // Messages, as the batch policy counts them (undecodable ones too); the rows are
    // in `rows_inserted`.
    metrics::batch_rows()
        .with_label_values(&[table])
        .observe(messages.len() as f64);
    metrics::insert_seconds()
        .with_label_values(&[table])
        .observe(started.elapsed().as_secs_f64());
    tracing::debug!(
        table,
        rows = written,
        ms = started.elapsed().as_millis() as u64,
        "batch inserted"
    );
    refused
}

/// Where a chunk of `messages` refused as bad data is split: at the message boundary
/// nearest its middle row, so that the halves hold about as many rows and no message is
/// cut. None when the chunk holds one message (or none).
fn split_at_message(
    messages: &[Decoded<'_>],
    chunk: Range<usize>,
) -> Option<(Range<usize>, Range<usize>)> {
    let these = messages.get(chunk.clone())?;
    let (first, last) = (these.first()?, these.last()?);
    let middle = first.rows.start + (last.rows.end - first.rows.start) / 2;
    let at = (1..these.len()).min_by_key(|i| these[*i].rows.start.abs_diff(middle))?;
    Some((chunk.start..chunk.start + at, chunk.start + at..chunk.end))
}

/// The rows of `messages`, each with its message's partition and offset: one entry per
/// row, so that what an insert sent is counted in rows, as `repair` and the markers
/// compare it with what the table holds.
fn rows_of<'a, R>(
    messages: &'a [&Decoded<'_>],
    rows: &'a [R],
) -> impl Iterator<Item = ((i32, i64), &'a R)> {
    messages.iter().flat_map(move |d| {
        let position = (d.message.partition, d.message.offset);
        rows.get(d.rows.clone())
            .unwrap_or_default()
            .iter()
            .map(move |row| (position, row))
    })
}

/// Inserts the rows of `chunk` of `messages`, less the messages the table already holds,
/// and checks that the checkpoints show them. Returns the rows written.
async fn insert_chunk<R: RowOwned + RowWrite>(
    client: &Client,
    table: &'static str,
    messages: &[Decoded<'_>],
    rows: &[R],
    chunk: Range<usize>,
    void: &Void,
    sent: &mut Option<Sent>,
) -> Result<usize, Error> {
    // Messages at or below a partition's checkpoint are there already: an earlier insert
    // whose answer was lost, or another owner after a rebalance. All the rows of a
    // message have its offset, so a message is kept or dropped whole.
    let stored = checkpoints(client, table, void, "insert").await?;
    let these = messages.get(chunk).unwrap_or_default();
    let fresh: Vec<&Decoded> = these
        .iter()
        .filter(|d| {
            let m = d.message;
            stored.get(&m.partition).is_none_or(|c| m.offset > c.offset)
        })
        .collect();
    if fresh.len() < these.len() {
        tracing::info!(
            table,
            skipped = these.len() - fresh.len(),
            "messages already stored, not inserted again"
        );
    }
    let rows_sent = Sent::of(rows_of(&fresh, rows).map(|(position, _)| position));
    let count = rows_sent.rows();
    if count == 0 {
        return Ok(0);
    }
    // Recorded where a successor reads it, before the insert is sent: a cut that this
    // process does not live to repair is repaired by the partitions' next owner.
    markers::record(client, table, &rows_sent).await?;
    *sent = Some(rows_sent);
    let mut insert = client.insert::<R>(table).await?;
    for (_, row) in rows_of(&fresh, rows) {
        insert.write(row).await?;
    }
    insert.end().await?;
    // The checkpoint view ran in the same INSERT: an insert that reported success
    // without it did not store its rows.
    let now = checkpoints(client, table, void, "insert").await?;
    let positions = rows_of(&fresh, rows).map(|(position, _)| position);
    for (partition, last) in last_offsets(positions) {
        let found = now.get(&partition).map(|c| c.offset);
        if found.is_none_or(|found| found < last) {
            return Err(Error::Custom(format!(
                "{table}: insert reported success but partition {partition}'s checkpoint is {found:?}, not {last}"
            )));
        }
    }
    Ok(count as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_bad_data_from_passing_errors() {
        let bad = Error::BadResponse("Code: 53. DB::Exception: Type mismatch".into());
        let old = Error::BadResponse("Code: 117, e.displayText() = DB::Exception: bad".into());
        let down = Error::BadResponse("Code: 242. DB::Exception: Table is in readonly mode".into());
        let code_530 = Error::BadResponse("Code: 530. DB::Exception: other".into());
        assert!(is_bad_data(&bad));
        assert!(is_bad_data(&old));
        assert!(!is_bad_data(&down));
        assert!(!is_bad_data(&code_530));
        assert!(!is_bad_data(&Error::Custom("connection refused".into())));
    }

    #[test]
    fn last_offsets_per_partition() {
        let last = last_offsets([(0, 5), (1, 9), (0, 6), (0, 8)].into_iter());
        assert_eq!(last[&0], 8);
        assert_eq!(last[&1], 9);
    }

    /// `count` messages of partition 0, at offsets from 10.
    fn pending(count: usize) -> Vec<Pending> {
        (0..count)
            .map(|i| Pending {
                partition: 0,
                offset: 10 + i as i64,
                rows: 1,
                fingerprint: 1,
                payload: Vec::new(),
            })
            .collect()
    }

    /// `messages` decoded into rows of the given numbers, in order.
    fn decoded<'a>(messages: &'a [Pending], sizes: &[usize]) -> Vec<Decoded<'a>> {
        let mut first = 0;
        messages
            .iter()
            .zip(sizes)
            .map(|(message, size)| {
                first += size;
                Decoded {
                    message,
                    rows: first - size..first,
                }
            })
            .collect()
    }

    #[test]
    fn bad_data_is_split_between_messages_never_within_one() {
        let messages = pending(3);
        let three_one_two = decoded(&messages, &[3, 1, 2]);
        // Six rows: the boundary nearest the middle is after the first message.
        assert_eq!(split_at_message(&three_one_two, 0..3), Some((0..1, 1..3)));
        assert_eq!(split_at_message(&three_one_two, 1..3), Some((1..2, 2..3)));
        // A message alone is refused whole, however many rows it has.
        assert_eq!(split_at_message(&three_one_two, 0..1), None);
        assert_eq!(split_at_message(&three_one_two, 2..3), None);
        assert_eq!(split_at_message(&three_one_two, 1..1), None);
        assert_eq!(split_at_message(&three_one_two, 2..5), None);
        // One row a message, as most tables have: halves.
        let messages = pending(4);
        let ones = decoded(&messages, &[1, 1, 1, 1]);
        assert_eq!(split_at_message(&ones, 0..4), Some((0..2, 2..4)));
        // A large message first still leaves the others a chunk of their own.
        let messages = pending(3);
        let large = decoded(&messages, &[100, 1, 1]);
        assert_eq!(split_at_message(&large, 0..3), Some((0..1, 1..3)));
    }

    #[test]
    fn splitting_again_and_again_ends_with_each_message_alone() {
        let sizes = [3, 1, 2, 0, 5, 1, 1];
        let messages = pending(sizes.len());
        let batch = decoded(&messages, &sizes);
        let mut chunks = VecDeque::new();
        chunks.push_back(0..batch.len());
        let mut alone = Vec::new();
        while let Some(chunk) = chunks.pop_front() {
            match split_at_message(&batch, chunk.clone()) {
                Some((first, second)) => {
                    assert!(!first.is_empty() && !second.is_empty());
                    assert_eq!(
                        (first.start, first.end, second.end),
                        (chunk.start, second.start, chunk.end)
                    );
                    chunks.push_front(second);
                    chunks.push_front(first);
                }
                None => alone.push(chunk),
            }
        }
        let expected: Vec<Range<usize>> = (0..sizes.len()).map(|i| i..i + 1).collect();
        assert_eq!(alone, expected);
    }

    #[test]
    fn an_insert_is_counted_in_rows_not_messages() {
        let mut messages = pending(3);
        messages[2].partition = 1;
        let batch = decoded(&messages, &[3, 1, 2]);
        let rows = ["a1", "a2", "a3", "b", "c1", "c2"];
        let fresh: Vec<&Decoded> = batch.iter().collect();
        let sent = Sent::of(rows_of(&fresh, &rows).map(|(position, _)| position));
        // Partition 0: three rows at offset 10 and one at 11; partition 1: two at 12.
        assert_eq!(sent.counts[&0], 4);
        assert_eq!(sent.counts[&1], 2);
        assert_eq!(sent.ranges[&0], (10, 11));
        assert_eq!(sent.ranges[&1], (12, 12));
        assert_eq!(sent.rows(), 6);
        let written: Vec<(i64, &str)> = rows_of(&fresh, &rows)
            .map(|((_, offset), row)| (offset, *row))
            .collect();
        assert_eq!(
            written,
            [
                (10, "a1"),
                (10, "a2"),
                (10, "a3"),
                (11, "b"),
                (12, "c1"),
                (12, "c2")
            ]
        );
        // A message dropped as already stored takes all its rows with it.
        let later: Vec<&Decoded> = batch.iter().skip(1).collect();
        assert_eq!(rows_of(&later, &rows).count(), 3);
    }

    #[test]
    fn fingerprints_tell_messages_apart_and_are_never_zero() {
        let a = fingerprint(b"\x00\x01", b"click a");
        assert_eq!(a, fingerprint(b"\x00\x01", b"click a"));
        assert_ne!(a, fingerprint(b"\x00\x01", b"click b"));
        assert_ne!(a, fingerprint(b"\x00\x02", b"click a"));
        assert_ne!(fingerprint(b"", b""), 0);
    }
}

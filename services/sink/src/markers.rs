//! The record of each insert (`sink_inserts`), written before the insert is sent, so a
//! cut INSERT is known beyond the process that sent it.
//!
//! After an INSERT cut between its parts (`repair`), the sink completes the missing views
//! before anything else is written to the table; but the rows it sent are known only to
//! it. Killed before that repair, it would leave a cut whose checkpoint view ran
//! unrepaired for good: its successor reads the checkpoint and skips the rows. So every
//! insert block is preceded by one small insert of its marker: one row per Kafka
//! partition of the block, each describing the whole block (per partition the lowest and
//! highest offset and how many rows), with the sink process that wrote it (`writer`)
//! and a number growing with each of that process's inserts (`insert_id`).
//!
//! When a partition comes to a sink (start, rebalance), before its first message is
//! taken, the sink reads the partition's latest marker on every shard and settles it
//! ([`settle`]):
//! - written by this very process: its own repair handles it (the insert is settled
//!   before the next one of the table is sent);
//! - followed by a later insert of the same writer: settled before that one was sent
//!   (the repair runs before the next insert); nothing to do;
//! - otherwise the writer's last insert, whose answer may never have come: the owner of
//!   its lowest partition runs the repair over the whole insert (none stored: nothing;
//!   all stored: the missing views' parts, a rollup's written only once its gap is seen
//!   twice, `repair::repair_after`), and the owner of any other of its partitions
//!   completes only that partition's checkpoint part (which nobody else's repair could
//!   write twice: the checkpoint keeps the highest offset), so it reads a checkpoint that
//!   counts the rows and does not write them again. One sink completes the rollups of a
//!   given insert, so two never write the same missing part.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clickhouse::error::Error;
use clickhouse::Client;
use traffsure_clickhouse::queries;

use crate::repair::{self, Sent};

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// This process's name in the markers: a new one at every start.
pub fn writer() -> &'static str {
    static WRITER: OnceLock<String> = OnceLock::new();
    WRITER.get_or_init(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_default();
        format!("{host}:{}:{}", std::process::id(), since_epoch().as_nanos())
    })
}

/// The next insert's number: growing within the process, and from one process to its
/// successor as far as the clock does (microseconds since the epoch).
fn next_insert_id() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = u64::try_from(since_epoch().as_micros()).unwrap_or(u64::MAX);
    let previous = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or_default();
    now.max(previous + 1)
}

#[derive(Debug, Clone, clickhouse::Row, serde::Serialize, serde::Deserialize)]
struct MarkerRow {
    source_table: String,
    kafka_partition: u16,
    insert_id: u64,
    writer: String,
    partitions: Vec<u16>,
    low_offsets: Vec<u64>,
    high_offsets: Vec<u64>,
    row_counts: Vec<u64>,
    written_at: u32,
}

/// The rows of `sent`, one per partition, each describing all of `sent`.
fn rows_of(table: &str, sent: &Sent, insert_id: u64, written_at: u32) -> Vec<MarkerRow> {
    let partitions: Vec<u16> = sent.ranges.keys().map(|p| *p as u16).collect();
    let lows = sent.ranges.values().map(|(low, _)| *low as u64).collect();
    let highs = sent.ranges.values().map(|(_, high)| *high as u64).collect();
    let counts = sent
        .ranges
        .keys()
        .map(|p| sent.counts.get(p).copied().unwrap_or_default())
        .collect();
    let whole = MarkerRow {
        source_table: table.to_string(),
        kafka_partition: 0,
        insert_id,
        writer: writer().to_string(),
        partitions: partitions.clone(),
        low_offsets: lows,
        high_offsets: highs,
        row_counts: counts,
        written_at,
    };
    partitions
        .into_iter()
        .map(|partition| MarkerRow {
            kafka_partition: partition,
            ..whole.clone()
        })
        .collect()
}

/// Records `sent`, about to be inserted into `table` through `client`: one small insert.
pub async fn record(client: &Client, table: &str, sent: &Sent) -> Result<(), Error> {
    let written_at = u32::try_from(since_epoch().as_secs()).unwrap_or(u32::MAX);
    let rows = rows_of(table, sent, next_insert_id(), written_at);
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert::<MarkerRow>("sink_inserts").await?;
    for row in &rows {
        insert.write(row).await?;
    }
    insert.end().await
}

/// A partition's latest marker, and how many seconds ago it was written.
struct Latest {
    row: MarkerRow,
    age: u64,
}

impl Latest {
    /// The rows the marked insert sent.
    fn sent(&self) -> Sent {
        let mut sent = Sent {
            at: Instant::now().checked_sub(Duration::from_secs(self.age)),
            ..Sent::default()
        };
        let row = &self.row;
        for (i, partition) in row.partitions.iter().enumerate() {
            let (Some(low), Some(high), Some(count)) = (
                row.low_offsets.get(i),
                row.high_offsets.get(i),
                row.row_counts.get(i),
            ) else {
                continue;
            };
            let partition = i32::from(*partition);
            sent.ranges.insert(partition, (*low as i64, *high as i64));
            sent.counts.insert(partition, *count);
        }
        sent
    }
}

async fn latest(client: &Client, table: &str, partition: i32) -> Result<Option<Latest>, Error> {
    let now = since_epoch().as_secs();
    let rows: Vec<MarkerRow> = client
        .query(&queries::sql("insert_marker", "sink_inserts"))
        .bind(table)
        .bind(partition)
        .fetch_all()
        .await?;
    Ok(rows.into_iter().next().map(|row| Latest {
        age: now.saturating_sub(u64::from(row.written_at)),
        row,
    }))
}

/// What settling a partition's latest marker did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// No marker for the partition.
    None,
    /// Written by this process: its own repair handles it.
    Own,
    /// A later insert of the same writer followed: it was settled then.
    Followed,
    /// The writer's last insert: the repair looked at all of it (and wrote what was
    /// missing, counted in `traffsure_sink_view_repairs_total`).
    Checked,
    /// The writer's last insert, of which another partition's owner checks the rollups:
    /// this partition's checkpoint part was checked (and written if missing).
    CheckpointChecked,
}

impl Settled {
    pub fn label(self) -> &'static str {
        match self {
            Settled::None => "none",
            Settled::Own => "own",
            Settled::Followed => "followed",
            Settled::Checked => "checked",
            Settled::CheckpointChecked => "checkpoint_checked",
        }
    }
}

/// What to do with `partition`'s latest marker `row`, given the highest insert number
/// its writer has on the same server (`None`: not asked, the marker being this
/// process's).
fn decide(row: &MarkerRow, partition: i32, last_of_writer: Option<u64>) -> Settled {
    if row.writer == writer() {
        return Settled::Own;
    }
    if last_of_writer.is_some_and(|last| last > row.insert_id) {
        return Settled::Followed;
    }
    if row.partitions.iter().min().map(|p| i32::from(*p)) == Some(partition) {
        Settled::Checked
    } else {
        Settled::CheckpointChecked
    }
}

/// Settles the latest marker of `table`'s `partition` on the server of `client`, before
/// the partition's messages are taken (see the module's comment). An error means it
/// could not (the caller tries again, or gives up on a query error as `repair`'s
/// callers do).
pub async fn settle(client: &Client, table: &str, partition: i32) -> Result<Settled, Error> {
    let Some(latest) = latest(client, table, partition).await? else {
        return Ok(Settled::None);
    };
    if decide(&latest.row, partition, None) == Settled::Own {
        return Ok(Settled::Own);
    }
    let last_of_writer: u64 = client
        .query(&queries::sql("last_insert_of_writer", "sink_inserts"))
        .bind(table)
        .bind(&latest.row.writer)
        .fetch_one()
        .await?;
    let settled = decide(&latest.row, partition, Some(last_of_writer));
    if settled == Settled::Followed {
        return Ok(settled);
    }
    let sent = latest.sent();
    tracing::info!(
        table,
        partition,
        writer = latest.row.writer,
        rows = sent.rows(),
        "checking the last insert of another sink process"
    );
    if settled == Settled::Checked {
        repair::repair_after(client, table, &sent).await?;
    } else {
        repair::repair_checkpoint_only(client, table, &sent.of_partition(partition)).await?;
    }
    Ok(settled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_of_a_marker_describes_the_whole_insert() {
        let sent = Sent::of([(2, 10), (0, 5), (2, 11), (0, 7), (0, 6)].into_iter());
        let rows = rows_of("clicks", &sent, 42, 1_700_000_000);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows.iter().map(|r| r.kafka_partition).collect::<Vec<_>>(),
            [0, 2]
        );
        for row in &rows {
            assert_eq!(row.partitions, [0, 2]);
            assert_eq!(row.low_offsets, [5, 10]);
            assert_eq!(row.high_offsets, [7, 11]);
            assert_eq!(row.row_counts, [3, 2]);
            assert_eq!(row.insert_id, 42);
            assert_eq!(row.writer, writer());
        }
        // Read back, a marker gives the same rows as were sent.
        let back = Latest {
            row: rows[1].clone(),
            age: 0,
        }
        .sent();
        assert_eq!(back.ranges, sent.ranges);
        assert_eq!(back.counts, sent.counts);
        assert_eq!(back.rows(), 5);
        assert_eq!(back.of_partition(2).rows(), 2);
        assert_eq!(back.of_partition(2).ranges.len(), 1);
        assert_eq!(back.of_partition(9).rows(), 0);
    }

    #[test]
    fn the_last_insert_of_another_process_is_checked_by_its_lowest_partition() {
        let sent = Sent::of([(5, 10), (2, 7), (9, 1)].into_iter());
        let mine = rows_of("clicks", &sent, 100, 0);
        assert!(mine.iter().all(|r| decide(r, 5, Some(1)) == Settled::Own));
        let theirs: Vec<MarkerRow> = mine
            .into_iter()
            .map(|r| MarkerRow {
                writer: "another".into(),
                ..r
            })
            .collect();
        // Followed by a later insert of the same writer: settled then.
        assert_eq!(decide(&theirs[0], 2, Some(101)), Settled::Followed);
        // Its last: the lowest partition's owner checks the whole insert, the others
        // their checkpoint part.
        assert_eq!(decide(&theirs[0], 2, Some(100)), Settled::Checked);
        assert_eq!(decide(&theirs[1], 5, Some(100)), Settled::CheckpointChecked);
        assert_eq!(decide(&theirs[2], 9, Some(100)), Settled::CheckpointChecked);
        // Its markers merged away elsewhere, the writer's highest is this one.
        assert_eq!(decide(&theirs[1], 5, Some(0)), Settled::CheckpointChecked);
    }

    #[test]
    fn insert_ids_grow() {
        let first = next_insert_id();
        let second = next_insert_id();
        assert!(second > first);
    }
}

//! One table's pending batch: rows decoded from one topic, the Kafka positions they came
//! from, and the table-side checkpoint that keeps replays out.
//!
//! Exactly-once rests on three rules. Within a Kafka partition rows reach the table in
//! offset order, so the highest stored offset is the partition's checkpoint. Before
//! every insert the checkpoint is read again and rows at or below it are dropped, so an
//! insert whose acknowledgement was lost, or rows another instance wrote meanwhile, are
//! never written twice (materialized views do not deduplicate, so this is what keeps the
//! rollups exact). After every insert the rows are counted back; an insert that reported
//! success without its rows is an error, never a skip.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Range;
use std::time::Instant;

use clickhouse::error::Error;
use clickhouse::{Client, RowOwned, RowWrite};
use traffsure_clickhouse::queries;

use crate::rows::Position;

pub type Decode<R> = fn(&[u8], Position) -> Result<R, prost::DecodeError>;

struct Pending<R> {
    partition: i32,
    offset: i64,
    /// Kept for the dead-letter topic, should ClickHouse refuse the row.
    payload: Vec<u8>,
    row: R,
}

/// A message ClickHouse refused as bad data, for the dead-letter topic.
pub struct Refused {
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
    pub reason: String,
}

pub struct TableSink<R> {
    pub table: &'static str,
    pub topic: String,
    decode: Decode<R>,
    rows: Vec<Pending<R>>,
    /// Per partition: the next offset to store once nothing is pending.
    next_offsets: BTreeMap<i32, i64>,
    /// Whether `next_offsets` moved since they were last handed out.
    offsets_moved: bool,
    /// Per partition: the highest offset in the table (None: none there).
    floors: HashMap<i32, Option<i64>>,
    refused: Vec<Refused>,
    /// False after a failed insert: its rows may be in the table all the same, so the
    /// checkpoints are read again before the next one.
    trusted: bool,
    oldest: Option<Instant>,
}

/// What became of one message.
pub enum Accepted {
    Row,
    /// Already in the table (a replay after a crash or rebalance).
    AlreadyStored,
    /// Undecodable: to the dead-letter topic.
    Poison(String),
}

#[derive(Debug, Default, clickhouse::Row, serde::Deserialize)]
struct Floor {
    max_offset: u64,
    rows: u64,
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Stored {
    partition: u16,
    rows: u64,
}

/// ClickHouse error codes that mean the data itself is wrong, so retrying cannot help:
/// CANNOT_PARSE_TEXT, CANNOT_PARSE_INPUT_ASSERTION_FAILED, TYPE_MISMATCH,
/// CANNOT_CONVERT_TYPE, CANNOT_PARSE_NUMBER, INCORRECT_DATA.
const BAD_DATA_CODES: &[u32] = &[6, 27, 53, 70, 72, 117];

/// Whether ClickHouse refused an insert for its data rather than for a passing reason.
pub fn is_bad_data(error: &Error) -> bool {
    let text = error.to_string();
    BAD_DATA_CODES.iter().any(|code| {
        text.contains(&format!("Code: {code}.")) || text.contains(&format!("Code: {code},"))
    })
}

/// Per partition, the offsets of a run of rows: first, last and how many.
fn spans(positions: impl Iterator<Item = (i32, i64)>) -> BTreeMap<i32, (i64, i64, u64)> {
    let mut spans = BTreeMap::new();
    for (partition, offset) in positions {
        let span = spans.entry(partition).or_insert((offset, offset, 0));
        span.0 = span.0.min(offset);
        span.1 = span.1.max(offset);
        span.2 += 1;
    }
    spans
}

impl<R: RowOwned + RowWrite> TableSink<R> {
    pub fn new(table: &'static str, topic: String, decode: Decode<R>) -> Self {
        Self {
            table,
            topic,
            decode,
            rows: Vec::new(),
            next_offsets: BTreeMap::new(),
            offsets_moved: false,
            floors: HashMap::new(),
            refused: Vec::new(),
            trusted: true,
            oldest: None,
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn oldest(&self) -> Option<Instant> {
        self.oldest
    }

    /// The offsets to store, once nothing is pending and something moved since the last
    /// call: every message read so far is in the table, dead-lettered or was a replay.
    pub fn take_offsets(&mut self) -> Option<Vec<(i32, i64)>> {
        if !self.rows.is_empty() || !self.offsets_moved {
            return None;
        }
        self.offsets_moved = false;
        Some(self.next_offsets.iter().map(|(p, o)| (*p, *o)).collect())
    }

    /// Messages ClickHouse refused, to be dead-lettered before their offsets are stored.
    pub fn take_refused(&mut self) -> Vec<Refused> {
        std::mem::take(&mut self.refused)
    }

    /// Forgets a partition that moved to or from this instance: its pending rows (the
    /// owner replays them from the stored offsets) and its checkpoint (another instance
    /// may have written since).
    pub fn forget(&mut self, partition: i32) {
        self.rows.retain(|r| r.partition != partition);
        self.refused.retain(|r| r.partition != partition);
        self.next_offsets.remove(&partition);
        self.floors.remove(&partition);
        if self.rows.is_empty() {
            self.oldest = None;
        }
    }

    async fn stored_max(&self, client: &Client, partition: i32) -> Result<Option<i64>, Error> {
        let found: Floor = client
            .query(&queries::sql("stored_max_offset", self.table))
            .bind(partition as u16)
            .fetch_one()
            .await?;
        Ok((found.rows > 0).then_some(found.max_offset as i64))
    }

    async fn floor(&mut self, client: &Client, partition: i32) -> Result<Option<i64>, Error> {
        if let Some(floor) = self.floors.get(&partition) {
            return Ok(*floor);
        }
        let floor = self.stored_max(client, partition).await?;
        if let Some(offset) = floor {
            tracing::info!(
                table = self.table,
                partition,
                offset,
                "resuming after stored offset"
            );
        }
        self.floors.insert(partition, floor);
        Ok(floor)
    }

    pub async fn accept(
        &mut self,
        client: &Client,
        partition: i32,
        offset: i64,
        payload: &[u8],
    ) -> Result<Accepted, Error> {
        let floor = self.floor(client, partition).await?;
        self.next_offsets.insert(partition, offset + 1);
        self.offsets_moved = true;
        if floor.is_some_and(|floor| offset <= floor) {
            return Ok(Accepted::AlreadyStored);
        }
        let position = Position {
            partition: partition as u16,
            offset: offset as u64,
        };
        match (self.decode)(payload, position) {
            Ok(row) => {
                self.rows.push(Pending {
                    partition,
                    offset,
                    payload: payload.to_vec(),
                    row,
                });
                self.oldest.get_or_insert_with(Instant::now);
                Ok(Accepted::Row)
            }
            Err(error) => Ok(Accepted::Poison(error.to_string())),
        }
    }

    /// Inserts the pending rows. A batch ClickHouse refuses as bad data is split until
    /// the refused rows are alone; they are set aside for the dead-letter topic. On any
    /// other error the rows not yet written stay pending and the error is returned, for
    /// the caller to retry after a pause. Returns the rows written.
    pub async fn flush(&mut self, client: &Client) -> Result<usize, Error> {
        if self.rows.is_empty() {
            return Ok(0);
        }
        let mut done = vec![false; self.rows.len()];
        let mut chunks = VecDeque::new();
        chunks.push_back(0..self.rows.len());
        let mut written = 0;
        let mut result = Ok(());
        while let Some(chunk) = chunks.pop_front() {
            match self.insert(client, chunk.clone(), &mut done).await {
                Ok(n) => written += n,
                Err(error) if is_bad_data(&error) && chunk.len() == 1 => {
                    let r = &self.rows[chunk.start];
                    tracing::warn!(table = self.table, partition = r.partition, offset = r.offset, %error, "clickhouse refused a row");
                    self.refused.push(Refused {
                        partition: r.partition,
                        offset: r.offset,
                        payload: r.payload.clone(),
                        reason: error.to_string(),
                    });
                    done[chunk.start] = true;
                }
                Err(error) if is_bad_data(&error) => {
                    let middle = chunk.start + chunk.len() / 2;
                    chunks.push_front(middle..chunk.end);
                    chunks.push_front(chunk.start..middle);
                }
                Err(error) => {
                    self.trusted = false;
                    result = Err(error);
                    break;
                }
            }
        }
        let mut index = 0;
        self.rows.retain(|_| {
            index += 1;
            !done[index - 1]
        });
        if self.rows.is_empty() {
            self.oldest = None;
        }
        result.map(|()| written)
    }

    /// Inserts `chunk` of the pending rows, less those the table already holds, and
    /// counts them back; marks the rows done on success.
    async fn insert(
        &mut self,
        client: &Client,
        chunk: Range<usize>,
        done: &mut [bool],
    ) -> Result<usize, Error> {
        // Rows at or below a partition's stored checkpoint are there already: an earlier
        // insert whose answer was lost, or another owner after a rebalance.
        let mut floors = BTreeMap::new();
        let positions = self.rows[chunk.clone()]
            .iter()
            .map(|r| (r.partition, r.offset));
        for partition in spans(positions).into_keys() {
            let floor = self.stored_max(client, partition).await?;
            floors.insert(partition, floor);
            self.floors.insert(partition, floor);
        }
        let fresh: Vec<usize> = chunk
            .clone()
            .filter(|&i| {
                let r = &self.rows[i];
                floors[&r.partition].is_none_or(|floor| r.offset > floor)
            })
            .collect();
        if fresh.len() < chunk.len() {
            tracing::info!(
                table = self.table,
                skipped = chunk.len() - fresh.len(),
                "rows already stored, not inserted again"
            );
        }
        if !fresh.is_empty() {
            let mut insert = client.insert::<R>(self.table).await?;
            for &i in &fresh {
                insert.write(&self.rows[i].row).await?;
            }
            insert.end().await?;
            let inserted = spans(
                fresh
                    .iter()
                    .map(|&i| (self.rows[i].partition, self.rows[i].offset)),
            );
            self.verify(client, &inserted).await?;
            for (partition, (_, last, _)) in inserted {
                self.floors.insert(partition, Some(last));
            }
        }
        for i in chunk {
            done[i] = true;
        }
        self.trusted = true;
        Ok(fresh.len())
    }

    /// Counts the inserted rows' offsets in the table: an insert that reported success
    /// must be visible in full.
    async fn verify(
        &self,
        client: &Client,
        inserted: &BTreeMap<i32, (i64, i64, u64)>,
    ) -> Result<(), Error> {
        let sql =
            queries::get("stored_rows_in_ranges").for_table_and_ranges(self.table, inserted.len());
        let mut query = client.query(&sql);
        for (&partition, &(first, last, _)) in inserted {
            query = query
                .bind(partition as u16)
                .bind(first as u64)
                .bind(last as u64);
        }
        let stored: Vec<Stored> = query.fetch_all().await?;
        for (&partition, &(_, _, expected)) in inserted {
            let found = stored
                .iter()
                .find(|s| i32::from(s.partition) == partition)
                .map_or(0, |s| s.rows);
            if found < expected {
                return Err(Error::Custom(format!(
                    "{}: insert reported success but partition {partition} holds {found} of {expected} rows",
                    self.table
                )));
            }
        }
        Ok(())
    }
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
    fn spans_cover_each_partition() {
        let spans = spans([(0, 5), (1, 9), (0, 6), (0, 8)].into_iter());
        assert_eq!(spans[&0], (5, 8, 3));
        assert_eq!(spans[&1], (9, 9, 1));
    }
}

//! One table's pending batch: rows decoded from one topic, the Kafka positions they
//! cover, and the table-side checkpoint that keeps replays out.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use clickhouse::{Client, RowOwned, RowWrite};

use crate::rows::Position;

pub type Decode<R> = fn(&[u8], Position) -> Result<R, prost::DecodeError>;

pub struct TableSink<R> {
    pub table: &'static str,
    pub topic: String,
    decode: Decode<R>,
    rows: Vec<R>,
    /// Per partition: the offsets of the pending rows, first and last.
    ranges: BTreeMap<i32, (i64, i64, u64)>,
    /// Per partition: the next offset to store once the batch is in ClickHouse.
    next_offsets: BTreeMap<i32, i64>,
    /// Per partition: the highest offset already in the table (None: table has none).
    floors: HashMap<i32, Option<i64>>,
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

impl<R: RowOwned + RowWrite> TableSink<R> {
    pub fn new(table: &'static str, topic: String, decode: Decode<R>) -> Self {
        Self {
            table,
            topic,
            decode,
            rows: Vec::new(),
            ranges: BTreeMap::new(),
            next_offsets: BTreeMap::new(),
            floors: HashMap::new(),
            oldest: None,
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn oldest(&self) -> Option<Instant> {
        self.oldest
    }

    /// Offsets to store once a flush succeeded (also covers skipped messages).
    pub fn next_offsets(&self) -> &BTreeMap<i32, i64> {
        &self.next_offsets
    }

    /// Forgets checkpoints and pending rows after a rebalance: partitions may have moved.
    pub fn reset(&mut self) {
        self.rows.clear();
        self.ranges.clear();
        self.next_offsets.clear();
        self.floors.clear();
        self.oldest = None;
    }

    async fn floor(
        &mut self,
        client: &Client,
        partition: i32,
    ) -> Result<Option<i64>, clickhouse::error::Error> {
        if let Some(floor) = self.floors.get(&partition) {
            return Ok(*floor);
        }
        let sql = format!(
            "SELECT max(kafka_offset) AS max_offset, count() AS rows FROM {} WHERE kafka_partition = ?",
            self.table
        );
        let found: Floor = client
            .query(&sql)
            .bind(partition as u16)
            .fetch_one()
            .await?;
        let floor = (found.rows > 0).then_some(found.max_offset as i64);
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
    ) -> Result<Accepted, clickhouse::error::Error> {
        if self
            .floor(client, partition)
            .await?
            .is_some_and(|floor| offset <= floor)
        {
            self.next_offsets.insert(partition, offset + 1);
            return Ok(Accepted::AlreadyStored);
        }
        self.next_offsets.insert(partition, offset + 1);
        let position = Position {
            partition: partition as u16,
            offset: offset as u64,
        };
        match (self.decode)(payload, position) {
            Ok(row) => {
                self.rows.push(row);
                let range = self.ranges.entry(partition).or_insert((offset, offset, 0));
                range.1 = offset;
                range.2 += 1;
                self.oldest.get_or_insert_with(Instant::now);
                Ok(Accepted::Row)
            }
            Err(error) => Ok(Accepted::Poison(error.to_string())),
        }
    }

    /// Inserts the pending rows and checks ClickHouse holds every one of them. On success
    /// the batch is cleared and the checkpoints move up; on error nothing changes.
    pub async fn flush(&mut self, client: &Client) -> Result<usize, clickhouse::error::Error> {
        if self.rows.is_empty() {
            return Ok(0);
        }
        let mut insert = client.insert::<R>(self.table).await?;
        for row in &self.rows {
            insert.write(row).await?;
        }
        insert.end().await?;
        self.verify(client).await?;
        let written = self.rows.len();
        for (partition, (_, last, _)) in &self.ranges {
            self.floors.insert(*partition, Some(*last));
        }
        self.rows.clear();
        self.ranges.clear();
        self.oldest = None;
        Ok(written)
    }

    /// Counts the rows of this batch's offset ranges in the table: an insert that
    /// reported success must be visible in full.
    async fn verify(&self, client: &Client) -> Result<(), clickhouse::error::Error> {
        let condition = vec![
            "(kafka_partition = ? AND kafka_offset >= ? AND kafka_offset <= ?)";
            self.ranges.len()
        ]
        .join(" OR ");
        let sql = format!(
            "SELECT kafka_partition AS partition, uniqExact(kafka_offset) AS rows FROM {} WHERE {condition} GROUP BY kafka_partition",
            self.table
        );
        let mut query = client.query(&sql);
        for (partition, (first, last, _)) in &self.ranges {
            query = query
                .bind(*partition as u16)
                .bind(*first as u64)
                .bind(*last as u64);
        }
        let stored: Vec<Stored> = query.fetch_all().await?;
        for (partition, (_, _, expected)) in &self.ranges {
            let found = stored
                .iter()
                .find(|s| i32::from(s.partition) == *partition)
                .map_or(0, |s| s.rows);
            if found < *expected {
                return Err(clickhouse::error::Error::Custom(format!(
                    "{}: insert reported success but partition {partition} holds {found} of {expected} rows",
                    self.table
                )));
            }
        }
        Ok(())
    }
}

//! The spill file: where click events go while Kafka cannot take them, so a broker
//! outage never loses a redirected click.
//!
//! An append-only file of records `[u32 length, little-endian][u16 routing key][payload]`
//! and a position file beside it (`<path>.pos`) naming how far replay has reached. The
//! publisher appends while the broker is unreachable or its queue is full; a replay
//! thread sends records in file order once the broker is back, and moves the position
//! only after the broker acknowledged them. When everything is replayed the file is
//! emptied. A trailing record cut short by a crash is cut off when the file is opened,
//! so new records never follow it.
//!
//! Appended records are buffered in memory and written with one `write` per buffer: when
//! the buffer reaches [`FLUSH_BYTES`], when the publisher's flush tick finds its oldest
//! record a few milliseconds old, before a replay reads the file, and at shutdown. A
//! buffered record is as safe as one in librdkafka's queue: it survives a broker outage
//! and SIGTERM, and is lost only if the process is killed outright within those
//! milliseconds, as a click still in librdkafka's queue would be. The file is synced to
//! disk at shutdown, not per record: a power loss can take what the page cache held.
//!
//! One exception: once the replay is close to the end of the file, it
//! [`hold`](SpillFile::hold)s new records in memory (at most [`HOLD_MAX`] and
//! [`HOLD_MAX_BYTES`]) while it sends the rest of the file and waits for the broker's
//! acknowledgement, so that the file can then be found empty and the held records handed
//! to the producer queue ahead of new clicks: under sustained load the spill ends instead
//! of refilling during every wait.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Records larger than this are not click events: the file is damaged from there on.
const MAX_RECORD: u32 = 1 << 20;
/// Buffered bytes that trigger a `write` at once.
pub const FLUSH_BYTES: usize = 64 * 1024;
/// Longest a hold keeps records in memory.
pub const HOLD_MAX: Duration = Duration::from_millis(500);
/// Most bytes a hold keeps in memory. All of them go to the producer queue at once when
/// the spill ends; at 16 MiB (about 40,000 clicks) those bursts left librdkafka behind
/// and its broker thread polling without sleeping (2–5 µs per click in some bench
/// rounds), and raised peak RSS by 30 MiB. Under the heaviest loads a 4 MiB hold gives
/// way before the acknowledgement comes, and the spill goes on, cheaply, until the load
/// eases.
pub const HOLD_MAX_BYTES: usize = 4 << 20;

pub struct SpillFile {
    path: PathBuf,
    pos_path: PathBuf,
    file: File,
    /// Bytes written to the file.
    file_len: u64,
    /// Bytes already replayed.
    pos: u64,
    /// Records appended but not yet written.
    buffer: Vec<u8>,
    buffered_records: usize,
    /// When the oldest buffered record was appended.
    buffered_since: Option<Instant>,
    /// When the replay started holding records in memory.
    held_since: Option<Instant>,
}

/// One spilled click event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub routing_key: u16,
    pub payload: Vec<u8>,
}

impl Record {
    /// Bytes the record takes in the file.
    pub fn file_size(&self) -> u64 {
        6 + self.payload.len() as u64
    }
}

/// A failed `write` of the buffer: its records are gone.
#[derive(Debug)]
pub struct WriteError {
    pub error: io::Error,
    pub lost: usize,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (click events lost: {})", self.error, self.lost)
    }
}

impl std::error::Error for WriteError {}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> Self {
        io::Error::new(e.error.kind(), e.to_string())
    }
}

impl SpillFile {
    /// Opens (or creates) the spill file, locked against a second click-ingest using it,
    /// and cuts off a record left incomplete by a crash.
    pub fn open(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        file.try_lock().map_err(|_| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is in use by another click-ingest", path.display()),
            )
        })?;
        let len = file.metadata()?.len();
        let pos_path = PathBuf::from(format!("{}.pos", path.display()));
        let pos = std::fs::read_to_string(&pos_path)
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .unwrap_or(0)
            .min(len);
        let whole = whole_records_end(path, pos, len)?;
        if whole < len {
            tracing::warn!(
                bytes = len - whole,
                path = %path.display(),
                "cutting off an unreadable spill file tail"
            );
            file.set_len(whole)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            pos_path,
            file,
            file_len: whole,
            pos,
            buffer: Vec::with_capacity(FLUSH_BYTES),
            buffered_records: 0,
            buffered_since: None,
            held_since: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes appended (written or buffered) but not yet replayed.
    pub fn pending_bytes(&self) -> u64 {
        self.file_len + self.buffer.len() as u64 - self.pos
    }

    /// Bytes written to the file (buffered records not included).
    pub fn written_len(&self) -> u64 {
        self.file_len
    }

    /// The replay position: records before it reached the broker.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// When the oldest record not yet written was appended; `None` when all are written.
    pub fn buffered_since(&self) -> Option<Instant> {
        self.buffered_since
    }

    /// Appends one event to the buffer, and writes the buffer when it is full.
    pub fn append(&mut self, routing_key: u16, payload: &[u8]) -> Result<(), WriteError> {
        self.buffer
            .extend_from_slice(&(payload.len() as u32 + 2).to_le_bytes());
        self.buffer.extend_from_slice(&routing_key.to_be_bytes());
        self.buffer.extend_from_slice(payload);
        self.buffered_records += 1;
        if self.buffered_since.is_none() {
            self.buffered_since = Some(Instant::now());
        }
        if self.buffer.len() >= FLUSH_BYTES && !self.holding() {
            self.flush()?;
        }
        Ok(())
    }

    /// Keeps appended records in memory (no flush by size or age) for up to [`HOLD_MAX`]
    /// and [`HOLD_MAX_BYTES`], or until [`release`](Self::release).
    pub fn hold(&mut self) {
        self.held_since = Some(Instant::now());
    }

    pub fn release(&mut self) {
        self.held_since = None;
    }

    /// Whether a hold keeps the buffer from being written now.
    pub fn holding(&self) -> bool {
        self.held_since
            .is_some_and(|since| since.elapsed() < HOLD_MAX && self.buffer.len() < HOLD_MAX_BYTES)
    }

    /// Whether every record written to the file was replayed (some may be buffered).
    pub fn file_replayed(&self) -> bool {
        self.pos == self.file_len
    }

    /// Removes the buffered records (not written to the file) and returns them in order.
    pub fn take_buffered(&mut self) -> Vec<Record> {
        let buffer = std::mem::take(&mut self.buffer);
        self.buffered_records = 0;
        self.buffered_since = None;
        let mut records = Vec::new();
        let mut rest = buffer.as_slice();
        while rest.len() >= 6 {
            let size = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let Some(body) = rest.get(4..4 + size) else {
                break;
            };
            records.push(Record {
                routing_key: u16::from_be_bytes([body[0], body[1]]),
                payload: body[2..].to_vec(),
            });
            rest = &rest[4 + size..];
        }
        debug_assert!(rest.is_empty());
        self.buffer = buffer;
        self.buffer.clear();
        records
    }

    /// Writes the buffered records (one `write` call, so a crash leaves at most one
    /// partial record, which the next open cuts off). On failure the buffered records
    /// are dropped and counted in the error, and a partial write is undone.
    pub fn flush(&mut self) -> Result<(), WriteError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all(&self.buffer);
        let records = std::mem::take(&mut self.buffered_records);
        let written = self.buffer.len() as u64;
        self.buffer.clear();
        self.buffered_since = None;
        match result {
            Ok(()) => {
                self.file_len += written;
                Ok(())
            }
            Err(error) => {
                let _ = self.file.set_len(self.file_len);
                Err(WriteError {
                    error,
                    lost: records,
                })
            }
        }
    }

    /// Writes the buffered records and returns the file's length: records up to there
    /// can be read with [`read_records`] without holding the spill file.
    pub fn flushed_len(&mut self) -> Result<u64, WriteError> {
        self.flush()?;
        Ok(self.file_len)
    }

    /// Reads up to `max` records from the replay position, buffered ones included;
    /// returns them, the file offset just past the last one, and whether reading stopped
    /// at an unreadable record. (The replay thread reads with [`read_records`] instead,
    /// so it does not hold the spill file while reading.)
    #[cfg(test)]
    pub fn read_batch(&mut self, max: usize) -> io::Result<(Vec<Record>, u64, bool)> {
        let end = self.flushed_len()?;
        read_records(&self.path, self.pos, end, max)
    }

    /// Notes that everything before `offset` reached the broker. When nothing written is
    /// left, empties the file; an unreadable tail (a record cut short) is dropped then too.
    pub fn advance(&mut self, offset: u64, tail_is_garbage: bool) -> io::Result<()> {
        self.pos = offset.min(self.file_len);
        if self.pos == self.file_len || tail_is_garbage {
            if self.pos != self.file_len {
                tracing::warn!(
                    bytes = self.file_len - self.pos,
                    "dropping an unreadable spill file tail"
                );
            }
            self.file.set_len(0)?;
            self.file_len = 0;
            self.pos = 0;
        }
        let tmp = PathBuf::from(format!("{}.tmp", self.pos_path.display()));
        std::fs::write(&tmp, self.pos.to_string())?;
        std::fs::rename(&tmp, &self.pos_path)
    }

    /// Forces what was written to disk (buffered records are written first).
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        self.file.sync_data()
    }
}

/// Reads up to `max` records of the spill file at `path` between `from` (a record
/// boundary) and `to`; returns them, the offset just past the last one, and whether
/// reading stopped at an unreadable record before `to`.
pub fn read_records(
    path: &Path,
    from: u64,
    to: u64,
    max: usize,
) -> io::Result<(Vec<Record>, u64, bool)> {
    let mut records = Vec::new();
    let mut end = from;
    if from >= to {
        return Ok((records, end, false));
    }
    let mut reader = BufReader::with_capacity(256 * 1024, File::open(path)?);
    reader.seek(SeekFrom::Start(from))?;
    while records.len() < max && end < to {
        let mut header = [0u8; 4];
        if reader.read_exact(&mut header).is_err() {
            break;
        }
        let size = u32::from_le_bytes(header);
        if !(2..=MAX_RECORD).contains(&size) || end + 4 + u64::from(size) > to {
            break;
        }
        let mut body = vec![0u8; size as usize];
        if reader.read_exact(&mut body).is_err() {
            break;
        }
        end += 4 + u64::from(size);
        records.push(Record {
            routing_key: u16::from_be_bytes([body[0], body[1]]),
            payload: body.split_off(2),
        });
    }
    let torn = records.len() < max && end < to;
    Ok((records, end, torn))
}

/// The offset past the last whole record between `from` (a record boundary) and `len`.
fn whole_records_end(path: &Path, from: u64, len: u64) -> io::Result<u64> {
    let mut reader = BufReader::with_capacity(256 * 1024, File::open(path)?);
    reader.seek(SeekFrom::Start(from))?;
    let mut end = from;
    while end < len {
        let mut header = [0u8; 4];
        if reader.read_exact(&mut header).is_err() {
            break;
        }
        let size = u32::from_le_bytes(header);
        if !(2..=MAX_RECORD).contains(&size) || end + 4 + u64::from(size) > len {
            break;
        }
        reader.seek_relative(i64::from(size))?;
        end += 4 + u64::from(size);
    }
    Ok(end)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("spill-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("clicks.spill")
    }

    fn file_len(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    #[test]
    fn replays_in_order_across_reopen() {
        let path = temp_path("order");
        let mut spill = SpillFile::open(&path).unwrap();
        for i in 0..10u16 {
            spill.append(i, format!("click {i}").as_bytes()).unwrap();
        }
        let (batch, end, torn) = spill.read_batch(4).unwrap();
        assert!(!torn);
        assert_eq!(batch.len(), 4);
        assert_eq!(batch[3].routing_key, 3);
        assert_eq!(batch[3].payload, b"click 3");
        assert_eq!(end, batch.iter().map(Record::file_size).sum::<u64>());
        spill.advance(end, false).unwrap();
        drop(spill);
        // After a restart, replay resumes at the stored position.
        let mut spill = SpillFile::open(&path).unwrap();
        let (batch, end, _) = spill.read_batch(100).unwrap();
        let keys: Vec<u16> = batch.iter().map(|r| r.routing_key).collect();
        assert_eq!(keys, (4..10).collect::<Vec<_>>());
        spill.advance(end, false).unwrap();
        assert_eq!(spill.pending_bytes(), 0);
        assert_eq!(file_len(&path), 0);
    }

    #[test]
    fn cuts_off_a_torn_tail_and_refuses_a_second_user() {
        let path = temp_path("torn");
        let mut spill = SpillFile::open(&path).unwrap();
        spill.append(1, b"whole").unwrap();
        spill.flush().unwrap();
        assert!(SpillFile::open(&path).is_err());
        drop(spill);
        let mut raw = OpenOptions::new().append(true).open(&path).unwrap();
        raw.write_all(&[50, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(raw);
        let mut spill = SpillFile::open(&path).unwrap();
        assert_eq!(spill.pending_bytes(), 11, "the torn record is cut off");
        // A record appended after the reopen follows the whole one directly.
        spill.append(2, b"after").unwrap();
        let (batch, end, torn) = spill.read_batch(10).unwrap();
        assert!(!torn);
        let payloads: Vec<&[u8]> = batch.iter().map(|r| r.payload.as_slice()).collect();
        assert_eq!(payloads, [b"whole".as_slice(), b"after".as_slice()]);
        spill.advance(end, false).unwrap();
        assert_eq!(spill.pending_bytes(), 0);
    }

    #[test]
    fn a_garbage_record_stops_reading() {
        let path = temp_path("garbage");
        let mut spill = SpillFile::open(&path).unwrap();
        spill.append(1, b"whole").unwrap();
        spill.flush().unwrap();
        let mut raw = OpenOptions::new().append(true).open(&path).unwrap();
        raw.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).unwrap();
        drop(raw);
        let (batch, end, torn) = read_records(&path, 0, file_len(&path), 10).unwrap();
        assert!(torn);
        assert_eq!(batch.len(), 1);
        assert_eq!(end, 11);
    }

    #[test]
    fn buffers_appends_until_the_buffer_is_full() {
        let path = temp_path("size");
        let mut spill = SpillFile::open(&path).unwrap();
        let payload = [7u8; 994]; // 1000 bytes per record
        for i in 0..(FLUSH_BYTES / 1000) {
            spill.append(i as u16, &payload).unwrap();
        }
        assert_eq!(file_len(&path), 0, "records stay in memory below the limit");
        assert!(spill.buffered_since().is_some());
        assert_eq!(spill.pending_bytes(), (FLUSH_BYTES / 1000 * 1000) as u64);
        spill.append(0, &payload).unwrap();
        assert_eq!(
            file_len(&path),
            (FLUSH_BYTES / 1000 * 1000 + 1000) as u64,
            "the record that fills the buffer writes it"
        );
        assert!(spill.buffered_since().is_none());
        spill.append(1, &payload).unwrap();
        assert_eq!(spill.pending_bytes(), file_len(&path) + 1000);
    }

    #[test]
    fn the_age_of_the_oldest_buffered_record_is_known() {
        let path = temp_path("age");
        let mut spill = SpillFile::open(&path).unwrap();
        assert!(spill.buffered_since().is_none());
        let before = Instant::now();
        spill.append(1, b"first").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        spill.append(2, b"second").unwrap();
        let since = spill.buffered_since().unwrap();
        assert!(since >= before && since.elapsed() >= std::time::Duration::from_millis(5));
        spill.flush().unwrap();
        assert!(spill.buffered_since().is_none());
        assert_eq!(file_len(&path), 11 + 12);
        spill.flush().unwrap();
        assert_eq!(file_len(&path), 23, "an empty buffer writes nothing");
    }

    #[test]
    fn read_batch_sees_buffered_records() {
        let path = temp_path("read");
        let mut spill = SpillFile::open(&path).unwrap();
        spill.append(1, b"written").unwrap();
        spill.flush().unwrap();
        spill.append(2, b"buffered").unwrap();
        let (batch, end, torn) = spill.read_batch(10).unwrap();
        assert!(!torn);
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[1].payload, b"buffered");
        assert_eq!(end, file_len(&path));
        // Replayed up to the end with a record still buffered: the file empties, the
        // buffered record stays pending and is written at the start of the file.
        spill.append(3, b"later").unwrap();
        spill.advance(end, false).unwrap();
        assert_eq!(file_len(&path), 0);
        assert_eq!(spill.pending_bytes(), 11);
        let (batch, _, _) = spill.read_batch(10).unwrap();
        assert_eq!(batch[0].payload, b"later");
    }

    #[test]
    fn reopens_with_what_was_buffered_before_shutdown() {
        let path = temp_path("reopen");
        let mut spill = SpillFile::open(&path).unwrap();
        for i in 0..3u16 {
            spill.append(i, format!("click {i}").as_bytes()).unwrap();
        }
        assert_eq!(file_len(&path), 0);
        spill.sync().unwrap();
        drop(spill);
        let mut spill = SpillFile::open(&path).unwrap();
        let (batch, _, torn) = spill.read_batch(10).unwrap();
        assert!(!torn);
        let keys: Vec<u16> = batch.iter().map(|r| r.routing_key).collect();
        assert_eq!(keys, [0, 1, 2]);
    }

    #[test]
    fn a_hold_keeps_records_in_memory_until_released_or_too_big() {
        let path = temp_path("hold");
        let mut spill = SpillFile::open(&path).unwrap();
        spill.hold();
        let payload = [1u8; 994];
        for i in 0..100u16 {
            spill.append(i, &payload).unwrap();
        }
        assert!(spill.holding());
        assert_eq!(file_len(&path), 0, "held records are not written");
        assert!(spill.file_replayed());
        let held = spill.take_buffered();
        assert_eq!(held.len(), 100);
        assert_eq!(held[99].routing_key, 99);
        assert_eq!(held[0].payload, payload);
        assert_eq!(spill.pending_bytes(), 0);
        // Past the byte limit the hold gives way and the buffer is written.
        for i in 0..(HOLD_MAX_BYTES / 1000 + 1) {
            spill.append(i as u16, &payload).unwrap();
        }
        assert!(file_len(&path) >= HOLD_MAX_BYTES as u64);
        assert!(!spill.file_replayed());
        spill.release();
        spill.append(0, b"after").unwrap();
        assert!(spill.buffered_since().is_some());
    }
}

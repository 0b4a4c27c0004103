//! The click log: every click event is written here before its redirect is answered, so
//! a click whose 302 went out survives SIGKILL, an OOM kill or a panic of click-ingest.
//!
//! A directory of segments `<id>.<created unix ms>.log` (every record in a segment was
//! sent to Kafka no earlier than its creation), each an append-only run of
//! records `[u32 length, little-endian][u16 routing key][payload]`. One `write(2)` per
//! record puts it in the page cache, which outlives the process; surviving the loss of
//! the machine needs `fsync`, done by policy (`FsyncPolicy`). A segment is deleted once
//! it is sealed (a newer one receives appends) and Kafka acknowledged each of its
//! records: every record sent to Kafka carries its segment, whose `settled` count the
//! delivery report raises. What a crash leaves is read back by [`Recovered`] on start.
//!
//! This module owns the files; what is sent when, and how a record that Kafka may hold
//! already is told apart, is the publisher's.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A segment is sealed and a new one started once it holds this many bytes: small enough
/// that an acknowledged segment is deleted soon, large enough that creating files costs
/// nothing per click.
pub const SEGMENT_BYTES: u64 = 4 << 20;

/// Records larger than this are not click events: the segment is damaged from there on.
const MAX_RECORD: u32 = 1 << 20;

/// One logged click event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub routing_key: u16,
    pub payload: Vec<u8>,
}

impl Record {
    /// Bytes the record takes in its segment.
    pub fn file_size(&self) -> u64 {
        6 + self.payload.len() as u64
    }
}

/// One segment's counts, shared with the producer's delivery reports.
#[derive(Debug)]
pub struct Segment {
    pub id: u64,
    /// Records written to the segment.
    written: AtomicU64,
    /// Records Kafka acknowledged, or that were written again further on.
    settled: AtomicU64,
}

impl Segment {
    fn new(id: u64) -> Self {
        Self {
            id,
            written: AtomicU64::new(0),
            settled: AtomicU64::new(0),
        }
    }

    /// One record of this segment needs nothing more.
    pub fn settle(&self) {
        self.settled.fetch_add(1, Ordering::Relaxed);
    }

    fn done(&self) -> bool {
        self.settled.load(Ordering::Relaxed) >= self.written.load(Ordering::Relaxed)
    }
}

/// A place in the log: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// Why a click could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("click log full ({bytes} bytes)")]
    Full { bytes: u64 },
    #[error("click log not writable: {0}")]
    Io(#[from] io::Error),
}

struct Open {
    segment: Arc<Segment>,
    path: PathBuf,
    file: File,
    len: u64,
}

pub struct ClickLog {
    dir: PathBuf,
    /// Segments on disk by id, the open one included.
    segments: BTreeMap<u64, (Arc<Segment>, PathBuf, u64)>,
    open: Open,
    /// Bytes of every segment on disk.
    bytes: u64,
    max_bytes: u64,
    /// Sealed segments not yet synced, for the fsync policy.
    unsynced: Vec<File>,
    /// The record being written, kept between appends so a click allocates nothing.
    scratch: Vec<u8>,
    /// Held so that a second click-ingest cannot share the directory.
    _lock: File,
}

/// What an earlier run left in the log directory, read before the log is opened again.
pub struct Recovered {
    /// Creation time of the oldest segment (unix ms), if there was one.
    pub oldest_ms: Option<i64>,
    /// Segment files and their lengths, in log order.
    segments: Vec<(PathBuf, u64)>,
    bytes: u64,
}

impl Recovered {
    /// Hands every recovered record to `f` in log order, reading a few thousand at a
    /// time: a full log never has to fit in memory. A record cut short by a crash ends
    /// its segment.
    pub fn for_each(&self, mut f: impl FnMut(Record) -> io::Result<()>) -> io::Result<()> {
        for (path, len) in &self.segments {
            let mut from = 0;
            while from < *len {
                let (records, end, torn) = read_records(path, from, *len, 10_000)?;
                for record in records {
                    f(record)?;
                }
                if torn || end == from {
                    tracing::warn!(bytes = len - end, path = %path.display(), "click log segment ends in an unreadable record");
                    break;
                }
                from = end;
            }
        }
        Ok(())
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn segment_name(id: u64, created_ms: i64) -> String {
    format!("{id:020}.{created_ms}.log")
}

/// `(id, created_ms)` of a segment file name.
fn parse_name(name: &str) -> Option<(u64, i64)> {
    let stem = name.strip_suffix(".log")?;
    let (id, created) = stem.split_once('.')?;
    Some((id.parse().ok()?, created.parse().ok()?))
}

/// Segment files in `dir` by id.
fn list(dir: &Path) -> io::Result<BTreeMap<u64, (i64, PathBuf)>> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some((id, created)) = name.to_str().and_then(parse_name) {
            found.insert(id, (created, entry.path()));
        }
    }
    Ok(found)
}

fn lock_dir(dir: &Path) -> io::Result<File> {
    std::fs::create_dir_all(dir)?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))?;
    lock.try_lock().map_err(|_| {
        io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("{} is in use by another click-ingest", dir.display()),
        )
    })?;
    Ok(lock)
}

impl ClickLog {
    /// Locks the directory and reads every record an earlier run left in it (a record
    /// cut short by a crash ends its segment). The records stay on disk until
    /// [`replace`](Self::replace) is called.
    pub fn recover(dir: &Path, max_bytes: u64) -> io::Result<(Self, Recovered)> {
        let lock = lock_dir(dir)?;
        let found = list(dir)?;
        let mut recovered = Recovered {
            oldest_ms: found.values().map(|(created, _)| *created).min(),
            segments: Vec::new(),
            bytes: 0,
        };
        for (_, path) in found.values() {
            let len = std::fs::metadata(path)?.len();
            recovered.segments.push((path.clone(), len));
            recovered.bytes += len;
        }
        let next = found.keys().next_back().map_or(1, |id| id + 1);
        let open = Self::create(dir, next)?;
        let mut segments = BTreeMap::new();
        segments.insert(next, (open.segment.clone(), open.path.clone(), 0));
        let log = Self {
            dir: dir.to_path_buf(),
            segments,
            open,
            bytes: recovered.bytes,
            max_bytes,
            unsynced: Vec::new(),
            scratch: Vec::new(),
            _lock: lock,
        };
        Ok((log, recovered))
    }

    fn create(dir: &Path, id: u64) -> io::Result<Open> {
        let created = now_ms();
        let path = dir.join(segment_name(id, created));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Open {
            segment: Arc::new(Segment::new(id)),
            path,
            file,
            len: 0,
        })
    }

    /// Writes records of the recovered segments that are still to be sent to the open
    /// segment (not counted against `max_bytes`: they were accepted already).
    pub fn write_recovered(&mut self, records: &[Record]) -> io::Result<()> {
        let mut buffer = Vec::new();
        for record in records {
            encode(&mut buffer, record.routing_key, &record.payload);
        }
        self.open.file.write_all(&buffer)?;
        self.wrote(records.len() as u64, buffer.len() as u64);
        Ok(())
    }

    /// Counts `records` records of `bytes` bytes just written to the open segment.
    fn wrote(&mut self, records: u64, bytes: u64) {
        self.open
            .segment
            .written
            .fetch_add(records, Ordering::Relaxed);
        self.open.len += bytes;
        self.bytes += bytes;
        if let Some(entry) = self.segments.get_mut(&self.open.segment.id) {
            entry.2 = self.open.len;
        }
    }

    /// Syncs what [`write_recovered`](Self::write_recovered) wrote, and only then deletes
    /// the recovered segments: a crash in between leaves both, which the next start
    /// tells apart by click hash.
    pub fn finish_recovery(&mut self, recovered: &Recovered) -> io::Result<()> {
        self.open.file.sync_data()?;
        for (path, _) in &recovered.segments {
            std::fs::remove_file(path)?;
        }
        File::open(&self.dir)?.sync_all()?;
        self.bytes -= recovered.bytes;
        Ok(())
    }

    /// Writes one record (one `write` call) and returns its segment and position. Refused
    /// when the log holds `max_bytes` already, unless `always` (a record written again).
    pub fn append(
        &mut self,
        routing_key: u16,
        payload: &[u8],
        always: bool,
    ) -> Result<(Arc<Segment>, Position), AppendError> {
        if !always && self.bytes >= self.max_bytes {
            return Err(AppendError::Full { bytes: self.bytes });
        }
        if self.open.len >= SEGMENT_BYTES {
            self.roll()?;
        }
        self.scratch.clear();
        encode(&mut self.scratch, routing_key, payload);
        if let Err(error) = self.open.file.write_all(&self.scratch) {
            // A partial write would end the segment in an unreadable record.
            let _ = self.open.file.set_len(self.open.len);
            return Err(error.into());
        }
        let position = Position {
            segment: self.open.segment.id,
            offset: self.open.len,
        };
        self.wrote(1, self.scratch.len() as u64);
        Ok((self.open.segment.clone(), position))
    }

    fn roll(&mut self) -> io::Result<()> {
        let next = Self::create(&self.dir, self.open.segment.id + 1)?;
        self.segments.insert(
            next.segment.id,
            (next.segment.clone(), next.path.clone(), 0),
        );
        let sealed = std::mem::replace(&mut self.open, next);
        self.unsynced.push(sealed.file);
        Ok(())
    }

    /// Where the next record will be written.
    pub fn end(&self) -> Position {
        Position {
            segment: self.open.segment.id,
            offset: self.open.len,
        }
    }

    /// The segment with `id`, its path and its length; `None` when it is gone.
    pub fn segment(&self, id: u64) -> Option<(Arc<Segment>, PathBuf, u64)> {
        self.segments.get(&id).cloned()
    }

    /// The first position past `position`'s segment: the start of the next segment.
    pub fn next_segment(&self, position: Position) -> Option<Position> {
        self.segments
            .range(position.segment + 1..)
            .next()
            .map(|(&id, _)| Position {
                segment: id,
                offset: 0,
            })
    }

    /// Deletes sealed segments whose records are all settled and lie before `keep` (the
    /// replay position while the log is being replayed). With `all`, at shutdown, the
    /// open segment too when it is settled. Returns how many were deleted.
    pub fn trim(&mut self, keep: Option<Position>, all: bool) -> usize {
        let open = self.open.segment.id;
        let done: Vec<u64> = self
            .segments
            .iter()
            .filter(|(&id, (segment, _, _))| {
                (id != open || all) && segment.done() && keep.is_none_or(|keep| id < keep.segment)
            })
            .map(|(&id, _)| id)
            .collect();
        let mut deleted = 0;
        for id in done {
            if id == open {
                // Emptied in place: the file stays open for appends.
                if self.open.len > 0 && self.open.file.set_len(0).is_ok() {
                    self.bytes -= self.open.len;
                    self.open.len = 0;
                    self.open.segment.written.store(0, Ordering::Relaxed);
                    self.open.segment.settled.store(0, Ordering::Relaxed);
                    if let Some(entry) = self.segments.get_mut(&id) {
                        entry.2 = 0;
                    }
                }
                continue;
            }
            let Some((_, path, len)) = self.segments.remove(&id) else {
                continue;
            };
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    self.bytes -= len;
                    deleted += 1;
                }
                Err(error) => {
                    tracing::warn!(%error, path = %path.display(), "click log segment not deleted");
                    self.segments
                        .insert(id, (Arc::new(Segment::new(id)), path, len));
                }
            }
        }
        deleted
    }

    /// Bytes from `position` to the end of the log.
    pub fn bytes_from(&self, position: Position) -> u64 {
        self.segments
            .range(position.segment..)
            .map(|(_, (_, _, len))| *len)
            .sum::<u64>()
            .saturating_sub(position.offset)
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Files to sync for the fsync policy: the open segment and those sealed since the
    /// last call.
    pub fn take_unsynced(&mut self) -> Vec<File> {
        let mut files = std::mem::take(&mut self.unsynced);
        if let Ok(open) = self.open.file.try_clone() {
            files.push(open);
        }
        files
    }
}

fn encode(buffer: &mut Vec<u8>, routing_key: u16, payload: &[u8]) {
    buffer.extend_from_slice(&(payload.len() as u32 + 2).to_le_bytes());
    buffer.extend_from_slice(&routing_key.to_be_bytes());
    buffer.extend_from_slice(payload);
}

/// Reads up to `max` records of the segment at `path` between `from` (a record boundary)
/// and `to`; returns them, the offset just past the last one, and whether reading
/// stopped at an unreadable record before `to`.
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

/// When the log is forced to disk: never (the page cache survives any crash of the
/// process; a crash of the machine loses what it held), or every so many milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    Never,
    Every(std::time::Duration),
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "never" | "" => Ok(Self::Never),
            ms => ms
                .parse::<u64>()
                .ok()
                .filter(|&ms| ms > 0)
                .map(|ms| Self::Every(std::time::Duration::from_millis(ms)))
                .ok_or_else(|| format!("{text:?} is neither `never` nor milliseconds")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("click-log-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn records(recovered: &Recovered) -> Vec<Record> {
        let mut records = Vec::new();
        recovered
            .for_each(|record| {
                records.push(record);
                Ok(())
            })
            .unwrap();
        records
    }

    #[test]
    fn records_survive_a_reopen_and_settled_segments_are_deleted() {
        let dir = temp_dir("reopen");
        let (mut log, recovered) = ClickLog::recover(&dir, u64::MAX).unwrap();
        assert!(records(&recovered).is_empty());
        for i in 0..3u16 {
            log.append(i, format!("click {i}").as_bytes(), false)
                .unwrap();
        }
        // Dropped without any delivery, as a kill would.
        drop(log);
        let (mut log, recovered) = ClickLog::recover(&dir, u64::MAX).unwrap();
        let found = records(&recovered);
        let keys: Vec<u16> = found.iter().map(|r| r.routing_key).collect();
        assert_eq!(keys, [0, 1, 2]);
        assert!(recovered.oldest_ms.is_some());
        log.write_recovered(&found[1..]).unwrap();
        log.finish_recovery(&recovered).unwrap();
        drop(log);
        let (mut log, recovered) = ClickLog::recover(&dir, u64::MAX).unwrap();
        let keys: Vec<u16> = records(&recovered).iter().map(|r| r.routing_key).collect();
        assert_eq!(keys, [1, 2], "the recovered segment is gone");
        log.finish_recovery(&recovered).unwrap();
        assert_eq!(log.bytes(), 0);
        let (segment, _) = log.append(9, b"x", false).unwrap();
        log.roll().unwrap();
        assert_eq!(log.trim(None, false), 0, "an unsettled segment stays");
        segment.settle();
        assert_eq!(log.trim(None, false), 1);
        assert_eq!(log.bytes(), 0);
        assert_eq!(log.segment_count(), 1);
    }

    #[test]
    fn a_torn_record_ends_its_segment_only() {
        let dir = temp_dir("torn");
        let (mut log, _) = ClickLog::recover(&dir, u64::MAX).unwrap();
        log.append(1, b"whole", false).unwrap();
        let path = log.open.path.clone();
        drop(log);
        let mut raw = OpenOptions::new().append(true).open(&path).unwrap();
        raw.write_all(&[50, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(raw);
        let (mut log, _) = ClickLog::recover(&dir, u64::MAX).unwrap();
        log.append(2, b"next", false).unwrap();
        drop(log);
        let (_, recovered) = ClickLog::recover(&dir, u64::MAX).unwrap();
        let payloads: Vec<Vec<u8>> = records(&recovered).into_iter().map(|r| r.payload).collect();
        assert_eq!(payloads, [b"whole".to_vec(), b"next".to_vec()]);
    }

    #[test]
    fn a_full_log_refuses_but_a_record_written_again_is_kept() {
        let dir = temp_dir("full");
        let (mut log, _) = ClickLog::recover(&dir, 20).unwrap();
        log.append(1, b"0123456789", false).unwrap();
        log.append(1, b"0123456789", false).unwrap();
        assert!(matches!(
            log.append(1, b"x", false),
            Err(AppendError::Full { .. })
        ));
        log.append(1, b"again", true).unwrap();
        assert!(
            ClickLog::recover(&dir, 20).is_err(),
            "a second user is refused"
        );
    }

    #[test]
    fn segments_roll_and_the_replay_position_keeps_them() {
        let dir = temp_dir("roll");
        let (mut log, _) = ClickLog::recover(&dir, u64::MAX).unwrap();
        let payload = vec![7u8; 1 << 20];
        let mut first = None;
        for _ in 0..6 {
            let (segment, position) = log.append(1, &payload, false).unwrap();
            first.get_or_insert(position);
            segment.settle();
        }
        assert_eq!(log.segment_count(), 2);
        let first = first.unwrap();
        assert_eq!(
            log.trim(Some(first), false),
            0,
            "the replay has not passed it"
        );
        assert_eq!(
            log.next_segment(first),
            Some(Position {
                segment: first.segment + 1,
                offset: 0
            })
        );
        assert_eq!(log.trim(Some(log.end()), false), 1);
        assert_eq!(log.trim(None, true), 0);
        assert_eq!(log.bytes(), 0, "the open segment is emptied in place");
    }

    #[test]
    fn the_fsync_policy_reads_never_or_milliseconds() {
        assert_eq!("never".parse::<FsyncPolicy>(), Ok(FsyncPolicy::Never));
        assert_eq!(
            "250".parse::<FsyncPolicy>(),
            Ok(FsyncPolicy::Every(std::time::Duration::from_millis(250)))
        );
        assert!("0".parse::<FsyncPolicy>().is_err());
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
    }
}

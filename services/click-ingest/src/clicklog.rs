//! The click log: every click event is written here before its redirect is answered, so a
//! click whose 302 went out survives SIGKILL, an OOM kill or a panic of click-ingest.
//!
//! A directory of segments `<id>.<created unix ms>.log` (every record in a segment was
//! sent to Kafka no earlier than its creation), each a header `TSCL` and a format version
//! byte (8 bytes), then an append-only run of records `[u32 length, little-endian] [u32
//! CRC-32 of length, routing key and payload, little-endian][u16 routing key] [payload]`
//! (the length counts routing key and payload), then zeros up to the segment's
//! preallocated size. A segment without the header is of the first format (before
//! checksums: records `[u32 length][u16 routing key][payload]`) and is still read. A
//! segment is a file of `SEGMENT_BYTES` reserved on disk (`posix_fallocate`, so a full
//! disk is an error when the segment is made, not a fault on a write) and mapped shared
//! into memory; a record is copied into the mapping, which *is* the file's page cache: no
//! system call per click, and what the copy wrote outlives the process as a `write(2)`
//! would. The record's checksum, routing key and payload are written first and its length
//! last, behind a release fence: a process killed mid-copy leaves the length zero, which
//! reads as the end of the segment, so a record either is whole or is not there, and the
//! click whose record is not whole was never redirected. Surviving the loss of the
//! machine needs `fsync`, done by policy (`FsyncPolicy`); the kernel writes mapped pages
//! back in any order, so with `fsync` set a machine crash between syncs can leave a
//! record whose length reached the disk and part of its payload did not. The checksum,
//! written with the payload before the length, tells such a record apart: it was never
//! written (its click is one of those the sync policy may lose), it ends its segment and
//! is counted in `traffsure_click_log_torn_records_total`. A record that fails its
//! checksum but is followed by records that pass theirs is damage in the middle of a
//! segment (a disk error): it is skipped, reported as an error and counted in
//! `traffsure_click_log_corrupt_records_total`, and the records after it are read. A
//! damaged *length* cannot be stepped over (nothing marks where the next record starts),
//! so it ends its segment as a torn record does. A segment is sealed (a newer one
//! receives appends; the sealed file is cut to its records) and deleted once Kafka
//! acknowledged each of its records: every record sent to Kafka carries its segment,
//! whose `settled` count the delivery report raises. The next segment is made ahead, out
//! of the writers' way ([`Spare`]): sealing only swaps it in. What a crash leaves is read
//! back by [`Recovered`] on start.
//!
//! This module owns the files; what is sent when, and how a record that Kafka may hold
//! already is told apart, is the publisher's.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A segment is sealed and a new one started once the next record does not fit in this
/// many bytes: small enough that an acknowledged segment is deleted soon, large enough
/// that creating files costs nothing per click.
pub const SEGMENT_BYTES: u64 = 4 << 20;

/// How long after a spare segment could not be made the next is tried.
const SPARE_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Records larger than this (routing key and payload) are not click events: the segment
/// is damaged from there on. A click event this large is refused.
const MAX_RECORD: u32 = 1 << 20;

/// Bytes of a record before its payload: length, checksum and routing key.
const RECORD_HEADER: usize = 10;

/// The first bytes of a segment with checksummed records. Read as the first format's
/// length (little-endian) it exceeds `MAX_RECORD`, so no older segment starts with it.
const SEGMENT_MAGIC: [u8; 4] = *b"TSCL";
/// The format version after the magic: 1, records with a checksum.
const FORMAT_CHECKSUMMED: u8 = 1;
/// Bytes of a segment's header: the magic, the version, three zero bytes. Offsets in a
/// segment ([`Position`], lengths) count from its end: the header is not a record.
const SEGMENT_HEADER: usize = 8;

/// How a segment's records are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// No header, records `[length][routing key][payload]`: segments written before
    /// checksums, read after an upgrade.
    Plain,
    /// The header, then records `[length][checksum][routing key][payload]`.
    Checksummed,
}

impl Format {
    /// Bytes of the segment's header.
    fn header(self) -> u64 {
        match self {
            Self::Plain => 0,
            Self::Checksummed => SEGMENT_HEADER as u64,
        }
    }

    /// Bytes of a record's frame besides routing key and payload.
    fn frame(self) -> u64 {
        match self {
            Self::Plain => 4,
            Self::Checksummed => 8,
        }
    }

    /// The format of the segment file `file` from its first bytes; an unknown version
    /// (a segment of a newer click-ingest) is an error, not records to guess at.
    fn of(file: &mut File) -> io::Result<Self> {
        let mut head = [0u8; SEGMENT_HEADER];
        let mut got = 0;
        while got < head.len() {
            match file.read(&mut head[got..])? {
                0 => break,
                n => got += n,
            }
        }
        if got < SEGMENT_MAGIC.len() || head[..4] != SEGMENT_MAGIC {
            return Ok(Self::Plain);
        }
        match head[4] {
            FORMAT_CHECKSUMMED if got == SEGMENT_HEADER => Ok(Self::Checksummed),
            version => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "click log segment of an unknown format (version {version}, {got} header bytes): written by a newer click-ingest?"
                ),
            )),
        }
    }
}

/// The checksum of a record: CRC-32 (IEEE) over its length, routing key and payload as
/// stored.
fn checksum(size: [u8; 4], key: [u8; 2], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&size);
    hasher.update(&key);
    hasher.update(payload);
    hasher.finalize()
}

/// Records the recovery found damaged: torn (the end of a segment, never written whole)
/// and corrupt (in the middle, skipped).
struct Damage {
    torn: traffsure_telemetry::prometheus::IntCounter,
    corrupt: traffsure_telemetry::prometheus::IntCounter,
}

fn damage() -> &'static Damage {
    static METRIC: std::sync::OnceLock<Damage> = std::sync::OnceLock::new();
    let counter = |name: &str, help: &str| {
        let counter = traffsure_telemetry::prometheus::IntCounter::new(name, help)
            .unwrap_or_else(|e| panic!("metric is malformed: {e}"));
        let _ = traffsure_telemetry::prometheus::register(Box::new(counter.clone()));
        counter
    };
    METRIC.get_or_init(|| Damage {
        torn: counter(
            "traffsure_click_log_torn_records_total",
            "Click log records found at start that a machine crash left half written (failing their checksum at the end of a segment); never written, not sent",
        ),
        corrupt: counter(
            "traffsure_click_log_corrupt_records_total",
            "Click log records found at start failing their checksum in the middle of a segment (disk damage); skipped, the records after them sent",
        ),
    })
}

/// One logged click event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub routing_key: u16,
    pub payload: Vec<u8>,
}

impl Record {
    /// Bytes the record takes in a segment this log writes.
    pub fn file_size(&self) -> u64 {
        (RECORD_HEADER + self.payload.len()) as u64
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

    /// `count` records of this segment need nothing more.
    pub fn settle_many(&self, count: u64) {
        self.settled.fetch_add(count, Ordering::Relaxed);
    }

    /// Records written and not yet settled.
    #[cfg(test)]
    pub fn unsettled(&self) -> u64 {
        self.written.load(Ordering::Relaxed) - self.settled.load(Ordering::Relaxed)
    }

    fn done(&self) -> bool {
        self.settled.load(Ordering::Relaxed) >= self.written.load(Ordering::Relaxed)
    }
}

/// A place in the log: a segment and a byte offset in it, counted after its header.
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
    #[error("click event too large for the click log ({bytes} bytes)")]
    TooLarge { bytes: usize },
    #[error("click log not writable: {0}")]
    Io(#[from] io::Error),
}

struct Open {
    segment: Arc<Segment>,
    path: PathBuf,
    file: File,
    /// The file, mapped; as long as the file.
    map: Mapping,
    /// Bytes of records written; zeros follow up to the mapping's end.
    len: u64,
}

impl Open {
    /// Copies one record to the end of the segment: checksum, routing key and payload,
    /// then the length. The caller made sure it fits.
    fn put(&mut self, routing_key: u16, payload: &[u8]) {
        let at = SEGMENT_HEADER + self.len as usize;
        let end = at + RECORD_HEADER + payload.len();
        let size = (payload.len() as u32 + 2).to_le_bytes();
        let key = routing_key.to_be_bytes();
        let sum = checksum(size, key, payload);
        let bytes = self.map.bytes();
        bytes[at + 4..at + 8].copy_from_slice(&sum.to_le_bytes());
        bytes[at + 8..at + RECORD_HEADER].copy_from_slice(&key);
        bytes[at + RECORD_HEADER..end].copy_from_slice(payload);
        // The length makes the record readable: stored after the rest, so that a process
        // killed before it leaves a zero length (the segment's end), never a record whose
        // payload is missing. (A machine crash can still store the length alone: the
        // checksum tells.)
        std::sync::atomic::fence(Ordering::Release);
        bytes[at..at + 4].copy_from_slice(&size);
    }

    /// Whether a record of `payload_len` bytes fits in the rest of the mapping.
    fn fits(&self, payload_len: usize) -> bool {
        SEGMENT_HEADER + self.len as usize + RECORD_HEADER + payload_len <= self.map.len()
    }

    /// Makes the file and its mapping `capacity` bytes long (never shorter).
    fn grow(&mut self, capacity: u64) -> io::Result<()> {
        if capacity as usize <= self.map.len() {
            return Ok(());
        }
        preallocate(&self.file, capacity)?;
        self.map = Mapping::new(&self.file, capacity as usize)?;
        Ok(())
    }
}

#[cfg(test)]
impl Open {
    /// Copies one record as the first format framed it (no checksum): the baseline of
    /// the checksum's cost.
    fn put_plain(&mut self, routing_key: u16, payload: &[u8]) {
        let at = SEGMENT_HEADER + self.len as usize;
        let end = at + 6 + payload.len();
        let bytes = self.map.bytes();
        bytes[at + 4..at + 6].copy_from_slice(&routing_key.to_be_bytes());
        bytes[at + 6..end].copy_from_slice(payload);
        std::sync::atomic::fence(Ordering::Release);
        bytes[at..at + 4].copy_from_slice(&(payload.len() as u32 + 2).to_le_bytes());
    }
}

/// A sealed segment, still mapped: dropping it unmaps it and cuts its file to its records.
pub struct Sealed(#[allow(dead_code)] Open);

/// Removes a spare segment that never held a record.
fn remove_spare(spare: Open) {
    let path = spare.path.clone();
    drop(spare);
    if let Err(error) = std::fs::remove_file(&path) {
        tracing::warn!(%error, path = %path.display(), "click log spare segment not removed");
    }
}

impl Drop for ClickLog {
    /// The spare is removed; the segments with records stay for the next start.
    fn drop(&mut self) {
        if let Some(spare) = self.spare.take() {
            remove_spare(spare);
        }
    }
}

impl Drop for Open {
    /// Cuts the file to its records (the mapping is gone first): the preallocated rest is
    /// given back to the disk. Not done, as by a kill, the zeros read as the end.
    fn drop(&mut self) {
        self.map = Mapping::empty();
        if let Err(error) = self.file.set_len(SEGMENT_HEADER as u64 + self.len) {
            tracing::warn!(%error, path = %self.path.display(), "click log segment not cut to its records");
        }
    }
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
    /// Sealed segments still mapped and as long as preallocated: unmapping and cutting
    /// them is left to the upkeep thread (`take_sealed`), outside the lock.
    sealed: Vec<Sealed>,
    /// The next segment, made ahead outside the log's lock (see [`Spare`]), so that
    /// sealing a full segment does not hold every writer while a file is made and its
    /// pages populated (milliseconds on a busy machine).
    spare: Option<Open>,
    /// A spare is being made.
    spare_pending: bool,
    /// After a spare could not be made (a full disk, say): no other is tried before then.
    spare_retry: Option<std::time::Instant>,
    /// The id the next segment made gets. Each id is handed out once, so a spare made
    /// while a seal made its own segment is older than the open one, and is removed.
    next_id: u64,
    /// Held so that a second click-ingest cannot share the directory.
    _lock: File,
}

/// A segment to be made outside the log's lock and handed to [`ClickLog::offer_spare`]:
/// its directory and id, from [`ClickLog::spare_wanted`]. It is empty until it becomes
/// the open segment; a kill before that leaves an empty segment, which a start reads as
/// such and deletes with the others.
pub struct Spare {
    dir: PathBuf,
    id: u64,
}

/// A spare segment made (`Spare::make`), not yet in its log.
pub struct MadeSpare(Open);

impl Spare {
    /// Creates, reserves and maps the segment: what sealing a segment did in the lock.
    pub fn make(&self) -> io::Result<MadeSpare> {
        ClickLog::create(&self.dir, self.id).map(MadeSpare)
    }
}

/// What an earlier run left in the log directory, read before the log is opened again.
pub struct Recovered {
    /// Creation time of the oldest segment (unix ms), if there was one.
    pub oldest_ms: Option<i64>,
    /// Segment files and the bytes of their records, in log order.
    segments: Vec<(PathBuf, u64)>,
    bytes: u64,
    /// Set once damaged records were reported: the records are read more than once.
    reported: std::sync::atomic::AtomicBool,
    torn: AtomicU64,
    corrupt: AtomicU64,
}

impl Recovered {
    /// Hands every recovered record to `f` in log order, reading a few thousand at a
    /// time: a full log never has to fit in memory. A record cut short by a crash (or
    /// failing its checksum, with no whole record after it) ends its segment; one failing
    /// its checksum before whole records is skipped. The first call reports both.
    pub fn for_each(&self, mut f: impl FnMut(Record) -> io::Result<()>) -> io::Result<()> {
        let report = !self.reported.swap(true, Ordering::Relaxed);
        for (path, len) in &self.segments {
            let mut from = 0;
            while from < *len {
                let read = read_segment(path, from, *len, 10_000, true)?;
                if report {
                    for &(offset, bytes) in &read.corrupt {
                        damage().corrupt.inc();
                        self.corrupt.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            offset,
                            bytes,
                            path = %path.display(),
                            "click log record fails its checksum amid whole records (disk damage, or pages a machine crash wrote back out of order): skipped, the records after it are sent"
                        );
                    }
                }
                let (end, torn, torn_records) = (read.end, read.torn, read.torn_records);
                for record in read.records {
                    f(record)?;
                }
                if torn && report {
                    damage().torn.inc_by(torn_records);
                    self.torn.fetch_add(torn_records, Ordering::Relaxed);
                    tracing::warn!(
                        bytes = len - end,
                        records = torn_records,
                        path = %path.display(),
                        "click log segment ends in a torn record (not written whole before a crash): not sent"
                    );
                }
                if torn || end == from {
                    break;
                }
                from = end;
            }
        }
        Ok(())
    }

    /// Records found torn (never written whole) and corrupt (skipped amid whole records)
    /// by the first [`for_each`](Self::for_each).
    pub fn damaged(&self) -> (u64, u64) {
        (
            self.torn.load(Ordering::Relaxed),
            self.corrupt.load(Ordering::Relaxed),
        )
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
            reported: std::sync::atomic::AtomicBool::new(false),
            torn: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
        };
        for (_, path) in found.values() {
            let mut file = File::open(path)?;
            let len = file.metadata()?.len();
            let format = Format::of(&mut file)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            recovered
                .segments
                .push((path.clone(), len.saturating_sub(format.header())));
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
            sealed: Vec::new(),
            spare: None,
            spare_pending: false,
            spare_retry: None,
            next_id: next + 1,
            _lock: lock,
        };
        Ok((log, recovered))
    }

    fn create(dir: &Path, id: u64) -> io::Result<Open> {
        let created = now_ms();
        let path = dir.join(segment_name(id, created));
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)?;
        let map = preallocate(&file, SEGMENT_BYTES)
            .and_then(|()| Mapping::new(&file, SEGMENT_BYTES as usize))
            .map(|mut map| {
                // Any sync that keeps a record keeps the header too: it is in the same
                // file, written first.
                let header = &mut map.bytes()[..SEGMENT_HEADER];
                header[..4].copy_from_slice(&SEGMENT_MAGIC);
                header[4] = FORMAT_CHECKSUMMED;
                map
            });
        let map = match map {
            Ok(map) => map,
            Err(error) => {
                // No half-made segment is left for the next start to read.
                let _ = std::fs::remove_file(&path);
                return Err(error);
            }
        };
        Ok(Open {
            segment: Arc::new(Segment::new(id)),
            path,
            file,
            map,
            len: 0,
        })
    }

    /// Writes records of the recovered segments that are still to be sent to the open
    /// segment, which grows to hold them all: the replay starts at its beginning (not
    /// counted against `max_bytes`: they were accepted already).
    pub fn write_recovered(&mut self, records: &[Record]) -> io::Result<()> {
        let bytes: u64 = records.iter().map(Record::file_size).sum();
        let capacity =
            (SEGMENT_HEADER as u64 + self.open.len + bytes).div_ceil(SEGMENT_BYTES) * SEGMENT_BYTES;
        self.open.grow(capacity)?;
        for record in records {
            self.open.put(record.routing_key, &record.payload);
            self.wrote(1, record.file_size());
        }
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

    /// Writes one record (a copy into the open segment's mapping, no system call but
    /// when a segment is sealed) and returns its segment and position. Refused when the
    /// log holds `max_bytes` already, unless `always` (a record written again).
    pub fn append(
        &mut self,
        routing_key: u16,
        payload: &[u8],
        always: bool,
    ) -> Result<(Arc<Segment>, Position), AppendError> {
        if !always && self.bytes >= self.max_bytes {
            return Err(AppendError::Full { bytes: self.bytes });
        }
        if payload.len() + 2 > MAX_RECORD as usize {
            return Err(AppendError::TooLarge {
                bytes: payload.len(),
            });
        }
        if !self.open.fits(payload.len()) {
            self.roll()?;
        }
        let position = Position {
            segment: self.open.segment.id,
            offset: self.open.len,
        };
        self.open.put(routing_key, payload);
        self.wrote(1, (RECORD_HEADER + payload.len()) as u64);
        Ok((self.open.segment.clone(), position))
    }

    fn roll(&mut self) -> io::Result<()> {
        let next = match self.spare.take() {
            Some(spare) => spare,
            None => {
                let id = self.take_id();
                Self::create(&self.dir, id)?
            }
        };
        self.segments.insert(
            next.segment.id,
            (next.segment.clone(), next.path.clone(), 0),
        );
        let sealed = std::mem::replace(&mut self.open, next);
        if let Ok(file) = sealed.file.try_clone() {
            self.unsynced.push(file);
        }
        // Dropping it unmaps it and cuts the file to its records: a munmap of megabytes
        // of mapped pages, left to the upkeep thread. Until then its zeros read as its end.
        self.sealed.push(Sealed(sealed));
        Ok(())
    }

    /// Sealed segments to let go of (dropping one unmaps it and cuts its file to its
    /// records), outside the log's lock.
    pub fn take_sealed(&mut self) -> Vec<Sealed> {
        std::mem::take(&mut self.sealed)
    }

    /// A spare segment to make, when none is ready or being made: the log holds one
    /// made ahead for the next seal (the upkeep thread makes it, outside the lock).
    pub fn spare_wanted(&mut self) -> Option<Spare> {
        if self.spare.is_some()
            || self.spare_pending
            || self
                .spare_retry
                .is_some_and(|retry| std::time::Instant::now() < retry)
        {
            return None;
        }
        self.spare_pending = true;
        Some(Spare {
            dir: self.dir.clone(),
            id: self.take_id(),
        })
    }

    /// The id of a segment about to be made; never handed out again.
    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Takes a spare made from `spare_wanted`'s answer, or the error making it gave (the
    /// next seal then makes its segment itself, and reports the error if it recurs). A
    /// spare older than the open segment (a seal did not wait for it) is removed.
    pub fn offer_spare(&mut self, made: io::Result<MadeSpare>) {
        self.spare_pending = false;
        match made {
            Ok(MadeSpare(spare)) if spare.segment.id > self.open.segment.id => {
                self.spare = Some(spare);
            }
            Ok(MadeSpare(stale)) => remove_spare(stale),
            Err(error) => {
                tracing::warn!(%error, "click log: the next segment could not be made ahead");
                self.spare_retry = Some(std::time::Instant::now() + SPARE_RETRY);
            }
        }
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
                // Emptied in place, zeroed rather than cut: the file stays mapped for
                // appends, and a record written later must be followed by zeros.
                if self.open.len > 0 {
                    let records = SEGMENT_HEADER..SEGMENT_HEADER + self.open.len as usize;
                    self.open.map.bytes()[records].fill(0);
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

/// Reserves `len` bytes of disk for `file` and makes it that long (never shorter).
fn preallocate(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
    #[allow(unsafe_code)]
    // SAFETY: a plain system call on a file descriptor the borrowed `File` keeps open.
    let code = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match code {
        0 => Ok(()),
        code => Err(io::Error::from_raw_os_error(code)),
    }
}

/// A file mapped shared, read and write: its bytes are the file's page cache.
struct Mapping {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is memory this value alone hands out (through `&mut self`); the log
// holding it is used by one thread at a time, under the publisher's lock.
#[allow(unsafe_code)]
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `file`, which is at least that long, and faults its
    /// pages in at once: one system call per segment instead of a page fault per few
    /// clicks (kernels before 5.14 refuse, and the pages then fault in as written).
    #[allow(unsafe_code)]
    fn new(file: &File, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping of an open file the log has locked for itself
        // (no other process truncates it while mapped); the pointer is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the range is the mapping just made; advice changes no memory contents.
        let _ = unsafe { libc::madvise(ptr, len, libc::MADV_POPULATE_WRITE) };
        let ptr = std::ptr::NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self { ptr, len })
    }

    /// No mapping, for a segment being closed.
    fn empty() -> Self {
        Self {
            ptr: std::ptr::NonNull::dangling(),
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    #[allow(unsafe_code)]
    fn bytes(&mut self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: `len` bytes mapped readable and writable at `ptr`, alive until drop, and
        // borrowed mutably through `self` only.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmaps exactly the mapping made in `new`; no borrow of it outlives
            // `self`.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}

/// Reads up to `max` records of the segment at `path` between `from` (a record boundary)
/// and `to` (offsets after the segment's header); returns them, the offset just past the
/// last one, and whether reading stopped at an unreadable record before `to`: cut short,
/// or failing its checksum. A zero length is the end of the records (the unwritten rest
/// of a preallocated segment), not an unreadable record.
pub fn read_records(
    path: &Path,
    from: u64,
    to: u64,
    max: usize,
) -> io::Result<(Vec<Record>, u64, bool)> {
    let read = read_segment(path, from, to, max, false)?;
    Ok((read.records, read.end, read.torn))
}

/// What [`read_segment`] read.
struct SegmentRead {
    records: Vec<Record>,
    /// The offset just past the last record read.
    end: u64,
    /// Reading stopped at an unreadable record before `to`.
    torn: bool,
    /// Records in the unreadable end: those failing their checksum, or 1 for a record
    /// cut short.
    torn_records: u64,
    /// Offset and bytes of each record skipped for its checksum before a whole record.
    corrupt: Vec<(u64, u64)>,
}

/// One record's frame as read.
enum Frame {
    Whole(Record, u64),
    /// Length and routing key and payload were read, the checksum does not match: the
    /// record's bytes.
    Mismatch(u64),
    /// A zero length.
    End,
    /// A length out of bounds or cut short by the file's end.
    Unreadable,
}

fn next_frame(reader: &mut impl Read, format: Format, room: u64) -> Frame {
    let mut header = [0u8; 8];
    let header = &mut header[..format.frame() as usize];
    if reader.read_exact(header).is_err() {
        return Frame::Unreadable;
    }
    let size = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    if size == 0 {
        return Frame::End;
    }
    let bytes = format.frame() + u64::from(size);
    if !(2..=MAX_RECORD).contains(&size) || bytes > room {
        return Frame::Unreadable;
    }
    let mut body = vec![0u8; size as usize];
    if reader.read_exact(&mut body).is_err() {
        return Frame::Unreadable;
    }
    let payload = body.split_off(2);
    let key = [body[0], body[1]];
    if format == Format::Checksummed {
        let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if checksum(size.to_le_bytes(), key, &payload) != stored {
            return Frame::Mismatch(bytes);
        }
    }
    let record = Record {
        routing_key: u16::from_be_bytes(key),
        payload,
    };
    Frame::Whole(record, bytes)
}

/// Reads up to `max` records between `from` and `to` as [`read_records`] does. With
/// `skip_corrupt`, a record failing its checksum is stepped over by its length, and
/// skipped when a whole record follows (damage in the middle); with none after it, the
/// records failing theirs are the torn end of the segment.
fn read_segment(
    path: &Path,
    from: u64,
    to: u64,
    max: usize,
    skip_corrupt: bool,
) -> io::Result<SegmentRead> {
    let mut read = SegmentRead {
        records: Vec::new(),
        end: from,
        torn: false,
        torn_records: 0,
        corrupt: Vec::new(),
    };
    if from >= to {
        return Ok(read);
    }
    let mut file = File::open(path)?;
    let format = Format::of(&mut file)?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    reader.seek(SeekFrom::Start(format.header() + from))?;
    let mut at = from;
    let mut failing = Vec::new();
    let mut ended = false;
    while read.records.len() < max && at < to {
        match next_frame(&mut reader, format, to - at) {
            Frame::Whole(record, bytes) => {
                read.corrupt.append(&mut failing);
                read.records.push(record);
                at += bytes;
                read.end = at;
            }
            Frame::Mismatch(bytes) => {
                failing.push((at, bytes));
                if !skip_corrupt {
                    break;
                }
                at += bytes;
            }
            Frame::End => {
                ended = true;
                break;
            }
            Frame::Unreadable => break,
        }
    }
    if !failing.is_empty() {
        read.torn = true;
        read.torn_records = failing.len() as u64;
    } else if !ended && read.records.len() < max && read.end < to {
        read.torn = true;
        read.torn_records = 1;
    }
    Ok(read)
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
    use std::io::Write as _;

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
    fn a_record_without_its_length_is_not_there() {
        let dir = temp_dir("unfinished");
        let (mut log, _) = ClickLog::recover(&dir, u64::MAX).unwrap();
        log.append(1, b"first", false).unwrap();
        let (_, second) = log.append(2, b"second", false).unwrap();
        // What a kill leaves: the preallocated file, as the mapping wrote it, and no cut.
        let mut bytes = std::fs::read(&log.open.path).unwrap();
        assert_eq!(bytes.len() as u64, SEGMENT_BYTES);
        let killed = temp_dir("unfinished-copy");
        std::fs::create_dir_all(&killed).unwrap();
        std::fs::write(killed.join(segment_name(1, 0)), &bytes).unwrap();
        // Killed after the second record's payload was copied, before its length.
        let second = SEGMENT_HEADER + second.offset as usize;
        bytes[second..second + 4].fill(0);
        std::fs::write(killed.join(segment_name(2, 0)), &bytes).unwrap();
        let (_, recovered) = ClickLog::recover(&killed, u64::MAX).unwrap();
        let keys: Vec<u16> = records(&recovered).iter().map(|r| r.routing_key).collect();
        assert_eq!(
            keys,
            [1, 2, 1],
            "whole records only, the zeros read as the end"
        );
        let long = vec![9u8; 1 << 19];
        log.append(3, &long, false).unwrap();
        drop(log);
        let on_disk = std::fs::metadata(
            std::fs::read_dir(&dir)
                .unwrap()
                .filter_map(Result::ok)
                .find(|e| e.path().extension().is_some_and(|x| x == "log"))
                .unwrap()
                .path(),
        )
        .unwrap()
        .len();
        assert_eq!(
            on_disk,
            8 + 10 + 5 + 10 + 6 + 10 + (1 << 19),
            "a closed segment is cut to its records"
        );
        // Preallocated segments take megabytes: leave none behind.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&killed).unwrap();
    }

    #[test]
    fn recovered_records_fit_in_one_segment_however_many() {
        let dir = temp_dir("recovered");
        let (mut log, _) = ClickLog::recover(&dir, u64::MAX).unwrap();
        let start = log.end();
        let big: Vec<Record> = (0..6u16)
            .map(|i| Record {
                routing_key: i,
                payload: vec![i as u8; (1 << 20) - 2],
            })
            .collect();
        log.write_recovered(&big).unwrap();
        assert_eq!(
            log.end().segment,
            start.segment,
            "the replay starts in one segment"
        );
        log.append(7, b"after", false).unwrap();
        drop(log);
        let (_, recovered) = ClickLog::recover(&dir, u64::MAX).unwrap();
        let keys: Vec<u16> = records(&recovered).iter().map(|r| r.routing_key).collect();
        assert_eq!(keys, [0, 1, 2, 3, 4, 5, 7]);
        let too_large = temp_dir("too-large");
        assert!(matches!(
            ClickLog::recover(&too_large, u64::MAX).unwrap().0.append(
                1,
                &vec![0u8; 1 << 20],
                false
            ),
            Err(AppendError::TooLarge { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&too_large).unwrap();
    }

    #[test]
    fn a_full_log_refuses_but_a_record_written_again_is_kept() {
        let dir = temp_dir("full");
        let (mut log, _) = ClickLog::recover(&dir, 30).unwrap();
        log.append(1, b"0123456789", false).unwrap();
        log.append(1, b"0123456789", false).unwrap();
        assert!(matches!(
            log.append(1, b"x", false),
            Err(AppendError::Full { .. })
        ));
        log.append(1, b"again", true).unwrap();
        assert!(
            ClickLog::recover(&dir, 30).is_err(),
            "a second user is refused"
        );
    }

    #[test]
    fn segments_roll_and_the_replay_position_keeps_them() {
        let dir = temp_dir("roll");
        let (mut log, _) = ClickLog::recover(&dir, u64::MAX).unwrap();
        let payload = vec![7u8; (1 << 20) - 2];
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
    fn a_seal_takes_the_spare_made_ahead_and_a_stale_spare_is_removed() {
        let dir = temp_dir("spare");
        let (mut log, _) = ClickLog::recover(&dir, u64::MAX).unwrap();
        let spare = log.spare_wanted().unwrap();
        assert!(log.spare_wanted().is_none(), "one spare at a time");
        log.offer_spare(spare.make());
        assert!(log.spare_wanted().is_none(), "a spare is ready");
        let spare_path = log.spare.as_ref().unwrap().path.clone();
        let payload = vec![7u8; (1 << 20) - 2];
        let mut positions = Vec::new();
        for _ in 0..6 {
            positions.push(log.append(1, &payload, false).unwrap().1);
        }
        assert_eq!(log.open.path, spare_path, "the seal took the spare");
        // A spare being made while a seal makes its own segment: older, so removed.
        let late = log.spare_wanted().unwrap();
        let made = late.make().unwrap();
        let late_path = made.0.path.clone();
        for _ in 0..4 {
            positions.push(log.append(1, &payload, false).unwrap().1);
        }
        assert_ne!(log.open.path, late_path);
        log.offer_spare(Ok(made));
        assert!(!late_path.exists(), "the stale spare is removed");
        assert!(log.spare.is_none());
        // A spare ready when the process is killed is an empty segment to the next start
        // (forgotten: what a kill leaves, the whole preallocated file).
        let spare = log.spare_wanted().unwrap();
        log.offer_spare(spare.make());
        std::mem::forget(log.spare.take().unwrap());
        let on_disk = std::fs::read_dir(&dir).unwrap().count();
        drop(log);
        let (log, recovered) = ClickLog::recover(&dir, u64::MAX).unwrap();
        assert_eq!(records(&recovered).len(), positions.len());
        let ids: Vec<u64> = positions.iter().map(|p| p.segment).collect();
        assert!(ids.windows(2).all(|w| w[0] <= w[1]), "ids grow: {ids:?}");
        drop(log);
        assert!(on_disk > 3);
        // Dropped (a stop), the log removes its spare; the segments with records stay.
        let (mut log, recovered) = ClickLog::recover(&dir, u64::MAX).unwrap();
        log.finish_recovery(&recovered).unwrap();
        let spare = log.spare_wanted().unwrap();
        log.offer_spare(spare.make());
        let spare_path = log.spare.as_ref().unwrap().path.clone();
        drop(log);
        assert!(!spare_path.exists(), "the spare is removed on drop");
        // A spare that could not be made: none is tried again at once.
        let (mut log, _) = ClickLog::recover(&dir, u64::MAX).unwrap();
        let _ = log.spare_wanted().unwrap();
        log.offer_spare(Err(io::Error::other("disk full")));
        assert!(log.spare_wanted().is_none(), "retried at once");
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// What a kill leaves of the open segment of a log that wrote `payloads` (the whole
    /// preallocated file, as the mapping wrote it) and where each record starts in it.
    fn killed_segment(name: &str, payloads: &[&[u8]]) -> (Vec<u8>, Vec<usize>) {
        let dir = temp_dir(name);
        let (mut log, _) = ClickLog::recover(&dir, u64::MAX).unwrap();
        let mut starts = Vec::new();
        for (key, payload) in payloads.iter().enumerate() {
            let (_, at) = log.append(key as u16, payload, false).unwrap();
            starts.push(SEGMENT_HEADER + at.offset as usize);
        }
        let bytes = std::fs::read(&log.open.path).unwrap();
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
        (bytes, starts)
    }

    /// Recovers a directory holding `segment` as its only segment.
    fn recover_one(name: &str, segment: &[u8]) -> (Vec<Record>, (u64, u64)) {
        let dir = temp_dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(segment_name(1, 0)), segment).unwrap();
        let (_, recovered) = ClickLog::recover(&dir, u64::MAX).unwrap();
        let found = records(&recovered);
        assert_eq!(
            records(&recovered),
            found,
            "a second reading reads the same"
        );
        let damaged = recovered.damaged();
        std::fs::remove_dir_all(&dir).unwrap();
        (found, damaged)
    }

    fn keys(records: &[Record]) -> Vec<u16> {
        records.iter().map(|r| r.routing_key).collect()
    }

    #[test]
    fn segments_start_with_their_format_and_records_carry_a_checksum() {
        let (bytes, starts) = killed_segment("header", &[b"click"]);
        assert_eq!(&bytes[..SEGMENT_HEADER], b"TSCL\x01\0\0\0");
        let at = starts[0];
        assert_eq!(bytes[at..at + 4], 7u32.to_le_bytes());
        let sum = crc32fast::hash(&[&7u32.to_le_bytes()[..], &[0, 0], b"click"].concat());
        assert_eq!(bytes[at + 4..at + 8], sum.to_le_bytes());
        assert_eq!(&bytes[at + 10..at + 15], b"click");
    }

    #[test]
    fn a_length_on_disk_without_all_its_payload_is_a_torn_record() {
        let (mut bytes, starts) = killed_segment("torn-payload", &[b"first", b"second", &[7; 300]]);
        // A machine crash after the third record's length was written back, not the
        // page holding the end of its payload.
        let third = starts[2];
        bytes[third + 200..third + 310].fill(0);
        let (found, damaged) = recover_one("torn-payload-copy", &bytes);
        assert_eq!(keys(&found), [0, 1], "the torn record is not there");
        assert_eq!(damaged, (1, 0), "one torn record, none corrupt");
        // The same file whole reads all three, nothing damaged.
        let (whole, _) = killed_segment("torn-payload-whole", &[b"first", b"second", &[7; 300]]);
        let (found, damaged) = recover_one("torn-payload-whole-copy", &whole);
        assert_eq!(keys(&found), [0, 1, 2]);
        assert_eq!(damaged, (0, 0));
    }

    #[test]
    fn a_flipped_byte_amid_whole_records_skips_that_record_only() {
        let payloads: [&[u8]; 4] = [b"one", b"two", b"three", b"four"];
        let (bytes, starts) = killed_segment("flipped", &payloads);
        let mut in_payload = bytes.clone();
        in_payload[starts[1] + 11] ^= 0x20;
        let (found, damaged) = recover_one("flipped-payload", &in_payload);
        assert_eq!(keys(&found), [0, 2, 3], "the records after it are read");
        assert_eq!(found[1].payload, b"three");
        assert_eq!(damaged, (0, 1), "one corrupt record");
        let mut in_key = bytes.clone();
        in_key[starts[2] + 8] ^= 1;
        let (found, damaged) = recover_one("flipped-key", &in_key);
        assert_eq!(keys(&found), [0, 1, 3]);
        assert_eq!(damaged, (0, 1));
        // A damaged length: where the next record starts is lost with it.
        let mut in_length = bytes;
        in_length[starts[1]] ^= 0x01;
        let (found, damaged) = recover_one("flipped-length", &in_length);
        assert_eq!(
            keys(&found),
            [0],
            "the segment ends at a length it cannot trust"
        );
        assert!(damaged.0 >= 1, "counted torn: {damaged:?}");
        assert_eq!(damaged.1, 0, "nothing whole after it, so nothing corrupt");
    }

    /// A record as the first format wrote it: no checksum.
    fn plain_record(key: u16, payload: &[u8]) -> Vec<u8> {
        let mut record = (payload.len() as u32 + 2).to_le_bytes().to_vec();
        record.extend_from_slice(&key.to_be_bytes());
        record.extend_from_slice(payload);
        record
    }

    #[test]
    fn a_segment_of_the_first_format_is_replayed_after_an_upgrade() {
        let dir = temp_dir("first-format");
        std::fs::create_dir_all(&dir).unwrap();
        // One killed (preallocated, zeros after its records), one sealed (cut), and one
        // whose last record a kill cut short.
        let mut killed = [plain_record(1, b"a"), plain_record(2, b"bb")].concat();
        killed.resize(64 << 10, 0);
        std::fs::write(dir.join(segment_name(3, 0)), &killed).unwrap();
        let sealed = [plain_record(3, b"ccc"), plain_record(4, &[4; 500])].concat();
        std::fs::write(dir.join(segment_name(4, 0)), &sealed).unwrap();
        let mut cut = plain_record(5, b"e");
        cut.extend_from_slice(&plain_record(6, b"ffff")[..5]);
        std::fs::write(dir.join(segment_name(5, 0)), &cut).unwrap();
        let (mut log, recovered) = ClickLog::recover(&dir, u64::MAX).unwrap();
        let found = records(&recovered);
        assert_eq!(keys(&found), [1, 2, 3, 4, 5]);
        assert_eq!(found[3].payload, vec![4; 500]);
        assert_eq!(recovered.damaged(), (1, 0), "the cut record");
        // Written again in the checksummed format, as a start does.
        log.write_recovered(&found).unwrap();
        log.finish_recovery(&recovered).unwrap();
        drop(log);
        let (_, recovered) = ClickLog::recover(&dir, u64::MAX).unwrap();
        assert_eq!(records(&recovered), found);
        assert_eq!(recovered.damaged(), (0, 0));
        let segment = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .find(|e| e.path().extension().is_some_and(|x| x == "log"))
            .unwrap()
            .path();
        assert_eq!(&std::fs::read(segment).unwrap()[..4], b"TSCL");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_segment_of_an_unknown_format_fails_the_start() {
        let dir = temp_dir("unknown-format");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(segment_name(1, 0)), b"TSCL\x02\0\0\0").unwrap();
        let error = ClickLog::recover(&dir, u64::MAX).err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("unknown format"), "{error}");
    }

    /// The checksum's cost per record: the copy into the mapping with and without it,
    /// side by side, rounds alternating. A measurement, not a check: run it with
    /// optimisation (BENCHMARKS.md, "Click log checksum").
    #[test]
    #[ignore = "a benchmark: run on its own, optimised"]
    fn checksum_cost_per_record() {
        /// CPU time of this thread, ns: unlike the wall clock, it does not count the
        /// time other processes of a busy machine hold the core.
        #[allow(unsafe_code)]
        fn cpu_ns() -> f64 {
            let mut now = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: writes the timespec it is given, nothing else.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
            now.tv_sec as f64 * 1e9 + now.tv_nsec as f64
        }
        let rounds: usize = std::env::var("ROUNDS").map_or(7, |v| v.parse().unwrap());
        let per_round: usize = std::env::var("RECORDS").map_or(2_000_000, |v| v.parse().unwrap());
        let dir = temp_dir("bench");
        let (mut log, _) = ClickLog::recover(&dir, u64::MAX).unwrap();
        for size in [120usize, 400, 1000] {
            let payload: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let mut run = |checksum: bool| {
                log.open.len = 0;
                let started = cpu_ns();
                for i in 0..per_round {
                    if !log.open.fits(payload.len()) {
                        log.open.len = 0;
                    }
                    if checksum {
                        log.open.put(i as u16, std::hint::black_box(&payload));
                        log.open.len += (RECORD_HEADER + payload.len()) as u64;
                    } else {
                        log.open.put_plain(i as u16, std::hint::black_box(&payload));
                        log.open.len += (6 + payload.len()) as u64;
                    }
                }
                (cpu_ns() - started) / per_round as f64
            };
            let (mut with, mut without) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                without.push(run(false));
                with.push(run(true));
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (with, without) = (median(&mut with), median(&mut without));
            println!(
                "{size}-byte payload, CPU per record: {without:.1} ns without the checksum, {with:.1} ns with it: {:.2}x, +{:.1} ns",
                with / without,
                with - without
            );
        }
        drop(log);
        std::fs::remove_dir_all(&dir).unwrap();
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

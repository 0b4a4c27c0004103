//! The spill file: where click events go while Kafka cannot take them, so a broker
//! outage never loses a redirected click.
//!
//! An append-only file of records `[u32 length, little-endian][u16 routing key][payload]`
//! and a position file beside it (`<path>.pos`) naming how far replay has reached. The
//! publisher appends while the broker is unreachable or its queue is full; a replay
//! thread sends records in file order once the broker is back, and moves the position
//! only after the broker acknowledged them. When everything is replayed the file is
//! emptied. A trailing record cut short by a crash is ignored.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Records larger than this are not click events: the file is damaged from there on.
const MAX_RECORD: u32 = 1 << 20;

pub struct SpillFile {
    path: PathBuf,
    pos_path: PathBuf,
    file: File,
    /// Bytes in the file.
    len: u64,
    /// Bytes already replayed.
    pos: u64,
}

/// One spilled click event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub routing_key: u16,
    pub payload: Vec<u8>,
}

impl SpillFile {
    /// Opens (or creates) the spill file, locked against a second click-ingest using it.
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
        Ok(Self {
            path: path.to_path_buf(),
            pos_path,
            file,
            len,
            pos,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written but not yet replayed.
    pub fn pending_bytes(&self) -> u64 {
        self.len - self.pos
    }

    /// Appends one event (one `write` call, so a crash leaves at most one partial record).
    pub fn append(&mut self, routing_key: u16, payload: &[u8]) -> io::Result<()> {
        let mut record = Vec::with_capacity(payload.len() + 6);
        record.extend_from_slice(&(payload.len() as u32 + 2).to_le_bytes());
        record.extend_from_slice(&routing_key.to_be_bytes());
        record.extend_from_slice(payload);
        self.file.write_all(&record)?;
        self.len += record.len() as u64;
        Ok(())
    }

    /// Reads up to `max` records from the replay position; returns them, the file offset
    /// just past the last one, and whether reading stopped at an unreadable record.
    pub fn read_batch(&self, max: usize) -> io::Result<(Vec<Record>, u64, bool)> {
        let mut reader = BufReader::new(File::open(&self.path)?);
        reader.seek(SeekFrom::Start(self.pos))?;
        let mut records = Vec::new();
        let mut end = self.pos;
        while records.len() < max && end < self.len {
            let mut header = [0u8; 4];
            if reader.read_exact(&mut header).is_err() {
                break;
            }
            let size = u32::from_le_bytes(header);
            if !(2..=MAX_RECORD).contains(&size) || end + 4 + u64::from(size) > self.len {
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
        let torn = records.len() < max && end < self.len;
        Ok((records, end, torn))
    }

    /// Notes that everything before `offset` reached the broker. When nothing is left,
    /// empties the file; an unreadable tail (a record cut short) is dropped then too.
    pub fn advance(&mut self, offset: u64, tail_is_garbage: bool) -> io::Result<()> {
        self.pos = offset.min(self.len);
        if self.pos == self.len || tail_is_garbage {
            if self.pos != self.len {
                tracing::warn!(
                    bytes = self.len - self.pos,
                    "dropping an unreadable spill file tail"
                );
            }
            self.file.set_len(0)?;
            self.len = 0;
            self.pos = 0;
        }
        let tmp = PathBuf::from(format!("{}.tmp", self.pos_path.display()));
        std::fs::write(&tmp, self.pos.to_string())?;
        std::fs::rename(&tmp, &self.pos_path)
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
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
        spill.advance(end, false).unwrap();
        drop(spill);
        // After a restart, replay resumes at the stored position.
        let mut spill = SpillFile::open(&path).unwrap();
        let (batch, end, _) = spill.read_batch(100).unwrap();
        let keys: Vec<u16> = batch.iter().map(|r| r.routing_key).collect();
        assert_eq!(keys, (4..10).collect::<Vec<_>>());
        spill.advance(end, false).unwrap();
        assert_eq!(spill.pending_bytes(), 0);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn ignores_a_torn_tail_and_refuses_a_second_user() {
        let path = temp_path("torn");
        let mut spill = SpillFile::open(&path).unwrap();
        spill.append(1, b"whole").unwrap();
        assert!(SpillFile::open(&path).is_err());
        drop(spill);
        let mut raw = OpenOptions::new().append(true).open(&path).unwrap();
        raw.write_all(&[50, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(raw);
        let mut spill = SpillFile::open(&path).unwrap();
        let (batch, end, torn) = spill.read_batch(10).unwrap();
        assert!(torn);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].payload, b"whole");
        spill.advance(end, true).unwrap();
        assert_eq!(spill.pending_bytes(), 0);
    }
}

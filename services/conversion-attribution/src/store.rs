//! The persistent state of one partition: an append-only log file of clicks and
//! conversion versions, loaded into memory when the partition is assigned.
//!
//! Every record is `[len u32][crc32 u32][kind u8][body]`; a torn or corrupt tail (a crash in
//! the middle of a write) is cut off at load. The file never runs ahead of Kafka: clicks
//! are facts that may be applied twice, and conversion versions are appended only after
//! the transaction that published them committed. What the file lacks is read back from
//! the `clicks` and `conversions` partitions from the positions it records.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use prost::Message as _;
use traffsure_events::{Conversion, Postback};

use crate::attribute::ClickInfo;

const KIND_CLICK: u8 = 1;
const KIND_CONVERSION: u8 = 2;
const KIND_CONVERSIONS_CHECKPOINT: u8 = 3;
const HEADER: usize = 9;
/// A visitor's session: a visitor-based postback converts the latest click of the visitor in
/// the flow if that click is at most this old; every new click extends it.
pub const VISITOR_SESSION_MS: i64 = 4 * 24 * 60 * 60 * 1000;

/// The latest version of a conversion and the postbacks that made its versions.
#[derive(Debug, Clone)]
pub struct ConversionState {
    pub current: Conversion,
    /// Postbacks already applied, so a postback read again after a restart changes nothing.
    pub postback_ids: Vec<String>,
}

/// Clicks, visitors and conversions of one partition, in memory and in its log file.
pub struct PartitionState {
    pub clicks: HashMap<String, ClickInfo>,
    /// (visitor id, flow id) → (time, click hash) of the visitor's latest click in that flow.
    pub visitors: HashMap<(String, u32), (i64, String)>,
    pub conversions: HashMap<String, ConversionState>,
    /// The next `clicks` offset the file lacks.
    pub clicks_next: i64,
    /// The next `conversions` offset the file lacks.
    pub conversions_next: i64,
    file: BufWriter<File>,
    path: PathBuf,
}

impl PartitionState {
    /// Opens (or creates) the log of `partition` under `dir` and loads it.
    pub fn open(dir: &Path, partition: i32) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("partition-{partition}.log"));
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut state = Self {
            clicks: HashMap::new(),
            visitors: HashMap::new(),
            conversions: HashMap::new(),
            clicks_next: 0,
            conversions_next: 0,
            file: BufWriter::new(file.try_clone()?),
            path,
        };
        let valid = state.replay(&bytes);
        if valid < bytes.len() {
            tracing::warn!(
                partition,
                cut = bytes.len() - valid,
                "cutting a torn tail off the state log"
            );
            file.set_len(valid as u64)?;
            file.seek(SeekFrom::End(0))?;
        }
        Ok(state)
    }

    /// Applies every whole record of `bytes`; returns the length of the valid prefix.
    fn replay(&mut self, bytes: &[u8]) -> usize {
        let mut at = 0;
        while bytes.len() - at >= HEADER {
            let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
                as usize;
            let crc =
                u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
            let end = at + HEADER + len;
            if end > bytes.len() || crc32fast::hash(&bytes[at + 8..end]) != crc {
                break;
            }
            let body = &bytes[at + HEADER..end];
            match bytes[at + 8] {
                KIND_CLICK if body.len() >= 8 => {
                    let offset = i64::from_le_bytes(body[..8].try_into().unwrap_or_default());
                    if let Ok(click) = ClickInfo::decode(&body[8..]) {
                        self.clicks_next = self.clicks_next.max(offset + 1);
                        self.insert_click(click);
                    }
                }
                KIND_CONVERSION => {
                    if let Ok(conversion) = Conversion::decode(body) {
                        self.insert_conversion(conversion);
                    }
                }
                KIND_CONVERSIONS_CHECKPOINT if body.len() == 8 => {
                    let next = i64::from_le_bytes(body.try_into().unwrap_or_default());
                    self.conversions_next = self.conversions_next.max(next);
                }
                _ => break,
            }
            at = end;
        }
        at
    }

    fn append(&mut self, kind: u8, body: &[u8]) -> std::io::Result<()> {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&[kind]);
        hasher.update(body);
        self.file.write_all(&(body.len() as u32).to_le_bytes())?;
        self.file.write_all(&hasher.finalize().to_le_bytes())?;
        self.file.write_all(&[kind])?;
        self.file.write_all(body)
    }

    fn insert_click(&mut self, click: ClickInfo) {
        if !click.visitor_id.is_empty() {
            let key = (click.visitor_id.clone(), click.flow_id);
            let newer = self
                .visitors
                .get(&key)
                .is_none_or(|(ts, _)| *ts <= click.ts_ms);
            if newer {
                self.visitors
                    .insert(key, (click.ts_ms, click.click_hash.clone()));
            }
        }
        self.clicks.insert(click.click_hash.clone(), click);
    }

    /// Adds the click read at `offset`, unless the state already has it.
    pub fn add_click(&mut self, offset: i64, click: ClickInfo) -> std::io::Result<bool> {
        if offset < self.clicks_next {
            return Ok(false);
        }
        let mut body = Vec::with_capacity(8 + click.encoded_len());
        body.extend_from_slice(&offset.to_le_bytes());
        click.encode(&mut body)?;
        self.append(KIND_CLICK, &body)?;
        self.clicks_next = offset + 1;
        self.insert_click(click);
        Ok(true)
    }

    /// Keeps `conversion` if it is newer than what the state holds, and remembers its postback.
    pub fn insert_conversion(&mut self, conversion: Conversion) {
        match self.conversions.get_mut(&conversion.conversion_id) {
            Some(state) => {
                if !state.postback_ids.contains(&conversion.postback_id) {
                    state.postback_ids.push(conversion.postback_id.clone());
                }
                if conversion.version > state.current.version {
                    state.current = conversion;
                }
            }
            None => {
                self.conversions.insert(
                    conversion.conversion_id.clone(),
                    ConversionState {
                        postback_ids: vec![conversion.postback_id.clone()],
                        current: conversion,
                    },
                );
            }
        }
    }

    /// Writes a conversion version that is committed in Kafka.
    pub fn record_conversion(&mut self, conversion: &Conversion) -> std::io::Result<()> {
        self.append(KIND_CONVERSION, &conversion.encode_to_vec())
    }

    /// Notes that every conversion before `next` in the partition is in the file.
    pub fn record_conversions_checkpoint(&mut self, next: i64) -> std::io::Result<()> {
        if next <= self.conversions_next {
            return Ok(());
        }
        self.conversions_next = next;
        self.append(KIND_CONVERSIONS_CHECKPOINT, &next.to_le_bytes())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }

    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// The click a postback names, by click hash or by visitor and flow.
    pub fn find_click(&self, postback: &Postback) -> Option<&ClickInfo> {
        if !postback.click_hash.is_empty() {
            return self.clicks.get(&postback.click_hash);
        }
        let (ts_ms, hash) = self
            .visitors
            .get(&(postback.visitor_id.clone(), postback.flow_id))?;
        if postback.received_at_ms - ts_ms > VISITOR_SESSION_MS {
            return None;
        }
        self.clicks.get(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn click(hash: &str, visitor: &str, ts_ms: i64) -> ClickInfo {
        ClickInfo {
            click_hash: hash.into(),
            flow_id: 7,
            ts_ms,
            visitor_id: visitor.into(),
            country: "FR".into(),
            ..ClickInfo::default()
        }
    }

    fn conversion(id: &str, version: u32, postback: &str) -> Conversion {
        Conversion {
            conversion_id: id.into(),
            version,
            postback_id: postback.into(),
            revenue_micros: i64::from(version) * 1_000_000,
            ..Conversion::default()
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "attribution-store-{name}-{}-{}",
            std::process::id(),
            traffsure_core::now_ms()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn reloads_clicks_visitors_conversions_and_checkpoints() -> std::io::Result<()> {
        let dir = temp_dir("reload");
        {
            let mut state = PartitionState::open(&dir, 2)?;
            assert!(state.add_click(0, click("a", "v1", 10))?);
            assert!(state.add_click(1, click("b", "v1", 20))?);
            assert!(!state.add_click(1, click("b", "v1", 20))?, "seen offset");
            let v1 = conversion("x", 1, "p1");
            let v2 = conversion("x", 2, "p2");
            for c in [&v1, &v2] {
                state.record_conversion(c)?;
                state.insert_conversion(c.clone());
            }
            state.record_conversions_checkpoint(5)?;
            state.flush()?;
        }
        let state = PartitionState::open(&dir, 2)?;
        assert_eq!((state.clicks_next, state.conversions_next), (2, 5));
        assert_eq!(state.clicks["a"].country, "FR");
        assert_eq!(state.visitors[&("v1".to_string(), 7)].1, "b");
        let x = &state.conversions["x"];
        assert_eq!((x.current.version, x.postback_ids.len()), (2, 2));
        std::fs::remove_dir_all(&dir)
    }

    #[test]
    fn visitor_postbacks_convert_the_latest_click_within_the_session() -> std::io::Result<()> {
        let dir = temp_dir("visitor");
        let mut state = PartitionState::open(&dir, 1)?;
        state.add_click(0, click("old", "v", 1_000))?;
        state.add_click(1, click("new", "v", 2_000))?;
        let postback = |at: i64| Postback {
            visitor_id: "v".into(),
            flow_id: 7,
            received_at_ms: at,
            ..Postback::default()
        };
        let found = |at| {
            state
                .find_click(&postback(at))
                .map(|c| c.click_hash.clone())
        };
        assert_eq!(found(3_000).as_deref(), Some("new"));
        assert_eq!(found(2_000 + VISITOR_SESSION_MS).as_deref(), Some("new"));
        assert_eq!(found(2_001 + VISITOR_SESSION_MS), None, "session over");
        let other_flow = Postback {
            flow_id: 8,
            ..postback(3_000)
        };
        assert!(state.find_click(&other_flow).is_none());
        std::fs::remove_dir_all(&dir)
    }

    #[test]
    fn cuts_a_torn_tail_and_keeps_appending() -> std::io::Result<()> {
        let dir = temp_dir("torn");
        {
            let mut state = PartitionState::open(&dir, 0)?;
            state.add_click(0, click("a", "", 1))?;
            state.add_click(1, click("b", "", 2))?;
            state.flush()?;
        }
        let path = dir.join("partition-0.log");
        let len = std::fs::metadata(&path)?.len();
        OpenOptions::new()
            .write(true)
            .open(&path)?
            .set_len(len - 3)?;
        {
            let mut state = PartitionState::open(&dir, 0)?;
            assert_eq!(state.clicks.len(), 1, "the torn click is dropped");
            assert_eq!(state.clicks_next, 1);
            state.add_click(1, click("b", "", 2))?;
            state.flush()?;
        }
        let state = PartitionState::open(&dir, 0)?;
        assert_eq!((state.clicks.len(), state.clicks_next), (2, 2));
        std::fs::remove_dir_all(&dir)
    }
}

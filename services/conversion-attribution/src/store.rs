//! The persistent state of one partition: an append-only log file of clicks and
//! conversion versions, loaded into memory when the partition is assigned, trimmed to the
//! attribution window and compacted when dead records dominate.
//!
//! Every record is `[len u32][crc32 u32][kind u8][body]`; a torn or corrupt tail (a crash in
//! the middle of a write) is cut off at load. The file never runs ahead of Kafka: clicks
//! are facts that may be applied twice, and conversion versions are appended only after
//! the transaction that published them committed. What the file lacks is read back from
//! the `clicks` and `conversions` partitions from the positions it records.
//!
//! A record of the `clicks` topic holds one click or a batch of them, all at one offset,
//! and the file holds one click record per click. A crash may leave only some of a
//! record's clicks in the file, so a click at offset X proves only the offsets before X
//! complete; a clicks checkpoint proves every offset before its own, and `flush` writes
//! one whenever the position moved. A record read again adds its clicks again, which
//! changes nothing.
//!
//! In memory a click is a fixed-size record keyed by a 128-bit digest of its click hash,
//! with its low-cardinality dimensions (country, source, device, OS, browser) interned per
//! partition, its visitor details held once per distinct set (`crate::visitor::Profiles`)
//! and its sub IDs packed in one allocation. What the retention rule decides
//! (how long a flow's clicks live) is left to the caller, which knows the flows.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message as _;
use sha2::{Digest, Sha256};
use traffsure_events::{Click, Conversion, Postback};

use crate::attribute::ClickInfo;
use crate::visitor::Profiles;

const KIND_CLICK: u8 = 1;
const KIND_CONVERSION: u8 = 2;
const KIND_CONVERSIONS_CHECKPOINT: u8 = 3;
const KIND_CLICKS_CHECKPOINT: u8 = 4;
/// A click written by a compaction, with the visitor whose latest click in the flow it is.
const KIND_VISITOR_CLICK: u8 = 5;
const KIND_CONVERSION_STATE: u8 = 6;
const HEADER: usize = 9;
/// A visitor's session: a visitor-based postback converts the latest click of the visitor in
/// the flow if that click is at most this old; every new click extends it.
pub const VISITOR_SESSION_MS: i64 = 4 * 24 * 60 * 60 * 1000;

/// A stable 128-bit digest of a click hash or of a visitor in a flow: the in-memory key.
pub type Key = u128;

pub fn click_key(click_hash: &str) -> Key {
    digest(&[click_hash.as_bytes()])
}

fn visitor_key(visitor_id: &str, flow_id: u32) -> Key {
    digest(&[visitor_id.as_bytes(), &[0], &flow_id.to_le_bytes()])
}

/// The key of a visitor's latest visit of one offer in a flow; offer 0 = of any offer.
/// Kept beside `visitor_key` in `visitors` (a digest of other bytes, so never the same).
fn visitor_offer_key(visitor_id: &str, flow_id: u32, offer_id: u32) -> Key {
    digest(&[
        visitor_id.as_bytes(),
        &[0],
        &flow_id.to_le_bytes(),
        &[1],
        &offer_id.to_le_bytes(),
    ])
}

fn digest(parts: &[&[u8]]) -> Key {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    let bytes: [u8; 32] = hasher.finalize().into();
    let mut key = [0u8; 16];
    key.copy_from_slice(&bytes[..16]);
    u128::from_le_bytes(key)
}

/// Keys are digests already: their low bits are a hash.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, key: u128) {
        self.0 = key as u64;
    }
}

pub type KeyMap<V> = HashMap<Key, V, BuildHasherDefault<KeyHasher>>;

/// Dimension strings shared by every click of the partition that has them.
#[derive(Default)]
pub struct Interner {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl Interner {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |n| n)
    }
}

/// A click as the state holds it in memory: 56 bytes and one allocation.
#[derive(Debug, Clone)]
pub struct StoredClick {
    /// Click hash, sub ID, external id, the funnel's object ids (`Objects`), the
    /// impression id, then
    /// sub1…subN, each as a varint length and its bytes.
    texts: Box<[u8]>,
    pub ts_ms: i64,
    pub flow_id: u32,
    /// A routing key is 16 bits (the click hash's); kept so, for the visitor's room.
    pub routing_key: u16,
    /// Interned country, source, device, OS, browser.
    dims: [u32; 5],
    /// The click's visitor details in `PartitionState::profiles`; 0 for none.
    visitor: u32,
    /// Set while a compaction has written the click (it fits in the padding).
    written: bool,
}

/// The object ids of a click (traffic source, lander, offer, network) as text that is
/// empty for a click without them, as most are: `ts.lander.offer.network`.
struct Objects;

impl Objects {
    fn text(click: &ClickInfo) -> String {
        let ids = [
            click.traffic_source_id,
            click.lander_id,
            click.offer_id,
            click.network_id,
        ];
        if ids == [0; 4] {
            return String::new();
        }
        ids.map(|id| id.to_string()).join(".")
    }

    fn read(text: &str, click: &mut ClickInfo) {
        let mut ids = text.split('.').map(|id| id.parse().unwrap_or(0));
        let mut next = || ids.next().unwrap_or(0);
        click.traffic_source_id = next();
        click.lander_id = next();
        click.offer_id = next();
        click.network_id = next();
    }
}

fn pack_texts(click: &ClickInfo) -> Box<[u8]> {
    let objects = Objects::text(click);
    let values = [
        click.click_hash.as_str(),
        &click.sub_id,
        &click.external_id,
        &objects,
        &click.impression_id,
    ]
    .into_iter()
    .chain(click.subs.iter().map(String::as_str));
    let mut packed = Vec::with_capacity(values.clone().map(|v| v.len() + 1).sum());
    for value in values {
        prost::encoding::encode_varint(value.len() as u64, &mut packed);
        packed.extend_from_slice(value.as_bytes());
    }
    packed.into_boxed_slice()
}

/// The packed texts, in order.
fn unpack_texts(mut packed: &[u8]) -> impl Iterator<Item = &str> {
    std::iter::from_fn(move || {
        if packed.is_empty() {
            return None;
        }
        let len = prost::encoding::decode_varint(&mut packed).ok()? as usize;
        let len = len.min(packed.len());
        let (value, rest) = packed.split_at(len);
        packed = rest;
        // Packed from a str.
        Some(std::str::from_utf8(value).unwrap_or_default())
    })
}

/// The latest version of a conversion and the postbacks that made its versions.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConversionState {
    #[prost(message, required, tag = "1")]
    pub current: Conversion,
    /// Postbacks already applied, so a postback read again after a restart changes nothing.
    #[prost(string, repeated, tag = "2")]
    pub postback_ids: Vec<String>,
}

/// How much a trim removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    pub clicks: usize,
    pub visitors: usize,
    pub conversions: usize,
}

/// Clicks, visitors and conversions of one partition, in memory and in its log file.
pub struct PartitionState {
    pub clicks: KeyMap<StoredClick>,
    /// Each visitor's latest click per flow (its key), by digest of (visitor id, flow id).
    pub visitors: KeyMap<Key>,
    pub conversions: HashMap<String, ConversionState>,
    /// Clicks (by key) that have a conversion in `conversions`: a new conversion of one is
    /// a follow-up (`Conversion.follow_up`).
    converted_clicks: KeyMap<()>,
    pub dims: Interner,
    pub profiles: Profiles,
    /// The next `clicks` offset the file lacks.
    pub clicks_next: i64,
    /// The next `conversions` offset the file lacks.
    pub conversions_next: i64,
    /// `clicks_next` as the file proves it (see the module header).
    clicks_next_written: i64,
    /// Click and conversion records in the file, live or dead (with checkpoints).
    records: usize,
    file_len: u64,
    compact_min_bytes: u64,
    file: BufWriter<File>,
    path: PathBuf,
}

impl PartitionState {
    /// Opens (or creates) the log of `partition` under `dir` and loads what `keep` (click
    /// time, flow id → still within retention) keeps.
    pub fn open(
        dir: &Path,
        partition: i32,
        keep: &mut impl FnMut(i64, u32) -> bool,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("partition-{partition}.log"));
        // A compaction cut short by a crash leaves its unfinished copy; the log is intact.
        let _ = std::fs::remove_file(compact_path(&path));
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut state = Self {
            clicks: KeyMap::default(),
            visitors: KeyMap::default(),
            conversions: HashMap::new(),
            converted_clicks: KeyMap::default(),
            dims: Interner::default(),
            profiles: Profiles::default(),
            clicks_next: 0,
            conversions_next: 0,
            clicks_next_written: 0,
            records: 0,
            file_len: 0,
            compact_min_bytes: u64::MAX,
            file: BufWriter::new(file.try_clone()?),
            path,
        };
        let valid = state.replay(&bytes, keep);
        if valid < bytes.len() {
            tracing::warn!(
                partition,
                cut = bytes.len() - valid,
                "cutting a torn tail off the state log"
            );
            file.set_len(valid as u64)?;
            file.seek(SeekFrom::End(0))?;
        }
        state.file_len = valid as u64;
        state.clicks_next_written = state.clicks_next;
        Ok(state)
    }

    /// Files of at least `bytes` may be compacted (never until this is called).
    pub fn set_compact_min_bytes(&mut self, bytes: u64) {
        self.compact_min_bytes = bytes;
    }

    /// Applies every whole record of `bytes`; returns the length of the valid prefix.
    fn replay(&mut self, bytes: &[u8], keep: &mut impl FnMut(i64, u32) -> bool) -> usize {
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
                    self.records += 1;
                    let offset = i64::from_le_bytes(body[..8].try_into().unwrap_or_default());
                    // The record's later clicks may be missing: only a checkpoint proves
                    // the record whole. (A compaction's clicks have offset -1.)
                    self.clicks_next = self.clicks_next.max(offset);
                    if let Ok(click) = ClickInfo::decode(&body[8..]) {
                        if keep(click.ts_ms, click.flow_id) {
                            self.insert_click(&click);
                        }
                    }
                }
                KIND_CONVERSION => {
                    self.records += 1;
                    if let Ok(conversion) = Conversion::decode(body) {
                        if keep(conversion.click_ts_ms, conversion.flow_id) {
                            self.insert_conversion(conversion);
                        }
                    }
                }
                KIND_CONVERSION_STATE => {
                    self.records += 1;
                    if let Ok(state) = ConversionState::decode(body) {
                        if keep(state.current.click_ts_ms, state.current.flow_id) {
                            self.converted_clicks
                                .insert(click_key(&state.current.click_hash), ());
                            self.conversions
                                .insert(state.current.conversion_id.clone(), state);
                        }
                    }
                }
                KIND_VISITOR_CLICK if body.len() >= 16 => {
                    self.records += 1;
                    let visitor = u128::from_le_bytes(body[..16].try_into().unwrap_or_default());
                    if let Ok(click) = ClickInfo::decode(&body[16..]) {
                        if keep(click.ts_ms, click.flow_id) {
                            self.insert_click(&click);
                            let key = click_key(&click.click_hash);
                            self.note_visitor(visitor, click.ts_ms, key);
                        }
                    }
                }
                KIND_CONVERSIONS_CHECKPOINT if body.len() == 8 => {
                    self.records += 1;
                    let next = i64::from_le_bytes(body.try_into().unwrap_or_default());
                    self.conversions_next = self.conversions_next.max(next);
                }
                KIND_CLICKS_CHECKPOINT if body.len() == 8 => {
                    self.records += 1;
                    let next = i64::from_le_bytes(body.try_into().unwrap_or_default());
                    self.clicks_next = self.clicks_next.max(next);
                }
                _ => break,
            }
            at = end;
        }
        // Visitors whose click was not kept lead nowhere.
        let clicks = &self.clicks;
        self.visitors.retain(|_, click| clicks.contains_key(click));
        at
    }

    fn append(&mut self, kind: u8, body: &[u8]) -> std::io::Result<()> {
        write_record(&mut self.file, kind, body)?;
        self.file_len += (HEADER + body.len()) as u64;
        self.records += 1;
        Ok(())
    }

    fn note_visitor(&mut self, key: Key, ts_ms: i64, click: Key) {
        let newer = self
            .visitors
            .get(&key)
            .and_then(|latest| self.clicks.get(latest))
            .is_none_or(|latest| latest.ts_ms <= ts_ms);
        if newer {
            self.visitors.insert(key, click);
        }
    }

    fn insert_click(&mut self, click: &ClickInfo) {
        let key = click_key(&click.click_hash);
        if !click.visitor_id.is_empty() {
            self.note_visitor(
                visitor_key(&click.visitor_id, click.flow_id),
                click.ts_ms,
                key,
            );
            // An offer visit is also the visitor's latest of that offer, and of any offer.
            if click.offer_id != 0 {
                for offer in [click.offer_id, 0] {
                    self.note_visitor(
                        visitor_offer_key(&click.visitor_id, click.flow_id, offer),
                        click.ts_ms,
                        key,
                    );
                }
            }
        }
        let dims = [
            self.dims.intern(&click.country),
            self.dims.intern(&click.source),
            self.dims.intern(&click.device),
            self.dims.intern(&click.os),
            self.dims.intern(&click.browser),
        ];
        self.clicks.insert(
            key,
            StoredClick {
                texts: pack_texts(click),
                ts_ms: click.ts_ms,
                flow_id: click.flow_id,
                routing_key: click.routing_key as u16,
                dims,
                visitor: self.profiles.intern(click.visitor.as_ref()),
                written: false,
            },
        );
    }

    /// A click event as the state keeps it; a lander click-through completed from its
    /// visit (`ClickInfo::continue_visit`) when the state has the visit, as it does within
    /// retention: both share a routing key, hence this partition.
    pub fn click_of(&self, click: &Click) -> ClickInfo {
        let mut info = ClickInfo::from(click);
        let parent = &click.parent_click_hash;
        if !parent.is_empty() {
            if let Some(visit) = self.clicks.get(&click_key(parent)) {
                info.continue_visit(&self.click_info(visit));
            }
        }
        info
    }

    /// The click with its dimensions, as attribution reads it (no visitor id).
    pub fn click_info(&self, click: &StoredClick) -> ClickInfo {
        info_of(&self.dims, &self.profiles, click)
    }

    /// Adds the clicks of the record read at `offset` (one click, or a batch's in order),
    /// unless the state already has that record: they are taken together, as the offset
    /// is theirs together. `complete` gives each click as the state keeps it and whether
    /// retention keeps it (if not, only the offset is noted); it sees the clicks added
    /// before it, as a lander click-through may follow its visit in one record. Returns
    /// whether any click was added.
    pub fn add_clicks<C>(
        &mut self,
        offset: i64,
        clicks: impl IntoIterator<Item = C>,
        mut complete: impl FnMut(&Self, C) -> (ClickInfo, bool),
    ) -> std::io::Result<bool> {
        if offset < self.clicks_next {
            return Ok(false);
        }
        self.clicks_next = offset + 1;
        let mut added = false;
        let mut body = Vec::new();
        for click in clicks {
            let (click, keep) = complete(self, click);
            if !keep {
                continue;
            }
            body.clear();
            body.extend_from_slice(&offset.to_le_bytes());
            click.encode(&mut body)?;
            self.append(KIND_CLICK, &body)?;
            self.insert_click(&click);
            added = true;
        }
        Ok(added)
    }

    /// Keeps `conversion` if it is newer than what the state holds, and remembers its postback.
    pub fn insert_conversion(&mut self, conversion: Conversion) {
        self.converted_clicks
            .insert(click_key(&conversion.click_hash), ());
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

    /// Whether the click of `click_hash` has a conversion already (any goal).
    pub fn click_converted(&self, click_hash: &str) -> bool {
        self.converted_clicks.contains_key(&click_key(click_hash))
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

    /// Writes what is buffered, with the clicks position when it moved: the clicks of the
    /// last record read prove only the offsets before it (see the module header).
    pub fn flush(&mut self) -> std::io::Result<()> {
        if self.clicks_next > self.clicks_next_written {
            let next = self.clicks_next;
            self.append(KIND_CLICKS_CHECKPOINT, &next.to_le_bytes())?;
            self.clicks_next_written = next;
        }
        self.file.flush()
    }

    pub fn file_bytes(&self) -> u64 {
        self.file_len
    }

    /// Drops from memory the clicks and conversions `keep` no longer keeps, visitors whose
    /// session ended at `now_ms` or whose click is gone. The file keeps them until the next
    /// compaction; a load applies the same rule.
    pub fn trim(&mut self, now_ms: i64, keep: &mut impl FnMut(i64, u32) -> bool) -> Trimmed {
        let before = (
            self.clicks.len(),
            self.visitors.len(),
            self.conversions.len(),
        );
        self.clicks.retain(|_, c| keep(c.ts_ms, c.flow_id));
        let clicks = &self.clicks;
        self.visitors.retain(|_, click| {
            clicks
                .get(click)
                .is_some_and(|c| now_ms - c.ts_ms <= VISITOR_SESSION_MS)
        });
        self.conversions
            .retain(|_, c| keep(c.current.click_ts_ms, c.current.flow_id));
        self.converted_clicks = self
            .conversions
            .values()
            .map(|c| (click_key(&c.current.click_hash), ()))
            .collect();
        // Give memory back after a large drop (a table keeps its peak size otherwise).
        if self.clicks.len() * 4 < self.clicks.capacity() {
            self.clicks.shrink_to_fit();
        }
        if self.visitors.len() * 4 < self.visitors.capacity() {
            self.visitors.shrink_to_fit();
        }
        if self.conversions.len() * 4 < self.conversions.capacity() {
            self.conversions.shrink_to_fit();
        }
        Trimmed {
            clicks: before.0 - self.clicks.len(),
            visitors: before.1 - self.visitors.len(),
            conversions: before.2 - self.conversions.len(),
        }
    }

    /// Whether dead records (trimmed clicks, older conversion versions, old checkpoints)
    /// make up more than half of a file worth rewriting.
    pub fn needs_compaction(&self) -> bool {
        self.file_len >= self.compact_min_bytes
            && self.records > 2 * (self.clicks.len() + self.conversions.len())
    }

    /// Rewrites the live state to a new file and puts it in place of the log: written and
    /// synced beside it, then renamed over it (atomic), then the directory synced. Call it
    /// only when the memory matches the file (nothing uncommitted): a crash at any point
    /// leaves either the old log or the new one, both consistent with Kafka.
    pub fn compact(&mut self) -> std::io::Result<()> {
        self.flush()?;
        let result = self.write_compacted();
        for click in self.clicks.values_mut() {
            click.written = false;
        }
        result
    }

    fn write_compacted(&mut self) -> std::io::Result<()> {
        let tmp = compact_path(&self.path);
        let mut out = BufWriter::new(File::create(&tmp)?);
        let mut len = 0u64;
        let mut records = 0usize;
        let mut put = |out: &mut BufWriter<File>, kind: u8, body: &[u8]| {
            len += (HEADER + body.len()) as u64;
            records += 1;
            write_record(out, kind, body)
        };
        put(
            &mut out,
            KIND_CLICKS_CHECKPOINT,
            &self.clicks_next.to_le_bytes(),
        )?;
        put(
            &mut out,
            KIND_CONVERSIONS_CHECKPOINT,
            &self.conversions_next.to_le_bytes(),
        )?;
        let mut body = Vec::new();
        // A visitor's latest click carries the visitor; every click has one visitor at most.
        for (visitor, key) in &self.visitors {
            let Some(click) = self.clicks.get_mut(key) else {
                continue;
            };
            click.written = true;
            body.clear();
            body.extend_from_slice(&visitor.to_le_bytes());
            info_of(&self.dims, &self.profiles, click).encode(&mut body)?;
            put(&mut out, KIND_VISITOR_CLICK, &body)?;
        }
        for click in self.clicks.values() {
            if click.written {
                continue;
            }
            body.clear();
            // Offsets only matter for the position, which the checkpoint above records.
            body.extend_from_slice(&(-1i64).to_le_bytes());
            info_of(&self.dims, &self.profiles, click).encode(&mut body)?;
            put(&mut out, KIND_CLICK, &body)?;
        }
        for state in self.conversions.values() {
            body.clear();
            state.encode(&mut body)?;
            put(&mut out, KIND_CONVERSION_STATE, &body)?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let file = OpenOptions::new().append(true).open(&self.path)?;
        self.file = BufWriter::new(file);
        self.file_len = len;
        self.records = records;
        self.clicks_next_written = self.clicks_next;
        Ok(())
    }

    /// The click a postback names: by click hash (a visit, or a lander click-through's own
    /// hit); by visitor and flow, the visitor's latest visit of the offer the postback
    /// names (`p`), else the latest offer visit, else (a flow without offers) the latest
    /// click, as FunnelFlux converts a visitor ID.
    pub fn find_click(&self, postback: &Postback) -> Option<&StoredClick> {
        if !postback.click_hash.is_empty() {
            return self.clicks.get(&click_key(&postback.click_hash));
        }
        let latest = |key: Key| self.visitors.get(&key).and_then(|c| self.clicks.get(c));
        let (visitor, flow) = (postback.visitor_id.as_str(), postback.flow_id);
        let click = if postback.offer_id != 0 {
            latest(visitor_offer_key(visitor, flow, postback.offer_id))
        } else {
            latest(visitor_offer_key(visitor, flow, 0))
                .or_else(|| latest(visitor_key(visitor, flow)))
        }?;
        (postback.received_at_ms - click.ts_ms <= VISITOR_SESSION_MS).then_some(click)
    }
}

fn info_of(dims: &Interner, profiles: &Profiles, click: &StoredClick) -> ClickInfo {
    let mut texts = unpack_texts(&click.texts);
    let click_hash = texts.next().unwrap_or_default().to_string();
    let sub_id = texts.next().unwrap_or_default().to_string();
    let external_id = texts.next().unwrap_or_default().to_string();
    let objects = texts.next().unwrap_or_default();
    let impression_id = texts.next().unwrap_or_default().to_string();
    let subs = texts.map(str::to_string).collect();
    let [country, source, device, os, browser] = click.dims.map(|d| dims.name(d).to_string());
    let mut info = ClickInfo {
        click_hash,
        flow_id: click.flow_id,
        ts_ms: click.ts_ms,
        routing_key: u32::from(click.routing_key),
        visitor_id: String::new(),
        country,
        source,
        sub_id,
        subs,
        device,
        os,
        browser,
        external_id,
        impression_id,
        visitor: profiles.get(click.visitor),
        ..ClickInfo::default()
    };
    Objects::read(objects, &mut info);
    info
}

fn compact_path(path: &Path) -> PathBuf {
    path.with_extension("log.compact")
}

fn write_record(out: &mut impl Write, kind: u8, body: &[u8]) -> std::io::Result<()> {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(body);
    out.write_all(&(body.len() as u32).to_le_bytes())?;
    out.write_all(&hasher.finalize().to_le_bytes())?;
    out.write_all(&[kind])?;
    out.write_all(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    impl PartitionState {
        /// A record of one click, as most are.
        fn add_click(
            &mut self,
            offset: i64,
            click: ClickInfo,
            keep: bool,
        ) -> std::io::Result<bool> {
            self.add_clicks(offset, [(click, keep)], |_, kept| kept)
        }
    }

    fn click(hash: &str, visitor: &str, ts_ms: i64) -> ClickInfo {
        ClickInfo {
            click_hash: hash.into(),
            flow_id: 7,
            ts_ms,
            visitor_id: visitor.into(),
            country: "FR".into(),
            sub_id: "s1".into(),
            subs: vec!["".into(), "b".into()],
            ..ClickInfo::default()
        }
    }

    fn conversion(id: &str, version: u32, postback: &str) -> Conversion {
        Conversion {
            conversion_id: id.into(),
            version,
            postback_id: postback.into(),
            revenue_micros: i64::from(version) * 1_000_000,
            click_ts_ms: 10,
            flow_id: 7,
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

    fn all(_: i64, _: u32) -> bool {
        true
    }

    fn hash_of(state: &PartitionState, click: Option<&StoredClick>) -> Option<String> {
        click.map(|c| state.click_info(c).click_hash)
    }

    #[test]
    fn reloads_clicks_visitors_conversions_and_checkpoints() -> std::io::Result<()> {
        let dir = temp_dir("reload");
        {
            let mut state = PartitionState::open(&dir, 2, &mut all)?;
            assert!(state.add_click(0, click("a", "v1", 10), true)?);
            assert!(state.add_click(1, click("b", "v1", 20), true)?);
            assert!(
                !state.add_click(1, click("b", "v1", 20), true)?,
                "seen offset"
            );
            let v1 = conversion("x", 1, "p1");
            let v2 = conversion("x", 2, "p2");
            for c in [&v1, &v2] {
                state.record_conversion(c)?;
                state.insert_conversion(c.clone());
            }
            state.record_conversions_checkpoint(5)?;
            state.flush()?;
        }
        let state = PartitionState::open(&dir, 2, &mut all)?;
        assert_eq!((state.clicks_next, state.conversions_next), (2, 5));
        let a = state.click_info(&state.clicks[&click_key("a")]);
        assert_eq!(
            (a.country.as_str(), a.sub_id.as_str(), a.subs.clone()),
            ("FR", "s1", vec![String::new(), "b".to_string()])
        );
        assert_eq!(state.visitors[&visitor_key("v1", 7)], click_key("b"));
        let x = &state.conversions["x"];
        assert_eq!((x.current.version, x.postback_ids.len()), (2, 2));
        std::fs::remove_dir_all(&dir)
    }

    #[test]
    fn funnel_ids_survive_memory_and_the_log() -> std::io::Result<()> {
        let dir = temp_dir("funnel");
        let hit = ClickInfo {
            traffic_source_id: 3,
            lander_id: 0,
            offer_id: 4_000_000_000,
            network_id: 12,
            external_id: "ext.1 é".into(),
            ..click("hit", "v", 10)
        };
        {
            let mut state = PartitionState::open(&dir, 3, &mut all)?;
            state.add_click(0, hit.clone(), true)?;
            state.add_click(1, click("plain", "v", 5), true)?;
            let info = state.click_info(&state.clicks[&click_key("hit")]);
            assert_eq!(
                info,
                ClickInfo {
                    visitor_id: String::new(),
                    ..hit.clone()
                }
            );
            state.flush()?;
        }
        let state = PartitionState::open(&dir, 3, &mut all)?;
        let info = state.click_info(&state.clicks[&click_key("hit")]);
        assert_eq!(
            (
                info.traffic_source_id,
                info.lander_id,
                info.offer_id,
                info.network_id
            ),
            (3, 0, 4_000_000_000, 12)
        );
        assert_eq!(
            (info.external_id.as_str(), info.subs.clone()),
            ("ext.1 é", hit.subs.clone())
        );
        let plain = state.click_info(&state.clicks[&click_key("plain")]);
        assert_eq!((plain.offer_id, plain.external_id.as_str()), (0, ""));
        std::fs::remove_dir_all(&dir)
    }

    #[test]
    fn knows_the_impression_and_which_clicks_converted() -> std::io::Result<()> {
        let dir = temp_dir("converted");
        let seen = ClickInfo {
            impression_id: "iABC".into(),
            ..click("seen", "v", 10)
        };
        {
            let mut state = PartitionState::open(&dir, 4, &mut all)?;
            state.add_click(0, seen.clone(), true)?;
            state.add_click(1, click("other", "v", 11), true)?;
            let info = state.click_info(&state.clicks[&click_key("seen")]);
            assert_eq!(
                (info.impression_id.as_str(), info.subs),
                ("iABC", seen.subs.clone())
            );
            assert!(!state.click_converted("seen"));
            let first = Conversion {
                click_hash: "seen".into(),
                ..conversion("x", 1, "p1")
            };
            state.insert_conversion(first.clone());
            state.record_conversion(&first)?;
            assert!(state.click_converted("seen"));
            assert!(!state.click_converted("other"));
            state.flush()?;
        }
        // Read back from the log, and kept by a trim that keeps the conversion.
        let mut state = PartitionState::open(&dir, 4, &mut all)?;
        assert!(state.click_converted("seen"));
        let info = state.click_info(&state.clicks[&click_key("seen")]);
        assert_eq!(info.impression_id, "iABC");
        state.trim(20, &mut all);
        assert!(state.click_converted("seen"));
        state.trim(20, &mut |_, _| false);
        assert!(!state.click_converted("seen"), "gone with its conversions");
        Ok(())
    }

    #[test]
    fn visitor_details_survive_memory_the_log_and_a_compaction() -> std::io::Result<()> {
        let dir = temp_dir("visitor-details");
        let details = crate::visitor::Visitor {
            browser_family: "Firefox".into(),
            browser_major: "128".into(),
            device_brand: "Apple".into(),
            asn: 16509,
            as_org: "AMAZON-02".into(),
            datacenter: true,
            ..crate::visitor::Visitor::default()
        };
        let with = ClickInfo {
            visitor: Some(details.clone()),
            ..click("with", "v", 10)
        };
        let twin = ClickInfo {
            visitor: Some(details.clone()),
            ..click("twin", "w", 11)
        };
        {
            let mut state = PartitionState::open(&dir, 4, &mut all)?;
            state.add_click(0, with, true)?;
            state.add_click(1, twin, true)?;
            // A click recorded before visitor details were kept.
            state.add_click(2, click("old", "v", 5), true)?;
            assert_eq!(state.profiles.intern(Some(&details)), 1, "held once");
            state.compact()?;
            state.flush()?;
        }
        let state = PartitionState::open(&dir, 4, &mut all)?;
        let with = state.click_info(&state.clicks[&click_key("with")]);
        assert_eq!(with.visitor.as_ref(), Some(&details));
        let old = state.click_info(&state.clicks[&click_key("old")]);
        assert_eq!(old.visitor, None);
        std::fs::remove_dir_all(&dir)
    }

    #[test]
    fn visitor_postbacks_convert_the_latest_click_within_the_session() -> std::io::Result<()> {
        let dir = temp_dir("visitor");
        let mut state = PartitionState::open(&dir, 1, &mut all)?;
        state.add_click(0, click("old", "v", 1_000), true)?;
        state.add_click(1, click("new", "v", 2_000), true)?;
        let postback = |at: i64| Postback {
            visitor_id: "v".into(),
            flow_id: 7,
            received_at_ms: at,
            ..Postback::default()
        };
        let found = |at| hash_of(&state, state.find_click(&postback(at)));
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
    fn visitor_postbacks_convert_the_named_or_the_latest_offer_visit() -> std::io::Result<()> {
        let dir = temp_dir("visitor-offer");
        let offer_visit = |hash: &str, offer_id: u32, ts_ms: i64| ClickInfo {
            offer_id,
            ..click(hash, "v", ts_ms)
        };
        {
            let mut state = PartitionState::open(&dir, 2, &mut all)?;
            state.add_click(0, offer_visit("lander", 0, 1_000), true)?;
            state.add_click(1, offer_visit("hit-a", 11, 2_000), true)?;
            state.add_click(2, offer_visit("hit-b", 12, 3_000), true)?;
            state.add_click(3, offer_visit("lander-again", 0, 4_000), true)?;
            state.add_click(4, offer_visit("hit-a-again", 11, 2_500), true)?;
            state.flush()?;
        }
        let postback = |offer_id: u32| Postback {
            visitor_id: "v".into(),
            flow_id: 7,
            offer_id,
            received_at_ms: 5_000,
            ..Postback::default()
        };
        for compacted in [false, true] {
            let mut state = PartitionState::open(&dir, 2, &mut all)?;
            let found = |offer_id| hash_of(&state, state.find_click(&postback(offer_id)));
            assert_eq!(found(11).as_deref(), Some("hit-a-again"), "{compacted}");
            assert_eq!(found(12).as_deref(), Some("hit-b"), "{compacted}");
            assert_eq!(found(0).as_deref(), Some("hit-b"), "latest offer visit");
            assert_eq!(found(13), None, "never visited");
            state.compact()?;
        }
        // A flow without offers converts the visitor's latest click.
        let mut state = PartitionState::open(&dir, 3, &mut all)?;
        state.add_click(0, click("plain", "w", 1_000), true)?;
        let plain = Postback {
            visitor_id: "w".into(),
            ..postback(0)
        };
        assert_eq!(
            hash_of(&state, state.find_click(&plain)).as_deref(),
            Some("plain")
        );
        std::fs::remove_dir_all(&dir)
    }

    #[test]
    fn cuts_a_torn_tail_and_keeps_appending() -> std::io::Result<()> {
        let dir = temp_dir("torn");
        {
            let mut state = PartitionState::open(&dir, 0, &mut all)?;
            state.add_click(0, click("a", "", 1), true)?;
            state.add_click(1, click("b", "", 2), true)?;
            state.flush()?;
        }
        let path = dir.join("partition-0.log");
        let len = std::fs::metadata(&path)?.len();
        // Into b, under the checkpoint `flush` wrote after it.
        OpenOptions::new()
            .write(true)
            .open(&path)?
            .set_len(len - CHECKPOINT_BYTES - 3)?;
        {
            let mut state = PartitionState::open(&dir, 0, &mut all)?;
            assert_eq!(state.clicks.len(), 1, "the torn click is dropped");
            // Without the checkpoint that followed it, a's record is not proven whole.
            assert_eq!(state.clicks_next, 0);
            assert!(state.add_click(0, click("a", "", 1), true)?, "read again");
            state.add_click(1, click("b", "", 2), true)?;
            state.flush()?;
        }
        let state = PartitionState::open(&dir, 0, &mut all)?;
        assert_eq!((state.clicks.len(), state.clicks_next), (2, 2));
        std::fs::remove_dir_all(&dir)
    }

    #[test]
    fn trims_to_retention_and_compacts_to_the_live_records() -> std::io::Result<()> {
        let dir = temp_dir("compact");
        // Clicks at 0..100 ms; retention keeps clicks from 60 ms on.
        let mut keep_recent = |ts: i64, _: u32| ts >= 60;
        {
            let mut state = PartitionState::open(&dir, 3, &mut all)?;
            state.set_compact_min_bytes(0);
            for n in 0..100i64 {
                let c = click(&format!("c{n}"), &format!("v{n}"), n);
                state.add_click(n, c, true)?;
            }
            assert!(!state.add_click(100, click("late-old", "", 5), false)?);
            let mut old = conversion("old", 1, "p-old");
            old.click_ts_ms = 10;
            let mut live = conversion("live", 1, "p1");
            live.click_ts_ms = 80;
            let mut live2 = live.clone();
            live2.version = 2;
            live2.postback_id = "p2".into();
            for c in [&old, &live, &live2] {
                state.record_conversion(c)?;
                state.insert_conversion(c.clone());
            }
            state.record_conversions_checkpoint(3)?;
            state.flush()?;
            assert!(!state.needs_compaction(), "nothing is dead yet");
            let trimmed = state.trim(100, &mut keep_recent);
            assert_eq!(
                trimmed,
                Trimmed {
                    clicks: 60,
                    visitors: 60,
                    conversions: 1
                }
            );
            assert!(state.needs_compaction());
            let before = state.file_bytes();
            state.compact()?;
            // 40 of 100 clicks and their visitors, 1 of 3 conversion versions.
            assert!(
                state.file_bytes() < before * 3 / 5,
                "{} of {before}",
                state.file_bytes()
            );
            assert_eq!(
                state.file_bytes(),
                std::fs::metadata(dir.join("partition-3.log"))?.len()
            );
            assert!(!state.needs_compaction());
            // Appends after a compaction land in the new file.
            state.add_click(101, click("after", "va", 99), true)?;
            state.flush()?;
        }
        let state = PartitionState::open(&dir, 3, &mut all)?;
        assert_eq!((state.clicks_next, state.conversions_next), (102, 3));
        assert_eq!(state.clicks.len(), 41);
        assert!(!state.clicks.contains_key(&click_key("c59")));
        let visitor = Postback {
            visitor_id: "v70".into(),
            flow_id: 7,
            received_at_ms: 100,
            ..Postback::default()
        };
        assert_eq!(
            hash_of(&state, state.find_click(&visitor)).as_deref(),
            Some("c70")
        );
        assert_eq!(state.conversions.len(), 1);
        let live = &state.conversions["live"];
        assert_eq!((live.current.version, live.postback_ids.len()), (2, 2));
        assert!(!dir.join("partition-3.log.compact").exists());
        std::fs::remove_dir_all(&dir)
    }

    /// A clicks checkpoint in the file.
    const CHECKPOINT_BYTES: u64 = HEADER as u64 + 8;

    /// The clicks of a record as they come from the topic, completed as the processor does.
    fn add_record(
        state: &mut PartitionState,
        offset: i64,
        clicks: &[Click],
    ) -> std::io::Result<bool> {
        state.add_clicks(offset, clicks, |state, click| (state.click_of(click), true))
    }

    fn event(hash: &str, visitor: &str, ts_ms: i64) -> Click {
        Click {
            click_hash: hash.into(),
            visitor_id: visitor.into(),
            flow_id: 7,
            ts_ms,
            country: "FR".into(),
            ..Click::default()
        }
    }

    #[test]
    fn a_record_of_three_clicks_keeps_all_three() -> std::io::Result<()> {
        let dir = temp_dir("batch");
        let batch = [
            event("a", "v", 10),
            event("b", "v", 20),
            event("c", "w", 30),
        ];
        {
            let mut state = PartitionState::open(&dir, 0, &mut all)?;
            assert!(add_record(&mut state, 4, &batch)?);
            assert_eq!((state.clicks.len(), state.clicks_next), (3, 5));
            assert!(!add_record(&mut state, 4, &batch)?, "seen offset");
            state.flush()?;
        }
        let state = PartitionState::open(&dir, 0, &mut all)?;
        assert_eq!((state.clicks.len(), state.clicks_next), (3, 5));
        for hash in ["a", "b", "c"] {
            assert!(state.clicks.contains_key(&click_key(hash)), "{hash}");
        }
        assert_eq!(state.visitors[&visitor_key("v", 7)], click_key("b"));
        std::fs::remove_dir_all(&dir)
    }

    #[test]
    fn a_click_through_completes_from_its_visit_in_the_same_record() -> std::io::Result<()> {
        let dir = temp_dir("batch-through");
        let visit = Click {
            source: "push".into(),
            sub_id: "s9".into(),
            lander_id: 5,
            ..event("visit", "v", 10)
        };
        let through = Click {
            parent_click_hash: "visit".into(),
            offer_id: 3,
            ..event("through", "v", 11)
        };
        let mut state = PartitionState::open(&dir, 0, &mut all)?;
        add_record(&mut state, 0, &[visit, through])?;
        let info = state.click_info(&state.clicks[&click_key("through")]);
        assert_eq!(
            (
                info.source.as_str(),
                info.sub_id.as_str(),
                info.lander_id,
                info.offer_id
            ),
            ("push", "s9", 5, 3)
        );
        std::fs::remove_dir_all(&dir)
    }

    #[test]
    fn a_record_cut_short_in_the_file_is_read_again() -> std::io::Result<()> {
        let dir = temp_dir("batch-cut");
        let batch = [
            event("a", "v", 10),
            event("b", "v", 20),
            event("c", "v", 30),
        ];
        let converted = Conversion {
            click_hash: "z".into(),
            ..conversion("x", 1, "p1")
        };
        {
            let mut state = PartitionState::open(&dir, 0, &mut all)?;
            add_record(&mut state, 0, &[event("z", "u", 5)])?;
            state.insert_conversion(converted.clone());
            state.record_conversion(&converted)?;
            state.flush()?;
            add_record(&mut state, 1, &batch)?;
            state.flush()?;
        }
        // A crash after a's and b's records reached the file: c's and the checkpoint
        // after it are missing.
        let c = state_click(&batch[2]);
        let path = dir.join("partition-0.log");
        let len = std::fs::metadata(&path)?.len();
        let c_bytes = (HEADER + 8 + c.encoded_len()) as u64;
        OpenOptions::new()
            .write(true)
            .open(&path)?
            .set_len(len - CHECKPOINT_BYTES - c_bytes)?;
        {
            let mut state = PartitionState::open(&dir, 0, &mut all)?;
            assert_eq!(state.clicks.len(), 3, "z, a and b");
            assert_eq!(state.clicks_next, 1, "the cut record is read again");
            assert_eq!(state.visitors[&visitor_key("v", 7)], click_key("b"));
            assert!(add_record(&mut state, 1, &batch)?);
            assert_eq!((state.clicks.len(), state.clicks_next), (4, 2));
            assert_eq!(state.visitors[&visitor_key("v", 7)], click_key("c"));
            assert_eq!(state.conversions.len(), 1);
            assert!(state.click_converted("z"));
            state.flush()?;
        }
        for compacted in [false, true] {
            let mut state = PartitionState::open(&dir, 0, &mut all)?;
            assert_eq!(
                (state.clicks.len(), state.clicks_next),
                (4, 2),
                "{compacted}"
            );
            for hash in ["z", "a", "b", "c"] {
                assert!(state.clicks.contains_key(&click_key(hash)), "{hash}");
            }
            assert_eq!(state.visitors[&visitor_key("v", 7)], click_key("c"));
            assert_eq!(state.conversions["x"].postback_ids, ["p1"]);
            state.compact()?;
        }
        std::fs::remove_dir_all(&dir)
    }

    /// A click as the state writes it to the file.
    fn state_click(click: &Click) -> ClickInfo {
        ClickInfo::from(click)
    }

    #[test]
    fn a_click_in_memory_is_small() {
        // Key and value in the map; the packed click hash and sub IDs are the only heap part.
        assert!(std::mem::size_of::<StoredClick>() <= 56);
        assert_eq!(std::mem::size_of::<Key>(), 16);
    }

    #[test]
    fn a_load_skips_what_retention_no_longer_keeps() -> std::io::Result<()> {
        let dir = temp_dir("load-trim");
        {
            let mut state = PartitionState::open(&dir, 0, &mut all)?;
            state.add_click(0, click("old", "v", 1), true)?;
            state.add_click(1, click("new", "w", 50), true)?;
            state.flush()?;
        }
        let state = PartitionState::open(&dir, 0, &mut |ts, _| ts >= 10)?;
        assert_eq!(
            (state.clicks.len(), state.visitors.len(), state.clicks_next),
            (1, 1, 2)
        );
        std::fs::remove_dir_all(&dir)
    }
}

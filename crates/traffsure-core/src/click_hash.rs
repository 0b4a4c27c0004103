//! Click hashes: signed, time-sortable, self-describing click IDs.
//!
//! A click hash is 25 bytes, written as 40 characters of lowercase base32hex
//! (`0-9a-v`), so its text sorts like its binary form, by time first:
//!
//! | bytes  | field                                              |
//! |--------|----------------------------------------------------|
//! | 0      | format version (high nibble) and key id (low)      |
//! | 1..7   | click time, milliseconds since the epoch (48 bits) |
//! | 7..11  | flow id                                            |
//! | 11..13 | routing key (chooses the Kafka partition)          |
//! | 13..17 | random bits                                        |
//! | 17..25 | HMAC-SHA256 over bytes 0..17, first 8 bytes        |
//!
//! The postback edge verifies a hash with no lookup: a mistyped or forged hash fails
//! the MAC. Keys are numbered 0–15; new hashes use the active key, and any configured
//! key verifies, so secrets can be rotated without breaking clicks in flight.

use std::collections::BTreeMap;

use data_encoding::{Encoding, Specification};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of a click hash in characters.
pub const CLICK_HASH_LEN: usize = 40;
const BYTES: usize = 25;
const SIGNED: usize = 17;
const VERSION: u8 = 1;

fn encoding() -> &'static Encoding {
    static ENCODING: std::sync::OnceLock<Encoding> = std::sync::OnceLock::new();
    ENCODING.get_or_init(|| {
        let mut spec = Specification::new();
        spec.symbols.push_str("0123456789abcdefghijklmnopqrstuv");
        spec.translate.from.push_str("ABCDEFGHIJKLMNOPQRSTUV");
        spec.translate.to.push_str("abcdefghijklmnopqrstuv");
        #[allow(clippy::expect_used)]
        spec.encoding().expect("valid base32hex specification")
    })
}

/// What a verified click hash says about its click.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClickHashInfo {
    pub ts_ms: i64,
    pub flow_id: u32,
    pub routing_key: u16,
    pub key_id: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClickHashError {
    #[error("click hash must be {CLICK_HASH_LEN} characters, got {0}")]
    Length(usize),
    #[error("click hash has characters outside 0-9 a-v")]
    Alphabet,
    #[error("click hash has unknown format version {0}")]
    Version(u8),
    #[error("click hash was signed with unknown key {0}")]
    UnknownKey(u8),
    #[error("click hash signature does not match")]
    Signature,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyConfigError {
    #[error(
        "no click hash keys configured (set click_hash.keys, e.g. \"1:a-long-random-secret\")"
    )]
    Empty,
    #[error("click hash key entry {0:?} is not of the form <id>:<secret>")]
    Entry(String),
    #[error("click hash key id {0:?} must be a number from 0 to 15")]
    Id(String),
    #[error("click hash key {0} is shorter than 16 bytes")]
    Short(u8),
    #[error("active click hash key {0} is not among the configured keys")]
    Active(u8),
}

/// The click time a click hash carries, read without checking its signature: for services
/// behind the edge that verified it (e.g. to tell an expired click from a missing one).
pub fn unverified_ts_ms(text: &str) -> Option<i64> {
    if text.len() != CLICK_HASH_LEN {
        return None;
    }
    let bytes = encoding().decode(text.as_bytes()).ok()?;
    if bytes.len() != BYTES || bytes[0] >> 4 != VERSION {
        return None;
    }
    let mut ts = [0u8; 8];
    ts[2..8].copy_from_slice(&bytes[1..7]);
    Some(u64::from_be_bytes(ts) as i64)
}

/// The secrets that sign and verify click hashes.
#[derive(Clone)]
pub struct ClickHashKeys {
    active: u8,
    keys: BTreeMap<u8, Hmac<Sha256>>,
}

impl std::fmt::Debug for ClickHashKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHashKeys")
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ClickHashKeys {
    /// Parses `"<id>:<secret>,<id>:<secret>"`; `active` names the key that signs new
    /// hashes (by default the highest id, so adding a key with a new id rotates to it).
    pub fn parse(spec: &str, active: impl Into<Option<u8>>) -> Result<Self, KeyConfigError> {
        let mut keys = BTreeMap::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, secret) = entry
                .split_once(':')
                .ok_or_else(|| KeyConfigError::Entry(entry.chars().take(4).collect()))?;
            let id: u8 = id
                .trim()
                .parse()
                .ok()
                .filter(|id| *id < 16)
                .ok_or_else(|| KeyConfigError::Id(id.to_string()))?;
            if secret.len() < 16 {
                return Err(KeyConfigError::Short(id));
            }
            #[allow(clippy::expect_used)]
            let mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                .expect("HMAC accepts keys of any length");
            keys.insert(id, mac);
        }
        let Some(&highest) = keys.keys().next_back() else {
            return Err(KeyConfigError::Empty);
        };
        let active = active.into().unwrap_or(highest);
        if !keys.contains_key(&active) {
            return Err(KeyConfigError::Active(active));
        }
        Ok(Self { active, keys })
    }

    /// Makes a click hash for a click at `ts_ms` in `flow_id`, with the given random bits.
    pub fn sign(&self, ts_ms: i64, flow_id: u32, routing_key: u16, random: [u8; 4]) -> String {
        let mut bytes = [0u8; BYTES];
        bytes[0] = (VERSION << 4) | self.active;
        let ts = (ts_ms.max(0) as u64) & 0xFFFF_FFFF_FFFF;
        bytes[1..7].copy_from_slice(&ts.to_be_bytes()[2..8]);
        bytes[7..11].copy_from_slice(&flow_id.to_be_bytes());
        bytes[11..13].copy_from_slice(&routing_key.to_be_bytes());
        bytes[13..17].copy_from_slice(&random);
        let tag = self.tag(self.active, &bytes[..SIGNED]);
        bytes[SIGNED..].copy_from_slice(&tag[..BYTES - SIGNED]);
        encoding().encode(&bytes)
    }

    /// Makes a click hash with fresh random bits.
    pub fn generate(&self, ts_ms: i64, flow_id: u32, routing_key: u16) -> String {
        self.sign(ts_ms, flow_id, routing_key, rand::random())
    }

    /// Checks a click hash and returns what it carries.
    pub fn verify(&self, text: &str) -> Result<ClickHashInfo, ClickHashError> {
        if text.len() != CLICK_HASH_LEN {
            return Err(ClickHashError::Length(text.chars().count()));
        }
        let bytes = encoding()
            .decode(text.as_bytes())
            .map_err(|_| ClickHashError::Alphabet)?;
        debug_assert_eq!(bytes.len(), BYTES);
        let version = bytes[0] >> 4;
        if version != VERSION {
            return Err(ClickHashError::Version(version));
        }
        let key_id = bytes[0] & 0x0F;
        let mut mac = self
            .keys
            .get(&key_id)
            .ok_or(ClickHashError::UnknownKey(key_id))?
            .clone();
        mac.update(&bytes[..SIGNED]);
        mac.verify_truncated_left(&bytes[SIGNED..])
            .map_err(|_| ClickHashError::Signature)?;
        let mut ts = [0u8; 8];
        ts[2..8].copy_from_slice(&bytes[1..7]);
        Ok(ClickHashInfo {
            ts_ms: u64::from_be_bytes(ts) as i64,
            flow_id: u32::from_be_bytes([bytes[7], bytes[8], bytes[9], bytes[10]]),
            routing_key: u16::from_be_bytes([bytes[11], bytes[12]]),
            key_id,
        })
    }

    /// An HMAC-SHA256 tag of `data` under the active key, for other values the edge
    /// signs with the same secrets (callers prefix `data` with their own label, so no
    /// tag stands for a click hash): the key id and the tag.
    pub fn tag_with_active(&self, data: &[u8]) -> (u8, [u8; 32]) {
        (self.active, self.tag(self.active, data))
    }

    /// Whether `tag` (possibly truncated, at least 16 bytes) is the tag of `data` under
    /// key `key_id`; compared in constant time.
    pub fn check_tag(&self, key_id: u8, data: &[u8], tag: &[u8]) -> bool {
        if tag.len() < 16 || tag.len() > 32 || !self.keys.contains_key(&key_id) {
            return false;
        }
        let expected = self.tag(key_id, data);
        expected[..tag.len()]
            .iter()
            .zip(tag)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }

    fn tag(&self, key_id: u8, data: &[u8]) -> [u8; 32] {
        let mut mac = self.keys[&key_id].clone();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn keys() -> ClickHashKeys {
        ClickHashKeys::parse("1:test-secret-number-one,2:test-secret-number-two", 1).unwrap()
    }

    #[test]
    fn the_click_time_reads_without_keys() {
        let hash = keys().sign(1_700_000_000_123, 9, 7, [1, 2, 3, 4]);
        assert_eq!(unverified_ts_ms(&hash), Some(1_700_000_000_123));
        assert_eq!(unverified_ts_ms("click-000000001"), None);
        assert_eq!(unverified_ts_ms(&"z".repeat(CLICK_HASH_LEN)), None);
    }

    /// The expected text was computed independently (Python's hmac and base32hex).
    #[test]
    fn known_vector() {
        let hash = keys().sign(1_700_000_000_000, 42, 0xBEEF, [1, 2, 3, 4]);
        assert_eq!(hash, "240onjv5d00000005aveu0820c2fjkjed7st62fo");
        let info = keys().verify(&hash).unwrap();
        assert_eq!(
            info,
            ClickHashInfo {
                ts_ms: 1_700_000_000_000,
                flow_id: 42,
                routing_key: 0xBEEF,
                key_id: 1
            }
        );
    }

    #[test]
    fn fixed_length_and_time_sortable() {
        let k = keys();
        let a = k.sign(1_700_000_000_000, 999, 1, [255; 4]);
        let b = k.sign(1_700_000_000_001, 1, 0, [0; 4]);
        assert_eq!(a.len(), CLICK_HASH_LEN);
        assert_eq!(b.len(), CLICK_HASH_LEN);
        assert!(a < b, "later clicks sort after earlier ones");
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'v').contains(&c)));
    }

    #[test]
    fn every_single_character_change_is_rejected() {
        let k = keys();
        let hash = k.generate(1_700_000_000_000, 7, 3);
        let alphabet = b"0123456789abcdefghijklmnopqrstuv";
        for i in 0..hash.len() {
            for &c in alphabet {
                let mut forged = hash.clone().into_bytes();
                if forged[i] == c {
                    continue;
                }
                forged[i] = c;
                let forged = String::from_utf8(forged).unwrap();
                assert!(
                    k.verify(&forged).is_err(),
                    "tampered hash {forged} verified"
                );
            }
        }
    }

    #[test]
    fn rotation_keeps_old_hashes_valid() {
        let old = ClickHashKeys::parse("1:test-secret-number-one", 1).unwrap();
        let hash = old.generate(1_700_000_000_000, 5, 9);
        let rotated =
            ClickHashKeys::parse("1:test-secret-number-one,2:test-secret-number-two", 2).unwrap();
        assert_eq!(rotated.verify(&hash).unwrap().key_id, 1);
        let fresh = rotated.generate(1_700_000_000_000, 5, 9);
        assert_eq!(rotated.verify(&fresh).unwrap().key_id, 2);
        assert_eq!(old.verify(&fresh), Err(ClickHashError::UnknownKey(2)));
    }

    #[test]
    fn wrong_secret_and_garbage_are_rejected() {
        let other = ClickHashKeys::parse("1:some-other-secret-value", 1).unwrap();
        let hash = keys().generate(1_700_000_000_000, 5, 9);
        assert_eq!(other.verify(&hash), Err(ClickHashError::Signature));
        assert_eq!(keys().verify("abc"), Err(ClickHashError::Length(3)));
        assert_eq!(
            keys().verify(&"z".repeat(40)),
            Err(ClickHashError::Alphabet)
        );
        assert_eq!(
            keys().verify(&"é".repeat(20)),
            Err(ClickHashError::Alphabet)
        );
        assert!(
            keys().verify(&hash.to_uppercase()).is_ok(),
            "case-insensitive"
        );
    }

    #[test]
    fn the_highest_key_signs_by_default() {
        let k = ClickHashKeys::parse("1:test-secret-number-one,2:test-secret-number-two", None)
            .unwrap();
        assert_eq!(k.verify(&k.generate(1, 1, 1)).unwrap().key_id, 2);
    }

    #[test]
    fn key_config_errors() {
        assert_eq!(
            ClickHashKeys::parse("", 1).unwrap_err(),
            KeyConfigError::Empty
        );
        assert_eq!(
            ClickHashKeys::parse("1:short", 1).unwrap_err(),
            KeyConfigError::Short(1)
        );
        assert!(matches!(
            ClickHashKeys::parse("16:aaaaaaaaaaaaaaaaaaaa", 16).unwrap_err(),
            KeyConfigError::Id(_)
        ));
        assert_eq!(
            ClickHashKeys::parse("1:aaaaaaaaaaaaaaaaaaaa", 2).unwrap_err(),
            KeyConfigError::Active(2)
        );
    }
}

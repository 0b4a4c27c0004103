//! Admin sessions that every replica accepts and a restart keeps: the session cookie is a
//! token signed with `session.signing_key` (HMAC-SHA256) naming the session id, the user
//! and the expiry, so any replica holding the key checks it without shared state. Logout
//! records the session id in ClickHouse (`admin_session_revocations`), which every replica
//! consults for each request made with a cookie, so a logout through one replica is
//! refused by all at once. The CSRF token is derived from the session id with the same
//! key. Who may log in, and how often, is `auth`'s and `login_limit`'s business.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clickhouse::Client;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::error::ApiError;

type HmacSha256 = Hmac<Sha256>;

/// Shortest signing key accepted, in bytes.
const MIN_KEY_LEN: usize = 32;

/// `TRAFFSURE__SESSION__*`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// Signs session cookies; every replica needs the same one, 32 bytes or more. Empty:
    /// a random key per process, so sessions die with it and work on one replica only.
    pub signing_key: String,
}

/// A session the cookie names, once its signature and expiry are checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub id: String,
    pub username: String,
    /// Unix seconds.
    pub expires: u64,
}

pub struct Sessions {
    key: Vec<u8>,
    ttl: Duration,
    clickhouse: Client,
    /// Sessions known to be revoked: a revocation is final, so it needs no second look.
    revoked: Mutex<HashSet<String>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    data_encoding::HEXLOWER_PERMISSIVE.decode(s.as_bytes()).ok()
}

impl Sessions {
    pub fn new(
        settings: &SessionSettings,
        ttl: Duration,
        clickhouse: Client,
    ) -> anyhow::Result<Self> {
        let key = if settings.signing_key.is_empty() {
            tracing::warn!(
                "no session.signing_key configured: sessions end with this process and work on this replica only"
            );
            rand::random::<[u8; 32]>().to_vec()
        } else if settings.signing_key.len() < MIN_KEY_LEN {
            anyhow::bail!(
                "session.signing_key needs at least {MIN_KEY_LEN} bytes (has {})",
                settings.signing_key.len()
            );
        } else {
            settings.signing_key.as_bytes().to_vec()
        };
        Ok(Self {
            key,
            ttl,
            clickhouse,
            revoked: Mutex::new(HashSet::new()),
        })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn mac(&self, parts: &[&str]) -> Vec<u8> {
        // The key length is not limited for HMAC, so this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("hmac takes keys of any length"));
        for part in parts {
            mac.update(part.as_bytes());
            mac.update(b"|");
        }
        mac.finalize().into_bytes().to_vec()
    }

    /// A new session for `username`: the cookie value and the session's CSRF token.
    pub fn open(&self, username: &str) -> (String, String) {
        let id = hex(&rand::random::<[u8; 16]>());
        let expires = (now_secs() + self.ttl.as_secs()).to_string();
        let user = hex(username.as_bytes());
        let signature = hex(&self.mac(&["session", &id, &expires, &user]));
        let csrf = self.csrf(&id);
        (format!("{id}.{expires}.{user}.{signature}"), csrf)
    }

    /// The CSRF token of a session.
    pub fn csrf(&self, id: &str) -> String {
        hex(&self.mac(&["csrf", id]))
    }

    /// The session a cookie names, if this key signed it and it has not expired.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let mut parts = token.split('.');
        let (id, expires, user, signature) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.key).ok()?;
        for part in ["session", id, expires, user] {
            mac.update(part.as_bytes());
            mac.update(b"|");
        }
        // verify_slice compares in constant time.
        mac.verify_slice(&unhex(signature)?).ok()?;
        let expires: u64 = expires.parse().ok()?;
        if expires <= now_secs() {
            return None;
        }
        Some(Claims {
            id: id.to_string(),
            username: String::from_utf8(unhex(user)?).ok()?,
            expires,
        })
    }

    /// The session a cookie names, if it is valid and nobody logged it out on any replica.
    pub async fn check(&self, token: &str) -> Result<Option<Claims>, ApiError> {
        let Some(claims) = self.verify(token) else {
            return Ok(None);
        };
        if self.known_revoked(&claims.id) {
            return Ok(None);
        }
        let revoked: u64 = self
            .clickhouse
            .query("SELECT count() FROM admin_session_revocations WHERE session_id = ?")
            .bind(&claims.id)
            .fetch_one()
            .await?;
        if revoked > 0 {
            self.remember_revoked(&claims.id);
            return Ok(None);
        }
        Ok(Some(claims))
    }

    /// Ends a session on every replica.
    pub async fn revoke(&self, claims: &Claims) -> Result<(), ApiError> {
        self.clickhouse
            .query(
                "INSERT INTO admin_session_revocations (session_id, username, expires_at, revoked_at) \
                 SELECT ?, ?, toDateTime(?), now()",
            )
            .bind(&claims.id)
            .bind(&claims.username)
            .bind(claims.expires)
            .execute()
            .await?;
        self.remember_revoked(&claims.id);
        Ok(())
    }

    fn known_revoked(&self, id: &str) -> bool {
        self.revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    fn remember_revoked(&self, id: &str) {
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        // Revoked sessions expire within session_hours; a full set is simply re-learned.
        if revoked.len() >= 100_000 {
            revoked.clear();
        }
        revoked.insert(id.to_string());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sessions(key: &str) -> Sessions {
        let settings = SessionSettings {
            signing_key: key.into(),
        };
        Sessions::new(&settings, Duration::from_secs(3600), Client::default()).unwrap()
    }

    #[test]
    fn a_token_is_accepted_by_every_holder_of_the_key() {
        let a = sessions("0123456789abcdef0123456789abcdef");
        let b = sessions("0123456789abcdef0123456789abcdef");
        let (token, csrf) = a.open("ad.min");
        let claims = b.verify(&token).unwrap();
        assert_eq!(claims.username, "ad.min");
        assert_eq!(b.csrf(&claims.id), csrf);
        let other = sessions("another-key-another-key-another-key");
        assert_eq!(other.verify(&token), None);
    }

    #[test]
    fn a_changed_or_expired_token_is_refused() {
        let s = sessions("0123456789abcdef0123456789abcdef");
        let (token, _) = s.open("admin");
        let parts: Vec<&str> = token.split('.').collect();
        let longer = format!("{}.{}.{}.{}", parts[0], "99999999999", parts[2], parts[3]);
        assert_eq!(s.verify(&longer), None);
        let root = format!("{}.{}.{}.{}", parts[0], parts[1], hex(b"root"), parts[3]);
        assert_eq!(s.verify(&root), None);
        assert_eq!(s.verify(&format!("{token}.x")), None);
        assert_eq!(s.verify("garbage"), None);
        let expired = "00.1.61646d696e";
        let signature = hex(&s.mac(&["session", "00", "1", "61646d696e"]));
        assert_eq!(s.verify(&format!("{expired}.{signature}")), None);
    }

    #[test]
    fn a_short_key_is_refused() {
        let settings = SessionSettings {
            signing_key: "short".into(),
        };
        let err = Sessions::new(&settings, Duration::from_secs(1), Client::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("session.signing_key") && !err.contains("short\""),
            "{err}"
        );
    }
}

//! Users, roles and per-user API keys, and the one place that decides what a role may do.
//!
//! A user is an owner (everything), an admin (everything but users) or an analyst
//! (reads only: logs, reports, dashboards), and may be restricted to chosen flows: every
//! answer is then narrowed to them (`FlowScope`, applied where queries are built, in
//! `filters::flow_condition`). The configured first admin is the bootstrap owner: it
//! lives in settings, is never stored, and cannot be changed through the API.
//!
//! Users and keys are rows in ClickHouse (migration 23), every change a new version read
//! back with argMax: each request looks its user (or key) up, so a role change, a
//! deletion or a revoked key takes effect at once on every replica, and nothing but the
//! database the reports already need has to be running. Passwords are argon2id hashes
//! (as for the configured admin); API keys are long random secrets, stored as SHA-256
//! (a slow hash buys nothing for 190 random bits and would cost every API request).
//!
//! Each user's own settings (today the time zone the panel reads days and hours in) are
//! rows of `user_settings` (migration 27) keyed by user id, the bootstrap owner's by 0,
//! so every user has one and it follows them to any browser. A user without a row reads
//! UTC.

use std::collections::BTreeSet;
use std::future::{ready, Ready};
use std::sync::Arc;

use actix_web::http::Method;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use clickhouse::Client;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, users included.
    Owner,
    /// Everything but users.
    Admin,
    /// Reads logs, reports and dashboards; changes nothing.
    Analyst,
}

impl Role {
    pub const WORDS: [&'static str; 3] = ["owner", "admin", "analyst"];

    pub fn word(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Analyst => "analyst",
        }
    }

    pub fn from_word(word: &str) -> Option<Self> {
        match word {
            "owner" => Some(Self::Owner),
            "admin" => Some(Self::Admin),
            "analyst" => Some(Self::Analyst),
            _ => None,
        }
    }
}

/// The flows a request may see: all, or only some.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum FlowScope {
    #[default]
    All,
    Only(Arc<BTreeSet<u32>>),
}

impl FlowScope {
    /// No ids: every flow.
    pub fn of(ids: &[u32]) -> Self {
        if ids.is_empty() {
            Self::All
        } else {
            Self::Only(Arc::new(ids.iter().copied().collect()))
        }
    }

    pub fn allows(&self, flow: u32) -> bool {
        match self {
            Self::All => true,
            Self::Only(ids) => ids.contains(&flow),
        }
    }

    pub fn is_restricted(&self) -> bool {
        matches!(self, Self::Only(_))
    }
}

/// The scope of the request's user (from `auth`); a request without one sees no flow.
impl FromRequest for FlowScope {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let scope = req
            .extensions()
            .get::<Principal>()
            .map(|p| p.scope.clone())
            .unwrap_or_else(|| Self::Only(Arc::default()));
        ready(Ok(scope))
    }
}

/// How a request proved who it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Via {
    /// A panel session, with its CSRF token.
    Session { csrf: String },
    /// A user's API key.
    ApiKey { key_id: String },
    /// One of the configured API keys (`api_keys`), which act as the bootstrap owner.
    ConfiguredKey,
    /// The service itself (the exchange rates fetch), for the audit log.
    System,
}

impl Via {
    pub fn word(&self) -> &'static str {
        match self {
            Self::Session { .. } => "session",
            Self::ApiKey { .. } => "api_key",
            Self::ConfiguredKey => "configured_key",
            Self::System => "system",
        }
    }
}

/// Who sent a request, as `auth` found out; handlers read it from the request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// 0 for the bootstrap owner.
    pub user_id: u32,
    pub username: String,
    pub role: Role,
    pub scope: FlowScope,
    pub via: Via,
}

impl FromRequest for Principal {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Principal>()
                .cloned()
                .ok_or_else(|| ApiError::Unauthorized("log in or send an API key".into()).into()),
        )
    }
}

/// The id of the bootstrap owner (the configured admin).
pub const BOOTSTRAP_ID: u32 = 0;

impl Principal {
    /// The service itself, named for what it does (`rates fetch`), in audit entries of
    /// changes no user asked for.
    pub fn system(name: &str) -> Self {
        Self {
            user_id: BOOTSTRAP_ID,
            username: name.to_string(),
            role: Role::Owner,
            scope: FlowScope::All,
            via: Via::System,
        }
    }
}

/// The role checks, by route and method, for every API request `auth` let in: 403 with
/// the reason when the principal may not. (Panel pages are one static shell for all;
/// their data comes through the API and is checked here.) Flow restrictions on single flows are checked
/// where the flow is looked up (a flow out of scope is not found).
pub fn permit(principal: &Principal, method: &Method, path: &str) -> Result<(), ApiError> {
    let write = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let forbid = |message: String| Err(ApiError::Forbidden(message));
    let role = principal.role.word();
    if matches!(
        path,
        "/api/v1/me" | "/api/v1/auth/session" | "/api/v1/auth/logout"
    ) {
        return Ok(());
    }
    if path.starts_with("/api/v1/users") {
        let own_keys = format!("/api/v1/users/{}/api-keys", principal.user_id);
        let own = path == own_keys || path.starts_with(&format!("{own_keys}/"));
        if principal.role != Role::Owner && !own {
            return forbid(format!("only an owner manages users; you are {role}"));
        }
        return Ok(());
    }
    if path.starts_with("/api/v1/audit") {
        if principal.role == Role::Analyst {
            return forbid("an analyst cannot read the audit log".into());
        }
        return Ok(());
    }
    if !write {
        return Ok(());
    }
    if principal.role == Role::Analyst {
        return forbid(format!(
            "an analyst reads logs, reports and dashboards and changes nothing ({method} {path})"
        ));
    }
    if principal.scope.is_restricted() && !scoped_write(path) {
        return forbid(format!(
            "a user restricted to some flows changes only those flows, not {path}"
        ));
    }
    Ok(())
}

/// Writes that touch one flow, which a flow-restricted user may make to the flows they
/// see (the handler refuses the others): a flow's update, its test postback, a replay.
fn scoped_write(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/api/v1/flows/") else {
        return path == "/api/v1/outbound-postbacks/replay";
    };
    // `{id}` alone, or `{flow}/outbound-postbacks/{id}/test`.
    let parts: Vec<&str> = rest.split('/').collect();
    matches!(parts.as_slice(), [_] | [_, "outbound-postbacks", _, "test"])
}

/// A user as stored (the password hash stays inside this service).
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct User {
    pub id: u32,
    pub username: String,
    pub role: String,
    pub flow_ids: Vec<u32>,
    pub password_hash: String,
    pub created_at: String,
    pub updated_at: String,
}

impl User {
    pub fn role(&self) -> Role {
        // Only checked words are written; an unknown one reads as the least powerful.
        Role::from_word(&self.role).unwrap_or(Role::Analyst)
    }

    /// The user as the API shows it: no password hash.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "username": self.username,
            "role": self.role,
            "flows": self.flow_ids,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }

    /// `view` with the user's time zone.
    pub fn view_in(&self, timezone: &str) -> serde_json::Value {
        let mut view = self.view();
        view["timezone"] = serde_json::json!(timezone);
        view
    }
}

/// An API key as stored.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Deserialize)]
pub struct ApiKey {
    pub key_id: String,
    pub user_id: u32,
    pub name: String,
    pub key_sha256: String,
    pub revoked: u8,
    pub created_at: String,
}

impl ApiKey {
    /// The key as lists show it: its prefix and name, never the secret.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "key_id": self.key_id,
            "prefix": format!("ts_{}_", self.key_id),
            "name": self.name,
            "user_id": self.user_id,
            "created_at": self.created_at,
        })
    }
}

pub fn sha256_hex(text: &str) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(text.as_bytes()))
}

/// A new API key: `(key_id, the whole key)`.
pub fn new_api_key() -> (String, String) {
    let id = data_encoding::HEXLOWER.encode(&rand::random::<[u8; 6]>());
    let secret = data_encoding::BASE32_NOPAD
        .encode(&rand::random::<[u8; 24]>())
        .to_ascii_lowercase();
    let key = format!("ts_{id}_{secret}");
    (id, key)
}

/// The key id a user's API key names, if it has the shape of one.
pub fn key_id_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("ts_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty())
        .then_some(id)
}

fn now_ms() -> u64 {
    traffsure_core::now_ms().max(0) as u64
}

/// Each user's latest version, deleted ones left out (`users_current` in
/// deploy/clickhouse/queries.sql); callers add ` AND …` conditions.
fn users_query() -> String {
    traffsure_clickhouse::queries::sql("users_current", "users")
}

/// Each user's latest settings (`user_settings_current`); callers add ` AND …`.
fn settings_query() -> String {
    traffsure_clickhouse::queries::sql("user_settings_current", "user_settings")
}

/// The time zone of a user without a stored one.
pub const DEFAULT_TIMEZONE: &str = "UTC";

#[derive(clickhouse::Row, Deserialize)]
struct SettingsRow {
    uid: u32,
    tz: String,
}

/// Each API key's latest version, revoked ones left out (`api_keys_current`).
fn keys_query() -> String {
    traffsure_clickhouse::queries::sql("api_keys_current", "user_api_keys")
}

#[derive(clickhouse::Row, Deserialize)]
struct UserRow {
    id: u32,
    username: String,
    role: String,
    flow_ids: Vec<u32>,
    password_hash: String,
    _gone: u8,
    created_at: String,
    updated_at: String,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        Self {
            id: r.id,
            username: r.username,
            role: r.role,
            flow_ids: r.flow_ids,
            password_hash: r.password_hash,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(clickhouse::Row, Deserialize)]
struct KeyRow {
    key_id: String,
    user_id: u32,
    name: String,
    key_sha256: String,
    revoked: u8,
    created_at: String,
}

impl From<KeyRow> for ApiKey {
    fn from(r: KeyRow) -> Self {
        Self {
            key_id: r.key_id,
            user_id: r.user_id,
            name: r.name,
            key_sha256: r.key_sha256,
            revoked: r.revoked,
            created_at: r.created_at,
        }
    }
}

/// The stored users and keys.
#[derive(Clone)]
pub struct UserStore {
    clickhouse: Client,
}

impl UserStore {
    pub fn new(clickhouse: Client) -> Self {
        Self { clickhouse }
    }

    pub async fn all(&self) -> Result<Vec<User>, ApiError> {
        let rows = self
            .clickhouse
            .query(&format!("{} ORDER BY uname", users_query()))
            .fetch_all::<UserRow>()
            .await?;
        Ok(rows.into_iter().map(User::from).collect())
    }

    pub async fn by_id(&self, id: u32) -> Result<Option<User>, ApiError> {
        let rows = self
            .clickhouse
            .query(&format!("{} AND id = ?", users_query()))
            .bind(id)
            .fetch_all::<UserRow>()
            .await?;
        Ok(rows.into_iter().next().map(User::from))
    }

    pub async fn by_username(&self, username: &str) -> Result<Option<User>, ApiError> {
        let rows = self
            .clickhouse
            .query(&format!(
                "{} AND uname = ? ORDER BY id LIMIT 1",
                users_query()
            ))
            .bind(username)
            .fetch_all::<UserRow>()
            .await?;
        Ok(rows.into_iter().next().map(User::from))
    }

    /// Writes a new version of `user` (`deleted`: its last one).
    pub async fn write(&self, user: &User, deleted: bool) -> Result<(), ApiError> {
        self.clickhouse
            .query(
                "INSERT INTO users (id, version, username, role, flow_ids, password_hash, \
                 deleted, created_at, updated_at) SELECT ?, ?, ?, ?, ?, ?, ?, now(), now()",
            )
            .bind(user.id)
            .bind(now_ms())
            .bind(&user.username)
            .bind(&user.role)
            .bind(&user.flow_ids)
            .bind(&user.password_hash)
            .bind(u8::from(deleted))
            .execute()
            .await?;
        Ok(())
    }

    /// The time zone user `user_id` reads the panel in (0: the bootstrap owner).
    pub async fn timezone_of(&self, user_id: u32) -> Result<String, ApiError> {
        let rows = self
            .clickhouse
            .query(&format!("{} AND uid = ?", settings_query()))
            .bind(user_id)
            .fetch_all::<SettingsRow>()
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| r.tz)
            .find(|tz| !tz.is_empty())
            .unwrap_or_else(|| DEFAULT_TIMEZONE.into()))
    }

    /// Every stored time zone by user id (users without one are missing: UTC).
    pub async fn timezones(&self) -> Result<std::collections::HashMap<u32, String>, ApiError> {
        let rows = self
            .clickhouse
            .query(&settings_query())
            .fetch_all::<SettingsRow>()
            .await?;
        Ok(rows
            .into_iter()
            .filter(|r| !r.tz.is_empty())
            .map(|r| (r.uid, r.tz))
            .collect())
    }

    /// Stores user `user_id`'s time zone (checked by the caller).
    pub async fn write_timezone(&self, user_id: u32, timezone: &str) -> Result<(), ApiError> {
        self.clickhouse
            .query(
                "INSERT INTO user_settings (user_id, version, timezone, updated_at) \
                 SELECT ?, ?, ?, now()",
            )
            .bind(user_id)
            .bind(now_ms())
            .bind(timezone)
            .execute()
            .await?;
        Ok(())
    }

    pub async fn key(&self, key_id: &str) -> Result<Option<ApiKey>, ApiError> {
        let rows = self
            .clickhouse
            .query(&format!("{} AND key_id = ?", keys_query()))
            .bind(key_id)
            .fetch_all::<KeyRow>()
            .await?;
        Ok(rows.into_iter().next().map(ApiKey::from))
    }

    pub async fn keys_of(&self, user_id: u32) -> Result<Vec<ApiKey>, ApiError> {
        let rows = self
            .clickhouse
            .query(&format!(
                "{} AND uid = ? ORDER BY created, key_id",
                keys_query()
            ))
            .bind(user_id)
            .fetch_all::<KeyRow>()
            .await?;
        Ok(rows.into_iter().map(ApiKey::from).collect())
    }

    /// Writes a new version of `key` (`revoked`: its last one).
    pub async fn write_key(&self, key: &ApiKey, revoked: bool) -> Result<(), ApiError> {
        self.clickhouse
            .query(
                "INSERT INTO user_api_keys (key_id, version, user_id, name, key_sha256, revoked, \
                 created_at, updated_at) SELECT ?, ?, ?, ?, ?, ?, now(), now()",
            )
            .bind(&key.key_id)
            .bind(now_ms())
            .bind(key.user_id)
            .bind(&key.name)
            .bind(&key.key_sha256)
            .bind(u8::from(revoked))
            .execute()
            .await?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn principal(role: Role, flows: &[u32]) -> Principal {
        Principal {
            user_id: 7,
            username: "u".into(),
            role,
            scope: FlowScope::of(flows),
            via: Via::ConfiguredKey,
        }
    }

    fn allowed(p: &Principal, method: Method, path: &str) -> bool {
        permit(p, &method, path).is_ok()
    }

    #[test]
    fn owners_do_everything() {
        let owner = principal(Role::Owner, &[]);
        for (method, path) in [
            (Method::POST, "/api/v1/users"),
            (Method::DELETE, "/api/v1/users/3"),
            (Method::PUT, "/api/v1/flows/3"),
            (Method::GET, "/api/v1/audit"),
        ] {
            assert!(allowed(&owner, method, path), "{path}");
        }
    }

    #[test]
    fn admins_do_everything_but_users() {
        let admin = principal(Role::Admin, &[]);
        assert!(allowed(&admin, Method::POST, "/api/v1/flows"));
        assert!(allowed(&admin, Method::PUT, "/api/v1/exchange-rates"));
        assert!(allowed(&admin, Method::GET, "/api/v1/audit"));
        assert!(!allowed(&admin, Method::GET, "/api/v1/users"));
        assert!(!allowed(&admin, Method::POST, "/api/v1/users"));
        assert!(!allowed(&admin, Method::POST, "/api/v1/users/8/api-keys"));
        // Their own keys are theirs to manage.
        assert!(allowed(&admin, Method::POST, "/api/v1/users/7/api-keys"));
        assert!(allowed(
            &admin,
            Method::DELETE,
            "/api/v1/users/7/api-keys/abc"
        ));
        assert!(!allowed(&admin, Method::GET, "/api/v1/users/7"));
        let err = permit(&admin, &Method::GET, "/api/v1/users").unwrap_err();
        assert!(err.to_string().contains("owner"), "{err}");
    }

    #[test]
    fn analysts_only_read() {
        let analyst = principal(Role::Analyst, &[]);
        for path in ["/api/v1/clicks", "/api/v1/reports", "/api/v1/dashboard"] {
            assert!(allowed(&analyst, Method::GET, path), "{path}");
        }
        for (method, path) in [
            (Method::POST, "/api/v1/flows"),
            (Method::PUT, "/api/v1/flows/1"),
            (Method::POST, "/api/v1/offers"),
            (Method::PUT, "/api/v1/exchange-rates"),
            (Method::POST, "/api/v1/outbound-postbacks/replay"),
        ] {
            assert!(!allowed(&analyst, method, path), "{path}");
        }
        assert!(!allowed(&analyst, Method::GET, "/api/v1/audit"));
        assert!(allowed(&analyst, Method::POST, "/api/v1/auth/logout"));
        assert!(allowed(&analyst, Method::GET, "/api/v1/me"));
        // Their own time zone is theirs to set, restricted or not; nobody else's.
        assert!(allowed(&analyst, Method::PUT, "/api/v1/me"));
        assert!(allowed(
            &principal(Role::Analyst, &[4]),
            Method::PUT,
            "/api/v1/me"
        ));
        assert!(!allowed(&analyst, Method::PUT, "/api/v1/users/7"));
    }

    #[test]
    fn restricted_users_write_only_to_single_flows() {
        let admin = principal(Role::Admin, &[4]);
        assert!(allowed(&admin, Method::PUT, "/api/v1/flows/4"));
        assert!(allowed(
            &admin,
            Method::POST,
            "/api/v1/flows/4/outbound-postbacks/o1/test"
        ));
        assert!(allowed(
            &admin,
            Method::POST,
            "/api/v1/outbound-postbacks/replay"
        ));
        assert!(!allowed(&admin, Method::POST, "/api/v1/flows"));
        assert!(!allowed(&admin, Method::POST, "/api/v1/offers"));
        assert!(!allowed(&admin, Method::PUT, "/api/v1/exchange-rates"));
    }

    #[test]
    fn scopes() {
        assert!(FlowScope::of(&[]).allows(9));
        assert!(!FlowScope::of(&[]).is_restricted());
        let only = FlowScope::of(&[1, 2]);
        assert!(only.allows(2) && !only.allows(3) && only.is_restricted());
    }

    #[test]
    fn api_keys_name_their_row() {
        let (id, key) = new_api_key();
        assert_eq!(key_id_of(&key), Some(id.as_str()));
        assert!(key.len() > 40);
        assert_eq!(key_id_of("ts_zz_abc"), None);
        assert_eq!(key_id_of("end-to-end-test-api-key-0001"), None);
        assert_ne!(new_api_key().1, key);
        assert_eq!(sha256_hex("abc").len(), 64);
    }
}

//! Who is asking: the login of the configured admin (the bootstrap owner) and of the
//! users in `users` (argon2 password hashes, session cookie, CSRF token), the configured
//! API keys and each user's own. Sessions themselves (signed cookies any replica accepts,
//! revocation on logout) are `session`'s; failed-login limits are `login_limit`'s; what a
//! role may do is `users::permit`, which the middleware here calls for every API request.
//! Everything but the health routes, the login page and the OpenAPI document requires a
//! login or a key; the tracking edges live in other services.
//!
//! CSRF: the session cookie is `HttpOnly; SameSite=Strict`, and every state-changing
//! request made with it must also carry the session's token in `X-CSRF-Token`, which a
//! page on another origin cannot read. Login itself only accepts a JSON body, which a
//! cross-site form cannot send.

use std::net::IpAddr;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use serde_json::json;
use traffsure_core::client_ip::ClientIpResolver;

use crate::error::ApiError;
use crate::login_limit::LoginLimiter;
use crate::session::Sessions;
use crate::users::{self, FlowScope, Principal, Role, UserStore, Via, BOOTSTRAP_ID};

pub const SESSION_COOKIE: &str = "ts_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The first admin, from configuration: a plain password (hashed at start) or an
/// argon2 PHC string.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AdminSettings {
    pub username: String,
    pub password: String,
    pub password_hash: String,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            username: "admin".into(),
            password: String::new(),
            password_hash: String::new(),
        }
    }
}

pub struct Auth {
    username: String,
    password_hash: String,
    api_keys: Vec<String>,
    sessions: Sessions,
    limiter: LoginLimiter,
    client_ip: ClientIpResolver,
    users: UserStore,
    /// Verified against when the username is unknown, so a login takes as long either way.
    dummy_hash: String,
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hash admin password: {e}"))?
        .to_string())
}

/// Whether `password` matches an argon2 PHC string.
pub fn verify_hash(hash: &str, password: &str) -> bool {
    let Ok(hash) = PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok()
}

impl Auth {
    /// Builds the admin account and key list; with no password configured, nobody can
    /// log in as the admin (API keys still work).
    pub fn new(
        admin: &AdminSettings,
        api_keys: &str,
        sessions: Sessions,
        limiter: LoginLimiter,
        client_ip: ClientIpResolver,
        users: UserStore,
    ) -> anyhow::Result<Self> {
        let password_hash = if !admin.password_hash.is_empty() {
            PasswordHash::new(&admin.password_hash)
                .map_err(|e| anyhow::anyhow!("admin.password_hash is not an argon2 hash: {e}"))?;
            admin.password_hash.clone()
        } else if !admin.password.is_empty() {
            hash_password(&admin.password)?
        } else {
            // A secret never goes to the log, so a generated password would help nobody:
            // the admin login stays shut (a hash of a password nobody knows) until one is set.
            tracing::warn!(
                username = %admin.username,
                "no admin password configured (admin.password or admin.password_hash): admin login is off, API keys still work"
            );
            hash_password(&random_token())?
        };
        if admin.username.trim().is_empty() {
            anyhow::bail!("admin.username must not be empty");
        }
        let api_keys: Vec<String> = api_keys
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(String::from)
            .collect();
        if let Some(short) = api_keys.iter().find(|k| k.len() < 16) {
            anyhow::bail!(
                "api_keys: every key needs at least 16 characters ({} has {})",
                &short[..short.len().min(3)],
                short.len()
            );
        }
        Ok(Self {
            username: admin.username.clone(),
            password_hash,
            api_keys,
            sessions,
            limiter,
            client_ip,
            users,
            dummy_hash: hash_password(&random_token())?,
        })
    }

    /// The stored users and keys.
    pub fn users(&self) -> &UserStore {
        &self.users
    }

    /// The configured admin's username (the bootstrap owner's).
    pub fn bootstrap_username(&self) -> &str {
        &self.username
    }

    fn bootstrap(&self, via: Via) -> Principal {
        Principal {
            user_id: BOOTSTRAP_ID,
            username: self.username.clone(),
            role: Role::Owner,
            scope: FlowScope::All,
            via,
        }
    }

    /// The password hash to check a login against: the configured admin's, a stored
    /// user's (with the user), or a dummy one for a username nobody has.
    async fn login_hash(&self, username: &str) -> Result<(String, Option<users::User>), ApiError> {
        if same_secret(username, &self.username) {
            return Ok((self.password_hash.clone(), None));
        }
        Ok(match self.users.by_username(username).await? {
            Some(user) => (user.password_hash.clone(), Some(user)),
            None => (self.dummy_hash.clone(), None),
        })
    }

    #[cfg(test)]
    fn verify_password(&self, username: &str, password: &str) -> bool {
        verify_hash(&self.password_hash, password) && same_secret(username, &self.username)
    }

    fn api_key_valid(&self, key: &str) -> bool {
        self.api_keys
            .iter()
            .fold(false, |found, k| found | same_secret(k, key))
    }

    /// The principal of a user's API key, if the key is one and not revoked.
    async fn user_key(&self, key: &str) -> Result<Option<Principal>, ApiError> {
        let Some(key_id) = users::key_id_of(key) else {
            return Ok(None);
        };
        let Some(stored) = self.users.key(key_id).await? else {
            return Ok(None);
        };
        if !same_secret(&users::sha256_hex(key), &stored.key_sha256) {
            return Ok(None);
        }
        let Some(user) = self.users.by_id(stored.user_id).await? else {
            return Ok(None);
        };
        Ok(Some(Principal {
            user_id: user.id,
            username: user.username.clone(),
            role: user.role(),
            scope: FlowScope::of(&user.flow_ids),
            via: Via::ApiKey {
                key_id: stored.key_id,
            },
        }))
    }

    /// Who sent this request, if anyone.
    async fn principal(&self, req: &ServiceRequest) -> Result<Option<Principal>, ApiError> {
        let headers = req.headers();
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let key = bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
        if let Some(key) = key {
            let key = key.trim();
            if self.api_key_valid(key) {
                return Ok(Some(self.bootstrap(Via::ConfiguredKey)));
            }
            return match self.user_key(key).await? {
                Some(principal) => Ok(Some(principal)),
                None => Err(ApiError::Unauthorized(
                    "the API key is not valid (or was revoked)".into(),
                )),
            };
        }
        let Some(cookie) = req.cookie(SESSION_COOKIE) else {
            return Ok(None);
        };
        let Some(claims) = self.sessions.check(cookie.value()).await? else {
            return Ok(None);
        };
        let csrf = self.sessions.csrf(&claims.id);
        let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
            if !sent.is_some_and(|sent| same_secret(sent, &csrf)) {
                return Err(ApiError::Csrf(
                    "missing or wrong X-CSRF-Token header".into(),
                ));
            }
        }
        let via = Via::Session { csrf };
        if same_secret(&claims.username, &self.username) {
            return Ok(Some(self.bootstrap(via)));
        }
        // A deleted user's sessions end with it; a changed role applies at once.
        let Some(user) = self.users.by_username(&claims.username).await? else {
            return Ok(None);
        };
        Ok(Some(Principal {
            user_id: user.id,
            username: user.username.clone(),
            role: user.role(),
            scope: FlowScope::of(&user.flow_ids),
            via,
        }))
    }
}

fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz"
            | "/readyz"
            | "/metrics"
            | "/login"
            | "/api/v1/auth/login"
            | "/api/v1/openapi.json"
            // The API reference: the document is public, and "Try it out" authenticates.
            | "/api/docs"
            | "/assets/api-docs.js"
            | "/assets/swagger-ui/swagger-ui-bundle.js"
            | "/assets/swagger-ui/swagger-ui.css"
            | "/assets/app.css"
    )
}

/// The middleware: lets public routes through, then requires an API key or a session
/// (with its CSRF token on writes). Panel pages redirect to the login page instead.
pub async fn require_auth(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let path = req.path().to_string();
    if is_public(&path) {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let Some(auth) = req.app_data::<web::Data<Auth>>().cloned() else {
        return Err(ApiError::Internal("auth not configured".into()).into());
    };
    match auth.principal(&req).await {
        Ok(Some(principal)) => {
            if path.starts_with("/api/") {
                if let Err(refused) = users::permit(&principal, req.method(), &path) {
                    tracing::info!(username = %principal.username, method = %req.method(), %path, "refused by role");
                    return Ok(req
                        .into_response(refused.error_response())
                        .map_into_right_body());
                }
            }
            req.extensions_mut().insert(principal);
            Ok(next.call(req).await?.map_into_left_body())
        }
        Ok(None) if !path.starts_with("/api/") && req.method() == Method::GET => {
            let target = match req.query_string() {
                "" => path.clone(),
                q => format!("{path}?{q}"),
            };
            let location = format!("/login?next={}", percent_encode_component(&target));
            let response = HttpResponse::SeeOther()
                .insert_header((header::LOCATION, location))
                .finish();
            Ok(req.into_response(response).map_into_right_body())
        }
        Ok(None) => {
            let error = ApiError::Unauthorized(
                "log in or send an API key (Authorization: Bearer <key>)".into(),
            );
            Ok(req
                .into_response(error.error_response())
                .map_into_right_body())
        }
        Err(error) => Ok(req
            .into_response(error.error_response())
            .map_into_right_body()),
    }
}

fn percent_encode_component(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    username: String,
    password: String,
    /// Where the login page goes next; answered back only if `safe_next` accepts it.
    #[serde(default)]
    next: Option<String>,
}

#[derive(Serialize)]
struct SessionView {
    username: String,
    csrf_token: String,
    user_id: u32,
    role: Role,
    /// The flows the user sees; empty for all.
    flows: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

impl SessionView {
    fn of(principal: &Principal, csrf: String) -> Self {
        Self {
            username: principal.username.clone(),
            csrf_token: csrf,
            user_id: principal.user_id,
            role: principal.role,
            flows: match &principal.scope {
                FlowScope::All => Vec::new(),
                FlowScope::Only(ids) => ids.iter().copied().collect(),
            },
            next: None,
        }
    }
}

/// Where a login may send the browser next: a path on this site only. Refused (so the
/// page goes to `/`): anything not starting with one `/` (schemes, `//host`, relative
/// paths), a backslash raw or percent-encoded (`/\host`, `/%5chost`: browsers read `\`
/// as `/`), control characters and whitespace raw or encoded (browsers drop tabs and
/// newlines, so `/\t/host` is `//host`), and an encoded second slash (`/%2fhost`).
pub fn safe_next(next: &str) -> Option<&str> {
    let bytes = next.as_bytes();
    if next.len() > 2048 || bytes.first() != Some(&b'/') {
        return None;
    }
    if matches!(bytes.get(1), Some(b'/' | b'\\')) {
        return None;
    }
    if bytes
        .iter()
        .any(|&b| b == b'\\' || b.is_ascii_control() || b == b' ' || b >= 0x80)
    {
        return None;
    }
    // Percent-encoded bytes: no backslash, control character or whitespace, and no
    // slash where the path's second character is.
    let mut rest = next;
    while let Some(at) = rest.find('%') {
        let code = rest.get(at + 1..at + 3)?;
        let byte = u8::from_str_radix(code, 16).ok()?;
        if byte == b'\\' || byte.is_ascii_control() || byte == b' ' || byte >= 0x80 {
            return None;
        }
        let offset = next.len() - rest.len() + at;
        if offset == 1 && byte == b'/' {
            return None;
        }
        rest = &rest[at + 3..];
    }
    Some(next)
}

/// Whether the browser says the request comes from a page of another origin.
fn cross_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let host = req.connection_info().host().to_string();
    origin
        .split_once("://")
        .map(|(_, rest)| rest != host)
        .unwrap_or(true)
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    summary = "Admin login: sets the session cookie and returns the CSRF token",
    security(()),
    request_body = Login,
    responses(
        (status = 200, description = "Logged in", body = crate::openapi::bodies::Session),
        (status = 401, description = "Wrong username or password", body = traffsure_core::ErrorBody),
        (status = 403, description = "Login from another origin", body = traffsure_core::ErrorBody),
        (status = 422, description = "Not a JSON body of username and password", body = traffsure_core::ErrorBody),
        (status = 429, description = "Too many failed logins: try again after Retry-After seconds", body = traffsure_core::ErrorBody),
    ))]
pub async fn login(
    req: HttpRequest,
    auth: web::Data<Auth>,
    body: web::Json<Login>,
) -> Result<HttpResponse, ApiError> {
    if cross_origin(&req) {
        return Err(ApiError::Csrf("login from another origin".into()));
    }
    let Login {
        username,
        password,
        next,
    } = body.into_inner();
    let peer = req.peer_addr().map(|a| a.ip());
    let forwarded = req
        .headers()
        .get(auth.client_ip.header())
        .and_then(|v| v.to_str().ok());
    let address = auth
        .client_ip
        .client_ip(peer, forwarded)
        .or(peer)
        .map(|ip: IpAddr| ip.to_string())
        .unwrap_or_default();
    if let Some(wait) = auth.limiter.retry_after(&username, &address) {
        tracing::warn!(%username, %address, "login refused: too many failures");
        return Err(ApiError::TooManyRequests {
            message: "too many failed logins for this user or address, try again later".into(),
            retry_after: wait.as_secs().max(1),
        });
    }
    let (hash, user) = auth.login_hash(&username).await?;
    let known = user.is_some() || same_secret(&username, &auth.username);
    let ok = web::block(move || verify_hash(&hash, &password))
        .await
        .unwrap_or(false)
        && known;
    if !ok {
        auth.limiter.failed(&username, &address);
        tracing::warn!(%username, %address, "login failed");
        return Err(ApiError::Unauthorized("wrong username or password".into()));
    }
    auth.limiter.succeeded(&username, &address);
    let (token, csrf) = auth.sessions.open(&username);
    let cookie = Cookie::build(SESSION_COOKIE, token)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::seconds(
            auth.sessions.ttl().as_secs() as i64,
        ))
        .finish();
    tracing::info!(%username, "logged in");
    let principal = match user {
        Some(user) => Principal {
            user_id: user.id,
            username: user.username.clone(),
            role: user.role(),
            scope: FlowScope::of(&user.flow_ids),
            via: Via::Session { csrf: csrf.clone() },
        },
        None => auth.bootstrap(Via::Session { csrf: csrf.clone() }),
    };
    let mut view = SessionView::of(&principal, csrf);
    view.next = Some(
        next.as_deref()
            .and_then(safe_next)
            .unwrap_or("/")
            .to_string(),
    );
    Ok(HttpResponse::Ok().cookie(cookie).json(view))
}

/// Ends the session on every replica (a cookie that no longer verifies has nothing to end).
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    summary = "End the session",
    responses((status = 200, description = "Logged out", body = crate::openapi::bodies::LoggedOut)))]
pub async fn logout(req: HttpRequest, auth: web::Data<Auth>) -> Result<HttpResponse, ApiError> {
    if let Some(claims) = req
        .cookie(SESSION_COOKIE)
        .and_then(|cookie| auth.sessions.verify(cookie.value()))
    {
        auth.sessions.revoke(&claims).await?;
        tracing::info!(username = %claims.username, "admin logged out");
    }
    let mut gone = Cookie::build(SESSION_COOKIE, "").path("/").finish();
    gone.make_removal();
    Ok(HttpResponse::Ok()
        .cookie(gone)
        .json(json!({"logged_out": true})))
}

/// The current login and its CSRF token, for the panel's scripts.
#[utoipa::path(get, path = "/api/v1/auth/session", tag = "auth",
    summary = "The current login and its CSRF token",
    responses((status = 200, description = "The login", body = crate::openapi::bodies::Session)))]
pub async fn session(req: HttpRequest) -> HttpResponse {
    match req.extensions().get::<Principal>() {
        Some(
            principal @ Principal {
                via: Via::Session { csrf },
                ..
            },
        ) => HttpResponse::Ok().json(SessionView::of(principal, csrf.clone())),
        _ => HttpResponse::Ok().json(json!({"username": null, "api_key": true})),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn auth_with(admin: &AdminSettings, api_keys: &str) -> anyhow::Result<Auth> {
        let sessions = Sessions::new(
            &crate::session::SessionSettings::default(),
            Duration::from_secs(3600),
            clickhouse::Client::default(),
        )?;
        Auth::new(
            admin,
            api_keys,
            sessions,
            LoginLimiter::new(crate::login_limit::LoginSettings::default()),
            ClientIpResolver::new("X-Forwarded-For", "")?,
            UserStore::new(clickhouse::Client::default()),
        )
    }

    fn auth() -> Auth {
        let admin = AdminSettings {
            username: "admin".into(),
            password: "correct horse battery".into(),
            password_hash: String::new(),
        };
        auth_with(&admin, "key-aaaaaaaaaaaaaaaa, key-bbbbbbbbbbbbbbbb").unwrap()
    }

    #[test]
    fn passwords_are_stored_as_argon2_and_verified() {
        let auth = auth();
        assert!(auth.password_hash.starts_with("$argon2"));
        assert!(!auth.password_hash.contains("correct horse"));
        assert!(auth.verify_password("admin", "correct horse battery"));
        assert!(!auth.verify_password("admin", "correct horse"));
        assert!(!auth.verify_password("root", "correct horse battery"));
    }

    #[test]
    fn api_keys_are_listed_and_checked_exactly() {
        let auth = auth();
        assert!(auth.api_key_valid("key-bbbbbbbbbbbbbbbb"));
        assert!(!auth.api_key_valid("key-bbbbbbbbbbbbbbb"));
        assert!(!auth.api_key_valid(""));
        let short = auth_with(&AdminSettings::default(), "short");
        assert!(short.is_err());
    }

    #[test]
    fn a_configured_hash_must_be_argon2() {
        let admin = AdminSettings {
            password_hash: "plain".into(),
            ..AdminSettings::default()
        };
        assert!(auth_with(&admin, "").is_err());
        let admin = AdminSettings {
            password_hash: hash_password("s3cret-s3cret").unwrap(),
            ..AdminSettings::default()
        };
        assert!(auth_with(&admin, "")
            .unwrap()
            .verify_password("admin", "s3cret-s3cret"));
    }

    #[test]
    fn next_accepts_paths_of_this_site() {
        for good in [
            "/",
            "/clicks",
            "/clicks?flow=3&from=2026-01-01",
            "/flows/12",
            "/reports?group_by=day%2Cflow",
            "/postbacks#top",
        ] {
            assert_eq!(safe_next(good), Some(good), "{good}");
        }
    }

    #[test]
    fn next_refuses_another_host() {
        // Protocol-relative.
        assert_eq!(safe_next("//evil.example"), None);
        assert_eq!(safe_next("//evil.example/clicks"), None);
        // Backslash, which browsers read as a slash.
        assert_eq!(safe_next("/\\evil.example"), None);
        assert_eq!(safe_next("/\\/evil.example"), None);
        assert_eq!(safe_next("/clicks\\x"), None);
        // Percent-encoded backslash and slash.
        assert_eq!(safe_next("/%5cevil.example"), None);
        assert_eq!(safe_next("/%5Cevil.example"), None);
        assert_eq!(safe_next("/%2fevil.example"), None);
        assert_eq!(safe_next("/%2F%2Fevil.example"), None);
    }

    #[test]
    fn next_refuses_schemes_and_relative_paths() {
        for bad in [
            "https://evil.example/",
            "http:evil.example",
            "javascript:alert(1)",
            "data:text/html,hi",
            "evil.example",
            "clicks",
            "",
            " /clicks",
        ] {
            assert_eq!(safe_next(bad), None, "{bad}");
        }
    }

    #[test]
    fn next_refuses_control_characters() {
        for bad in [
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r/evil.example",
            "/clicks\u{0}",
            "/clicks\u{7f}",
            "/%09/evil.example",
            "/%0a/evil.example",
            "/%00",
            "/ /evil.example",
            "/%20/evil.example",
            "/%zz",
            "/%5",
        ] {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
        assert_eq!(safe_next(&format!("/{}", "a".repeat(3000))), None);
    }

    #[test]
    fn login_redirects_keep_the_target() {
        assert_eq!(
            percent_encode_component("/clicks?a=1&b"),
            "/clicks%3Fa%3D1%26b"
        );
    }
}

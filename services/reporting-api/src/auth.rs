//! Who may read and change what: the admin login (argon2 password hash, session cookie,
//! CSRF token) and API keys. Sessions themselves (signed cookies any replica accepts,
//! revocation on logout) are `session`'s; failed-login limits are `login_limit`'s. Everything but the health routes, the login page and the
//! OpenAPI document requires one of the two; the tracking edges live in other services.
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
}

/// How a request was let in, for handlers that care (the session endpoint).
#[derive(Debug, Clone)]
pub enum Principal {
    ApiKey,
    Admin { username: String, csrf: String },
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

impl Auth {
    /// Builds the admin account and key list; with no password configured, nobody can
    /// log in as the admin (API keys still work).
    pub fn new(
        admin: &AdminSettings,
        api_keys: &str,
        sessions: Sessions,
        limiter: LoginLimiter,
        client_ip: ClientIpResolver,
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
        })
    }

    fn verify_password(&self, username: &str, password: &str) -> bool {
        let Ok(hash) = PasswordHash::new(&self.password_hash) else {
            return false;
        };
        let password_ok = Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok();
        password_ok && same_secret(username, &self.username)
    }

    fn api_key_valid(&self, key: &str) -> bool {
        self.api_keys
            .iter()
            .fold(false, |found, k| found | same_secret(k, key))
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
            return if self.api_key_valid(key.trim()) {
                Ok(Some(Principal::ApiKey))
            } else {
                Err(ApiError::Unauthorized("the API key is not valid".into()))
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
        Ok(Some(Principal::Admin {
            username: claims.username,
            csrf,
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
}

#[derive(Serialize)]
struct SessionView {
    username: String,
    csrf_token: String,
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
    let Login { username, password } = body.into_inner();
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
    let checker = auth.clone();
    let user = username.clone();
    let ok = web::block(move || checker.verify_password(&user, &password))
        .await
        .unwrap_or(false);
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
    tracing::info!(%username, "admin logged in");
    Ok(HttpResponse::Ok().cookie(cookie).json(SessionView {
        username,
        csrf_token: csrf,
    }))
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
        Some(Principal::Admin { username, csrf }) => HttpResponse::Ok().json(SessionView {
            username: username.clone(),
            csrf_token: csrf.clone(),
        }),
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
    fn login_redirects_keep_the_target() {
        assert_eq!(
            percent_encode_component("/clicks?a=1&b"),
            "/clicks%3Fa%3D1%26b"
        );
    }
}

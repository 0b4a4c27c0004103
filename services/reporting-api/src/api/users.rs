//! Users and their API keys, managed by owners (`users::permit` lets no one else in,
//! but for their own keys): `GET/POST /api/v1/users`, `GET/PUT/DELETE
//! /api/v1/users/{id}`, `GET/POST /api/v1/users/{id}/api-keys` and `DELETE
//! /api/v1/users/{id}/api-keys/{key}`. The configured admin is listed as user 0, the
//! bootstrap owner, and changed only in settings but for its time zone. Every change
//! goes to the audit log.
//!
//! Every user's time zone (the panel's days and hours) is stored with them
//! (`users::UserStore::timezone_of`): an owner sets anyone's with `PUT
//! /api/v1/users/{id}`, and every user, analysts included, their own with `PUT
//! /api/v1/me`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::audit::Entry;
use crate::auth::{hash_password, Auth};
use crate::error::ApiError;
use crate::state::AppState;
use crate::users::{
    self, ApiKey, FlowScope, Principal, Role, User, UserStore, BOOTSTRAP_ID, DEFAULT_TIMEZONE,
};

/// Shortest password accepted.
const MIN_PASSWORD: usize = 10;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    username: String,
    password: String,
    role: String,
    /// Flow ids or slugs the user is restricted to; none for every flow.
    #[serde(default)]
    flows: Vec<serde_json::Value>,
    /// The IANA time zone the panel reads days and hours in; UTC when absent.
    #[serde(default)]
    timezone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    flows: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    timezone: Option<String>,
}

/// `PUT /api/v1/me`: the settings a user changes for themselves.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeChange {
    timezone: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    name: String,
}

fn bootstrap_view(auth: &Auth, timezone: &str) -> serde_json::Value {
    json!({
        "id": BOOTSTRAP_ID,
        "username": auth.bootstrap_username(),
        "role": Role::Owner,
        "flows": [],
        "bootstrap": true,
        "timezone": timezone,
    })
}

/// An IANA time zone ClickHouse knows (the reports read days in it), or 422 naming
/// `timezone`.
pub async fn checked_timezone(state: &AppState, timezone: &str) -> Result<String, ApiError> {
    let timezone = timezone.trim();
    crate::sql::check_timezone_shape(timezone)?;
    state.check_timezone(timezone).await?;
    Ok(timezone.to_string())
}

fn checked_username(auth: &Auth, username: &str) -> Result<String, ApiError> {
    let username = username.trim();
    let ok = (1..=64).contains(&username.len())
        && username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if !ok {
        return Err(ApiError::invalid(
            "username",
            "username must be 1 to 64 letters, digits, '.', '_', '@' or '-'",
        ));
    }
    if username == auth.bootstrap_username() {
        return Err(ApiError::Conflict(format!(
            "username {username:?} is the configured owner's"
        )));
    }
    Ok(username.to_string())
}

fn checked_role(role: &str) -> Result<Role, ApiError> {
    Role::from_word(role.trim()).ok_or_else(|| {
        ApiError::invalid(
            "role",
            format!(
                "role must be one of {}, got {role:?}",
                Role::WORDS.join(", ")
            ),
        )
    })
}

/// Flow ids from ids or slugs, each one a flow that exists.
fn checked_flows(state: &AppState, flows: &[serde_json::Value]) -> Result<Vec<u32>, ApiError> {
    let mut ids = Vec::new();
    for flow in flows {
        let text = match flow {
            serde_json::Value::String(s) => s.trim().to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            other => {
                return Err(ApiError::invalid(
                    "flows",
                    format!("flows are flow ids or slugs, got {other}"),
                ))
            }
        };
        let found = state.registry.resolve(&text).ok_or_else(|| {
            ApiError::invalid("flows", format!("no flow with id or slug {text:?}"))
        })?;
        if !ids.contains(&found.id) {
            ids.push(found.id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

fn check_role_flows(role: Role, flows: &[u32]) -> Result<(), ApiError> {
    if role == Role::Owner && !flows.is_empty() {
        return Err(ApiError::invalid(
            "flows",
            "an owner sees every flow: leave flows empty, or choose admin or analyst",
        ));
    }
    Ok(())
}

async fn hashed(password: &str) -> Result<String, ApiError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(ApiError::invalid(
            "password",
            format!("password must have {MIN_PASSWORD} characters or more"),
        ));
    }
    let password = password.to_string();
    web::block(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::Internal(format!("hash password: {e}")))?
        .map_err(|e| ApiError::Internal(e.to_string()))
}

async fn stored(store: &UserStore, id: u32) -> Result<User, ApiError> {
    if id == BOOTSTRAP_ID {
        return Err(ApiError::Conflict(
            "user 0 is the configured owner: change it in settings (admin.*)".into(),
        ));
    }
    store
        .by_id(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {id} not found")))
}

async fn unique(store: &UserStore, username: &str, id: u32) -> Result<(), ApiError> {
    match store.by_username(username).await? {
        Some(other) if other.id != id => Err(ApiError::Conflict(format!(
            "username {username:?} is taken by user {}",
            other.id
        ))),
        _ => Ok(()),
    }
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    summary = "Every user, the configured admin first (owners only)",
    responses(
        (status = 200, description = "The users", body = crate::openapi::bodies::UserList),
        (status = 403, description = "Only owners manage users", body = traffsure_core::ErrorBody),
    ))]
pub async fn list(auth: web::Data<Auth>) -> Result<HttpResponse, ApiError> {
    let zones = auth.users().timezones().await?;
    let zone = |id: u32| zones.get(&id).map_or(DEFAULT_TIMEZONE, String::as_str);
    let mut users = vec![bootstrap_view(&auth, zone(BOOTSTRAP_ID))];
    users.extend(
        auth.users()
            .all()
            .await?
            .iter()
            .map(|u| u.view_in(zone(u.id))),
    );
    Ok(HttpResponse::Ok().json(json!({ "users": users })))
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users",
    summary = "Create a user (owners only)",
    request_body = crate::openapi::bodies::NewUser,
    responses(
        (status = 201, description = "Created", body = crate::openapi::bodies::UserView),
        (status = 403, description = "Only owners manage users", body = traffsure_core::ErrorBody),
        (status = 409, description = "The username is taken", body = traffsure_core::ErrorBody),
        (status = 422, description = "A field is not acceptable, named in field", body = traffsure_core::ErrorBody),
    ))]
pub async fn create(
    state: web::Data<AppState>,
    auth: web::Data<Auth>,
    body: web::Json<NewUser>,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let username = checked_username(&auth, &body.username)?;
    let role = checked_role(&body.role)?;
    let flow_ids = checked_flows(&state, &body.flows)?;
    check_role_flows(role, &flow_ids)?;
    let timezone = match &body.timezone {
        Some(tz) => checked_timezone(&state, tz).await?,
        None => DEFAULT_TIMEZONE.to_string(),
    };
    let password_hash = hashed(&body.password).await?;
    let _writing = state.writes.lock().await;
    unique(auth.users(), &username, 0).await?;
    let user = User {
        id: rand::random_range(1..=99_999_999u32),
        username,
        role: role.word().into(),
        flow_ids,
        password_hash,
        created_at: String::new(),
        updated_at: String::new(),
    };
    if timezone != DEFAULT_TIMEZONE {
        auth.users().write_timezone(user.id, &timezone).await?;
    }
    auth.users().write(&user, false).await?;
    // Read back for the stored times; what was written, if a replica lags.
    let user = auth.users().by_id(user.id).await?.unwrap_or(user);
    tracing::info!(user = user.id, username = %user.username, role = %user.role, "user created");
    let view = user.view_in(&timezone);
    Entry::new("user", user.id, "create")
        .after(&view)
        .record(&state, &who)
        .await?;
    Ok(HttpResponse::Created().json(view))
}

#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users",
    summary = "One user with their API keys (owners only)",
    params(("id" = u32, Path, description = "The user's id (0: the configured admin)")),
    responses(
        (status = 200, description = "The user", body = crate::openapi::bodies::UserView),
        (status = 403, description = "Only owners manage users", body = traffsure_core::ErrorBody),
        (status = 404, description = "No such user", body = traffsure_core::ErrorBody),
    ))]
pub async fn get(auth: web::Data<Auth>, id: web::Path<u32>) -> Result<HttpResponse, ApiError> {
    let timezone = auth.users().timezone_of(*id).await?;
    if *id == BOOTSTRAP_ID {
        return Ok(HttpResponse::Ok().json(bootstrap_view(&auth, &timezone)));
    }
    let user = stored(auth.users(), *id).await?;
    let keys: Vec<_> = auth
        .users()
        .keys_of(user.id)
        .await?
        .iter()
        .map(ApiKey::view)
        .collect();
    let mut view = user.view_in(&timezone);
    view["api_keys"] = json!(keys);
    Ok(HttpResponse::Ok().json(view))
}

#[utoipa::path(put, path = "/api/v1/users/{id}", tag = "users",
    summary = "Change a user (owners only)",
    params(("id" = u32, Path, description = "The user's id (0: the configured admin)")),
    request_body = crate::openapi::bodies::UserChange,
    responses(
        (status = 200, description = "Changed", body = crate::openapi::bodies::UserView),
        (status = 403, description = "Only owners manage users", body = traffsure_core::ErrorBody),
        (status = 404, description = "No such user", body = traffsure_core::ErrorBody),
        (status = 409, description = "The username is taken, or the configured admin", body = traffsure_core::ErrorBody),
        (status = 422, description = "A field is not acceptable, named in field", body = traffsure_core::ErrorBody),
    ))]
pub async fn update(
    state: web::Data<AppState>,
    auth: web::Data<Auth>,
    id: web::Path<u32>,
    body: web::Json<UserChange>,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let timezone = match &body.timezone {
        Some(tz) => Some(checked_timezone(&state, tz).await?),
        None => None,
    };
    let _writing = state.writes.lock().await;
    let zone_before = auth.users().timezone_of(*id).await?;
    let only_timezone = body.username.is_none()
        && body.password.is_none()
        && body.role.is_none()
        && body.flows.is_none();
    if *id == BOOTSTRAP_ID && only_timezone {
        // The configured owner's time zone is the one thing of it stored here.
        let timezone = timezone.unwrap_or(zone_before.clone());
        let view =
            change_timezone(&state, &auth, &who, BOOTSTRAP_ID, &zone_before, &timezone).await?;
        return Ok(HttpResponse::Ok().json(view));
    }
    let before = stored(auth.users(), *id).await?;
    let mut user = before.clone();
    if let Some(username) = &body.username {
        user.username = checked_username(&auth, username)?;
        unique(auth.users(), &user.username, user.id).await?;
    }
    if let Some(role) = &body.role {
        user.role = checked_role(role)?.word().into();
    }
    if let Some(flows) = &body.flows {
        user.flow_ids = checked_flows(&state, flows)?;
    }
    check_role_flows(user.role(), &user.flow_ids)?;
    if let Some(password) = &body.password {
        user.password_hash = hashed(password).await?;
    }
    let zone_after = timezone.unwrap_or(zone_before.clone());
    if zone_after != zone_before {
        auth.users().write_timezone(user.id, &zone_after).await?;
    }
    auth.users().write(&user, false).await?;
    // Read back for the stored times; what was written, if a replica lags.
    let user = auth.users().by_id(user.id).await?.unwrap_or(user);
    let mut after = user.view_in(&zone_after);
    if body.password.is_some() {
        after["password_changed"] = json!(true);
    }
    Entry::new("user", user.id, "update")
        .before(&before.view_in(&zone_before))
        .after(&after)
        .record(&state, &who)
        .await?;
    Ok(HttpResponse::Ok().json(user.view_in(&zone_after)))
}

#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users",
    summary = "Delete a user and with them their API keys (owners only)",
    params(("id" = u32, Path, description = "The user's id (0: the configured admin)")),
    responses(
        (status = 200, description = "Deleted", body = crate::openapi::bodies::UserDeleted),
        (status = 403, description = "Only owners manage users", body = traffsure_core::ErrorBody),
        (status = 404, description = "No such user", body = traffsure_core::ErrorBody),
        (status = 409, description = "Yourself, or the configured admin", body = traffsure_core::ErrorBody),
    ))]
pub async fn delete(
    state: web::Data<AppState>,
    auth: web::Data<Auth>,
    id: web::Path<u32>,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    if *id == who.user_id {
        return Err(ApiError::Conflict("you cannot delete yourself".into()));
    }
    let _writing = state.writes.lock().await;
    let user = stored(auth.users(), *id).await?;
    auth.users().write(&user, true).await?;
    tracing::info!(user = user.id, username = %user.username, "user deleted");
    Entry::new("user", user.id, "delete")
        .before(&user.view())
        .record(&state, &who)
        .await?;
    Ok(HttpResponse::Ok().json(json!({"deleted": user.id})))
}

/// Stores user `id`'s time zone `after` (was `before`), with its audit entry; the
/// user's view as it is now.
async fn change_timezone(
    state: &AppState,
    auth: &Auth,
    who: &Principal,
    id: u32,
    before: &str,
    after: &str,
) -> Result<serde_json::Value, ApiError> {
    let user = if id == BOOTSTRAP_ID {
        None
    } else {
        Some(stored(auth.users(), id).await?)
    };
    let view = |tz: &str| match &user {
        Some(user) => user.view_in(tz),
        None => bootstrap_view(auth, tz),
    };
    if before != after {
        auth.users().write_timezone(id, after).await?;
    }
    tracing::info!(user = id, timezone = after, "time zone set");
    Entry::new("user", id, "update")
        .before(&view(before))
        .after(&view(after))
        .record(state, who)
        .await?;
    Ok(view(after))
}

/// `GET /api/v1/me`: who the request is from, by session or key, with role, flows and
/// time zone.
#[utoipa::path(get, path = "/api/v1/me", tag = "users",
    summary = "Who the request is from, with role, flows and time zone",
    responses((status = 200, description = "The user", body = crate::openapi::bodies::Me)))]
pub async fn me(auth: web::Data<Auth>, principal: Principal) -> Result<HttpResponse, ApiError> {
    let timezone = auth.users().timezone_of(principal.user_id).await?;
    Ok(HttpResponse::Ok().json(me_view(&principal, &timezone)))
}

fn me_view(principal: &Principal, timezone: &str) -> serde_json::Value {
    let flows: Vec<u32> = match &principal.scope {
        FlowScope::All => Vec::new(),
        FlowScope::Only(ids) => ids.iter().copied().collect(),
    };
    json!({
        "id": principal.user_id,
        "username": principal.username,
        "role": principal.role,
        "flows": flows,
        "restricted": principal.scope.is_restricted(),
        "via": principal.via.word(),
        "bootstrap": principal.user_id == BOOTSTRAP_ID,
        "timezone": timezone,
    })
}

/// `PUT /api/v1/me`: changes one's own settings (the time zone), whatever one's role:
/// an analyst, who changes nothing else, sets their own time zone here.
#[utoipa::path(put, path = "/api/v1/me", tag = "users",
    summary = "Change one's own time zone (every role, analysts included)",
    request_body = crate::openapi::bodies::MeChange,
    responses(
        (status = 200, description = "Changed", body = crate::openapi::bodies::Me),
        (status = 404, description = "The user was deleted", body = traffsure_core::ErrorBody),
        (status = 422, description = "An unknown time zone, named in field", body = traffsure_core::ErrorBody),
    ))]
pub async fn update_me(
    state: web::Data<AppState>,
    auth: web::Data<Auth>,
    body: web::Json<MeChange>,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    let timezone = checked_timezone(&state, &body.timezone).await?;
    let _writing = state.writes.lock().await;
    let before = auth.users().timezone_of(who.user_id).await?;
    change_timezone(&state, &auth, &who, who.user_id, &before, &timezone).await?;
    Ok(HttpResponse::Ok().json(me_view(&who, &timezone)))
}

#[utoipa::path(get, path = "/api/v1/users/{id}/api-keys", tag = "users",
    summary = "A user's API keys (owners; anyone for their own)",
    params(("id" = u32, Path, description = "The user's id (0: the configured admin)")),
    responses(
        (status = 200, description = "The keys", body = crate::openapi::bodies::ApiKeyList),
        (status = 403, description = "Only owners manage users", body = traffsure_core::ErrorBody),
        (status = 404, description = "No such user", body = traffsure_core::ErrorBody),
        (status = 409, description = "The configured admin has no stored keys", body = traffsure_core::ErrorBody),
    ))]
pub async fn keys(auth: web::Data<Auth>, id: web::Path<u32>) -> Result<HttpResponse, ApiError> {
    let user = stored(auth.users(), *id).await?;
    let keys: Vec<_> = auth
        .users()
        .keys_of(user.id)
        .await?
        .iter()
        .map(ApiKey::view)
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "api_keys": keys })))
}

/// Makes an API key for the user, answered once with the key itself.
#[utoipa::path(post, path = "/api/v1/users/{id}/api-keys", tag = "users",
    summary = "Make an API key for a user, answered once with the key (owners; anyone for their own)",
    params(("id" = u32, Path, description = "The user's id (0: the configured admin)")),
    request_body = crate::openapi::bodies::NewKey,
    responses(
        (status = 201, description = "Created", body = crate::openapi::bodies::NewApiKeyView),
        (status = 403, description = "Only owners manage users", body = traffsure_core::ErrorBody),
        (status = 404, description = "No such user", body = traffsure_core::ErrorBody),
        (status = 409, description = "The configured admin has no stored keys", body = traffsure_core::ErrorBody),
        (status = 422, description = "A field is not acceptable, named in field", body = traffsure_core::ErrorBody),
    ))]
pub async fn create_key(
    state: web::Data<AppState>,
    auth: web::Data<Auth>,
    id: web::Path<u32>,
    body: web::Json<NewKey>,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid(
            "name",
            "name must have 1 to 100 characters",
        ));
    }
    let user = stored(auth.users(), *id).await?;
    let (key_id, key) = users::new_api_key();
    let stored_key = ApiKey {
        key_id,
        user_id: user.id,
        name: name.to_string(),
        key_sha256: users::sha256_hex(&key),
        revoked: 0,
        created_at: String::new(),
    };
    auth.users().write_key(&stored_key, false).await?;
    let stored_key = auth
        .users()
        .key(&stored_key.key_id)
        .await?
        .unwrap_or(stored_key);
    tracing::info!(user = user.id, key_id = %stored_key.key_id, "api key created");
    let view = stored_key.view();
    Entry::new("api_key", &stored_key.key_id, "create")
        .after(&view)
        .record(&state, &who)
        .await?;
    let mut answer = view;
    answer["key"] = json!(key);
    answer["role"] = json!(user.role);
    Ok(HttpResponse::Created().json(answer))
}

/// Revokes a key at once: the next request with it is refused on every replica.
#[utoipa::path(delete, path = "/api/v1/users/{id}/api-keys/{key}", tag = "users",
    summary = "Revoke an API key at once (owners; anyone for their own)",
    params(("id" = u32, Path, description = "The user's id (0: the configured admin)"), ("key" = String, Path, description = "The key id")),
    responses(
        (status = 200, description = "Revoked", body = crate::openapi::bodies::KeyRevoked),
        (status = 403, description = "Only owners manage users", body = traffsure_core::ErrorBody),
        (status = 404, description = "No such user or key", body = traffsure_core::ErrorBody),
        (status = 409, description = "The configured admin has no stored keys", body = traffsure_core::ErrorBody),
    ))]
pub async fn revoke_key(
    state: web::Data<AppState>,
    auth: web::Data<Auth>,
    path: web::Path<(u32, String)>,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    let (id, key_id) = path.into_inner();
    let user = stored(auth.users(), id).await?;
    let key = auth
        .users()
        .key(&key_id)
        .await?
        .filter(|k| k.user_id == user.id)
        .ok_or_else(|| ApiError::NotFound(format!("API key {key_id} of user {id} not found")))?;
    auth.users().write_key(&key, true).await?;
    tracing::info!(user = user.id, key_id = %key.key_id, "api key revoked");
    Entry::new("api_key", &key.key_id, "revoke")
        .before(&key.view())
        .record(&state, &who)
        .await?;
    Ok(HttpResponse::Ok().json(json!({"revoked": key.key_id})))
}

//! Synapse-compatible user administration: shared-secret registration, server version, the user
//! list and details, create/modify, deactivation, password reset, the admin flag, devices,
//! whois, joined rooms and server notices.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use feldpost_service::ErrorKind;
use feldpost_service::admin::{DeviceRecord, UserListQuery, UserOrder, UserRecord};
use feldpost_service::admin::{SharedSecretRegistration, UserChanges};
use feldpost_service::ratelimit::Action;
use serde_json::{Map, Value, json};

use super::{AdminAuth, field, parse_bool, parse_dir, parse_u64, required_field};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientIp, Json as Body, Path, Query};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/_synapse/admin/v1/register",
            get(register_nonce).post(register),
        )
        .route("/_synapse/admin/v1/server_version", get(server_version))
        .route("/_synapse/admin/v2/users", get(list_users))
        .route(
            "/_synapse/admin/v2/users/{user_id}",
            get(get_user).put(put_user),
        )
        .route("/_synapse/admin/v1/deactivate/{user_id}", post(deactivate))
        .route(
            "/_synapse/admin/v1/reset_password/{user_id}",
            post(reset_password),
        )
        .route(
            "/_synapse/admin/v1/users/{user_id}/admin",
            get(get_admin).put(put_admin),
        )
        .route(
            "/_synapse/admin/v1/users/{user_id}/joined_rooms",
            get(joined_rooms),
        )
        .route("/_synapse/admin/v2/users/{user_id}/devices", get(devices))
        .route(
            "/_synapse/admin/v2/users/{user_id}/devices/{device_id}",
            get(device).put(put_device).delete(delete_device),
        )
        .route(
            "/_synapse/admin/v2/users/{user_id}/delete_devices",
            post(delete_devices),
        )
        .route("/_synapse/admin/v1/whois/{user_id}", get(whois))
        .route(
            "/_synapse/admin/v1/send_server_notice",
            post(send_server_notice),
        )
}

fn q_str<'a>(q: &'a HashMap<String, Value>, key: &str) -> Option<&'a str> {
    q.get(key).and_then(Value::as_str)
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::InvalidParam, msg)
}

// ---- shared-secret registration ----

async fn register_nonce(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
) -> ApiResult<Json<Value>> {
    // Nonces are capped server-wide; per address, so that one client cannot use up the cap.
    state
        .services
        .rate_limiter
        .check(Action::Login, &format!("shared-secret-nonce:{ip}"))?;
    let nonce = state.services.admin.nonce()?;
    Ok(Json(json!({"nonce": nonce})))
}

/// Not rate limited beyond its nonces: each attempt spends one, and the MAC is checked in
/// constant time.
async fn register(
    State(state): State<AppState>,
    Body(body): Body<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let s = &state.services;
    let required = |key: &str| -> ApiResult<String> {
        field::<String>(&body, key)?
            .ok_or_else(|| ApiError::new(ErrorKind::MissingParam, format!("{key} missing")))
    };
    let req = SharedSecretRegistration {
        nonce: required("nonce")?,
        username: required("username")?,
        password: required("password")?,
        mac: required("mac")?,
        displayname: field::<Option<String>>(&body, "displayname")?.flatten(),
        admin: field::<bool>(&body, "admin")?.unwrap_or(false),
        user_type: field::<Option<String>>(&body, "user_type")?.flatten(),
    };
    let session = s.admin.register_with_shared_secret(req).await?;
    Ok(Json(json!({
        "access_token": session.access_token,
        "user_id": session.user_id,
        "home_server": s.server_name.as_str(),
        "device_id": session.device_id,
    })))
}

async fn server_version(_: AdminAuth) -> Json<Value> {
    Json(json!({"server_version": format!("Feldpost {}", env!("CARGO_PKG_VERSION"))}))
}

// ---- users ----

/// Synapse reports account creation in seconds.
fn creation_ts(u: &UserRecord) -> i64 {
    u.created_ms / 1000
}

fn user_summary(u: &UserRecord, last_seen: Option<i64>) -> Value {
    json!({
        "name": u.user_id,
        "user_type": null,
        "is_guest": false,
        "admin": u.is_admin,
        "deactivated": u.deactivated,
        "erased": false,
        "shadow_banned": false,
        "displayname": u.displayname,
        "avatar_url": u.avatar_url,
        "creation_ts": creation_ts(u),
        "approved": true,
        "locked": false,
        "suspended": false,
        "last_seen_ts": last_seen,
    })
}

fn user_details(u: &UserRecord, last_seen: Option<i64>) -> Value {
    let mut v = user_summary(u, last_seen);
    if let Value::Object(m) = &mut v {
        m.insert("threepids".into(), json!([]));
        m.insert("external_ids".into(), json!([]));
        m.insert("appservice_id".into(), Value::Null);
        m.insert("consent_server_notice_sent".into(), Value::Null);
        m.insert("consent_version".into(), Value::Null);
        m.insert("consent_ts".into(), Value::Null);
    }
    v
}

async fn list_users(
    State(state): State<AppState>,
    _: AdminAuth,
    Query(q): Query<HashMap<String, Value>>,
) -> ApiResult<Json<Value>> {
    let from = parse_u64(q_str(&q, "from"), "from", 0)?;
    let limit = parse_u64(q_str(&q, "limit"), "limit", 100)?.min(1000);
    let order = match q_str(&q, "order_by") {
        None | Some("") | Some("name") => UserOrder::Name,
        Some("admin") => UserOrder::Admin,
        Some("deactivated") => UserOrder::Deactivated,
        Some("displayname") => UserOrder::Displayname,
        Some("avatar_url") => UserOrder::AvatarUrl,
        Some("creation_ts") => UserOrder::CreationTs,
        Some("last_seen_ts") => UserOrder::LastSeenTs,
        // Every user here is a regular, unlocked, visible user: these orders are all ties.
        Some("is_guest" | "user_type" | "shadow_banned" | "locked" | "approved") => UserOrder::Name,
        Some(_) => return Err(bad("Unknown value for order_by")),
    };
    let descending = parse_dir(q_str(&q, "dir"))?;
    // Guests do not exist here: including or excluding them changes nothing.
    parse_bool(q_str(&q, "guests"), "guests")?;
    let admins = parse_bool(q_str(&q, "admins"), "admins")?;
    let include_deactivated = parse_bool(q_str(&q, "deactivated"), "deactivated")?.unwrap_or(false);
    parse_bool(q_str(&q, "locked"), "locked")?;
    let query = UserListQuery {
        name: q_str(&q, "name")
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        user_id: q_str(&q, "user_id")
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        admins,
        include_deactivated,
        order,
        descending,
        from,
        limit,
    };
    let (users, total) = state.services.admin.list_users(query).await?;
    let list: Vec<Value> = users
        .iter()
        .map(|e| user_summary(&e.user, e.last_seen_ms))
        .collect();
    let mut body = json!({"users": list, "total": total});
    let next = from + users.len() as u64;
    if next < total && !users.is_empty() {
        body["next_token"] = json!(next.to_string());
    }
    Ok(Json(body))
}

async fn get_user(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let a = &state.services.admin;
    let user_id = a.local_user(&user_id)?;
    let u = a.user(&user_id).await?;
    let last_seen = a.last_seen(&user_id).await?;
    Ok(Json(user_details(&u, last_seen)))
}

/// Fields of `PUT /v2/users/{user_id}` this server has no notion of, with the values that mean
/// "nothing" and are therefore accepted.
fn check_unsupported(body: &Map<String, Value>) -> ApiResult<()> {
    for key in ["threepids", "external_ids"] {
        match body.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(Value::Array(_)) => {
                return Err(ApiError::new(
                    ErrorKind::Unrecognized,
                    format!("{key} are not supported by this server"),
                ));
            }
            Some(_) => return Err(bad(format!("{key} must be a list"))),
        }
    }
    if field::<bool>(body, "locked")? == Some(true) {
        return Err(ApiError::new(
            ErrorKind::Unrecognized,
            "Locking accounts is not supported by this server; deactivate instead",
        ));
    }
    if field::<Option<String>>(body, "user_type")?
        .flatten()
        .is_some()
    {
        return Err(bad("Invalid user type"));
    }
    Ok(())
}

async fn put_user(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(user_id): Path<String>,
    Body(body): Body<Map<String, Value>>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let a = &state.services.admin;
    let user_id = a.local_user(&user_id)?;
    check_unsupported(&body)?;
    let password = field::<Option<String>>(&body, "password")?.flatten();
    if password.as_ref().is_some_and(|p| p.len() > 512) {
        return Err(bad("Invalid password"));
    }
    let changes = UserChanges {
        password,
        logout_devices: field::<bool>(&body, "logout_devices")?.unwrap_or(true),
        displayname: field::<Option<String>>(&body, "displayname")?,
        avatar_url: field::<Option<String>>(&body, "avatar_url")?,
        admin: field::<bool>(&body, "admin")?,
        deactivated: field::<bool>(&body, "deactivated")?,
    };
    let created = a.upsert_user(&admin.actor(), &user_id, changes).await?;
    let u = a.user(&user_id).await?;
    let last_seen = a.last_seen(&user_id).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(user_details(&u, last_seen))))
}

async fn deactivate(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(user_id): Path<String>,
    Body(body): Body<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let a = &state.services.admin;
    let user_id = a.local_user(&user_id)?;
    let erase = field::<bool>(&body, "erase")?.unwrap_or(false);
    a.deactivate(&admin.actor(), &user_id, erase).await?;
    Ok(Json(json!({"id_server_unbind_result": "no-support"})))
}

async fn reset_password(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(user_id): Path<String>,
    Body(body): Body<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let a = &state.services.admin;
    let user_id = a.local_user(&user_id)?;
    let pw = required_field::<String>(&body, "new_password")?;
    let logout = field::<bool>(&body, "logout_devices")?.unwrap_or(true);
    a.reset_password(&admin.actor(), &user_id, &pw, logout)
        .await?;
    Ok(Json(json!({})))
}

async fn get_admin(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let a = &state.services.admin;
    let user_id = a.local_user(&user_id)?;
    let u = a.user(&user_id).await?;
    Ok(Json(json!({"admin": u.is_admin})))
}

async fn put_admin(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(user_id): Path<String>,
    Body(body): Body<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let a = &state.services.admin;
    let user_id = a.local_user(&user_id)?;
    let flag = required_field::<bool>(&body, "admin")?;
    a.set_admin(&admin.actor(), &user_id, flag).await?;
    Ok(Json(json!({})))
}

async fn joined_rooms(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let a = &state.services.admin;
    let user_id = a.local_user(&user_id)?;
    let rooms = a.joined_rooms(&user_id).await?;
    Ok(Json(json!({"total": rooms.len(), "joined_rooms": rooms})))
}

// ---- devices ----

fn device_json(d: &DeviceRecord) -> Value {
    json!({
        "device_id": d.device_id,
        "display_name": d.display_name,
        "last_seen_ip": d.last_seen_ip,
        "last_seen_ts": d.last_seen_ms,
        "last_seen_user_agent": null,
        "user_id": d.user_id,
    })
}

async fn devices(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let a = &state.services.admin;
    let user_id = a.local_user(&user_id)?;
    let list: Vec<Value> = a.devices(&user_id).await?.iter().map(device_json).collect();
    Ok(Json(json!({"total": list.len(), "devices": list})))
}

async fn device(
    State(state): State<AppState>,
    _: AdminAuth,
    Path((user_id, device_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let a = &state.services.admin;
    let user_id = a.local_user(&user_id)?;
    Ok(Json(device_json(&a.device(&user_id, &device_id).await?)))
}

async fn put_device(
    State(state): State<AppState>,
    _: AdminAuth,
    Path((user_id, device_id)): Path<(String, String)>,
    Body(body): Body<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let a = &state.services.admin;
    let user_id = a.local_user(&user_id)?;
    let name = field::<Option<String>>(&body, "display_name")?.flatten();
    if name.as_ref().is_some_and(|n| n.len() > 100) {
        return Err(bad("display_name is too long"));
    }
    a.set_device_name(&user_id, &device_id, name.as_deref())
        .await?;
    Ok(Json(json!({})))
}

async fn delete_device(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path((user_id, device_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let a = &state.services.admin;
    let user_id = a.local_user(&user_id)?;
    a.delete_devices(&admin.actor(), &user_id, &[device_id])
        .await?;
    Ok(Json(json!({})))
}

async fn delete_devices(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(user_id): Path<String>,
    Body(body): Body<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let a = &state.services.admin;
    let user_id = a.local_user(&user_id)?;
    let ids = field::<Vec<String>>(&body, "devices")?
        .ok_or_else(|| ApiError::new(ErrorKind::MissingParam, "devices missing"))?;
    a.delete_devices(&admin.actor(), &user_id, &ids).await?;
    Ok(Json(json!({})))
}

async fn whois(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let a = &state.services.admin;
    let user_id = a.local_user(&user_id)?;
    a.user(&user_id).await?;
    let mut devices = Map::new();
    for c in a.whois(&user_id).await? {
        let connections = match (&c.ip, c.last_seen_ms) {
            (None, None) => vec![],
            _ => vec![json!({"ip": c.ip, "last_seen": c.last_seen_ms, "user_agent": null})],
        };
        devices.insert(
            c.device_id,
            json!({"sessions": [{"connections": connections}]}),
        );
    }
    Ok(Json(json!({"user_id": user_id, "devices": devices})))
}

// ---- server notices ----

async fn send_server_notice(
    State(state): State<AppState>,
    _: AdminAuth,
    Body(body): Body<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let s = &state.services;
    let user_id = required_field::<String>(&body, "user_id")?;
    let user_id = s.admin.local_user(&user_id)?;
    let content = required_field::<Value>(&body, "content")?;
    if body.get("type").is_some_and(|t| t != "m.room.message") {
        return Err(ApiError::new(
            ErrorKind::Unrecognized,
            "Only m.room.message notices are supported",
        ));
    }
    let event_id = s.server_notices.send(&user_id, content).await?;
    Ok(Json(json!({"event_id": event_id})))
}

//! Device management: listing, renaming and deleting one's own devices. Deleting needs the
//! password again (user-interactive auth), since it logs the device out.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use feldpost_service::ErrorKind;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::uia::{AuthData, require_password};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, ClientIp, Json as Body, Path};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/client/v3/devices", get(list))
        .route(
            "/_matrix/client/v3/devices/{device_id}",
            get(get_device).put(update).delete(delete),
        )
        .route("/_matrix/client/v3/delete_devices", post(delete_many))
}

/// A device as the spec shows it; absent fields are left out rather than null.
fn device_json(
    device_id: String,
    display_name: Option<String>,
    last_seen_ip: Option<String>,
    last_seen_ts: Option<i64>,
) -> Value {
    let mut v = Map::new();
    v.insert("device_id".into(), json!(device_id));
    if let Some(n) = display_name {
        v.insert("display_name".into(), json!(n));
    }
    if let Some(ip) = last_seen_ip {
        v.insert("last_seen_ip".into(), json!(ip));
    }
    if let Some(ts) = last_seen_ts {
        v.insert("last_seen_ts".into(), json!(ts));
    }
    Value::Object(v)
}

fn not_found() -> ApiError {
    ApiError::new(ErrorKind::NotFound, "No such device")
}

async fn list(
    State(state): State<AppState>,
    Auth(r): Auth,
    ClientIp(ip): ClientIp,
) -> ApiResult<Json<Value>> {
    let accounts = &state.services.accounts;
    // This request is itself a sighting of the calling device.
    accounts.touch_device(&r, &ip).await?;
    let devices: Vec<Value> = accounts
        .devices(&r.user_id)
        .await?
        .into_iter()
        .map(|d| device_json(d.device_id, d.display_name, d.last_seen_ip, d.last_seen_ms))
        .collect();
    Ok(Json(json!({"devices": devices})))
}

async fn get_device(
    State(state): State<AppState>,
    Auth(r): Auth,
    ClientIp(ip): ClientIp,
    Path(device_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let accounts = &state.services.accounts;
    if device_id == r.device_id {
        accounts.touch_device(&r, &ip).await?;
    }
    let device = accounts
        .device(&r.user_id, &device_id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(device_json(
        device.device_id,
        device.display_name,
        device.last_seen_ip,
        device.last_seen_ms,
    )))
}

/// The longest device display name accepted, in characters.
const MAX_DISPLAY_NAME_CHARS: usize = 100;

#[derive(Deserialize)]
struct UpdateBody {
    display_name: Option<String>,
}

async fn update(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(device_id): Path<String>,
    Body(body): Body<UpdateBody>,
) -> ApiResult<Json<Value>> {
    let accounts = &state.services.accounts;
    match body.display_name {
        Some(name) => {
            if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
                return Err(ApiError::new(
                    ErrorKind::InvalidParam,
                    format!("display_name may be at most {MAX_DISPLAY_NAME_CHARS} characters"),
                ));
            }
            accounts
                .set_device_name(&r.user_id, &device_id, Some(&name))
                .await?;
        }
        // Nothing to change, but an unknown device is still an error. Only application services
        // may create devices here, and this server has none.
        None => {
            accounts
                .device(&r.user_id, &device_id)
                .await?
                .ok_or_else(not_found)?;
        }
    }
    Ok(Json(json!({})))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DeleteBody {
    auth: Option<AuthData>,
}

async fn delete(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(device_id): Path<String>,
    Body(body): Body<DeleteBody>,
) -> ApiResult<Json<Value>> {
    // The UIA session is bound to the device, so that it cannot be replayed for another.
    require_password(&state, &r, body.auth, &format!("delete_device:{device_id}")).await?;
    // Only the requester's devices can match; one that is gone already counts as deleted.
    state
        .services
        .accounts
        .delete_devices(&r.user_id, std::slice::from_ref(&device_id))
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct DeleteManyBody {
    devices: Vec<String>,
    auth: Option<AuthData>,
}

async fn delete_many(
    State(state): State<AppState>,
    Auth(r): Auth,
    Body(body): Body<DeleteManyBody>,
) -> ApiResult<Json<Value>> {
    let mut devices = body.devices;
    devices.sort();
    devices.dedup();
    let purpose = format!("delete_devices:{}", devices.join("\u{0}"));
    require_password(&state, &r, body.auth, &purpose).await?;
    state
        .services
        .accounts
        .delete_devices(&r.user_id, &devices)
        .await?;
    Ok(Json(json!({})))
}

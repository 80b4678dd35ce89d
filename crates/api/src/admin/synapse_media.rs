//! Synapse-compatible media administration: a user's uploads, the media a room references, and
//! quarantine (of one item, a room's, or a user's). Quarantined media is no longer served.

use std::collections::HashMap;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use feldpost_service::ErrorKind;
use feldpost_service::admin::MediaOrder;
use ruma::OwnedRoomId;
use serde_json::{Value, json};

use super::{AdminAuth, parse_dir, parse_u64};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Path, Query, parse_id};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_synapse/admin/v1/users/{user_id}/media", get(user_media))
        .route("/_synapse/admin/v1/room/{room_id}/media", get(room_media))
        .route(
            "/_synapse/admin/v1/media/quarantine/{server_name}/{media_id}",
            post(quarantine),
        )
        .route(
            "/_synapse/admin/v1/media/unquarantine/{server_name}/{media_id}",
            post(unquarantine),
        )
        .route(
            "/_synapse/admin/v1/room/{room_id}/media/quarantine",
            post(quarantine_room),
        )
        .route(
            "/_synapse/admin/v1/user/{user_id}/media/quarantine",
            post(quarantine_user),
        )
}

async fn user_media(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(user_id): Path<String>,
    Query(q): Query<HashMap<String, Value>>,
) -> ApiResult<Json<Value>> {
    let a = &state.services.admin;
    let user_id = a.local_user(&user_id)?;
    a.user(&user_id).await?;
    let get = |k: &str| q.get(k).and_then(Value::as_str);
    let from = parse_u64(get("from"), "from", 0)?;
    let limit = parse_u64(get("limit"), "limit", 100)?.min(1000);
    let order = match get("order_by") {
        None | Some("") | Some("created_ts") => MediaOrder::CreatedTs,
        Some("media_id") => MediaOrder::MediaId,
        Some("upload_name") => MediaOrder::UploadName,
        Some("media_length") => MediaOrder::MediaLength,
        Some("media_type") => MediaOrder::MediaType,
        Some("quarantined_by") => MediaOrder::QuarantinedBy,
        // Nothing here tracks access times or protection: those orders are ties.
        Some("last_access_ts" | "safe_from_quarantine") => MediaOrder::CreatedTs,
        Some(_) => {
            return Err(ApiError::new(
                ErrorKind::InvalidParam,
                "Unknown value for order_by",
            ));
        }
    };
    let descending = parse_dir(get("dir"))?;
    let (media, total) = a
        .user_media(&user_id, from, limit, order, descending)
        .await?;
    let list: Vec<Value> = media
        .iter()
        .map(|m| {
            json!({
                "media_id": m.media.media_id,
                "media_type": m.media.content_type,
                "media_length": m.media.size,
                "upload_name": m.media.filename,
                "created_ts": m.media.created_ms,
                "last_access_ts": null,
                "quarantined_by": m.quarantined_by,
                "safe_from_quarantine": false,
            })
        })
        .collect();
    let mut body = json!({"media": list, "total": total});
    let next = from + media.len() as u64;
    if next < total && !media.is_empty() {
        body["next_token"] = json!(next);
    }
    Ok(Json(body))
}

async fn room_media(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    let (local, remote) = state.services.admin.room_media(&room_id).await?;
    Ok(Json(json!({"local": local, "remote": remote})))
}

async fn quarantine(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path((server_name, media_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    state
        .services
        .admin
        .quarantine_media(&admin.actor(), &server_name, &media_id, true)
        .await?;
    Ok(Json(json!({})))
}

async fn unquarantine(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path((server_name, media_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    state
        .services
        .admin
        .quarantine_media(&admin.actor(), &server_name, &media_id, false)
        .await?;
    Ok(Json(json!({})))
}

async fn quarantine_room(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    let n = state
        .services
        .admin
        .quarantine_room_media(&admin.actor(), &room_id)
        .await?;
    Ok(Json(json!({"num_quarantined": n})))
}

async fn quarantine_user(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let a = &state.services.admin;
    let user_id = a.local_user(&user_id)?;
    a.user(&user_id).await?;
    let n = a.quarantine_user_media(&admin.actor(), &user_id).await?;
    Ok(Json(json!({"num_quarantined": n})))
}

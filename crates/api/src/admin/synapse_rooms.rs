//! Synapse-compatible room administration: the room list, details, members, state, blocking,
//! and deletion with purge (v1 answers with the outcome; v2 answers with a delete id whose
//! status is complete by the time it is returned).

use std::collections::HashMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use feldpost_service::ErrorKind;
use feldpost_service::admin::{DeletionRecord, RoomDeletion};
use feldpost_service::admin::{RoomListEntry, RoomListQuery, RoomOrder};
use ruma::OwnedRoomId;
use serde_json::{Map, Value, json};

use super::{AdminAuth, field, parse_dir, parse_u64, required_field};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json as Body, Path, Query, parse_id};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_synapse/admin/v1/rooms", get(list))
        .route(
            "/_synapse/admin/v1/rooms/{room_id}",
            get(details).delete(delete_v1),
        )
        .route("/_synapse/admin/v1/rooms/{room_id}/members", get(members))
        .route(
            "/_synapse/admin/v1/rooms/{room_id}/state",
            get(state_events),
        )
        .route(
            "/_synapse/admin/v1/rooms/{room_id}/block",
            get(get_block).put(put_block),
        )
        .route(
            "/_synapse/admin/v2/rooms/{room_id}",
            axum::routing::delete(delete_v2),
        )
        .route(
            "/_synapse/admin/v2/rooms/{room_id}/delete_status",
            get(status_by_room),
        )
        .route(
            "/_synapse/admin/v2/rooms/delete_status/{delete_id}",
            get(status_by_id),
        )
}

fn room_json(r: &RoomListEntry) -> Value {
    json!({
        "room_id": r.room_id,
        "name": r.name,
        "canonical_alias": r.canonical_alias,
        "joined_members": r.joined_members,
        "joined_local_members": r.joined_local_members,
        "version": r.version,
        "creator": r.creator,
        "encryption": r.encryption,
        "federatable": r.federatable,
        "public": r.published,
        "join_rules": r.join_rules,
        "guest_access": r.guest_access,
        "history_visibility": r.history_visibility,
        "state_events": r.state_events,
        "room_type": r.room_type,
    })
}

fn room_id(s: &str) -> ApiResult<OwnedRoomId> {
    parse_id(s, "room id")
}

async fn list(
    State(state): State<AppState>,
    _: AdminAuth,
    Query(q): Query<HashMap<String, Value>>,
) -> ApiResult<Json<Value>> {
    let get = |k: &str| q.get(k).and_then(Value::as_str);
    let from = parse_u64(get("from"), "from", 0)?;
    let limit = parse_u64(get("limit"), "limit", 100)?.min(1000);
    let order = match get("order_by") {
        None | Some("") | Some("name") | Some("alphabetical") => RoomOrder::Name,
        Some("size") | Some("joined_members") => RoomOrder::JoinedMembers,
        Some("canonical_alias") => RoomOrder::CanonicalAlias,
        Some("joined_local_members") => RoomOrder::JoinedLocalMembers,
        Some("version") => RoomOrder::Version,
        Some("creator") => RoomOrder::Creator,
        Some("encryption") => RoomOrder::Encryption,
        Some("federatable") => RoomOrder::Federatable,
        Some("public") => RoomOrder::Public,
        Some("join_rules") => RoomOrder::JoinRules,
        Some("guest_access") => RoomOrder::GuestAccess,
        Some("history_visibility") => RoomOrder::HistoryVisibility,
        Some("state_events") => RoomOrder::StateEvents,
        Some(_) => {
            return Err(ApiError::new(
                ErrorKind::InvalidParam,
                "Unknown value for order_by",
            ));
        }
    };
    // Synapse's deprecated `size` order is largest first.
    let descending = parse_dir(get("dir"))? ^ (get("order_by") == Some("size"));
    let query = RoomListQuery {
        search: get("search_term")
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        order,
        descending,
        from,
        limit,
        server_name: String::new(),
    };
    let (rooms, total) = state.services.admin.list_rooms(query).await?;
    let list: Vec<Value> = rooms.iter().map(room_json).collect();
    let mut body = json!({"rooms": list, "offset": from, "total_rooms": total});
    let next = from + rooms.len() as u64;
    if next < total && !rooms.is_empty() {
        body["next_batch"] = json!(next);
    }
    if from > 0 {
        body["prev_batch"] = json!(from.saturating_sub(limit));
    }
    Ok(Json(body))
}

async fn details(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let s = &state.services;
    let id = room_id(&id)?;
    let r = s.admin.room(&id).await?;
    let mut devices = 0usize;
    for m in s.admin.room_members(&id).await? {
        if let Ok(u) = ruma::OwnedUserId::try_from(m.as_str())
            && u.server_name() == s.server_name
        {
            devices += s.accounts.devices(&u).await?.len();
        }
    }
    let mut v = room_json(&r);
    if let Value::Object(m) = &mut v {
        m.insert("topic".into(), json!(r.topic));
        m.insert("avatar".into(), json!(r.avatar));
        m.insert("joined_local_devices".into(), json!(devices));
        m.insert("forgotten".into(), json!(false));
    }
    Ok(Json(v))
}

async fn members(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = room_id(&id)?;
    let members = state.services.admin.room_members(&id).await?;
    Ok(Json(json!({"total": members.len(), "members": members})))
}

async fn state_events(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = room_id(&id)?;
    let events = state.services.admin.room_state(&id).await?;
    Ok(Json(json!({"state": events})))
}

async fn get_block(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = room_id(&id)?;
    Ok(Json(
        match state.services.admin.room_blocked_by(&id).await? {
            Some(by) => json!({"block": true, "user_id": by}),
            None => json!({"block": false}),
        },
    ))
}

async fn put_block(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(id): Path<String>,
    Body(body): Body<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let id = room_id(&id)?;
    let block = required_field::<bool>(&body, "block")?;
    state
        .services
        .admin
        .block_room(&admin.actor(), &id, block)
        .await?;
    Ok(Json(json!({"block": block})))
}

/// The options of a delete request; a replacement room is not offered.
fn delete_options(body: &Map<String, Value>) -> ApiResult<(bool, bool)> {
    if field::<Option<String>>(body, "new_room_user_id")?
        .flatten()
        .is_some()
    {
        return Err(ApiError::new(
            ErrorKind::Unrecognized,
            "Moving members to a replacement room (new_room_user_id) is not supported",
        ));
    }
    let block = field::<bool>(body, "block")?.unwrap_or(false);
    let purge = field::<bool>(body, "purge")?.unwrap_or(true);
    Ok((block, purge))
}

fn deletion_json(d: &RoomDeletion) -> Value {
    json!({
        "kicked_users": d.kicked_users,
        "failed_to_kick_users": d.failed_to_kick_users,
        "local_aliases": d.local_aliases,
        "new_room_id": null,
    })
}

async fn delete_v1(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(id): Path<String>,
    Body(body): Body<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let id = room_id(&id)?;
    let (block, purge) = delete_options(&body)?;
    let d = state
        .services
        .admin
        .delete_room(&admin.actor(), &id, block, purge)
        .await?;
    Ok(Json(deletion_json(&d)))
}

async fn delete_v2(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(id): Path<String>,
    Body(body): Body<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let id = room_id(&id)?;
    let (block, purge) = delete_options(&body)?;
    let delete_id = state
        .services
        .admin
        .delete_room_tracked(&admin.actor(), &id, block, purge)
        .await?;
    Ok(Json(json!({"delete_id": delete_id})))
}

fn status_json(d: &DeletionRecord, with_id: bool) -> Value {
    let mut v = json!({"status": "complete", "shutdown_room": deletion_json(&d.result)});
    if with_id {
        v["delete_id"] = json!(d.delete_id);
    }
    v
}

async fn status_by_room(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = room_id(&id)?;
    let list = state.services.admin.deletions_of_room(&id);
    if list.is_empty() {
        return Err(ApiError::new(
            ErrorKind::NotFound,
            "No delete task for room",
        ));
    }
    let results: Vec<Value> = list.iter().map(|d| status_json(d, true)).collect();
    Ok(Json(json!({"results": results})))
}

async fn status_by_id(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(delete_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let d = state
        .services
        .admin
        .deletion(&delete_id)
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, "delete id not found"))?;
    Ok(Json(status_json(&d, false)))
}

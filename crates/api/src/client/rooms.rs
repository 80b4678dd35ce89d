//! Room creation and membership: createRoom, join, invite, leave, forget, kick, ban, unban,
//! joined_rooms.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use feldpost_service::ErrorKind;
use feldpost_service::rooms::create::CreateRoom;
use ruma::{OwnedRoomId, OwnedRoomOrAliasId, OwnedUserId, RoomId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Json as Body, Path, parse_id};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/client/v3/createRoom", post(create_room))
        .route(
            "/_matrix/client/v3/join/{room_or_alias}",
            post(join_by_id_or_alias),
        )
        .route("/_matrix/client/v3/rooms/{room_id}/join", post(join_room))
        .route("/_matrix/client/v3/rooms/{room_id}/invite", post(invite))
        .route("/_matrix/client/v3/rooms/{room_id}/leave", post(leave))
        .route("/_matrix/client/v3/rooms/{room_id}/forget", post(forget))
        .route("/_matrix/client/v3/rooms/{room_id}/kick", post(kick))
        .route("/_matrix/client/v3/rooms/{room_id}/ban", post(ban))
        .route("/_matrix/client/v3/rooms/{room_id}/unban", post(unban))
        .route("/_matrix/client/v3/joined_rooms", get(joined_rooms))
}

async fn create_room(
    State(state): State<AppState>,
    Auth(r): Auth,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    let req: CreateRoom = serde_json::from_value(body).map_err(crate::extract::json_error)?;
    let s = &state.services;
    for invitee in &req.invite {
        ensure_local_user(&state, invitee).await?;
    }
    let accounts = &s.accounts;
    let room_id = s
        .rooms
        .create_room(
            &r.user_id,
            req,
            |u| async move { accounts.profile(&u).await },
        )
        .await?;
    Ok(Json(json!({"room_id": room_id})))
}

/// Invites and similar actions can only target users of this server until federation exists.
pub(crate) async fn ensure_local_user(state: &AppState, user: &OwnedUserId) -> ApiResult<()> {
    let s = &state.services;
    if user.server_name() != s.server_name {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "Users of other servers cannot be reached from this server",
        ));
    }
    match s.accounts.user(user).await? {
        Some(u) if !u.deactivated => Ok(()),
        _ => Err(ApiError::new(
            ErrorKind::NotFound,
            format!("Unknown user {user}"),
        )),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ReasonBody {
    reason: Option<String>,
}

async fn resolve_room(state: &AppState, room_or_alias: &str) -> ApiResult<OwnedRoomId> {
    let id: OwnedRoomOrAliasId = parse_id(room_or_alias, "room id or alias")?;
    match <&RoomId>::try_from(id.as_str()) {
        Ok(room) => Ok(room.to_owned()),
        Err(_) => {
            let rec = state
                .services
                .store
                .get_alias(id.as_str())
                .await
                .map_err(feldpost_service::Error::from)?
                .ok_or_else(|| ApiError::new(ErrorKind::NotFound, "Room alias not found"))?;
            parse_id(&rec.room_id, "room id")
        }
    }
}

async fn do_join(
    state: &AppState,
    r: &feldpost_service::accounts::Requester,
    room_id: &RoomId,
    reason: Option<&str>,
) -> ApiResult<Json<Value>> {
    let s = &state.services;
    let profile = s.accounts.profile(&r.user_id).await?;
    s.rooms.join(room_id, &r.user_id, &profile, reason).await?;
    Ok(Json(json!({"room_id": room_id})))
}

async fn join_by_id_or_alias(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(room_or_alias): Path<String>,
    Body(body): Body<ReasonBody>,
) -> ApiResult<Json<Value>> {
    let room_id = resolve_room(&state, &room_or_alias).await?;
    do_join(&state, &r, &room_id, body.reason.as_deref()).await
}

async fn join_room(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(room_id): Path<String>,
    Body(body): Body<ReasonBody>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    do_join(&state, &r, &room_id, body.reason.as_deref()).await
}

#[derive(Deserialize)]
struct TargetBody {
    user_id: String,
    reason: Option<String>,
}

async fn invite(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(room_id): Path<String>,
    Body(body): Body<TargetBody>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    let target: OwnedUserId = parse_id(&body.user_id, "user id")?;
    state
        .services
        .rooms
        .require_joined(&room_id, &r.user_id)
        .await?;
    ensure_local_user(&state, &target).await?;
    let profile = state
        .services
        .accounts
        .profile(&target)
        .await
        .unwrap_or_default();
    state
        .services
        .rooms
        .invite(
            &room_id,
            &r.user_id,
            &target,
            &profile,
            body.reason.as_deref(),
            false,
        )
        .await?;
    Ok(Json(json!({})))
}

async fn leave(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(room_id): Path<String>,
    Body(body): Body<ReasonBody>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    state
        .services
        .server_notices
        .check_leave(&room_id, &r.user_id)
        .await?;
    state
        .services
        .rooms
        .leave(&room_id, &r.user_id, body.reason.as_deref())
        .await?;
    Ok(Json(json!({})))
}

async fn forget(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    let s = &state.services;
    match s.rooms.membership_of(&room_id, &r.user_id).await {
        Ok(Some(m)) if m == "join" || m == "invite" || m == "knock" => Err(ApiError::new(
            ErrorKind::Unknown,
            "You must leave the room before forgetting it",
        )),
        Ok(Some(_)) => {
            s.store
                .forget_room(room_id.as_str(), r.user_id.as_str())
                .await
                .map_err(feldpost_service::Error::from)?;
            s.notifier.wake_user(r.user_id.as_str());
            Ok(Json(json!({})))
        }
        _ => Err(ApiError::new(
            ErrorKind::NotFound,
            "You were never in this room",
        )),
    }
}

async fn other_membership(
    state: AppState,
    r: feldpost_service::accounts::Requester,
    room_id: String,
    body: TargetBody,
    membership: &str,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    let target: OwnedUserId = parse_id(&body.user_id, "user id")?;
    if membership == "leave"
        && state
            .services
            .rooms
            .membership_of(&room_id, &target)
            .await?
            .as_deref()
            == Some("ban")
    {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "The user is banned; unban them instead",
        ));
    }
    state
        .services
        .rooms
        .set_other_membership(
            &room_id,
            &r.user_id,
            &target,
            membership,
            body.reason.as_deref(),
        )
        .await?;
    Ok(Json(json!({})))
}

async fn kick(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(room_id): Path<String>,
    Body(body): Body<TargetBody>,
) -> ApiResult<Json<Value>> {
    other_membership(state, r, room_id, body, "leave").await
}

async fn ban(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(room_id): Path<String>,
    Body(body): Body<TargetBody>,
) -> ApiResult<Json<Value>> {
    other_membership(state, r, room_id, body, "ban").await
}

async fn unban(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(room_id): Path<String>,
    Body(body): Body<TargetBody>,
) -> ApiResult<Json<Value>> {
    let room_id_parsed: OwnedRoomId = parse_id(&room_id, "room id")?;
    let target: OwnedUserId = parse_id(&body.user_id, "user id")?;
    if state
        .services
        .rooms
        .membership_of(&room_id_parsed, &target)
        .await?
        .as_deref()
        != Some("ban")
    {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "The user is not banned",
        ));
    }
    state
        .services
        .rooms
        .set_other_membership(
            &room_id_parsed,
            &r.user_id,
            &target,
            "leave",
            body.reason.as_deref(),
        )
        .await?;
    Ok(Json(json!({})))
}

async fn joined_rooms(State(state): State<AppState>, Auth(r): Auth) -> ApiResult<Json<Value>> {
    let rooms = state.services.timeline.joined_rooms(&r.user_id).await?;
    Ok(Json(json!({"joined_rooms": rooms})))
}

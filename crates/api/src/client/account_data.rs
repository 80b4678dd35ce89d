//! Client config: global and per-room account data, and room tags.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use feldpost_service::ErrorKind;
use feldpost_service::account_data::is_server_managed;
use feldpost_service::accounts::Requester;
use ruma::{OwnedRoomId, OwnedUserId};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult, json_response};
use crate::extract::{Auth, Json as Body, Path, parse_id};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/_matrix/client/v3/user/{user_id}/account_data/{kind}",
            get(get_global).put(put_global),
        )
        .route(
            "/_matrix/client/v3/user/{user_id}/rooms/{room_id}/account_data/{kind}",
            get(get_room).put(put_room),
        )
        .route(
            "/_matrix/client/v3/user/{user_id}/rooms/{room_id}/tags",
            get(get_tags),
        )
        .route(
            "/_matrix/client/v3/user/{user_id}/rooms/{room_id}/tags/{tag}",
            put(put_tag).delete(delete_tag),
        )
}

/// The user id of the path, which must be the requester's own (`M_FORBIDDEN` otherwise).
pub(crate) fn require_self(r: &Requester, user_id: &str, what: &str) -> ApiResult<OwnedUserId> {
    let user_id: OwnedUserId = parse_id(user_id, "user id")?;
    if user_id != r.user_id {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            format!("Cannot access {what} of other users"),
        ));
    }
    Ok(user_id)
}

/// Server-managed types are refused with 405 `M_BAD_JSON`, as the spec prescribes.
fn refuse_managed(kind: &str) -> Option<Response> {
    is_server_managed(kind).then(|| {
        json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({
                "errcode": "M_BAD_JSON",
                "error": format!("{kind} is managed by the server and cannot be set directly"),
            }),
        )
    })
}

async fn get_global(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((user_id, kind)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let user = require_self(&r, &user_id, "account data")?;
    Ok(Json(
        state.services.account_data.get(&user, None, &kind).await?,
    ))
}

async fn put_global(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((user_id, kind)): Path<(String, String)>,
    Body(content): Body<Map<String, Value>>,
) -> ApiResult<Response> {
    let user = require_self(&r, &user_id, "account data")?;
    if let Some(refusal) = refuse_managed(&kind) {
        return Ok(refusal);
    }
    state
        .services
        .account_data
        .set(&user, None, &kind, content)
        .await?;
    Ok(Json(json!({})).into_response())
}

async fn get_room(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((user_id, room_id, kind)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let user = require_self(&r, &user_id, "account data")?;
    let room: OwnedRoomId = parse_id(&room_id, "room id")?;
    Ok(Json(
        state
            .services
            .account_data
            .get(&user, Some(&room), &kind)
            .await?,
    ))
}

async fn put_room(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((user_id, room_id, kind)): Path<(String, String, String)>,
    Body(content): Body<Map<String, Value>>,
) -> ApiResult<Response> {
    let user = require_self(&r, &user_id, "account data")?;
    let room: OwnedRoomId = parse_id(&room_id, "room id")?;
    if let Some(refusal) = refuse_managed(&kind) {
        return Ok(refusal);
    }
    state
        .services
        .account_data
        .set(&user, Some(&room), &kind, content)
        .await?;
    Ok(Json(json!({})).into_response())
}

async fn get_tags(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((user_id, room_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let user = require_self(&r, &user_id, "tags")?;
    let room: OwnedRoomId = parse_id(&room_id, "room id")?;
    let tags = state.services.account_data.tags(&user, &room).await?;
    Ok(Json(json!({"tags": tags})))
}

async fn put_tag(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((user_id, room_id, tag)): Path<(String, String, String)>,
    Body(content): Body<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let user = require_self(&r, &user_id, "tags")?;
    let room: OwnedRoomId = parse_id(&room_id, "room id")?;
    state
        .services
        .account_data
        .set_tag(&user, &room, &tag, content)
        .await?;
    Ok(Json(json!({})))
}

async fn delete_tag(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((user_id, room_id, tag)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let user = require_self(&r, &user_id, "tags")?;
    let room: OwnedRoomId = parse_id(&room_id, "room id")?;
    state
        .services
        .account_data
        .delete_tag(&user, &room, &tag)
        .await?;
    Ok(Json(json!({})))
}

//! Room participation: read receipts, read markers and typing notifications.

use std::time::Duration;

use axum::extract::State;
use axum::routing::{post, put};
use axum::{Json, Router};
use feldpost_service::ErrorKind;
use ruma::{OwnedEventId, OwnedRoomId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::account_data::require_self;
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Json as Body, Path, parse_id};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/_matrix/client/v3/rooms/{room_id}/receipt/{receipt_type}/{event_id}",
            post(receipt),
        )
        .route(
            "/_matrix/client/v3/rooms/{room_id}/read_markers",
            post(read_markers),
        )
        .route(
            "/_matrix/client/v3/rooms/{room_id}/typing/{user_id}",
            put(typing),
        )
}

/// How long someone counts as typing when the client gives no timeout.
const DEFAULT_TYPING_TIMEOUT: Duration = Duration::from_secs(30);

async fn receipt(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((room_id, receipt_type, event_id)): Path<(String, String, String)>,
    Body(body): Body<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    let event_id: OwnedEventId = parse_id(&event_id, "event id")?;
    // The spec answers a bad thread_id with M_INVALID_PARAM, whatever is wrong with it.
    let thread_id = match body.get("thread_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t.as_str()),
        Some(_) => {
            return Err(ApiError::new(
                ErrorKind::InvalidParam,
                "thread_id must be a string",
            ));
        }
    };
    state
        .services
        .receipts
        .send(&r.user_id, &room_id, &receipt_type, &event_id, thread_id)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct MarkersBody {
    #[serde(rename = "m.fully_read")]
    fully_read: Option<String>,
    #[serde(rename = "m.read")]
    read: Option<String>,
    #[serde(rename = "m.read.private")]
    read_private: Option<String>,
}

async fn read_markers(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(room_id): Path<String>,
    Body(body): Body<MarkersBody>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    let id = |s: &Option<String>| -> ApiResult<Option<OwnedEventId>> {
        s.as_deref().map(|s| parse_id(s, "event id")).transpose()
    };
    let (fully_read, read, read_private) = (
        id(&body.fully_read)?,
        id(&body.read)?,
        id(&body.read_private)?,
    );
    state
        .services
        .receipts
        .set_markers(
            &r.user_id,
            &room_id,
            fully_read.as_deref(),
            read.as_deref(),
            read_private.as_deref(),
        )
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct TypingBody {
    typing: bool,
    timeout: Option<u64>,
}

async fn typing(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((room_id, user_id)): Path<(String, String)>,
    Body(body): Body<TypingBody>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    let user = require_self(&r, &user_id, "the typing state")?;
    let s = &state.services;
    s.rooms.require_joined(&room_id, &user).await?;
    let timeout = body
        .timeout
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_TYPING_TIMEOUT);
    s.typing
        .set(room_id.as_str(), user.as_str(), body.typing, timeout);
    Ok(Json(json!({})))
}

//! Sending into rooms: messages (idempotent per device and txnId), state events, redactions, and
//! reading room state.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, put};
use axum::{Json, Router};
use feldpost_service::ErrorKind;
use feldpost_service::accounts::Requester;
use feldpost_service::ratelimit::Action;
use feldpost_service::rooms::{NewPdu, StateMap};
use ruma::{OwnedEventId, OwnedRoomId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Json as Body, Path, Query, parse_id};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}",
            put(send),
        )
        .route("/_matrix/client/v3/rooms/{room_id}/state", get(all_state))
        .route(
            "/_matrix/client/v3/rooms/{room_id}/state/{event_type}",
            get(get_state_empty).put(put_state_empty),
        )
        .route(
            "/_matrix/client/v3/rooms/{room_id}/state/{event_type}/",
            get(get_state_empty).put(put_state_empty),
        )
        .route(
            "/_matrix/client/v3/rooms/{room_id}/state/{event_type}/{state_key}",
            get(get_state).put(put_state),
        )
        .route(
            "/_matrix/client/v3/rooms/{room_id}/redact/{event_id}/{txn_id}",
            put(redact),
        )
}

fn check_type(kind: &str) -> ApiResult<()> {
    if kind.is_empty() || kind.len() > 255 {
        return Err(ApiError::new(ErrorKind::InvalidParam, "Invalid event type"));
    }
    Ok(())
}

async fn send(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((room_id, event_type, txn_id)): Path<(String, String, String)>,
    Body(content): Body<serde_json::Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    check_type(&event_type)?;
    if event_type == "m.room.redaction" {
        return Err(ApiError::new(
            ErrorKind::InvalidParam,
            "Use the /redact endpoint to redact events",
        ));
    }
    let s = &state.services;
    s.rate_limiter.check(Action::Message, r.user_id.as_str())?;
    // A message taken up while a burst of woken syncs is being answered would share the cores
    // with it; it waits for the burst instead, a bounded while (see `feldpost_service::fanout`).
    s.notifier.fanout().wait_for_burst().await;
    s.rooms.require_joined(&room_id, &r.user_id).await?;
    let content = Value::Object(content);
    s.rooms
        .validate_client_event(&room_id, &event_type, &content)
        .await?;
    let new = NewPdu {
        kind: event_type,
        content,
        state_key: None,
        redacts: None,
        txn: Some((r.device_id.clone(), txn_id)),
    };
    let (pdu, _) = s.rooms.append(&room_id, &r.user_id, new).await?;
    s.typing.set(
        room_id.as_str(),
        r.user_id.as_str(),
        false,
        std::time::Duration::ZERO,
    );
    Ok(Json(json!({"event_id": pdu.event_id})))
}

async fn put_state_inner(
    state: AppState,
    r: Requester,
    room_id: String,
    event_type: String,
    state_key: String,
    content: serde_json::Map<String, Value>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    check_type(&event_type)?;
    let s = &state.services;
    s.rate_limiter.check(Action::Message, r.user_id.as_str())?;
    if event_type == "m.room.member" {
        // Membership goes through its own endpoints so their checks (bans, profiles) apply.
        if state_key != r.user_id.as_str() {
            s.rooms.require_joined(&room_id, &r.user_id).await?;
        }
    } else {
        s.rooms.require_joined(&room_id, &r.user_id).await?;
    }
    if event_type == "m.room.canonical_alias" {
        check_canonical_alias(&state, &room_id, &content).await?;
    }
    // Re-sending identical state is a no-op that returns the existing event.
    if let Some(existing) = s
        .rooms
        .state_event(&room_id, &event_type, &state_key)
        .await?
        && existing.sender == r.user_id
        && existing.content_value() == Value::Object(content.clone())
    {
        return Ok(Json(json!({"event_id": existing.event_id})));
    }
    let (pdu, _) = s
        .rooms
        .append(
            &room_id,
            &r.user_id,
            NewPdu::state(&event_type, &state_key, Value::Object(content)),
        )
        .await?;
    Ok(Json(json!({"event_id": pdu.event_id})))
}

/// Aliases in `m.room.canonical_alias` must exist and point at this room (`M_BAD_ALIAS`).
async fn check_canonical_alias(
    state: &AppState,
    room_id: &OwnedRoomId,
    content: &serde_json::Map<String, Value>,
) -> ApiResult<()> {
    let mut aliases: Vec<&Value> = Vec::new();
    if let Some(a) = content.get("alias")
        && !a.is_null()
    {
        aliases.push(a);
    }
    if let Some(alts) = content.get("alt_aliases") {
        let arr = alts
            .as_array()
            .ok_or_else(|| ApiError::new(ErrorKind::InvalidParam, "alt_aliases must be a list"))?;
        aliases.extend(arr.iter());
    }
    for a in aliases {
        let a = a
            .as_str()
            .ok_or_else(|| ApiError::new(ErrorKind::InvalidParam, "aliases must be strings"))?;
        let alias: ruma::OwnedRoomAliasId = parse_id(a, "room alias")?;
        let bad = || {
            ApiError::new(
                ErrorKind::BadAlias,
                format!("{alias} does not point to this room"),
            )
        };
        let rec = state
            .services
            .store
            .get_alias(alias.as_str())
            .await
            .map_err(feldpost_service::Error::from)?;
        match rec {
            Some(rec) if rec.room_id == room_id.as_str() => {}
            _ => return Err(bad()),
        }
    }
    Ok(())
}

async fn put_state(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((room_id, event_type, state_key)): Path<(String, String, String)>,
    Body(content): Body<serde_json::Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    put_state_inner(state, r, room_id, event_type, state_key, content).await
}

async fn put_state_empty(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((room_id, event_type)): Path<(String, String)>,
    Body(content): Body<serde_json::Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    put_state_inner(state, r, room_id, event_type, String::new(), content).await
}

/// The state a requester may read: the current state while joined, the state when they left
/// otherwise, and nothing if they were never in the room.
async fn readable_state(
    state: &AppState,
    r: &Requester,
    room_id: &OwnedRoomId,
) -> ApiResult<Arc<StateMap>> {
    let s = &state.services;
    let forbidden = || ApiError::new(ErrorKind::Forbidden, "You are not a member of this room");
    if s.store
        .get_room(room_id.as_str())
        .await
        .map_err(feldpost_service::Error::from)?
        .is_none()
    {
        return Err(forbidden());
    }
    let current = s.rooms.current_state(room_id).await?;
    let member = s
        .rooms
        .state_event_in(&current, "m.room.member", r.user_id.as_str())
        .await?;
    let membership = member.as_ref().and_then(|m| {
        m.content_value()
            .get("membership")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    match membership.as_deref() {
        Some("join") => Ok(current),
        Some("leave" | "ban") => {
            let ev = member.ok_or_else(forbidden)?;
            let stored = s
                .store
                .get_event(ev.event_id.as_str())
                .await
                .map_err(feldpost_service::Error::from)?
                .ok_or_else(forbidden)?;
            // The user's own leave event counts as seen: the state just after it.
            match stored.state_group_after {
                Some(g) => Ok(s.rooms.state_map(g).await?),
                None => Err(forbidden()),
            }
        }
        _ => {
            let hv = s
                .rooms
                .state_event_in(&current, "m.room.history_visibility", "")
                .await?;
            if hv.is_some_and(|h| {
                h.content_value()
                    .get("history_visibility")
                    .and_then(Value::as_str)
                    == Some("world_readable")
            }) {
                Ok(current)
            } else {
                Err(forbidden())
            }
        }
    }
}

async fn all_state(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    let map = readable_state(&state, &r, &room_id).await?;
    let ids: Vec<String> = map.values().map(|id| id.to_string()).collect();
    let mut events = state
        .services
        .store
        .get_events(&ids)
        .await
        .map_err(feldpost_service::Error::from)?;
    events.sort_by_key(|e| e.stream);
    Ok(Json(Value::Array(
        state.services.timeline.render_many(&events, None).await?,
    )))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StateQuery {
    format: Option<String>,
}

async fn get_state_inner(
    state: AppState,
    r: Requester,
    room_id: String,
    event_type: String,
    state_key: String,
    q: StateQuery,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    let map = readable_state(&state, &r, &room_id).await?;
    let id = map
        .get(&(event_type, state_key))
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, "Event not found"))?;
    let stored = state
        .services
        .store
        .get_event(id.as_str())
        .await
        .map_err(feldpost_service::Error::from)?
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, "Event not found"))?;
    let rendered = state.services.timeline.render(&stored, None).await?;
    match q.format.as_deref() {
        Some("event") => Ok(Json(rendered)),
        None | Some("content") => Ok(Json(rendered.get("content").cloned().unwrap_or(json!({})))),
        Some(_) => Err(ApiError::new(
            ErrorKind::InvalidParam,
            "format must be content or event",
        )),
    }
}

async fn get_state(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((room_id, event_type, state_key)): Path<(String, String, String)>,
    Query(q): Query<StateQuery>,
) -> ApiResult<Json<Value>> {
    get_state_inner(state, r, room_id, event_type, state_key, q).await
}

async fn get_state_empty(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((room_id, event_type)): Path<(String, String)>,
    Query(q): Query<StateQuery>,
) -> ApiResult<Json<Value>> {
    get_state_inner(state, r, room_id, event_type, String::new(), q).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RedactBody {
    reason: Option<String>,
}

async fn redact(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((room_id, event_id, txn_id)): Path<(String, String, String)>,
    Body(body): Body<RedactBody>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    let event_id: OwnedEventId = parse_id(&event_id, "event id")?;
    let s = &state.services;
    s.rate_limiter.check(Action::Message, r.user_id.as_str())?;
    s.rooms.require_joined(&room_id, &r.user_id).await?;
    let target = s
        .rooms
        .pdu(&event_id)
        .await?
        .filter(|p| p.room_id == room_id);
    let Some(target) = target else {
        return Err(ApiError::new(ErrorKind::NotFound, "Event not found"));
    };
    if target.sender != r.user_id {
        let pl = s.rooms.power_levels(&room_id).await?;
        if pl.user(r.user_id.as_str()) < pl.action("redact") {
            return Err(ApiError::new(
                ErrorKind::Forbidden,
                "You may not redact other users' events",
            ));
        }
    }
    let mut content = serde_json::Map::new();
    if let Some(reason) = body.reason {
        content.insert("reason".into(), Value::String(reason));
    }
    let new = NewPdu {
        kind: "m.room.redaction".into(),
        content: Value::Object(content),
        state_key: None,
        redacts: Some(event_id),
        txn: Some((r.device_id.clone(), format!("redact:{txn_id}"))),
    };
    let (pdu, _) = s.rooms.append(&room_id, &r.user_id, new).await?;
    Ok(Json(json!({"event_id": pdu.event_id})))
}

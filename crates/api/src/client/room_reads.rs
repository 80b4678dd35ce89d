//! Reading rooms: members, joined members, single events, event context, relations and threads.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use feldpost_service::ErrorKind;
use feldpost_service::accounts::Requester;
use feldpost_service::filter::RoomEventFilter;
use feldpost_service::relations::{RelationsRequest, Viewer};
use feldpost_service::rooms::StateMap;
use feldpost_service::timeline::parse_position;
use ruma::{OwnedEventId, OwnedRoomId, RoomId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Path, Query, parse_id, qs};

/// Page size of `/relations` and `/threads` when the client gives none, and the largest allowed.
const DEFAULT_PAGE: u64 = 20;
const MAX_PAGE: u64 = 100;
const MEMBERSHIPS: &[&str] = &["join", "invite", "knock", "leave", "ban"];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/client/v3/rooms/{room_id}/members", get(members))
        .route(
            "/_matrix/client/v3/rooms/{room_id}/joined_members",
            get(joined_members),
        )
        .route(
            "/_matrix/client/v3/rooms/{room_id}/event/{event_id}",
            get(event),
        )
        .route(
            "/_matrix/client/v3/rooms/{room_id}/context/{event_id}",
            get(context),
        )
        .route(
            "/_matrix/client/v1/rooms/{room_id}/relations/{event_id}",
            get(relations),
        )
        .route(
            "/_matrix/client/v1/rooms/{room_id}/relations/{event_id}/{rel_type}",
            get(relations_by_type),
        )
        .route(
            "/_matrix/client/v1/rooms/{room_id}/relations/{event_id}/{rel_type}/{event_type}",
            get(relations_by_type_and_event_type),
        )
        .route("/_matrix/client/v1/rooms/{room_id}/threads", get(threads))
}

fn token(t: Option<&str>) -> ApiResult<Option<i64>> {
    t.map(|s| {
        parse_position(s)
            .ok_or_else(|| ApiError::new(ErrorKind::InvalidParam, "Invalid pagination token"))
    })
    .transpose()
}

fn membership_param(m: Option<String>, name: &str) -> ApiResult<Option<String>> {
    match m {
        Some(m) if !MEMBERSHIPS.contains(&m.as_str()) => Err(ApiError::new(
            ErrorKind::InvalidParam,
            format!("{name} must be one of {}", MEMBERSHIPS.join(", ")),
        )),
        m => Ok(m),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MembersQuery {
    at: Option<String>,
    membership: Option<String>,
    not_membership: Option<String>,
}

/// The state after the last event of the room at or before stream position `pos`.
async fn state_at(state: &AppState, room_id: &RoomId, pos: i64) -> ApiResult<Arc<StateMap>> {
    let s = &state.services;
    let last = s
        .store
        .room_events_backward(
            room_id.as_str(),
            pos,
            0,
            1,
            &RoomEventFilter::default().to_storage(),
        )
        .await
        .map_err(feldpost_service::Error::from)?;
    match last
        .first()
        .and_then(|e| e.state_group_after.or(e.state_group_before))
    {
        Some(group) => Ok(s.rooms.state_map(group).await?),
        None => Ok(Arc::new(StateMap::new())),
    }
}

/// The room state whose members a requester may list: the current one (or the one at `at`) while
/// joined or if the room is world-readable, and no later than their leave (or ban) otherwise.
async fn member_state(
    state: &AppState,
    r: &Requester,
    room_id: &RoomId,
    at: Option<i64>,
) -> ApiResult<Arc<StateMap>> {
    let s = &state.services;
    let membership = s.timeline.require_reader(room_id, &r.user_id).await?;
    let forbidden = || ApiError::new(ErrorKind::Forbidden, "You are not a member of this room");
    let mut bound = at;
    match membership.as_deref() {
        Some("join") | None => {}
        Some("leave" | "ban") => {
            let current = s.rooms.current_state(room_id).await?;
            let id = current
                .get(&("m.room.member".to_owned(), r.user_id.to_string()))
                .ok_or_else(forbidden)?;
            let left = s
                .store
                .get_event(id.as_str())
                .await
                .map_err(feldpost_service::Error::from)?
                .ok_or_else(forbidden)?;
            bound = Some(bound.map_or(left.stream, |b| b.min(left.stream)));
        }
        // Invited and knocking users read only what a world-readable room shows anyone.
        Some(_) => {
            let hv = s
                .rooms
                .state_event(room_id, "m.room.history_visibility", "")
                .await?;
            let world = hv.is_some_and(|h| {
                h.content_value()["history_visibility"].as_str() == Some("world_readable")
            });
            if !world {
                return Err(forbidden());
            }
        }
    }
    match bound {
        Some(pos) => state_at(state, room_id, pos).await,
        None => Ok(s.rooms.current_state(room_id).await?),
    }
}

async fn members(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(room_id): Path<String>,
    Query(q): Query<MembersQuery>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    let only = membership_param(q.membership, "membership")?;
    let except = membership_param(q.not_membership, "not_membership")?;
    let at = token(q.at.as_deref())?;
    let map = member_state(&state, &r, &room_id, at).await?;
    let ids: Vec<String> = map
        .iter()
        .filter(|((t, _), _)| t == "m.room.member")
        .map(|(_, id)| id.to_string())
        .collect();
    let s = &state.services;
    let mut events = s
        .store
        .get_events(&ids)
        .await
        .map_err(feldpost_service::Error::from)?;
    events.sort_by_key(|e| e.stream);
    let rendered = s.timeline.render_many(&events, None).await?;
    // Given both, the spec makes the two filters an "or".
    let keep = |m: &str| match (&only, &except) {
        (None, None) => true,
        (Some(o), None) => m == o,
        (None, Some(x)) => m != x,
        (Some(o), Some(x)) => m == o || m != x,
    };
    let chunk: Vec<Value> = rendered
        .into_iter()
        .filter(|e| keep(e["content"]["membership"].as_str().unwrap_or_default()))
        .collect();
    Ok(Json(json!({ "chunk": chunk })))
}

async fn joined_members(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    let s = &state.services;
    s.rooms.require_joined(&room_id, &r.user_id).await?;
    let current = s.rooms.current_state(&room_id).await?;
    let mut joined = Map::new();
    for ((kind, user), id) in current.iter() {
        if kind != "m.room.member" {
            continue;
        }
        let Some(ev) = s.rooms.pdu(id).await? else {
            continue;
        };
        let content = ev.content_value();
        if content["membership"].as_str() != Some("join") {
            continue;
        }
        let mut member = Map::new();
        if let Some(name) = content["displayname"].as_str() {
            member.insert("display_name".into(), json!(name));
        }
        if let Some(url) = content["avatar_url"].as_str() {
            member.insert("avatar_url".into(), json!(url));
        }
        joined.insert(user.clone(), Value::Object(member));
    }
    Ok(Json(json!({ "joined": joined })))
}

/// A viewer for events the timeline already showed the requester may read.
async fn viewer<'a>(state: &AppState, r: &'a Requester, room_id: &RoomId) -> ApiResult<Viewer<'a>> {
    Ok(Viewer {
        user: &r.user_id,
        device: &r.device_id,
        membership: state
            .services
            .rooms
            .membership_of(room_id, &r.user_id)
            .await?,
    })
}

async fn event(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((room_id, event_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    let event_id: OwnedEventId = parse_id(&event_id, "event id")?;
    let s = &state.services;
    let mut ev = s
        .timeline
        .event(&room_id, &event_id, &r.user_id, &r.device_id)
        .await?;
    let v = viewer(&state, &r, &room_id).await?;
    s.relations.bundle(&room_id, &v, &mut ev, true).await?;
    Ok(Json(ev))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ContextQuery {
    #[serde(deserialize_with = "qs::opt_u64")]
    limit: Option<u64>,
    filter: Option<String>,
}

async fn context(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((room_id, event_id)): Path<(String, String)>,
    Query(q): Query<ContextQuery>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    let event_id: OwnedEventId = parse_id(&event_id, "event id")?;
    let filter: RoomEventFilter = match q.filter.as_deref() {
        Some(f) => serde_json::from_str(f)
            .map_err(|e| ApiError::new(ErrorKind::InvalidParam, format!("Invalid filter: {e}")))?,
        None => RoomEventFilter::default(),
    };
    let s = &state.services;
    let max = u64::from(s.config.limits.max_timeline_limit);
    let limit = q.limit.unwrap_or(10).min(max) as u32;
    let mut body = s
        .timeline
        .context(
            &room_id,
            &event_id,
            &r.user_id,
            &r.device_id,
            limit,
            &filter,
        )
        .await?;
    let v = viewer(&state, &r, &room_id).await?;
    s.relations
        .bundle(&room_id, &v, &mut body["event"], true)
        .await?;
    for key in ["events_before", "events_after"] {
        if let Some(list) = body[key].as_array_mut() {
            s.relations.bundle_all(&room_id, &v, list).await?;
        }
    }
    Ok(Json(body))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RelationsQuery {
    from: Option<String>,
    to: Option<String>,
    #[serde(deserialize_with = "qs::opt_u64")]
    limit: Option<u64>,
    dir: Option<String>,
    #[serde(deserialize_with = "qs::opt_bool")]
    recurse: Option<bool>,
}

async fn relations_inner(
    state: AppState,
    r: Requester,
    room_id: String,
    event_id: String,
    rel_type: Option<String>,
    event_type: Option<String>,
    q: RelationsQuery,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    let event_id: OwnedEventId = parse_id(&event_id, "event id")?;
    let forward = match q.dir.as_deref() {
        None | Some("b") => false,
        Some("f") => true,
        Some(_) => return Err(ApiError::new(ErrorKind::InvalidParam, "dir must be b or f")),
    };
    let req = RelationsRequest {
        rel_type,
        event_type,
        from: token(q.from.as_deref())?,
        to: token(q.to.as_deref())?,
        limit: q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE) as u32,
        forward,
        recurse: q.recurse.unwrap_or(false),
    };
    let s = &state.services;
    let v = s
        .relations
        .viewer(&room_id, &r.user_id, &r.device_id)
        .await?;
    let page = s.relations.relations(&room_id, &event_id, &v, req).await?;
    let mut body = json!({ "chunk": page.chunk });
    if let Some(n) = page.next_batch {
        body["next_batch"] = json!(n);
    }
    if let Some(p) = page.prev_batch {
        body["prev_batch"] = json!(p);
    }
    if let Some(d) = page.recursion_depth {
        body["recursion_depth"] = json!(d);
    }
    Ok(Json(body))
}

async fn relations(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((room_id, event_id)): Path<(String, String)>,
    Query(q): Query<RelationsQuery>,
) -> ApiResult<Json<Value>> {
    relations_inner(state, r, room_id, event_id, None, None, q).await
}

async fn relations_by_type(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((room_id, event_id, rel_type)): Path<(String, String, String)>,
    Query(q): Query<RelationsQuery>,
) -> ApiResult<Json<Value>> {
    relations_inner(state, r, room_id, event_id, Some(rel_type), None, q).await
}

async fn relations_by_type_and_event_type(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((room_id, event_id, rel_type, event_type)): Path<(String, String, String, String)>,
    Query(q): Query<RelationsQuery>,
) -> ApiResult<Json<Value>> {
    relations_inner(
        state,
        r,
        room_id,
        event_id,
        Some(rel_type),
        Some(event_type),
        q,
    )
    .await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ThreadsQuery {
    include: Option<String>,
    from: Option<String>,
    #[serde(deserialize_with = "qs::opt_u64")]
    limit: Option<u64>,
}

async fn threads(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(room_id): Path<String>,
    Query(q): Query<ThreadsQuery>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    let participated = match q.include.as_deref() {
        None | Some("all") => false,
        Some("participated") => true,
        Some(_) => {
            return Err(ApiError::new(
                ErrorKind::InvalidParam,
                "include must be all or participated",
            ));
        }
    };
    if q.limit == Some(0) {
        return Err(ApiError::new(
            ErrorKind::InvalidParam,
            "limit must be greater than zero",
        ));
    }
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE) as u32;
    let from = token(q.from.as_deref())?;
    let s = &state.services;
    let v = s
        .relations
        .viewer(&room_id, &r.user_id, &r.device_id)
        .await?;
    let page = s
        .relations
        .threads(&room_id, &v, participated, from, limit)
        .await?;
    let mut body = json!({ "chunk": page.chunk });
    if let Some(n) = page.next_batch {
        body["next_batch"] = json!(n);
    }
    Ok(Json(body))
}

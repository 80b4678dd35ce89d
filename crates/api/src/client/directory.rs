//! The room directory: room aliases, a room's local aliases, directory visibility and
//! `/publicRooms`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use feldpost_service::ErrorKind;
use feldpost_service::directory::PublicRoomsQuery;
use ruma::{OwnedRoomAliasId, OwnedRoomId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult, json_response};
use crate::extract::{Auth, Json as Body, Path, Query, parse_id, qs};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/_matrix/client/v3/directory/room/{alias}",
            get(get_alias).put(put_alias).delete(delete_alias),
        )
        .route("/_matrix/client/v3/rooms/{room_id}/aliases", get(aliases))
        .route(
            "/_matrix/client/v3/directory/list/room/{room_id}",
            get(get_visibility).put(put_visibility),
        )
        .route(
            "/_matrix/client/v3/publicRooms",
            get(public_rooms_get).post(public_rooms_post),
        )
}

#[derive(Deserialize)]
struct AliasBody {
    room_id: String,
}

async fn put_alias(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(alias): Path<String>,
    Body(body): Body<AliasBody>,
) -> ApiResult<Response> {
    let alias: OwnedRoomAliasId = parse_id(&alias, "room alias")?;
    let room_id: OwnedRoomId = parse_id(&body.room_id, "room id")?;
    let created = state
        .services
        .directory
        .create_alias(&alias, &room_id, &r)
        .await?;
    if !created {
        // The spec gives this conflict 409 with M_UNKNOWN, a status no error kind carries.
        return Ok(json_response(
            StatusCode::CONFLICT,
            &json!({"errcode": "M_UNKNOWN", "error": format!("Room alias {alias} already exists")}),
        ));
    }
    Ok(Json(json!({})).into_response())
}

async fn get_alias(
    State(state): State<AppState>,
    Path(alias): Path<String>,
) -> ApiResult<Json<Value>> {
    let alias: OwnedRoomAliasId = parse_id(&alias, "room alias")?;
    let target = state.services.directory.resolve_alias(&alias).await?;
    Ok(Json(
        json!({"room_id": target.room_id, "servers": target.servers}),
    ))
}

async fn delete_alias(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(alias): Path<String>,
) -> ApiResult<Json<Value>> {
    let alias: OwnedRoomAliasId = parse_id(&alias, "room alias")?;
    state.services.directory.delete_alias(&alias, &r).await?;
    Ok(Json(json!({})))
}

async fn aliases(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    let aliases = state
        .services
        .directory
        .local_aliases(&room_id, &r.user_id)
        .await?;
    Ok(Json(json!({"aliases": aliases})))
}

async fn get_visibility(
    State(state): State<AppState>,
    Path(room_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    let public = state.services.directory.is_published(&room_id).await?;
    Ok(Json(
        json!({"visibility": if public { "public" } else { "private" }}),
    ))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct VisibilityBody {
    visibility: Option<String>,
}

async fn put_visibility(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(room_id): Path<String>,
    Body(body): Body<VisibilityBody>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    let public = match body.visibility.as_deref() {
        None | Some("public") => true,
        Some("private") => false,
        Some(_) => {
            return Err(ApiError::new(
                ErrorKind::InvalidParam,
                "visibility must be public or private",
            ));
        }
    };
    state
        .services
        .directory
        .set_published(&room_id, &r, public)
        .await?;
    Ok(Json(json!({})))
}

/// Only this server's directory can be listed until federation exists.
fn check_server(state: &AppState, server: Option<&str>) -> ApiResult<()> {
    match server {
        None => Ok(()),
        Some(s) if s == state.services.server_name.as_str() => Ok(()),
        Some(_) => Err(ApiError::new(
            ErrorKind::InvalidParam,
            "Only this server's room directory can be listed",
        )),
    }
}

fn page_body(page: feldpost_service::directory::PublicRoomsPage) -> Json<Value> {
    let mut body = json!({"chunk": page.chunk, "total_room_count_estimate": page.total});
    if let Some(n) = page.next_batch {
        body["next_batch"] = json!(n);
    }
    if let Some(p) = page.prev_batch {
        body["prev_batch"] = json!(p);
    }
    Json(body)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PublicRoomsGetQuery {
    #[serde(deserialize_with = "qs::opt_u64")]
    limit: Option<u64>,
    since: Option<String>,
    server: Option<String>,
}

async fn public_rooms_get(
    State(state): State<AppState>,
    Query(q): Query<PublicRoomsGetQuery>,
) -> ApiResult<Json<Value>> {
    check_server(&state, q.server.as_deref())?;
    let query = PublicRoomsQuery {
        limit: q.limit,
        since: q.since,
        ..Default::default()
    };
    Ok(page_body(
        state.services.directory.public_rooms(&query).await?,
    ))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ServerQuery {
    server: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RoomsFilter {
    generic_search_term: Option<String>,
    room_types: Option<Vec<Option<String>>>,
}

/// `include_all_networks` is not read: no application-service networks are bridged here, so all
/// networks are this one.
#[derive(Deserialize, Default)]
#[serde(default)]
struct PublicRoomsBody {
    limit: Option<u64>,
    since: Option<String>,
    filter: Option<RoomsFilter>,
    third_party_instance_id: Option<String>,
}

async fn public_rooms_post(
    State(state): State<AppState>,
    Auth(_): Auth,
    Query(q): Query<ServerQuery>,
    Body(body): Body<PublicRoomsBody>,
) -> ApiResult<Json<Value>> {
    check_server(&state, q.server.as_deref())?;
    let filter = body.filter.unwrap_or_default();
    let query = PublicRoomsQuery {
        limit: body.limit,
        since: body.since,
        search_term: filter.generic_search_term,
        room_types: filter.room_types,
        third_party_instance_id: body.third_party_instance_id,
    };
    Ok(page_body(
        state.services.directory.public_rooms(&query).await?,
    ))
}

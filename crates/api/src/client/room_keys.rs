//! Server-side key backups: `/room_keys/version` and `/room_keys/keys`, for the requester's own
//! backups only (the user id comes from the access token, never from the request).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use feldpost_service::ErrorKind;
use feldpost_service::key_backup::KeysWritten;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult, json_response};
use crate::extract::{Auth, Json as Body, Path, Query};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/_matrix/client/v3/room_keys/version",
            post(create_version).get(current_version),
        )
        .route(
            "/_matrix/client/v3/room_keys/version/{version}",
            get(get_version).put(update_version).delete(delete_version),
        )
        .route(
            "/_matrix/client/v3/room_keys/keys",
            get(get_all).put(put_all).delete(delete_all),
        )
        .route(
            "/_matrix/client/v3/room_keys/keys/{room_id}",
            get(get_room).put(put_room).delete(delete_room),
        )
        .route(
            "/_matrix/client/v3/room_keys/keys/{room_id}/{session_id}",
            get(get_session).put(put_session).delete(delete_session),
        )
}

#[derive(Deserialize)]
struct VersionBody {
    algorithm: String,
    auth_data: Map<String, Value>,
    version: Option<String>,
}

async fn create_version(
    State(state): State<AppState>,
    Auth(r): Auth,
    Body(body): Body<VersionBody>,
) -> ApiResult<Json<Value>> {
    let version = state
        .services
        .key_backup
        .create(&r.user_id, &body.algorithm, body.auth_data)
        .await?;
    Ok(Json(json!({"version": version})))
}

async fn current_version(State(state): State<AppState>, Auth(r): Auth) -> ApiResult<Json<Value>> {
    Ok(Json(
        state.services.key_backup.version(&r.user_id, None).await?,
    ))
}

async fn get_version(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(version): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        state
            .services
            .key_backup
            .version(&r.user_id, Some(&version))
            .await?,
    ))
}

async fn update_version(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(version): Path<String>,
    Body(body): Body<VersionBody>,
) -> ApiResult<Json<Value>> {
    state
        .services
        .key_backup
        .update(
            &r.user_id,
            &version,
            &body.algorithm,
            body.auth_data,
            body.version.as_deref(),
        )
        .await?;
    Ok(Json(json!({})))
}

async fn delete_version(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(version): Path<String>,
) -> ApiResult<Json<Value>> {
    state
        .services
        .key_backup
        .delete(&r.user_id, &version)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct VersionQuery {
    version: Option<String>,
}

fn required_version(q: VersionQuery) -> ApiResult<String> {
    q.version
        .ok_or_else(|| ApiError::new(ErrorKind::MissingParam, "The version parameter is required"))
}

/// The answer to a key write: the count and etag, or 403 `M_WRONG_ROOM_KEYS_VERSION` naming the
/// current version.
fn written(w: KeysWritten) -> Response {
    match w {
        KeysWritten::Done { count, etag } => {
            Json(json!({"count": count, "etag": etag})).into_response()
        }
        KeysWritten::WrongVersion { current } => {
            let mut body = json!({
                "errcode": "M_WRONG_ROOM_KEYS_VERSION",
                "error": "Wrong backup version",
            });
            if let Some(c) = current {
                body["current_version"] = json!(c);
            }
            json_response(StatusCode::FORBIDDEN, &body)
        }
    }
}

#[derive(Deserialize)]
struct AllKeysBody {
    rooms: Map<String, Value>,
}

async fn put_all(
    State(state): State<AppState>,
    Auth(r): Auth,
    Query(q): Query<VersionQuery>,
    Body(body): Body<AllKeysBody>,
) -> ApiResult<Response> {
    let version = required_version(q)?;
    let w = state
        .services
        .key_backup
        .put_all(&r.user_id, &version, body.rooms)
        .await?;
    Ok(written(w))
}

async fn put_room(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(room_id): Path<String>,
    Query(q): Query<VersionQuery>,
    Body(body): Body<Value>,
) -> ApiResult<Response> {
    let version = required_version(q)?;
    let w = state
        .services
        .key_backup
        .put_room(&r.user_id, &version, &room_id, body)
        .await?;
    Ok(written(w))
}

async fn put_session(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((room_id, session_id)): Path<(String, String)>,
    Query(q): Query<VersionQuery>,
    Body(body): Body<Value>,
) -> ApiResult<Response> {
    let version = required_version(q)?;
    let w = state
        .services
        .key_backup
        .put_session(&r.user_id, &version, &room_id, &session_id, body)
        .await?;
    Ok(written(w))
}

async fn get_all(
    State(state): State<AppState>,
    Auth(r): Auth,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let version = required_version(q)?;
    Ok(Json(
        state
            .services
            .key_backup
            .get_all(&r.user_id, &version)
            .await?,
    ))
}

async fn get_room(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(room_id): Path<String>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let version = required_version(q)?;
    Ok(Json(
        state
            .services
            .key_backup
            .get_room(&r.user_id, &version, &room_id)
            .await?,
    ))
}

async fn get_session(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((room_id, session_id)): Path<(String, String)>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let version = required_version(q)?;
    Ok(Json(
        state
            .services
            .key_backup
            .get_session(&r.user_id, &version, &room_id, &session_id)
            .await?,
    ))
}

async fn delete_keys(
    state: &AppState,
    r: &feldpost_service::accounts::Requester,
    q: VersionQuery,
    room: Option<&str>,
    session: Option<&str>,
) -> ApiResult<Json<Value>> {
    let version = required_version(q)?;
    let (count, etag) = state
        .services
        .key_backup
        .delete_keys(&r.user_id, &version, room, session)
        .await?;
    Ok(Json(json!({"count": count, "etag": etag})))
}

async fn delete_all(
    State(state): State<AppState>,
    Auth(r): Auth,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Json<Value>> {
    delete_keys(&state, &r, q, None, None).await
}

async fn delete_room(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(room_id): Path<String>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Json<Value>> {
    delete_keys(&state, &r, q, Some(&room_id), None).await
}

async fn delete_session(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((room_id, session_id)): Path<(String, String)>,
    Query(q): Query<VersionQuery>,
) -> ApiResult<Json<Value>> {
    delete_keys(&state, &r, q, Some(&room_id), Some(&session_id)).await
}

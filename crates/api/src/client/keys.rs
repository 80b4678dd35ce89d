//! End-to-end encryption keys: `/keys/upload`, `/keys/query`, `/keys/claim`, `/keys/changes`,
//! and cross-signing (`/keys/device_signing/upload`, `/keys/signatures/upload`).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use feldpost_service::ErrorKind;
use feldpost_service::keys::CrossSigningUpload;
use feldpost_service::sync::SyncToken;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::uia::{AuthData, require_password};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Json as Body, Query};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/client/v3/keys/upload", post(upload))
        .route("/_matrix/client/v3/keys/query", post(query))
        .route("/_matrix/client/v3/keys/claim", post(claim))
        .route("/_matrix/client/v3/keys/changes", get(changes))
        .route(
            "/_matrix/client/v3/keys/device_signing/upload",
            post(device_signing_upload),
        )
        .route(
            "/_matrix/client/v3/keys/signatures/upload",
            post(signatures_upload),
        )
}

#[derive(Deserialize)]
struct UploadBody {
    device_keys: Option<Value>,
    one_time_keys: Option<Map<String, Value>>,
    fallback_keys: Option<Map<String, Value>>,
}

async fn upload(
    State(state): State<AppState>,
    Auth(r): Auth,
    Body(body): Body<UploadBody>,
) -> ApiResult<Json<Value>> {
    let counts = state
        .services
        .keys
        .upload(
            &r.user_id,
            &r.device_id,
            body.device_keys,
            body.one_time_keys,
            body.fallback_keys,
        )
        .await?;
    Ok(Json(json!({"one_time_key_counts": counts})))
}

#[derive(Deserialize)]
struct QueryBody {
    device_keys: BTreeMap<String, Vec<String>>,
    /// How long to wait for other servers; accepted in any form and ignored, as there is no
    /// federation yet.
    #[allow(dead_code)]
    timeout: Option<Value>,
}

async fn query(
    State(state): State<AppState>,
    Auth(r): Auth,
    Body(body): Body<QueryBody>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        state
            .services
            .keys
            .query(&r.user_id, body.device_keys)
            .await?,
    ))
}

#[derive(Deserialize)]
struct ClaimBody {
    one_time_keys: BTreeMap<String, BTreeMap<String, String>>,
    #[allow(dead_code)]
    timeout: Option<Value>,
}

async fn claim(
    State(state): State<AppState>,
    Auth(_r): Auth,
    Body(body): Body<ClaimBody>,
) -> ApiResult<Json<Value>> {
    Ok(Json(state.services.keys.claim(body.one_time_keys).await?))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChangesQuery {
    from: Option<String>,
    to: Option<String>,
}

fn sync_position(token: Option<&str>, name: &str) -> ApiResult<i64> {
    let token = token
        .ok_or_else(|| ApiError::new(ErrorKind::MissingParam, format!("{name} is required")))?;
    SyncToken::parse(token)
        .map(|t| t.stream)
        .ok_or_else(|| ApiError::new(ErrorKind::InvalidParam, format!("Invalid {name} token")))
}

async fn changes(
    State(state): State<AppState>,
    Auth(r): Auth,
    Query(q): Query<ChangesQuery>,
) -> ApiResult<Json<Value>> {
    let from = sync_position(q.from.as_deref(), "from")?;
    let to = sync_position(q.to.as_deref(), "to")?;
    // Never past what is committed, whatever `to` the client names.
    let to = to.min(state.services.store.current_position());
    let delta = state.services.keys.changes(&r.user_id, from, to).await?;
    Ok(Json(json!({"changed": delta.changed, "left": delta.left})))
}

#[derive(Deserialize)]
struct DeviceSigningBody {
    master_key: Option<Value>,
    self_signing_key: Option<Value>,
    user_signing_key: Option<Value>,
    auth: Option<AuthData>,
}

async fn device_signing_upload(
    State(state): State<AppState>,
    Auth(r): Auth,
    Body(body): Body<DeviceSigningBody>,
) -> ApiResult<Json<Value>> {
    let keys = &state.services.keys;
    let upload = CrossSigningUpload {
        master_key: body.master_key,
        self_signing_key: body.self_signing_key,
        user_signing_key: body.user_signing_key,
    };
    // The spec lets a first upload (no master key yet) and an exact repeat of the stored keys
    // through without auth; replacing keys needs the password.
    if keys
        .cross_signing_upload_needs_auth(&r.user_id, &upload)
        .await?
    {
        require_password(&state, &r, body.auth, "device_signing_upload").await?;
    }
    keys.upload_cross_signing(&r.user_id, upload).await?;
    Ok(Json(json!({})))
}

async fn signatures_upload(
    State(state): State<AppState>,
    Auth(r): Auth,
    Body(body): Body<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        state
            .services
            .keys
            .upload_signatures(&r.user_id, body)
            .await?,
    ))
}

//! Synapse-compatible registration tokens: list, get, new, update, delete, each with
//! `uses_allowed`, `pending`, `completed` and `expiry_time`.

use std::collections::HashMap;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use feldpost_service::ErrorKind;
use feldpost_service::enrollment::NewToken;
use feldpost_service::enrollment::{RegistrationTokenRecord, RegistrationTokenUpdate};
use serde_json::{Map, Value, json};

use super::{AdminAuth, parse_bool};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json as Body, Path, Query};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_synapse/admin/v1/registration_tokens", get(list))
        .route("/_synapse/admin/v1/registration_tokens/new", post(create))
        .route(
            "/_synapse/admin/v1/registration_tokens/{token}",
            get(get_one).put(update).delete(delete),
        )
}

pub(crate) fn token_json(t: &RegistrationTokenRecord) -> Value {
    json!({
        "token": t.token,
        "uses_allowed": t.uses_allowed,
        "pending": t.pending,
        "completed": t.completed,
        "expiry_time": t.expiry_time,
    })
}

fn bad(msg: &str) -> ApiError {
    ApiError::new(ErrorKind::InvalidParam, msg)
}

/// An integer-or-null field: absent is `None`, `null` is `Some(None)`.
fn int_or_null(body: &Map<String, Value>, key: &str, what: &str) -> ApiResult<Option<Option<i64>>> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::Number(n)) => n.as_i64().map(|v| Some(Some(v))).ok_or_else(|| bad(what)),
        Some(_) => Err(bad(what)),
    }
}

async fn list(
    State(state): State<AppState>,
    _: AdminAuth,
    Query(q): Query<HashMap<String, Value>>,
) -> ApiResult<Json<Value>> {
    let valid = parse_bool(q.get("valid").and_then(Value::as_str), "valid")?;
    let tokens = state.services.registration_tokens.list(valid).await?;
    let list: Vec<Value> = tokens.iter().map(token_json).collect();
    Ok(Json(json!({"registration_tokens": list})))
}

async fn get_one(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(token): Path<String>,
) -> ApiResult<Json<Value>> {
    let t = state.services.registration_tokens.get(&token).await?;
    Ok(Json(token_json(&t)))
}

async fn create(
    State(state): State<AppState>,
    admin: AdminAuth,
    Body(body): Body<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let token = match body.get("token") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("token must be a string")),
    };
    let length = match int_or_null(
        &body,
        "length",
        "length must be an integer between 1 and 64",
    )? {
        None | Some(None) => None,
        Some(Some(n)) => Some(
            usize::try_from(n).map_err(|_| bad("length must be an integer between 1 and 64"))?,
        ),
    };
    let uses_allowed = int_or_null(
        &body,
        "uses_allowed",
        "uses_allowed must be a non-negative integer or null",
    )?
    .flatten();
    let expiry_time = int_or_null(
        &body,
        "expiry_time",
        "expiry_time must be an integer or null",
    )?
    .flatten();
    let t = state
        .services
        .registration_tokens
        .create(
            &admin.actor(),
            NewToken {
                token,
                length,
                uses_allowed,
                expiry_time,
            },
        )
        .await?;
    Ok(Json(token_json(&t)))
}

async fn update(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(token): Path<String>,
    Body(body): Body<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let update = RegistrationTokenUpdate {
        uses_allowed: int_or_null(
            &body,
            "uses_allowed",
            "uses_allowed must be a non-negative integer or null",
        )?,
        expiry_time: int_or_null(
            &body,
            "expiry_time",
            "expiry_time must be an integer or null",
        )?,
    };
    let t = state
        .services
        .registration_tokens
        .update(&admin.actor(), &token, update)
        .await?;
    Ok(Json(token_json(&t)))
}

async fn delete(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(token): Path<String>,
) -> ApiResult<Json<Value>> {
    state
        .services
        .registration_tokens
        .delete(&admin.actor(), &token)
        .await?;
    Ok(Json(json!({})))
}

//! Profiles: reading anyone's display name and avatar, and changing one's own.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use feldpost_service::ErrorKind;
use feldpost_service::profile::Field;
use ruma::OwnedUserId;
use serde_json::{Map, Value, json};

use super::account_data::require_self;
use crate::AppState;
use crate::error::{ApiError, ApiResult, json_response};
use crate::extract::{Auth, Json as Body, Path, parse_id};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/client/v3/profile/{user_id}", get(get_profile))
        .route(
            "/_matrix/client/v3/profile/{user_id}/{key}",
            get(get_field).put(put_field).delete(delete_field),
        )
}

/// The longest profile key the spec allows, in bytes.
const MAX_KEY_BYTES: usize = 255;

/// Why a profile key was refused.
enum BadKey {
    TooLarge,
    Invalid,
}

impl IntoResponse for BadKey {
    fn into_response(self) -> Response {
        match self {
            // An error code the service layer has no use for, so it is built here.
            BadKey::TooLarge => json_response(
                StatusCode::BAD_REQUEST,
                &json!({"errcode": "M_KEY_TOO_LARGE", "error": "Profile keys may be at most 255 bytes"}),
            ),
            BadKey::Invalid => {
                ApiError::new(ErrorKind::InvalidParam, "Invalid profile key").into_response()
            }
        }
    }
}

/// Checks a profile key against the spec's grammar: `displayname`, `avatar_url`, `m.tz` or a
/// namespaced identifier. Returns the stored field it names, if this server stores it.
fn check_key(key: &str) -> Result<Option<Field>, BadKey> {
    if key.len() > MAX_KEY_BYTES {
        return Err(BadKey::TooLarge);
    }
    let namespaced = key.contains('.')
        && key.split('.').all(|part| {
            let mut chars = part.chars();
            chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        });
    if !(Field::parse(key).is_some() || key == "m.tz" || namespaced) {
        return Err(BadKey::Invalid);
    }
    Ok(Field::parse(key))
}

async fn get_profile(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let user: OwnedUserId = parse_id(&user_id, "user id")?;
    let p = state.services.profiles.get(&user).await?;
    let mut body = Map::new();
    if let Some(d) = p.displayname {
        body.insert("displayname".into(), json!(d));
    }
    if let Some(a) = p.avatar_url {
        body.insert("avatar_url".into(), json!(a));
    }
    Ok(Json(Value::Object(body)))
}

async fn get_field(
    State(state): State<AppState>,
    Path((user_id, key)): Path<(String, String)>,
) -> ApiResult<Response> {
    let user: OwnedUserId = parse_id(&user_id, "user id")?;
    let field = match check_key(&key) {
        Ok(f) => f,
        Err(bad) => return Ok(bad.into_response()),
    };
    let p = state.services.profiles.get(&user).await?;
    let value = match field {
        Some(Field::Displayname) => p.displayname,
        Some(Field::AvatarUrl) => p.avatar_url,
        None => None,
    }
    .ok_or_else(|| ApiError::new(ErrorKind::NotFound, format!("No {key} in this profile")))?;
    Ok(Json(json!({ key: value })).into_response())
}

async fn put_field(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((user_id, key)): Path<(String, String)>,
    Body(body): Body<Map<String, Value>>,
) -> ApiResult<Response> {
    let user = require_self(&r, &user_id, "the profile")?;
    let field = match check_key(&key) {
        Ok(f) => f,
        Err(bad) => return Ok(bad.into_response()),
    };
    let value = body
        .get(&key)
        .ok_or_else(|| ApiError::new(ErrorKind::MissingParam, format!("{key} missing")))?;
    let Some(field) = field else {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            format!("This server does not store the profile field {key}"),
        ));
    };
    // An empty string clears the field, as clients did before the DELETE endpoint existed.
    let value = value.as_str().ok_or_else(|| {
        ApiError::new(
            ErrorKind::BadJson,
            format!("{key} must be a string (use DELETE to remove it)"),
        )
    })?;
    state
        .services
        .profiles
        .set(&user, field, Some(value))
        .await?;
    Ok(Json(json!({})).into_response())
}

async fn delete_field(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((user_id, key)): Path<(String, String)>,
) -> ApiResult<Response> {
    let user = require_self(&r, &user_id, "the profile")?;
    match check_key(&key) {
        Ok(Some(field)) => state.services.profiles.set(&user, field, None).await?,
        // A field this server does not store is already absent.
        Ok(None) => {}
        Err(bad) => return Ok(bad.into_response()),
    }
    Ok(Json(json!({})).into_response())
}

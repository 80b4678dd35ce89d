//! Discovery: `/versions`, `/.well-known/matrix/client`, `/capabilities`.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::Auth;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/client/versions", get(versions))
        .route("/.well-known/matrix/client", get(well_known))
        .route("/_matrix/client/v3/capabilities", get(capabilities))
        .route("/_matrix/client/r0/capabilities", get(capabilities))
}

/// The spec versions whose Client-Server API this server serves.
const VERSIONS: &[&str] = &[
    "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
    "v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16", "v1.17", "v1.18", "v1.19",
];

async fn versions() -> Json<Value> {
    Json(json!({
        "versions": VERSIONS,
        "unstable_features": {},
    }))
}

/// The base URL clients should use: the configured public one, else the Host they reached us by.
pub fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.services.config.public_baseurl {
        return u.trim_end_matches('/').to_owned();
    }
    match headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        Some(host) => format!("http://{host}"),
        None => format!("http://{}", state.services.config.listen),
    }
}

async fn well_known(State(state): State<AppState>, headers: HeaderMap) -> Json<Value> {
    Json(json!({"m.homeserver": {"base_url": base_url(&state, &headers)}}))
}

async fn capabilities(State(state): State<AppState>, Auth(_): Auth) -> ApiResult<Json<Value>> {
    let available: serde_json::Map<String, Value> = feldpost_service::rooms::SUPPORTED_VERSIONS
        .iter()
        .map(|v| ((*v).to_owned(), json!("stable")))
        .collect();
    Ok(Json(json!({
        "capabilities": {
            "m.change_password": {"enabled": true},
            "m.room_versions": {"default": state.services.rooms.default_version().as_str(), "available": available},
            "m.set_displayname": {"enabled": true},
            "m.set_avatar_url": {"enabled": true},
            "m.profile_fields": {"enabled": true, "allowed": ["displayname", "avatar_url"]},
            "m.3pid_changes": {"enabled": false},
            "m.get_login_token": {"enabled": false},
        }
    })))
}

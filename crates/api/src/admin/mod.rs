//! The admin API: the Synapse-compatible subset under `/_synapse/admin` (so that the admin tools
//! operators already use work unchanged) and Feldpost's own under `/_feldpost/admin/v1`. Every endpoint except
//! shared-secret registration needs a server admin's access token; everyone else gets 403.

mod feldpost;
mod synapse_media;
mod synapse_rooms;
mod synapse_tokens;
mod synapse_users;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use feldpost_service::accounts::Requester;
use feldpost_service::enrollment::Actor;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::Auth;

pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(synapse_users::routes())
        .merge(synapse_tokens::routes())
        .merge(synapse_rooms::routes())
        .merge(synapse_media::routes())
        .merge(feldpost::routes())
}

/// An authenticated server admin. A deactivated admin has no valid token any more; a user who
/// is not (or no longer) an admin gets `M_FORBIDDEN`.
pub struct AdminAuth(pub Requester);

impl AdminAuth {
    pub fn actor(&self) -> Actor {
        Actor::User(self.0.user_id.clone())
    }
}

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Auth(r) = Auth::from_request_parts(parts, state).await?;
        state.services.admin.require_admin(&r)?;
        Ok(AdminAuth(r))
    }
}

/// A field of a JSON body: absent is `None`, present is parsed (`M_INVALID_PARAM` if it has the
/// wrong type). `null` parses as whatever `T` makes of it (`Option<_>` gives `None`).
pub(crate) fn field<T: DeserializeOwned>(
    body: &Map<String, Value>,
    key: &str,
) -> ApiResult<Option<T>> {
    match body.get(key) {
        None => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|_| {
            ApiError::new(
                feldpost_service::ErrorKind::InvalidParam,
                format!("{key} has the wrong type"),
            )
        }),
    }
}

/// A field the body must have: `M_MISSING_PARAM` when absent, otherwise as [`field`].
pub(crate) fn required_field<T: DeserializeOwned>(
    body: &Map<String, Value>,
    key: &str,
) -> ApiResult<T> {
    field(body, key)?.ok_or_else(|| {
        ApiError::new(
            feldpost_service::ErrorKind::MissingParam,
            format!("{key} missing"),
        )
    })
}

/// Where links for phones point: the configured public URL; else, when the admin API shares the
/// main listener, the address the admin reached it by; else the main listener's address.
pub(crate) fn public_base(state: &AppState, headers: &HeaderMap) -> String {
    let config = &state.services.config;
    if let Some(u) = &config.public_baseurl {
        return u.trim_end_matches('/').to_owned();
    }
    if config.admin.listen.is_none()
        && let Some(host) = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
    {
        return format!("http://{host}");
    }
    let addr = state.services.admin.main_addr().unwrap_or(config.listen);
    format!("http://{addr}")
}

/// Pagination parameters that Synapse reads as integers, given as strings in the query.
pub(crate) fn parse_u64(v: Option<&str>, name: &str, default: u64) -> ApiResult<u64> {
    match v {
        None | Some("") => Ok(default),
        Some(s) => s.parse().map_err(|_| {
            ApiError::new(
                feldpost_service::ErrorKind::InvalidParam,
                format!("{name} must be a non-negative integer"),
            )
        }),
    }
}

pub(crate) fn parse_bool(v: Option<&str>, name: &str) -> ApiResult<Option<bool>> {
    match v {
        None | Some("") => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(ApiError::new(
            feldpost_service::ErrorKind::InvalidParam,
            format!("{name} must be true or false"),
        )),
    }
}

/// `dir=f|b`, `M_INVALID_PARAM` otherwise; true for backwards.
pub(crate) fn parse_dir(v: Option<&str>) -> ApiResult<bool> {
    match v {
        None | Some("") | Some("f") => Ok(false),
        Some("b") => Ok(true),
        Some(_) => Err(ApiError::new(
            feldpost_service::ErrorKind::InvalidParam,
            "Unknown direction: dir must be f or b",
        )),
    }
}

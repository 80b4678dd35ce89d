//! Token-authenticated registration: the `m.login.registration_token` stage of `/register` and
//! `GET /v1/register/m.login.registration_token/validity`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use feldpost_service::ErrorKind;
use feldpost_service::ratelimit::Action;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ClientIp, Query};

pub const STAGE: &str = "m.login.registration_token";

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/_matrix/client/v1/register/m.login.registration_token/validity",
        get(validity),
    )
}

#[derive(Deserialize)]
struct ValidityQuery {
    token: String,
}

/// Registration with a token is always possible here, so this never answers 403; it is rate
/// limited per address against guessing.
async fn validity(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Query(q): Query<ValidityQuery>,
) -> ApiResult<Json<Value>> {
    let s = &state.services;
    s.rate_limiter
        .check(Action::Login, &format!("token-validity:{ip}"))?;
    let valid = s.registration_tokens.is_valid(&q.token).await?;
    Ok(Json(json!({"valid": valid})))
}

/// Completes the token stage for a registration session: the token must be usable and, for an
/// enrollment, `username` must be the one it was made for. Failures are the UIA error the
/// caller puts into its 401 body.
pub async fn complete_stage(
    state: &AppState,
    session: &str,
    token: Option<&str>,
    username: Option<&str>,
) -> Result<(), (String, String)> {
    let Some(token) = token else {
        return Err(("M_MISSING_PARAM".into(), "auth.token missing".into()));
    };
    match state
        .services
        .registration_tokens
        .reserve(session, token, username)
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind == ErrorKind::Internal => {
            Err(("M_UNKNOWN".into(), "Internal server error".into()))
        }
        Err(e) => Err((e.kind.errcode().into(), e.message)),
    }
}

/// A 401 UIA body with an error, for a failed stage.
pub fn failed(
    state: &AppState,
    session: Option<&str>,
    purpose: &str,
    flows: &[&[&str]],
    (code, msg): (String, String),
) -> ApiError {
    ApiError::Uia(
        state
            .services
            .uia
            .challenge(session, purpose, flows, Some((&code, &msg)))
            .body,
    )
}

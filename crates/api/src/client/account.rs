//! Accounts and sessions: register, login, logout, whoami, password change, deactivation.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use feldpost_service::ErrorKind;
use feldpost_service::ratelimit::Action;
use serde::Deserialize;
use serde_json::{Value, json};

use super::discovery::base_url;
use super::registration_token;
use super::uia::{AuthData, identified_user, require_password};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, ClientIp, Json as Body, Query};

/// What the admin console needs on a separate admin listener: password login, logout, whoami.
pub fn session_routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/client/v3/login", get(login_flows).post(login))
        .route("/_matrix/client/v3/logout", post(logout))
        .route("/_matrix/client/v3/account/whoami", get(whoami))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/client/v3/register", post(register))
        .route("/_matrix/client/v3/register/available", get(available))
        .route("/_matrix/client/v3/login", get(login_flows).post(login))
        .route("/_matrix/client/v3/logout", post(logout))
        .route("/_matrix/client/v3/logout/all", post(logout_all))
        .route("/_matrix/client/v3/account/whoami", get(whoami))
        .route("/_matrix/client/v3/account/password", post(change_password))
        .route("/_matrix/client/v3/account/deactivate", post(deactivate))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RegisterQuery {
    kind: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RegisterBody {
    auth: Option<AuthData>,
    username: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    inhibit_login: bool,
    refresh_token: bool,
}

/// With open registration anyone may register; a registration token (an enrollment, say)
/// still works, and sets the display name an enrollment carries.
const OPEN_FLOWS: &[&[&str]] = &[&["m.login.dummy"], &[registration_token::STAGE]];
/// Closed registration (the default): a valid registration token is the way in.
const TOKEN_FLOWS: &[&[&str]] = &[&[registration_token::STAGE]];

async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Query(q): Query<RegisterQuery>,
    Body(body): Body<RegisterBody>,
) -> ApiResult<Json<Value>> {
    let s = &state.services;
    match q.kind.as_deref() {
        None | Some("user") => {}
        Some("guest") => {
            return Err(ApiError::new(
                ErrorKind::GuestAccessForbidden,
                "Guest access is disabled",
            ));
        }
        Some(_) => {
            return Err(ApiError::new(
                ErrorKind::InvalidParam,
                "kind must be user or guest",
            ));
        }
    }
    let open = s.accounts.registration_open();
    let flows = if open { OPEN_FLOWS } else { TOKEN_FLOWS };
    s.rate_limiter.check(Action::Registration, &ip)?;
    // Refuse bad or taken usernames before any auth round-trip.
    if let Some(name) = &body.username {
        if name.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ApiError::new(
                ErrorKind::InvalidUsername,
                "User ID must be lowercase",
            ));
        }
        s.accounts.check_available(name).await?;
    }
    let purpose = "register";
    let Some(auth) = body.auth else {
        return Err(ApiError::Uia(
            s.uia.challenge(None, purpose, flows, None).body,
        ));
    };
    // A single-stage flow may be completed in the first request, without a session.
    let session = auth
        .session
        .clone()
        .unwrap_or_else(|| feldpost_service::accounts::random_id(24));
    let done = match auth.kind.as_deref() {
        Some("m.login.dummy") if open => {
            s.uia
                .complete_stage(&session, purpose, "m.login.dummy", flows)
        }
        Some(registration_token::STAGE) => {
            if let Err(e) = registration_token::complete_stage(
                &state,
                &session,
                auth.token.as_deref(),
                body.username.as_deref(),
            )
            .await
            {
                return Err(registration_token::failed(
                    &state,
                    auth.session.as_deref(),
                    purpose,
                    flows,
                    e,
                ));
            }
            s.uia
                .complete_stage(&session, purpose, registration_token::STAGE, flows)
        }
        _ => false,
    };
    if !done {
        return Err(ApiError::Uia(
            s.uia
                .challenge(auth.session.as_deref(), purpose, flows, None)
                .body,
        ));
    }
    let password = body
        .password
        .as_deref()
        .ok_or_else(|| ApiError::new(ErrorKind::MissingParam, "password missing"))?;
    // A session that passed the token stage takes its reserved use now; the use is given back
    // if the account cannot be created after all.
    let claim = s
        .registration_tokens
        .claim(&session, body.username.as_deref().unwrap_or(""))
        .await?;
    if claim.is_none() && !open {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "A registration token is required",
        ));
    }
    let user_id = match s
        .accounts
        .register(body.username.as_deref(), Some(password), false)
        .await
    {
        Ok(u) => u,
        Err(e) => {
            if let Some(c) = &claim
                && let Err(e) = s.registration_tokens.unclaim(c).await
            {
                tracing::warn!(error = %e, "could not give back a registration token use");
            }
            return Err(e.into());
        }
    };
    if let Some(c) = &claim {
        s.registration_tokens.finish(c, &user_id).await?;
        if let Some(name) = &c.displayname {
            s.accounts.set_displayname(&user_id, Some(name)).await?;
        }
    }
    if body.inhibit_login {
        return Ok(Json(json!({"user_id": user_id})));
    }
    let _ = body.refresh_token; // Refresh tokens are optional; access tokens do not expire.
    let session = s
        .accounts
        .create_session(
            &user_id,
            body.device_id.as_deref(),
            body.initial_device_display_name.as_deref(),
        )
        .await?;
    Ok(Json(json!({
        "user_id": session.user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": s.server_name.as_str(),
    })))
}

#[derive(Deserialize)]
struct AvailableQuery {
    username: String,
}

async fn available(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Query(q): Query<AvailableQuery>,
) -> ApiResult<Json<Value>> {
    state
        .services
        .rate_limiter
        .check(Action::Registration, &format!("available:{ip}"))?;
    state.services.accounts.check_available(&q.username).await?;
    Ok(Json(json!({"available": true})))
}

async fn login_flows() -> Json<Value> {
    Json(json!({"flows": [{"type": "m.login.password"}]}))
}

#[derive(Deserialize)]
struct LoginBody {
    #[serde(rename = "type")]
    kind: String,
    identifier: Option<Value>,
    user: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Body(body): Body<LoginBody>,
) -> ApiResult<Json<Value>> {
    let s = &state.services;
    s.rate_limiter.check(Action::Login, &ip)?;
    if body.kind != "m.login.password" {
        return Err(ApiError::new(ErrorKind::Unknown, "Unsupported login type"));
    }
    let who = identified_user(body.identifier.as_ref(), body.user.as_deref())?
        .ok_or_else(|| ApiError::new(ErrorKind::MissingParam, "identifier missing"))?;
    let password = body
        .password
        .ok_or_else(|| ApiError::new(ErrorKind::MissingParam, "password missing"))?;
    let forbidden = || ApiError::new(ErrorKind::Forbidden, "Invalid username or password");
    let user_id = s
        .accounts
        .local_user_id(&who.to_lowercase())
        .map_err(|_| forbidden())?;
    s.rate_limiter.check(Action::Login, user_id.as_str())?;
    s.accounts.check_password(&user_id, &password).await?;
    if let Some(d) = &body.device_id
        && d.len() > 255
    {
        return Err(ApiError::new(ErrorKind::InvalidParam, "device_id too long"));
    }
    let session = s
        .accounts
        .create_session(
            &user_id,
            body.device_id.as_deref(),
            body.initial_device_display_name.as_deref(),
        )
        .await?;
    Ok(Json(json!({
        "user_id": session.user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": s.server_name.as_str(),
        "well_known": {"m.homeserver": {"base_url": base_url(&state, &headers)}},
    })))
}

async fn logout(State(state): State<AppState>, Auth(r): Auth) -> ApiResult<Json<Value>> {
    state.services.accounts.logout(&r).await?;
    Ok(Json(json!({})))
}

async fn logout_all(State(state): State<AppState>, Auth(r): Auth) -> ApiResult<Json<Value>> {
    state.services.accounts.logout_all(&r.user_id).await?;
    Ok(Json(json!({})))
}

async fn whoami(Auth(r): Auth) -> Json<Value> {
    Json(json!({"user_id": r.user_id, "device_id": r.device_id, "is_guest": false}))
}

#[derive(Deserialize)]
struct PasswordBody {
    new_password: Option<String>,
    #[serde(default = "yes")]
    logout_devices: bool,
    auth: Option<AuthData>,
}

fn yes() -> bool {
    true
}

async fn change_password(
    State(state): State<AppState>,
    Auth(r): Auth,
    Body(body): Body<PasswordBody>,
) -> ApiResult<Json<Value>> {
    require_password(&state, &r, body.auth, "password").await?;
    let new = body
        .new_password
        .ok_or_else(|| ApiError::new(ErrorKind::MissingParam, "new_password missing"))?;
    state
        .services
        .accounts
        .change_password(&r, &new, body.logout_devices)
        .await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct DeactivateBody {
    auth: Option<AuthData>,
    #[serde(default)]
    erase: bool,
}

async fn deactivate(
    State(state): State<AppState>,
    Auth(r): Auth,
    Body(body): Body<DeactivateBody>,
) -> ApiResult<Json<Value>> {
    require_password(&state, &r, body.auth, "deactivate").await?;
    let s = &state.services;
    // Leave every room first, while the account can still send.
    for room in s.timeline.joined_rooms(&r.user_id).await? {
        if let Err(e) = s.rooms.leave(&room, &r.user_id, None).await {
            tracing::warn!(room = %room, error = %e, "could not leave room on deactivation");
        }
    }
    if body.erase {
        s.accounts.set_displayname(&r.user_id, None).await?;
        s.accounts.set_avatar_url(&r.user_id, None).await?;
    }
    s.accounts.deactivate(&r.user_id).await?;
    Ok(Json(json!({"id_server_unbind_result": "no-support"})))
}

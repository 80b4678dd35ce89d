//! User-interactive authentication for account actions: the password stage.

use feldpost_service::ErrorKind;
use feldpost_service::accounts::Requester;
use serde::Deserialize;
use serde_json::Value;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Deserialize, Default)]
pub struct AuthData {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub session: Option<String>,
    pub password: Option<String>,
    pub identifier: Option<Value>,
    pub user: Option<String>,
    /// For `m.login.registration_token`.
    pub token: Option<String>,
}

/// The user named in a login-style `identifier` (or the deprecated `user` field).
pub fn identified_user(
    identifier: Option<&Value>,
    user: Option<&str>,
) -> ApiResult<Option<String>> {
    if let Some(id) = identifier {
        let kind = id.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != "m.id.user" {
            return Err(ApiError::new(
                ErrorKind::InvalidParam,
                "Only m.id.user identifiers are supported",
            ));
        }
        let user = id
            .get("user")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::new(ErrorKind::MissingParam, "identifier.user missing"))?;
        return Ok(Some(user.to_owned()));
    }
    Ok(user.map(str::to_owned))
}

const PASSWORD_FLOWS: &[&[&str]] = &[&["m.login.password"]];

/// Requires the requester to confirm their password through UIA before `purpose` proceeds.
pub async fn require_password(
    state: &AppState,
    requester: &Requester,
    auth: Option<AuthData>,
    purpose: &str,
) -> ApiResult<()> {
    let uia = &state.services.uia;
    let purpose = format!("{purpose}:{}", requester.user_id);
    let Some(auth) = auth else {
        return Err(ApiError::Uia(
            uia.challenge(None, &purpose, PASSWORD_FLOWS, None).body,
        ));
    };
    let session = auth.session.clone();
    if auth.kind.as_deref() != Some("m.login.password") {
        return Err(ApiError::Uia(
            uia.challenge(session.as_deref(), &purpose, PASSWORD_FLOWS, None)
                .body,
        ));
    }
    let who = identified_user(auth.identifier.as_ref(), auth.user.as_deref())?;
    if let Some(who) = who {
        let user_id = state
            .services
            .accounts
            .local_user_id(&who)
            .map_err(|_| forbidden_uia(state, session.as_deref(), &purpose))?;
        if user_id != requester.user_id {
            return Err(forbidden_uia(state, session.as_deref(), &purpose));
        }
    }
    let password = auth
        .password
        .ok_or_else(|| ApiError::new(ErrorKind::MissingParam, "auth.password missing"))?;
    if state
        .services
        .accounts
        .check_password(&requester.user_id, &password)
        .await
        .is_err()
    {
        return Err(forbidden_uia(state, session.as_deref(), &purpose));
    }
    let session = session.unwrap_or_else(|| feldpost_service::accounts::random_id(24));
    if uia.complete_stage(&session, &purpose, "m.login.password", PASSWORD_FLOWS) {
        Ok(())
    } else {
        Err(ApiError::Uia(
            uia.challenge(Some(&session), &purpose, PASSWORD_FLOWS, None)
                .body,
        ))
    }
}

fn forbidden_uia(state: &AppState, session: Option<&str>, purpose: &str) -> ApiError {
    ApiError::Uia(
        state
            .services
            .uia
            .challenge(
                session,
                purpose,
                PASSWORD_FLOWS,
                Some(("M_FORBIDDEN", "Invalid password")),
            )
            .body,
    )
}

//! Presence: setting one's own state and reading that of others.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::account_data::require_self;
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Auth, Json as Body, Path, parse_id};

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/_matrix/client/v3/presence/{user_id}/status",
        get(get_presence).put(set_presence),
    )
}

#[derive(Deserialize)]
struct PresenceBody {
    presence: String,
    status_msg: Option<String>,
}

async fn set_presence(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(user_id): Path<String>,
    Body(body): Body<PresenceBody>,
) -> ApiResult<Json<Value>> {
    let user = require_self(&r, &user_id, "the presence")?;
    state
        .services
        .presence
        .set(&user, &body.presence, body.status_msg.as_deref())
        .await?;
    Ok(Json(json!({})))
}

async fn get_presence(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(user_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let target: OwnedUserId = parse_id(&user_id, "user id")?;
    Ok(Json(
        state.services.presence.get(&r.user_id, &target).await?,
    ))
}

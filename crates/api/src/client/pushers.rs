//! Pushers: `GET /pushers` and `POST /pushers/set`.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Auth, Json as Body};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/client/v3/pushers", get(list))
        .route("/_matrix/client/v3/pushers/set", post(set))
}

async fn list(State(state): State<AppState>, Auth(r): Auth) -> ApiResult<Json<Value>> {
    Ok(Json(state.services.push.pushers.list(&r.user_id).await?))
}

async fn set(
    State(state): State<AppState>,
    Auth(r): Auth,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    state
        .services
        .push
        .pushers
        .set(&r.user_id, Some(&r.device_id), &body)
        .await?;
    Ok(Json(json!({})))
}

//! The Push Gateway API on Feldpost itself. `GET` answers the UnifiedPush gateway discovery, so
//! that UnifiedPush apps accept this server as their Matrix gateway.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use feldpost_service::ErrorKind;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::Json as Body;

pub fn routes() -> Router<AppState> {
    Router::new().route("/_matrix/push/v1/notify", get(discovery).post(notify))
}

fn require_enabled(state: &AppState) -> ApiResult<()> {
    if !state.services.push.gateway.enabled() {
        return Err(ApiError::new(
            ErrorKind::Unrecognized,
            "The push gateway is disabled on this server",
        ));
    }
    Ok(())
}

async fn discovery(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    require_enabled(&state)?;
    Ok(Json(json!({"unifiedpush": {"gateway": "matrix"}})))
}

async fn notify(State(state): State<AppState>, Body(body): Body<Value>) -> ApiResult<Json<Value>> {
    require_enabled(&state)?;
    let rejected = state.services.push.gateway.notify(&body).await?;
    Ok(Json(json!({ "rejected": rejected })))
}

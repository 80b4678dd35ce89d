//! `/sendToDevice`: messages to other devices, delivered through their syncs.

use axum::extract::State;
use axum::routing::put;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Auth, Json as Body, Path};

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/_matrix/client/v3/sendToDevice/{event_type}/{txn_id}",
        put(send),
    )
}

#[derive(Deserialize)]
struct SendBody {
    messages: Map<String, Value>,
}

async fn send(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((event_type, txn_id)): Path<(String, String)>,
    Body(body): Body<SendBody>,
) -> ApiResult<Json<Value>> {
    state
        .services
        .to_device
        .send(
            &r.user_id,
            &r.device_id,
            &event_type,
            &txn_id,
            body.messages,
        )
        .await?;
    Ok(Json(json!({})))
}

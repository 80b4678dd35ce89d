//! `GET /notifications`: the events that notified the user, newest first, paginated.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Auth, Query, qs};

pub fn routes() -> Router<AppState> {
    Router::new().route("/_matrix/client/v3/notifications", get(list))
}

#[derive(Deserialize)]
struct Params {
    from: Option<String>,
    #[serde(default, deserialize_with = "qs::opt_u64")]
    limit: Option<u64>,
    only: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    Auth(r): Auth,
    Query(p): Query<Params>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        state
            .services
            .push
            .notifications(&r.user_id, p.from.as_deref(), p.limit, p.only.as_deref())
            .await?,
    ))
}

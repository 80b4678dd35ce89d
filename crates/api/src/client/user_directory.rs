//! The user directory: searching the users the requester can see.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Auth, Json as Body};

pub fn routes() -> Router<AppState> {
    Router::new().route("/_matrix/client/v3/user_directory/search", post(search))
}

/// The spec's default page size, and the most one request may ask for.
const DEFAULT_LIMIT: u64 = 10;
const MAX_LIMIT: u64 = 1000;

#[derive(Deserialize)]
struct SearchBody {
    search_term: String,
    limit: Option<u64>,
}

async fn search(
    State(state): State<AppState>,
    Auth(r): Auth,
    Body(body): Body<SearchBody>,
) -> ApiResult<Json<Value>> {
    let limit = body.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT) as u32;
    let (users, limited) = state
        .services
        .accounts
        .search(&r.user_id, body.search_term.trim(), limit)
        .await?;
    let results: Vec<Value> = users
        .into_iter()
        .map(|u| {
            let mut v = Map::new();
            v.insert("user_id".into(), json!(u.user_id));
            if let Some(d) = u.displayname {
                v.insert("display_name".into(), json!(d));
            }
            if let Some(a) = u.avatar_url {
                v.insert("avatar_url".into(), json!(a));
            }
            Value::Object(v)
        })
        .collect();
    Ok(Json(json!({"results": results, "limited": limited})))
}

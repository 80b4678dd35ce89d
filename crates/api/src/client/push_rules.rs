//! Push rules: `/pushrules/` (all rulesets, the global one, single rules with their enabled flag
//! and actions). The rules live in account data `m.push_rules`, which only these endpoints change.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Json as Body, Path, Query};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_matrix/client/v3/pushrules/", get(get_all))
        .route("/_matrix/client/v3/pushrules", get(get_all))
        .route("/_matrix/client/v3/pushrules/{scope}/", get(get_scope))
        .route("/_matrix/client/v3/pushrules/{scope}", get(get_scope))
        .route(
            "/_matrix/client/v3/pushrules/{scope}/{kind}/{rule_id}",
            get(get_rule).put(put_rule).delete(delete_rule),
        )
        .route(
            "/_matrix/client/v3/pushrules/{scope}/{kind}/{rule_id}/enabled",
            get(get_enabled).put(put_enabled),
        )
        .route(
            "/_matrix/client/v3/pushrules/{scope}/{kind}/{rule_id}/actions",
            get(get_actions).put(put_actions),
        )
}

async fn get_all(State(state): State<AppState>, Auth(r): Auth) -> ApiResult<Json<Value>> {
    let rules = state.services.push.rules.ruleset(&r.user_id).await?;
    Ok(Json(json!({ "global": *rules })))
}

async fn get_scope(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(scope): Path<String>,
) -> ApiResult<Json<Value>> {
    feldpost_service::push::rules::PushRules::check_scope(&scope)?;
    let rules = state.services.push.rules.ruleset(&r.user_id).await?;
    Ok(Json(json!(*rules)))
}

async fn get_rule(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((scope, kind, rule_id)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        state
            .services
            .push
            .rules
            .get_rule(&r.user_id, &scope, &kind, &rule_id)
            .await?,
    ))
}

#[derive(Deserialize)]
struct Position {
    before: Option<String>,
    after: Option<String>,
}

async fn put_rule(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((scope, kind, rule_id)): Path<(String, String, String)>,
    Query(pos): Query<Position>,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    state
        .services
        .push
        .rules
        .put_rule(
            &r.user_id,
            &scope,
            &kind,
            &rule_id,
            pos.before.as_deref().filter(|s| !s.is_empty()),
            pos.after.as_deref().filter(|s| !s.is_empty()),
            &body,
        )
        .await?;
    Ok(Json(json!({})))
}

async fn delete_rule(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((scope, kind, rule_id)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    state
        .services
        .push
        .rules
        .delete_rule(&r.user_id, &scope, &kind, &rule_id)
        .await?;
    Ok(Json(json!({})))
}

async fn get_enabled(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((scope, kind, rule_id)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let enabled = state
        .services
        .push
        .rules
        .enabled(&r.user_id, &scope, &kind, &rule_id)
        .await?;
    Ok(Json(json!({ "enabled": enabled })))
}

async fn put_enabled(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((scope, kind, rule_id)): Path<(String, String, String)>,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    let enabled = match body.get("enabled") {
        Some(Value::Bool(b)) => *b,
        None => {
            return Err(ApiError::new(
                feldpost_service::ErrorKind::MissingParam,
                "enabled is required",
            ));
        }
        Some(_) => {
            return Err(ApiError::new(
                feldpost_service::ErrorKind::BadJson,
                "enabled must be a boolean",
            ));
        }
    };
    state
        .services
        .push
        .rules
        .set_enabled(&r.user_id, &scope, &kind, &rule_id, enabled)
        .await?;
    Ok(Json(json!({})))
}

async fn get_actions(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((scope, kind, rule_id)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let actions = state
        .services
        .push
        .rules
        .actions(&r.user_id, &scope, &kind, &rule_id)
        .await?;
    Ok(Json(json!({ "actions": actions })))
}

async fn put_actions(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((scope, kind, rule_id)): Path<(String, String, String)>,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    let actions = body.get("actions").ok_or_else(|| {
        ApiError::new(
            feldpost_service::ErrorKind::MissingParam,
            "actions is required",
        )
    })?;
    state
        .services
        .push
        .rules
        .set_actions(&r.user_id, &scope, &kind, &rule_id, actions)
        .await?;
    Ok(Json(json!({})))
}

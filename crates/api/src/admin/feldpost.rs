//! Feldpost's own admin API under `/_feldpost/admin/v1`: enrollments (create, list, show with
//! their QR code, revoke), the admin audit trail, and server notices.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use feldpost_service::ErrorKind;
use feldpost_service::enrollment::RegistrationTokenRecord;
use feldpost_service::enrollment::{NewEnrollment, enrollment_link, qr_svg, token_state};
use serde_json::{Map, Value, json};

use super::{AdminAuth, field, parse_u64, public_base, required_field};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json as Body, Path, Query};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_feldpost/admin/v1/enrollments", get(list).post(create))
        .route(
            "/_feldpost/admin/v1/enrollments/{id}",
            get(get_one).delete(revoke),
        )
        .route("/_feldpost/admin/v1/enrollments/{id}/qr.svg", get(qr))
        .route("/_feldpost/admin/v1/audit", get(audit))
        .route("/_feldpost/admin/v1/server_notices", post(notice))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn enrollment_json(state: &AppState, headers: &HeaderMap, t: &RegistrationTokenRecord) -> Value {
    let server = state.services.server_name.as_str();
    let localpart = t.bound_localpart.clone().unwrap_or_default();
    json!({
        "id": t.id,
        "user_id": format!("@{localpart}:{server}"),
        "username": localpart,
        "displayname": t.displayname,
        "token": t.token,
        "link": enrollment_link(&public_base(state, headers), &t.token),
        "state": token_state(t, now_ms()).as_str(),
        "expiry_time": t.expiry_time,
        "created_ts": t.created_ms,
        "created_by": t.created_by,
        "revoked_ts": t.revoked_ms,
        "used_by": t.used_by.first(),
    })
}

fn parse_enrollment_id(id: &str) -> ApiResult<i64> {
    id.parse()
        .map_err(|_| ApiError::new(ErrorKind::NotFound, "No such enrollment"))
}

async fn create(
    State(state): State<AppState>,
    admin: AdminAuth,
    headers: HeaderMap,
    Body(body): Body<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let s = &state.services;
    let username = required_field::<String>(&body, "username")?;
    let displayname = field::<Option<String>>(&body, "displayname")?.flatten();
    let lifetime_minutes = field::<Option<u64>>(&body, "lifetime_minutes")?.flatten();
    // The name must not be taken: checked here, and again when the member registers.
    let exists = match s.accounts.local_user_id(&username) {
        Ok(id) => s.accounts.user(&id).await?.is_some(),
        Err(e) => return Err(e.into()),
    };
    let t = s
        .registration_tokens
        .create_enrollment(
            &admin.actor(),
            NewEnrollment {
                username,
                displayname,
                lifetime_minutes,
            },
            exists,
        )
        .await?;
    let mut v = enrollment_json(&state, &headers, &t);
    let svg = qr_svg(v["link"].as_str().unwrap_or_default())?;
    v["qr_svg"] = json!(svg);
    Ok(Json(v))
}

async fn list(
    State(state): State<AppState>,
    _: AdminAuth,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, Value>>,
) -> ApiResult<Json<Value>> {
    let all = q.get("all").and_then(Value::as_str) == Some("true");
    let list = state.services.registration_tokens.enrollments(all).await?;
    let out: Vec<Value> = list
        .iter()
        .map(|t| enrollment_json(&state, &headers, t))
        .collect();
    Ok(Json(json!({"enrollments": out})))
}

async fn get_one(
    State(state): State<AppState>,
    _: AdminAuth,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let t = state
        .services
        .registration_tokens
        .enrollment(parse_enrollment_id(&id)?)
        .await?;
    Ok(Json(enrollment_json(&state, &headers, &t)))
}

async fn qr(
    State(state): State<AppState>,
    _: AdminAuth,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let t = state
        .services
        .registration_tokens
        .enrollment(parse_enrollment_id(&id)?)
        .await?;
    let link = enrollment_link(&public_base(&state, &headers), &t.token);
    let svg = qr_svg(&link)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        svg,
    )
        .into_response())
}

async fn revoke(
    State(state): State<AppState>,
    admin: AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    state
        .services
        .registration_tokens
        .revoke_enrollment(&admin.actor(), parse_enrollment_id(&id)?)
        .await?;
    Ok(Json(json!({})))
}

async fn audit(
    State(state): State<AppState>,
    _: AdminAuth,
    Query(q): Query<HashMap<String, Value>>,
) -> ApiResult<Json<Value>> {
    let get = |k: &str| q.get(k).and_then(Value::as_str);
    let limit = parse_u64(get("limit"), "limit", 100)?.clamp(1, 1000) as u32;
    let before = match get("before") {
        None | Some("") => None,
        Some(b) => Some(
            b.parse::<i64>()
                .map_err(|_| ApiError::new(ErrorKind::InvalidParam, "before must be an integer"))?,
        ),
    };
    let entries = state.services.admin.audit_log(before, limit).await?;
    let next = (entries.len() as u32 == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    let list: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "ts": e.ts_ms,
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "details": serde_json::from_str::<Value>(&e.details).unwrap_or(Value::Null),
            })
        })
        .collect();
    Ok(Json(json!({"entries": list, "next_before": next})))
}

async fn notice(
    State(state): State<AppState>,
    _: AdminAuth,
    Body(body): Body<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let s = &state.services;
    let user_id = required_field::<String>(&body, "user_id")?;
    let user_id = s.admin.local_user(&user_id)?;
    let text = required_field::<String>(&body, "body")?;
    if text.trim().is_empty() {
        return Err(ApiError::new(ErrorKind::InvalidParam, "body is empty"));
    }
    let event_id = s.server_notices.send_text(&user_id, &text).await?;
    Ok(Json(json!({"event_id": event_id})))
}

//! `/sync`, filters and `/messages`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use feldpost_service::ErrorKind;
use feldpost_service::filter::{Filter, RoomEventFilter};
use feldpost_service::sync::{SyncRequest, SyncResponse, parse_since};
use feldpost_service::timeline::parse_position;
use ruma::{OwnedRoomId, OwnedUserId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Json as Body, Path, Query, parse_id, qs};

pub fn routes(_: &AppState) -> Router<AppState> {
    Router::new()
        .route("/_matrix/client/v3/sync", get(sync))
        .route(
            "/_matrix/client/v3/user/{user_id}/filter",
            post(create_filter),
        )
        .route(
            "/_matrix/client/v3/user/{user_id}/filter/{filter_id}",
            get(get_filter),
        )
        .route("/_matrix/client/v3/rooms/{room_id}/messages", get(messages))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SyncQuery {
    filter: Option<String>,
    since: Option<String>,
    #[serde(deserialize_with = "qs::opt_bool")]
    full_state: Option<bool>,
    set_presence: Option<String>,
    #[serde(deserialize_with = "qs::opt_u64")]
    timeout: Option<u64>,
}

/// A long poll that arrives while a burst of woken syncs is being answered waits for the burst
/// before anything is done for it, its authentication included: almost always it would only
/// park again, and the burst's recipients wait for every piece of work taken up meanwhile (see
/// `feldpost_service::fanout`). An extractor, so that it runs before the others.
struct AfterBurst;

impl FromRequestParts<AppState> for AfterBurst {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if parts.uri.query().is_some_and(is_long_poll) {
            state.services.notifier.fanout().wait_for_burst().await;
        }
        Ok(AfterBurst)
    }
}

/// Whether a query names a `since` token and a timeout above zero. Only a hint: the query is
/// parsed properly afterwards.
fn is_long_poll(query: &str) -> bool {
    let (mut since, mut timeout) = (false, false);
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("since", v)) => since = !v.is_empty(),
            Some(("timeout", v)) => timeout = v.parse::<u64>().is_ok_and(|t| t > 0),
            _ => {}
        }
    }
    since && timeout
}

async fn sync(
    State(state): State<AppState>,
    _: AfterBurst,
    Auth(r): Auth,
    Query(q): Query<SyncQuery>,
) -> ApiResult<Response> {
    let s = &state.services;
    let since = q.since.as_deref().map(parse_since).transpose()?;
    let filter = s
        .filters
        .for_sync(r.user_id.as_str(), q.filter.as_deref())
        .await?;
    match q.set_presence.as_deref() {
        None => {}
        Some(p @ ("online" | "offline" | "unavailable")) => {
            s.presence.set_from_sync(&r.user_id, p).await?
        }
        Some(_) => {
            return Err(ApiError::new(
                ErrorKind::InvalidParam,
                "set_presence must be online, offline or unavailable",
            ));
        }
    }
    let timeout = Duration::from_millis(
        q.timeout
            .unwrap_or(0)
            .min(s.config.limits.max_sync_timeout_ms),
    );
    let req = SyncRequest {
        since,
        full_state: q.full_state.unwrap_or(false),
        timeout,
        filter,
    };
    // A parked sync holds only what it needs, not the query's strings.
    drop(q);
    let body = s
        .sync
        .sync(&r.user_id, &r.device_id, req, &state.shutdown)
        .await?;
    sync_body(&body)
}

/// `GET /sync` without the router (see `crate::app`): the same handler, its extractors and all.
pub(crate) fn answer(
    req: axum::extract::Request,
    state: AppState,
) -> impl Future<Output = Response> + Send {
    axum::handler::Handler::call(sync, req, state)
}

/// The response as JSON. A woken long poll's answer is about a kilobyte: the buffer starts there
/// rather than growing to it from a few bytes.
fn sync_body(body: &SyncResponse) -> ApiResult<Response> {
    let mut buf = Vec::with_capacity(1024);
    serde_json::to_writer(&mut buf, body)
        .map_err(|e| ApiError::new(ErrorKind::Unknown, format!("sync response: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], buf).into_response())
}

async fn create_filter(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(user_id): Path<String>,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    let user_id: OwnedUserId = parse_id(&user_id, "user id")?;
    if user_id != r.user_id {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "Cannot create filters for other users",
        ));
    }
    if !body.is_object() {
        return Err(ApiError::new(
            ErrorKind::BadJson,
            "A filter must be a JSON object",
        ));
    }
    let filter: Filter = serde_json::from_value(body)
        .map_err(|e| ApiError::new(ErrorKind::BadJson, format!("Invalid filter: {e}")))?;
    let json = serde_json::to_string(&filter)
        .map_err(|e| ApiError::new(ErrorKind::BadJson, e.to_string()))?;
    let id = state
        .services
        .store
        .put_filter(r.user_id.as_str(), &json)
        .await
        .map_err(feldpost_service::Error::from)?;
    Ok(Json(json!({"filter_id": id})))
}

async fn get_filter(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path((user_id, filter_id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let user_id: OwnedUserId = parse_id(&user_id, "user id")?;
    if user_id != r.user_id {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "Cannot read other users' filters",
        ));
    }
    let json = state
        .services
        .store
        .get_filter(r.user_id.as_str(), &filter_id)
        .await
        .map_err(feldpost_service::Error::from)?
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, "Unknown filter"))?;
    serde_json::from_str(&json)
        .map(Json)
        .map_err(|_| ApiError::new(ErrorKind::Unknown, "Stored filter unreadable"))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MessagesQuery {
    from: Option<String>,
    to: Option<String>,
    dir: Option<String>,
    #[serde(deserialize_with = "qs::opt_u64")]
    limit: Option<u64>,
    filter: Option<String>,
}

async fn messages(
    State(state): State<AppState>,
    Auth(r): Auth,
    Path(room_id): Path<String>,
    Query(q): Query<MessagesQuery>,
) -> ApiResult<Json<Value>> {
    let room_id: OwnedRoomId = parse_id(&room_id, "room id")?;
    let backward = match q.dir.as_deref() {
        Some("b") => true,
        Some("f") => false,
        None => return Err(ApiError::new(ErrorKind::MissingParam, "dir is required")),
        Some(_) => return Err(ApiError::new(ErrorKind::InvalidParam, "dir must be b or f")),
    };
    let token = |t: &Option<String>| -> ApiResult<Option<i64>> {
        t.as_deref()
            .map(|s| {
                parse_position(s).ok_or_else(|| {
                    ApiError::new(ErrorKind::InvalidParam, "Invalid pagination token")
                })
            })
            .transpose()
    };
    let (from, to) = (token(&q.from)?, token(&q.to)?);
    let filter: RoomEventFilter = match q.filter.as_deref() {
        Some(f) => feldpost_service::filter::parse_json(f)
            .map_err(|e| ApiError::new(ErrorKind::InvalidParam, format!("Invalid filter: {e}")))?,
        None => RoomEventFilter::default(),
    };
    let max = state.services.config.limits.max_timeline_limit as u64;
    let limit = q.limit.or(filter.limit).unwrap_or(10).clamp(1, max) as u32;
    let page = state
        .services
        .timeline
        .messages(
            &room_id,
            &r.user_id,
            &r.device_id,
            from,
            to,
            backward,
            limit,
            &filter,
        )
        .await?;
    // `start` echoes the `from` token the client gave, as the spec requires.
    let start = q.from.clone().unwrap_or(page.start);
    let mut body = json!({"chunk": page.chunk, "start": start, "state": page.state});
    if let Some(end) = page.end {
        body["end"] = json!(end);
    }
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use super::is_long_poll;

    #[test]
    fn a_long_poll_names_since_and_a_timeout() {
        assert!(is_long_poll("since=s5_1&timeout=30000"));
        assert!(is_long_poll(
            "filter=0&timeout=5&set_presence=online&since=s1_0"
        ));
        assert!(!is_long_poll("timeout=30000"), "an initial sync");
        assert!(!is_long_poll("since=s5_1"), "no timeout");
        assert!(
            !is_long_poll("since=s5_1&timeout=0"),
            "a sync that never waits"
        );
        assert!(!is_long_poll("since=&timeout=100"));
        assert!(!is_long_poll("since=s5_1&timeout=soon"));
    }
}

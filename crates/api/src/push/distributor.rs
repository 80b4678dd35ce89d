//! The built-in push distributor over HTTP, in the shape ntfy clients speak:
//!
//! - `GET /_feldpost/ntfy/{topic}/json` — a stream of JSON lines (`open`, `message`,
//!   `keepalive`); `?poll=1` answers the cached messages and closes.
//! - `GET /_feldpost/ntfy/{topic}/sse` — the same as server-sent events.
//! - `GET /_feldpost/ntfy/{topic}/ws` — the same over a WebSocket.
//! - `since=` (`all`, a Unix time, a duration like `10m`, or a message id) catches up.
//! - `POST`/`PUT /_feldpost/ntfy/{topic}` publishes; it needs a Matrix access token of a local
//!   user (Feldpost's gateway publishes in-process).
//!
//! Streams end when the server shuts down, so that shutdown does not wait for subscribers.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use feldpost_service::ErrorKind;
use feldpost_service::push::distributor::{Distributor, Message};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Auth, Path, Query};

/// The largest message a caller may publish, as ntfy limits it.
const MAX_MESSAGE_BYTES: usize = 4096;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_feldpost/ntfy/v1/health", get(health))
        .route("/_feldpost/ntfy/{topic}", post(publish).put(publish))
        .route("/_feldpost/ntfy/{topic}/json", get(json_stream))
        .route("/_feldpost/ntfy/{topic}/sse", get(sse_stream))
        .route("/_feldpost/ntfy/{topic}/ws", get(ws_stream))
}

fn distributor(state: &AppState) -> ApiResult<Arc<Distributor>> {
    let d = state.services.push.distributor.clone();
    if !d.enabled() {
        return Err(ApiError::new(
            ErrorKind::Unrecognized,
            "The push distributor is disabled on this server",
        ));
    }
    Ok(d)
}

async fn health(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    distributor(&state)?;
    Ok(Json(json!({"healthy": true})))
}

async fn publish(
    State(state): State<AppState>,
    Auth(_): Auth,
    Path(topic): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let d = distributor(&state)?;
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(ApiError::new(
            ErrorKind::TooLarge,
            format!("Messages are limited to {MAX_MESSAGE_BYTES} bytes"),
        ));
    }
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::new(ErrorKind::BadJson, "Messages must be UTF-8 text"))?;
    let msg = d.publish(&topic, text)?;
    Ok(Json(msg.to_json()))
}

#[derive(Deserialize)]
struct SubscribeParams {
    since: Option<String>,
    poll: Option<String>,
}

/// The messages of a subscription: `open`, the backlog, then live messages and keepalives,
/// until shutdown or the topic's channel closes.
fn subscription(
    state: &AppState,
    topic: &str,
    since: Option<&str>,
    poll: bool,
) -> ApiResult<impl Stream<Item = Message> + Send + 'static> {
    let d = distributor(state)?;
    let since = d.parse_since(since);
    let (backlog, rx) = d.subscribe(topic, &since)?;
    let mut pending: VecDeque<Message> = VecDeque::new();
    if !poll {
        pending.push_back(d.control(topic, "open"));
    }
    pending.extend(backlog.iter().map(|m| (**m).clone()));
    let keepalive = Duration::from_secs(d.keepalive_secs());
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let shutdown = state.shutdown.clone();
    let topic = topic.to_owned();
    struct S {
        pending: VecDeque<Message>,
        rx: broadcast::Receiver<Arc<Message>>,
        interval: tokio::time::Interval,
        shutdown: tokio::sync::watch::Receiver<bool>,
        d: Arc<Distributor>,
        topic: String,
        poll: bool,
    }
    let s = S {
        pending,
        rx,
        interval,
        shutdown,
        d,
        topic,
        poll,
    };
    Ok(futures::stream::unfold(s, |mut s| async move {
        if let Some(m) = s.pending.pop_front() {
            return Some((m, s));
        }
        if s.poll || *s.shutdown.borrow() {
            return None;
        }
        loop {
            tokio::select! {
                r = s.rx.recv() => match r {
                    Ok(m) => return Some(((*m).clone(), s)),
                    // A slow subscriber missed messages; it can catch up with `since`.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = s.interval.tick() => {
                    let k = s.d.control(&s.topic, "keepalive");
                    return Some((k, s));
                }
                _ = s.shutdown.changed() => return None,
            }
        }
    }))
}

fn streaming(
    content_type: &'static str,
    body: impl Stream<Item = String> + Send + 'static,
) -> Response {
    let body = Body::from_stream(body.map(|s| Ok::<_, Infallible>(Bytes::from(s))));
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn json_stream(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    Query(p): Query<SubscribeParams>,
) -> ApiResult<Response> {
    let poll = matches!(p.poll.as_deref(), Some("1" | "true" | "yes"));
    let stream = subscription(&state, &topic, p.since.as_deref(), poll)?;
    Ok(streaming(
        "application/x-ndjson; charset=utf-8",
        stream.map(|m| format!("{}\n", m.to_json())),
    ))
}

async fn sse_stream(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    Query(p): Query<SubscribeParams>,
) -> ApiResult<Response> {
    let stream = subscription(&state, &topic, p.since.as_deref(), false)?;
    Ok(streaming(
        "text/event-stream; charset=utf-8",
        stream.map(|m| {
            let data = m.to_json();
            if m.event == "message" {
                format!("data: {data}\n\n")
            } else {
                format!("event: {}\ndata: {data}\n\n", m.event)
            }
        }),
    ))
}

async fn ws_stream(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    Query(p): Query<SubscribeParams>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let stream = subscription(&state, &topic, p.since.as_deref(), false)?;
    Ok(ws.on_upgrade(move |socket| run_ws(socket, stream)))
}

async fn run_ws(mut socket: WebSocket, stream: impl Stream<Item = Message> + Send + 'static) {
    let mut stream = Box::pin(stream);
    loop {
        tokio::select! {
            next = stream.next() => {
                let Some(m) = next else { break };
                if socket.send(WsMessage::Text(m.to_json().to_string().into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                // Subscribers only listen; a close or an error ends the subscription.
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = socket.send(WsMessage::Close(None)).await;
}

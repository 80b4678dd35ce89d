//! Helpers of the push tests: a fake push gateway on 127.0.0.1 that records what it receives
//! and can fail or reject on demand, and small waiting helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::common::{TestServer, User, enc};

/// What the fake gateway does with requests.
#[derive(Default)]
pub struct GatewayBehaviour {
    /// Answer 500 to this many requests first.
    pub fail_first: AtomicUsize,
    /// Reject these pushkeys.
    pub reject: Mutex<Vec<String>>,
}

#[derive(Clone)]
struct GwState {
    received: Arc<Mutex<Vec<(Instant, Value)>>>,
    attempts: Arc<AtomicUsize>,
    behaviour: Arc<GatewayBehaviour>,
    notify: Arc<tokio::sync::Notify>,
}

pub struct FakeGateway {
    pub addr: SocketAddr,
    pub url: String,
    received: Arc<Mutex<Vec<(Instant, Value)>>>,
    pub attempts: Arc<AtomicUsize>,
    pub behaviour: Arc<GatewayBehaviour>,
    notify: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

async fn notify_handler(State(s): State<GwState>, Json(body): Json<Value>) -> Response {
    s.attempts.fetch_add(1, Ordering::SeqCst);
    let fail = s
        .behaviour
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if fail {
        return (StatusCode::INTERNAL_SERVER_ERROR, "try later").into_response();
    }
    let reject = s.behaviour.reject.lock().await.clone();
    let rejected: Vec<String> = body["notification"]["devices"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|x| x["pushkey"].as_str())
                .filter(|k| reject.iter().any(|r| r == k))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    s.received.lock().await.push((Instant::now(), body));
    s.notify.notify_waiters();
    Json(json!({ "rejected": rejected })).into_response()
}

impl FakeGateway {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = GwState {
            received: Arc::default(),
            attempts: Arc::default(),
            behaviour: Arc::default(),
            notify: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/_matrix/push/v1/notify", post(notify_handler))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            url: format!("http://{addr}/_matrix/push/v1/notify"),
            received: state.received,
            attempts: state.attempts,
            behaviour: state.behaviour,
            notify: state.notify,
            task,
        }
    }

    pub async fn received(&self) -> Vec<Value> {
        self.received
            .lock()
            .await
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Waits until at least `n` notifications arrived; returns them with their arrival times.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<(Instant, Value)> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            {
                let got = self.received.lock().await;
                if got.len() >= n || Instant::now() >= deadline {
                    return got.clone();
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A test server that may talk to 127.0.0.0/8, with plain-HTTP gateways allowed and quick
/// retries.
pub async fn push_server() -> TestServer {
    TestServer::start_with(|c| {
        c.outbound.allow_ranges = vec!["127.0.0.0/8".parse().expect("range")];
        c.push.allow_http_gateways = true;
        c.push.initial_backoff_ms = 50;
        c.push.max_backoff_ms = 200;
    })
    .await
}

/// Registers an http pusher for `u`.
pub async fn set_pusher(s: &TestServer, u: &User, url: &str, app_id: &str, pushkey: &str) {
    let (st, b) = s
        .post(
            "/_matrix/client/v3/pushers/set",
            u,
            json!({
                "kind": "http", "app_id": app_id, "pushkey": pushkey,
                "app_display_name": "Test", "device_display_name": "Phone", "lang": "de",
                "data": {"url": url, "format": "event_id_only"},
            }),
        )
        .await;
    assert_eq!(st, 200, "{b}");
}

/// Creates a room of `a` that `b` joined.
pub async fn shared_room(s: &TestServer, a: &User, b: &User) -> String {
    let room = s
        .create_room(a, json!({"preset": "private_chat", "invite": [b.user_id]}))
        .await;
    s.join(b, &room).await;
    // The invite's notification is stored with the invite; a pusher set afterwards starts
    // after it. Checked, so that a test relying on it fails here if that ever changes.
    let settled = eventually(Duration::from_secs(5), || async {
        let (_, n) = s.get("/_matrix/client/v3/notifications", b).await;
        n["notifications"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
            .then_some(())
    })
    .await;
    assert!(settled.is_some(), "the invite never notified");
    room
}

/// Polls `f` until it returns `Some`, up to `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The unread counts of a room in an initial sync: (notifications, highlights).
pub async fn counts(s: &TestServer, u: &User, room: &str) -> (u64, u64) {
    let sync = s.sync(u, None, 0).await;
    let n = &sync["rooms"]["join"][room]["unread_notifications"];
    (
        n["notification_count"].as_u64().unwrap_or(0),
        n["highlight_count"].as_u64().unwrap_or(0),
    )
}

/// Sends an `m.read` receipt.
pub async fn read_receipt(s: &TestServer, u: &User, room: &str, event: &str, thread: Option<&str>) {
    let mut body = json!({});
    if let Some(t) = thread {
        body["thread_id"] = json!(t);
    }
    let (st, b) = s
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                enc(room),
                enc(event)
            ),
            u,
            body,
        )
        .await;
    assert_eq!(st, 200, "{b}");
}

/// A long poll of `u` from its current position, parked (given 200 ms to park) before this
/// returns; the handle yields the first response.
pub async fn parked_sync(s: &TestServer, u: &User) -> tokio::task::JoinHandle<Value> {
    let since = s.sync(u, None, 0).await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let (base, token) = (s.base.clone(), u.token.clone());
    let poll = tokio::spawn(async move {
        reqwest::Client::new()
            .get(format!(
                "{base}/_matrix/client/v3/sync?timeout=10000&since={since}"
            ))
            .bearer_auth(token)
            .send()
            .await
            .expect("sync")
            .json::<Value>()
            .await
            .expect("json")
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    poll
}

//! The integration-test harness: a real Feldpost on port 0 with a fresh data directory, and a
//! small Matrix client over HTTP.
#![allow(dead_code)]

use std::net::SocketAddr;

use feldpost::{Application, ShutdownHandle};
use feldpost_service::config::Config;
use serde_json::{Value, json};

pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub services: std::sync::Arc<feldpost_service::Services>,
    handle: ShutdownHandle,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A test configuration: open registration, cheap password hashing, no rate limits.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    c.registration.open = true;
    c.registration.argon2_memory_kib = 64;
    c.registration.argon2_iterations = 1;
    c.rate_limits.enabled = false;
    c
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path());
        tweak(&mut config);
        Self::start_in(dir, config).await
    }

    pub async fn start_in(dir: tempfile::TempDir, config: Config) -> Self {
        let app = Application::build(config).await.expect("build server");
        let addr = app.local_addr().expect("addr");
        let handle = app.shutdown_handle();
        let services = app.services();
        let task = tokio::spawn(app.run_until_stopped());
        Self {
            addr,
            base: format!("http://{addr}"),
            http: reqwest::Client::builder().build().expect("client"),
            dir,
            services,
            handle,
            task: Some(task),
        }
    }

    /// Stops the server and returns its data directory, for a restart on the same data.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.handle.shutdown();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A raw request; returns status and the JSON body (`Null` if not JSON).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &'static [u8],
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, self.url(path)).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Registers `name` with open registration (dummy auth) and returns a logged-in user.
    pub async fn register(&self, name: &str) -> User {
        let (status, body) = self
            .request(
                "POST",
                "/_matrix/client/v3/register",
                None,
                Some(json!({"username": name, "password": "correct horse"})),
            )
            .await;
        assert_eq!(status, 401, "{body}");
        let session = body["session"].as_str().expect("session").to_owned();
        let (status, body) = self
            .request(
                "POST",
                "/_matrix/client/v3/register",
                None,
                Some(json!({"username": name, "password": "correct horse", "auth": {"type": "m.login.dummy", "session": session}})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        User {
            user_id: body["user_id"].as_str().expect("user_id").to_owned(),
            token: body["access_token"].as_str().expect("token").to_owned(),
            device_id: body["device_id"].as_str().expect("device").to_owned(),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub user_id: String,
    pub token: String,
    pub device_id: String,
}

/// Percent-encodes a path segment (room ids, event ids, aliases).
pub fn enc(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '_' | '.' | '~' => c.to_string(),
            _ => {
                let mut buf = [0u8; 4];
                c.encode_utf8(&mut buf)
                    .bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect()
            }
        })
        .collect()
}

impl TestServer {
    pub async fn get(&self, path: &str, u: &User) -> (u16, Value) {
        self.request("GET", path, Some(&u.token), None).await
    }
    pub async fn post(&self, path: &str, u: &User, body: Value) -> (u16, Value) {
        self.request("POST", path, Some(&u.token), Some(body)).await
    }
    pub async fn put(&self, path: &str, u: &User, body: Value) -> (u16, Value) {
        self.request("PUT", path, Some(&u.token), Some(body)).await
    }

    pub async fn create_room(&self, u: &User, body: Value) -> String {
        let (s, b) = self.post("/_matrix/client/v3/createRoom", u, body).await;
        assert_eq!(s, 200, "{b}");
        b["room_id"].as_str().expect("room_id").to_owned()
    }

    pub async fn join(&self, u: &User, room: &str) {
        let (s, b) = self
            .post(
                &format!("/_matrix/client/v3/join/{}", enc(room)),
                u,
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }

    pub async fn send_text(&self, u: &User, room: &str, text: &str) -> String {
        let txn = format!("t{}", rand_suffix());
        let (s, b) = self
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
                    enc(room)
                ),
                u,
                json!({"msgtype": "m.text", "body": text}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        b["event_id"].as_str().expect("event_id").to_owned()
    }

    pub async fn sync(&self, u: &User, since: Option<&str>, timeout_ms: u64) -> Value {
        let mut path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}");
        if let Some(s) = since {
            path.push_str(&format!("&since={s}"));
        }
        let (s, b) = self.get(&path, u).await;
        assert_eq!(s, 200, "{b}");
        b
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// Event bodies of a room's timeline in a sync response.
pub fn timeline_bodies(sync: &Value, room: &str) -> Vec<String> {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Makes a registered user a server admin through the service layer, as an operator's
/// `feldpost admin user set-admin` would.
pub async fn make_admin(srv: &TestServer, u: &User) {
    let changed = srv
        .services
        .store
        .set_user_admin(&u.user_id, true)
        .await
        .expect("set admin");
    assert!(changed, "no such user {}", u.user_id);
}

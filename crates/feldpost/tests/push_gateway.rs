//! Feldpost's own push gateway and distributor: discovery, forwarding by pushkey (built-in
//! distributor, external UnifiedPush endpoints, FCM, APNs against local fakes that check the
//! documented request formats), and the distributor end to end.

mod common;
mod push_common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::TestServer;
use push_common::{eventually, set_pusher, shared_room};
use ring::signature::{self, KeyPair};
use serde_json::{Value, json};
use tokio::sync::Mutex;

const WAIT: Duration = Duration::from_secs(5);

/// An RSA key made for these tests only (it protects nothing): the fake FCM service account.
const TEST_RSA_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCjkJu5QLh48yAt\nFYxabKFLrADPrgvYt+1Mx8x9m2PmHOW8GBAWsfl5yHTbThLaa8D4W8eK8wuFcW1b\n/0jW4vpsoCEh8dZWXNVCl5OEANbV5Kw9wzD6qaDwP3VBoDNF+ju69Q9rC5QexRlh\nq60hiv/4FjNyP/yfcQjcmfS4Zx6UIVd1NnQYEBmbURS6BHJrhkZ9rMrtsRE1OkO8\nM/nPy6an3Xg1pdOaj5snypaMt3utAGlwzZ14hJkRoUrMc3l8L5Gh5tl2oO/fMHx+\n2YgrTNJ/wI8am3QA/QSQW17z8iuM3Tr4wgQDPtNBHpnsTRcZI/ruinIH1wphd9Wo\naq3YqvwFAgMBAAECggEAEFGMn8prvTFwe98C/kCJRR33hMDWELyk8bybU8rNiDdI\n2l/CNylxfOt5cSnUarNGcODjQyMlep5K7VtGXp4NownE1HimzD39zuOFha15waRL\nZOwU9mU3F9EU90Ou6ePh0rDBZYolsH40npB8uPR/vjYk0ti8cQHbgvrfNgifveJ+\n2RztJMlj1g4PO7LdJhSVaKIGODNh35TlHWFxIHgFZG8nW/xdeUr9Vf7xKsghPScX\nhmzkoKy8qrIr6I0ug9nW/EesjttIyKRcHSloiDwsbGrceT23zm/bq4XjmWoTjQKx\n4Xrt4rlGHsCYGpGBuuG7CpoYAVm2+e8P9+1EqQK0XwKBgQDSQFuVWt/WdgkhJGKF\n0gb+BgBBps8wjtOgrhf3+ZjR8pwSmu+e/wrFZ3cdcF8QIJ6V9lE29AjAOAhAmroR\nEEwA3soQiFo5I1MIOGO411cHkEyqrQ38p8YbDaORT2NpsAZfaCX5MWdHDdrVoXeX\noNY6vAyPXUOOPQMi/97O9AzpSwKBgQDHJ6tZJEG4NuJgyncd4B6djrLJcHpk3sAw\n6gcoduAgUExjJt6h22DeP3uyNMjdqt6APTcUGTDqPIYB7J2+cEyeXO/sFrUjdrw+\nIE4U9Jh8UCsXk7MNCvYcN9EITR9tizxEd7xFK7r46B9NOPnb7vUhsayNHqzDyTqA\nTvSo1PEt7wKBgQCAUaMTjnjabQO5ZHl07vAxjPwPFX2SRzlF8brTL1Rjnkw+1qy0\nPzgVrsX2A6UhNKdVIxYCEgJdPlVbCJPS4j1gsphkarOV98cvVysVnueQyDLiX+gP\ncV3pGPPhNbCYykO5atjyM4KyzPPoOjnBIvpcsnR/8w3N+9K0Q7F6YVyX7QKBgCkj\ntq+pX7IQFF9uM4EGZQyjB6e5Bm+D3Cu+jE/9jnreW4k35FGHIdGHR6QeZ0fzHhdb\njd8m/QXGDuCi4ksOo6UrCZy5bB2xT11+CuMlS8KSRPSP3DLbis91cEbIt69HTeHO\n4iNfzzXPrXekR2j5ScX2D/Du3z1qeh07MisWIeQdAoGAJsNlLTfelxyP21TRAGvh\nbJQVBqO12P2FxnGazFI6fzHZfP3CjH0NeS81ROrloSvSRzJNKdGqxIubC3B5a+ek\nwLgpU6x9BWbB95nsLvh6XbQ8UlAhXfXVeqhab7e2O8sfsPuvuRGXl166WPh0x3bN\nqN/ndhsuMLOcMqtIpL9UlF4=\n-----END PRIVATE KEY-----";

fn b64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap_or_default()
}

/// Verifies a JWT with `verify(input, signature)` and returns (header, claims).
fn check_jwt(jwt: &str, verify: impl Fn(&[u8], &[u8]) -> bool) -> Option<(Value, Value)> {
    let mut parts = jwt.split('.');
    let (h, c, sig) = (parts.next()?, parts.next()?, parts.next()?);
    if !verify(format!("{h}.{c}").as_bytes(), &b64(sig)) {
        return None;
    }
    Some((
        serde_json::from_slice(&b64(h)).ok()?,
        serde_json::from_slice(&b64(c)).ok()?,
    ))
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn allow_loopback(c: &mut feldpost_service::config::Config) {
    c.outbound.allow_ranges = vec!["127.0.0.0/8".parse().expect("range")];
    c.push.allow_http_gateways = true;
}

#[tokio::test]
async fn gateway_discovery_and_unknown_pushkeys() {
    let s = TestServer::start().await;
    let (st, b) = s
        .request("GET", "/_matrix/push/v1/notify", None, None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(b, json!({"unifiedpush": {"gateway": "matrix"}}));
    let (st, b) = s
        .request(
            "POST",
            "/_matrix/push/v1/notify",
            None,
            Some(
                json!({"notification": {"event_id": "$e", "room_id": "!r:x", "devices": [
                {"app_id": "org.example", "pushkey": "https://elsewhere.example/up/1"}]}}),
            ),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["rejected"], json!(["https://elsewhere.example/up/1"]));
    let (st, b) = s
        .request(
            "POST",
            "/_matrix/push/v1/notify",
            None,
            Some(json!({"x": 1})),
        )
        .await;
    assert_eq!((st, b["errcode"].as_str()), (400, Some("M_BAD_JSON")));
}

/// Reads JSON lines from a streaming response until `pred` matches one.
async fn read_until(
    resp: &mut reqwest::Response,
    buf: &mut String,
    pred: impl Fn(&Value) -> bool,
) -> Option<Value> {
    loop {
        while let Some(i) = buf.find('\n') {
            let line: String = buf.drain(..=i).collect();
            if let Ok(v) = serde_json::from_str::<Value>(line.trim())
                && pred(&v)
            {
                return Some(v);
            }
        }
        let chunk = tokio::time::timeout(WAIT, resp.chunk())
            .await
            .ok()?
            .ok()??;
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn distributor_delivers_a_content_free_wakeup_within_milliseconds() {
    let s = TestServer::start_with(allow_loopback).await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = shared_room(&s, &a, &b).await;
    let topic = "upQ7xW2kLm9RtZ4v";
    let endpoint = s.url(&format!("/_feldpost/ntfy/{topic}?up=1"));
    set_pusher(
        &s,
        &b,
        &s.url("/_matrix/push/v1/notify"),
        "org.example.up",
        &endpoint,
    )
    .await;

    let mut sub = s
        .http
        .get(s.url(&format!("/_feldpost/ntfy/{topic}/json")))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(sub.status(), 200);
    let mut buf = String::new();
    let open = read_until(&mut sub, &mut buf, |v| v["event"] == "open").await;
    assert!(open.is_some());

    let mut latencies = vec![];
    for i in 0..5 {
        let sent = Instant::now();
        let event_id = s
            .send_text(&a, &room, &format!("Geheimer Inhalt {i}"))
            .await;
        let msg = read_until(&mut sub, &mut buf, |v| v["event"] == "message")
            .await
            .expect("a message on the topic");
        latencies.push(sent.elapsed());
        assert_eq!(msg["topic"], topic);
        let text = msg["message"].as_str().expect("message text");
        assert!(!text.contains("Geheimer"), "content leaked: {text}");
        let n: Value = serde_json::from_str(text).expect("JSON notification");
        assert_eq!(n["notification"]["event_id"], event_id);
        assert_eq!(n["notification"]["room_id"], room);
        assert!(n["notification"].get("content").is_none());
    }
    let worst = latencies.iter().max().copied().unwrap_or_default();
    assert!(
        worst < Duration::from_millis(500),
        "too slow: {latencies:?}"
    );

    // Catching up: the cached messages with since=all, none after the last id.
    let (st, _) = (200, ());
    let body = s
        .http
        .get(s.url(&format!("/_feldpost/ntfy/{topic}/json?poll=1&since=all")))
        .send()
        .await
        .expect("poll")
        .text()
        .await
        .expect("text");
    let lines: Vec<Value> = body
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(lines.len(), 5, "{body}");
    assert_eq!(st, 200);
    let last_id = lines[4]["id"].as_str().expect("id").to_owned();
    let body = s
        .http
        .get(s.url(&format!(
            "/_feldpost/ntfy/{topic}/json?poll=1&since={last_id}"
        )))
        .send()
        .await
        .expect("poll")
        .text()
        .await
        .expect("text");
    assert_eq!(body.trim(), "");
}

#[tokio::test]
async fn distributor_sse_publish_auth_and_topic_rules() {
    let s = TestServer::start_with(|c| c.push.distributor.keepalive_secs = 1).await;
    let a = s.register("alice").await;
    let topic = "upSseTopic123456";
    let mut sse = s
        .http
        .get(s.url(&format!("/_feldpost/ntfy/{topic}/sse")))
        .send()
        .await
        .expect("subscribe");
    assert_eq!(
        sse.headers()["content-type"].to_str().unwrap_or(""),
        "text/event-stream; charset=utf-8"
    );
    // Publishing needs an authenticated caller.
    let r = s
        .http
        .post(s.url(&format!("/_feldpost/ntfy/{topic}")))
        .body("wake up")
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 401);
    let r = s
        .http
        .put(s.url(&format!("/_feldpost/ntfy/{topic}")))
        .bearer_auth(&a.token)
        .body("wake up")
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 200);
    let mut text = String::new();
    let deadline = Instant::now() + WAIT;
    while !(text.contains("wake up") && text.contains("event: keepalive"))
        && Instant::now() < deadline
    {
        match tokio::time::timeout(WAIT, sse.chunk()).await {
            Ok(Ok(Some(c))) => text.push_str(&String::from_utf8_lossy(&c)),
            _ => break,
        }
    }
    assert!(text.starts_with("event: open\ndata: "), "{text}");
    assert!(text.contains("\"message\":\"wake up\""), "{text}");
    assert!(text.contains("event: keepalive"), "{text}");

    // Short topics are guessable and refused.
    let r = s
        .http
        .get(s.url("/_feldpost/ntfy/short/json"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 400);
    let r = s
        .http
        .post(s.url("/_feldpost/ntfy/short"))
        .bearer_auth(&a.token)
        .body("x")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(HeaderMap, Value)>>>);

#[tokio::test]
async fn unifiedpush_endpoints_on_the_allow_list() {
    async fn up(
        State(r): State<Recorder>,
        Path(id): Path<String>,
        headers: HeaderMap,
        body: String,
    ) -> StatusCode {
        if id == "gone" {
            return StatusCode::NOT_FOUND;
        }
        r.0.lock()
            .await
            .push((headers, serde_json::from_str(&body).unwrap_or(Value::Null)));
        StatusCode::CREATED
    }
    let rec = Recorder::default();
    let base = serve(
        Router::new()
            .route("/up/{id}", post(up))
            .with_state(rec.clone()),
    )
    .await;
    let prefix = format!("{base}/up/");
    let s = TestServer::start_with(|c| {
        allow_loopback(c);
        c.push.gateway.unifiedpush_allowed_prefixes = vec![prefix.clone()];
    })
    .await;
    let good = format!("{base}/up/abc");
    let gone = format!("{base}/up/gone");
    let (st, b) = s
        .request(
            "POST",
            "/_matrix/push/v1/notify",
            None,
            Some(json!({"notification": {
                "event_id": "$e", "room_id": "!r:x", "content": {"body": "geheim"},
                "sender": "@a:x", "counts": {"unread": 3}, "prio": "high",
                "devices": [
                    {"app_id": "org.example", "pushkey": good},
                    {"app_id": "org.example", "pushkey": gone},
                    {"app_id": "org.example", "pushkey": "https://not.allowed.example/up/1"}]}})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        b["rejected"],
        json!([gone, "https://not.allowed.example/up/1"])
    );
    let got = rec.0.lock().await.clone();
    assert_eq!(got.len(), 1);
    let n = &got[0].1["notification"];
    assert_eq!(n["event_id"], "$e");
    assert_eq!(n["counts"]["unread"], 3);
    assert!(!got[0].1.to_string().contains("geheim"));
    assert!(n.get("sender").is_none());
}

#[derive(Clone)]
struct FcmFake {
    public_key: Arc<Vec<u8>>,
    token_uri: Arc<Mutex<String>>,
    sent: Arc<Mutex<Vec<Value>>>,
}

async fn fcm_token(
    State(f): State<FcmFake>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return (StatusCode::BAD_REQUEST, "grant_type").into_response();
    }
    let key = signature::UnparsedPublicKey::new(
        &signature::RSA_PKCS1_2048_8192_SHA256,
        f.public_key.to_vec(),
    );
    let Some((header, claims)) = check_jwt(
        form.get("assertion").map(String::as_str).unwrap_or(""),
        |m, s| key.verify(m, s).is_ok(),
    ) else {
        return (StatusCode::UNAUTHORIZED, "bad assertion").into_response();
    };
    let aud = f.token_uri.lock().await.clone();
    let ok = header["alg"] == "RS256"
        && claims["iss"] == "push@feldpost-test.example"
        && claims["scope"] == feldpost_service::push::providers::FCM_SCOPE
        && claims["aud"] == aud
        && claims["exp"].as_i64() > claims["iat"].as_i64();
    if !ok {
        return (StatusCode::UNAUTHORIZED, "bad claims").into_response();
    }
    Json(json!({"access_token": "fake-access", "expires_in": 3600, "token_type": "Bearer"}))
        .into_response()
}

async fn fcm_send(
    State(f): State<FcmFake>,
    Path(project): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if headers.get("authorization").and_then(|h| h.to_str().ok()) != Some("Bearer fake-access") {
        return (StatusCode::UNAUTHORIZED, "no token").into_response();
    }
    let msg = &body["message"];
    let data_ok = msg["data"]
        .as_object()
        .is_some_and(|d| d.values().all(Value::is_string));
    if project != "feldpost-test:send" && project != "feldpost-test"
        || !data_ok
        || msg.get("notification").is_some()
        || !msg["token"].is_string()
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"status": "INVALID_ARGUMENT"}})),
        )
            .into_response();
    }
    if msg["token"] == "gone" {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"status": "NOT_FOUND", "details": [
            {"@type": "FcmError", "errorCode": "UNREGISTERED"}]}})),
        )
            .into_response();
    }
    f.sent.lock().await.push(body.clone());
    Json(json!({"name": format!("projects/feldpost-test/messages/1")})).into_response()
}

#[tokio::test]
async fn fcm_http_v1_data_only_messages() {
    let der = {
        let body: String = TEST_RSA_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("pem")
    };
    let pair = signature::RsaKeyPair::from_pkcs8(&der).expect("rsa key");
    let fake = FcmFake {
        public_key: Arc::new(pair.public().as_ref().to_vec()),
        token_uri: Arc::default(),
        sent: Arc::default(),
    };
    let base = serve(
        Router::new()
            .route("/token", post(fcm_token))
            .route("/v1/projects/{project}", post(fcm_send))
            .with_state(fake.clone()),
    )
    .await;
    *fake.token_uri.lock().await = format!("{base}/token");
    let dir = tempfile::tempdir().expect("dir");
    let sa = dir.path().join("sa.json");
    std::fs::write(
        &sa,
        json!({
            "type": "service_account", "project_id": "feldpost-test",
            "client_email": "push@feldpost-test.example", "private_key": TEST_RSA_PEM,
            "token_uri": format!("{base}/token"),
        })
        .to_string(),
    )
    .expect("write");
    let s = TestServer::start_with(|c| {
        allow_loopback(c);
        c.push.gateway.fcm = Some(feldpost_service::push::config::FcmConfig {
            app_ids: vec!["org.example.android".into()],
            service_account_file: sa.clone(),
            project_id: None,
            endpoint: format!("{base}/v1/projects/{{project_id}}:send"),
            token_uri: None,
        });
    })
    .await;
    let (st, b) = s
        .request(
            "POST",
            "/_matrix/push/v1/notify",
            None,
            Some(json!({"notification": {
            "event_id": "$e", "room_id": "!r:x", "content": {"body": "geheim"},
            "counts": {"unread": 4}, "prio": "high",
            "devices": [{"app_id": "org.example.android", "pushkey": "tok-1"},
                        {"app_id": "org.example.android", "pushkey": "gone"}]}})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["rejected"], json!(["gone"]));
    let sent = fake.sent.lock().await.clone();
    assert_eq!(sent.len(), 1);
    let m = &sent[0]["message"];
    assert_eq!(m["token"], "tok-1");
    assert_eq!(m["data"]["event_id"], "$e");
    assert_eq!(m["data"]["room_id"], "!r:x");
    assert_eq!(m["data"]["unread_count"], "4");
    assert_eq!(m["android"]["priority"], "HIGH");
    assert!(!sent[0].to_string().contains("geheim"));
}

#[derive(Clone)]
struct ApnsFake {
    public_key: Arc<Vec<u8>>,
    sent: Arc<Mutex<Vec<(String, Value)>>>,
}

async fn apns_send(
    State(f): State<ApnsFake>,
    Path(token): Path<String>,
    version: Version,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    if version != Version::HTTP_2 {
        return (StatusCode::BAD_REQUEST, Json(json!({"reason": "NotHTTP2"}))).into_response();
    }
    let key = signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_FIXED,
        f.public_key.to_vec(),
    );
    let auth = h("authorization");
    let Some((header, claims)) = auth
        .strip_prefix("bearer ")
        .and_then(|j| check_jwt(j, |m, s| key.verify(m, s).is_ok()))
    else {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"reason": "InvalidProviderToken"})),
        )
            .into_response();
    };
    if header["alg"] != "ES256"
        || header["kid"] != "KEY123"
        || claims["iss"] != "TEAM123"
        || !claims["iat"].is_i64()
    {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"reason": "InvalidProviderToken"})),
        )
            .into_response();
    }
    if h("apns-topic") != "org.example.ios"
        || h("apns-push-type") != "alert"
        || body["aps"]["mutable-content"] != 1
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"reason": "BadRequest"})),
        )
            .into_response();
    }
    if token == "dead00" {
        return (StatusCode::GONE, Json(json!({"reason": "Unregistered"}))).into_response();
    }
    f.sent.lock().await.push((token, body));
    StatusCode::OK.into_response()
}

#[tokio::test]
async fn apns_http2_token_auth_mutable_content() {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 =
        signature::EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("key");
    let pair = signature::EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .expect("pair");
    let fake = ApnsFake {
        public_key: Arc::new(pair.public_key().as_ref().to_vec()),
        sent: Arc::default(),
    };
    let base = serve(
        Router::new()
            .route("/3/device/{token}", post(apns_send))
            .with_state(fake.clone()),
    )
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let key_file = dir.path().join("AuthKey.p8");
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
    );
    std::fs::write(&key_file, pem).expect("write");
    let s = TestServer::start_with(|c| {
        allow_loopback(c);
        c.push.gateway.apns = Some(feldpost_service::push::config::ApnsConfig {
            app_ids: vec!["org.example.ios.prod".into()],
            team_id: "TEAM123".into(),
            key_id: "KEY123".into(),
            key_file: key_file.clone(),
            topic: "org.example.ios".into(),
            endpoint: base.clone(),
            alert_body: "Neue Nachricht".into(),
        });
    })
    .await;
    // Apps register the token as base64 of its bytes (0xabcdef01) or as hex.
    let (st, b) = s
        .request(
            "POST",
            "/_matrix/push/v1/notify",
            None,
            Some(json!({"notification": {
            "event_id": "$e", "room_id": "!r:x", "content": {"body": "geheim"},
            "counts": {"unread": 2},
            "devices": [{"app_id": "org.example.ios.prod", "pushkey": "q83vAQ=="},
                        {"app_id": "org.example.ios.prod", "pushkey": "dead00"}]}})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["rejected"], json!(["dead00"]));
    let sent = fake.sent.lock().await.clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "abcdef01");
    let body = &sent[0].1;
    assert_eq!(body["aps"]["alert"]["body"], "Neue Nachricht");
    assert_eq!(body["aps"]["badge"], 2);
    assert_eq!(body["event_id"], "$e");
    assert!(!body.to_string().contains("geheim"));
}

#[tokio::test]
async fn pushes_through_the_own_gateway_reach_the_distributor_for_every_message() {
    // The same path as the end-to-end test, checked through the pusher queue after a restart
    // of the subscription with `since`.
    let s = TestServer::start_with(allow_loopback).await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = shared_room(&s, &a, &b).await;
    let topic = "upCatchUpTopic99";
    set_pusher(
        &s,
        &b,
        &s.url("/_matrix/push/v1/notify"),
        "org.example.up",
        &s.url(&format!("/_feldpost/ntfy/{topic}")),
    )
    .await;
    let e = s.send_text(&a, &room, "hallo").await;
    let found = eventually(WAIT, || async {
        let body = s
            .http
            .get(s.url(&format!("/_feldpost/ntfy/{topic}/json?poll=1&since=all")))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        body.contains(&e).then_some(body)
    })
    .await;
    assert!(found.is_some());
}

async fn next_text<S>(ws: &mut S) -> Value
where
    S: futures::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(WsMessage::Text(t)))) => {
                return serde_json::from_str::<Value>(t.as_str()).expect("json");
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("websocket ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn distributor_websocket_with_since() {
    let s = TestServer::start().await;
    let a = s.register("alice").await;
    let topic = "upWebSocketTopic1";
    let publish = |body: &'static str| {
        let req = s
            .http
            .post(s.url(&format!("/_feldpost/ntfy/{topic}")))
            .bearer_auth(&a.token)
            .body(body);
        async move {
            let r = req.send().await.expect("publish");
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.expect("json")
        }
    };
    let first = publish("eins").await;
    publish("zwei").await;
    let tcp = tokio::net::TcpStream::connect(s.addr).await.expect("tcp");
    let url = format!(
        "ws://{}/_feldpost/ntfy/{topic}/ws?since={}",
        s.addr,
        first["id"].as_str().expect("id")
    );
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .expect("websocket");
    assert_eq!(next_text(&mut ws).await["event"], "open");
    // Only what came after the given id, then live messages.
    assert_eq!(next_text(&mut ws).await["message"], "zwei");
    publish("drei").await;
    let live = next_text(&mut ws).await;
    assert_eq!(
        (live["event"].as_str(), live["message"].as_str()),
        (Some("message"), Some("drei"))
    );
}

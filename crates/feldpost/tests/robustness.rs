//! Garbage in, Matrix errors out: every endpoint answers malformed input with a 4xx Matrix error,
//! never a 500 or a dropped connection, and the server keeps serving.

mod common;

use common::*;
use serde_json::{Value, json};

/// (method, path) with `{room}`, `{user}`, `{event}` placeholders.
const ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/_matrix/client/v3/register"),
    ("POST", "/_matrix/client/v3/login"),
    ("POST", "/_matrix/client/v3/account/password"),
    ("POST", "/_matrix/client/v3/account/deactivate"),
    ("POST", "/_matrix/client/v3/createRoom"),
    ("POST", "/_matrix/client/v3/join/{room}"),
    ("POST", "/_matrix/client/v3/rooms/{room}/invite"),
    ("POST", "/_matrix/client/v3/rooms/{room}/kick"),
    ("POST", "/_matrix/client/v3/rooms/{room}/ban"),
    ("POST", "/_matrix/client/v3/rooms/{room}/unban"),
    (
        "PUT",
        "/_matrix/client/v3/rooms/{room}/send/m.room.message/t1",
    ),
    ("PUT", "/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
    (
        "PUT",
        "/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/",
    ),
    (
        "PUT",
        "/_matrix/client/v3/rooms/{room}/state/m.room.member/{user}",
    ),
    ("PUT", "/_matrix/client/v3/rooms/{room}/redact/{event}/t2"),
    ("POST", "/_matrix/client/v3/user/{user}/filter"),
    ("PUT", "/_matrix/client/v3/user/{user}/account_data/x.y"),
    (
        "PUT",
        "/_matrix/client/v3/user/{user}/rooms/{room}/account_data/x.y",
    ),
    (
        "PUT",
        "/_matrix/client/v3/user/{user}/rooms/{room}/tags/u.t",
    ),
    (
        "POST",
        "/_matrix/client/v3/rooms/{room}/receipt/m.read/{event}",
    ),
    ("POST", "/_matrix/client/v3/rooms/{room}/read_markers"),
    ("PUT", "/_matrix/client/v3/rooms/{room}/typing/{user}"),
    ("PUT", "/_matrix/client/v3/presence/{user}/status"),
    ("PUT", "/_matrix/client/v3/profile/{user}/displayname"),
    ("PUT", "/_matrix/client/v3/profile/{user}/avatar_url"),
    ("PUT", "/_matrix/client/v3/devices/DEV"),
    ("POST", "/_matrix/client/v3/delete_devices"),
    ("POST", "/_matrix/client/v3/user_directory/search"),
    ("PUT", "/_matrix/client/v3/directory/room/%23a:localhost"),
    ("PUT", "/_matrix/client/v3/directory/list/room/{room}"),
    ("POST", "/_matrix/client/v3/publicRooms"),
];

const GETS: &[&str] = &[
    "/_matrix/client/v3/sync?since=s-1_x&timeout=-5&filter=%7Bbroken",
    "/_matrix/client/v3/sync?filter=%7B%22room%22%3A5%7D",
    "/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=-1",
    "/_matrix/client/v3/rooms/{room}/messages?dir=f&from=t99999999999999999999",
    "/_matrix/client/v3/rooms/{room}/messages?dir=b&filter=%5B%5D",
    "/_matrix/client/v3/rooms/{room}/context/{event}?limit=abc",
    "/_matrix/client/v3/rooms/{room}/members?at=zzz",
    "/_matrix/client/v1/rooms/{room}/relations/{event}?limit=x",
    "/_matrix/client/v1/rooms/{room}/threads?include=weird",
    "/_matrix/client/v3/rooms/%21%00bad/state",
    "/_matrix/client/v3/profile/not-a-user",
    "/_matrix/client/v1/media/download/localhost/..%2F..%2Fetc",
    "/_matrix/client/v1/media/thumbnail/localhost/x?width=-1&height=abc",
    "/_matrix/client/v3/publicRooms?limit=abc&since=zzz",
];

fn bodies() -> Vec<Vec<u8>> {
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"string\"".to_vec(),
        b"{\"a\":".to_vec(),
        b"\xff\xfe\x00garbage".to_vec(),
        deep.into_bytes(),
        json!({"user_id": 5, "name": [], "content": "x", "type": {}, "auth": "no", "limit": "many", "timeout": -1, "typing": "yes", "presence": 7, "visibility": 1, "displayname": {"a": 1}, "order": "high", "m.fully_read": 3}).to_string().into_bytes(),
        json!({"n": 1e300, "body": "x", "msgtype": null}).to_string().into_bytes(),
        json!({"n": 18446744073709551615u64}).to_string().into_bytes(),
    ]
}

async fn call(
    srv: &TestServer,
    method: &str,
    path: &str,
    token: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let resp = srv
        .http
        .request(m, srv.url(path))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .expect("server answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn garbage_never_causes_a_server_error() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    for (method, path) in ENDPOINTS {
        // A fresh room per endpoint: some garbage is a valid request (an empty body leaves a
        // room, `{}` is a valid power-levels content) and must not spoil the next endpoint.
        let room = srv.create_room(&alice, json!({})).await;
        let event = srv.send_text(&alice, &room, "target").await;
        let fill = |p: &str| {
            p.replace("{room}", &enc(&room))
                .replace("{user}", &enc(&alice.user_id))
                .replace("{event}", &enc(&event))
        };
        for body in bodies() {
            let shown = String::from_utf8_lossy(&body)
                .chars()
                .take(40)
                .collect::<String>();
            let (status, b) = call(&srv, method, &fill(path), &alice.token, body).await;
            assert!(
                status < 500,
                "{method} {path} with {shown:?} gave {status}: {b}"
            );
            if status >= 400 && status != 401 {
                assert!(
                    b["errcode"].as_str().is_some_and(|e| e.starts_with("M_")),
                    "{method} {path} with {shown:?}: {b}"
                );
            }
        }
    }
    let room = srv.create_room(&alice, json!({})).await;
    let event = srv.send_text(&alice, &room, "target").await;
    let fill = |p: &str| {
        p.replace("{room}", &enc(&room))
            .replace("{user}", &enc(&alice.user_id))
            .replace("{event}", &enc(&event))
    };
    for path in GETS {
        let (status, b) = call(&srv, "GET", &fill(path), &alice.token, vec![]).await;
        assert!(
            (400..500).contains(&status),
            "GET {path} gave {status}: {b}"
        );
        assert!(b["errcode"].as_str().is_some(), "GET {path}: {b}");
    }
    // Still serving.
    let (s, _) = srv.get("/_matrix/client/v3/account/whoami", &alice).await;
    assert_eq!(s, 200);
}

//! Device management: listing, renaming, and deleting with user-interactive auth.

mod common;

use common::*;
use serde_json::{Value, json};

/// Logs `name` in again, creating another device.
async fn login(srv: &TestServer, name: &str, device_name: &str) -> User {
    let (s, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": name},
                "password": "correct horse",
                "initial_device_display_name": device_name,
            })),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    User {
        user_id: b["user_id"].as_str().unwrap().to_owned(),
        token: b["access_token"].as_str().unwrap().to_owned(),
        device_id: b["device_id"].as_str().unwrap().to_owned(),
    }
}

fn device(id: &str) -> String {
    format!("/_matrix/client/v3/devices/{}", enc(id))
}

fn password_auth(user: &User, session: &str, password: &str) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user.user_id},
        "password": password,
        "session": session,
    })
}

fn device_ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn list_get_and_rename() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let phone = login(&srv, "alice", "Phone").await;

    let (s, b) = srv.get("/_matrix/client/v3/devices", &alice).await;
    assert_eq!(s, 200);
    let mut expected = vec![alice.device_id.clone(), phone.device_id.clone()];
    expected.sort();
    assert_eq!(device_ids(&b), expected);
    let me = b["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == alice.device_id.as_str())
        .unwrap();
    assert_eq!(me["last_seen_ip"], "127.0.0.1", "{b}");
    assert!(
        me["last_seen_ts"]
            .as_i64()
            .is_some_and(|t| t > 1_600_000_000_000),
        "{b}"
    );

    let (s, b) = srv.get(&device(&phone.device_id), &alice).await;
    assert_eq!(s, 200);
    assert_eq!(b["device_id"], phone.device_id.as_str());
    assert_eq!(b["display_name"], "Phone");
    assert!(b.get("last_seen_ip").is_none_or(|v| v.is_string()), "{b}");

    let (s, b) = srv
        .put(
            &device(&phone.device_id),
            &alice,
            json!({"display_name": "Old phone"}),
        )
        .await;
    assert_eq!((s, b), (200, json!({})));
    let (_, b) = srv.get(&device(&phone.device_id), &phone).await;
    assert_eq!(b["display_name"], "Old phone");
    // No display_name leaves it as it is.
    let (s, _) = srv.put(&device(&phone.device_id), &alice, json!({})).await;
    assert_eq!(s, 200);
    let (_, b) = srv.get(&device(&phone.device_id), &phone).await;
    assert_eq!(b["display_name"], "Old phone");
}

#[tokio::test]
async fn other_users_devices_are_not_found() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    for path in [device(&bob.device_id), device("NOSUCHDEVICE")] {
        let (s, b) = srv.get(&path, &alice).await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (404, Some("M_NOT_FOUND")),
            "{path}"
        );
        let (s, b) = srv
            .put(&path, &alice, json!({"display_name": "mine now"}))
            .await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (404, Some("M_NOT_FOUND")),
            "{path}"
        );
        let (s, b) = srv.put(&path, &alice, json!({})).await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (404, Some("M_NOT_FOUND")),
            "{path}"
        );
    }
    let (_, b) = srv.get("/_matrix/client/v3/devices", &alice).await;
    assert_eq!(device_ids(&b), vec![alice.device_id.clone()]);
    let (_, b) = srv.get(&device(&bob.device_id), &bob).await;
    assert!(b.get("display_name").is_none(), "{b}");

    // Alice's authenticated deletion of Bob's device id deletes nothing of Bob's.
    let (_, b) = srv
        .request(
            "DELETE",
            &device(&bob.device_id),
            Some(&alice.token),
            Some(json!({})),
        )
        .await;
    let session = b["session"].as_str().unwrap().to_owned();
    let (s, _) = srv
        .request(
            "DELETE",
            &device(&bob.device_id),
            Some(&alice.token),
            Some(json!({"auth": password_auth(&alice, &session, "correct horse")})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = srv.get("/_matrix/client/v3/account/whoami", &bob).await;
    assert_eq!(s, 200);
    let (s, _) = srv.get(&device(&bob.device_id), &bob).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn delete_requires_password() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let phone = login(&srv, "alice", "Phone").await;
    let path = device(&phone.device_id);

    // No auth: 401 with the password flow and a session.
    let (s, b) = srv.request("DELETE", &path, Some(&alice.token), None).await;
    assert_eq!(s, 401, "{b}");
    assert_eq!(b["flows"], json!([{"stages": ["m.login.password"]}]), "{b}");
    let session = b["session"].as_str().unwrap().to_owned();

    // Wrong password: still 401, now with M_FORBIDDEN.
    let (s, b) = srv
        .request(
            "DELETE",
            &path,
            Some(&alice.token),
            Some(json!({"auth": password_auth(&alice, &session, "wrong")})),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (401, Some("M_FORBIDDEN")),
        "{b}"
    );
    let (s, _) = srv.get("/_matrix/client/v3/account/whoami", &phone).await;
    assert_eq!(s, 200);

    // Right password: deleted, and its token no longer works.
    let (s, b) = srv
        .request(
            "DELETE",
            &path,
            Some(&alice.token),
            Some(json!({"auth": password_auth(&alice, &session, "correct horse")})),
        )
        .await;
    assert_eq!((s, &b), (200, &json!({})), "{b}");
    let (s, b) = srv.get("/_matrix/client/v3/account/whoami", &phone).await;
    assert_eq!((s, b["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")));
    let (s, _) = srv.get(&path, &alice).await;
    assert_eq!(s, 404);
    let (_, b) = srv.get("/_matrix/client/v3/devices", &alice).await;
    assert_eq!(device_ids(&b), vec![alice.device_id.clone()]);
}

#[tokio::test]
async fn uia_session_is_bound_to_the_device() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let phone = login(&srv, "alice", "Phone").await;
    let laptop = login(&srv, "alice", "Laptop").await;
    let (_, b) = srv
        .request(
            "DELETE",
            &device(&phone.device_id),
            Some(&alice.token),
            None,
        )
        .await;
    let session = b["session"].as_str().unwrap().to_owned();
    // A session opened for deleting the phone does not delete the laptop.
    let (s, _) = srv
        .request(
            "DELETE",
            &device(&laptop.device_id),
            Some(&alice.token),
            Some(json!({"auth": {"type": "m.login.password", "session": session, "password": "correct horse", "identifier": {"type": "m.id.user", "user": "alice"}}})),
        )
        .await;
    assert_eq!(s, 401);
    for d in [&phone, &laptop] {
        let (st, _) = srv.get("/_matrix/client/v3/account/whoami", d).await;
        assert_eq!(st, 200);
    }
}

#[tokio::test]
async fn delete_many() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let phone = login(&srv, "alice", "Phone").await;
    let laptop = login(&srv, "alice", "Laptop").await;
    let body = |auth: Option<Value>| {
        let mut b = json!({"devices": [phone.device_id, laptop.device_id, bob.device_id, "GONE"]});
        if let Some(a) = auth {
            b["auth"] = a;
        }
        b
    };
    let (s, b) = srv
        .post("/_matrix/client/v3/delete_devices", &alice, body(None))
        .await;
    assert_eq!(s, 401, "{b}");
    assert_eq!(b["flows"], json!([{"stages": ["m.login.password"]}]));
    let session = b["session"].as_str().unwrap().to_owned();
    let (s, b) = srv
        .post(
            "/_matrix/client/v3/delete_devices",
            &alice,
            body(Some(password_auth(&alice, &session, "correct horse"))),
        )
        .await;
    assert_eq!((s, &b), (200, &json!({})), "{b}");
    for gone in [&phone, &laptop] {
        let (s, _) = srv.get("/_matrix/client/v3/account/whoami", gone).await;
        assert_eq!(s, 401);
    }
    for kept in [&alice, &bob] {
        let (s, _) = srv.get("/_matrix/client/v3/account/whoami", kept).await;
        assert_eq!(s, 200);
    }
    let (_, b) = srv.get("/_matrix/client/v3/devices", &alice).await;
    assert_eq!(device_ids(&b), vec![alice.device_id.clone()]);
}

#[tokio::test]
async fn bad_input() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let (s, b) = srv
        .put(
            &device(&alice.device_id),
            &alice,
            json!({"display_name": 42}),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_BAD_JSON")));
    let (s, b) = srv
        .put(
            &device(&alice.device_id),
            &alice,
            json!({"display_name": "x".repeat(101)}),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
    let (s, b) = srv
        .post("/_matrix/client/v3/delete_devices", &alice, json!({}))
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_MISSING_PARAM")));
    let (s, b) = srv
        .post(
            "/_matrix/client/v3/delete_devices",
            &alice,
            json!({"devices": "ABC"}),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_BAD_JSON")));
    let (s, b) = srv
        .request(
            "DELETE",
            &device(&alice.device_id),
            Some(&alice.token),
            Some(json!({"auth": "password"})),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_BAD_JSON")));
    let (s, b) = srv
        .raw("PUT", &device(&alice.device_id), Some(&alice.token), b"{")
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_NOT_JSON")));
    let (s, b) = srv
        .request("GET", "/_matrix/client/v3/devices", None, None)
        .await;
    assert_eq!((s, b["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")));
}

/// Where and when a device was last seen is written in batches, and flushed before anyone reads
/// it: another device of the user sees it at once.
#[tokio::test]
async fn another_device_sees_where_a_device_was_last_seen_at_once() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let phone = login(&srv, "alice", "Phone").await;
    let (s, _) = srv.get("/_matrix/client/v3/account/whoami", &phone).await;
    assert_eq!(s, 200);
    let (s, b) = srv.get(&device(&phone.device_id), &alice).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["last_seen_ip"], "127.0.0.1", "{b}");
    assert!(
        b["last_seen_ts"]
            .as_i64()
            .is_some_and(|t| t > 1_600_000_000_000)
    );
}

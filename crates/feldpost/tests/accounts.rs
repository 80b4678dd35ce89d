//! Registration, login, logout, whoami, password change and deactivation.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn registration_is_closed_by_default() {
    let srv = TestServer::start_with(|c| c.registration.open = false).await;
    let (s, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(json!({"username": "x", "password": "long enough"})),
        )
        .await;
    // Closed means a registration token is required (see enrollment.rs).
    assert_eq!(s, 401, "{b}");
    assert_eq!(
        b["flows"],
        json!([{"stages": ["m.login.registration_token"]}])
    );
}

#[tokio::test]
async fn registration_rules() {
    let srv = TestServer::start().await;
    srv.register("alice").await;
    let reg = |name: &str| json!({"username": name, "password": "long enough", "auth": {"type": "m.login.dummy"}});
    let (s, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(reg("alice")),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_USER_IN_USE")));
    let (s, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(reg("Alice")),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_USERNAME"))
    );
    let (s, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(reg("bad name")),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_USERNAME"))
    );
    let (s, b) = srv
        .request("POST", "/_matrix/client/v3/register", None, Some(json!({"username": "carol", "password": "short", "auth": {"type": "m.login.dummy"}})))
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_WEAK_PASSWORD")));
    let (s, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/register?kind=guest",
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (403, Some("M_GUEST_ACCESS_FORBIDDEN"))
    );
    let (s, b) = srv
        .request(
            "GET",
            "/_matrix/client/v3/register/available?username=alice",
            None,
            None,
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_USER_IN_USE")));
    let (s, b) = srv
        .request(
            "GET",
            "/_matrix/client/v3/register/available?username=dave",
            None,
            None,
        )
        .await;
    assert_eq!((s, b["available"].as_bool()), (200, Some(true)));
    // Nothing of the failed attempts was created.
    let (s, _) = srv
        .request(
            "GET",
            "/_matrix/client/v3/register/available?username=carol",
            None,
            None,
        )
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn register_without_username_and_inhibit_login() {
    let srv = TestServer::start().await;
    let (s, b) = srv
        .request("POST", "/_matrix/client/v3/register", None, Some(json!({"password": "long enough", "inhibit_login": true, "auth": {"type": "m.login.dummy"}})))
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["user_id"].as_str().unwrap().ends_with(":localhost"));
    assert!(b.get("access_token").is_none());
}

async fn login(srv: &TestServer, user: &str, password: &str) -> (u16, serde_json::Value) {
    srv.request(
        "POST",
        "/_matrix/client/v3/login",
        None,
        Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password})),
    )
    .await
}

#[tokio::test]
async fn login_whoami_logout() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let (s, flows) = srv
        .request("GET", "/_matrix/client/v3/login", None, None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(flows["flows"][0]["type"], "m.login.password");

    let (s, b) = login(&srv, "alice", "wrong password").await;
    assert_eq!((s, b["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (s, b) = login(&srv, "nobody", "correct horse").await;
    assert_eq!((s, b["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (s, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.magic"})),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_UNKNOWN")));

    let (s, b) = login(&srv, "@alice:localhost", "correct horse").await;
    assert_eq!(s, 200, "{b}");
    let second = User {
        user_id: alice.user_id.clone(),
        token: b["access_token"].as_str().unwrap().into(),
        device_id: b["device_id"].as_str().unwrap().into(),
    };
    assert_ne!(second.device_id, alice.device_id);

    let (s, b) = srv.get("/_matrix/client/v3/account/whoami", &second).await;
    assert_eq!(
        (s, b["user_id"].as_str(), b["device_id"].as_str()),
        (
            200,
            Some(alice.user_id.as_str()),
            Some(second.device_id.as_str())
        )
    );

    let (s, _) = srv
        .post("/_matrix/client/v3/logout", &second, json!({}))
        .await;
    assert_eq!(s, 200);
    let (s, b) = srv.get("/_matrix/client/v3/account/whoami", &second).await;
    assert_eq!((s, b["errcode"].as_str()), (401, Some("M_UNKNOWN_TOKEN")));
    // The other session is untouched…
    let (s, _) = srv.get("/_matrix/client/v3/account/whoami", &alice).await;
    assert_eq!(s, 200);
    // …until logout/all.
    let (s, _) = srv
        .post("/_matrix/client/v3/logout/all", &alice, json!({}))
        .await;
    assert_eq!(s, 200);
    let (s, _) = srv.get("/_matrix/client/v3/account/whoami", &alice).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn login_with_existing_device_id_replaces_its_token() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let (s, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.password", "user": "alice", "password": "correct horse", "device_id": alice.device_id})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["device_id"].as_str(), Some(alice.device_id.as_str()));
    let (s, _) = srv.get("/_matrix/client/v3/account/whoami", &alice).await;
    assert_eq!(s, 401, "the old token of the device is gone");
}

#[tokio::test]
async fn password_change_needs_the_password() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let other = {
        let (_, b) = login(&srv, "alice", "correct horse").await;
        User {
            user_id: alice.user_id.clone(),
            token: b["access_token"].as_str().unwrap().into(),
            device_id: b["device_id"].as_str().unwrap().into(),
        }
    };
    let (s, b) = srv
        .post(
            "/_matrix/client/v3/account/password",
            &alice,
            json!({"new_password": "new long password"}),
        )
        .await;
    assert_eq!(s, 401, "{b}");
    assert_eq!(b["flows"][0]["stages"][0], "m.login.password");
    let session = b["session"].as_str().unwrap().to_owned();
    let bad = json!({"new_password": "new long password", "auth": {"type": "m.login.password", "session": session, "identifier": {"type": "m.id.user", "user": "alice"}, "password": "wrong"}});
    let (s, b) = srv
        .post("/_matrix/client/v3/account/password", &alice, bad)
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (401, Some("M_FORBIDDEN")),
        "{b}"
    );
    let good = json!({"new_password": "new long password", "auth": {"type": "m.login.password", "session": session, "identifier": {"type": "m.id.user", "user": "alice"}, "password": "correct horse"}});
    let (s, b) = srv
        .post("/_matrix/client/v3/account/password", &alice, good)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(login(&srv, "alice", "correct horse").await.0, 403);
    assert_eq!(login(&srv, "alice", "new long password").await.0, 200);
    // Other devices were logged out, this one was kept.
    assert_eq!(
        srv.get("/_matrix/client/v3/account/whoami", &other).await.0,
        401
    );
    assert_eq!(
        srv.get("/_matrix/client/v3/account/whoami", &alice).await.0,
        200
    );
}

#[tokio::test]
async fn deactivation_leaves_rooms_and_blocks_login() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let room = srv
        .create_room(&bob, json!({"preset": "public_chat"}))
        .await;
    srv.join(&alice, &room).await;
    let auth =
        json!({"auth": {"type": "m.login.password", "user": "alice", "password": "correct horse"}});
    let (s, b) = srv
        .post("/_matrix/client/v3/account/deactivate", &alice, auth)
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        srv.get("/_matrix/client/v3/account/whoami", &alice).await.0,
        401
    );
    let (s, b) = login(&srv, "alice", "correct horse").await;
    assert_eq!(s, 403, "{b}");
    let (s, b) = srv
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                enc(&room),
                enc(&alice.user_id)
            ),
            &bob,
        )
        .await;
    assert_eq!((s, b["membership"].as_str()), (200, Some("leave")), "{b}");
    // The name stays taken.
    let (s, _) = srv
        .request(
            "GET",
            "/_matrix/client/v3/register/available?username=alice",
            None,
            None,
        )
        .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn login_is_rate_limited() {
    let srv = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.login = feldpost_service::config::Rate {
            per_second: 0.01,
            burst: 2.0,
        };
    })
    .await;
    srv.register("alice").await;
    assert_eq!(login(&srv, "alice", "wrong one").await.0, 403);
    assert_eq!(login(&srv, "alice", "wrong two").await.0, 403);
    let (s, b) = login(&srv, "alice", "correct horse").await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (429, Some("M_LIMIT_EXCEEDED")),
        "{b}"
    );
    assert!(b["retry_after_ms"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn discovery() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let (s, b) = srv
        .request("GET", "/_matrix/client/versions", None, None)
        .await;
    assert_eq!(s, 200);
    assert!(
        b["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "v1.19")
    );
    let (s, b) = srv
        .request("GET", "/.well-known/matrix/client", None, None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        b["m.homeserver"]["base_url"].as_str(),
        Some(srv.base.as_str())
    );
    let (s, b) = srv.get("/_matrix/client/v3/capabilities", &alice).await;
    assert_eq!(s, 200);
    assert_eq!(b["capabilities"]["m.room_versions"]["default"], "11");
    assert_eq!(
        b["capabilities"]["m.room_versions"]["available"]["12"],
        "stable"
    );
}

//! Presence: setting, reading, who may read it, and delivery through /sync.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn status(user: &str) -> String {
    format!("/_matrix/client/v3/presence/{}/status", enc(user))
}

fn spawn_sync(
    srv: &TestServer,
    user: &User,
    since: &str,
    timeout_ms: u64,
) -> tokio::task::JoinHandle<Value> {
    let url = srv.url(&format!(
        "/_matrix/client/v3/sync?timeout={timeout_ms}&since={since}"
    ));
    let token = user.token.clone();
    tokio::spawn(async move {
        reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    })
}

fn presence_of<'a>(sync: &'a Value, user: &str) -> Option<&'a Value> {
    sync["presence"]["events"]
        .as_array()?
        .iter()
        .rev()
        .find(|e| e["type"] == "m.presence" && e["sender"] == user)
}

#[tokio::test]
async fn set_and_get_own_presence() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    // Never set: offline.
    let (s, b) = srv.get(&status(&alice.user_id), &alice).await;
    assert_eq!((s, b), (200, json!({"presence": "offline"})));

    let (s, b) = srv
        .put(
            &status(&alice.user_id),
            &alice,
            json!({"presence": "online", "status_msg": "Im Büro"}),
        )
        .await;
    assert_eq!((s, &b), (200, &json!({})));
    let (s, b) = srv.get(&status(&alice.user_id), &alice).await;
    assert_eq!(s, 200);
    assert_eq!(b["presence"], "online");
    assert_eq!(b["status_msg"], "Im Büro");
    assert_eq!(b["currently_active"], true);
    assert!(
        b["last_active_ago"]
            .as_i64()
            .is_some_and(|a| (0..60_000).contains(&a)),
        "{b}"
    );

    // A new state without a message clears the message.
    srv.put(
        &status(&alice.user_id),
        &alice,
        json!({"presence": "unavailable"}),
    )
    .await;
    let (_, b) = srv.get(&status(&alice.user_id), &alice).await;
    assert_eq!(b["presence"], "unavailable");
    assert!(b.get("status_msg").is_none(), "{b}");
    assert_eq!(b["currently_active"], false);
}

#[tokio::test]
async fn who_may_see_presence() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let carol = srv.register("carol").await;
    let room = srv
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    srv.join(&bob, &room).await;
    srv.put(
        &status(&alice.user_id),
        &alice,
        json!({"presence": "online"}),
    )
    .await;

    let (s, b) = srv.get(&status(&alice.user_id), &bob).await;
    assert_eq!((s, b["presence"].as_str()), (200, Some("online")));
    let (s, b) = srv.get(&status(&alice.user_id), &carol).await;
    assert_eq!((s, b["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (s, b) = srv.get(&status("@nobody:localhost"), &alice).await;
    assert_eq!((s, b["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
    let (s, b) = srv.get(&status("nobody"), &alice).await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
    let (s, b) = srv
        .request("GET", &status(&alice.user_id), None, None)
        .await;
    assert_eq!((s, b["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")));

    // Once Bob leaves, Alice's presence is no longer his business.
    srv.post(
        &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
        &bob,
        json!({}),
    )
    .await;
    let (s, _) = srv.get(&status(&alice.user_id), &bob).await;
    assert_eq!(s, 403);

    // Nobody sets someone else's presence.
    let (s, b) = srv
        .put(
            &status(&alice.user_id),
            &bob,
            json!({"presence": "offline"}),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (_, b) = srv.get(&status(&alice.user_id), &alice).await;
    assert_eq!(b["presence"], "online");
}

#[tokio::test]
async fn bad_input() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    for (body, errcode) in [
        (json!({"presence": "busy"}), "M_INVALID_PARAM"),
        (json!({"presence": 1}), "M_BAD_JSON"),
        (json!({"presence": "online", "status_msg": 7}), "M_BAD_JSON"),
        (
            json!({"presence": "online", "status_msg": "x".repeat(5000)}),
            "M_INVALID_PARAM",
        ),
        (json!({"status_msg": "hi"}), "M_MISSING_PARAM"),
        (json!([]), "M_BAD_JSON"),
    ] {
        let (s, b) = srv.put(&status(&alice.user_id), &alice, body.clone()).await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (400, Some(errcode)),
            "{body}: {b}"
        );
    }
    let (_, b) = srv.get(&status(&alice.user_id), &alice).await;
    assert_eq!(b, json!({"presence": "offline"}));
}

#[tokio::test]
async fn presence_reaches_room_members_through_sync() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let carol = srv.register("carol").await;
    let room = srv
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    srv.join(&bob, &room).await;
    let bob_since = srv.sync(&bob, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let carol_since = srv.sync(&carol, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let alice_since = srv.sync(&alice, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let bob_waiter = spawn_sync(&srv, &bob, &bob_since, 10_000);
    let alice_waiter = spawn_sync(&srv, &alice, &alice_since, 10_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (s, _) = srv
        .put(
            &status(&alice.user_id),
            &alice,
            json!({"presence": "online", "status_msg": "hier"}),
        )
        .await;
    assert_eq!(s, 200);
    for waiter in [bob_waiter, alice_waiter] {
        let sync = waiter.await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "long-poll was not woken"
        );
        let p = presence_of(&sync, &alice.user_id).unwrap_or_else(|| panic!("{sync}"));
        assert_eq!(p["content"]["presence"], "online");
        assert_eq!(p["content"]["status_msg"], "hier");
    }
    // Carol shares no room with Alice and hears nothing.
    let sync = srv.sync(&carol, Some(&carol_since), 300).await;
    assert!(presence_of(&sync, &alice.user_id).is_none(), "{sync}");
    // An initial sync shows the current presence.
    let sync = srv.sync(&bob, None, 0).await;
    assert_eq!(
        presence_of(&sync, &alice.user_id).unwrap()["content"]["presence"],
        "online"
    );
}

//! Read receipts, read markers and typing notifications.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn receipt_path(room: &str, kind: &str, event: &str) -> String {
    format!(
        "/_matrix/client/v3/rooms/{}/receipt/{kind}/{}",
        enc(room),
        enc(event)
    )
}

fn typing_path(room: &str, user: &str) -> String {
    format!(
        "/_matrix/client/v3/rooms/{}/typing/{}",
        enc(room),
        enc(user)
    )
}

fn markers_path(room: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/read_markers", enc(room))
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

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap().to_owned()
}

/// The content of the room's `m.receipt` ephemeral event in a sync (empty when there is none).
fn receipts(sync: &Value, room: &str) -> Value {
    let mut merged = serde_json::Map::new();
    for e in sync["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if e["type"] == "m.receipt"
            && let Some(c) = e["content"].as_object()
        {
            merged.extend(c.clone());
        }
    }
    Value::Object(merged)
}

fn typing_users(sync: &Value, room: &str) -> Option<Vec<String>> {
    sync["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["type"] == "m.typing")
        .map(|e| {
            e["content"]["user_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u.as_str().unwrap().to_owned())
                .collect()
        })
}

async fn two_in_a_room(srv: &TestServer) -> (User, User, String) {
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let room = srv
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    srv.join(&bob, &room).await;
    (alice, bob, room)
}

#[tokio::test]
async fn read_receipt_reaches_everyone() {
    let srv = TestServer::start().await;
    let (alice, bob, room) = two_in_a_room(&srv).await;
    let ev = srv.send_text(&alice, &room, "hello").await;
    let since = next_batch(&srv.sync(&alice, None, 0).await);

    let waiter = spawn_sync(&srv, &alice, &since, 10_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (s, b) = srv
        .post(&receipt_path(&room, "m.read", &ev), &bob, json!({}))
        .await;
    assert_eq!((s, &b), (200, &json!({})));
    let sync = waiter.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "long-poll was not woken"
    );
    let r = receipts(&sync, &room);
    assert!(r[&ev]["m.read"][&bob.user_id]["ts"].is_u64(), "{sync}");
    assert!(r[&ev]["m.read"][&bob.user_id].get("thread_id").is_none());

    // Bob sees his own receipt, and an initial sync carries it too.
    let r = receipts(&srv.sync(&bob, None, 0).await, &room);
    assert!(r[&ev]["m.read"][&bob.user_id].is_object(), "{r}");
    // An empty body is accepted as `{}`.
    let (s, _) = srv
        .raw(
            "POST",
            &receipt_path(&room, "m.read", &ev),
            Some(&alice.token),
            b"",
        )
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn private_receipts_stay_private() {
    let srv = TestServer::start().await;
    let (alice, bob, room) = two_in_a_room(&srv).await;
    let ev = srv.send_text(&alice, &room, "secret").await;
    let alice_since = next_batch(&srv.sync(&alice, None, 0).await);
    let bob_since = next_batch(&srv.sync(&bob, None, 0).await);

    let waiter = spawn_sync(&srv, &bob, &bob_since, 10_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (s, _) = srv
        .post(&receipt_path(&room, "m.read.private", &ev), &bob, json!({}))
        .await;
    assert_eq!(s, 200);
    let sync = waiter.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "owner's long-poll was not woken"
    );
    assert!(
        receipts(&sync, &room)[&ev]["m.read.private"][&bob.user_id].is_object(),
        "{sync}"
    );

    for sync in [
        srv.sync(&alice, Some(&alice_since), 0).await,
        srv.sync(&alice, None, 0).await,
    ] {
        let r = receipts(&sync, &room);
        assert!(
            r.get(&ev).is_none_or(|e| e.get("m.read.private").is_none()),
            "{r}"
        );
        assert!(!r.to_string().contains(&bob.user_id), "{r}");
    }
    // For Alice nothing happened: her long-poll keeps waiting rather than answering empty-handed.
    let started = Instant::now();
    let sync = srv.sync(&alice, Some(&alice_since), 500).await;
    assert!(started.elapsed() >= Duration::from_millis(450), "{sync}");
    assert!(sync["rooms"]["join"].get(&room).is_none(), "{sync}");
}

#[tokio::test]
async fn threaded_receipts() {
    let srv = TestServer::start().await;
    let (alice, bob, room) = two_in_a_room(&srv).await;
    let root = srv.send_text(&alice, &room, "root").await;
    let (s, b) = srv
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/th1", enc(&room)),
            &alice,
            json!({"msgtype": "m.text", "body": "in thread", "m.relates_to": {"rel_type": "m.thread", "event_id": root}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let in_thread = b["event_id"].as_str().unwrap().to_owned();
    let main = srv.send_text(&alice, &room, "main again").await;

    let ok = [
        (&in_thread, json!({"thread_id": root})),
        (&root, json!({"thread_id": root})),
        (&main, json!({"thread_id": "main"})),
        (&root, json!({"thread_id": "main"})),
    ];
    for (ev, body) in ok {
        let (s, b) = srv
            .post(&receipt_path(&room, "m.read", ev), &bob, body.clone())
            .await;
        assert_eq!(s, 200, "{body}: {b}");
    }
    let bad = [
        (&in_thread, json!({"thread_id": "main"})),
        (&main, json!({"thread_id": root})),
        (&main, json!({"thread_id": ""})),
        (&main, json!({"thread_id": 5})),
        (&main, json!({"thread_id": "not-an-event-id"})),
    ];
    for (ev, body) in bad {
        let (s, b) = srv
            .post(&receipt_path(&room, "m.read", ev), &bob, body.clone())
            .await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (400, Some("M_INVALID_PARAM")),
            "{body}: {b}"
        );
    }
    let (s, b) = srv
        .post(
            &receipt_path(&room, "m.fully_read", &main),
            &bob,
            json!({"thread_id": "main"}),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));

    let r = receipts(&srv.sync(&alice, None, 0).await, &room);
    assert_eq!(
        r[&in_thread]["m.read"][&bob.user_id]["thread_id"],
        json!(root),
        "{r}"
    );
    assert_eq!(r[&main]["m.read"][&bob.user_id]["thread_id"], "main", "{r}");
}

#[tokio::test]
async fn receipts_do_not_move_backwards() {
    let srv = TestServer::start().await;
    let (alice, bob, room) = two_in_a_room(&srv).await;
    let first = srv.send_text(&alice, &room, "one").await;
    let second = srv.send_text(&alice, &room, "two").await;
    srv.post(&receipt_path(&room, "m.read", &second), &bob, json!({}))
        .await;
    let since = next_batch(&srv.sync(&alice, None, 0).await);
    let (s, _) = srv
        .post(&receipt_path(&room, "m.read", &first), &bob, json!({}))
        .await;
    assert_eq!(s, 200);
    // Nothing changed, so nothing new is synced; the receipt stays on the later event.
    let sync = srv.sync(&alice, Some(&since), 0).await;
    assert_eq!(receipts(&sync, &room), json!({}), "{sync}");
    let r = receipts(&srv.sync(&alice, None, 0).await, &room);
    assert!(r[&second]["m.read"][&bob.user_id].is_object(), "{r}");
    assert!(r.get(&first).is_none(), "{r}");
    // A thread's receipt is separate from the unthreaded one.
    let (s, _) = srv
        .post(
            &receipt_path(&room, "m.read", &first),
            &bob,
            json!({"thread_id": "main"}),
        )
        .await;
    assert_eq!(s, 200);
    let r = receipts(&srv.sync(&alice, None, 0).await, &room);
    assert_eq!(
        r[&first]["m.read"][&bob.user_id]["thread_id"], "main",
        "{r}"
    );
}

#[tokio::test]
async fn receipt_authorization_and_input() {
    let srv = TestServer::start().await;
    let (alice, _bob, room) = two_in_a_room(&srv).await;
    let carol = srv.register("carol").await;
    let ev = srv.send_text(&alice, &room, "hi").await;
    let other_room = srv.create_room(&alice, json!({})).await;
    let elsewhere = srv.send_text(&alice, &other_room, "elsewhere").await;

    let (s, b) = srv
        .post(&receipt_path(&room, "m.read", &ev), &carol, json!({}))
        .await;
    assert_eq!((s, b["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (s, b) = srv
        .post(&markers_path(&room), &carol, json!({"m.fully_read": ev}))
        .await;
    assert_eq!((s, b["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (s, b) = srv
        .post(
            &receipt_path("!unknown:localhost", "m.read", &ev),
            &alice,
            json!({}),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (403, Some("M_FORBIDDEN")));

    for (path, status, errcode) in [
        (receipt_path(&room, "m.read", "$nope"), 404, "M_NOT_FOUND"),
        (
            receipt_path(&room, "m.read", &elsewhere),
            404,
            "M_NOT_FOUND",
        ),
        (
            receipt_path(&room, "m.read", "not-an-event"),
            400,
            "M_INVALID_PARAM",
        ),
        (
            receipt_path("not-a-room", "m.read", &ev),
            400,
            "M_INVALID_PARAM",
        ),
        (receipt_path(&room, "m.bogus", &ev), 400, "M_INVALID_PARAM"),
    ] {
        let (s, b) = srv.post(&path, &alice, json!({})).await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (status, Some(errcode)),
            "{path}: {b}"
        );
    }
    let (s, b) = srv
        .post(&receipt_path(&room, "m.read", &ev), &alice, json!(["x"]))
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_BAD_JSON")));
}

#[tokio::test]
async fn read_markers() {
    let srv = TestServer::start().await;
    let (alice, bob, room) = two_in_a_room(&srv).await;
    let first = srv.send_text(&alice, &room, "one").await;
    let second = srv.send_text(&alice, &room, "two").await;
    let bob_since = next_batch(&srv.sync(&bob, None, 0).await);
    let alice_since = next_batch(&srv.sync(&alice, None, 0).await);

    let (s, b) = srv
        .post(
            &markers_path(&room),
            &bob,
            json!({"m.fully_read": second, "m.read": first, "m.read.private": second}),
        )
        .await;
    assert_eq!((s, &b), (200, &json!({})), "{b}");

    let sync = srv.sync(&bob, Some(&bob_since), 0).await;
    let ad: Vec<&Value> = sync["rooms"]["join"][&room]["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.fully_read")
        .collect();
    assert_eq!(ad.len(), 1, "{sync}");
    assert_eq!(ad[0]["content"], json!({"event_id": second}));
    let r = receipts(&sync, &room);
    assert!(r[&first]["m.read"][&bob.user_id].is_object(), "{r}");
    assert!(
        r[&second]["m.read.private"][&bob.user_id].is_object(),
        "{r}"
    );
    // The marker is readable as room account data, though not writable as such.
    let (s, b) = srv
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.fully_read",
                enc(&bob.user_id),
                enc(&room)
            ),
            &bob,
        )
        .await;
    assert_eq!((s, b), (200, json!({"event_id": second})));

    // Alice sees the public receipt only, and not Bob's marker.
    let sync = srv.sync(&alice, Some(&alice_since), 0).await;
    let r = receipts(&sync, &room);
    assert!(r[&first]["m.read"][&bob.user_id].is_object(), "{r}");
    assert!(!r.to_string().contains("m.read.private"), "{r}");
    assert!(!sync.to_string().contains("m.fully_read"), "{sync}");

    // The fully-read marker does not move back; the receipt endpoint can set it too.
    srv.post(&markers_path(&room), &bob, json!({"m.fully_read": first}))
        .await;
    let (_, b) = srv
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.fully_read",
                enc(&bob.user_id),
                enc(&room)
            ),
            &bob,
        )
        .await;
    assert_eq!(b, json!({"event_id": second}));
    let third = srv.send_text(&alice, &room, "three").await;
    let (s, _) = srv
        .post(
            &receipt_path(&room, "m.fully_read", &third),
            &bob,
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, b) = srv
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.fully_read",
                enc(&bob.user_id),
                enc(&room)
            ),
            &bob,
        )
        .await;
    assert_eq!(b, json!({"event_id": third}));

    for (body, errcode) in [
        (json!({"m.fully_read": 5}), "M_BAD_JSON"),
        (json!({"m.read": ["$x"]}), "M_BAD_JSON"),
        (json!({"m.fully_read": "nope"}), "M_INVALID_PARAM"),
    ] {
        let (s, b) = srv.post(&markers_path(&room), &bob, body.clone()).await;
        assert_eq!((s, b["errcode"].as_str()), (400, Some(errcode)), "{body}");
    }
    let (s, b) = srv
        .post(&markers_path(&room), &bob, json!({"m.read": "$unknown"}))
        .await;
    assert_eq!((s, b["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
}

#[tokio::test]
async fn typing_wakes_long_poll() {
    let srv = TestServer::start().await;
    let (alice, bob, room) = two_in_a_room(&srv).await;
    let since = next_batch(&srv.sync(&bob, None, 0).await);

    let waiter = spawn_sync(&srv, &bob, &since, 10_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (s, b) = srv
        .put(
            &typing_path(&room, &alice.user_id),
            &alice,
            json!({"typing": true, "timeout": 30000}),
        )
        .await;
    assert_eq!((s, &b), (200, &json!({})));
    let sync = waiter.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "long-poll was not woken"
    );
    assert_eq!(
        typing_users(&sync, &room),
        Some(vec![alice.user_id.clone()]),
        "{sync}"
    );

    // Stopping is delivered as an empty list.
    let since = next_batch(&sync);
    let waiter = spawn_sync(&srv, &bob, &since, 10_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, _) = srv
        .put(
            &typing_path(&room, &alice.user_id),
            &alice,
            json!({"typing": false}),
        )
        .await;
    assert_eq!(s, 200);
    let sync = waiter.await.unwrap();
    assert_eq!(typing_users(&sync, &room), Some(vec![]), "{sync}");
}

#[tokio::test]
async fn typing_times_out() {
    let srv = TestServer::start().await;
    let (alice, bob, room) = two_in_a_room(&srv).await;
    let (s, _) = srv
        .put(
            &typing_path(&room, &alice.user_id),
            &alice,
            json!({"typing": true, "timeout": 500}),
        )
        .await;
    assert_eq!(s, 200);
    let sync = srv.sync(&bob, None, 0).await;
    assert_eq!(
        typing_users(&sync, &room),
        Some(vec![alice.user_id.clone()])
    );
    let since = next_batch(&sync);
    // The background sweep removes the entry within about a second and wakes the room.
    let sync = srv.sync(&bob, Some(&since), 5000).await;
    assert_eq!(typing_users(&sync, &room), Some(vec![]), "{sync}");
}

#[tokio::test]
async fn typing_authorization_and_input() {
    let srv = TestServer::start().await;
    let (alice, bob, room) = two_in_a_room(&srv).await;
    let carol = srv.register("carol").await;
    // Only for oneself, and only as a member.
    let (s, b) = srv
        .put(
            &typing_path(&room, &alice.user_id),
            &bob,
            json!({"typing": true, "timeout": 1000}),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (s, b) = srv
        .put(
            &typing_path(&room, &carol.user_id),
            &carol,
            json!({"typing": true, "timeout": 1000}),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    for (path, body, errcode) in [
        (
            typing_path(&room, &alice.user_id),
            json!({"typing": "yes"}),
            "M_BAD_JSON",
        ),
        (
            typing_path(&room, &alice.user_id),
            json!({"typing": true, "timeout": -5}),
            "M_BAD_JSON",
        ),
        (
            typing_path(&room, &alice.user_id),
            json!({"timeout": 5}),
            "M_MISSING_PARAM",
        ),
        (
            typing_path(&room, "alice"),
            json!({"typing": true}),
            "M_INVALID_PARAM",
        ),
        (
            typing_path("room", &alice.user_id),
            json!({"typing": true}),
            "M_INVALID_PARAM",
        ),
    ] {
        let (s, b) = srv.put(&path, &alice, body.clone()).await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (400, Some(errcode)),
            "{path} {body}: {b}"
        );
    }
    // None of that made anyone type.
    let sync = srv.sync(&bob, None, 0).await;
    assert!(
        typing_users(&sync, &room).is_none_or(|u| u.is_empty()),
        "{sync}"
    );
}

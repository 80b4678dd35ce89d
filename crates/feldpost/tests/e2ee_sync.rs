//! End-to-end encryption in sync: device-list tracking (`device_lists.changed` and `left`) and
//! send-to-device messaging (delivery, acknowledgement, idempotency, limits, device deletion).

mod common;
mod e2ee_support;

use common::{TestServer, User, enc};
use e2ee_support::*;
use serde_json::{Value, json};

fn next(sync: &Value) -> String {
    sync["next_batch"].as_str().expect("next_batch").to_owned()
}

async fn public_room(srv: &TestServer, owner: &User, members: &[&User]) -> String {
    let room = srv
        .create_room(owner, json!({"preset": "public_chat"}))
        .await;
    for m in members {
        srv.join(m, &room).await;
    }
    room
}

async fn send_to_device(srv: &TestServer, from: &User, txn: &str, messages: Value) -> (u16, Value) {
    srv.put(
        &format!("/_matrix/client/v3/sendToDevice/m.test/{txn}"),
        from,
        json!({"messages": messages}),
    )
    .await
}

fn to_device(sync: &Value) -> Vec<Value> {
    sync["to_device"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn initial_sync_has_empty_device_lists_and_key_fields() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    public_room(&srv, &alice, &[&bob]).await;
    upload_device_keys(&srv, &bob).await;
    let sync = srv.sync(&alice, None, 0).await;
    assert_eq!(
        sync["device_lists"],
        json!({"changed": [], "left": []}),
        "{sync}"
    );
    assert_eq!(
        sync["device_one_time_keys_count"],
        json!({"signed_curve25519": 0})
    );
    assert_eq!(sync["device_unused_fallback_key_types"], json!([]));
}

#[tokio::test]
async fn new_uploaded_and_deleted_devices_appear_in_changed() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let carol = srv.register("carol").await;
    public_room(&srv, &alice, &[&bob]).await;
    let since = next(&srv.sync(&alice, None, 0).await);

    // Bob publishes keys: Alice (sharing a room) and Bob himself hear of it; Carol does not.
    let carol_since = next(&srv.sync(&carol, None, 0).await);
    let bob_since = next(&srv.sync(&bob, None, 0).await);
    upload_device_keys(&srv, &bob).await;
    let sync = srv.sync(&alice, Some(&since), 0).await;
    assert_eq!(
        device_list(&sync, "changed"),
        vec![bob.user_id.clone()],
        "{sync}"
    );
    let since = next(&sync);
    assert!(
        device_list(&srv.sync(&bob, Some(&bob_since), 0).await, "changed").contains(&bob.user_id)
    );
    assert!(device_list(&srv.sync(&carol, Some(&carol_since), 0).await, "changed").is_empty());

    // Nothing new: nothing reported again.
    let sync = srv.sync(&alice, Some(&since), 0).await;
    assert!(device_list(&sync, "changed").is_empty(), "{sync}");

    // A new device with keys, then its deletion.
    let phone = login(&srv, "bob").await;
    upload_device_keys(&srv, &phone).await;
    let sync = srv.sync(&alice, Some(&since), 0).await;
    assert_eq!(
        device_list(&sync, "changed"),
        vec![bob.user_id.clone()],
        "{sync}"
    );
    let since = next(&sync);
    delete_device(&srv, &bob, &phone.device_id).await;
    let sync = srv.sync(&alice, Some(&since), 0).await;
    assert_eq!(
        device_list(&sync, "changed"),
        vec![bob.user_id.clone()],
        "{sync}"
    );
    let since = next(&sync);

    // Cross-signing keys count as well.
    bootstrap_cross_signing(&srv, &bob).await;
    let sync = srv.sync(&alice, Some(&since), 0).await;
    assert_eq!(
        device_list(&sync, "changed"),
        vec![bob.user_id.clone()],
        "{sync}"
    );
}

#[tokio::test]
async fn a_parked_sync_wakes_for_a_device_list_change() {
    let srv = std::sync::Arc::new(TestServer::start().await);
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    public_room(&srv, &alice, &[&bob]).await;
    let since = next(&srv.sync(&alice, None, 0).await);
    let (s2, a2) = (srv.clone(), alice.clone());
    let parked = tokio::spawn(async move { s2.sync(&a2, Some(&since), 20_000).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let start = std::time::Instant::now();
    upload_device_keys(&srv, &bob).await;
    let sync = parked.await.expect("sync");
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(
        device_list(&sync, "changed"),
        vec![bob.user_id.clone()],
        "{sync}"
    );
}

#[tokio::test]
async fn sharing_a_new_room_is_changed_and_sharing_none_is_left() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let room = public_room(&srv, &alice, &[]).await;
    let since = next(&srv.sync(&alice, None, 0).await);
    let bob_since = next(&srv.sync(&bob, None, 0).await);
    srv.join(&bob, &room).await;
    // Both now share a room: each sees the other as changed.
    let sync = srv.sync(&alice, Some(&since), 0).await;
    assert_eq!(
        device_list(&sync, "changed"),
        vec![bob.user_id.clone()],
        "{sync}"
    );
    let since = next(&sync);
    let sync = srv.sync(&bob, Some(&bob_since), 0).await;
    assert_eq!(
        device_list(&sync, "changed"),
        vec![alice.user_id.clone()],
        "{sync}"
    );
    let bob_since = next(&sync);

    // A second shared room, then Bob leaves the first: still sharing one, not left.
    let second = public_room(&srv, &alice, &[&bob]).await;
    let since = next(&srv.sync(&alice, Some(&since), 0).await);
    let (s, b) = srv
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
            &bob,
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let sync = srv.sync(&alice, Some(&since), 0).await;
    assert!(device_list(&sync, "left").is_empty(), "{sync}");
    let since = next(&sync);

    // Leaving the last shared room: Bob is left for Alice, Alice for Bob.
    let bob_since = next(&srv.sync(&bob, Some(&bob_since), 0).await);
    let (s, b) = srv
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&second)),
            &bob,
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let sync = srv.sync(&alice, Some(&since), 0).await;
    assert_eq!(
        device_list(&sync, "left"),
        vec![bob.user_id.clone()],
        "{sync}"
    );
    assert!(!device_list(&sync, "changed").contains(&bob.user_id));
    let since = next(&sync);
    let sync = srv.sync(&bob, Some(&bob_since), 0).await;
    assert_eq!(
        device_list(&sync, "left"),
        vec![alice.user_id.clone()],
        "{sync}"
    );

    // No longer sharing a room, Bob's key changes are not Alice's business.
    upload_device_keys(&srv, &bob).await;
    let sync = srv.sync(&alice, Some(&since), 0).await;
    assert!(device_list(&sync, "changed").is_empty(), "{sync}");
}

#[tokio::test]
async fn to_device_messages_are_delivered_once_and_deleted_when_acknowledged() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let since = next(&srv.sync(&bob, None, 0).await);
    let (s, b) = send_to_device(
        &srv,
        &alice,
        "t1",
        json!({bob.user_id.clone(): {bob.device_id.clone(): {"n": 1}}}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!({}));
    let first = srv.sync(&bob, Some(&since), 0).await;
    let events = to_device(&first);
    assert_eq!(events.len(), 1, "{first}");
    assert_eq!(
        events[0],
        json!({"sender": alice.user_id, "type": "m.test", "content": {"n": 1}})
    );
    // A retry with the same `since` (the response was lost) delivers it again…
    let again = srv.sync(&bob, Some(&since), 0).await;
    assert_eq!(to_device(&again).len(), 1, "{again}");
    // …but once the client moves past it, it is gone for good.
    let after = srv.sync(&bob, Some(&next(&again)), 0).await;
    assert!(to_device(&after).is_empty(), "{after}");
    let retry_old = srv.sync(&bob, Some(&since), 0).await;
    assert!(to_device(&retry_old).is_empty(), "{retry_old}");
    let initial = srv.sync(&bob, None, 0).await;
    assert!(to_device(&initial).is_empty(), "{initial}");
}

#[tokio::test]
async fn the_same_transaction_id_sends_once() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let msg = json!({bob.user_id.clone(): {bob.device_id.clone(): {"n": 1}}});
    for _ in 0..3 {
        let (s, _) = send_to_device(&srv, &alice, "same", msg.clone()).await;
        assert_eq!(s, 200);
    }
    // Another device of the sender may use the same transaction id.
    let alice2 = login(&srv, "alice").await;
    let (s, _) = send_to_device(&srv, &alice2, "same", msg).await;
    assert_eq!(s, 200);
    let sync = srv.sync(&bob, None, 0).await;
    assert_eq!(to_device(&sync).len(), 2, "{sync}");
}

#[tokio::test]
async fn star_reaches_every_device_and_offline_devices_get_theirs_later() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let phone = login(&srv, "bob").await;
    let (s, _) = send_to_device(
        &srv,
        &alice,
        "all",
        json!({bob.user_id.clone(): {"*": {"hello": "all"}}}),
    )
    .await;
    assert_eq!(s, 200);
    // The phone was never syncing when it was sent; it gets it on its first sync.
    for dev in [&bob, &phone] {
        let sync = srv.sync(dev, None, 0).await;
        let events = to_device(&sync);
        assert_eq!(events.len(), 1, "{sync}");
        assert_eq!(events[0]["content"], json!({"hello": "all"}));
    }
    // Messages to unknown devices and users go nowhere, without an error.
    let (s, b) = send_to_device(
        &srv,
        &alice,
        "nobody",
        json!({
            bob.user_id.clone(): {"NOSUCHDEVICE": {}},
            "@ghost:localhost": {"*": {}},
        }),
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn a_parked_sync_wakes_for_a_to_device_message() {
    let srv = std::sync::Arc::new(TestServer::start().await);
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let since = next(&srv.sync(&bob, None, 0).await);
    let (s2, b2) = (srv.clone(), bob.clone());
    let parked = tokio::spawn(async move { s2.sync(&b2, Some(&since), 20_000).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let start = std::time::Instant::now();
    let (s, _) = send_to_device(
        &srv,
        &alice,
        "wake",
        json!({bob.user_id.clone(): {bob.device_id.clone(): {"n": 1}}}),
    )
    .await;
    assert_eq!(s, 200);
    let sync = parked.await.expect("sync");
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(to_device(&sync).len(), 1, "{sync}");
}

#[tokio::test]
async fn a_long_queue_is_delivered_in_order_a_hundred_at_a_time() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    for i in 0..250 {
        let (s, _) = send_to_device(
            &srv,
            &alice,
            &format!("b{i}"),
            json!({bob.user_id.clone(): {bob.device_id.clone(): {"i": i}}}),
        )
        .await;
        assert_eq!(s, 200);
    }
    let mut since: Option<String> = None;
    let mut got = Vec::new();
    for _ in 0..5 {
        let sync = srv.sync(&bob, since.as_deref(), 0).await;
        let events = to_device(&sync);
        assert!(events.len() <= 100, "{}", events.len());
        got.extend(
            events
                .iter()
                .map(|e| e["content"]["i"].as_i64().expect("i")),
        );
        since = Some(next(&sync));
    }
    assert_eq!(got, (0..250).collect::<Vec<_>>());
}

#[tokio::test]
async fn oversized_to_device_requests_are_refused() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let big = "x".repeat(70_000);
    let (s, b) = send_to_device(
        &srv,
        &alice,
        "big",
        json!({bob.user_id.clone(): {bob.device_id.clone(): {"blob": big}}}),
    )
    .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (413, Some("M_TOO_LARGE")),
        "{b}"
    );
    // A body over the request size limit.
    let huge = "y".repeat(1_100_000);
    let (s, b) = send_to_device(
        &srv,
        &alice,
        "huge",
        json!({bob.user_id.clone(): {bob.device_id.clone(): {"blob": huge}}}),
    )
    .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (413, Some("M_TOO_LARGE")),
        "{b}"
    );
    // Too many recipients in one request.
    let mut many = serde_json::Map::new();
    for i in 0..10_001 {
        many.insert(format!("D{i}"), json!({}));
    }
    let (s, b) = send_to_device(&srv, &alice, "many", json!({bob.user_id.clone(): many})).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (413, Some("M_TOO_LARGE")),
        "{b}"
    );
    let sync = srv.sync(&bob, None, 0).await;
    assert!(to_device(&sync).is_empty(), "{sync}");
    // Malformed requests.
    let (s, b) = send_to_device(
        &srv,
        &alice,
        "bad1",
        json!({bob.user_id.clone(): {bob.device_id.clone(): "text"}}),
    )
    .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{b}");
    let (s, b) = send_to_device(&srv, &alice, "bad2", json!({"not-a-user": {"D": {}}})).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, b) = srv
        .put(
            "/_matrix/client/v3/sendToDevice/m.test/bad3",
            &alice,
            json!({}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_MISSING_PARAM")),
        "{b}"
    );
}

#[tokio::test]
async fn deleting_a_device_drops_its_pending_messages() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let phone = login(&srv, "bob").await;
    let (s, _) = send_to_device(
        &srv,
        &alice,
        "t",
        json!({bob.user_id.clone(): {phone.device_id.clone(): {"n": 1}}}),
    )
    .await;
    assert_eq!(s, 200);
    delete_device(&srv, &bob, &phone.device_id).await;
    // Logging in again with the same device id does not bring them back.
    let (s, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"},
                "password": "correct horse", "device_id": phone.device_id})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let again = User {
        user_id: bob.user_id.clone(),
        token: b["access_token"].as_str().expect("token").to_owned(),
        device_id: phone.device_id.clone(),
    };
    let sync = srv.sync(&again, None, 0).await;
    assert!(to_device(&sync).is_empty(), "{sync}");
}

#[tokio::test]
async fn a_sync_token_with_a_to_device_position_is_accepted_and_checked() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let sync = srv.sync(&alice, None, 0).await;
    let token = next(&sync);
    let (s, b) = srv
        .get(
            &format!("/_matrix/client/v3/sync?since={token}_0&timeout=0"),
            &alice,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = srv
        .get(
            &format!("/_matrix/client/v3/sync?since={token}_999999&timeout=0"),
            &alice,
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
}

#[tokio::test]
async fn a_parked_sync_wakes_when_a_device_with_keys_is_deleted() {
    let srv = std::sync::Arc::new(TestServer::start().await);
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    public_room(&srv, &alice, &[&bob]).await;
    let phone = login(&srv, "bob").await;
    upload_device_keys(&srv, &phone).await;
    let since = next(&srv.sync(&alice, None, 0).await);
    let (s2, a2) = (srv.clone(), alice.clone());
    let parked = tokio::spawn(async move { s2.sync(&a2, Some(&since), 20_000).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let start = std::time::Instant::now();
    delete_device(&srv, &bob, &phone.device_id).await;
    let sync = parked.await.expect("sync");
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(
        device_list(&sync, "changed"),
        vec![bob.user_id.clone()],
        "{sync}"
    );
}

#[tokio::test]
async fn signing_another_users_master_key_is_news_to_the_signer_only() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let carol = srv.register("carol").await;
    public_room(&srv, &alice, &[&bob, &carol]).await;
    let acs = bootstrap_cross_signing(&srv, &alice).await;
    let bcs = bootstrap_cross_signing(&srv, &bob).await;
    let alice_since = next(&srv.sync(&alice, None, 0).await);
    let carol_since = next(&srv.sync(&carol, None, 0).await);
    let mut bob_master = cross_signing_key(&bob.user_id, "master", &bcs.master, None);
    acs.user_signing.sign(&alice.user_id, &mut bob_master);
    let (s, b) = srv
        .post(
            "/_matrix/client/v3/keys/signatures/upload",
            &alice,
            json!({bob.user_id.clone(): {bcs.master.public.clone(): bob_master}}),
        )
        .await;
    assert_eq!((s, &b["failures"]), (200, &json!({})), "{b}");
    let sync = srv.sync(&alice, Some(&alice_since), 0).await;
    assert_eq!(
        device_list(&sync, "changed"),
        vec![bob.user_id.clone()],
        "{sync}"
    );
    let sync = srv.sync(&carol, Some(&carol_since), 0).await;
    assert!(device_list(&sync, "changed").is_empty(), "{sync}");
}

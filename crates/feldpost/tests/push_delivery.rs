//! Pushers and delivery to push gateways: CRUD and validation, content-free payloads with
//! counts, retries, rejected pushkeys, outbound restrictions.

mod common;
mod push_common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::TestServer;
use push_common::{FakeGateway, eventually, push_server, set_pusher, shared_room};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(5);

fn pusher_body(url: &str) -> Value {
    json!({
        "kind": "http", "app_id": "org.example.app", "pushkey": "key-1",
        "app_display_name": "App", "device_display_name": "Phone", "lang": "de",
        "data": {"url": url},
    })
}

async fn pushers(s: &TestServer, u: &common::User) -> Vec<Value> {
    let (st, b) = s.get("/_matrix/client/v3/pushers", u).await;
    assert_eq!(st, 200, "{b}");
    b["pushers"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn pushers_are_created_listed_replaced_and_deleted() {
    let s = push_server().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let url = "https://gw.example.org/_matrix/push/v1/notify";
    let (st, body) = s
        .post("/_matrix/client/v3/pushers/set", &a, pusher_body(url))
        .await;
    assert_eq!(st, 200, "{body}");
    let list = pushers(&s, &a).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["app_id"], "org.example.app");
    assert_eq!(list[0]["pushkey"], "key-1");
    assert_eq!(list[0]["kind"], "http");
    assert_eq!(list[0]["lang"], "de");
    assert_eq!(list[0]["data"]["url"], url);

    // Same app id and pushkey again: an update, not a second pusher.
    let mut changed = pusher_body(url);
    changed["device_display_name"] = json!("Other phone");
    changed["profile_tag"] = json!("tag");
    s.post("/_matrix/client/v3/pushers/set", &a, changed).await;
    let list = pushers(&s, &a).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["device_display_name"], "Other phone");
    assert_eq!(list[0]["profile_tag"], "tag");

    // Another user with append: both stay. Without append: the other user's pusher goes.
    let mut appended = pusher_body(url);
    appended["append"] = json!(true);
    s.post("/_matrix/client/v3/pushers/set", &b, appended).await;
    assert_eq!(pushers(&s, &a).await.len(), 1);
    assert_eq!(pushers(&s, &b).await.len(), 1);
    s.post("/_matrix/client/v3/pushers/set", &b, pusher_body(url))
        .await;
    assert_eq!(pushers(&s, &a).await.len(), 0);
    assert_eq!(pushers(&s, &b).await.len(), 1);

    // kind null deletes.
    let (st, _) = s
        .post(
            "/_matrix/client/v3/pushers/set",
            &b,
            json!({"kind": null, "app_id": "org.example.app", "pushkey": "key-1"}),
        )
        .await;
    assert_eq!(st, 200);
    assert!(pushers(&s, &b).await.is_empty());
}

#[tokio::test]
async fn pusher_validation() {
    let s = TestServer::start().await;
    let a = s.register("alice").await;
    let ok = "https://gw.example.org/_matrix/push/v1/notify";
    let mut long_app = pusher_body(ok);
    long_app["app_id"] = json!("a".repeat(65));
    let mut long_key = pusher_body(ok);
    long_key["pushkey"] = json!("k".repeat(513));
    let mut email = pusher_body(ok);
    email["kind"] = json!("email");
    let mut bogus = pusher_body(ok);
    bogus["kind"] = json!("carrier-pigeon");
    let mut no_lang = pusher_body(ok);
    no_lang.as_object_mut().expect("object").remove("lang");
    let mut no_url = pusher_body(ok);
    no_url["data"] = json!({"format": "event_id_only"});
    let cases = vec![
        (
            json!({"app_id": "x", "pushkey": "y"}),
            400,
            "M_MISSING_PARAM",
        ),
        (no_lang, 400, "M_MISSING_PARAM"),
        (no_url, 400, "M_MISSING_PARAM"),
        (
            pusher_body("https://gw.example.org/notify"),
            400,
            "M_INVALID_PARAM",
        ),
        // Plain http is refused unless the operator allows it.
        (
            pusher_body("http://gw.example.org/_matrix/push/v1/notify"),
            400,
            "M_INVALID_PARAM",
        ),
        (pusher_body("not a url"), 400, "M_INVALID_PARAM"),
        (long_app, 400, "M_INVALID_PARAM"),
        (long_key, 400, "M_INVALID_PARAM"),
        (email, 404, "M_UNRECOGNIZED"),
        (bogus, 400, "M_INVALID_PARAM"),
        (
            json!({"kind": 5, "app_id": "x", "pushkey": "y"}),
            400,
            "M_BAD_JSON",
        ),
    ];
    for (body, status, code) in cases {
        let (st, b) = s
            .post("/_matrix/client/v3/pushers/set", &a, body.clone())
            .await;
        assert_eq!(
            (st, b["errcode"].as_str()),
            (status, Some(code)),
            "{body}: {b}"
        );
    }
    assert!(pushers(&s, &a).await.is_empty());
}

#[tokio::test]
async fn delivery_is_content_free_and_carries_counts() {
    let gw = FakeGateway::start().await;
    let s = push_server().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = shared_room(&s, &a, &b).await;
    // The pusher asks for the full format: it still gets the content-free shape.
    let (st, body) = s
        .post(
            "/_matrix/client/v3/pushers/set",
            &b,
            json!({"kind": "http", "app_id": "org.example.app", "pushkey": "bobkey",
                   "app_display_name": "App", "device_display_name": "Phone", "lang": "de",
                   "data": {"url": gw.url, "custom": "kept"}}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let e1 = s.send_text(&a, &room, "streng geheim").await;
    let e2 = s.send_text(&a, &room, "auch geheim").await;
    let got = gw.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let n1 = &got[0].1["notification"];
    let n2 = &got[1].1["notification"];
    assert_eq!(n1["event_id"], e1);
    assert_eq!(n2["event_id"], e2);
    assert_eq!(n1["room_id"], room);
    // Counts are the current ones when a push leaves: the second message may already be
    // counted in the first push if both were evaluated before it was sent.
    let first = n1["counts"]["unread"].as_u64();
    assert!(matches!(first, Some(1 | 2)), "{n1}");
    assert_eq!(n2["counts"]["unread"], 2);
    let dev = &n1["devices"][0];
    assert_eq!(dev["app_id"], "org.example.app");
    assert_eq!(dev["pushkey"], "bobkey");
    assert!(dev["pushkey_ts"].is_u64());
    assert_eq!(dev["data"]["custom"], "kept");
    assert!(dev["data"].get("url").is_none());
    // A one-to-one room's default rule rings.
    assert_eq!(dev["tweaks"]["sound"], "default");
    assert_eq!(n1["prio"], "high");
    for (_, v) in &got {
        let text = v.to_string();
        assert!(!text.contains("geheim"), "content leaked: {text}");
        assert!(!text.contains(&a.user_id), "sender leaked: {text}");
        let keys: Vec<&String> = v["notification"]
            .as_object()
            .expect("object")
            .keys()
            .collect();
        for k in keys {
            assert!(
                ["event_id", "room_id", "counts", "prio", "devices"].contains(&k.as_str()),
                "unexpected field {k}"
            );
        }
    }
}

#[tokio::test]
async fn operator_may_allow_the_full_format_per_app_id() {
    let gw = FakeGateway::start().await;
    let s = TestServer::start_with(|c| {
        c.outbound.allow_ranges = vec!["127.0.0.0/8".parse().expect("range")];
        c.push.allow_http_gateways = true;
        c.push.full_format_app_ids = vec!["org.example.full".into()];
    })
    .await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = shared_room(&s, &a, &b).await;
    let (st, _) = s
        .post(
            "/_matrix/client/v3/pushers/set",
            &b,
            json!({"kind": "http", "app_id": "org.example.full", "pushkey": "k",
                   "app_display_name": "App", "device_display_name": "Phone", "lang": "de",
                   "data": {"url": gw.url}}),
        )
        .await;
    assert_eq!(st, 200);
    s.send_text(&a, &room, "Lagebericht").await;
    let got = gw.wait_for(1, WAIT).await;
    let n = &got.first().expect("a notification").1["notification"];
    assert_eq!(n["type"], "m.room.message");
    assert_eq!(n["sender"], a.user_id);
    assert_eq!(n["content"]["body"], "Lagebericht");
}

#[tokio::test]
async fn failed_deliveries_are_retried_in_order() {
    let gw = FakeGateway::start().await;
    gw.behaviour.fail_first.store(3, Ordering::SeqCst);
    let s = push_server().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = shared_room(&s, &a, &b).await;
    set_pusher(&s, &b, &gw.url, "org.example.app", "bobkey").await;
    let e1 = s.send_text(&a, &room, "eins").await;
    let e2 = s.send_text(&a, &room, "zwei").await;
    let got = gw.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1["notification"]["event_id"], e1);
    assert_eq!(got[1].1["notification"]["event_id"], e2);
    // Three failures, then one success each.
    assert_eq!(gw.attempts.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_rejected_pushkey_removes_the_pusher() {
    let gw = FakeGateway::start().await;
    gw.behaviour.reject.lock().await.push("dead".into());
    let s = push_server().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = shared_room(&s, &a, &b).await;
    set_pusher(&s, &b, &gw.url, "org.example.app", "dead").await;
    set_pusher(&s, &b, &gw.url, "org.example.app", "alive").await;
    s.send_text(&a, &room, "hallo").await;
    let gone = eventually(WAIT, || async {
        let list = pushers(&s, &b).await;
        (list.len() == 1).then_some(list)
    })
    .await
    .expect("the rejected pusher was not removed");
    assert_eq!(gone[0]["pushkey"], "alive");
    // The remaining pusher still gets what follows; the removed one nothing more.
    s.send_text(&a, &room, "noch da?").await;
    gw.wait_for(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = gw.wait_for(3, WAIT).await;
    let keys: Vec<&str> = got
        .iter()
        .filter_map(|(_, v)| v["notification"]["devices"][0]["pushkey"].as_str())
        .collect();
    assert_eq!(keys.iter().filter(|k| **k == "dead").count(), 1);
    assert_eq!(keys.iter().filter(|k| **k == "alive").count(), 2);
}

#[tokio::test]
async fn gateways_on_internal_addresses_need_an_allowed_range() {
    let gw = FakeGateway::start().await;
    let s = TestServer::start_with(|c| {
        c.push.allow_http_gateways = true;
        c.push.initial_backoff_ms = 10;
    })
    .await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = shared_room(&s, &a, &b).await;
    set_pusher(&s, &b, &gw.url, "org.example.app", "k").await;
    s.send_text(&a, &room, "hallo").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gw.attempts.load(Ordering::SeqCst), 0);
}

/// In a room with more recipients than an event's write stores in place, the rows wait and are
/// moved afterwards: counts still come with the event, and /notifications and the pusher see the
/// notification once moved.
#[tokio::test]
async fn a_large_room_counts_at_once_and_pushes_after_the_move() {
    let s = push_server().await;
    let gw = FakeGateway::start().await;
    let a = s.register("alice").await;
    let room = s
        .create_room(&a, json!({"preset": "public_chat", "name": "Kompanie"}))
        .await;
    let mut members = Vec::new();
    for i in 0..40 {
        let u = s.register(&format!("soldat{i}")).await;
        s.join(&u, &room).await;
        members.push(u);
    }
    let b = &members[0];
    set_pusher(&s, b, &gw.url, "org.example.app", "key-large").await;
    let poll = push_common::parked_sync(&s, b).await;
    let event = s.send_text(&a, &room, "Antreten um acht").await;
    let body = poll.await.expect("poll");
    assert_eq!(
        common::timeline_bodies(&body, &room),
        vec!["Antreten um acht"],
        "{body}"
    );
    assert_eq!(
        body["rooms"]["join"][&room]["unread_notifications"]["notification_count"], 1,
        "{body}"
    );
    // Every member's count, from a fresh (database) count too.
    for u in &members {
        assert_eq!(
            push_common::counts(&s, u, &room).await.0,
            1,
            "{}",
            u.user_id
        );
    }
    let listed = eventually(WAIT, || async {
        let (_, n) = s.get("/_matrix/client/v3/notifications", b).await;
        n["notifications"]
            .as_array()
            .and_then(|a| a.first())
            .filter(|first| first["event"]["event_id"] == event.as_str())
            .map(|_| ())
    })
    .await;
    assert!(listed.is_some(), "the notification never listed");
    let pushed = gw.wait_for(1, WAIT).await;
    assert!(
        pushed
            .iter()
            .any(|(_, p)| p["notification"]["event_id"] == event.as_str()),
        "{pushed:?}"
    );
}

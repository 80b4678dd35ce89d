//! Push rules, unread counts and /notifications.

mod common;
mod push_common;

use std::time::Duration;

use common::{TestServer, User, enc, timeline_bodies};
use push_common::{counts, eventually, read_receipt, shared_room};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(5);

fn rule_ids(set: &Value) -> Vec<String> {
    set.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["rule_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn send(s: &TestServer, u: &User, room: &str, content: Value) -> String {
    let (st, b) = s
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
                enc(room),
                rand_txn()
            ),
            u,
            content,
        )
        .await;
    assert_eq!(st, 200, "{b}");
    b["event_id"].as_str().expect("event_id").to_owned()
}

fn rand_txn() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("p{}", N.fetch_add(1, Ordering::SeqCst))
}

async fn wait_counts(s: &TestServer, u: &User, room: &str, want: (u64, u64)) -> (u64, u64) {
    eventually(WAIT, || async {
        let c = counts(s, u, room).await;
        (c == want).then_some(c)
    })
    .await
    .unwrap_or(counts(s, u, room).await)
}

#[tokio::test]
async fn default_rules_are_served_and_synced() {
    let s = TestServer::start().await;
    let a = s.register("alice").await;
    let (st, all) = s.get("/_matrix/client/v3/pushrules/", &a).await;
    assert_eq!(st, 200, "{all}");
    let over = rule_ids(&all["global"]["override"]);
    assert_eq!(over[0], ".m.rule.master");
    for id in [
        ".m.rule.suppress_notices",
        ".m.rule.invite_for_me",
        ".m.rule.member_event",
        ".m.rule.is_user_mention",
        ".m.rule.is_room_mention",
        ".m.rule.tombstone",
        ".m.rule.reaction",
    ] {
        assert!(over.iter().any(|r| r == id), "{id} missing in {over:?}");
    }
    let under = rule_ids(&all["global"]["underride"]);
    for id in [
        ".m.rule.call",
        ".m.rule.encrypted_room_one_to_one",
        ".m.rule.room_one_to_one",
        ".m.rule.message",
        ".m.rule.encrypted",
        ".org.matrix.msc3930.rule.poll_start",
        ".org.matrix.msc3930.rule.poll_end",
        ".org.matrix.msc3930.rule.poll_start_one_to_one",
    ] {
        assert!(under.iter().any(|r| r == id), "{id} missing in {under:?}");
    }
    let (st, global) = s.get("/_matrix/client/v3/pushrules/global/", &a).await;
    assert_eq!(st, 200);
    assert_eq!(global, all["global"]);

    // The rules arrive in the initial sync's account data, as the spec asks.
    let sync = s.sync(&a, None, 0).await;
    let ev = sync["account_data"]["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["type"] == "m.push_rules"))
        .cloned()
        .expect("m.push_rules in sync");
    assert_eq!(ev["content"]["global"], all["global"]);

    // The account data endpoint refuses to write them.
    let (st, b) = s
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/account_data/m.push_rules",
                enc(&a.user_id)
            ),
            &a,
            json!({"global": {}}),
        )
        .await;
    assert_eq!(st, 405, "{b}");
    assert_eq!(b["errcode"], "M_BAD_JSON");
}

#[tokio::test]
async fn rules_can_be_added_moved_changed_and_removed() {
    let s = TestServer::start().await;
    let a = s.register("alice").await;
    let base = "/_matrix/client/v3/pushrules/global";
    let rule = json!({"actions": ["notify"], "conditions": [
        {"kind": "event_match", "key": "content.body", "pattern": "alarm"}]});
    for id in ["a", "b", "c"] {
        let q = match id {
            "b" => "?before=a",
            "c" => "?after=a",
            _ => "",
        };
        let (st, b) = s
            .put(&format!("{base}/override/{id}{q}"), &a, rule.clone())
            .await;
        assert_eq!(st, 200, "{id}: {b}");
    }
    let (_, all) = s.get("/_matrix/client/v3/pushrules/", &a).await;
    let over = rule_ids(&all["global"]["override"]);
    assert_eq!(&over[..4], &[".m.rule.master", "b", "a", "c"]);
    // Moving an existing rule below the last user rule.
    let (st, b) = s
        .put(&format!("{base}/override/b?after=c"), &a, rule.clone())
        .await;
    assert_eq!(st, 200, "{b}");
    let (_, all) = s.get("/_matrix/client/v3/pushrules/", &a).await;
    assert_eq!(
        &rule_ids(&all["global"]["override"])[..4],
        &[".m.rule.master", "a", "c", "b"]
    );

    let (st, one) = s.get(&format!("{base}/override/a"), &a).await;
    assert_eq!(st, 200);
    assert_eq!(one["rule_id"], "a");
    assert_eq!(one["enabled"], true);
    assert_eq!(one["default"], false);
    assert_eq!(one["conditions"][0]["pattern"], "alarm");

    let (st, _) = s
        .put(
            &format!("{base}/override/a/enabled"),
            &a,
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(st, 200);
    let (_, en) = s.get(&format!("{base}/override/a/enabled"), &a).await;
    assert_eq!(en, json!({"enabled": false}));
    // Updating a rule keeps it disabled.
    s.put(&format!("{base}/override/a"), &a, rule.clone()).await;
    let (_, en) = s.get(&format!("{base}/override/a/enabled"), &a).await;
    assert_eq!(en, json!({"enabled": false}));

    let actions = json!({"actions": ["notify", {"set_tweak": "sound", "value": "default"}]});
    let (st, _) = s
        .put(&format!("{base}/override/a/actions"), &a, actions.clone())
        .await;
    assert_eq!(st, 200);
    let (_, got) = s.get(&format!("{base}/override/a/actions"), &a).await;
    assert_eq!(got, actions);

    // Server-default rules can be switched and changed, not removed.
    let (st, _) = s
        .put(
            &format!("{base}/override/.m.rule.master/enabled"),
            &a,
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(st, 200);
    let (_, en) = s
        .get(&format!("{base}/override/.m.rule.master/enabled"), &a)
        .await;
    assert_eq!(en["enabled"], true);
    let (st, b) = s
        .request(
            "DELETE",
            &format!("{base}/override/.m.rule.master"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(st, 400, "{b}");

    // Content, room and sender rules.
    let (st, b) = s
        .put(
            &format!("{base}/content/cake"),
            &a,
            json!({"actions": ["notify"]}),
        )
        .await;
    assert_eq!((st, b["errcode"].as_str()), (400, Some("M_MISSING_PARAM")));
    let (st, _) = s
        .put(
            &format!("{base}/content/cake"),
            &a,
            json!({"actions": ["notify"], "pattern": "cake*lie"}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = s
        .put(
            &format!("{base}/sender/{}", enc("@bob:localhost")),
            &a,
            json!({"actions": []}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = s
        .put(
            &format!("{base}/sender/not-a-user"),
            &a,
            json!({"actions": []}),
        )
        .await;
    assert_eq!(st, 400);

    // Errors.
    for (path, body, status, code) in [
        (
            format!("{base}/override/.mine"),
            rule.clone(),
            400,
            "M_INVALID_PARAM",
        ),
        (
            format!("{base}/override/x?before=.m.rule.master"),
            rule.clone(),
            400,
            "M_INVALID_PARAM",
        ),
        (
            format!("{base}/override/x?after=nope"),
            rule.clone(),
            404,
            "M_NOT_FOUND",
        ),
        (
            format!("{base}/bogus/x"),
            rule.clone(),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "/_matrix/client/v3/pushrules/device/override/x".to_owned(),
            rule.clone(),
            400,
            "M_INVALID_PARAM",
        ),
        (
            format!("{base}/override/x"),
            json!({"conditions": []}),
            400,
            "M_MISSING_PARAM",
        ),
        (
            format!("{base}/override/x"),
            json!({"actions": "notify"}),
            400,
            "M_BAD_JSON",
        ),
    ] {
        let (st, b) = s.put(&path, &a, body).await;
        assert_eq!(
            (st, b["errcode"].as_str()),
            (status, Some(code)),
            "{path}: {b}"
        );
    }
    let (st, b) = s.get(&format!("{base}/override/nope"), &a).await;
    assert_eq!((st, b["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
    let (st, b) = s
        .put(
            &format!("{base}/override/nope/enabled"),
            &a,
            json!({"enabled": true}),
        )
        .await;
    assert_eq!((st, b["errcode"].as_str()), (404, Some("M_NOT_FOUND")));

    let (st, _) = s
        .request(
            "DELETE",
            &format!("{base}/override/a"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = s.get(&format!("{base}/override/a"), &a).await;
    assert_eq!(st, 404);
    let (st, _) = s
        .request(
            "DELETE",
            &format!("{base}/override/a"),
            Some(&a.token),
            None,
        )
        .await;
    assert_eq!(st, 404);

    // A change shows up in sync as account data.
    let sync = s.sync(&a, None, 0).await;
    let ev = sync["account_data"]["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["type"] == "m.push_rules"))
        .cloned()
        .expect("m.push_rules");
    assert_eq!(
        &rule_ids(&ev["content"]["global"]["override"])[..3],
        &[".m.rule.master", "c", "b"]
    );
}

#[tokio::test]
async fn counts_rise_with_messages_and_fall_with_receipts() {
    let s = TestServer::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = shared_room(&s, &a, &b).await;
    let first = s.send_text(&a, &room, "eins").await;
    let _second = s.send_text(&a, &room, "zwei").await;
    assert_eq!(wait_counts(&s, &b, &room, (2, 0)).await, (2, 0));
    // The sender's own messages do not count for them.
    assert_eq!(counts(&s, &a, &room).await, (0, 0));
    let mention = send(
        &s,
        &a,
        &room,
        json!({"msgtype": "m.text", "body": "bob, bitte melden",
               "m.mentions": {"user_ids": [b.user_id]}}),
    )
    .await;
    assert_eq!(wait_counts(&s, &b, &room, (3, 1)).await, (3, 1));

    // A receipt on the first message leaves the two after it.
    read_receipt(&s, &b, &room, &first, None).await;
    assert_eq!(counts(&s, &b, &room).await, (2, 1));
    read_receipt(&s, &b, &room, &mention, None).await;
    assert_eq!(counts(&s, &b, &room).await, (0, 0));

    // A long poll parked before a message returns the message and the count it raises in one
    // response: the notification is stored with the event.
    let poll = push_common::parked_sync(&s, &b).await;
    s.send_text(&a, &room, "drei").await;
    let body = poll.await.expect("poll");
    let joined = &body["rooms"]["join"][&room];
    assert_eq!(timeline_bodies(&body, &room), vec!["drei"], "{body}");
    assert_eq!(
        joined["unread_notifications"]["notification_count"], 1,
        "{body}"
    );

    // Muting the room with a room rule stops the counting.
    let (st, _) = s
        .put(
            &format!("/_matrix/client/v3/pushrules/global/room/{}", enc(&room)),
            &b,
            json!({"actions": []}),
        )
        .await;
    assert_eq!(st, 200);
    s.send_text(&a, &room, "vier").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(counts(&s, &b, &room).await, (1, 0));
}

async fn threaded(s: &TestServer, b: &User, room: &str) -> Value {
    let filter = enc(r#"{"room":{"timeline":{"unread_thread_notifications":true}}}"#);
    let path = format!("/_matrix/client/v3/sync?timeout=0&filter={filter}");
    let (_, body) = s.get(&path, b).await;
    body["rooms"]["join"][room].clone()
}

#[tokio::test]
async fn thread_counts_and_threaded_receipts() {
    let s = TestServer::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = shared_room(&s, &a, &b).await;
    let root = s.send_text(&a, &room, "Lage?").await;
    let reply = send(
        &s,
        &a,
        &room,
        json!({"msgtype": "m.text", "body": "ruhig",
               "m.relates_to": {"rel_type": "m.thread", "event_id": root}}),
    )
    .await;
    assert_eq!(wait_counts(&s, &b, &room, (2, 0)).await, (2, 0));
    let r = threaded(&s, &b, &room).await;
    assert_eq!(r["unread_notifications"]["notification_count"], 1);
    assert_eq!(
        r["unread_thread_notifications"][&root]["notification_count"],
        1
    );
    // A threaded receipt clears its thread only.
    read_receipt(&s, &b, &room, &reply, Some(&root)).await;
    let r = threaded(&s, &b, &room).await;
    assert_eq!(r["unread_notifications"]["notification_count"], 1);
    assert!(
        r["unread_thread_notifications"]
            .as_object()
            .is_none_or(|m| !m.contains_key(&root))
    );
    read_receipt(&s, &b, &room, &root, Some("main")).await;
    let r = threaded(&s, &b, &room).await;
    assert_eq!(r["unread_notifications"]["notification_count"], 0);
}

#[tokio::test]
async fn notifications_paginate_and_filter_highlights() {
    let s = TestServer::start().await;
    let a = s.register("alice").await;
    let b = s.register("bob").await;
    let room = shared_room(&s, &a, &b).await;
    s.send_text(&a, &room, "eins").await;
    let hl = send(
        &s,
        &a,
        &room,
        json!({"msgtype": "m.text", "body": "bob!", "m.mentions": {"user_ids": [b.user_id]}}),
    )
    .await;
    let last = s.send_text(&a, &room, "drei").await;
    wait_counts(&s, &b, &room, (3, 1)).await;

    let (st, page) = s.get("/_matrix/client/v3/notifications?limit=3", &b).await;
    assert_eq!(st, 200, "{page}");
    let items = page["notifications"].as_array().expect("array");
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["event"]["event_id"], last);
    assert_eq!(items[0]["room_id"], room);
    assert_eq!(items[0]["read"], false);
    assert!(items[0]["ts"].is_u64());
    assert!(items[0]["actions"].is_array());
    assert!(items[0]["event"].get("room_id").is_none());
    let next = page["next_token"].as_str().expect("next_token").to_owned();
    let (_, page2) = s
        .get(
            &format!("/_matrix/client/v3/notifications?limit=3&from={next}"),
            &b,
        )
        .await;
    let items2 = page2["notifications"].as_array().expect("array");
    // The invite that brought bob in notified him too.
    assert_eq!(items2.len(), 1);
    assert_eq!(items2[0]["event"]["type"], "m.room.member");
    assert!(page2.get("next_token").is_none());

    let (_, only) = s
        .get("/_matrix/client/v3/notifications?only=highlight", &b)
        .await;
    let only = only["notifications"].as_array().expect("array");
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["event"]["event_id"], hl);

    read_receipt(&s, &b, &room, &last, None).await;
    let (_, page) = s.get("/_matrix/client/v3/notifications", &b).await;
    assert!(
        page["notifications"]
            .as_array()
            .expect("array")
            .iter()
            .filter(|n| n["event"]["type"] == "m.room.message")
            .all(|n| n["read"] == true)
    );
    let (st, body) = s.get("/_matrix/client/v3/notifications?from=abc", &b).await;
    assert_eq!(
        (st, body["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM"))
    );
    let (st, _) = s
        .get("/_matrix/client/v3/notifications?only=everything", &b)
        .await;
    assert_eq!(st, 400);
}

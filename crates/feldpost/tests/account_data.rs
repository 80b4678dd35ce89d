//! Account data (global and per room) and room tags: storage, sync delivery, authorization and
//! input checks.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn global(user: &User, kind: &str) -> String {
    format!(
        "/_matrix/client/v3/user/{}/account_data/{}",
        enc(&user.user_id),
        enc(kind)
    )
}

fn per_room(user: &User, room: &str, kind: &str) -> String {
    format!(
        "/_matrix/client/v3/user/{}/rooms/{}/account_data/{}",
        enc(&user.user_id),
        enc(room),
        enc(kind)
    )
}

fn tags(user: &User, room: &str) -> String {
    format!(
        "/_matrix/client/v3/user/{}/rooms/{}/tags",
        enc(&user.user_id),
        enc(room)
    )
}

fn tag(user: &User, room: &str, tag: &str) -> String {
    format!("{}/{}", tags(user, room), enc(tag))
}

/// A sync long-poll running in the background.
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

fn events_of<'a>(section: &'a Value, kind: &str) -> Vec<&'a Value> {
    section["events"]
        .as_array()
        .map(|a| a.iter().filter(|e| e["type"] == kind).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn global_account_data_round_trip_and_sync() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let (s, b) = srv.get(&global(&alice, "org.example.config"), &alice).await;
    assert_eq!((s, b["errcode"].as_str()), (404, Some("M_NOT_FOUND")));

    let since = srv.sync(&alice, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let waiter = spawn_sync(&srv, &alice, &since, 10_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (s, b) = srv
        .put(
            &global(&alice, "org.example.config"),
            &alice,
            json!({"theme": "dark"}),
        )
        .await;
    assert_eq!((s, &b), (200, &json!({})));
    let sync = waiter.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "long-poll was not woken"
    );
    let ev = events_of(&sync["account_data"], "org.example.config");
    assert_eq!(ev.len(), 1, "{sync}");
    assert_eq!(ev[0]["content"], json!({"theme": "dark"}));

    // A second write replaces the content.
    srv.put(
        &global(&alice, "org.example.config"),
        &alice,
        json!({"theme": "light"}),
    )
    .await;
    let (s, b) = srv.get(&global(&alice, "org.example.config"), &alice).await;
    assert_eq!((s, b), (200, json!({"theme": "light"})));
    // An initial sync carries the current content once.
    let sync = srv.sync(&alice, None, 0).await;
    let ev = events_of(&sync["account_data"], "org.example.config");
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["content"], json!({"theme": "light"}));
}

#[tokio::test]
async fn room_account_data_round_trip_and_sync() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let room = srv.create_room(&alice, json!({})).await;
    let since = srv.sync(&alice, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = per_room(&alice, &room, "org.example.room");
    let (s, b) = srv.get(&path, &alice).await;
    assert_eq!((s, b["errcode"].as_str()), (404, Some("M_NOT_FOUND")));

    let waiter = spawn_sync(&srv, &alice, &since, 10_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (s, _) = srv.put(&path, &alice, json!({"pinned": true})).await;
    assert_eq!(s, 200);
    let sync = waiter.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "long-poll was not woken"
    );
    let ev = events_of(
        &sync["rooms"]["join"][&room]["account_data"],
        "org.example.room",
    );
    assert_eq!(ev.len(), 1, "{sync}");
    assert_eq!(ev[0]["content"], json!({"pinned": true}));
    // Room account data is not global account data, and the reverse.
    assert!(events_of(&sync["account_data"], "org.example.room").is_empty());
    let (s, _) = srv.get(&global(&alice, "org.example.room"), &alice).await;
    assert_eq!(s, 404);
    let (s, b) = srv.get(&path, &alice).await;
    assert_eq!((s, b), (200, json!({"pinned": true})));
}

#[tokio::test]
async fn nobody_touches_another_users_account_data() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let room = srv
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    srv.join(&bob, &room).await;
    srv.put(
        &global(&alice, "org.example.secret"),
        &alice,
        json!({"k": 1}),
    )
    .await;
    srv.put(
        &per_room(&alice, &room, "org.example.secret"),
        &alice,
        json!({"k": 1}),
    )
    .await;
    srv.put(&tag(&alice, &room, "u.work"), &alice, json!({}))
        .await;

    for path in [
        global(&alice, "org.example.secret"),
        per_room(&alice, &room, "org.example.secret"),
        tags(&alice, &room),
    ] {
        let (s, b) = srv.get(&path, &bob).await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (403, Some("M_FORBIDDEN")),
            "{path}"
        );
    }
    for path in [
        global(&alice, "org.example.secret"),
        per_room(&alice, &room, "org.example.secret"),
        tag(&alice, &room, "u.work"),
    ] {
        let (s, b) = srv.put(&path, &bob, json!({"k": 2})).await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (403, Some("M_FORBIDDEN")),
            "{path}"
        );
    }
    let (s, _) = srv
        .request(
            "DELETE",
            &tag(&alice, &room, "u.work"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(s, 403);
    // Bob's syncs show none of it.
    let sync = srv.sync(&bob, None, 0).await;
    assert!(events_of(&sync["account_data"], "org.example.secret").is_empty());
    assert!(
        events_of(
            &sync["rooms"]["join"][&room]["account_data"],
            "org.example.secret"
        )
        .is_empty()
    );
    assert!(events_of(&sync["rooms"]["join"][&room]["account_data"], "m.tag").is_empty());
    let (_, b) = srv.get(&global(&alice, "org.example.secret"), &alice).await;
    assert_eq!(b, json!({"k": 1}));
}

#[tokio::test]
async fn server_managed_types_and_bad_input() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let room = srv.create_room(&alice, json!({})).await;
    for kind in ["m.fully_read", "m.push_rules"] {
        for path in [global(&alice, kind), per_room(&alice, &room, kind)] {
            let (s, b) = srv.put(&path, &alice, json!({"event_id": "$x"})).await;
            assert_eq!(
                (s, b["errcode"].as_str()),
                (405, Some("M_BAD_JSON")),
                "{path}"
            );
        }
    }
    let path = global(&alice, "org.example.x");
    let (s, b) = srv.put(&path, &alice, json!(["not", "an", "object"])).await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_BAD_JSON")));
    let (s, b) = srv.raw("PUT", &path, Some(&alice.token), b"{oops").await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_NOT_JSON")));
    let (s, b) = srv
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/not-a-room/account_data/x",
                enc(&alice.user_id)
            ),
            &alice,
            json!({}),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
    let (s, b) = srv
        .get("/_matrix/client/v3/user/nobody/account_data/x", &alice)
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
    let (s, b) = srv
        .put(&global(&alice, &"x".repeat(300)), &alice, json!({}))
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_INVALID_PARAM")));
    let (s, b) = srv.request("PUT", &path, None, Some(json!({}))).await;
    assert_eq!((s, b["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")));
}

#[tokio::test]
async fn tags_round_trip_and_sync() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let room = srv.create_room(&alice, json!({})).await;
    let (s, b) = srv.get(&tags(&alice, &room), &alice).await;
    assert_eq!((s, b), (200, json!({"tags": {}})));

    let since = srv.sync(&alice, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let waiter = spawn_sync(&srv, &alice, &since, 10_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (s, b) = srv
        .put(
            &tag(&alice, &room, "m.favourite"),
            &alice,
            json!({"order": 0.25}),
        )
        .await;
    assert_eq!((s, &b), (200, &json!({})), "{b}");
    let sync = waiter.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "long-poll was not woken"
    );
    let ev = events_of(&sync["rooms"]["join"][&room]["account_data"], "m.tag");
    assert_eq!(ev.len(), 1, "{sync}");
    assert_eq!(
        ev[0]["content"],
        json!({"tags": {"m.favourite": {"order": 0.25}}})
    );

    srv.put(&tag(&alice, &room, "u.work"), &alice, json!({}))
        .await;
    srv.put(&tag(&alice, &room, "u.edge"), &alice, json!({"order": 1}))
        .await;
    let (_, b) = srv.get(&tags(&alice, &room), &alice).await;
    assert_eq!(
        b,
        json!({"tags": {"m.favourite": {"order": 0.25}, "u.work": {}, "u.edge": {"order": 1}}})
    );
    // The tags are the room's m.tag account data.
    let (_, b) = srv.get(&per_room(&alice, &room, "m.tag"), &alice).await;
    assert_eq!(b["tags"]["u.work"], json!({}));

    let since = srv.sync(&alice, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, _) = srv
        .request(
            "DELETE",
            &tag(&alice, &room, "m.favourite"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(s, 200);
    // Deleting a tag that is not there is fine.
    let (s, _) = srv
        .request(
            "DELETE",
            &tag(&alice, &room, "u.never"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let sync = srv.sync(&alice, Some(&since), 0).await;
    let ev = events_of(&sync["rooms"]["join"][&room]["account_data"], "m.tag");
    assert_eq!(ev.len(), 1, "{sync}");
    assert_eq!(
        ev[0]["content"],
        json!({"tags": {"u.work": {}, "u.edge": {"order": 1}}})
    );
}

#[tokio::test]
async fn tag_validation() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let room = srv.create_room(&alice, json!({})).await;
    let cases = [
        (
            tag(&alice, &room, "u.a"),
            json!({"order": "0.5"}),
            "M_BAD_JSON",
        ),
        (
            tag(&alice, &room, "u.a"),
            json!({"order": 1.5}),
            "M_INVALID_PARAM",
        ),
        (
            tag(&alice, &room, "u.a"),
            json!({"order": -0.1}),
            "M_INVALID_PARAM",
        ),
        (tag(&alice, &room, "u.a"), json!([1]), "M_BAD_JSON"),
        (
            tag(&alice, &room, &"t".repeat(256)),
            json!({}),
            "M_INVALID_PARAM",
        ),
        (
            format!(
                "/_matrix/client/v3/user/{}/rooms/bad/tags/u.a",
                enc(&alice.user_id)
            ),
            json!({}),
            "M_INVALID_PARAM",
        ),
    ];
    for (path, body, errcode) in cases {
        let (s, b) = srv.put(&path, &alice, body.clone()).await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (400, Some(errcode)),
            "{body}: {b}"
        );
    }
    let (_, b) = srv.get(&tags(&alice, &room), &alice).await;
    assert_eq!(b, json!({"tags": {}}));
}

#[tokio::test]
async fn concurrent_tag_writes_all_survive() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let room = srv.create_room(&alice, json!({})).await;
    let puts: Vec<_> = (0..8)
        .map(|i| {
            let url = srv.url(&tag(&alice, &room, &format!("u.t{i}")));
            let token = alice.token.clone();
            tokio::spawn(async move {
                let r = reqwest::Client::new()
                    .put(url)
                    .bearer_auth(token)
                    .json(&json!({}))
                    .send()
                    .await;
                r.unwrap().status().as_u16()
            })
        })
        .collect();
    for p in puts {
        assert_eq!(p.await.unwrap(), 200);
    }
    let (_, b) = srv.get(&tags(&alice, &room), &alice).await;
    assert_eq!(b["tags"].as_object().unwrap().len(), 8, "{b}");
}

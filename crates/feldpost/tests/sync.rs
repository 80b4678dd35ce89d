//! /sync: initial and incremental, long-polling, filters, lazy-loaded members, full_state, and
//! the join/invite/leave sections; /messages pagination and history visibility.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn timeline(sync: &Value, room: &str) -> Vec<Value> {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn initial_sync_has_state_and_a_limited_timeline() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let room = srv.create_room(&alice, json!({"name": "Lage"})).await;
    for i in 0..15 {
        srv.send_text(&alice, &room, &format!("m{i}")).await;
    }
    let s = srv.sync(&alice, None, 0).await;
    let r = &s["rooms"]["join"][&room];
    assert_eq!(r["timeline"]["limited"], true);
    assert_eq!(
        timeline_bodies(&s, &room),
        (5..15).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    let state = r["state"]["events"].as_array().unwrap();
    for kind in [
        "m.room.create",
        "m.room.power_levels",
        "m.room.name",
        "m.room.member",
    ] {
        assert!(
            state.iter().any(|e| e["type"] == kind),
            "state lacks {kind}"
        );
    }
    assert!(r["timeline"]["prev_batch"].is_string());
    assert_eq!(r["summary"]["m.joined_member_count"], 1);
    // prev_batch continues backwards from the timeline without overlap.
    let (_, m) = srv
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=3&from={}",
                enc(&room),
                r["timeline"]["prev_batch"].as_str().unwrap()
            ),
            &alice,
        )
        .await;
    let bodies: Vec<&str> = m["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, vec!["m4", "m3", "m2"]);
}

#[tokio::test]
async fn incremental_sync_and_long_poll() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let room = srv.create_room(&alice, json!({})).await;
    let first = srv.sync(&alice, None, 0).await;
    let since = first["next_batch"].as_str().unwrap().to_owned();
    // Nothing new: the long poll waits for its timeout and returns an empty response.
    let t = Instant::now();
    let empty = srv.sync(&alice, Some(&since), 300).await;
    assert!(t.elapsed() >= Duration::from_millis(250));
    assert!(
        empty["rooms"]["join"].as_object().unwrap().is_empty(),
        "{empty}"
    );
    assert_eq!(empty["next_batch"], since);
    // A message wakes a parked sync long before its timeout.
    let (base, token, since2) = (srv.base.clone(), alice.token.clone(), since.clone());
    let waiter = tokio::spawn(async move {
        let t = Instant::now();
        let r = reqwest::Client::new()
            .get(format!(
                "{base}/_matrix/client/v3/sync?timeout=30000&since={since2}"
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (t.elapsed(), r.json::<Value>().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    srv.send_text(&alice, &room, "wake up").await;
    let (elapsed, s) = waiter.await.unwrap();
    assert!(
        elapsed < Duration::from_secs(10),
        "woken by the event, not the timeout"
    );
    assert_eq!(timeline_bodies(&s, &room), vec!["wake up"]);
    assert_eq!(s["rooms"]["join"][&room]["timeline"]["limited"], false);
    let next = s["next_batch"].as_str().unwrap();
    // The event is not repeated.
    let again = srv.sync(&alice, Some(next), 0).await;
    assert!(timeline(&again, &room).is_empty());
}

#[tokio::test]
async fn a_gap_is_marked_limited_with_the_changed_state() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let room = srv.create_room(&alice, json!({"name": "old"})).await;
    let since = srv.sync(&alice, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, _) = srv
        .put(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room)),
            &alice,
            json!({"name": "new"}),
        )
        .await;
    assert_eq!(s, 200);
    for i in 0..12 {
        srv.send_text(&alice, &room, &format!("m{i}")).await;
    }
    let s = srv.sync(&alice, Some(&since), 0).await;
    let r = &s["rooms"]["join"][&room];
    assert_eq!(r["timeline"]["limited"], true);
    let state = r["state"]["events"].as_array().unwrap();
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "new"),
        "{state:?}"
    );
    assert!(
        !state.iter().any(|e| e["type"] == "m.room.create"),
        "unchanged state is not repeated"
    );
}

#[tokio::test]
async fn filters_limit_types_senders_and_lazy_members() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let carol = srv.register("carol").await;
    let room = srv
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    srv.join(&bob, &room).await;
    srv.join(&carol, &room).await;
    for i in 0..3 {
        srv.send_text(&bob, &room, &format!("b{i}")).await;
    }
    let filter = json!({"room": {"timeline": {"limit": 2, "types": ["m.room.message"]}, "state": {"lazy_load_members": true}}});
    let (s, f) = srv
        .post(
            &format!("/_matrix/client/v3/user/{}/filter", enc(&alice.user_id)),
            &alice,
            filter.clone(),
        )
        .await;
    assert_eq!(s, 200);
    let id = f["filter_id"].as_str().unwrap();
    let (s, stored) = srv
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/filter/{id}",
                enc(&alice.user_id)
            ),
            &alice,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(stored["room"]["timeline"]["limit"], 2);
    let (s, _) = srv
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/filter/{id}",
                enc(&alice.user_id)
            ),
            &bob,
        )
        .await;
    assert_eq!(s, 403, "filters are private");
    let (_, sync) = srv
        .get(&format!("/_matrix/client/v3/sync?filter={id}"), &alice)
        .await;
    assert_eq!(timeline_bodies(&sync, &room), vec!["b1", "b2"]);
    let members: Vec<String> = sync["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap().to_owned())
        .collect();
    assert!(members.contains(&bob.user_id) && members.contains(&alice.user_id));
    assert!(
        !members.contains(&carol.user_id),
        "carol sent nothing in the timeline"
    );
    // Inline filter with not_senders.
    let inline = json!({"room": {"timeline": {"not_senders": [bob.user_id]}}}).to_string();
    let (_, sync) = srv
        .get(
            &format!("/_matrix/client/v3/sync?filter={}", enc(&inline)),
            &alice,
        )
        .await;
    assert!(
        timeline(&sync, &room)
            .iter()
            .all(|e| e["sender"] != bob.user_id.as_str())
    );
}

#[tokio::test]
async fn invite_and_leave_sections() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let room = srv.create_room(&alice, json!({"name": "Geheim"})).await;
    let since = srv.sync(&bob, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, _) = srv
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            &alice,
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(s, 200);
    let s = srv.sync(&bob, Some(&since), 5000).await;
    let invite = s["rooms"]["invite"][&room]["invite_state"]["events"]
        .as_array()
        .expect("invite section")
        .clone();
    assert!(
        invite
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Geheim")
    );
    assert!(
        invite
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
    );
    srv.join(&bob, &room).await;
    let since = srv.sync(&bob, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, _) = srv
        .post(
            &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room)),
            &alice,
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(s, 200);
    srv.send_text(&alice, &room, "after the kick").await;
    let s = srv.sync(&bob, Some(&since), 5000).await;
    let left = &s["rooms"]["leave"][&room];
    let events = left["timeline"]["events"]
        .as_array()
        .expect("leave section");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "leave")
    );
    assert!(
        events
            .iter()
            .all(|e| e["content"]["body"] != "after the kick"),
        "nothing after leaving"
    );
    assert!(s["rooms"]["join"].get(&room).is_none());
    // Initial syncs leave out left rooms unless asked.
    let s = srv.sync(&bob, None, 0).await;
    assert!(s["rooms"]["leave"].get(&room).is_none());
    let inc = json!({"room": {"include_leave": true}}).to_string();
    let (_, s) = srv
        .get(
            &format!("/_matrix/client/v3/sync?filter={}", enc(&inc)),
            &bob,
        )
        .await;
    assert!(s["rooms"]["leave"].get(&room).is_some());
}

#[tokio::test]
async fn full_state_repeats_the_state() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let room = srv.create_room(&alice, json!({})).await;
    let since = srv.sync(&alice, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, s) = srv
        .get(
            &format!("/_matrix/client/v3/sync?since={since}&full_state=true"),
            &alice,
        )
        .await;
    let state = s["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap();
    assert!(state.iter().any(|e| e["type"] == "m.room.create"));
}

#[tokio::test]
async fn messages_paginate_both_ways_with_filters() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let room = srv.create_room(&alice, json!({})).await;
    for i in 0..10 {
        srv.send_text(&alice, &room, &format!("m{i}")).await;
    }
    let path = |q: &str| format!("/_matrix/client/v3/rooms/{}/messages?{q}", enc(&room));
    let bodies = |v: &Value| -> Vec<String> {
        v["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect()
    };
    let (s, p1) = srv.get(&path("dir=b&limit=4"), &alice).await;
    assert_eq!(s, 200);
    assert_eq!(bodies(&p1), vec!["m9", "m8", "m7", "m6"]);
    let (_, p2) = srv
        .get(
            &path(&format!(
                "dir=b&limit=4&from={}",
                p1["end"].as_str().unwrap()
            )),
            &alice,
        )
        .await;
    assert_eq!(bodies(&p2), vec!["m5", "m4", "m3", "m2"]);
    // Forwards from the end of page two returns to where page one ended.
    let (_, f) = srv
        .get(
            &path(&format!(
                "dir=f&limit=3&from={}",
                p2["end"].as_str().unwrap()
            )),
            &alice,
        )
        .await;
    assert_eq!(bodies(&f), vec!["m2", "m3", "m4"]);
    // Backwards to the start: the last page has no `end`.
    let (_, all) = srv.get(&path("dir=b&limit=100"), &alice).await;
    assert!(all.get("end").is_none(), "{all}");
    assert_eq!(
        all["chunk"].as_array().unwrap().last().unwrap()["type"],
        "m.room.create"
    );
    let f = json!({"types": ["m.room.member"]}).to_string();
    let (_, members) = srv
        .get(&path(&format!("dir=b&filter={}", enc(&f))), &alice)
        .await;
    assert!(
        members["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] == "m.room.member")
    );
    assert_eq!(members["chunk"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn history_visibility_is_enforced() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let room = srv
        .create_room(&alice, json!({"preset": "public_chat", "initial_state": [{"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}]}))
        .await;
    srv.send_text(&alice, &room, "before bob").await;
    srv.join(&bob, &room).await;
    srv.send_text(&alice, &room, "after bob").await;
    let (_, m) = srv
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
                enc(&room)
            ),
            &bob,
        )
        .await;
    let bodies: Vec<&str> = m["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, vec!["after bob"]);
    // With shared visibility a newcomer sees earlier history.
    let room2 = srv
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    srv.send_text(&alice, &room2, "old news").await;
    srv.join(&bob, &room2).await;
    let (_, m) = srv
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
                enc(&room2)
            ),
            &bob,
        )
        .await;
    assert!(
        m["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["content"]["body"] == "old news")
    );
    // After leaving, later messages are hidden.
    let (s, _) = srv
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room2)),
            &bob,
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    srv.send_text(&alice, &room2, "after bob left").await;
    let (s, m) = srv
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
                enc(&room2)
            ),
            &bob,
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        m["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["content"]["body"] != "after bob left")
    );
}

#[tokio::test]
async fn events_survive_a_restart() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let room = srv.create_room(&alice, json!({})).await;
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..5 {
            v.push(srv.send_text(&alice, &room, &format!("m{i}")).await);
        }
        v
    };
    let dir = srv.stop().await;
    let config = test_config(dir.path());
    let srv = TestServer::start_in(dir, config).await;
    let (s, m) = srv
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
                enc(&room)
            ),
            &alice,
        )
        .await;
    assert_eq!(s, 200, "{m}");
    let got: Vec<&str> = m["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    for id in &ids {
        assert!(got.contains(&id.as_str()));
    }
    // The room continues: new events build on the stored DAG.
    srv.send_text(&alice, &room, "after restart").await;
}

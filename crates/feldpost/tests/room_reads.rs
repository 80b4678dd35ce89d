//! Reading rooms: /members, /joined_members, /event, /context, /relations and /threads.

mod common;

use common::*;
use serde_json::{Value, json};

fn room_path(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", enc(room))
}

fn v1_path(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v1/rooms/{}/{rest}", enc(room))
}

async fn send(srv: &TestServer, u: &User, room: &str, kind: &str, content: Value) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static TXN: AtomicU64 = AtomicU64::new(0);
    let txn = TXN.fetch_add(1, Ordering::SeqCst);
    let (s, b) = srv
        .put(
            &room_path(room, &format!("send/{kind}/rr{txn}")),
            u,
            content,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b["event_id"].as_str().expect("event_id").to_owned()
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn members_of(b: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = b["chunk"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["state_key"].as_str().unwrap_or_default().to_owned(),
                        e["content"]["membership"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn err(r: &(u16, Value)) -> (u16, Option<&str>) {
    (r.0, r.1["errcode"].as_str())
}

#[tokio::test]
async fn members_filters_and_history() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let carol = srv.register("carol").await;
    let dave = srv.register("dave").await;
    let room = srv
        .create_room(
            &alice,
            json!({"preset": "public_chat", "invite": [carol.user_id]}),
        )
        .await;
    srv.join(&bob, &room).await;
    let path = room_path(&room, "members");

    let (s, b) = srv.get(&path, &alice).await;
    assert_eq!(s, 200, "{b}");
    let join = |u: &User| (u.user_id.clone(), "join".to_owned());
    let invite = |u: &User| (u.user_id.clone(), "invite".to_owned());
    let leave = |u: &User| (u.user_id.clone(), "leave".to_owned());
    assert_eq!(
        members_of(&b),
        vec![join(&alice), join(&bob), invite(&carol)]
    );
    assert_eq!(b["chunk"][0]["type"], json!("m.room.member"));

    let (_, b) = srv.get(&format!("{path}?membership=join"), &alice).await;
    assert_eq!(members_of(&b), vec![join(&alice), join(&bob)]);
    let (_, b) = srv
        .get(&format!("{path}?not_membership=join"), &alice)
        .await;
    assert_eq!(members_of(&b), vec![invite(&carol)]);
    // Both together are an "or".
    let (_, b) = srv
        .get(
            &format!("{path}?membership=invite&not_membership=join"),
            &alice,
        )
        .await;
    assert_eq!(members_of(&b), vec![invite(&carol)]);
    let (_, b) = srv
        .get(
            &format!("{path}?membership=join&not_membership=invite"),
            &alice,
        )
        .await;
    assert_eq!(members_of(&b), vec![join(&alice), join(&bob)]);

    // `at` gives the membership at a point of the timeline.
    let before_leave = srv.sync(&alice, None, 0).await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let (s, b) = srv.post(&room_path(&room, "leave"), &bob, json!({})).await;
    assert_eq!(s, 200, "{b}");
    srv.join(&dave, &room).await;
    let (_, b) = srv.get(&path, &alice).await;
    assert_eq!(
        members_of(&b),
        vec![join(&alice), leave(&bob), invite(&carol), join(&dave)]
    );
    let (s, b) = srv.get(&format!("{path}?at={before_leave}"), &alice).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        members_of(&b),
        vec![join(&alice), join(&bob), invite(&carol)]
    );

    // Bob left: he sees the members as they were when he left, not Dave.
    let (s, b) = srv.get(&path, &bob).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        members_of(&b),
        vec![join(&alice), leave(&bob), invite(&carol)]
    );

    // Carol is only invited to a room that is not world-readable.
    let eve = srv.register("eve").await;
    assert_eq!(err(&srv.get(&path, &eve).await), (403, Some("M_FORBIDDEN")));
    assert_eq!(
        err(&srv.get(&path, &carol).await),
        (403, Some("M_FORBIDDEN"))
    );
    assert_eq!(
        err(&srv.get(&format!("{path}?membership=joined"), &alice).await),
        (400, Some("M_INVALID_PARAM"))
    );
    assert_eq!(
        err(&srv.get(&format!("{path}?not_membership=x"), &alice).await),
        (400, Some("M_INVALID_PARAM"))
    );
    assert_eq!(
        err(&srv.get(&format!("{path}?at=yesterday"), &alice).await),
        (400, Some("M_INVALID_PARAM"))
    );
    assert_eq!(
        err(&srv
            .get("/_matrix/client/v3/rooms/nope/members", &alice)
            .await),
        (400, Some("M_INVALID_PARAM"))
    );
    assert_eq!(
        err(&srv
            .get(&room_path("!unknown:localhost", "members"), &alice)
            .await),
        (403, Some("M_FORBIDDEN"))
    );
    let (s, _) = srv.request("GET", &path, None, None).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn joined_members_lists_profiles() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let carol = srv.register("carol").await;
    let room = srv
        .create_room(
            &alice,
            json!({"preset": "public_chat", "invite": [carol.user_id]}),
        )
        .await;
    srv.join(&bob, &room).await;
    let path = room_path(&room, "joined_members");

    let (s, b) = srv.get(&path, &bob).await;
    assert_eq!(s, 200, "{b}");
    let joined = b["joined"].as_object().expect("joined");
    assert_eq!(joined.len(), 2, "{b}");
    assert_eq!(joined[&alice.user_id]["display_name"], json!("alice"));
    assert_eq!(joined[&bob.user_id]["display_name"], json!("bob"));
    assert!(!joined.contains_key(&carol.user_id));

    // Only joined members may ask.
    assert_eq!(
        err(&srv.get(&path, &carol).await),
        (403, Some("M_FORBIDDEN"))
    );
    let (s, _) = srv.post(&room_path(&room, "leave"), &bob, json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(err(&srv.get(&path, &bob).await), (403, Some("M_FORBIDDEN")));
    let (_, b) = srv.get(&path, &alice).await;
    assert_eq!(b["joined"].as_object().map(|o| o.len()), Some(1));
    assert_eq!(
        err(&srv
            .get("/_matrix/client/v3/rooms/nope/joined_members", &alice)
            .await),
        (400, Some("M_INVALID_PARAM"))
    );
}

#[tokio::test]
async fn single_event_and_visibility() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let room = srv
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let other = srv.create_room(&alice, json!({})).await;
    // Before Bob joins, with history visible to joined members only.
    let (s, _) = srv
        .put(
            &room_path(&room, "state/m.room.history_visibility/"),
            &alice,
            json!({"history_visibility": "joined"}),
        )
        .await;
    assert_eq!(s, 200);
    let hidden = srv.send_text(&alice, &room, "before bob").await;
    srv.join(&bob, &room).await;
    let shown = srv.send_text(&alice, &room, "after bob").await;
    let elsewhere = srv.send_text(&alice, &other, "other room").await;

    let path = |id: &str| room_path(&room, &format!("event/{}", enc(id)));
    let (s, b) = srv.get(&path(&shown), &bob).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["event_id"], json!(shown));
    assert_eq!(b["content"]["body"], json!("after bob"));
    assert_eq!(b["room_id"], json!(room));
    assert!(b["unsigned"]["age"].is_number());
    // Alice sees her own transaction id.
    let (_, b) = srv.get(&path(&shown), &alice).await;
    assert!(b["unsigned"]["transaction_id"].is_string(), "{b}");

    assert_eq!(
        err(&srv.get(&path(&hidden), &bob).await),
        (404, Some("M_NOT_FOUND"))
    );
    assert_eq!(err(&srv.get(&path(&hidden), &alice).await).0, 200);
    assert_eq!(
        err(&srv.get(&path(&elsewhere), &alice).await),
        (404, Some("M_NOT_FOUND"))
    );
    assert_eq!(
        err(&srv.get(&path("$unknown"), &alice).await),
        (404, Some("M_NOT_FOUND"))
    );
    assert_eq!(
        err(&srv.get(&path("not-an-event"), &alice).await),
        (400, Some("M_INVALID_PARAM"))
    );
    // Events of a room one never joined are not found.
    let carol = srv.register("carol").await;
    assert_eq!(
        err(&srv.get(&path(&shown), &carol).await),
        (404, Some("M_NOT_FOUND"))
    );
    assert_eq!(
        err(&srv
            .get(
                &format!("/_matrix/client/v3/rooms/bad/event/{}", enc(&shown)),
                &alice
            )
            .await),
        (400, Some("M_INVALID_PARAM"))
    );
}

#[tokio::test]
async fn context_around_an_event() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let room = srv.create_room(&alice, json!({"name": "Ctx"})).await;
    let mut msgs = Vec::new();
    for i in 0..5 {
        msgs.push(srv.send_text(&alice, &room, &format!("m{i}")).await);
    }
    let path = |id: &str, q: &str| room_path(&room, &format!("context/{}{q}", enc(id)));

    let (s, b) = srv.get(&path(&msgs[2], "?limit=2"), &alice).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["event"]["event_id"], json!(msgs[2]));
    assert_eq!(ids(&b["events_before"]), vec![msgs[1].clone()]);
    assert_eq!(ids(&b["events_after"]), vec![msgs[3].clone()]);
    let state = b["state"].as_array().expect("state");
    assert!(state.iter().any(|e| e["type"] == json!("m.room.name")));
    assert!(state.iter().any(|e| e["type"] == json!("m.room.member")));

    // The tokens continue in /messages.
    let end = b["end"].as_str().expect("end");
    let (s, m) = srv
        .get(
            &room_path(&room, &format!("messages?dir=f&from={end}&limit=10")),
            &alice,
        )
        .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(ids(&m["chunk"]), vec![msgs[4].clone()]);
    let start = b["start"].as_str().expect("start");
    let (_, m) = srv
        .get(
            &room_path(&room, &format!("messages?dir=b&from={start}&limit=1")),
            &alice,
        )
        .await;
    assert_eq!(ids(&m["chunk"]), vec![msgs[0].clone()]);

    // limit=0 still returns the event; the filter applies to the surrounding events and state.
    let (_, b) = srv.get(&path(&msgs[2], "?limit=0"), &alice).await;
    assert_eq!(b["event"]["event_id"], json!(msgs[2]));
    assert_eq!(ids(&b["events_before"]), Vec::<String>::new());
    let filter = enc(r#"{"types":["m.room.name"]}"#);
    let (s, b) = srv
        .get(&path(&msgs[2], &format!("?filter={filter}")), &alice)
        .await;
    assert_eq!(s, 200, "{b}");
    let only_names = |v: &Value| {
        v.as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|e| e["type"] == json!("m.room.name")))
    };
    assert!(only_names(&b["events_before"]), "{b}");
    assert_eq!(b["events_after"], json!([]));
    assert!(
        b["state"]
            .as_array()
            .is_some_and(|s| s.iter().all(|e| e["type"] == json!("m.room.name"))),
        "{b}"
    );

    assert_eq!(
        err(&srv.get(&path(&msgs[2], ""), &bob).await),
        (403, Some("M_FORBIDDEN"))
    );
    assert_eq!(
        err(&srv.get(&path("$nope", ""), &alice).await),
        (404, Some("M_NOT_FOUND"))
    );
    assert_eq!(
        err(&srv.get(&path(&msgs[2], "?filter=notjson"), &alice).await),
        (400, Some("M_INVALID_PARAM"))
    );
    assert_eq!(
        err(&srv.get(&path(&msgs[2], "?limit=-3"), &alice).await),
        (400, Some("M_INVALID_PARAM"))
    );
    assert_eq!(
        err(&srv.get(&path("bad", ""), &alice).await),
        (400, Some("M_INVALID_PARAM"))
    );
}

fn reaction(to: &str, key: &str) -> Value {
    json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": to, "key": key}})
}

fn thread_reply(root: &str, body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body,
           "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
}

#[tokio::test]
async fn relations_paginate_both_ways() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let room = srv.create_room(&alice, json!({})).await;
    let root = srv.send_text(&alice, &room, "react to me").await;
    let mut reactions = Vec::new();
    for key in ["a", "b", "c", "d", "e"] {
        reactions.push(send(&srv, &alice, &room, "m.reaction", reaction(&root, key)).await);
        srv.send_text(&alice, &room, "noise").await;
    }
    let base = v1_path(&room, &format!("relations/{}", enc(&root)));

    // Backwards (the default) in pages of two: newest first.
    let mut got = Vec::new();
    let mut from: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &from {
            Some(f) => format!("?limit=2&from={f}"),
            None => "?limit=2".to_owned(),
        };
        let (s, b) = srv.get(&format!("{base}{q}"), &alice).await;
        assert_eq!(s, 200, "{b}");
        assert!(b.get("recursion_depth").is_none());
        assert_eq!(b.get("prev_batch").is_some(), from.is_some(), "{b}");
        pages += 1;
        got.extend(ids(&b["chunk"]));
        match b["next_batch"].as_str() {
            Some(n) => from = Some(n.to_owned()),
            None => break,
        }
    }
    let mut newest_first = reactions.clone();
    newest_first.reverse();
    assert_eq!(got, newest_first);
    assert_eq!(pages, 3);

    // Forwards: oldest first.
    let (_, b) = srv.get(&format!("{base}?dir=f&limit=3"), &alice).await;
    assert_eq!(ids(&b["chunk"]), reactions[..3].to_vec());
    let next = b["next_batch"].as_str().expect("next_batch");
    let (_, b) = srv
        .get(&format!("{base}?dir=f&limit=3&from={next}"), &alice)
        .await;
    assert_eq!(ids(&b["chunk"]), reactions[3..].to_vec());
    assert!(b.get("next_batch").is_none(), "{b}");

    // `to` stops at a token: from the first page's end back to where the second page ended.
    let (_, p1) = srv.get(&format!("{base}?limit=2"), &alice).await;
    let (_, p2) = srv
        .get(
            &format!(
                "{base}?limit=2&from={}",
                p1["next_batch"].as_str().expect("n")
            ),
            &alice,
        )
        .await;
    let (_, b) = srv
        .get(
            &format!(
                "{base}?limit=10&from={}&to={}",
                p1["next_batch"].as_str().expect("n"),
                p2["next_batch"].as_str().expect("n")
            ),
            &alice,
        )
        .await;
    assert_eq!(ids(&b["chunk"]), ids(&p2["chunk"]));

    // Narrowed by relation type and event type.
    let (_, b) = srv
        .get(&format!("{base}/m.annotation?limit=10"), &alice)
        .await;
    assert_eq!(ids(&b["chunk"]).len(), 5);
    let (_, b) = srv
        .get(&format!("{base}/m.annotation/m.reaction"), &alice)
        .await;
    assert_eq!(ids(&b["chunk"]).len(), 5);
    let (_, b) = srv
        .get(&format!("{base}/m.annotation/m.room.message"), &alice)
        .await;
    assert_eq!(ids(&b["chunk"]).len(), 0);
    let (s, b) = srv.get(&format!("{base}/m.thread"), &alice).await;
    assert_eq!(s, 200);
    assert_eq!(b["chunk"], json!([]));

    // Errors.
    assert_eq!(err(&srv.get(&base, &bob).await), (403, Some("M_FORBIDDEN")));
    assert_eq!(
        err(&srv
            .get(
                &v1_path(&room, &format!("relations/{}", enc("$missing"))),
                &alice
            )
            .await),
        (404, Some("M_NOT_FOUND"))
    );
    for q in [
        "?dir=x",
        "?from=zzz",
        "?to=zzz",
        "?limit=two",
        "?recurse=maybe",
    ] {
        assert_eq!(
            err(&srv.get(&format!("{base}{q}"), &alice).await),
            (400, Some("M_INVALID_PARAM")),
            "{q}"
        );
    }
    assert_eq!(
        err(&srv.get(&v1_path(&room, "relations/nope"), &alice).await),
        (400, Some("M_INVALID_PARAM"))
    );
}

#[tokio::test]
async fn relations_recurse_and_bundles() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let room = srv.create_room(&alice, json!({})).await;
    let root = srv.send_text(&alice, &room, "root").await;
    let reply = send(
        &srv,
        &alice,
        &room,
        "m.room.message",
        thread_reply(&root, "in thread"),
    )
    .await;
    let nested = send(&srv, &alice, &room, "m.reaction", reaction(&reply, "+1")).await;
    let edit = send(
        &srv,
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "* root!",
               "m.new_content": {"msgtype": "m.text", "body": "root!"},
               "m.relates_to": {"rel_type": "m.replace", "event_id": root}}),
    )
    .await;
    let reference = send(
        &srv,
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "see above",
               "m.relates_to": {"rel_type": "m.reference", "event_id": root}}),
    )
    .await;
    let base = v1_path(&room, &format!("relations/{}", enc(&root)));

    let (_, b) = srv.get(&base, &alice).await;
    let mut direct = ids(&b["chunk"]);
    direct.sort();
    let mut want = vec![reply.clone(), edit.clone(), reference.clone()];
    want.sort();
    assert_eq!(direct, want);

    let (s, b) = srv.get(&format!("{base}?recurse=true"), &alice).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["recursion_depth"], json!(3));
    assert!(ids(&b["chunk"]).contains(&nested));
    let (_, b) = srv.get(&format!("{base}?recurse=false"), &alice).await;
    assert!(b.get("recursion_depth").is_none(), "{b}");
    assert!(!ids(&b["chunk"]).contains(&nested));
    let (_, b) = srv
        .get(&format!("{base}/m.annotation?recurse=true"), &alice)
        .await;
    assert_eq!(ids(&b["chunk"]), vec![nested.clone()]);

    // /event bundles the thread summary, the latest edit and the references.
    let (s, ev) = srv
        .get(&room_path(&room, &format!("event/{}", enc(&root))), &alice)
        .await;
    assert_eq!(s, 200, "{ev}");
    let rel = &ev["unsigned"]["m.relations"];
    assert_eq!(rel["m.thread"]["count"], json!(1), "{ev}");
    assert_eq!(rel["m.thread"]["latest_event"]["event_id"], json!(reply));
    assert_eq!(rel["m.thread"]["current_user_participated"], json!(true));
    assert_eq!(rel["m.replace"]["event_id"], json!(edit));
    assert_eq!(
        rel["m.reference"]["chunk"],
        json!([{"event_id": reference}])
    );
    // The original content is left as it was.
    assert_eq!(ev["content"]["body"], json!("root"));
}

#[tokio::test]
async fn threads_list_and_participation() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let carol = srv.register("carol").await;
    let room = srv
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    srv.join(&bob, &room).await;
    let older = srv.send_text(&alice, &room, "thread one").await;
    let newer = srv.send_text(&alice, &room, "thread two").await;
    srv.send_text(&alice, &room, "not a thread").await;
    send(
        &srv,
        &alice,
        &room,
        "m.room.message",
        thread_reply(&older, "1a"),
    )
    .await;
    let bob_reply = send(
        &srv,
        &bob,
        &room,
        "m.room.message",
        thread_reply(&newer, "2a"),
    )
    .await;
    let latest_older = send(
        &srv,
        &alice,
        &room,
        "m.room.message",
        thread_reply(&older, "1b"),
    )
    .await;
    let path = v1_path(&room, "threads");

    // Most recently active first: `older` got the last reply.
    let (s, b) = srv.get(&path, &bob).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(ids(&b["chunk"]), vec![older.clone(), newer.clone()]);
    let t = &b["chunk"][0]["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(t["count"], json!(2));
    assert_eq!(t["latest_event"]["event_id"], json!(latest_older));
    assert_eq!(t["current_user_participated"], json!(false));
    let t = &b["chunk"][1]["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(t["latest_event"]["event_id"], json!(bob_reply));
    assert_eq!(t["current_user_participated"], json!(true));
    assert!(b.get("next_batch").is_none());

    let (_, b) = srv.get(&format!("{path}?include=participated"), &bob).await;
    assert_eq!(ids(&b["chunk"]), vec![newer.clone()]);
    let (_, b) = srv
        .get(&format!("{path}?include=participated"), &alice)
        .await;
    assert_eq!(ids(&b["chunk"]).len(), 2);

    // Pages of one.
    let (_, p1) = srv.get(&format!("{path}?limit=1"), &bob).await;
    assert_eq!(ids(&p1["chunk"]), vec![older.clone()]);
    let next = p1["next_batch"].as_str().expect("next_batch");
    let (_, p2) = srv.get(&format!("{path}?limit=1&from={next}"), &bob).await;
    assert_eq!(ids(&p2["chunk"]), vec![newer.clone()]);
    assert!(p2.get("next_batch").is_none(), "{p2}");

    // Errors.
    assert_eq!(
        err(&srv.get(&path, &carol).await),
        (403, Some("M_FORBIDDEN"))
    );
    for q in ["?include=mine", "?limit=0", "?from=later", "?limit=x"] {
        assert_eq!(
            err(&srv.get(&format!("{path}{q}"), &bob).await),
            (400, Some("M_INVALID_PARAM")),
            "{q}"
        );
    }
    assert_eq!(
        err(&srv.get("/_matrix/client/v1/rooms/nope/threads", &bob).await),
        (400, Some("M_INVALID_PARAM"))
    );
}

#[tokio::test]
async fn relations_respect_history_visibility() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let room = srv
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let (s, _) = srv
        .put(
            &room_path(&room, "state/m.room.history_visibility/"),
            &alice,
            json!({"history_visibility": "joined"}),
        )
        .await;
    assert_eq!(s, 200);
    let root = srv.send_text(&alice, &room, "early").await;
    let early = send(&srv, &alice, &room, "m.reaction", reaction(&root, "a")).await;
    let visible_root = srv.send_text(&alice, &room, "root").await;
    send(
        &srv,
        &alice,
        &room,
        "m.room.message",
        thread_reply(&visible_root, "early reply"),
    )
    .await;
    srv.join(&bob, &room).await;
    let late = send(
        &srv,
        &alice,
        &room,
        "m.room.message",
        thread_reply(&visible_root, "late"),
    )
    .await;

    // Bob cannot see the early root, so its relations are not found.
    let (s, b) = srv
        .get(&v1_path(&room, &format!("relations/{}", enc(&root))), &bob)
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{b}"
    );
    let (_, b) = srv
        .get(
            &v1_path(&room, &format!("relations/{}", enc(&root))),
            &alice,
        )
        .await;
    assert_eq!(ids(&b["chunk"]), vec![early]);
    // Bob sees no threads rooted before he joined; Alice sees the thread.
    let (_, b) = srv.get(&v1_path(&room, "threads"), &bob).await;
    assert_eq!(ids(&b["chunk"]), Vec::<String>::new());
    let (_, b) = srv.get(&v1_path(&room, "threads"), &alice).await;
    assert_eq!(ids(&b["chunk"]), vec![visible_root.clone()]);
    assert_eq!(
        b["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"],
        json!(late)
    );
}

#[tokio::test]
async fn relations_across_rooms_are_ignored() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let a = srv.create_room(&alice, json!({})).await;
    let b = srv.create_room(&alice, json!({})).await;
    let root = srv.send_text(&alice, &a, "root in a").await;
    // A thread reply to a root in another room is refused outright…
    let (s, body) = srv
        .put(
            &room_path(&b, "send/m.room.message/cross-thread"),
            &alice,
            thread_reply(&root, "from b"),
        )
        .await;
    assert_eq!(
        (s, body["errcode"].as_str()),
        (400, Some("M_UNKNOWN")),
        "{body}"
    );
    // …and other relations across rooms are stored as events but never indexed.
    send(&srv, &alice, &b, "m.reaction", reaction(&root, "x")).await;

    let (_, body) = srv.get(&v1_path(&b, "threads"), &alice).await;
    assert_eq!(body["chunk"], json!([]), "{body}");
    let (_, body) = srv.get(&v1_path(&a, "threads"), &alice).await;
    assert_eq!(body["chunk"], json!([]), "{body}");
    let (_, body) = srv
        .get(&v1_path(&a, &format!("relations/{}", enc(&root))), &alice)
        .await;
    assert_eq!(body["chunk"], json!([]), "{body}");
    let r = srv
        .get(&v1_path(&b, &format!("relations/{}", enc(&root))), &alice)
        .await;
    assert_eq!(err(&r), (404, Some("M_NOT_FOUND")));
}

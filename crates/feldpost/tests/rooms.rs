//! Rooms: creation with presets and versions, PDU format and signatures, membership changes and
//! their authorization, state, redaction, transaction idempotency.

mod common;

use std::collections::BTreeMap;

use common::*;
use ruma::signatures::{PublicKeyMap, Verified};
use ruma::{OwnedEventId, RoomVersionId, serde::Base64};
use serde_json::{Value, json};

fn state_path(room: &str, kind: &str, key: &str) -> String {
    format!(
        "/_matrix/client/v3/rooms/{}/state/{kind}/{}",
        enc(room),
        enc(key)
    )
}

async fn verify_pdu(srv: &TestServer, event_id: &str, version: &RoomVersionId) {
    let id = OwnedEventId::try_from(event_id).unwrap();
    let pdu = srv
        .services
        .rooms
        .pdu(&id)
        .await
        .unwrap()
        .expect("pdu stored");
    let obj = pdu.canonical_object().unwrap();
    let rules = version.rules().unwrap();
    let key = &srv.services.key;
    let mut set = BTreeMap::new();
    set.insert(
        key.key_id.clone(),
        Base64::parse(key.public_key_base64()).unwrap(),
    );
    let mut map = PublicKeyMap::new();
    map.insert("localhost".into(), set);
    assert_eq!(
        ruma::signatures::verify_event(&map, &obj, &rules).expect("verifies"),
        Verified::All
    );
    let hash = ruma::signatures::reference_hash(&obj, &rules).unwrap();
    assert_eq!(
        format!("${hash}"),
        event_id,
        "event id is the reference hash"
    );
    for field in [
        "auth_events",
        "prev_events",
        "depth",
        "hashes",
        "signatures",
        "origin_server_ts",
        "sender",
        "type",
        "content",
    ] {
        assert!(obj.contains_key(field), "PDU lacks {field}");
    }
}

#[tokio::test]
async fn every_room_version_works_and_events_are_signed_pdus() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    for v in ["10", "11", "12"] {
        let room = srv
            .create_room(
                &alice,
                json!({"room_version": v, "preset": "public_chat", "name": format!("v{v}")}),
            )
            .await;
        if v == "12" {
            let (_, create) = srv
                .get(
                    &format!("{}?format=event", state_path(&room, "m.room.create", "")),
                    &alice,
                )
                .await;
            assert_eq!(
                create["event_id"].as_str().unwrap()[1..],
                room[1..],
                "v12 room id is the create event's hash"
            );
        }
        srv.join(&bob, &room).await;
        let event_id = srv.send_text(&bob, &room, &format!("hello {v}")).await;
        verify_pdu(&srv, &event_id, &RoomVersionId::try_from(v).unwrap()).await;
        let (s, b) = srv.get(&state_path(&room, "m.room.create", ""), &bob).await;
        assert_eq!((s, b["room_version"].as_str()), (200, Some(v)), "{b}");
        // The creator may change power levels; in v12 the creator has unlimited power.
        let (s, b) = srv
            .put(
                &state_path(&room, "m.room.topic", ""),
                &alice,
                json!({"topic": "t"}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        let (s, _) = srv
            .put(
                &state_path(&room, "m.room.topic", ""),
                &bob,
                json!({"topic": "nope"}),
            )
            .await;
        assert_eq!(s, 403, "a default member may not change the topic");
    }
    let (s, b) = srv
        .post(
            "/_matrix/client/v3/createRoom",
            &alice,
            json!({"room_version": "1"}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_UNSUPPORTED_ROOM_VERSION"))
    );
}

#[tokio::test]
async fn create_room_applies_presets_and_overrides() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let room = srv
        .create_room(
            &alice,
            json!({
                "preset": "trusted_private_chat",
                "invite": [bob.user_id],
                "name": "Stab",
                "topic": "Lage",
                "room_alias_name": "stab",
                "initial_state": [{"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "forbidden"}}],
                "power_level_content_override": {"events_default": 10},
                "creation_content": {"m.federate": false},
            }),
        )
        .await;
    let get = |k: &str| {
        let path = state_path(&room, k, "");
        let (srv, alice) = (&srv, &alice);
        async move { srv.get(&path, alice).await.1 }
    };
    assert_eq!(get("m.room.join_rules").await["join_rule"], "invite");
    assert_eq!(
        get("m.room.history_visibility").await["history_visibility"],
        "shared"
    );
    assert_eq!(
        get("m.room.guest_access").await["guest_access"],
        "forbidden"
    );
    assert_eq!(get("m.room.name").await["name"], "Stab");
    assert_eq!(get("m.room.topic").await["topic"], "Lage");
    assert_eq!(
        get("m.room.canonical_alias").await["alias"],
        "#stab:localhost"
    );
    assert_eq!(get("m.room.create").await["m.federate"], false);
    let pl = get("m.room.power_levels").await;
    assert_eq!(pl["events_default"], 10);
    assert_eq!(
        pl["users"][&bob.user_id], 100,
        "trusted_private_chat makes invitees admins"
    );
    let (s, b) = srv
        .post(
            "/_matrix/client/v3/createRoom",
            &alice,
            json!({"room_alias_name": "stab"}),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_ROOM_IN_USE")));
    let (s, _) = srv
        .post(
            "/_matrix/client/v3/createRoom",
            &alice,
            json!({"preset": "weird"}),
        )
        .await;
    assert_eq!(s, 400);
    let (s, b) = srv
        .post(
            "/_matrix/client/v3/createRoom",
            &alice,
            json!({"invite": ["@ghost:localhost"]}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{b}"
    );
    // Join by alias.
    srv.join(&bob, "#stab:localhost").await;
}

#[tokio::test]
async fn non_members_can_neither_read_nor_send() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let eve = srv.register("eve").await;
    let room = srv.create_room(&alice, json!({})).await;
    srv.send_text(&alice, &room, "secret").await;
    let (s, b) = srv
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/e1",
                enc(&room)
            ),
            &eve,
            json!({"msgtype": "m.text", "body": "hi"}),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (s, _) = srv
        .get(
            &format!("/_matrix/client/v3/rooms/{}/messages?dir=b", enc(&room)),
            &eve,
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = srv
        .get(
            &format!("/_matrix/client/v3/rooms/{}/state", enc(&room)),
            &eve,
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = srv.get(&state_path(&room, "m.room.name", ""), &eve).await;
    assert_eq!(s, 403);
    // A private room cannot be joined without an invite.
    let (s, b) = srv
        .post(
            &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
            &eve,
            json!({}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{b}"
    );
    // Eve's sync does not mention the room.
    let sync = srv.sync(&eve, None, 0).await;
    assert!(sync["rooms"]["join"].get(&room).is_none());
    // An unknown room is also forbidden, not a leak of existence.
    let (s, _) = srv
        .put(
            "/_matrix/client/v3/rooms/!nope:localhost/send/m.room.message/x",
            &eve,
            json!({}),
        )
        .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn kick_ban_unban_and_their_authorization() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let carol = srv.register("carol").await;
    let room = srv
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    srv.join(&bob, &room).await;
    srv.join(&carol, &room).await;
    let path = |what: &str| format!("/_matrix/client/v3/rooms/{}/{what}", enc(&room));
    // Bob has no power to kick.
    let (s, _) = srv
        .post(&path("kick"), &bob, json!({"user_id": carol.user_id}))
        .await;
    assert_eq!(s, 403);
    let (s, b) = srv
        .post(
            &path("kick"),
            &alice,
            json!({"user_id": carol.user_id, "reason": "Ruhe"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, m) = srv
        .get(&state_path(&room, "m.room.member", &carol.user_id), &alice)
        .await;
    assert_eq!(
        (m["membership"].as_str(), m["reason"].as_str()),
        (Some("leave"), Some("Ruhe"))
    );
    let (s, _) = srv
        .post(&path("ban"), &alice, json!({"user_id": carol.user_id}))
        .await;
    assert_eq!(s, 200);
    let (s, b) = srv
        .post(
            &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
            &carol,
            json!({}),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (s, _) = srv
        .post(&path("unban"), &bob, json!({"user_id": carol.user_id}))
        .await;
    assert_eq!(s, 403);
    let (s, _) = srv
        .post(&path("unban"), &alice, json!({"user_id": carol.user_id}))
        .await;
    assert_eq!(s, 200);
    srv.join(&carol, &room).await;
    // Leave and forget.
    let (s, _) = srv.post(&path("forget"), &carol, json!({})).await;
    assert_eq!(s, 400, "cannot forget a joined room");
    let (s, _) = srv.post(&path("leave"), &carol, json!({})).await;
    assert_eq!(s, 200);
    let (s, _) = srv.post(&path("leave"), &carol, json!({})).await;
    assert_eq!(s, 403, "cannot leave twice");
    let (s, _) = srv.post(&path("forget"), &carol, json!({})).await;
    assert_eq!(s, 200);
    let (_, j) = srv.get("/_matrix/client/v3/joined_rooms", &bob).await;
    assert_eq!(j["joined_rooms"], json!([room]));
}

#[tokio::test]
async fn invites_and_rejections() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let room = srv.create_room(&alice, json!({})).await;
    let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
    let (s, _) = srv
        .post(&invite, &alice, json!({"user_id": "@ghost:localhost"}))
        .await;
    assert_eq!(s, 404);
    let (s, _) = srv
        .post(
            &invite,
            &alice,
            json!({"user_id": "@bob:elsewhere.example"}),
        )
        .await;
    assert_eq!(s, 403, "no federation yet");
    let (s, b) = srv
        .post(&invite, &alice, json!({"user_id": bob.user_id}))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = srv
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
            &bob,
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "rejecting an invite");
    let (s, _) = srv
        .post(
            &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
            &bob,
            json!({}),
        )
        .await;
    assert_eq!(s, 403, "a rejected invite no longer admits");
}

#[tokio::test]
async fn transaction_ids_are_idempotent_per_device() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let room = srv.create_room(&alice, json!({})).await;
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/same",
        enc(&room)
    );
    let (_, a) = srv
        .put(&path, &alice, json!({"msgtype": "m.text", "body": "once"}))
        .await;
    let (_, b) = srv
        .put(&path, &alice, json!({"msgtype": "m.text", "body": "once"}))
        .await;
    assert_eq!(a["event_id"], b["event_id"]);
    // Another device of the same user gets a new event.
    let (_, login) = srv
        .request(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.password", "user": "alice", "password": "correct horse"})),
        )
        .await;
    let other = User {
        user_id: alice.user_id.clone(),
        token: login["access_token"].as_str().unwrap().into(),
        device_id: login["device_id"].as_str().unwrap().into(),
    };
    let (_, c) = srv
        .put(&path, &other, json!({"msgtype": "m.text", "body": "once"}))
        .await;
    assert_ne!(a["event_id"], c["event_id"]);
    // The sending device sees its transaction id; others do not.
    let (_, m) = srv
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=2",
                enc(&room)
            ),
            &alice,
        )
        .await;
    let mine = m["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == a["event_id"])
        .unwrap();
    assert_eq!(mine["unsigned"]["transaction_id"], "same");
    let (_, m) = srv
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=2",
                enc(&room)
            ),
            &other,
        )
        .await;
    let theirs = m["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == a["event_id"])
        .unwrap();
    assert!(theirs["unsigned"].get("transaction_id").is_none());
}

#[tokio::test]
async fn redaction_removes_content_and_respects_power() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let room = srv
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    srv.join(&bob, &room).await;
    let a_msg = srv.send_text(&alice, &room, "alice's words").await;
    let b_msg = srv.send_text(&bob, &room, "bob's words").await;
    let redact = |ev: &str, txn: &str| {
        format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/{txn}",
            enc(&room),
            enc(ev)
        )
    };
    let (s, _) = srv.put(&redact(&a_msg, "r1"), &bob, json!({})).await;
    assert_eq!(s, 403, "bob cannot redact alice");
    let (s, b) = srv
        .put(&redact(&b_msg, "r2"), &bob, json!({"reason": "typo"}))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = srv.put(&redact(&a_msg, "r3"), &alice, json!({})).await;
    assert_eq!(s, 200, "alice may redact her own");
    let (s, e) = srv
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/event/{}",
                enc(&room),
                enc(&b_msg)
            ),
            &alice,
        )
        .await;
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["content"], json!({}));
    assert_eq!(
        e["unsigned"]["redacted_because"]["content"]["reason"],
        "typo"
    );
    let (s, _) = srv.put(&redact("$unknown", "r4"), &alice, json!({})).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn state_api() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let room = srv.create_room(&alice, json!({"name": "A"})).await;
    let (s, first) = srv
        .put(
            &state_path(&room, "m.room.name", ""),
            &alice,
            json!({"name": "B"}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, again) = srv
        .put(
            &state_path(&room, "m.room.name", ""),
            &alice,
            json!({"name": "B"}),
        )
        .await;
    assert_eq!(
        first["event_id"], again["event_id"],
        "identical state is not re-sent"
    );
    let (s, b) = srv
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/com.example.x/key",
                enc(&room)
            ),
            &alice,
            json!({"v": 1}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, all) = srv
        .get(
            &format!("/_matrix/client/v3/rooms/{}/state", enc(&room)),
            &alice,
        )
        .await;
    assert_eq!(s, 200);
    let all = all.as_array().unwrap();
    assert!(
        all.iter()
            .any(|e| e["type"] == "com.example.x" && e["state_key"] == "key")
    );
    let name = all.iter().find(|e| e["type"] == "m.room.name").unwrap();
    assert_eq!(name["unsigned"]["prev_content"]["name"], "A");
    let (s, _) = srv
        .get(&state_path(&room, "m.room.topic", ""), &alice)
        .await;
    assert_eq!(s, 404);
    let (s, b) = srv
        .put(
            &state_path(&room, "m.room.canonical_alias", ""),
            &alice,
            json!({"alias": "#nothere:localhost"}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_BAD_ALIAS")),
        "{b}"
    );
    let (s, b) = srv
        .put(
            &state_path(&room, "m.room.power_levels", ""),
            &alice,
            json!({"users": "no"}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let _: Value = b;
}

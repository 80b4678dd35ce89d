//! Profiles: reading, setting, clearing, validation, and propagation into member events.

mod common;

use common::*;
use serde_json::{Value, json};

fn profile_path(user: &str, key: &str) -> String {
    format!("/_matrix/client/v3/profile/{}/{}", enc(user), enc(key))
}

#[tokio::test]
async fn set_and_read_profile() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    // Registration starts with the localpart as display name.
    let (s, b) = srv
        .request(
            "GET",
            &profile_path(&alice.user_id, "displayname"),
            None,
            None,
        )
        .await;
    assert_eq!((s, b), (200, json!({"displayname": "alice"})));

    let (s, b) = srv
        .put(
            &profile_path(&alice.user_id, "displayname"),
            &alice,
            json!({"displayname": "Alice Ⅰ"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = srv
        .put(
            &profile_path(&alice.user_id, "avatar_url"),
            &alice,
            json!({"avatar_url": "mxc://localhost/abc123"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    // Profile look-ups need no access token.
    let (s, b) = srv
        .request(
            "GET",
            &format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id)),
            None,
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        b,
        json!({"displayname": "Alice Ⅰ", "avatar_url": "mxc://localhost/abc123"})
    );
    let (s, b) = srv
        .get(&profile_path(&alice.user_id, "avatar_url"), &alice)
        .await;
    assert_eq!(
        (s, b),
        (200, json!({"avatar_url": "mxc://localhost/abc123"}))
    );

    // DELETE removes a field; an empty string does too.
    let (s, _) = srv
        .request(
            "DELETE",
            &profile_path(&alice.user_id, "avatar_url"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, b) = srv
        .get(&profile_path(&alice.user_id, "avatar_url"), &alice)
        .await;
    assert_eq!((s, b["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
    let (s, _) = srv
        .put(
            &profile_path(&alice.user_id, "displayname"),
            &alice,
            json!({"displayname": ""}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, b) = srv
        .request(
            "GET",
            &format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id)),
            None,
            None,
        )
        .await;
    assert_eq!((s, b), (200, json!({})));
}

#[tokio::test]
async fn unknown_and_foreign_profiles() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    for path in [
        "/_matrix/client/v3/profile/@nobody:localhost".to_owned(),
        profile_path("@nobody:localhost", "displayname"),
        profile_path("@alice:elsewhere.example", "displayname"),
        // Fields this server does not store are never there.
        profile_path(&alice.user_id, "m.tz"),
    ] {
        let (s, b) = srv.get(&path, &alice).await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (404, Some("M_NOT_FOUND")),
            "{path}: {b}"
        );
    }
    let (s, b) = srv
        .get("/_matrix/client/v3/profile/not-a-user-id", &alice)
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );

    // Nobody changes someone else's profile.
    let (s, b) = srv
        .put(
            &profile_path(&alice.user_id, "displayname"),
            &bob,
            json!({"displayname": "Mallory"}),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (s, b) = srv
        .request(
            "DELETE",
            &profile_path(&alice.user_id, "displayname"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
    let (s, b) = srv
        .request(
            "PUT",
            &profile_path(&alice.user_id, "displayname"),
            None,
            Some(json!({"displayname": "x"})),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")));
    let (_, b) = srv
        .get(&profile_path(&alice.user_id, "displayname"), &bob)
        .await;
    assert_eq!(b, json!({"displayname": "alice"}));
}

#[tokio::test]
async fn bad_input() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let dn = profile_path(&alice.user_id, "displayname");
    let av = profile_path(&alice.user_id, "avatar_url");
    let cases: Vec<(String, Value, u16, &str)> = vec![
        (dn.clone(), json!({"displayname": 5}), 400, "M_BAD_JSON"),
        (dn.clone(), json!({"displayname": null}), 400, "M_BAD_JSON"),
        (dn.clone(), json!({"other": "x"}), 400, "M_MISSING_PARAM"),
        (
            dn.clone(),
            json!({"displayname": "x".repeat(257)}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            av.clone(),
            json!({"avatar_url": "https://example.com/a.png"}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            av.clone(),
            json!({"avatar_url": ["mxc://localhost/a"]}),
            400,
            "M_BAD_JSON",
        ),
        (
            profile_path(&alice.user_id, "Bad Key"),
            json!({"Bad Key": "x"}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            profile_path(&alice.user_id, &"a.b".repeat(100)),
            json!({}),
            400,
            "M_KEY_TOO_LARGE",
        ),
        // Valid keys this server does not store are refused rather than dropped.
        (
            profile_path(&alice.user_id, "m.tz"),
            json!({"m.tz": "Europe/Berlin"}),
            403,
            "M_FORBIDDEN",
        ),
        (
            profile_path(&alice.user_id, "org.example.pet"),
            json!({"org.example.pet": "cat"}),
            403,
            "M_FORBIDDEN",
        ),
    ];
    for (path, body, status, errcode) in cases {
        let (s, b) = srv.put(&path, &alice, body.clone()).await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (status, Some(errcode)),
            "{path} {body}: {b}"
        );
    }
    let (s, b) = srv.raw("PUT", &dn, Some(&alice.token), b"{not json").await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_NOT_JSON")));
    // Nothing changed.
    let (_, b) = srv.get(&dn, &alice).await;
    assert_eq!(b, json!({"displayname": "alice"}));
}

fn member_events<'a>(sync: &'a Value, room: &str, user: &str) -> Vec<&'a Value> {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["type"] == "m.room.member" && e["state_key"] == user)
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn changes_propagate_to_joined_rooms() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let room1 = srv
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let room2 = srv
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    let elsewhere = srv.create_room(&bob, json!({})).await;
    srv.join(&bob, &room1).await;
    srv.join(&bob, &room2).await;
    let since = srv.sync(&bob, None, 0).await["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let (s, _) = srv
        .put(
            &profile_path(&alice.user_id, "displayname"),
            &alice,
            json!({"displayname": "Alice"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = srv
        .put(
            &profile_path(&alice.user_id, "avatar_url"),
            &alice,
            json!({"avatar_url": "mxc://localhost/pic"}),
        )
        .await;
    assert_eq!(s, 200);

    let sync = srv.sync(&bob, Some(&since), 0).await;
    for room in [&room1, &room2] {
        let events = member_events(&sync, room, &alice.user_id);
        assert_eq!(events.len(), 2, "{sync}");
        let last = events[1];
        assert_eq!(last["content"]["membership"], "join");
        assert_eq!(last["content"]["displayname"], "Alice");
        assert_eq!(last["content"]["avatar_url"], "mxc://localhost/pic");
        let (_, state) = srv
            .get(
                &format!(
                    "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
                    enc(room),
                    enc(&alice.user_id)
                ),
                &bob,
            )
            .await;
        assert_eq!(state["displayname"], "Alice", "{state}");
    }
    assert!(
        sync["rooms"]["join"][&elsewhere]["timeline"]["events"]
            .as_array()
            .is_none_or(|a| a.is_empty())
    );

    // Setting the same value again sends nothing new.
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    let (s, _) = srv
        .put(
            &profile_path(&alice.user_id, "displayname"),
            &alice,
            json!({"displayname": "Alice"}),
        )
        .await;
    assert_eq!(s, 200);
    let sync = srv.sync(&bob, Some(&since), 0).await;
    assert!(
        member_events(&sync, &room1, &alice.user_id).is_empty(),
        "{sync}"
    );

    // Removing the avatar removes it from the member event.
    let (s, _) = srv
        .request(
            "DELETE",
            &profile_path(&alice.user_id, "avatar_url"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let sync = srv.sync(&bob, Some(&since), 0).await;
    let events = member_events(&sync, &room1, &alice.user_id);
    assert_eq!(events.len(), 1, "{sync}");
    assert!(events[0]["content"].get("avatar_url").is_none());
    assert_eq!(events[0]["content"]["displayname"], "Alice");
}

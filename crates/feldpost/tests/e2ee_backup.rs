//! Server-side key backups (`/room_keys/…`) and the secret-storage account data clients keep
//! next to them.

mod common;

use common::{TestServer, User, enc};
use serde_json::{Value, json};

const ALG: &str = "m.megolm_backup.v1.curve25519-aes-sha2";
const VERSION: &str = "/_matrix/client/v3/room_keys/version";
const ROOM: &str = "!room:localhost";

async fn create(srv: &TestServer, u: &User, public_key: &str) -> String {
    let (s, b) = srv
        .post(
            VERSION,
            u,
            json!({"algorithm": ALG, "auth_data": {"public_key": public_key}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b["version"].as_str().expect("version").to_owned()
}

fn key_data(index: u64, forwarded: u64, verified: bool, marker: &str) -> Value {
    json!({
        "first_message_index": index,
        "forwarded_count": forwarded,
        "is_verified": verified,
        "session_data": {"ephemeral": "e", "ciphertext": marker, "mac": "m"},
    })
}

fn session_path(room: &str, session: &str, version: &str) -> String {
    format!(
        "/_matrix/client/v3/room_keys/keys/{}/{}?version={version}",
        enc(room),
        enc(session)
    )
}

#[tokio::test]
async fn versions_are_created_read_updated_and_deleted() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let (s, b) = srv.get(VERSION, &alice).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{b}"
    );
    let v1 = create(&srv, &alice, "pk1").await;
    let (s, b) = srv.get(VERSION, &alice).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["version"], json!(v1));
    assert_eq!(b["algorithm"], json!(ALG));
    assert_eq!(b["auth_data"], json!({"public_key": "pk1"}));
    assert_eq!(b["count"], json!(0));
    assert!(b["etag"].is_string(), "{b}");
    let v2 = create(&srv, &alice, "pk2").await;
    assert_ne!(v1, v2);
    let (_, b) = srv.get(VERSION, &alice).await;
    assert_eq!(
        b["version"],
        json!(v2),
        "the newest version is the current one"
    );
    let (s, b) = srv.get(&format!("{VERSION}/{v1}"), &alice).await;
    assert_eq!(
        (s, b["auth_data"]["public_key"].as_str()),
        (200, Some("pk1")),
        "{b}"
    );

    // Only auth_data changes; the algorithm and the version must match.
    let (s, b) = srv
        .put(&format!("{VERSION}/{v2}"), &alice, json!({"algorithm": ALG, "auth_data": {"public_key": "pk2", "signatures": {}}, "version": v2}))
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, b) = srv.get(&format!("{VERSION}/{v2}"), &alice).await;
    assert_eq!(
        b["auth_data"],
        json!({"public_key": "pk2", "signatures": {}})
    );
    let (s, b) = srv
        .put(
            &format!("{VERSION}/{v2}"),
            &alice,
            json!({"algorithm": "other", "auth_data": {}}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, b) = srv
        .put(
            &format!("{VERSION}/{v2}"),
            &alice,
            json!({"algorithm": ALG, "auth_data": {}, "version": v1}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, b) = srv
        .put(
            &format!("{VERSION}/999"),
            &alice,
            json!({"algorithm": ALG, "auth_data": {}}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{b}"
    );

    // Deleting the current version makes the previous one current; deleting twice succeeds.
    let del = |v: &str| format!("{VERSION}/{v}");
    let (s, b) = srv
        .request("DELETE", &del(&v2), Some(&alice.token), None)
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = srv
        .request("DELETE", &del(&v2), Some(&alice.token), None)
        .await;
    assert_eq!(s, 200);
    let (s, b) = srv.get(&del(&v2), &alice).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{b}"
    );
    let (_, b) = srv.get(VERSION, &alice).await;
    assert_eq!(b["version"], json!(v1));
    let (s, b) = srv
        .request("DELETE", &del("424242"), Some(&alice.token), None)
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{b}"
    );
    let (s, b) = srv.get(&del("not-a-number"), &alice).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{b}"
    );
    // A new version never reuses a deleted number.
    let v3 = create(&srv, &alice, "pk3").await;
    assert!(v3 != v1 && v3 != v2);
}

#[tokio::test]
async fn keys_are_stored_read_and_deleted_at_every_level_with_count_and_etag() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let v = create(&srv, &alice, "pk").await;
    let (s, b) = srv
        .put(
            &format!("/_matrix/client/v3/room_keys/keys?version={v}"),
            &alice,
            json!({"rooms": {
                ROOM: {"sessions": {"s1": key_data(0, 0, true, "a"), "s2": key_data(3, 1, false, "b")}},
                "!other:localhost": {"sessions": {"s3": key_data(0, 0, false, "c")}},
            }}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["count"], json!(3), "{b}");
    let etag1 = b["etag"].as_str().expect("etag").to_owned();

    let (s, b) = srv
        .put(
            &session_path(ROOM, "s4", &v),
            &alice,
            key_data(1, 0, false, "d"),
        )
        .await;
    assert_eq!((s, b["count"].as_u64()), (200, Some(4)), "{b}");
    let etag2 = b["etag"].as_str().expect("etag").to_owned();
    assert_ne!(etag1, etag2);
    let (s, b) = srv
        .put(
            &format!(
                "/_matrix/client/v3/room_keys/keys/{}?version={v}",
                enc("!third:localhost")
            ),
            &alice,
            json!({"sessions": {"s5": key_data(0, 0, false, "e")}}),
        )
        .await;
    assert_eq!((s, b["count"].as_u64()), (200, Some(5)), "{b}");

    let (s, all) = srv
        .get(
            &format!("/_matrix/client/v3/room_keys/keys?version={v}"),
            &alice,
        )
        .await;
    assert_eq!(s, 200, "{all}");
    assert_eq!(
        all["rooms"][ROOM]["sessions"]["s2"],
        key_data(3, 1, false, "b"),
        "{all}"
    );
    assert_eq!(all["rooms"].as_object().map(|r| r.len()), Some(3));
    let (s, room) = srv
        .get(
            &format!(
                "/_matrix/client/v3/room_keys/keys/{}?version={v}",
                enc(ROOM)
            ),
            &alice,
        )
        .await;
    assert_eq!(s, 200, "{room}");
    assert_eq!(
        room["sessions"].as_object().map(|s| s.len()),
        Some(3),
        "{room}"
    );
    let (s, one) = srv.get(&session_path(ROOM, "s1", &v), &alice).await;
    assert_eq!((s, one), (200, key_data(0, 0, true, "a")));
    let (s, b) = srv.get(&session_path(ROOM, "missing", &v), &alice).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{b}"
    );
    let (s, b) = srv
        .get(
            &format!(
                "/_matrix/client/v3/room_keys/keys/{}?version={v}",
                enc("!empty:localhost")
            ),
            &alice,
        )
        .await;
    assert_eq!((s, b), (200, json!({"sessions": {}})));
    let (_, b) = srv.get(VERSION, &alice).await;
    assert_eq!(b["count"], json!(5), "{b}");

    // Deleting one session, one room, everything.
    let (s, b) = srv
        .request(
            "DELETE",
            &session_path(ROOM, "s1", &v),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!((s, b["count"].as_u64()), (200, Some(4)), "{b}");
    let (s, b) = srv
        .request(
            "DELETE",
            &format!(
                "/_matrix/client/v3/room_keys/keys/{}?version={v}",
                enc(ROOM)
            ),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!((s, b["count"].as_u64()), (200, Some(2)), "{b}");
    let (s, b) = srv
        .request(
            "DELETE",
            &format!("/_matrix/client/v3/room_keys/keys?version={v}"),
            Some(&alice.token),
            None,
        )
        .await;
    assert_eq!((s, b["count"].as_u64()), (200, Some(0)), "{b}");
    let (_, b) = srv
        .get(
            &format!("/_matrix/client/v3/room_keys/keys?version={v}"),
            &alice,
        )
        .await;
    assert_eq!(b, json!({"rooms": {}}));
}

#[tokio::test]
async fn a_better_session_replaces_a_worse_one_and_not_the_other_way() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let v = create(&srv, &alice, "pk").await;
    let path = session_path(ROOM, "s", &v);
    let put = |data: Value| {
        let (srv, alice, path) = (&srv, &alice, path.clone());
        async move {
            let (s, b) = srv.put(&path, alice, data).await;
            assert_eq!(s, 200, "{b}");
            let (_, got) = srv.get(&path, alice).await;
            got["session_data"]["ciphertext"]
                .as_str()
                .expect("stored")
                .to_owned()
        }
    };
    assert_eq!(put(key_data(5, 2, false, "first")).await, "first");
    // Lower first_message_index wins.
    assert_eq!(
        put(key_data(3, 9, false, "lower index")).await,
        "lower index"
    );
    assert_eq!(
        put(key_data(4, 0, false, "higher index")).await,
        "lower index"
    );
    // Same index: fewer forwards wins; equal keeps what is stored.
    assert_eq!(
        put(key_data(3, 1, false, "fewer forwards")).await,
        "fewer forwards"
    );
    assert_eq!(put(key_data(3, 1, false, "equal")).await, "fewer forwards");
    // Verified beats unverified, even with a higher index (the spec's first rule).
    assert_eq!(put(key_data(8, 5, true, "verified")).await, "verified");
    assert_eq!(put(key_data(0, 0, false, "unverified")).await, "verified");
    assert_eq!(
        put(key_data(7, 5, true, "verified lower")).await,
        "verified lower"
    );
    // Writes that change nothing keep the etag.
    let (_, a) = srv.get(VERSION, &alice).await;
    let (_, b) = srv.put(&path, &alice, key_data(9, 9, false, "worse")).await;
    assert_eq!(a["etag"], b["etag"], "{a} {b}");
}

#[tokio::test]
async fn keys_go_to_the_current_version_only() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    // No backup at all.
    let (s, b) = srv
        .put(
            &session_path(ROOM, "s", "1"),
            &alice,
            key_data(0, 0, false, "x"),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{b}"
    );
    let v1 = create(&srv, &alice, "pk1").await;
    let v2 = create(&srv, &alice, "pk2").await;
    for version in [v1.as_str(), "12345", "junk"] {
        let (s, b) = srv
            .put(
                &session_path(ROOM, "s", version),
                &alice,
                key_data(0, 0, false, "x"),
            )
            .await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (403, Some("M_WRONG_ROOM_KEYS_VERSION")),
            "{b}"
        );
        assert_eq!(b["current_version"], json!(v2), "{b}");
    }
    let (s, b) = srv
        .put(
            &format!("/_matrix/client/v3/room_keys/keys?version={v1}"),
            &alice,
            json!({"rooms": {}}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (403, Some("M_WRONG_ROOM_KEYS_VERSION")),
        "{b}"
    );
    // Reading an older version still works.
    let (s, b) = srv
        .get(
            &format!("/_matrix/client/v3/room_keys/keys?version={v1}"),
            &alice,
        )
        .await;
    assert_eq!((s, b), (200, json!({"rooms": {}})));
    let (s, b) = srv.get("/_matrix/client/v3/room_keys/keys", &alice).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_MISSING_PARAM")),
        "{b}"
    );
}

#[tokio::test]
async fn nobody_reads_or_writes_another_users_backup() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let mallory = srv.register("mallory").await;
    let v = create(&srv, &alice, "alice-pk").await;
    let (s, _) = srv
        .put(
            &session_path(ROOM, "secret", &v),
            &alice,
            key_data(0, 0, true, "alice's"),
        )
        .await;
    assert_eq!(s, 200);
    // Mallory has no backup: Alice's version number means nothing for her.
    let (s, b) = srv.get(VERSION, &mallory).await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = srv.get(&format!("{VERSION}/{v}"), &mallory).await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = srv.get(&session_path(ROOM, "secret", &v), &mallory).await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = srv
        .get(
            &format!("/_matrix/client/v3/room_keys/keys?version={v}"),
            &mallory,
        )
        .await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = srv
        .put(
            &session_path(ROOM, "secret", &v),
            &mallory,
            key_data(0, 0, true, "mallory's"),
        )
        .await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = srv
        .request(
            "DELETE",
            &format!("{VERSION}/{v}"),
            Some(&mallory.token),
            None,
        )
        .await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = srv
        .put(
            &format!("{VERSION}/{v}"),
            &mallory,
            json!({"algorithm": ALG, "auth_data": {"public_key": "evil"}}),
        )
        .await;
    assert_eq!(s, 404, "{b}");
    // Mallory's own backup gets her own number space and never shows Alice's keys.
    let mv = create(&srv, &mallory, "mallory-pk").await;
    let (_, b) = srv
        .get(
            &format!("/_matrix/client/v3/room_keys/keys?version={mv}"),
            &mallory,
        )
        .await;
    assert_eq!(b, json!({"rooms": {}}));
    let (_, b) = srv.get(&session_path(ROOM, "secret", &v), &alice).await;
    assert_eq!(b["session_data"]["ciphertext"], json!("alice's"));
    let (_, b) = srv.get(&format!("{VERSION}/{v}"), &alice).await;
    assert_eq!(b["auth_data"]["public_key"], json!("alice-pk"));
}

#[tokio::test]
async fn malformed_backup_requests_are_refused() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let (s, b) = srv.post(VERSION, &alice, json!({"auth_data": {}})).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_MISSING_PARAM")),
        "{b}"
    );
    let (s, b) = srv
        .post(VERSION, &alice, json!({"algorithm": ALG, "auth_data": "x"}))
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{b}");
    let v = create(&srv, &alice, "pk").await;
    let cases = vec![
        json!({"first_message_index": -1, "forwarded_count": 0, "is_verified": false, "session_data": {}}),
        json!({"first_message_index": 0, "forwarded_count": 0, "is_verified": "yes", "session_data": {}}),
        json!({"first_message_index": 0, "forwarded_count": 0, "is_verified": false, "session_data": "x"}),
    ];
    for c in cases {
        let (s, b) = srv
            .put(&session_path(ROOM, "s", &v), &alice, c.clone())
            .await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (400, Some("M_BAD_JSON")),
            "{c} -> {b}"
        );
    }
    let (s, b) = srv
        .put(
            &session_path(ROOM, "s", &v),
            &alice,
            json!({"first_message_index": 0}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_MISSING_PARAM")),
        "{b}"
    );
    let (s, b) = srv
        .put(
            &session_path("not-a-room", "s", &v),
            &alice,
            key_data(0, 0, false, "x"),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, b) = srv
        .put(
            &format!("/_matrix/client/v3/room_keys/keys?version={v}"),
            &alice,
            json!({"rooms": {ROOM: {"sessions": 5}}}),
        )
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{b}");
    let (_, b) = srv.get(VERSION, &alice).await;
    assert_eq!(b["count"], json!(0), "{b}");
}

#[tokio::test]
async fn secret_storage_account_data_round_trips() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let since = srv.sync(&alice, None, 0).await["next_batch"]
        .as_str()
        .expect("t")
        .to_owned();
    let items = [
        (
            "m.secret_storage.key.abc",
            json!({"algorithm": "m.secret_storage.v1.aes-hmac-sha2", "iv": "i", "mac": "m", "passphrase": {"algorithm": "m.pbkdf2", "iterations": 500000, "salt": "s"}}),
        ),
        ("m.secret_storage.default_key", json!({"key": "abc"})),
        (
            "m.cross_signing.master",
            json!({"encrypted": {"abc": {"iv": "i", "ciphertext": "c", "mac": "m"}}}),
        ),
        (
            "m.cross_signing.self_signing",
            json!({"encrypted": {"abc": {"iv": "i2", "ciphertext": "c2", "mac": "m2"}}}),
        ),
        (
            "m.cross_signing.user_signing",
            json!({"encrypted": {"abc": {"iv": "i3", "ciphertext": "c3", "mac": "m3"}}}),
        ),
        (
            "m.megolm_backup.v1",
            json!({"encrypted": {"abc": {"iv": "i4", "ciphertext": "c4", "mac": "m4"}}}),
        ),
    ];
    for (kind, content) in &items {
        let path = format!(
            "/_matrix/client/v3/user/{}/account_data/{kind}",
            enc(&alice.user_id)
        );
        let (s, b) = srv.put(&path, &alice, content.clone()).await;
        assert_eq!(s, 200, "{b}");
        let (s, b) = srv.get(&path, &alice).await;
        assert_eq!((s, &b), (200, content), "{kind}");
    }
    // Another device of the user receives them by sync.
    let sync = srv.sync(&alice, Some(&since), 0).await;
    let events = sync["account_data"]["events"].as_array().expect("events");
    for (kind, content) in &items {
        assert!(
            events
                .iter()
                .any(|e| e["type"] == json!(kind) && &e["content"] == content),
            "{kind}"
        );
    }
}

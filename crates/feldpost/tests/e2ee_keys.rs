//! End-to-end encryption keys: upload, query, claim, changes, cross-signing and signatures,
//! with their authorization rules and bad input.

mod common;
mod e2ee_support;

use common::TestServer;
use e2ee_support::*;
use serde_json::{Value, json};

const UPLOAD: &str = "/_matrix/client/v3/keys/upload";
const CLAIM: &str = "/_matrix/client/v3/keys/claim";
const SIGNING: &str = "/_matrix/client/v3/keys/device_signing/upload";
const SIGNATURES: &str = "/_matrix/client/v3/keys/signatures/upload";

#[tokio::test]
async fn device_keys_round_trip_through_query() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let key = upload_device_keys(&srv, &alice).await;
    let q = query(&srv, &bob, &[&alice.user_id]).await;
    let dk = &q["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(dk["keys"][key.key_id()], json!(key.public), "{q}");
    assert_eq!(dk["user_id"], json!(alice.user_id));
    assert!(dk["signatures"][&alice.user_id][key.key_id()].is_string());
    // The display name set at registration rides in `unsigned`.
    assert!(dk["unsigned"].is_object(), "{dk}");
    // Asking for one device only; an unknown user is simply missing.
    let (s, q) = srv
        .post(
            "/_matrix/client/v3/keys/query",
            &bob,
            json!({"device_keys": {alice.user_id.clone(): ["NOPE"], "@nobody:localhost": []}}),
        )
        .await;
    assert_eq!(s, 200, "{q}");
    assert_eq!(q["device_keys"][&alice.user_id], json!({}));
    assert!(q["device_keys"].get("@nobody:localhost").is_none());
    // Another server's users are reported as a failure of that server.
    let (s, q) = srv
        .post(
            "/_matrix/client/v3/keys/query",
            &bob,
            json!({"device_keys": {"@carol:elsewhere.example": []}}),
        )
        .await;
    assert_eq!(s, 200, "{q}");
    assert!(q["failures"]["elsewhere.example"].is_object(), "{q}");
}

#[tokio::test]
async fn device_keys_for_another_device_or_user_are_refused() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    // Bob's correctly signed keys, uploaded with Alice's token.
    let key = Key::named(&bob.device_id);
    let (s, b) = srv
        .post(
            UPLOAD,
            &alice,
            json!({"device_keys": device_keys(&bob, &key)}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{b}"
    );
    // Alice's user with another device id.
    let mut other = alice.clone();
    other.device_id = "OTHERDEVICE".into();
    let key = Key::named("OTHERDEVICE");
    let (s, b) = srv
        .post(
            UPLOAD,
            &alice,
            json!({"device_keys": device_keys(&other, &key)}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{b}"
    );
    let q = query(&srv, &alice, &[&alice.user_id, &bob.user_id]).await;
    assert_eq!(q["device_keys"][&alice.user_id], json!({}), "{q}");
    assert_eq!(q["device_keys"][&bob.user_id], json!({}), "{q}");
}

#[tokio::test]
async fn device_keys_must_carry_a_valid_self_signature() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let key = Key::named(&alice.device_id);
    // Signed by another key than the one it publishes.
    let mut dk = device_keys(&alice, &key);
    let impostor = Key::named(&alice.device_id);
    dk["keys"][format!("ed25519:{}", alice.device_id)] = json!(impostor.public);
    let (s, b) = srv.post(UPLOAD, &alice, json!({"device_keys": dk})).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    // Tampered after signing.
    let mut dk = device_keys(&alice, &key);
    dk["algorithms"] = json!(["m.olm.v1.curve25519-aes-sha2"]);
    let (s, b) = srv.post(UPLOAD, &alice, json!({"device_keys": dk})).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    // No signature at all.
    let mut dk = device_keys(&alice, &key);
    dk["signatures"] = json!({});
    let (s, b) = srv.post(UPLOAD, &alice, json!({"device_keys": dk})).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    // A signature that is not base64.
    let mut dk = device_keys(&alice, &key);
    dk["signatures"][&alice.user_id][key.key_id()] = json!("!!!");
    let (s, b) = srv.post(UPLOAD, &alice, json!({"device_keys": dk})).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    // Nothing was stored.
    let q = query(&srv, &alice, &[&alice.user_id]).await;
    assert_eq!(q["device_keys"][&alice.user_id], json!({}), "{q}");
}

#[tokio::test]
async fn malformed_uploads_are_bad_json_or_invalid() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let key = Key::named(&alice.device_id);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"device_keys": "nope"}), "M_BAD_JSON"),
        (
            json!({"device_keys": {"user_id": alice.user_id}}),
            "M_MISSING_PARAM",
        ),
        (
            json!({"one_time_keys": {"signed_curve25519:A": 5}}),
            "M_BAD_JSON",
        ),
        (
            json!({"one_time_keys": {"nocolon": "abc"}}),
            "M_INVALID_PARAM",
        ),
        (
            json!({"one_time_keys": {"signed_curve25519:A": {"key": 1, "signatures": {}}}}),
            "M_BAD_JSON",
        ),
        (
            json!({"one_time_keys": {"signed_curve25519:A": {"key": "k"}}}),
            "M_BAD_JSON",
        ),
        (json!({"one_time_keys": []}), "M_BAD_JSON"),
        (
            json!({"fallback_keys": {
            "signed_curve25519:A": signed_key(&alice, &key, true),
            "signed_curve25519:B": signed_key(&alice, &key, true)}}),
            "M_INVALID_PARAM",
        ),
    ];
    for (body, code) in cases {
        let (s, b) = srv.post(UPLOAD, &alice, body.clone()).await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (400, Some(code)),
            "{body} -> {b}"
        );
    }
    let (s, b) = srv
        .raw("POST", UPLOAD, Some(&alice.token), b"{not json")
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_NOT_JSON")), "{b}");
    // Once the device key is known, one-time keys must be signed with it.
    upload_device_keys(&srv, &alice).await;
    let stranger = Key::named(&alice.device_id);
    let (s, b) = srv
        .post(
            UPLOAD,
            &alice,
            json!({"one_time_keys": {"signed_curve25519:X": signed_key(&alice, &stranger, false)}}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
}

#[tokio::test]
async fn one_time_keys_are_counted_and_each_claimed_once_then_the_fallback() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let key = upload_device_keys(&srv, &alice).await;
    let b = upload_otks(&srv, &alice, &key, "A", 3).await;
    assert_eq!(
        b["one_time_key_counts"]["signed_curve25519"],
        json!(3),
        "{b}"
    );
    // Re-uploading the same keys changes nothing; the same id with other content is refused.
    let (s, b) = srv
        .post(
            UPLOAD,
            &alice,
            json!({"one_time_keys": {"signed_curve25519:A0": signed_key(&alice, &key, false)}}),
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, b) = srv
        .post(
            UPLOAD,
            &alice,
            json!({"fallback_keys": {"signed_curve25519:F1": signed_key(&alice, &key, true)}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["one_time_key_counts"]["signed_curve25519"],
        json!(3),
        "{b}"
    );
    let sync = srv.sync(&alice, None, 0).await;
    assert_eq!(
        sync["device_one_time_keys_count"]["signed_curve25519"],
        json!(3),
        "{sync}"
    );
    assert_eq!(
        sync["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );

    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        let (s, c) = srv
            .post(
                CLAIM,
                &bob,
                json!({"one_time_keys": {alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"}}, "timeout": 10000}),
            )
            .await;
        assert_eq!(s, 200, "{c}");
        let keys = c["one_time_keys"][&alice.user_id][&alice.device_id]
            .as_object()
            .expect("a key")
            .clone();
        assert_eq!(keys.len(), 1);
        let (id, k) = keys.into_iter().next().expect("key");
        assert!(id.starts_with("signed_curve25519:A"), "{id}");
        assert!(k.get("fallback").is_none());
        assert!(seen.insert(id), "a one-time key was handed out twice");
    }
    // None left: the fallback key, as often as asked, and sync says it was used.
    for _ in 0..2 {
        let (_, c) = srv
            .post(
                CLAIM,
                &bob,
                json!({"one_time_keys": {alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"}}}),
            )
            .await;
        let k = &c["one_time_keys"][&alice.user_id][&alice.device_id]["signed_curve25519:F1"];
        assert_eq!(k["fallback"], json!(true), "{c}");
    }
    let sync = srv.sync(&alice, None, 0).await;
    assert_eq!(
        sync["device_one_time_keys_count"]["signed_curve25519"],
        json!(0),
        "{sync}"
    );
    assert_eq!(
        sync["device_unused_fallback_key_types"],
        json!([]),
        "{sync}"
    );
    // A new fallback key is unused again.
    let (s, _) = srv
        .post(
            UPLOAD,
            &alice,
            json!({"fallback_keys": {"signed_curve25519:F2": signed_key(&alice, &key, true)}}),
        )
        .await;
    assert_eq!(s, 200);
    let sync = srv.sync(&alice, None, 0).await;
    assert_eq!(
        sync["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );
    // Unknown devices and algorithms yield nothing.
    let (s, c) = srv
        .post(
            CLAIM,
            &bob,
            json!({"one_time_keys": {alice.user_id.clone(): {"NODEVICE": "signed_curve25519", alice.device_id.clone(): "other_alg"}}}),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["one_time_keys"], json!({}), "{c}");
}

#[tokio::test]
async fn concurrent_claims_never_share_a_key() {
    let srv = std::sync::Arc::new(TestServer::start().await);
    let alice = srv.register("alice").await;
    let key = upload_device_keys(&srv, &alice).await;
    upload_otks(&srv, &alice, &key, "K", 20).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let srv = srv.clone();
        let claimer = srv.register(&format!("claimer{i}")).await;
        let (uid, did) = (alice.user_id.clone(), alice.device_id.clone());
        tasks.push(tokio::spawn(async move {
            let (_, c) = srv
                .post(
                    CLAIM,
                    &claimer,
                    json!({"one_time_keys": {uid.clone(): {did.clone(): "signed_curve25519"}}}),
                )
                .await;
            c["one_time_keys"][&uid][&did]
                .as_object()
                .and_then(|m| m.keys().next().cloned())
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let id = t.await.expect("task").expect("every claim got a key");
        assert!(ids.insert(id), "a key was handed out twice");
    }
    assert_eq!(ids.len(), 20);
}

#[tokio::test]
async fn keys_changes_reports_device_changes_of_room_members() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let carol = srv.register("carol").await;
    let room = srv
        .create_room(&alice, json!({"preset": "public_chat"}))
        .await;
    srv.join(&bob, &room).await;
    let from = srv.sync(&alice, None, 0).await["next_batch"]
        .as_str()
        .expect("token")
        .to_owned();
    upload_device_keys(&srv, &bob).await;
    upload_device_keys(&srv, &carol).await; // shares no room with Alice
    let to = srv.sync(&alice, Some(&from), 0).await["next_batch"]
        .as_str()
        .expect("token")
        .to_owned();
    let (s, b) = srv
        .get(
            &format!("/_matrix/client/v3/keys/changes?from={from}&to={to}"),
            &alice,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["changed"], json!([bob.user_id]), "{b}");
    let (s, b) = srv
        .get(
            "/_matrix/client/v3/keys/changes?from=garbage&to=s1_0",
            &alice,
        )
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, b) = srv
        .get("/_matrix/client/v3/keys/changes?to=s1_0", &alice)
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_MISSING_PARAM")),
        "{b}"
    );
}

#[tokio::test]
async fn cross_signing_first_upload_needs_no_auth_but_replacing_does() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let cs = bootstrap_cross_signing(&srv, &alice).await;
    // Everyone sees the master and self-signing keys; only Alice her user-signing key.
    let q = query(&srv, &bob, &[&alice.user_id]).await;
    assert_eq!(
        q["master_keys"][&alice.user_id]["keys"][cs.master.key_id()],
        json!(cs.master.public),
        "{q}"
    );
    assert_eq!(
        q["self_signing_keys"][&alice.user_id]["keys"][cs.self_signing.key_id()],
        json!(cs.self_signing.public)
    );
    assert!(q["user_signing_keys"].get(&alice.user_id).is_none(), "{q}");
    let q = query(&srv, &alice, &[&alice.user_id]).await;
    assert_eq!(
        q["user_signing_keys"][&alice.user_id]["keys"][cs.user_signing.key_id()],
        json!(cs.user_signing.public),
        "{q}"
    );

    // Repeating the same keys (a retried request) needs no auth either.
    let (s, b) = srv
        .post(SIGNING, &alice, cs.upload_body(&alice.user_id))
        .await;
    assert_eq!(s, 200, "{b}");

    // New keys need the password.
    let new = CrossSigning::new();
    let (s, b) = srv
        .post(SIGNING, &alice, new.upload_body(&alice.user_id))
        .await;
    assert_eq!(s, 401, "{b}");
    assert_eq!(b["flows"][0]["stages"], json!(["m.login.password"]), "{b}");
    let session = b["session"].as_str().expect("session").to_owned();
    let mut body = new.upload_body(&alice.user_id);
    body["auth"] = json!({"type": "m.login.password", "session": session, "password": "wrong password",
        "identifier": {"type": "m.id.user", "user": alice.user_id}});
    let (s, b) = srv.post(SIGNING, &alice, body.clone()).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (401, Some("M_FORBIDDEN")),
        "{b}"
    );
    body["auth"]["password"] = json!("correct horse");
    let (s, b) = srv.post(SIGNING, &alice, body).await;
    assert_eq!(s, 200, "{b}");
    let q = query(&srv, &bob, &[&alice.user_id]).await;
    assert_eq!(
        q["master_keys"][&alice.user_id]["keys"][new.master.key_id()],
        json!(new.master.public),
        "{q}"
    );
}

#[tokio::test]
async fn cross_signing_keys_must_be_well_formed_and_signed_by_the_master_key() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let cs = CrossSigning::new();
    // Self-signing key signed by something else than the master key.
    let mut body = cs.upload_body(&alice.user_id);
    body["self_signing_key"] = cross_signing_key(
        &alice.user_id,
        "self_signing",
        &cs.self_signing,
        Some(&cs.user_signing),
    );
    let (s, b) = srv.post(SIGNING, &alice, body).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_SIGNATURE")),
        "{b}"
    );
    // A self-signing key without any master key.
    let body = json!({"self_signing_key": cross_signing_key(&alice.user_id, "self_signing", &cs.self_signing, Some(&cs.master))});
    let (s, b) = srv.post(SIGNING, &alice, body).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_MISSING_PARAM")),
        "{b}"
    );
    // Keys for someone else.
    let (s, b) = srv
        .post(SIGNING, &alice, cs.upload_body(&bob.user_id))
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{b}"
    );
    // Wrong usage, two public keys, a key id that does not match its key.
    let mut body = cs.upload_body(&alice.user_id);
    body["master_key"]["usage"] = json!(["self_signing"]);
    let (s, b) = srv.post(SIGNING, &alice, body).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let mut body = cs.upload_body(&alice.user_id);
    body["master_key"]["keys"]["ed25519:other"] = json!("other");
    let (s, b) = srv.post(SIGNING, &alice, body).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let body = json!({"master_key": {"user_id": alice.user_id, "usage": ["master"], "keys": {"ed25519:abc": "def"}}});
    let (s, b) = srv.post(SIGNING, &alice, body).await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, b) = srv.post(SIGNING, &alice, json!({"master_key": 7})).await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{b}");
    // Nothing stored by any of these.
    let q = query(&srv, &alice, &[&alice.user_id]).await;
    assert_eq!(q["master_keys"], json!({}), "{q}");
}

#[tokio::test]
async fn signatures_of_own_devices_and_other_users_master_keys() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let carol = srv.register("carol").await;
    let alice_key = upload_device_keys(&srv, &alice).await;
    let bob_key = upload_device_keys(&srv, &bob).await;
    let acs = bootstrap_cross_signing(&srv, &alice).await;
    let bcs = bootstrap_cross_signing(&srv, &bob).await;

    // Alice's self-signing key signs her device; her device signs her master key; her
    // user-signing key signs Bob's master key.
    let mut dev = device_keys(&alice, &alice_key);
    acs.self_signing.sign(&alice.user_id, &mut dev);
    let mut master = cross_signing_key(&alice.user_id, "master", &acs.master, None);
    alice_key.sign(&alice.user_id, &mut master);
    let mut bob_master = cross_signing_key(&bob.user_id, "master", &bcs.master, None);
    acs.user_signing.sign(&alice.user_id, &mut bob_master);
    let (s, b) = srv
        .post(
            SIGNATURES,
            &alice,
            json!({
                alice.user_id.clone(): {alice.device_id.clone(): dev, acs.master.public.clone(): master},
                bob.user_id.clone(): {bcs.master.public.clone(): bob_master},
            }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["failures"], json!({}), "{b}");

    // Carol sees Alice's device signed by Alice's self-signing key and Alice's master key signed
    // by her device, but not Alice's signature of Bob's master key.
    let q = query(&srv, &carol, &[&alice.user_id, &bob.user_id]).await;
    let sigs = &q["device_keys"][&alice.user_id][&alice.device_id]["signatures"][&alice.user_id];
    assert!(sigs[acs.self_signing.key_id()].is_string(), "{q}");
    assert!(
        q["master_keys"][&alice.user_id]["signatures"][&alice.user_id][alice_key.key_id()]
            .is_string(),
        "{q}"
    );
    assert!(
        q["master_keys"][&bob.user_id]["signatures"]
            .get(&alice.user_id)
            .is_none(),
        "{q}"
    );
    // Alice sees her own signature of Bob's key; Bob himself does not.
    let q = query(&srv, &alice, &[&bob.user_id]).await;
    assert!(
        q["master_keys"][&bob.user_id]["signatures"][&alice.user_id][acs.user_signing.key_id()]
            .is_string(),
        "{q}"
    );
    let q = query(&srv, &bob, &[&bob.user_id]).await;
    assert!(
        q["master_keys"][&bob.user_id]["signatures"]
            .get(&alice.user_id)
            .is_none(),
        "{q}"
    );
    let _ = bob_key;
}

#[tokio::test]
async fn forbidden_and_invalid_signatures_are_reported_per_key() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let alice_key = upload_device_keys(&srv, &alice).await;
    let bob_key = upload_device_keys(&srv, &bob).await;
    let acs = bootstrap_cross_signing(&srv, &alice).await;
    let bcs = bootstrap_cross_signing(&srv, &bob).await;

    // Signing another user's device directly is not allowed.
    let mut bob_dev = device_keys(&bob, &bob_key);
    acs.user_signing.sign(&alice.user_id, &mut bob_dev);
    // A signature that does not verify.
    let mut own_dev = device_keys(&alice, &alice_key);
    acs.self_signing.sign(&alice.user_id, &mut own_dev);
    own_dev["signatures"][&alice.user_id][acs.self_signing.key_id()] =
        json!(acs.self_signing.raw_signature(b"something else"));
    // An object that is not the stored key.
    let mut changed_master = cross_signing_key(&bob.user_id, "master", &bcs.master, None);
    changed_master["usage"] = json!(["master", "extra"]);
    acs.user_signing.sign(&alice.user_id, &mut changed_master);
    // Signing one's own device with the user-signing key is not what it is for.
    let mut wrong_key = device_keys(&alice, &alice_key);
    acs.user_signing.sign(&alice.user_id, &mut wrong_key);
    let (s, b) = srv
        .post(
            SIGNATURES,
            &alice,
            json!({
                bob.user_id.clone(): {bob.device_id.clone(): bob_dev, bcs.master.public.clone(): changed_master},
                alice.user_id.clone(): {alice.device_id.clone(): own_dev, "UNKNOWNKEY": {"a": 1}},
            }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let f = &b["failures"];
    assert_eq!(
        f[&bob.user_id][&bob.device_id]["errcode"],
        json!("M_FORBIDDEN"),
        "{b}"
    );
    assert_eq!(
        f[&bob.user_id][&bcs.master.public]["errcode"],
        json!("M_INVALID_SIGNATURE"),
        "{b}"
    );
    assert_eq!(
        f[&alice.user_id][&alice.device_id]["errcode"],
        json!("M_INVALID_SIGNATURE"),
        "{b}"
    );
    assert_eq!(
        f[&alice.user_id]["UNKNOWNKEY"]["errcode"],
        json!("M_NOT_FOUND"),
        "{b}"
    );
    let (s, b) = srv
        .post(
            SIGNATURES,
            &alice,
            json!({alice.user_id.clone(): {alice.device_id.clone(): wrong_key}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["failures"][&alice.user_id][&alice.device_id]["errcode"],
        json!("M_INVALID_SIGNATURE"),
        "{b}"
    );
    // Nothing of it became visible.
    let q = query(&srv, &bob, &[&alice.user_id, &bob.user_id]).await;
    let sigs = q["device_keys"][&alice.user_id][&alice.device_id]["signatures"][&alice.user_id]
        .as_object()
        .expect("sigs")
        .clone();
    assert_eq!(sigs.len(), 1, "{q}");
    let sigs = q["device_keys"][&bob.user_id][&bob.device_id]["signatures"]
        .as_object()
        .expect("sigs")
        .clone();
    assert_eq!(sigs.len(), 1, "{q}");
    let (s, b) = srv
        .post(SIGNATURES, &alice, json!({"not a user": {}}))
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{b}"
    );
    let (s, b) = srv
        .post(SIGNATURES, &alice, json!({alice.user_id.clone(): 5}))
        .await;
    assert_eq!((s, b["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{b}");
}

#[tokio::test]
async fn device_ids_and_cross_signing_keys_cannot_collide() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let cs = CrossSigning::new();
    // A device whose id is the master public key Alice is about to upload.
    let (s, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
                "password": "correct horse", "device_id": cs.master.public})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = srv
        .post(SIGNING, &alice, cs.upload_body(&alice.user_id))
        .await;
    assert_eq!(
        (s, b["errcode"].as_str()),
        (403, Some("M_FORBIDDEN")),
        "{b}"
    );
}

#[tokio::test]
async fn a_fresh_login_is_a_fresh_device_without_keys() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let key = upload_device_keys(&srv, &alice).await;
    upload_otks(&srv, &alice, &key, "A", 2).await;
    let second = login(&srv, "alice").await;
    assert_ne!(second.device_id, alice.device_id);
    let sync = srv.sync(&second, None, 0).await;
    assert_eq!(
        sync["device_one_time_keys_count"],
        json!({"signed_curve25519": 0}),
        "{sync}"
    );
    assert_eq!(sync["device_unused_fallback_key_types"], json!([]));
    let q = query(&srv, &second, &[&alice.user_id]).await;
    let devices = q["device_keys"][&alice.user_id]
        .as_object()
        .expect("devices");
    assert_eq!(
        devices.keys().collect::<Vec<_>>(),
        vec![&alice.device_id],
        "{q}"
    );
}

#[tokio::test]
async fn deleting_a_device_removes_its_keys() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let phone = login(&srv, "alice").await;
    let key = upload_device_keys(&srv, &phone).await;
    upload_otks(&srv, &phone, &key, "P", 2).await;
    delete_device(&srv, &alice, &phone.device_id).await;
    let q = query(&srv, &bob, &[&alice.user_id]).await;
    assert_eq!(q["device_keys"][&alice.user_id], json!({}), "{q}");
    let (_, c) = srv
        .post(CLAIM, &bob, json!({"one_time_keys": {alice.user_id.clone(): {phone.device_id.clone(): "signed_curve25519"}}}))
        .await;
    assert_eq!(c["one_time_keys"], json!({}), "{c}");
}

#[tokio::test]
async fn keys_endpoints_need_an_access_token() {
    let srv = TestServer::start().await;
    for (m, p) in [
        ("POST", UPLOAD),
        ("POST", "/_matrix/client/v3/keys/query"),
        ("POST", CLAIM),
        ("GET", "/_matrix/client/v3/keys/changes?from=s0_0&to=s0_0"),
        ("POST", SIGNING),
        ("POST", SIGNATURES),
    ] {
        let (s, b) = srv.request(m, p, None, Some(json!({}))).await;
        assert_eq!(
            (s, b["errcode"].as_str()),
            (401, Some("M_MISSING_TOKEN")),
            "{p}"
        );
    }
}

#[tokio::test]
async fn logging_out_and_deactivating_remove_keys() {
    let srv = TestServer::start().await;
    let alice = srv.register("alice").await;
    let bob = srv.register("bob").await;
    let phone = login(&srv, "alice").await;
    upload_device_keys(&srv, &alice).await;
    upload_device_keys(&srv, &phone).await;
    bootstrap_cross_signing(&srv, &alice).await;
    let (s, b) = srv
        .post("/_matrix/client/v3/logout", &phone, json!({}))
        .await;
    assert_eq!(s, 200, "{b}");
    let q = query(&srv, &bob, &[&alice.user_id]).await;
    let devices: Vec<&String> = q["device_keys"][&alice.user_id]
        .as_object()
        .expect("devices")
        .keys()
        .collect();
    assert_eq!(devices, vec![&alice.device_id], "{q}");

    let path = "/_matrix/client/v3/account/deactivate";
    let (s, b) = srv.post(path, &alice, json!({})).await;
    assert_eq!(s, 401, "{b}");
    let session = b["session"].as_str().expect("session").to_owned();
    let (s, b) = srv
        .post(
            path,
            &alice,
            json!({"auth": {"type": "m.login.password", "session": session, "password": "correct horse",
                "identifier": {"type": "m.id.user", "user": alice.user_id}}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let q = query(&srv, &bob, &[&alice.user_id]).await;
    assert!(
        q["device_keys"]
            .get(&alice.user_id)
            .is_none_or(|d| d == &json!({})),
        "{q}"
    );
    assert_eq!(q["master_keys"], json!({}), "{q}");
    assert_eq!(q["self_signing_keys"], json!({}), "{q}");
}

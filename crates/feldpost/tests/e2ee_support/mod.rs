//! Helpers for the end-to-end encryption tests: ed25519 keys made and signed the way clients
//! sign them, and the key objects clients upload.
#![allow(dead_code)]

use ruma::serde::Base64;
use ruma::signatures::{Ed25519KeyPair, KeyPair};
use ruma::{CanonicalJsonObject, CanonicalJsonValue};
use serde_json::{Value, json};

use crate::common::{TestServer, User};

/// An ed25519 key pair whose key id is `ed25519:<name>`.
pub struct Key {
    pair: Ed25519KeyPair,
    pub name: String,
    pub public: String,
    /// A curve25519-looking key published next to it (the server does not use it).
    pub curve: String,
}

impl Key {
    /// A fresh key named after a device id.
    pub fn named(name: &str) -> Self {
        let doc = Ed25519KeyPair::generate();
        let pair = Ed25519KeyPair::from_der(&doc, name.to_owned()).expect("key pair");
        let public =
            Base64::<ruma::serde::base64::Standard, _>::new(pair.public_key().to_vec()).encode();
        Self {
            pair,
            name: name.to_owned(),
            public,
            curve: curve_key(),
        }
    }

    /// A fresh key named after its public key (cross-signing keys).
    pub fn cross_signing() -> Self {
        let doc = Ed25519KeyPair::generate();
        let probe = Ed25519KeyPair::from_der(&doc, "probe".into()).expect("key pair");
        let public =
            Base64::<ruma::serde::base64::Standard, _>::new(probe.public_key().to_vec()).encode();
        let pair = Ed25519KeyPair::from_der(&doc, public.clone()).expect("key pair");
        Self {
            pair,
            name: public.clone(),
            public,
            curve: curve_key(),
        }
    }

    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.name)
    }

    /// Signs `object` as `signer` (adds to its `signatures`).
    pub fn sign(&self, signer: &str, object: &mut Value) {
        let mut canon: CanonicalJsonObject = match CanonicalJsonValue::try_from(object.clone()) {
            Ok(CanonicalJsonValue::Object(o)) => o,
            _ => panic!("not an object"),
        };
        ruma::signatures::sign_json(signer, &self.pair, &mut canon).expect("sign");
        *object = serde_json::to_value(CanonicalJsonValue::Object(canon)).expect("json");
    }

    /// A raw signature of arbitrary bytes, base64.
    pub fn raw_signature(&self, message: &[u8]) -> String {
        Base64::<ruma::serde::base64::Standard, _>::new(self.pair.sign(message).as_bytes().to_vec())
            .encode()
    }
}

/// A random curve25519-looking key (32 bytes, base64); the server does not use it.
pub fn curve_key() -> String {
    let doc = Ed25519KeyPair::generate();
    let pair = Ed25519KeyPair::from_der(&doc, "x".into()).expect("key pair");
    Base64::<ruma::serde::base64::Standard, _>::new(pair.public_key().to_vec()).encode()
}

/// Device keys for `u`'s device, signed with `key` (which must be named after the device).
pub fn device_keys(u: &User, key: &Key) -> Value {
    let mut dk = json!({
        "user_id": u.user_id,
        "device_id": u.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{}", u.device_id): key.curve,
            format!("ed25519:{}", u.device_id): key.public,
        },
    });
    key.sign(&u.user_id, &mut dk);
    dk
}

/// A signed one-time (or fallback) key object.
pub fn signed_key(u: &User, key: &Key, fallback: bool) -> Value {
    let mut k = json!({"key": curve_key()});
    if fallback {
        k["fallback"] = json!(true);
    }
    key.sign(&u.user_id, &mut k);
    k
}

/// Uploads device keys for `u`'s device and returns the device's signing key.
pub async fn upload_device_keys(srv: &TestServer, u: &User) -> Key {
    let key = Key::named(&u.device_id);
    let (s, b) = srv
        .post(
            "/_matrix/client/v3/keys/upload",
            u,
            json!({"device_keys": device_keys(u, &key)}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    key
}

/// Uploads `n` signed one-time keys with ids `<prefix>0..n`.
pub async fn upload_otks(srv: &TestServer, u: &User, key: &Key, prefix: &str, n: usize) -> Value {
    let mut otks = serde_json::Map::new();
    for i in 0..n {
        otks.insert(
            format!("signed_curve25519:{prefix}{i}"),
            signed_key(u, key, false),
        );
    }
    let (s, b) = srv
        .post(
            "/_matrix/client/v3/keys/upload",
            u,
            json!({"one_time_keys": otks}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b
}

/// A cross-signing key object of `usage` for `user`, signed by `signer` if given.
pub fn cross_signing_key(user: &str, usage: &str, key: &Key, signer: Option<&Key>) -> Value {
    let mut k = json!({
        "user_id": user,
        "usage": [usage],
        "keys": {key.key_id(): key.public},
    });
    if let Some(s) = signer {
        s.sign(user, &mut k);
    }
    k
}

/// A user's three cross-signing keys.
pub struct CrossSigning {
    pub master: Key,
    pub self_signing: Key,
    pub user_signing: Key,
}

impl CrossSigning {
    pub fn new() -> Self {
        Self {
            master: Key::cross_signing(),
            self_signing: Key::cross_signing(),
            user_signing: Key::cross_signing(),
        }
    }

    pub fn upload_body(&self, user: &str) -> Value {
        json!({
            "master_key": cross_signing_key(user, "master", &self.master, None),
            "self_signing_key": cross_signing_key(user, "self_signing", &self.self_signing, Some(&self.master)),
            "user_signing_key": cross_signing_key(user, "user_signing", &self.user_signing, Some(&self.master)),
        })
    }
}

/// Uploads cross-signing keys for `u` (the first upload needs no auth).
pub async fn bootstrap_cross_signing(srv: &TestServer, u: &User) -> CrossSigning {
    let cs = CrossSigning::new();
    let (s, b) = srv
        .post(
            "/_matrix/client/v3/keys/device_signing/upload",
            u,
            cs.upload_body(&u.user_id),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    cs
}

/// Logs in `name` again, which creates a new device.
pub async fn login(srv: &TestServer, name: &str) -> User {
    let (s, b) = srv
        .request(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": name},
                "password": "correct horse",
            })),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    User {
        user_id: b["user_id"].as_str().expect("user_id").to_owned(),
        token: b["access_token"].as_str().expect("token").to_owned(),
        device_id: b["device_id"].as_str().expect("device").to_owned(),
    }
}

/// `/keys/query` for whole users.
pub async fn query(srv: &TestServer, u: &User, users: &[&str]) -> Value {
    let wanted: serde_json::Map<String, Value> =
        users.iter().map(|u| ((*u).to_owned(), json!([]))).collect();
    let (s, b) = srv
        .post(
            "/_matrix/client/v3/keys/query",
            u,
            json!({"device_keys": wanted, "timeout": 10000}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b
}

/// Deletes a device with password auth.
pub async fn delete_device(srv: &TestServer, u: &User, device: &str) {
    let path = format!("/_matrix/client/v3/devices/{device}");
    let (s, b) = srv
        .request("DELETE", &path, Some(&u.token), Some(json!({})))
        .await;
    assert_eq!(s, 401, "{b}");
    let session = b["session"].as_str().expect("session").to_owned();
    let (s, b) = srv
        .request(
            "DELETE",
            &path,
            Some(&u.token),
            Some(json!({"auth": {
                "type": "m.login.password",
                "session": session,
                "identifier": {"type": "m.id.user", "user": u.user_id},
                "password": "correct horse",
            }})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

/// The users in a sync's `device_lists.changed` (or `left`).
pub fn device_list(sync: &Value, which: &str) -> Vec<String> {
    sync["device_lists"][which]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

//! End-to-end encryption keys: device identity keys (verified against their self-signature),
//! one-time and fallback keys, claims, cross-signing keys and signatures, and device-list
//! tracking for sync and `/keys/changes`. The server never sees private keys; it checks what
//! clients publish so that nobody can publish keys for someone else's device.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use feldpost_storage::{
    ClaimedKey, CrossSigningKeyRecord, KeyClaim, KeyUpload, KeyUploadOutcome, OneTimeKeyRecord,
    SignatureRecord, Store,
};
use ruma::serde::Base64;
use ruma::signatures::PublicKeyMap;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, OwnedUserId, UserId};
use serde_json::{Map, Value, json};

use crate::notifier::Notifier;
use crate::{Error, ErrorKind, Result};

/// The most unclaimed one-time keys kept per device: clients keep far fewer (about 50 to 100), and
/// the bound keeps one device from filling the database.
pub const MAX_ONE_TIME_KEYS: u64 = 10_000;

/// Cross-signing key types, as stored and as the `usage` of each key.
const MASTER: &str = "master";
const SELF_SIGNING: &str = "self_signing";
const USER_SIGNING: &str = "user_signing";

/// The algorithm of one-time keys that clients expect a count for even when it is zero: some read
/// a missing count as "unknown" rather than "none left" and then never upload more.
const SIGNED_CURVE25519: &str = "signed_curve25519";

pub struct Keys {
    store: Arc<dyn Store>,
    notifier: Arc<Notifier>,
    server_name: OwnedServerName,
}

/// A device-list change as sync and `/keys/changes` report it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeviceListDelta {
    pub changed: Vec<String>,
    pub left: Vec<String>,
}

/// The keys of a `/keys/device_signing/upload` request, still unchecked.
#[derive(Debug, Default)]
pub struct CrossSigningUpload {
    pub master_key: Option<Value>,
    pub self_signing_key: Option<Value>,
    pub user_signing_key: Option<Value>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::bad_json(msg)
}

/// Converts JSON into canonical JSON (no floats, integers within the safe range).
fn canonical(v: &Value, what: &str) -> Result<CanonicalJsonObject> {
    match CanonicalJsonValue::try_from(v.clone()) {
        Ok(CanonicalJsonValue::Object(o)) => Ok(o),
        Ok(_) => Err(bad(format!("{what} must be a JSON object"))),
        Err(e) => Err(bad(format!("{what} is not canonical JSON: {e}"))),
    }
}

/// The canonical text of an object, as stored and compared.
fn canonical_text(v: &Value, what: &str) -> Result<String> {
    let o = canonical(v, what)?;
    serde_json::to_string(&CanonicalJsonValue::Object(o))
        .map_err(|e| Error::internal(e.to_string()))
}

/// The signed part of an object: everything but `signatures` and `unsigned`.
fn signed_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("signatures");
        o.remove("unsigned");
    }
    v
}

/// Whether two key objects are the same key, whatever signatures they carry.
fn same_signed_part(a: &Value, b: &Value) -> bool {
    match (
        CanonicalJsonValue::try_from(signed_part(a)),
        CanonicalJsonValue::try_from(signed_part(b)),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Whether `s` is an unpadded (or padded) base64 ed25519 public key.
pub fn is_ed25519_key(s: &str) -> bool {
    Base64::<ruma::serde::base64::Standard, Vec<u8>>::parse(s)
        .is_ok_and(|b| b.as_bytes().len() == 32)
}

/// Checks the one signature `signatures[signer][key_id]` of `object` with `public_key`, using the
/// Matrix signing rules (canonical JSON without `signatures` and `unsigned`).
pub fn verify_signature(object: &Value, signer: &str, key_id: &str, public_key: &str) -> bool {
    let Some(sig) = object
        .get("signatures")
        .and_then(|s| s.get(signer))
        .and_then(|s| s.get(key_id))
        .and_then(Value::as_str)
    else {
        return false;
    };
    let Ok(key) = Base64::parse(public_key) else {
        return false;
    };
    // Only the signature under test stays: every entity left in `signatures` must verify.
    let mut one = object.clone();
    let Some(o) = one.as_object_mut() else {
        return false;
    };
    o.insert("signatures".into(), json!({signer: {key_id: sig}}));
    let Ok(CanonicalJsonValue::Object(obj)) = CanonicalJsonValue::try_from(one) else {
        return false;
    };
    let mut keys: PublicKeyMap = BTreeMap::new();
    keys.insert(
        signer.to_owned(),
        BTreeMap::from([(key_id.to_owned(), key)]),
    );
    ruma::signatures::verify_json(&keys, &obj).is_ok()
}

/// The `(key_id, signature)` pairs an object carries for one signer.
fn signatures_by(object: &Value, signer: &str) -> Vec<(String, String)> {
    object
        .get("signatures")
        .and_then(|s| s.get(signer))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `viewer` may see a signature that `signer` made of one of `target`'s keys: their own,
/// and those the key's owner made. Other users' user-signing signatures stay private.
fn signature_visible(viewer: &str, target: &str, signer: &str) -> bool {
    signer == viewer || signer == target
}

/// Adds the stored signatures of one key that `viewer` may see to its JSON.
fn merge_signatures(object: &mut Value, sigs: &[SignatureRecord], key_id: &str, viewer: &str) {
    for s in sigs.iter().filter(|s| {
        s.target_key_id == key_id && signature_visible(viewer, &s.target_user_id, &s.signer_user_id)
    }) {
        let Some(o) = object.as_object_mut() else {
            return;
        };
        let all = o.entry("signatures").or_insert_with(|| json!({}));
        if !all.is_object() {
            *all = json!({});
        }
        if let Some(all) = all.as_object_mut() {
            let by = all
                .entry(s.signer_user_id.clone())
                .or_insert_with(|| json!({}));
            if let Some(by) = by.as_object_mut() {
                by.insert(s.signer_key_id.clone(), json!(s.signature));
            }
        }
    }
}

/// Splits `<algorithm>:<key_id>`.
fn split_key_name(name: &str) -> Result<(&str, &str)> {
    match name.split_once(':') {
        Some((a, k)) if !a.is_empty() && !k.is_empty() && a.len() <= 255 && k.len() <= 255 => {
            Ok((a, k))
        }
        _ => Err(Error::invalid_param(format!(
            "Key name {name:?} is not of the form <algorithm>:<key_id>"
        ))),
    }
}

fn parse_json(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|_| Error::internal("stored key unreadable"))
}

/// A validated cross-signing key: its public key and the JSON to store.
struct CheckedKey {
    public_key: String,
    json: Value,
}

impl Keys {
    pub fn new(
        store: Arc<dyn Store>,
        notifier: Arc<Notifier>,
        server_name: OwnedServerName,
    ) -> Self {
        Self {
            store,
            notifier,
            server_name,
        }
    }

    /// Wakes the syncs that report a change of `user`'s device list: the user's own and those of
    /// everyone in the user's rooms.
    async fn wake_device_list(&self, user: &str) -> Result<()> {
        self.notifier.wake_user(user);
        for m in self.store.rooms_for_user(user).await? {
            if m.membership == "join" {
                self.notifier.wake_room(&m.room_id);
            }
        }
        Ok(())
    }

    fn is_local(&self, user: &UserId) -> bool {
        user.server_name() == self.server_name
    }

    /// Checks uploaded device keys: they must be the requester's own device's, carry its ed25519
    /// key and be signed with it. Returns the object to store (with only that self-signature).
    fn check_device_keys(&self, user: &UserId, device: &str, keys: &Value) -> Result<Value> {
        let o = keys
            .as_object()
            .ok_or_else(|| bad("device_keys must be an object"))?;
        let field = |name: &str| {
            o.get(name)
                .ok_or_else(|| Error::missing_param(format!("device_keys.{name} missing")))
        };
        let uid = field("user_id")?
            .as_str()
            .ok_or_else(|| bad("device_keys.user_id must be a string"))?;
        let did = field("device_id")?
            .as_str()
            .ok_or_else(|| bad("device_keys.device_id must be a string"))?;
        if uid != user.as_str() || did != device {
            return Err(Error::forbidden(
                "Device keys may only be uploaded for the device of the access token",
            ));
        }
        let algorithms = field("algorithms")?
            .as_array()
            .ok_or_else(|| bad("device_keys.algorithms must be an array"))?;
        if algorithms.iter().any(|a| !a.is_string()) {
            return Err(bad("device_keys.algorithms must be strings"));
        }
        let key_map = field("keys")?
            .as_object()
            .ok_or_else(|| bad("device_keys.keys must be an object"))?;
        for (name, value) in key_map {
            let (_, key_device) = split_key_name(name)?;
            if key_device != device {
                return Err(Error::invalid_param(format!(
                    "Key {name} does not name this device"
                )));
            }
            if !value.is_string() {
                return Err(bad(format!("device_keys.keys.{name} must be a string")));
            }
        }
        let key_id = format!("ed25519:{device}");
        let ed25519 = key_map
            .get(&key_id)
            .and_then(Value::as_str)
            .ok_or_else(|| Error::missing_param(format!("device_keys.keys.{key_id} missing")))?;
        if !is_ed25519_key(ed25519) {
            return Err(Error::invalid_param(format!(
                "{key_id} is not an ed25519 public key"
            )));
        }
        if !field("signatures")?.is_object() {
            return Err(bad("device_keys.signatures must be an object"));
        }
        // Shape first: a value canonical JSON cannot carry is malformed, not badly signed.
        canonical(keys, "device_keys")?;
        if !verify_signature(keys, user.as_str(), &key_id, ed25519) {
            return Err(Error::invalid_param(
                "device_keys are not signed with the device's own ed25519 key",
            ));
        }
        let sig = signatures_by(keys, user.as_str())
            .into_iter()
            .find(|(k, _)| *k == key_id)
            .map(|(_, s)| s)
            .unwrap_or_default();
        let mut stored = keys.clone();
        if let Some(s) = stored.as_object_mut() {
            s.remove("unsigned");
            // Other signatures were not checked here; signatures are added through
            // /keys/signatures/upload, which checks them.
            s.insert("signatures".into(), json!({user.as_str(): {key_id: sig}}));
        }
        Ok(stored)
    }

    /// Checks one-time or fallback keys: well-formed names, and for signed keys a valid
    /// signature by the device when its ed25519 key is known.
    fn check_one_time_keys(
        &self,
        user: &UserId,
        device: &str,
        keys: &Map<String, Value>,
        ed25519: Option<&str>,
        what: &str,
    ) -> Result<Vec<OneTimeKeyRecord>> {
        let mut out = Vec::with_capacity(keys.len());
        for (name, value) in keys {
            let (algorithm, key_id) = split_key_name(name)?;
            match value {
                Value::String(_) => {}
                Value::Object(o) => {
                    if !o.get("key").is_some_and(Value::is_string) {
                        return Err(bad(format!("{what}.{name}.key must be a string")));
                    }
                    if !o.get("signatures").is_some_and(Value::is_object) {
                        return Err(bad(format!("{what}.{name}.signatures must be an object")));
                    }
                    if let Some(ed) = ed25519
                        && !verify_signature(value, user.as_str(), &format!("ed25519:{device}"), ed)
                    {
                        return Err(Error::invalid_param(format!(
                            "{what}.{name} is not signed by this device"
                        )));
                    }
                }
                _ => return Err(bad(format!("{what}.{name} must be a string or an object"))),
            }
            out.push(OneTimeKeyRecord {
                algorithm: algorithm.to_owned(),
                key_id: key_id.to_owned(),
                json: canonical_text_value(value, what)?,
            });
        }
        Ok(out)
    }

    /// `/keys/upload`: stores the device's keys and returns its one-time key counts.
    pub async fn upload(
        &self,
        user: &UserId,
        device: &str,
        device_keys: Option<Value>,
        one_time_keys: Option<Map<String, Value>>,
        fallback_keys: Option<Map<String, Value>>,
    ) -> Result<BTreeMap<String, u64>> {
        let checked = device_keys
            .as_ref()
            .map(|k| self.check_device_keys(user, device, k))
            .transpose()?;
        if checked.is_some() {
            // Device ids and cross-signing public keys share one namespace.
            let cross = self.store.cross_signing_keys(user.as_str()).await?;
            if cross.iter().any(|k| k.public_key == device) {
                return Err(Error::invalid_param(
                    "The device id is the same as one of the user's cross-signing keys",
                ));
            }
        }
        let ed25519 = match &checked {
            Some(k) => k
                .pointer(&format!("/keys/ed25519:{device}"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            None => self
                .store
                .device_keys(user.as_str(), device)
                .await?
                .and_then(|j| serde_json::from_str::<Value>(&j).ok())
                .and_then(|k| {
                    k.pointer(&format!("/keys/ed25519:{device}"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                }),
        };
        let otks = match &one_time_keys {
            Some(k) => {
                self.check_one_time_keys(user, device, k, ed25519.as_deref(), "one_time_keys")?
            }
            None => vec![],
        };
        let fallbacks = match &fallback_keys {
            Some(k) => {
                self.check_one_time_keys(user, device, k, ed25519.as_deref(), "fallback_keys")?
            }
            None => vec![],
        };
        let mut algorithms = HashSet::new();
        if fallbacks
            .iter()
            .any(|k| !algorithms.insert(k.algorithm.clone()))
        {
            return Err(Error::invalid_param(
                "At most one fallback key per algorithm may be uploaded",
            ));
        }
        if !otks.is_empty() {
            let held: u64 = self
                .store
                .one_time_key_counts(user.as_str(), device)
                .await?
                .iter()
                .map(|(_, n)| n)
                .sum();
            if held + otks.len() as u64 > MAX_ONE_TIME_KEYS {
                return Err(Error::invalid_param(format!(
                    "A device may hold at most {MAX_ONE_TIME_KEYS} unclaimed one-time keys"
                )));
            }
        }
        let device_keys = checked
            .as_ref()
            .map(|k| canonical_text(k, "device_keys"))
            .transpose()?;
        let outcome = self
            .store
            .upload_keys(KeyUpload {
                user_id: user.to_string(),
                device_id: device.to_owned(),
                device_keys,
                one_time_keys: otks,
                fallback_keys: fallbacks,
            })
            .await?;
        match outcome {
            KeyUploadOutcome::ConflictingOneTimeKey(key) => {
                return Err(Error::invalid_param(format!(
                    "One-time key {key} already exists with different content"
                )));
            }
            KeyUploadOutcome::Stored {
                device_keys_changed,
            } => {
                if device_keys_changed {
                    self.wake_device_list(user.as_str()).await?;
                }
            }
        }
        self.one_time_key_counts(user, device).await
    }

    /// Unclaimed one-time keys per algorithm (`signed_curve25519` always present).
    pub async fn one_time_key_counts(
        &self,
        user: &UserId,
        device: &str,
    ) -> Result<BTreeMap<String, u64>> {
        one_time_key_counts(self.store.as_ref(), user.as_str(), device).await
    }

    /// `/keys/query`: device keys and cross-signing keys of the given users, with the signatures
    /// `viewer` may see.
    pub async fn query(
        &self,
        viewer: &UserId,
        device_keys: BTreeMap<String, Vec<String>>,
    ) -> Result<Value> {
        let mut devices = Map::new();
        let mut masters = Map::new();
        let mut self_signing = Map::new();
        let mut user_signing = Map::new();
        let mut failures = Map::new();
        for (user, wanted) in device_keys {
            let user_id = OwnedUserId::try_from(user.as_str())
                .map_err(|_| Error::invalid_param(format!("Invalid user id {user}")))?;
            if !self.is_local(&user_id) {
                // Keys of other servers would come over federation, which this server does not
                // speak yet: reported as a failure of that server, as the spec describes.
                failures.insert(
                    user_id.server_name().to_string(),
                    json!({"errcode": "M_UNRECOGNIZED", "error": "Federation is not available"}),
                );
                continue;
            }
            if self.store.get_user(user_id.as_str()).await?.is_none() {
                continue;
            }
            let sigs = self.store.signatures_of(user_id.as_str()).await?;
            let mut user_devices = Map::new();
            for d in self
                .store
                .user_device_keys(user_id.as_str(), &wanted)
                .await?
            {
                let mut keys = parse_json(&d.json)?;
                merge_signatures(&mut keys, &sigs, &d.device_id, viewer.as_str());
                if let Some(o) = keys.as_object_mut() {
                    let mut unsigned = Map::new();
                    if let Some(name) = d.display_name {
                        unsigned.insert("device_display_name".into(), json!(name));
                    }
                    o.insert("unsigned".into(), Value::Object(unsigned));
                }
                user_devices.insert(d.device_id, keys);
            }
            devices.insert(user.clone(), Value::Object(user_devices));
            for k in self.store.cross_signing_keys(user_id.as_str()).await? {
                let mut key = parse_json(&k.json)?;
                merge_signatures(&mut key, &sigs, &k.public_key, viewer.as_str());
                match k.key_type.as_str() {
                    MASTER => {
                        masters.insert(user.clone(), key);
                    }
                    SELF_SIGNING => {
                        self_signing.insert(user.clone(), key);
                    }
                    // The user-signing key is shown to its owner only.
                    USER_SIGNING if user_id == viewer => {
                        user_signing.insert(user.clone(), key);
                    }
                    _ => {}
                }
            }
        }
        Ok(json!({
            "device_keys": devices,
            "master_keys": masters,
            "self_signing_keys": self_signing,
            "user_signing_keys": user_signing,
            "failures": failures,
        }))
    }

    /// `/keys/claim`: one key per requested device, each one-time key handed out once.
    pub async fn claim(&self, wanted: BTreeMap<String, BTreeMap<String, String>>) -> Result<Value> {
        let mut claims = Vec::new();
        let mut failures = Map::new();
        for (user, devices) in wanted {
            let user_id = OwnedUserId::try_from(user.as_str())
                .map_err(|_| Error::invalid_param(format!("Invalid user id {user}")))?;
            if !self.is_local(&user_id) {
                failures.insert(
                    user_id.server_name().to_string(),
                    json!({"errcode": "M_UNRECOGNIZED", "error": "Federation is not available"}),
                );
                continue;
            }
            for (device, algorithm) in devices {
                if algorithm.is_empty() {
                    return Err(Error::invalid_param("An algorithm may not be empty"));
                }
                claims.push(KeyClaim {
                    user_id: user.clone(),
                    device_id: device,
                    algorithm,
                });
            }
        }
        let claimed = self.store.claim_keys(claims).await?;
        let mut out: BTreeMap<String, BTreeMap<String, Map<String, Value>>> = BTreeMap::new();
        for ClaimedKey {
            user_id,
            device_id,
            algorithm,
            key_id,
            json,
            ..
        } in claimed
        {
            out.entry(user_id)
                .or_default()
                .entry(device_id)
                .or_default()
                .insert(format!("{algorithm}:{key_id}"), parse_json(&json)?);
        }
        Ok(json!({"one_time_keys": out, "failures": failures}))
    }

    /// `/keys/changes` and sync's `device_lists` between two stream positions.
    pub async fn changes(&self, user: &UserId, after: i64, up_to: i64) -> Result<DeviceListDelta> {
        device_list_delta(self.store.as_ref(), user.as_str(), after, up_to).await
    }

    /// Checks one cross-signing key of the request: the user's, of the expected usage, with one
    /// ed25519 public key.
    fn check_cross_signing_key(
        &self,
        user: &UserId,
        key: &Value,
        usage: &str,
    ) -> Result<CheckedKey> {
        let what = format!("{usage} key");
        let o = key
            .as_object()
            .ok_or_else(|| bad(format!("The {what} must be an object")))?;
        let uid = o
            .get("user_id")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::missing_param(format!("The {what} needs a user_id")))?;
        if uid != user.as_str() {
            return Err(Error::forbidden(format!(
                "The {what} must belong to the requesting user"
            )));
        }
        let usages = o
            .get("usage")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::missing_param(format!("The {what} needs a usage array")))?;
        if !usages.iter().any(|u| u.as_str() == Some(usage)) {
            return Err(Error::invalid_param(format!(
                "The {what} must have usage {usage}"
            )));
        }
        let keys = o
            .get("keys")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::missing_param(format!("The {what} needs keys")))?;
        let mut entries = keys.iter();
        let (Some((name, value)), None) = (entries.next(), entries.next()) else {
            return Err(Error::invalid_param(format!(
                "The {what} must have exactly one public key"
            )));
        };
        let public = name
            .strip_prefix("ed25519:")
            .filter(|p| Some(*p) == value.as_str() && is_ed25519_key(p))
            .ok_or_else(|| {
                Error::invalid_param(format!(
                    "The {what} must be ed25519:<public key> mapping to that public key"
                ))
            })?;
        if o.get("signatures").is_some_and(|s| !s.is_object()) {
            return Err(bad(format!("The {what}'s signatures must be an object")));
        }
        canonical(key, &what)?;
        Ok(CheckedKey {
            public_key: public.to_owned(),
            json: key.clone(),
        })
    }

    /// Whether uploading these cross-signing keys needs user-interactive auth: not for the first
    /// master key, nor for a repeat of the keys already stored (a retried request); always when
    /// it would replace a key.
    pub async fn cross_signing_upload_needs_auth(
        &self,
        user: &UserId,
        upload: &CrossSigningUpload,
    ) -> Result<bool> {
        let stored = self.store.cross_signing_keys(user.as_str()).await?;
        let stored_key = |t: &str| stored.iter().find(|k| k.key_type == t);
        let Some(master) = stored_key(MASTER) else {
            return Ok(false);
        };
        let same = |given: &Option<Value>, t: &str| -> bool {
            match (given, stored_key(t)) {
                (None, _) => true,
                (Some(g), Some(s)) => parse_json(&s.json).is_ok_and(|s| same_signed_part(g, &s)),
                (Some(_), None) => false,
            }
        };
        let master_same = match &upload.master_key {
            Some(g) => parse_json(&master.json).is_ok_and(|s| same_signed_part(g, &s)),
            None => false,
        };
        Ok(!(master_same
            && same(&upload.self_signing_key, SELF_SIGNING)
            && same(&upload.user_signing_key, USER_SIGNING)))
    }

    /// `/keys/device_signing/upload` after any needed auth: checks and stores the keys.
    pub async fn upload_cross_signing(
        &self,
        user: &UserId,
        upload: CrossSigningUpload,
    ) -> Result<()> {
        let stored = self.store.cross_signing_keys(user.as_str()).await?;
        let master_new = upload
            .master_key
            .as_ref()
            .map(|k| self.check_cross_signing_key(user, k, MASTER))
            .transpose()?;
        let ssk = upload
            .self_signing_key
            .as_ref()
            .map(|k| self.check_cross_signing_key(user, k, SELF_SIGNING))
            .transpose()?;
        let usk = upload
            .user_signing_key
            .as_ref()
            .map(|k| self.check_cross_signing_key(user, k, USER_SIGNING))
            .transpose()?;
        if master_new.is_none() && ssk.is_none() && usk.is_none() {
            return Err(Error::missing_param("No cross-signing keys given"));
        }
        let stored_master = stored.iter().find(|k| k.key_type == MASTER);
        let master_public = match (&master_new, stored_master) {
            (Some(m), _) => m.public_key.clone(),
            (None, Some(m)) => m.public_key.clone(),
            (None, None) => {
                return Err(Error::missing_param("No master signing key is available"));
            }
        };
        let master_key_id = format!("ed25519:{master_public}");
        for k in ssk.iter().chain(usk.iter()) {
            if !verify_signature(&k.json, user.as_str(), &master_key_id, &master_public) {
                return Err(Error::new(
                    ErrorKind::InvalidSignature,
                    "The self-signing and user-signing keys must be signed by the master key",
                ));
            }
        }
        for k in master_new.iter().chain(ssk.iter()).chain(usk.iter()) {
            if self
                .store
                .get_device(user.as_str(), &k.public_key)
                .await?
                .is_some()
            {
                return Err(Error::forbidden(
                    "A cross-signing public key is the same as one of the user's device ids",
                ));
            }
        }
        let mut records = Vec::new();
        let mut remove = Vec::new();
        if let Some(m) = master_new {
            let replaced = stored_master.is_some_and(|s| s.public_key != m.public_key);
            if replaced {
                // Keys signed by the old master no longer chain to the user's identity.
                if ssk.is_none() {
                    remove.push(SELF_SIGNING.to_owned());
                }
                if usk.is_none() {
                    remove.push(USER_SIGNING.to_owned());
                }
            }
            let json = self.keep_valid_master_signatures(user, &m).await?;
            records.push(self.record(user, MASTER, &m.public_key, &json)?);
        }
        for (kind, k) in [(SELF_SIGNING, ssk), (USER_SIGNING, usk)] {
            if let Some(k) = k {
                let mut json = k.json.clone();
                // Only the master key's signature was checked: it is the one kept.
                if let Some(o) = json.as_object_mut() {
                    let sig = signatures_by(&k.json, user.as_str())
                        .into_iter()
                        .find(|(id, _)| *id == master_key_id)
                        .map(|(_, s)| s)
                        .unwrap_or_default();
                    o.insert(
                        "signatures".into(),
                        json!({user.as_str(): {master_key_id.clone(): sig}}),
                    );
                }
                records.push(self.record(user, kind, &k.public_key, &json)?);
            }
        }
        self.store
            .set_cross_signing_keys(user.as_str(), records, remove)
            .await?;
        self.wake_device_list(user.as_str()).await
    }

    fn record(
        &self,
        user: &UserId,
        kind: &str,
        public_key: &str,
        json: &Value,
    ) -> Result<CrossSigningKeyRecord> {
        Ok(CrossSigningKeyRecord {
            user_id: user.to_string(),
            key_type: kind.to_owned(),
            public_key: public_key.to_owned(),
            json: canonical_text(json, "cross-signing key")?,
        })
    }

    /// The master key with only those of its owner's signatures that verify: its own and those of
    /// the owner's devices. Unverifiable ones are dropped rather than published.
    async fn keep_valid_master_signatures(&self, user: &UserId, m: &CheckedKey) -> Result<Value> {
        let mut kept = Map::new();
        for (key_id, sig) in signatures_by(&m.json, user.as_str()) {
            let Some(name) = key_id.strip_prefix("ed25519:") else {
                continue;
            };
            let public = if name == m.public_key {
                Some(m.public_key.clone())
            } else {
                self.device_ed25519(user.as_str(), name).await?
            };
            if let Some(p) = public
                && verify_signature(&m.json, user.as_str(), &key_id, &p)
            {
                kept.insert(key_id, json!(sig));
            }
        }
        let mut json = m.json.clone();
        if let Some(o) = json.as_object_mut() {
            if kept.is_empty() {
                o.remove("signatures");
            } else {
                o.insert("signatures".into(), json!({user.as_str(): kept}));
            }
        }
        Ok(json)
    }

    /// The ed25519 public key of one of a user's devices, if it has published keys.
    async fn device_ed25519(&self, user: &str, device: &str) -> Result<Option<String>> {
        Ok(self
            .store
            .device_keys(user, device)
            .await?
            .and_then(|j| serde_json::from_str::<Value>(&j).ok())
            .and_then(|k| {
                k.pointer(&format!("/keys/ed25519:{device}"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            }))
    }

    /// `/keys/signatures/upload`: adds signatures the spec allows — of the signer's own devices by
    /// their self-signing key, of their own master key by their devices, and of other users'
    /// master keys by their user-signing key. Returns the per-key failures.
    pub async fn upload_signatures(
        &self,
        signer: &UserId,
        body: Map<String, Value>,
    ) -> Result<Value> {
        let own = self.store.cross_signing_keys(signer.as_str()).await?;
        let own_key = |t: &str| own.iter().find(|k| k.key_type == t).cloned();
        let mut failures: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        let mut add = Vec::new();
        let mut changes: BTreeSet<(String, Option<String>)> = BTreeSet::new();
        let fail = |failures: &mut BTreeMap<String, Map<String, Value>>,
                    user: &str,
                    key: &str,
                    code: &str,
                    msg: &str| {
            failures
                .entry(user.to_owned())
                .or_default()
                .insert(key.to_owned(), json!({"errcode": code, "error": msg}));
        };
        for (user, keys) in body {
            let Some(keys) = keys.as_object() else {
                return Err(bad(format!("Signatures for {user} must be an object")));
            };
            let target = OwnedUserId::try_from(user.as_str())
                .map_err(|_| Error::invalid_param(format!("Invalid user id {user}")))?;
            for (key_id, object) in keys {
                if !object.is_object() {
                    return Err(bad(format!(
                        "The signed object of {user} {key_id} must be an object"
                    )));
                }
                if CanonicalJsonValue::try_from(object.clone()).is_err() {
                    fail(
                        &mut failures,
                        &user,
                        key_id,
                        "M_BAD_JSON",
                        "Not canonical JSON",
                    );
                    continue;
                }
                // What the signed object is: a stored key it must match, and who may sign it.
                let (stored, allowed_signer): (Value, Option<(String, String)>) = if target
                    == signer
                {
                    if let Some(m) = own_key(MASTER).filter(|m| m.public_key == *key_id) {
                        (parse_json(&m.json)?, None)
                    } else if let Some(dk) = self.store.device_keys(signer.as_str(), key_id).await?
                    {
                        let Some(ssk) = own_key(SELF_SIGNING) else {
                            fail(
                                &mut failures,
                                &user,
                                key_id,
                                "M_INVALID_SIGNATURE",
                                "No self-signing key has been uploaded",
                            );
                            continue;
                        };
                        (
                            parse_json(&dk)?,
                            Some((format!("ed25519:{}", ssk.public_key), ssk.public_key)),
                        )
                    } else {
                        fail(&mut failures, &user, key_id, "M_NOT_FOUND", "Unknown key");
                        continue;
                    }
                } else {
                    if !self.is_local(&target) {
                        fail(
                            &mut failures,
                            &user,
                            key_id,
                            "M_UNRECOGNIZED",
                            "Federation is not available",
                        );
                        continue;
                    }
                    let theirs = self.store.cross_signing_keys(target.as_str()).await?;
                    let Some(master) = theirs
                        .into_iter()
                        .find(|k| k.key_type == MASTER && k.public_key == *key_id)
                    else {
                        fail(
                            &mut failures,
                            &user,
                            key_id,
                            "M_FORBIDDEN",
                            "Only other users' master keys may be signed",
                        );
                        continue;
                    };
                    let Some(usk) = own_key(USER_SIGNING) else {
                        fail(
                            &mut failures,
                            &user,
                            key_id,
                            "M_INVALID_SIGNATURE",
                            "No user-signing key has been uploaded",
                        );
                        continue;
                    };
                    (
                        parse_json(&master.json)?,
                        Some((format!("ed25519:{}", usk.public_key), usk.public_key)),
                    )
                };
                if !same_signed_part(object, &stored) {
                    fail(
                        &mut failures,
                        &user,
                        key_id,
                        "M_INVALID_SIGNATURE",
                        "The signed object does not match the stored key",
                    );
                    continue;
                }
                let known = signatures_by(&stored, signer.as_str());
                let mut added = 0;
                let mut bad_signature = false;
                for (sig_key, sig) in signatures_by(object, signer.as_str()) {
                    if known.iter().any(|(k, s)| *k == sig_key && *s == sig) {
                        continue;
                    }
                    let public = match &allowed_signer {
                        Some((allowed, public)) if *allowed == sig_key => Some(public.clone()),
                        Some(_) => None,
                        // The own master key: signed by one of the signer's devices.
                        None => match sig_key.strip_prefix("ed25519:") {
                            Some(d) => self.device_ed25519(signer.as_str(), d).await?,
                            None => None,
                        },
                    };
                    match public {
                        Some(p) if verify_signature(object, signer.as_str(), &sig_key, &p) => {
                            add.push(SignatureRecord {
                                target_user_id: target.to_string(),
                                target_key_id: key_id.clone(),
                                signer_user_id: signer.to_string(),
                                signer_key_id: sig_key,
                                signature: sig,
                            });
                            added += 1;
                        }
                        _ => bad_signature = true,
                    }
                }
                if bad_signature {
                    fail(
                        &mut failures,
                        &user,
                        key_id,
                        "M_INVALID_SIGNATURE",
                        "Invalid signature",
                    );
                } else if added == 0 {
                    fail(
                        &mut failures,
                        &user,
                        key_id,
                        "M_INVALID_SIGNATURE",
                        "No new signature to add",
                    );
                }
                if added > 0 {
                    changes.insert(if target == signer {
                        (signer.to_string(), None)
                    } else {
                        (target.to_string(), Some(signer.to_string()))
                    });
                }
            }
        }
        if !add.is_empty() {
            let changes: Vec<_> = changes.into_iter().collect();
            self.store.add_signatures(add, changes.clone()).await?;
            for (user, viewer) in changes {
                match viewer {
                    None => self.wake_device_list(&user).await?,
                    Some(v) => self.notifier.wake_user(&v),
                }
            }
        }
        Ok(json!({"failures": failures}))
    }
}

fn canonical_text_value(v: &Value, what: &str) -> Result<String> {
    match v {
        Value::String(_) => serde_json::to_string(v).map_err(|e| Error::internal(e.to_string())),
        _ => canonical_text(v, what),
    }
}

/// Unclaimed one-time keys of a device per algorithm, `signed_curve25519` always included.
pub async fn one_time_key_counts(
    store: &dyn Store,
    user: &str,
    device: &str,
) -> Result<BTreeMap<String, u64>> {
    let mut counts: BTreeMap<String, u64> = store
        .one_time_key_counts(user, device)
        .await?
        .into_iter()
        .collect();
    counts.entry(SIGNED_CURVE25519.to_owned()).or_insert(0);
    Ok(counts)
}

/// Device-list changes for `user` in `(after, up_to]`:
///
/// - `changed`: users who share a joined room with `user` now and published or removed device
///   keys or changed cross-signing keys in the window; users who began to share a room with
///   `user` in the window (they joined one of `user`'s rooms, or `user` joined theirs); `user`
///   itself when its own devices changed; users whose master key `user` signed.
/// - `left`: users who shared a room with `user` in the window (one of them left, was kicked or
///   banned) and share none now.
///
/// A user is never in both. Initial syncs do not call this: the spec leaves `device_lists` to
/// incremental syncs, as a client fetches every key it needs after an initial sync.
pub async fn device_list_delta(
    store: &dyn Store,
    user: &str,
    after: i64,
    up_to: i64,
) -> Result<DeviceListDelta> {
    if up_to <= after {
        return Ok(DeviceListDelta::default());
    }
    let shared: HashSet<String> = store.users_sharing_room(user).await?.into_iter().collect();
    let mut changed: BTreeSet<String> = BTreeSet::new();
    let mut left_candidates: BTreeSet<String> = BTreeSet::new();
    for changed_user in store.device_list_changes(user, after, up_to).await? {
        if changed_user == user || shared.contains(&changed_user) {
            changed.insert(changed_user);
        }
    }
    for m in store.membership_changes(user, after, up_to).await? {
        if m.user_id == user {
            // The user's own membership changed: everyone in that room is affected.
            let members = store.room_members(&m.room_id).await?;
            for other in members
                .into_iter()
                .filter(|o| o.user_id != user && o.membership == "join")
            {
                if m.membership == "join" {
                    changed.insert(other.user_id);
                } else {
                    left_candidates.insert(other.user_id);
                }
            }
        } else if m.membership == "join" {
            changed.insert(m.user_id);
        } else if m.membership == "leave" || m.membership == "ban" {
            left_candidates.insert(m.user_id);
        }
    }
    let left: Vec<String> = left_candidates
        .into_iter()
        .filter(|u| u != user && !shared.contains(u))
        .collect();
    changed.retain(|u| !left.contains(u) && (u == user || shared.contains(u)));
    Ok(DeviceListDelta {
        changed: changed.into_iter().collect(),
        left,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_keys_are_checked_for_length() {
        assert!(is_ed25519_key(
            "SogYyrkTldLz0BXP+GYWs0qaYacUI0RleEqNT8J3riQ"
        ));
        assert!(!is_ed25519_key("SogYyrkTldLz0BXP"));
        assert!(!is_ed25519_key("not base64!"));
    }

    #[test]
    fn other_users_user_signing_signatures_are_private() {
        assert!(signature_visible("@a:x", "@b:x", "@a:x"));
        assert!(signature_visible("@a:x", "@b:x", "@b:x"));
        assert!(!signature_visible("@a:x", "@b:x", "@c:x"));
    }

    #[test]
    fn a_missing_signature_does_not_verify() {
        let obj = json!({"key": "abc", "signatures": {}});
        assert!(!verify_signature(
            &obj,
            "@a:x",
            "ed25519:D",
            "SogYyrkTldLz0BXP+GYWs0qaYacUI0RleEqNT8J3riQ"
        ));
    }
}

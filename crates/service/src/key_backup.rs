//! Server-side key backups: versions with their algorithm-specific `auth_data`, and the encrypted
//! megolm session keys stored in them. Every backup belongs to one user and only that user can
//! read or change it; keys are written only to the current (newest) version.

use std::collections::BTreeMap;
use std::sync::Arc;

use feldpost_storage::{BackupKeyRecord, BackupWrite, Store};
use ruma::{OwnedRoomId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{Error, Result};

pub struct KeyBackup {
    store: Arc<dyn Store>,
}

/// The outcome of a write to a backup's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysWritten {
    /// The number of keys in the backup and its etag afterwards.
    Done { count: u64, etag: String },
    /// The version is not the current one (`M_WRONG_ROOM_KEYS_VERSION`).
    WrongVersion { current: Option<String> },
}

/// One session's backup data as uploaded.
#[derive(Debug, Deserialize)]
pub struct KeyBackupData {
    pub first_message_index: u64,
    pub forwarded_count: u64,
    pub is_verified: bool,
    pub session_data: Map<String, Value>,
}

/// Whether `new` should replace `old`, the spec's rule: a key that is verified beats one that is
/// not; then the key that decrypts from an earlier message (lower `first_message_index`); then
/// the one forwarded fewer times. A key that is no better keeps the stored one.
pub fn better(new: &BackupKeyRecord, old: &BackupKeyRecord) -> bool {
    if new.is_verified != old.is_verified {
        return new.is_verified;
    }
    if new.first_message_index != old.first_message_index {
        return new.first_message_index < old.first_message_index;
    }
    new.forwarded_count < old.forwarded_count
}

fn unknown_version() -> Error {
    Error::not_found("Unknown backup version")
}

/// A version from a path or query: versions this server hands out are positive integers, so
/// anything else names no backup.
fn parse_version(v: &str) -> Option<i64> {
    v.parse::<i64>().ok().filter(|v| *v > 0)
}

fn check_algorithm(algorithm: &str) -> Result<()> {
    if algorithm.is_empty() || algorithm.len() > 255 {
        return Err(Error::invalid_param("The algorithm must be 1 to 255 bytes"));
    }
    Ok(())
}

fn record(room_id: &str, session_id: &str, data: KeyBackupData) -> Result<BackupKeyRecord> {
    if session_id.is_empty() || session_id.len() > 255 {
        return Err(Error::invalid_param("A session id must be 1 to 255 bytes"));
    }
    let too_big = |n: u64| i64::try_from(n).map_err(|_| Error::invalid_param("Number too large"));
    Ok(BackupKeyRecord {
        room_id: room_id.to_owned(),
        session_id: session_id.to_owned(),
        first_message_index: too_big(data.first_message_index)?,
        forwarded_count: too_big(data.forwarded_count)?,
        is_verified: data.is_verified,
        session_data: serde_json::to_string(&data.session_data)
            .map_err(|e| Error::internal(e.to_string()))?,
    })
}

fn key_json(k: &BackupKeyRecord) -> Value {
    let data: Value = serde_json::from_str(&k.session_data).unwrap_or_else(|_| json!({}));
    json!({
        "first_message_index": k.first_message_index,
        "forwarded_count": k.forwarded_count,
        "is_verified": k.is_verified,
        "session_data": data,
    })
}

fn parse_data(room: &str, session: &str, v: Value) -> Result<KeyBackupData> {
    serde_json::from_value(v).map_err(|e| {
        let msg = format!("Key data of {room} {session}: {e}");
        if e.to_string().starts_with("missing field") {
            Error::missing_param(msg)
        } else {
            Error::bad_json(msg)
        }
    })
}

fn room_id(room: &str) -> Result<OwnedRoomId> {
    OwnedRoomId::try_from(room).map_err(|_| Error::invalid_param(format!("Invalid room id {room}")))
}

impl KeyBackup {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Creates a backup version, which becomes the current one.
    pub async fn create(
        &self,
        user: &UserId,
        algorithm: &str,
        auth_data: Map<String, Value>,
    ) -> Result<String> {
        check_algorithm(algorithm)?;
        let auth = serde_json::to_string(&auth_data).map_err(|e| Error::internal(e.to_string()))?;
        let v = self
            .store
            .create_backup(user.as_str(), algorithm, &auth)
            .await?;
        Ok(v.to_string())
    }

    /// The current version's information, or the given version's.
    pub async fn version(&self, user: &UserId, version: Option<&str>) -> Result<Value> {
        let wanted = match version {
            Some(v) => Some(parse_version(v).ok_or_else(unknown_version)?),
            None => None,
        };
        let rec = self
            .store
            .backup_version(user.as_str(), wanted)
            .await?
            .ok_or_else(|| match wanted {
                Some(_) => unknown_version(),
                None => Error::not_found("No current backup version"),
            })?;
        let auth: Value = serde_json::from_str(&rec.auth_data).unwrap_or_else(|_| json!({}));
        Ok(json!({
            "algorithm": rec.algorithm,
            "auth_data": auth,
            "count": rec.count,
            "etag": rec.etag.to_string(),
            "version": rec.version.to_string(),
        }))
    }

    /// Replaces a version's `auth_data`; the algorithm cannot change.
    pub async fn update(
        &self,
        user: &UserId,
        version: &str,
        algorithm: &str,
        auth_data: Map<String, Value>,
        body_version: Option<&str>,
    ) -> Result<()> {
        if body_version.is_some_and(|b| b != version) {
            return Err(Error::invalid_param(
                "The version in the body does not match the version in the path",
            ));
        }
        let v = parse_version(version).ok_or_else(unknown_version)?;
        let rec = self
            .store
            .backup_version(user.as_str(), Some(v))
            .await?
            .ok_or_else(unknown_version)?;
        if rec.algorithm != algorithm {
            return Err(Error::invalid_param("Algorithm does not match"));
        }
        let auth = serde_json::to_string(&auth_data).map_err(|e| Error::internal(e.to_string()))?;
        if !self
            .store
            .update_backup_auth_data(user.as_str(), v, &auth)
            .await?
        {
            return Err(unknown_version());
        }
        Ok(())
    }

    /// Deletes a version and its keys; deleting it again succeeds.
    pub async fn delete(&self, user: &UserId, version: &str) -> Result<()> {
        let v = parse_version(version).ok_or_else(unknown_version)?;
        if !self.store.delete_backup(user.as_str(), v).await? {
            return Err(unknown_version());
        }
        Ok(())
    }

    async fn write(
        &self,
        user: &UserId,
        version: &str,
        keys: Vec<BackupKeyRecord>,
    ) -> Result<KeysWritten> {
        // A malformed version is simply not the current one.
        let v = parse_version(version).unwrap_or(0);
        match self
            .store
            .put_backup_keys(user.as_str(), v, keys, better)
            .await?
        {
            BackupWrite::Done { count, etag } => Ok(KeysWritten::Done {
                count,
                etag: etag.to_string(),
            }),
            BackupWrite::WrongVersion { current } => Ok(KeysWritten::WrongVersion {
                current: current.map(|c| c.to_string()),
            }),
            BackupWrite::NotFound => Err(unknown_version()),
        }
    }

    /// `PUT /room_keys/keys`: `rooms` maps room ids to `{"sessions": {session_id: data}}`.
    pub async fn put_all(
        &self,
        user: &UserId,
        version: &str,
        rooms: Map<String, Value>,
    ) -> Result<KeysWritten> {
        let mut keys = Vec::new();
        for (room, backup) in rooms {
            room_id(&room)?;
            keys.extend(self.room_records(&room, backup)?);
        }
        self.write(user, version, keys).await
    }

    fn room_records(&self, room: &str, backup: Value) -> Result<Vec<BackupKeyRecord>> {
        let Value::Object(mut backup) = backup else {
            return Err(Error::bad_json(format!("Keys of {room} must be an object")));
        };
        let sessions = match backup.remove("sessions") {
            Some(Value::Object(s)) => s,
            Some(_) => return Err(Error::bad_json("sessions must be an object")),
            None => return Err(Error::missing_param("sessions missing")),
        };
        sessions
            .into_iter()
            .map(|(sid, data)| record(room, &sid, parse_data(room, &sid, data)?))
            .collect()
    }

    /// `PUT /room_keys/keys/{roomId}`.
    pub async fn put_room(
        &self,
        user: &UserId,
        version: &str,
        room: &str,
        backup: Value,
    ) -> Result<KeysWritten> {
        room_id(room)?;
        let keys = self.room_records(room, backup)?;
        self.write(user, version, keys).await
    }

    /// `PUT /room_keys/keys/{roomId}/{sessionId}`.
    pub async fn put_session(
        &self,
        user: &UserId,
        version: &str,
        room: &str,
        session: &str,
        data: Value,
    ) -> Result<KeysWritten> {
        room_id(room)?;
        let rec = record(room, session, parse_data(room, session, data)?)?;
        self.write(user, version, vec![rec]).await
    }

    async fn read(
        &self,
        user: &UserId,
        version: &str,
        room: Option<&str>,
        session: Option<&str>,
    ) -> Result<Vec<BackupKeyRecord>> {
        if let Some(r) = room {
            room_id(r)?;
        }
        let v = parse_version(version).ok_or_else(unknown_version)?;
        self.store
            .backup_keys(user.as_str(), v, room, session)
            .await?
            .ok_or_else(unknown_version)
    }

    /// `GET /room_keys/keys`: `{"rooms": {room: {"sessions": {...}}}}`.
    pub async fn get_all(&self, user: &UserId, version: &str) -> Result<Value> {
        let mut rooms: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for k in self.read(user, version, None, None).await? {
            rooms
                .entry(k.room_id.clone())
                .or_default()
                .insert(k.session_id.clone(), key_json(&k));
        }
        let rooms: Map<String, Value> = rooms
            .into_iter()
            .map(|(r, s)| (r, json!({"sessions": s})))
            .collect();
        Ok(json!({"rooms": rooms}))
    }

    /// `GET /room_keys/keys/{roomId}`: `{"sessions": {...}}`.
    pub async fn get_room(&self, user: &UserId, version: &str, room: &str) -> Result<Value> {
        let sessions: Map<String, Value> = self
            .read(user, version, Some(room), None)
            .await?
            .iter()
            .map(|k| (k.session_id.clone(), key_json(k)))
            .collect();
        Ok(json!({"sessions": sessions}))
    }

    /// `GET /room_keys/keys/{roomId}/{sessionId}`: the key data, `M_NOT_FOUND` when absent.
    pub async fn get_session(
        &self,
        user: &UserId,
        version: &str,
        room: &str,
        session: &str,
    ) -> Result<Value> {
        self.read(user, version, Some(room), Some(session))
            .await?
            .first()
            .map(key_json)
            .ok_or_else(|| Error::not_found("Key not found"))
    }

    /// `DELETE /room_keys/keys[/{roomId}[/{sessionId}]]`: the count and etag afterwards.
    pub async fn delete_keys(
        &self,
        user: &UserId,
        version: &str,
        room: Option<&str>,
        session: Option<&str>,
    ) -> Result<(u64, String)> {
        if let Some(r) = room {
            room_id(r)?;
        }
        let v = parse_version(version).ok_or_else(unknown_version)?;
        match self
            .store
            .delete_backup_keys(user.as_str(), v, room, session)
            .await?
        {
            BackupWrite::Done { count, etag } => Ok((count, etag.to_string())),
            BackupWrite::WrongVersion { .. } | BackupWrite::NotFound => Err(unknown_version()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(verified: bool, index: i64, forwarded: i64) -> BackupKeyRecord {
        BackupKeyRecord {
            room_id: "!r:x".into(),
            session_id: "s".into(),
            first_message_index: index,
            forwarded_count: forwarded,
            is_verified: verified,
            session_data: "{}".into(),
        }
    }

    #[test]
    fn verified_beats_unverified_whatever_the_index() {
        assert!(better(&key(true, 10, 5), &key(false, 0, 0)));
        assert!(!better(&key(false, 0, 0), &key(true, 10, 5)));
    }

    #[test]
    fn lower_index_then_fewer_forwards() {
        assert!(better(&key(false, 1, 9), &key(false, 2, 0)));
        assert!(!better(&key(false, 3, 0), &key(false, 2, 9)));
        assert!(better(&key(false, 2, 0), &key(false, 2, 1)));
        assert!(!better(&key(false, 2, 1), &key(false, 2, 1)));
    }
}

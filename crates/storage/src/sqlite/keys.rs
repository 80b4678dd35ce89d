//! End-to-end encryption records: device, one-time, fallback and cross-signing keys, signatures,
//! device-list changes, send-to-device messages and key backups.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Transaction, params, params_from_iter, types::Value};

use super::{CachedExt, Positions, SqliteStore, placeholders};
use crate::{
    BackupKeyRecord, BackupVersionRecord, BackupWrite, BetterBackupKey, ChangeKey, ClaimedKey,
    CrossSigningKeyRecord, DeviceKeysRecord, KeyClaim, KeyStore, KeyUpload, KeyUploadOutcome,
    MembershipRecord, NewToDevice, Result, SignatureRecord, ToDeviceRecord,
};

/// Records that `user_id`'s device list changed, for everyone sharing a room (viewer `None`).
fn record_change(
    tx: &Transaction<'_>,
    pos: &mut Positions<'_>,
    user_id: &str,
    viewer: Option<&str>,
) -> Result<()> {
    tx.exec(
        "INSERT INTO e2e_device_list_changes (stream, user_id, viewer) VALUES (?1, ?2, ?3)",
        params![pos.next(), user_id, viewer],
    )?;
    pos.touch(ChangeKey::DeviceLists);
    Ok(())
}

/// Removes everything end-to-end encryption keeps for one device: its keys, the signatures of
/// them, its pending messages and its send-to-device transaction ids. A device that had published
/// keys leaves a device-list change behind, so that others stop encrypting for it.
pub(crate) fn purge_device(
    tx: &Transaction<'_>,
    pos: &mut Positions<'_>,
    user_id: &str,
    device_id: &str,
) -> Result<()> {
    pos.touch(ChangeKey::Keys(user_id.to_owned()));
    let had_keys = tx.exec(
        "DELETE FROM e2e_device_keys WHERE user_id = ?1 AND device_id = ?2",
        params![user_id, device_id],
    )? > 0;
    for table in [
        "e2e_one_time_keys",
        "e2e_fallback_keys",
        "e2e_to_device",
        "e2e_to_device_txns",
    ] {
        tx.exec(
            &format!("DELETE FROM {table} WHERE user_id = ?1 AND device_id = ?2"),
            params![user_id, device_id],
        )?;
    }
    tx.exec(
        "DELETE FROM e2e_signatures WHERE target_user_id = ?1 AND target_key_id = ?2",
        params![user_id, device_id],
    )?;
    if had_keys {
        record_change(tx, pos, user_id, None)?;
    }
    Ok(())
}

/// Like [`purge_device`] for every device of the user except `keep`.
pub(crate) fn purge_devices_except(
    tx: &Transaction<'_>,
    pos: &mut Positions<'_>,
    user_id: &str,
    keep: Option<&str>,
) -> Result<()> {
    let keep = keep.unwrap_or("");
    // Every table that names a device: a device is gone once its row in `devices` is.
    let mut ids: Vec<String> = Vec::new();
    for table in [
        "e2e_device_keys",
        "e2e_one_time_keys",
        "e2e_fallback_keys",
        "e2e_to_device",
        "e2e_to_device_txns",
    ] {
        let mut st = tx.prepare_cached(&format!(
            "SELECT DISTINCT device_id FROM {table} WHERE user_id = ?1 AND device_id != ?2"
        ))?;
        for d in st.query_map(params![user_id, keep], |r| r.get::<_, String>(0))? {
            ids.push(d?);
        }
    }
    ids.sort();
    ids.dedup();
    for d in ids {
        purge_device(tx, pos, user_id, &d)?;
    }
    Ok(())
}

/// Removes everything end-to-end encryption keeps for a deactivated user: every device's data,
/// the cross-signing keys, signatures made of and by them, and the key backups.
pub(crate) fn purge_user(
    tx: &Transaction<'_>,
    pos: &mut Positions<'_>,
    user_id: &str,
) -> Result<()> {
    purge_devices_except(tx, pos, user_id, None)?;
    let had_cross_signing = tx.exec(
        "DELETE FROM e2e_cross_signing_keys WHERE user_id = ?1",
        [user_id],
    )? > 0;
    tx.exec(
        "DELETE FROM e2e_signatures WHERE target_user_id = ?1 OR signer_user_id = ?1",
        [user_id],
    )?;
    tx.exec("DELETE FROM e2e_backup_keys WHERE user_id = ?1", [user_id])?;
    tx.exec(
        "UPDATE e2e_backup_versions SET deleted = 1 WHERE user_id = ?1",
        [user_id],
    )?;
    if had_cross_signing {
        record_change(tx, pos, user_id, None)?;
    }
    Ok(())
}

/// The current (highest, not deleted) backup version of a user.
fn current_backup(tx: &rusqlite::Connection, user_id: &str) -> Result<Option<i64>> {
    Ok(tx
        .q_row(
            "SELECT max(version) FROM e2e_backup_versions WHERE user_id = ?1 AND deleted = 0",
            [user_id],
            |r| r.get::<_, Option<i64>>(0),
        )
        .optional()?
        .flatten())
}

/// Whether the version exists and is not deleted.
fn live_backup(tx: &rusqlite::Connection, user_id: &str, version: i64) -> Result<bool> {
    Ok(tx
        .q_row(
            "SELECT 1 FROM e2e_backup_versions WHERE user_id = ?1 AND version = ?2 AND deleted = 0",
            params![user_id, version],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .is_some())
}

/// Bumps the etag of a version after its keys changed; returns the count and the new etag.
fn touch_backup(
    tx: &Transaction<'_>,
    user_id: &str,
    version: i64,
    changed: bool,
) -> Result<BackupWrite> {
    if changed {
        tx.exec(
            "UPDATE e2e_backup_versions SET etag = etag + 1 WHERE user_id = ?1 AND version = ?2",
            params![user_id, version],
        )?;
    }
    let (count, etag) = backup_counts(tx, user_id, version)?;
    Ok(BackupWrite::Done { count, etag })
}

fn backup_counts(c: &rusqlite::Connection, user_id: &str, version: i64) -> Result<(u64, i64)> {
    let count: i64 = c.q_row(
        "SELECT COUNT(*) FROM e2e_backup_keys WHERE user_id = ?1 AND version = ?2",
        params![user_id, version],
        |r| r.get(0),
    )?;
    let etag: i64 = c.q_row(
        "SELECT etag FROM e2e_backup_versions WHERE user_id = ?1 AND version = ?2",
        params![user_id, version],
        |r| r.get(0),
    )?;
    Ok((count.max(0) as u64, etag))
}

fn backup_key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BackupKeyRecord> {
    Ok(BackupKeyRecord {
        room_id: r.get(0)?,
        session_id: r.get(1)?,
        first_message_index: r.get(2)?,
        forwarded_count: r.get(3)?,
        is_verified: r.get(4)?,
        session_data: r.get(5)?,
    })
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn upload_keys(&self, up: KeyUpload) -> Result<KeyUploadOutcome> {
        self.write(move |tx, pos| {
            let (u, d) = (up.user_id.as_str(), up.device_id.as_str());
            pos.touch(ChangeKey::Keys(up.user_id.clone()));
            for k in &up.one_time_keys {
                let existing: Option<String> = tx
                    .q_row(
                        "SELECT json FROM e2e_one_time_keys
                         WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3 AND key_id = ?4",
                        params![u, d, k.algorithm, k.key_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                if existing.as_deref().is_some_and(|j| j != k.json) {
                    // Nothing of the upload is kept: the transaction rolls back.
                    return Err(crate::StorageError::Conflict(format!(
                        "{}:{}",
                        k.algorithm, k.key_id
                    )));
                }
            }
            let mut device_keys_changed = false;
            if let Some(json) = &up.device_keys {
                let old: Option<String> = tx
                    .q_row(
                        "SELECT json FROM e2e_device_keys WHERE user_id = ?1 AND device_id = ?2",
                        params![u, d],
                        |r| r.get(0),
                    )
                    .optional()?;
                if old.as_deref() != Some(json.as_str()) {
                    tx.exec(
                        "INSERT INTO e2e_device_keys (user_id, device_id, json) VALUES (?1, ?2, ?3)
                         ON CONFLICT (user_id, device_id) DO UPDATE SET json = excluded.json",
                        params![u, d, json],
                    )?;
                    if old.is_some() {
                        // Signatures were made of the old keys and no longer hold.
                        tx.exec(
                            "DELETE FROM e2e_signatures WHERE target_user_id = ?1 AND target_key_id = ?2",
                            params![u, d],
                        )?;
                    }
                    record_change(tx, pos, u, None)?;
                    device_keys_changed = true;
                }
            }
            if !up.one_time_keys.is_empty() {
                let seq: i64 = tx.q_row(
                    "SELECT coalesce(max(seq), 0) + 1 FROM e2e_one_time_keys WHERE user_id = ?1 AND device_id = ?2",
                    params![u, d],
                    |r| r.get(0),
                )?;
                let mut st = tx.prepare_cached(
                    "INSERT OR IGNORE INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, json, seq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for k in &up.one_time_keys {
                    st.execute(params![u, d, k.algorithm, k.key_id, k.json, seq])?;
                }
            }
            for k in &up.fallback_keys {
                // Re-uploading the same key keeps whether it was used; a new key is unused.
                tx.exec(
                    "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, json, used)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0)
                     ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET
                        key_id = excluded.key_id, json = excluded.json, used = 0
                     WHERE e2e_fallback_keys.key_id != excluded.key_id OR e2e_fallback_keys.json != excluded.json",
                    params![u, d, k.algorithm, k.key_id, k.json],
                )?;
            }
            Ok(KeyUploadOutcome::Stored { device_keys_changed })
        })
        .await
        .or_else(|e| match e {
            crate::StorageError::Conflict(key) => Ok(KeyUploadOutcome::ConflictingOneTimeKey(key)),
            other => Err(other),
        })
    }

    async fn device_keys(&self, user_id: &str, device_id: &str) -> Result<Option<String>> {
        let (u, d) = (user_id.to_owned(), device_id.to_owned());
        self.read(move |c| {
            Ok(c.q_row(
                "SELECT json FROM e2e_device_keys WHERE user_id = ?1 AND device_id = ?2",
                params![u, d],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn user_device_keys(
        &self,
        user_id: &str,
        device_ids: &[String],
    ) -> Result<Vec<DeviceKeysRecord>> {
        let u = user_id.to_owned();
        let ids = device_ids.to_vec();
        self.read(move |c| {
            // Joined with `devices`: keys never outlive their device.
            let base =
                "SELECT k.user_id, k.device_id, k.json, d.display_name FROM e2e_device_keys k
                        JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
                        WHERE k.user_id = ?1";
            let row = |r: &rusqlite::Row<'_>| {
                Ok(DeviceKeysRecord {
                    user_id: r.get(0)?,
                    device_id: r.get(1)?,
                    json: r.get(2)?,
                    display_name: r.get(3)?,
                })
            };
            let mut out = Vec::new();
            if ids.is_empty() {
                let mut st = c.prepare_cached(&format!("{base} ORDER BY k.device_id"))?;
                for r in st.query_map([&u], row)? {
                    out.push(r?);
                }
                return Ok(out);
            }
            for chunk in ids.chunks(500) {
                let sql = format!(
                    "{base} AND k.device_id IN ({}) ORDER BY k.device_id",
                    placeholders(chunk.len(), 2)
                );
                let mut args = vec![Value::Text(u.clone())];
                args.extend(chunk.iter().map(|s| Value::Text(s.clone())));
                let mut st = c.prepare_cached(&sql)?;
                for r in st.query_map(params_from_iter(args), row)? {
                    out.push(r?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn one_time_key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Vec<(String, u64)>> {
        let (u, d) = (user_id.to_owned(), device_id.to_owned());
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT algorithm, COUNT(*) FROM e2e_one_time_keys WHERE user_id = ?1 AND device_id = ?2
                 GROUP BY algorithm ORDER BY algorithm",
            )?;
            Ok(st
                .query_map(params![u, d], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn unused_fallback_key_types(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Vec<String>> {
        let (u, d) = (user_id.to_owned(), device_id.to_owned());
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT algorithm FROM e2e_fallback_keys WHERE user_id = ?1 AND device_id = ?2 AND used = 0
                 ORDER BY algorithm",
            )?;
            Ok(st
                .query_map(params![u, d], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn claim_keys(&self, claims: Vec<KeyClaim>) -> Result<Vec<ClaimedKey>> {
        self.write(move |tx, pos| {
            let mut out = Vec::new();
            for c in claims {
                pos.touch(ChangeKey::Keys(c.user_id.clone()));
                let otk: Option<(String, String)> = tx
                    .q_row(
                        "SELECT key_id, json FROM e2e_one_time_keys
                         WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3
                         ORDER BY seq, key_id LIMIT 1",
                        params![c.user_id, c.device_id, c.algorithm],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if let Some((key_id, json)) = otk {
                    tx.exec(
                        "DELETE FROM e2e_one_time_keys
                         WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3 AND key_id = ?4",
                        params![c.user_id, c.device_id, c.algorithm, key_id],
                    )?;
                    out.push(ClaimedKey {
                        user_id: c.user_id,
                        device_id: c.device_id,
                        algorithm: c.algorithm,
                        key_id,
                        json,
                        fallback: false,
                    });
                    continue;
                }
                let fallback: Option<(String, String)> = tx
                    .q_row(
                        "SELECT key_id, json FROM e2e_fallback_keys
                         WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3",
                        params![c.user_id, c.device_id, c.algorithm],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                if let Some((key_id, json)) = fallback {
                    tx.exec(
                        "UPDATE e2e_fallback_keys SET used = 1
                         WHERE user_id = ?1 AND device_id = ?2 AND algorithm = ?3",
                        params![c.user_id, c.device_id, c.algorithm],
                    )?;
                    out.push(ClaimedKey {
                        user_id: c.user_id,
                        device_id: c.device_id,
                        algorithm: c.algorithm,
                        key_id,
                        json,
                        fallback: true,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn cross_signing_keys(&self, user_id: &str) -> Result<Vec<CrossSigningKeyRecord>> {
        let u = user_id.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT user_id, key_type, public_key, json FROM e2e_cross_signing_keys WHERE user_id = ?1",
            )?;
            Ok(st
                .query_map([u], |r| {
                    Ok(CrossSigningKeyRecord {
                        user_id: r.get(0)?,
                        key_type: r.get(1)?,
                        public_key: r.get(2)?,
                        json: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn set_cross_signing_keys(
        &self,
        user_id: &str,
        keys: Vec<CrossSigningKeyRecord>,
        remove: Vec<String>,
    ) -> Result<()> {
        let u = user_id.to_owned();
        self.write(move |tx, pos| {
            for kind in &remove {
                tx.exec(
                    "DELETE FROM e2e_cross_signing_keys WHERE user_id = ?1 AND key_type = ?2",
                    params![u, kind],
                )?;
            }
            for k in &keys {
                if k.key_type == "master" {
                    let old: Option<String> = tx
                        .q_row(
                            "SELECT public_key FROM e2e_cross_signing_keys WHERE user_id = ?1 AND key_type = 'master'",
                            [&u],
                            |r| r.get(0),
                        )
                        .optional()?;
                    if let Some(old) = old.filter(|o| *o != k.public_key) {
                        tx.exec(
                            "DELETE FROM e2e_signatures WHERE target_user_id = ?1 AND target_key_id = ?2",
                            params![u, old],
                        )?;
                    }
                }
                tx.exec(
                    "INSERT INTO e2e_cross_signing_keys (user_id, key_type, public_key, json) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (user_id, key_type) DO UPDATE SET public_key = excluded.public_key, json = excluded.json",
                    params![u, k.key_type, k.public_key, k.json],
                )?;
            }
            record_change(tx, pos, &u, None)?;
            Ok(())
        })
        .await
    }

    async fn signatures_of(&self, target_user_id: &str) -> Result<Vec<SignatureRecord>> {
        let u = target_user_id.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature
                 FROM e2e_signatures WHERE target_user_id = ?1",
            )?;
            Ok(st
                .query_map([u], |r| {
                    Ok(SignatureRecord {
                        target_user_id: r.get(0)?,
                        target_key_id: r.get(1)?,
                        signer_user_id: r.get(2)?,
                        signer_key_id: r.get(3)?,
                        signature: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn add_signatures(
        &self,
        signatures: Vec<SignatureRecord>,
        changes: Vec<(String, Option<String>)>,
    ) -> Result<()> {
        self.write(move |tx, pos| {
            for s in &signatures {
                tx.exec(
                    "INSERT INTO e2e_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)
                     DO UPDATE SET signature = excluded.signature",
                    params![s.target_user_id, s.target_key_id, s.signer_user_id, s.signer_key_id, s.signature],
                )?;
            }
            for (user, viewer) in &changes {
                record_change(tx, pos, user, viewer.as_deref())?;
            }
            Ok(())
        })
        .await
    }

    async fn device_list_changes(
        &self,
        viewer: &str,
        after: i64,
        up_to: i64,
    ) -> Result<Vec<String>> {
        let v = viewer.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT DISTINCT user_id FROM e2e_device_list_changes
                 WHERE stream > ?1 AND stream <= ?2 AND (viewer IS NULL OR viewer = ?3)",
            )?;
            Ok(st
                .query_map(params![after, up_to, v], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn users_sharing_room(&self, user_id: &str) -> Result<Vec<String>> {
        let u = user_id.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT DISTINCT b.user_id FROM memberships a JOIN memberships b ON a.room_id = b.room_id
                 WHERE a.user_id = ?1 AND a.membership = 'join' AND b.membership = 'join'",
            )?;
            Ok(st
                .query_map([u], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn membership_changes(
        &self,
        user_id: &str,
        after: i64,
        up_to: i64,
    ) -> Result<Vec<MembershipRecord>> {
        let u = user_id.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT b.room_id, b.user_id, b.membership, b.event_id, b.stream, b.forgotten
                 FROM memberships a JOIN memberships b ON a.room_id = b.room_id
                 WHERE a.user_id = ?1
                   AND (a.membership = 'join' OR (a.stream > ?2 AND a.stream <= ?3))
                   AND b.stream > ?2 AND b.stream <= ?3
                 ORDER BY b.stream",
            )?;
            Ok(st
                .query_map(params![u, after, up_to], |r| {
                    Ok(MembershipRecord {
                        room_id: r.get(0)?,
                        user_id: r.get(1)?,
                        membership: r.get(2)?,
                        event_id: r.get(3)?,
                        stream: r.get(4)?,
                        forgotten: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn queue_to_device(
        &self,
        sender: &str,
        sender_device: &str,
        txn_id: &str,
        event_type: &str,
        messages: Vec<NewToDevice>,
    ) -> Result<Option<Vec<String>>> {
        let (s, sd, t, ty) = (
            sender.to_owned(),
            sender_device.to_owned(),
            txn_id.to_owned(),
            event_type.to_owned(),
        );
        self.write(move |tx, pos| {
            let fresh = tx.exec(
                "INSERT OR IGNORE INTO e2e_to_device_txns (user_id, device_id, txn_id) VALUES (?1, ?2, ?3)",
                params![s, sd, t],
            )? > 0;
            if !fresh {
                return Ok(None);
            }
            let mut recipients = Vec::new();
            for m in messages {
                let devices: Vec<String> = match &m.device_id {
                    Some(d) => {
                        let exists: Option<i64> = tx
                            .q_row(
                                "SELECT 1 FROM devices WHERE user_id = ?1 AND device_id = ?2",
                                params![m.user_id, d],
                                |r| r.get(0),
                            )
                            .optional()?;
                        exists.map(|_| vec![d.clone()]).unwrap_or_default()
                    }
                    None => {
                        let mut st = tx.prepare_cached(
                            "SELECT device_id FROM devices WHERE user_id = ?1 ORDER BY device_id",
                        )?;
                        st.query_map([&m.user_id], |r| r.get(0))?
                            .collect::<rusqlite::Result<Vec<_>>>()?
                    }
                };
                for d in devices {
                    tx.exec(
                        "INSERT INTO e2e_to_device (stream, user_id, device_id, sender, event_type, content)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![pos.next(), m.user_id, d, s, ty, m.content],
                    )?;
                    pos.touch(ChangeKey::Inbox(m.user_id.clone()));
                    if !recipients.contains(&m.user_id) {
                        recipients.push(m.user_id.clone());
                    }
                }
            }
            Ok(Some(recipients))
        })
        .await
    }

    async fn to_device_inbox(
        &self,
        user_id: &str,
        device_id: &str,
        after: i64,
        up_to: i64,
        limit: u32,
    ) -> Result<Vec<ToDeviceRecord>> {
        let (u, d) = (user_id.to_owned(), device_id.to_owned());
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT stream, sender, event_type, content FROM e2e_to_device
                 WHERE user_id = ?1 AND device_id = ?2 AND stream > ?3 AND stream <= ?4
                 ORDER BY stream LIMIT ?5",
            )?;
            Ok(st
                .query_map(params![u, d, after, up_to, limit], |r| {
                    Ok(ToDeviceRecord {
                        stream: r.get(0)?,
                        sender: r.get(1)?,
                        event_type: r.get(2)?,
                        content: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn ack_to_device(&self, user_id: &str, device_id: &str, up_to: i64) -> Result<()> {
        let (u, d) = (user_id.to_owned(), device_id.to_owned());
        self.write(move |tx, _| {
            tx.exec(
                "DELETE FROM e2e_to_device WHERE user_id = ?1 AND device_id = ?2 AND stream <= ?3",
                params![u, d, up_to],
            )?;
            Ok(())
        })
        .await
    }

    async fn create_backup(&self, user_id: &str, algorithm: &str, auth_data: &str) -> Result<i64> {
        let (u, a, j) = (
            user_id.to_owned(),
            algorithm.to_owned(),
            auth_data.to_owned(),
        );
        self.write(move |tx, _| {
            // Numbers of deleted versions are not reused.
            let version: i64 = tx.q_row(
                "SELECT coalesce(max(version), 0) + 1 FROM e2e_backup_versions WHERE user_id = ?1",
                [&u],
                |r| r.get(0),
            )?;
            tx.exec(
                "INSERT INTO e2e_backup_versions (user_id, version, algorithm, auth_data) VALUES (?1, ?2, ?3, ?4)",
                params![u, version, a, j],
            )?;
            Ok(version)
        })
        .await
    }

    async fn backup_version(
        &self,
        user_id: &str,
        version: Option<i64>,
    ) -> Result<Option<BackupVersionRecord>> {
        let u = user_id.to_owned();
        self.read(move |c| {
            let version = match version {
                Some(v) => Some(v).filter(|v| live_backup(c, &u, *v).unwrap_or(false)),
                None => current_backup(c, &u)?,
            };
            let Some(version) = version else {
                return Ok(None);
            };
            let (algorithm, auth_data): (String, String) = c.q_row(
                "SELECT algorithm, auth_data FROM e2e_backup_versions WHERE user_id = ?1 AND version = ?2",
                params![u, version],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let (count, etag) = backup_counts(c, &u, version)?;
            Ok(Some(BackupVersionRecord {
                version,
                algorithm,
                auth_data,
                etag,
                count,
            }))
        })
        .await
    }

    async fn update_backup_auth_data(
        &self,
        user_id: &str,
        version: i64,
        auth_data: &str,
    ) -> Result<bool> {
        let (u, j) = (user_id.to_owned(), auth_data.to_owned());
        self.write(move |tx, _| {
            Ok(tx.exec(
                "UPDATE e2e_backup_versions SET auth_data = ?3 WHERE user_id = ?1 AND version = ?2 AND deleted = 0",
                params![u, version, j],
            )? > 0)
        })
        .await
    }

    async fn delete_backup(&self, user_id: &str, version: i64) -> Result<bool> {
        let u = user_id.to_owned();
        self.write(move |tx, _| {
            let existed = tx.exec(
                "UPDATE e2e_backup_versions SET deleted = 1 WHERE user_id = ?1 AND version = ?2",
                params![u, version],
            )? > 0;
            tx.exec(
                "DELETE FROM e2e_backup_keys WHERE user_id = ?1 AND version = ?2",
                params![u, version],
            )?;
            Ok(existed)
        })
        .await
    }

    async fn put_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        keys: Vec<BackupKeyRecord>,
        better: BetterBackupKey,
    ) -> Result<BackupWrite> {
        let u = user_id.to_owned();
        self.write(move |tx, _| {
            let current = current_backup(tx, &u)?;
            if current != Some(version) {
                // Keys go to the current version only; without one there is nothing to write to.
                return Ok(match current {
                    Some(_) => BackupWrite::WrongVersion { current },
                    None => BackupWrite::NotFound,
                });
            }
            let mut changed = false;
            for k in keys {
                let old = tx
                    .q_row(
                        "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
                         FROM e2e_backup_keys WHERE user_id = ?1 AND version = ?2 AND room_id = ?3 AND session_id = ?4",
                        params![u, version, k.room_id, k.session_id],
                        backup_key_row,
                    )
                    .optional()?;
                if old.as_ref().is_some_and(|old| !better(&k, old)) {
                    continue;
                }
                tx.exec(
                    "INSERT INTO e2e_backup_keys (user_id, version, room_id, session_id, first_message_index,
                        forwarded_count, is_verified, session_data)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
                        first_message_index = excluded.first_message_index,
                        forwarded_count = excluded.forwarded_count,
                        is_verified = excluded.is_verified,
                        session_data = excluded.session_data",
                    params![
                        u,
                        version,
                        k.room_id,
                        k.session_id,
                        k.first_message_index,
                        k.forwarded_count,
                        k.is_verified,
                        k.session_data
                    ],
                )?;
                changed = true;
            }
            touch_backup(tx, &u, version, changed)
        })
        .await
    }

    async fn backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Option<Vec<BackupKeyRecord>>> {
        let (u, r, s) = (
            user_id.to_owned(),
            room_id.map(str::to_owned),
            session_id.map(str::to_owned),
        );
        self.read(move |c| {
            if !live_backup(c, &u, version)? {
                return Ok(None);
            }
            let mut st = c.prepare_cached(
                "SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
                 FROM e2e_backup_keys
                 WHERE user_id = ?1 AND version = ?2 AND (?3 IS NULL OR room_id = ?3)
                   AND (?4 IS NULL OR session_id = ?4)
                 ORDER BY room_id, session_id",
            )?;
            Ok(Some(
                st.query_map(params![u, version, r, s], backup_key_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?,
            ))
        })
        .await
    }

    async fn delete_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<BackupWrite> {
        let (u, r, s) = (
            user_id.to_owned(),
            room_id.map(str::to_owned),
            session_id.map(str::to_owned),
        );
        self.write(move |tx, _| {
            if !live_backup(tx, &u, version)? {
                return Ok(BackupWrite::NotFound);
            }
            let n = tx.exec(
                "DELETE FROM e2e_backup_keys WHERE user_id = ?1 AND version = ?2
                   AND (?3 IS NULL OR room_id = ?3) AND (?4 IS NULL OR session_id = ?4)",
                params![u, version, r, s],
            )?;
            touch_backup(tx, &u, version, n > 0)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccountStore, KeyUpload, OneTimeKeyRecord, Store};

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SqliteStore::open(&dir.path().join("db.sqlite")).expect("open");
        (dir, s)
    }

    fn otk(id: &str) -> OneTimeKeyRecord {
        OneTimeKeyRecord {
            algorithm: "signed_curve25519".into(),
            key_id: id.into(),
            json: format!("{{\"key\":\"{id}\"}}"),
        }
    }

    async fn device(s: &SqliteStore, user: &str, device: &str) {
        s.upsert_device_with_token(user, device, None, &format!("{user}{device}"), 0)
            .await
            .expect("device");
    }

    fn claim() -> Vec<KeyClaim> {
        vec![KeyClaim {
            user_id: "@a:x".into(),
            device_id: "D".into(),
            algorithm: "signed_curve25519".into(),
        }]
    }

    #[tokio::test]
    async fn claims_take_the_oldest_upload_first_then_the_fallback() {
        let (_d, s) = store();
        device(&s, "@a:x", "D").await;
        for (ids, fallback) in [(vec!["B1", "B2"], None), (vec!["A1"], Some(otk("F")))] {
            s.upload_keys(KeyUpload {
                user_id: "@a:x".into(),
                device_id: "D".into(),
                device_keys: None,
                one_time_keys: ids.into_iter().map(otk).collect(),
                fallback_keys: fallback.into_iter().collect(),
            })
            .await
            .expect("upload");
        }
        let mut got = Vec::new();
        for _ in 0..5 {
            let c = s.claim_keys(claim()).await.expect("claim");
            got.push((c[0].key_id.clone(), c[0].fallback));
        }
        assert_eq!(
            got,
            vec![
                ("B1".into(), false),
                ("B2".into(), false),
                ("A1".into(), false),
                ("F".into(), true),
                ("F".into(), true),
            ]
        );
        assert!(
            s.unused_fallback_key_types("@a:x", "D")
                .await
                .expect("types")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn deleting_a_device_purges_its_data_and_records_a_change() {
        let (_d, s) = store();
        device(&s, "@a:x", "D").await;
        device(&s, "@b:x", "E").await;
        s.upload_keys(KeyUpload {
            user_id: "@a:x".into(),
            device_id: "D".into(),
            device_keys: Some("{}".into()),
            one_time_keys: vec![otk("K")],
            fallback_keys: vec![otk("F")],
        })
        .await
        .expect("upload");
        let sent = s
            .queue_to_device(
                "@b:x",
                "E",
                "t1",
                "m.test",
                vec![NewToDevice {
                    user_id: "@a:x".into(),
                    device_id: None,
                    content: "{}".into(),
                }],
            )
            .await
            .expect("queue");
        assert_eq!(sent, Some(vec!["@a:x".to_owned()]));
        let before = s.current_position();
        s.delete_devices("@a:x", &["D".into()])
            .await
            .expect("delete");
        assert!(s.device_keys("@a:x", "D").await.expect("keys").is_none());
        assert!(s.claim_keys(claim()).await.expect("claim").is_empty());
        let inbox = s
            .to_device_inbox("@a:x", "D", 0, s.current_position(), 10)
            .await
            .expect("inbox");
        assert!(inbox.is_empty());
        let changes = s
            .device_list_changes("@b:x", before, s.current_position())
            .await
            .expect("changes");
        assert_eq!(changes, vec!["@a:x".to_owned()]);
        // The same transaction id from the same device is a repeat.
        let again = s
            .queue_to_device("@b:x", "E", "t1", "m.test", vec![])
            .await
            .expect("queue");
        assert_eq!(again, None);
    }
}

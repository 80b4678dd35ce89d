//! Users, devices and access tokens.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};

use super::{CachedExt, SqliteStore};
use crate::{
    AccountStore, ChangeKey, DeviceRecord, DeviceSighting, NewUser, Result, StorageError,
    TokenOwner, UserRecord,
};

const USER_COLS: &str =
    "user_id, password_hash, displayname, avatar_url, is_admin, deactivated, created_ms";

fn user_row(r: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        user_id: r.get(0)?,
        password_hash: r.get(1)?,
        displayname: r.get(2)?,
        avatar_url: r.get(3)?,
        is_admin: r.get(4)?,
        deactivated: r.get(5)?,
        created_ms: r.get(6)?,
    })
}

fn device_row(r: &Row<'_>) -> rusqlite::Result<DeviceRecord> {
    Ok(DeviceRecord {
        user_id: r.get(0)?,
        device_id: r.get(1)?,
        display_name: r.get(2)?,
        last_seen_ip: r.get(3)?,
        last_seen_ms: r.get(4)?,
    })
}

const DEVICE_COLS: &str = "user_id, device_id, display_name, last_seen_ip, last_seen_ms";

#[async_trait]
impl AccountStore for SqliteStore {
    async fn create_user(&self, u: NewUser) -> Result<()> {
        self.write(move |tx, _| {
            let n = tx.exec(
                "INSERT OR IGNORE INTO users (user_id, password_hash, displayname, is_admin, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![u.user_id, u.password_hash, u.displayname, u.is_admin, u.created_ms],
            )?;
            if n == 0 {
                return Err(StorageError::Conflict(format!("user {} exists", u.user_id)));
            }
            Ok(())
        })
        .await
    }

    async fn get_user(&self, user_id: &str) -> Result<Option<UserRecord>> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            Ok(c.q_row(
                &format!("SELECT {USER_COLS} FROM users WHERE user_id = ?1"),
                [user_id],
                user_row,
            )
            .optional()?)
        })
        .await
    }

    async fn count_users(&self) -> Result<u64> {
        self.read(|c| Ok(c.q_row("SELECT COUNT(*) FROM users", [], |r| r.get::<_, i64>(0))? as u64))
            .await
    }

    async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<()> {
        let (user_id, hash) = (user_id.to_owned(), hash.to_owned());
        self.write(move |tx, pos| {
            pos.touch(ChangeKey::Credentials);
            tx.exec(
                "UPDATE users SET password_hash = ?2 WHERE user_id = ?1",
                params![user_id, hash],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_displayname(&self, user_id: &str, name: Option<&str>) -> Result<()> {
        let (user_id, name) = (user_id.to_owned(), name.map(str::to_owned));
        self.write(move |tx, _| {
            tx.exec(
                "UPDATE users SET displayname = ?2 WHERE user_id = ?1",
                params![user_id, name],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_avatar_url(&self, user_id: &str, url: Option<&str>) -> Result<()> {
        let (user_id, url) = (user_id.to_owned(), url.map(str::to_owned));
        self.write(move |tx, _| {
            tx.exec(
                "UPDATE users SET avatar_url = ?2 WHERE user_id = ?1",
                params![user_id, url],
            )?;
            Ok(())
        })
        .await
    }

    async fn deactivate_user(&self, user_id: &str) -> Result<()> {
        let user_id = user_id.to_owned();
        self.write(move |tx, pos| {
            pos.touch(ChangeKey::Credentials);
            tx.exec(
                "UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = ?1",
                [&user_id],
            )?;
            tx.exec("DELETE FROM access_tokens WHERE user_id = ?1", [&user_id])?;
            tx.exec("DELETE FROM devices WHERE user_id = ?1", [&user_id])?;
            super::keys::purge_user(tx, pos, &user_id)?;
            Ok(())
        })
        .await
    }

    async fn upsert_device_with_token(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<()> {
        let (u, d, n, t) = (
            user_id.to_owned(),
            device_id.to_owned(),
            display_name.map(str::to_owned),
            token_hash.to_owned(),
        );
        self.write(move |tx, pos| {
            pos.touch(ChangeKey::Credentials);
            let existing: Option<i64> = tx
                .q_row("SELECT 1 FROM devices WHERE user_id = ?1 AND device_id = ?2", params![u, d], |r| r.get(0))
                .optional()?;
            if existing.is_some() {
                // Logging in with an existing device id replaces that device's session.
                tx.exec("DELETE FROM access_tokens WHERE user_id = ?1 AND device_id = ?2", params![u, d])?;
                if n.is_some() {
                    tx.exec(
                        "UPDATE devices SET display_name = ?3 WHERE user_id = ?1 AND device_id = ?2",
                        params![u, d, n],
                    )?;
                }
            } else {
                tx.exec(
                    "INSERT INTO devices (user_id, device_id, display_name, created_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?4)",
                    params![u, d, n, now_ms],
                )?;
            }
            tx.exec(
                "INSERT INTO access_tokens (token_hash, user_id, device_id) VALUES (?1, ?2, ?3)",
                params![t, u, d],
            )?;
            Ok(())
        })
        .await
    }

    async fn token_owner(&self, token_hash: &str) -> Result<Option<TokenOwner>> {
        let t = token_hash.to_owned();
        self.read(move |c| {
            Ok(c.q_row(
                "SELECT user_id, device_id FROM access_tokens WHERE token_hash = ?1",
                [t],
                |r| {
                    Ok(TokenOwner {
                        user_id: r.get(0)?,
                        device_id: r.get(1)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    async fn delete_token(&self, token_hash: &str) -> Result<()> {
        let t = token_hash.to_owned();
        self.write(move |tx, pos| {
            pos.touch(ChangeKey::Credentials);
            tx.exec("DELETE FROM access_tokens WHERE token_hash = ?1", [t])?;
            Ok(())
        })
        .await
    }

    async fn touch_devices(&self, sightings: Vec<DeviceSighting>) -> Result<()> {
        if sightings.is_empty() {
            return Ok(());
        }
        self.write(move |tx, _| {
            let mut st = tx.prepare_cached(
                "UPDATE devices SET last_seen_ip = ?3, last_seen_ms = ?4 WHERE user_id = ?1 AND device_id = ?2",
            )?;
            for s in &sightings {
                st.execute(params![s.user_id, s.device_id, s.ip, s.at_ms])?;
            }
            Ok(())
        })
        .await
    }

    async fn list_devices(&self, user_id: &str) -> Result<Vec<DeviceRecord>> {
        let u = user_id.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {DEVICE_COLS} FROM devices WHERE user_id = ?1 ORDER BY device_id"
            ))?;
            let rows = st
                .query_map([u], device_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn get_device(&self, user_id: &str, device_id: &str) -> Result<Option<DeviceRecord>> {
        let (u, d) = (user_id.to_owned(), device_id.to_owned());
        self.read(move |c| {
            Ok(c.q_row(
                &format!("SELECT {DEVICE_COLS} FROM devices WHERE user_id = ?1 AND device_id = ?2"),
                params![u, d],
                device_row,
            )
            .optional()?)
        })
        .await
    }

    async fn set_device_name(
        &self,
        user_id: &str,
        device_id: &str,
        name: Option<&str>,
    ) -> Result<bool> {
        let (u, d, n) = (
            user_id.to_owned(),
            device_id.to_owned(),
            name.map(str::to_owned),
        );
        self.write(move |tx, _| {
            Ok(tx.exec(
                "UPDATE devices SET display_name = ?3 WHERE user_id = ?1 AND device_id = ?2",
                params![u, d, n],
            )? > 0)
        })
        .await
    }

    async fn delete_devices(&self, user_id: &str, device_ids: &[String]) -> Result<Vec<String>> {
        let u = user_id.to_owned();
        let ids = device_ids.to_vec();
        self.write(move |tx, pos| {
            pos.touch(ChangeKey::Credentials);
            let mut deleted = Vec::new();
            for d in ids {
                if tx.exec(
                    "DELETE FROM devices WHERE user_id = ?1 AND device_id = ?2",
                    params![u, d],
                )? > 0
                {
                    deleted.push(d.clone());
                }
                tx.exec(
                    "DELETE FROM access_tokens WHERE user_id = ?1 AND device_id = ?2",
                    params![u, d],
                )?;
                super::keys::purge_device(tx, pos, &u, &d)?;
            }
            Ok(deleted)
        })
        .await
    }

    async fn delete_all_devices(&self, user_id: &str, keep: Option<&str>) -> Result<()> {
        let (u, keep) = (user_id.to_owned(), keep.unwrap_or("").to_owned());
        self.write(move |tx, pos| {
            pos.touch(ChangeKey::Credentials);
            tx.exec(
                "DELETE FROM devices WHERE user_id = ?1 AND device_id != ?2",
                params![u, keep],
            )?;
            tx.exec(
                "DELETE FROM access_tokens WHERE user_id = ?1 AND device_id != ?2",
                params![u, keep],
            )?;
            super::keys::purge_devices_except(tx, pos, &u, Some(&keep))?;
            Ok(())
        })
        .await
    }

    async fn search_users(
        &self,
        searcher: &str,
        term: &str,
        limit: u32,
    ) -> Result<Vec<UserRecord>> {
        let searcher = searcher.to_owned();
        let exact = term.to_lowercase();
        let escaped = exact
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let (pattern, prefix) = (format!("%{escaped}%"), format!("{escaped}%"));
        self.read(move |c| {
            // Visible users: the searcher, anyone sharing a joined room with them, anyone joined to a
            // public, world-readable or published room, and a user named by their exact id.
            // Exact matches rank first, then prefix matches, then users with a display name.
            let sql = format!(
                "SELECT {USER_COLS} FROM users u
                 WHERE u.deactivated = 0
                   AND (lower(u.user_id) LIKE ?2 ESCAPE '\\' OR lower(coalesce(u.displayname, '')) LIKE ?2 ESCAPE '\\')
                   AND (u.user_id = ?1 OR lower(u.user_id) = ?4
                        OR EXISTS (SELECT 1 FROM memberships a JOIN memberships b ON a.room_id = b.room_id
                                   WHERE a.user_id = ?1 AND a.membership = 'join'
                                     AND b.user_id = u.user_id AND b.membership = 'join')
                        OR EXISTS (SELECT 1 FROM memberships m
                                   WHERE m.user_id = u.user_id AND m.membership = 'join'
                                     AND (EXISTS (SELECT 1 FROM rooms r WHERE r.room_id = m.room_id AND r.published = 1)
                                          OR EXISTS (SELECT 1 FROM current_state cs JOIN events e ON e.event_id = cs.event_id
                                                     WHERE cs.room_id = m.room_id AND cs.state_key = ''
                                                       AND ((cs.event_type = 'm.room.join_rules'
                                                             AND json_extract(e.json, '$.content.join_rule') = 'public')
                                                         OR (cs.event_type = 'm.room.history_visibility'
                                                             AND json_extract(e.json, '$.content.history_visibility') = 'world_readable'))))))
                 ORDER BY (lower(u.user_id) = ?4 OR lower(coalesce(u.displayname, '')) = ?4) DESC,
                          (substr(lower(u.user_id), 2) LIKE ?5 ESCAPE '\\' OR lower(coalesce(u.displayname, '')) LIKE ?5 ESCAPE '\\') DESC,
                          u.displayname IS NULL, u.user_id
                 LIMIT ?3"
            );
            let mut st = c.prepare_cached(&sql)?;
            let rows = st
                .query_map(
                    params![searcher, pattern, i64::from(limit) + 1, exact, prefix],
                    user_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }
}

//! Administration: registration tokens and their reservations, the admin audit trail, listings of
//! users, rooms and media for operators, room purges and blocks, media quarantine and the rooms
//! that carry server notices.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{CachedExt, SqliteStore};
use crate::{
    AdminStore, AuditRecord, ChangeKey, ClaimedToken, MediaAdminEntry, MediaOrder, MediaRecord,
    NewAuditEntry, NewRegistrationToken, RegistrationTokenRecord, RegistrationTokenUpdate,
    Reservation, Result, RoomListEntry, RoomListQuery, RoomOrder, StorageError, UserListEntry,
    UserListQuery, UserOrder, UserRecord,
};

const TOKEN_COLS: &str = "id, token, uses_allowed, completed, expiry_time, bound_localpart, \
     displayname, created_by, created_ms, revoked_ms";

fn token_row(r: &Row<'_>) -> rusqlite::Result<RegistrationTokenRecord> {
    Ok(RegistrationTokenRecord {
        id: r.get(0)?,
        token: r.get(1)?,
        uses_allowed: r.get(2)?,
        completed: r.get(3)?,
        expiry_time: r.get(4)?,
        bound_localpart: r.get(5)?,
        displayname: r.get(6)?,
        created_by: r.get(7)?,
        created_ms: r.get(8)?,
        revoked_ms: r.get(9)?,
        pending: 0,
        used_by: vec![],
    })
}

/// Fills in the parts of a token record that live in other tables.
fn complete_token(
    c: &Connection,
    mut t: RegistrationTokenRecord,
    now_ms: i64,
) -> Result<RegistrationTokenRecord> {
    t.pending = c.q_row(
        "SELECT COUNT(*) FROM registration_token_reservations WHERE token_id = ?1 AND expires_ms > ?2",
        params![t.id, now_ms],
        |r| r.get(0),
    )?;
    let mut st = c.prepare_cached(
        "SELECT user_id FROM registration_token_uses WHERE token_id = ?1 ORDER BY used_ms, user_id",
    )?;
    t.used_by = st
        .query_map([t.id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(t)
}

fn claimed_row(r: &Row<'_>) -> rusqlite::Result<ClaimedToken> {
    Ok(ClaimedToken {
        token_id: r.get(0)?,
        token_hash: r.get(1)?,
        bound_localpart: r.get(2)?,
        displayname: r.get(3)?,
        expires_ms: r.get(4)?,
    })
}

const CLAIM_SELECT: &str =
    "SELECT t.id, t.token_hash, t.bound_localpart, t.displayname, r.expires_ms
     FROM registration_token_reservations r JOIN registration_tokens t ON t.id = r.token_id
     WHERE r.session = ?1 AND r.expires_ms > ?2 AND t.revoked_ms IS NULL
       AND (t.expiry_time IS NULL OR t.expiry_time > ?2)";

fn user_order(o: UserOrder) -> &'static str {
    match o {
        UserOrder::Name => "u.user_id",
        UserOrder::Admin => "u.is_admin",
        UserOrder::Deactivated => "u.deactivated",
        UserOrder::Displayname => "u.displayname",
        UserOrder::AvatarUrl => "u.avatar_url",
        UserOrder::CreationTs => "u.created_ms",
        UserOrder::LastSeenTs => "last_seen",
    }
}

fn room_order(o: RoomOrder) -> &'static str {
    match o {
        RoomOrder::Name => "lower(name)",
        RoomOrder::CanonicalAlias => "canonical_alias",
        RoomOrder::JoinedMembers => "joined_members",
        RoomOrder::JoinedLocalMembers => "joined_local_members",
        RoomOrder::Version => "room_version",
        RoomOrder::Creator => "creator",
        RoomOrder::Encryption => "encryption",
        RoomOrder::Federatable => "federatable",
        RoomOrder::Public => "published",
        RoomOrder::JoinRules => "join_rules",
        RoomOrder::GuestAccess => "guest_access",
        RoomOrder::HistoryVisibility => "history_visibility",
        RoomOrder::StateEvents => "state_events",
    }
}

fn media_order(o: MediaOrder) -> &'static str {
    match o {
        MediaOrder::MediaId => "m.media_id",
        MediaOrder::UploadName => "m.filename",
        MediaOrder::CreatedTs => "m.created_ms",
        MediaOrder::MediaLength => "m.size",
        MediaOrder::MediaType => "m.content_type",
        MediaOrder::QuarantinedBy => "q.quarantined_by",
    }
}

fn dir(descending: bool) -> &'static str {
    if descending { "DESC" } else { "ASC" }
}

/// A field of a current state event of the room `r`, read from its JSON.
fn state_field(kind: &str, path: &str) -> String {
    format!(
        "(SELECT json_extract(e.json, '{path}') FROM current_state cs JOIN events e ON e.event_id = cs.event_id
          WHERE cs.room_id = r.room_id AND cs.event_type = '{kind}' AND cs.state_key = '')"
    )
}

/// Every room with the fields operators look at; `?1` is the server name.
fn rooms_select() -> String {
    format!(
        "SELECT r.room_id AS room_id, r.room_version AS room_version, r.creator AS creator,
                r.published AS published,
                {name} AS name, {topic} AS topic, {avatar} AS avatar, {alias} AS canonical_alias,
                {join_rules} AS join_rules, {guest} AS guest_access, {hist} AS history_visibility,
                {enc} AS encryption, {rtype} AS room_type,
                coalesce({federate}, 1) AS federatable,
                (SELECT COUNT(*) FROM memberships m WHERE m.room_id = r.room_id AND m.membership = 'join') AS joined_members,
                (SELECT COUNT(*) FROM memberships m WHERE m.room_id = r.room_id AND m.membership = 'join'
                   AND substr(m.user_id, -length(?1) - 1) = ':' || ?1) AS joined_local_members,
                (SELECT COUNT(*) FROM current_state cs WHERE cs.room_id = r.room_id) AS state_events
         FROM rooms r",
        name = state_field("m.room.name", "$.content.name"),
        topic = state_field("m.room.topic", "$.content.topic"),
        avatar = state_field("m.room.avatar", "$.content.url"),
        alias = state_field("m.room.canonical_alias", "$.content.alias"),
        join_rules = state_field("m.room.join_rules", "$.content.join_rule"),
        guest = state_field("m.room.guest_access", "$.content.guest_access"),
        hist = state_field("m.room.history_visibility", "$.content.history_visibility"),
        enc = state_field("m.room.encryption", "$.content.algorithm"),
        rtype = state_field("m.room.create", "$.content.type"),
        federate = state_field("m.room.create", "$.content.\"m.federate\""),
    )
}

/// Reads a JSON text field that may hold a non-string (a malformed state event).
fn text(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<String>> {
    use rusqlite::types::ValueRef;
    Ok(match r.get_ref(i)? {
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        _ => None,
    })
}

fn room_row(r: &Row<'_>) -> rusqlite::Result<RoomListEntry> {
    use rusqlite::types::ValueRef;
    let federatable = match r.get_ref(13)? {
        ValueRef::Integer(i) => i != 0,
        ValueRef::Real(f) => f != 0.0,
        _ => true,
    };
    Ok(RoomListEntry {
        room_id: r.get(0)?,
        version: r.get(1)?,
        creator: r.get(2)?,
        published: r.get(3)?,
        name: text(r, 4)?,
        topic: text(r, 5)?,
        avatar: text(r, 6)?,
        canonical_alias: text(r, 7)?,
        join_rules: text(r, 8)?,
        guest_access: text(r, 9)?,
        history_visibility: text(r, 10)?,
        encryption: text(r, 11)?,
        room_type: text(r, 12)?,
        federatable,
        joined_members: r.get(14)?,
        joined_local_members: r.get(15)?,
        state_events: r.get(16)?,
    })
}

fn media_entry(r: &Row<'_>) -> rusqlite::Result<MediaAdminEntry> {
    Ok(MediaAdminEntry {
        media: MediaRecord {
            media_id: r.get(0)?,
            content_hash: r.get(1)?,
            content_type: r.get(2)?,
            filename: r.get(3)?,
            size: r.get(4)?,
            uploader: r.get(5)?,
            created_ms: r.get(6)?,
        },
        quarantined_by: r.get(7)?,
    })
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Tables whose rows are kept when a room is purged: the block must outlive the room.
const KEPT_ON_PURGE: &[&str] = &["blocked_rooms"];

#[async_trait]
impl AdminStore for SqliteStore {
    async fn create_registration_token(&self, t: NewRegistrationToken) -> Result<i64> {
        self.write(move |tx, _| {
            let n = tx.exec(
                "INSERT OR IGNORE INTO registration_tokens
                   (token, token_hash, uses_allowed, expiry_time, bound_localpart, displayname, created_by, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    t.token,
                    t.token_hash,
                    t.uses_allowed,
                    t.expiry_time,
                    t.bound_localpart,
                    t.displayname,
                    t.created_by,
                    t.created_ms
                ],
            )?;
            if n == 0 {
                return Err(StorageError::Conflict("registration token exists".into()));
            }
            Ok(tx.last_insert_rowid())
        })
        .await
    }

    async fn registration_token(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<RegistrationTokenRecord>> {
        let h = token_hash.to_owned();
        self.read(move |c| {
            let t = c
                .q_row(
                    &format!("SELECT {TOKEN_COLS} FROM registration_tokens WHERE token_hash = ?1"),
                    [h],
                    token_row,
                )
                .optional()?;
            t.map(|t| complete_token(c, t, now_ms)).transpose()
        })
        .await
    }

    async fn registration_token_by_id(
        &self,
        id: i64,
        now_ms: i64,
    ) -> Result<Option<RegistrationTokenRecord>> {
        self.read(move |c| {
            let t = c
                .q_row(
                    &format!("SELECT {TOKEN_COLS} FROM registration_tokens WHERE id = ?1"),
                    [id],
                    token_row,
                )
                .optional()?;
            t.map(|t| complete_token(c, t, now_ms)).transpose()
        })
        .await
    }

    async fn registration_tokens(
        &self,
        enrollments: bool,
        now_ms: i64,
    ) -> Result<Vec<RegistrationTokenRecord>> {
        self.read(move |c| {
            let cond = if enrollments {
                "bound_localpart IS NOT NULL"
            } else {
                "bound_localpart IS NULL"
            };
            let mut st = c.prepare_cached(&format!(
                "SELECT {TOKEN_COLS} FROM registration_tokens WHERE {cond} ORDER BY id DESC"
            ))?;
            let rows = st
                .query_map([], token_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|t| complete_token(c, t, now_ms))
                .collect()
        })
        .await
    }

    async fn update_registration_token(
        &self,
        token_hash: &str,
        update: RegistrationTokenUpdate,
    ) -> Result<bool> {
        let h = token_hash.to_owned();
        self.write(move |tx, _| {
            let exists: Option<i64> = tx
                .q_row(
                    "SELECT id FROM registration_tokens WHERE token_hash = ?1",
                    [&h],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_none() {
                return Ok(false);
            }
            if let Some(u) = update.uses_allowed {
                tx.exec(
                    "UPDATE registration_tokens SET uses_allowed = ?2 WHERE token_hash = ?1",
                    params![h, u],
                )?;
            }
            if let Some(e) = update.expiry_time {
                tx.exec(
                    "UPDATE registration_tokens SET expiry_time = ?2 WHERE token_hash = ?1",
                    params![h, e],
                )?;
            }
            Ok(true)
        })
        .await
    }

    async fn delete_registration_token(&self, token_hash: &str) -> Result<bool> {
        let h = token_hash.to_owned();
        self.write(move |tx, _| {
            let id: Option<i64> = tx
                .q_row(
                    "SELECT id FROM registration_tokens WHERE token_hash = ?1",
                    [&h],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(id) = id else { return Ok(false) };
            tx.exec(
                "DELETE FROM registration_token_reservations WHERE token_id = ?1",
                [id],
            )?;
            tx.exec(
                "DELETE FROM registration_token_uses WHERE token_id = ?1",
                [id],
            )?;
            tx.exec("DELETE FROM registration_tokens WHERE id = ?1", [id])?;
            Ok(true)
        })
        .await
    }

    async fn revoke_registration_token(&self, id: i64, now_ms: i64) -> Result<bool> {
        self.write(move |tx, _| {
            let n = tx.exec(
                "UPDATE registration_tokens SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
                params![id, now_ms],
            )?;
            tx.exec(
                "DELETE FROM registration_token_reservations WHERE token_id = ?1",
                [id],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn reserve_registration_token(
        &self,
        token_hash: &str,
        session: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<Reservation> {
        let (h, session) = (token_hash.to_owned(), session.to_owned());
        // One write transaction: two registrations cannot both take the last use.
        self.write(move |tx, _| {
            tx.exec(
                "DELETE FROM registration_token_reservations WHERE expires_ms <= ?1",
                [now_ms],
            )?;
            let row: Option<(i64, Option<i64>, i64, Option<i64>, Option<i64>)> = tx
                .q_row(
                    "SELECT id, uses_allowed, completed, expiry_time, revoked_ms
                     FROM registration_tokens WHERE token_hash = ?1",
                    [&h],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?;
            let Some((id, uses_allowed, completed, expiry, revoked)) = row else {
                return Ok(Reservation::Invalid);
            };
            if revoked.is_some() || expiry.is_some_and(|e| e <= now_ms) {
                return Ok(Reservation::Invalid);
            }
            let others: i64 = tx.q_row(
                "SELECT COUNT(*) FROM registration_token_reservations
                 WHERE token_id = ?1 AND session != ?2 AND expires_ms > ?3",
                params![id, session, now_ms],
                |r| r.get(0),
            )?;
            if uses_allowed.is_some_and(|u| completed + others >= u) {
                return Ok(Reservation::Invalid);
            }
            tx.exec(
                "INSERT OR REPLACE INTO registration_token_reservations (session, token_id, expires_ms)
                 VALUES (?1, ?2, ?3)",
                params![session, id, expires_ms],
            )?;
            Ok(Reservation::Reserved { token_id: id })
        })
        .await
    }

    async fn reserved_token(&self, session: &str, now_ms: i64) -> Result<Option<ClaimedToken>> {
        let session = session.to_owned();
        self.read(move |c| {
            Ok(c.q_row(CLAIM_SELECT, params![session, now_ms], claimed_row)
                .optional()?)
        })
        .await
    }

    async fn claim_registration_token(
        &self,
        session: &str,
        now_ms: i64,
    ) -> Result<Option<ClaimedToken>> {
        let session = session.to_owned();
        self.write(move |tx, _| {
            let claim = tx
                .q_row(CLAIM_SELECT, params![session, now_ms], claimed_row)
                .optional()?;
            let Some(claim) = claim else {
                return Ok(None);
            };
            tx.exec(
                "DELETE FROM registration_token_reservations WHERE session = ?1",
                [&session],
            )?;
            tx.exec(
                "UPDATE registration_tokens SET completed = completed + 1 WHERE id = ?1",
                [claim.token_id],
            )?;
            Ok(Some(claim))
        })
        .await
    }

    async fn unclaim_registration_token(&self, claim: &ClaimedToken) -> Result<()> {
        let id = claim.token_id;
        self.write(move |tx, _| {
            tx.exec(
                "UPDATE registration_tokens SET completed = max(completed - 1, 0) WHERE id = ?1",
                [id],
            )?;
            Ok(())
        })
        .await
    }

    async fn record_registration_token_use(
        &self,
        token_id: i64,
        user_id: &str,
        now_ms: i64,
    ) -> Result<()> {
        let user_id = user_id.to_owned();
        self.write(move |tx, _| {
            tx.exec(
                "INSERT OR IGNORE INTO registration_token_uses (token_id, user_id, used_ms) VALUES (?1, ?2, ?3)",
                params![token_id, user_id, now_ms],
            )?;
            Ok(())
        })
        .await
    }

    async fn release_registration_token(&self, session: &str) -> Result<()> {
        let session = session.to_owned();
        self.write(move |tx, _| {
            tx.exec(
                "DELETE FROM registration_token_reservations WHERE session = ?1",
                [session],
            )?;
            Ok(())
        })
        .await
    }

    async fn append_admin_audit(&self, e: NewAuditEntry) -> Result<i64> {
        self.write(move |tx, _| {
            tx.exec(
                "INSERT INTO admin_audit (ts_ms, actor, action, target, details) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![e.ts_ms, e.actor, e.action, e.target, e.details],
            )?;
            Ok(tx.last_insert_rowid())
        })
        .await
    }

    async fn admin_audit(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditRecord>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, ts_ms, actor, action, target, details FROM admin_audit
                 WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = st
                .query_map(params![before.unwrap_or(i64::MAX), limit], |r| {
                    Ok(AuditRecord {
                        id: r.get(0)?,
                        ts_ms: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        target: r.get(4)?,
                        details: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn list_users(&self, q: UserListQuery) -> Result<(Vec<UserListEntry>, u64)> {
        self.read(move |c| {
            let name = q.name.as_deref().map(str::to_lowercase);
            let user_id = q.user_id.as_deref().map(str::to_lowercase);
            let filter = "FROM users u
                 WHERE (?1 IS NULL OR instr(lower(u.user_id), ?1) > 0
                        OR instr(lower(coalesce(u.displayname, '')), ?1) > 0)
                   AND (?2 IS NULL OR instr(lower(u.user_id), ?2) > 0)
                   AND (?3 IS NULL OR u.is_admin = ?3)
                   AND (?4 OR u.deactivated = 0)";
            let total: i64 = c.q_row(
                &format!("SELECT COUNT(*) {filter}"),
                params![name, user_id, q.admins, q.include_deactivated],
                |r| r.get(0),
            )?;
            let d = dir(q.descending);
            let sql = format!(
                "SELECT u.user_id, u.password_hash, u.displayname, u.avatar_url, u.is_admin,
                        u.deactivated, u.created_ms,
                        (SELECT MAX(d.last_seen_ms) FROM devices d WHERE d.user_id = u.user_id) AS last_seen
                 {filter}
                 ORDER BY {col} {d}, u.user_id {d}
                 LIMIT ?5 OFFSET ?6",
                col = user_order(q.order),
            );
            let mut st = c.prepare_cached(&sql)?;
            let rows = st
                .query_map(
                    params![
                        name,
                        user_id,
                        q.admins,
                        q.include_deactivated,
                        to_i64(q.limit),
                        to_i64(q.from)
                    ],
                    |r| {
                        Ok(UserListEntry {
                            user: UserRecord {
                                user_id: r.get(0)?,
                                password_hash: r.get(1)?,
                                displayname: r.get(2)?,
                                avatar_url: r.get(3)?,
                                is_admin: r.get(4)?,
                                deactivated: r.get(5)?,
                                created_ms: r.get(6)?,
                            },
                            last_seen_ms: r.get(7)?,
                        })
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((rows, u64::try_from(total).unwrap_or(0)))
        })
        .await
    }

    async fn set_user_admin(&self, user_id: &str, admin: bool) -> Result<bool> {
        let user_id = user_id.to_owned();
        self.write(move |tx, pos| {
            pos.touch(ChangeKey::Credentials);
            Ok(tx.exec(
                "UPDATE users SET is_admin = ?2 WHERE user_id = ?1",
                params![user_id, admin],
            )? > 0)
        })
        .await
    }

    async fn reactivate_user(&self, user_id: &str) -> Result<bool> {
        let user_id = user_id.to_owned();
        self.write(move |tx, pos| {
            pos.touch(ChangeKey::Credentials);
            Ok(tx.exec(
                "UPDATE users SET deactivated = 0 WHERE user_id = ?1",
                [user_id],
            )? > 0)
        })
        .await
    }

    async fn count_admins(&self) -> Result<u64> {
        self.read(|c| {
            let n: i64 = c.q_row(
                "SELECT COUNT(*) FROM users WHERE is_admin = 1 AND deactivated = 0",
                [],
                |r| r.get(0),
            )?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn deactivated_memberships(&self) -> Result<Vec<(String, String)>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                // From the few deactivated users (partial index) to their memberships.
                "SELECT m.room_id, m.user_id FROM users u CROSS JOIN memberships m
                 WHERE u.deactivated = 1 AND m.user_id = u.user_id
                   AND m.membership IN ('join', 'invite', 'knock')",
            )?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn list_rooms(&self, q: RoomListQuery) -> Result<(Vec<RoomListEntry>, u64)> {
        self.read(move |c| {
            let search = q.search.as_deref().map(str::to_lowercase);
            let filter = "WHERE (?2 IS NULL OR instr(lower(coalesce(name, '')), ?2) > 0
                                OR instr(lower(coalesce(canonical_alias, '')), ?2) > 0
                                OR instr(lower(room_id), ?2) > 0)";
            let inner = rooms_select();
            let total: i64 = c.q_row(
                &format!("SELECT COUNT(*) FROM ({inner}) {filter}"),
                params![q.server_name, search],
                |r| r.get(0),
            )?;
            let d = dir(q.descending);
            let sql = format!(
                "SELECT * FROM ({inner}) {filter} ORDER BY {col} {d}, room_id {d} LIMIT ?3 OFFSET ?4",
                col = room_order(q.order),
            );
            let mut st = c.prepare_cached(&sql)?;
            let rows = st
                .query_map(
                    params![q.server_name, search, to_i64(q.limit), to_i64(q.from)],
                    room_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((rows, u64::try_from(total).unwrap_or(0)))
        })
        .await
    }

    async fn room_details(
        &self,
        room_id: &str,
        server_name: &str,
    ) -> Result<Option<RoomListEntry>> {
        let (room_id, server_name) = (room_id.to_owned(), server_name.to_owned());
        self.read(move |c| {
            let sql = format!("SELECT * FROM ({}) WHERE room_id = ?2", rooms_select());
            Ok(c.q_row(&sql, params![server_name, room_id], room_row)
                .optional()?)
        })
        .await
    }

    async fn purge_room(&self, room_id: &str) -> Result<()> {
        let room_id = room_id.to_owned();
        self.write(move |tx, pos| {
            // Cached memberships of everyone who was in the room go stale.
            let members: Vec<String> = {
                let mut st = tx.prepare_cached("SELECT user_id FROM memberships WHERE room_id = ?1")?;
                st.query_map([&room_id], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?
            };
            for m in &members {
                pos.touch_user(m);
                pos.touch(ChangeKey::Reads(m.clone()));
            }
            pos.touch_room(&room_id);
            pos.touch(ChangeKey::Receipts(room_id.clone()));
            pos.recent(crate::recent::RecentChange::Forget(room_id.clone()));
            pos.notification(crate::recent_notifications::NotificationChange::ForgetAll);
            // Other tables may reference each other; check those references at commit only.
            tx.execute_batch("PRAGMA defer_foreign_keys = ON")?;
            tx.exec(
                "DELETE FROM event_edges WHERE event_id IN (SELECT event_id FROM events WHERE room_id = ?1)",
                [&room_id],
            )?;
            tx.exec(
                "DELETE FROM txn_ids WHERE event_id IN (SELECT event_id FROM events WHERE room_id = ?1)",
                [&room_id],
            )?;
            tx.exec(
                "DELETE FROM state_group_entries WHERE group_id IN (SELECT id FROM state_groups WHERE room_id = ?1)",
                [&room_id],
            )?;
            // Every other table with a room_id column holds data of the room: the schema grows
            // with each feature, and a purge must not leave any of it behind.
            let tables: Vec<String> = {
                let mut st = tx.prepare_cached(
                    "SELECT m.name FROM sqlite_master m
                     WHERE m.type = 'table'
                       AND EXISTS (SELECT 1 FROM pragma_table_info(m.name) p WHERE p.name = 'room_id')",
                )?;
                st.query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?
            };
            for t in tables {
                if KEPT_ON_PURGE.contains(&t.as_str()) {
                    continue;
                }
                let quoted = t.replace('"', "\"\"");
                tx.exec(
                    &format!("DELETE FROM \"{quoted}\" WHERE room_id = ?1"),
                    [&room_id],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn set_room_blocked(&self, room_id: &str, by: Option<&str>, now_ms: i64) -> Result<()> {
        let (room_id, by) = (room_id.to_owned(), by.map(str::to_owned));
        self.write(move |tx, _| {
            match by {
                Some(by) => tx.exec(
                    "INSERT OR REPLACE INTO blocked_rooms (room_id, blocked_by, ts_ms) VALUES (?1, ?2, ?3)",
                    params![room_id, by, now_ms],
                )?,
                None => tx.exec("DELETE FROM blocked_rooms WHERE room_id = ?1", [room_id])?,
            };
            Ok(())
        })
        .await
    }

    async fn room_blocked_by(&self, room_id: &str) -> Result<Option<String>> {
        let room_id = room_id.to_owned();
        self.read(move |c| {
            Ok(c.q_row(
                "SELECT blocked_by FROM blocked_rooms WHERE room_id = ?1",
                [room_id],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn room_events_with_urls(&self, room_id: &str) -> Result<Vec<String>> {
        let room_id = room_id.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT json FROM events WHERE room_id = ?1 AND instr(json, 'mxc://') > 0 ORDER BY stream",
            )?;
            let rows = st
                .query_map([room_id], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn list_user_media(
        &self,
        user_id: &str,
        from: u64,
        limit: u64,
        order: MediaOrder,
        descending: bool,
    ) -> Result<(Vec<MediaAdminEntry>, u64)> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            let total: i64 = c.q_row(
                "SELECT COUNT(*) FROM media WHERE uploader = ?1 AND content_hash != ''",
                [&user_id],
                |r| r.get(0),
            )?;
            let d = dir(descending);
            let sql = format!(
                "SELECT m.media_id, m.content_hash, m.content_type, m.filename, m.size, m.uploader,
                        m.created_ms, q.quarantined_by
                 FROM media m LEFT JOIN media_quarantine q ON q.media_id = m.media_id
                 WHERE m.uploader = ?1 AND m.content_hash != ''
                 ORDER BY {col} {d}, m.media_id {d} LIMIT ?2 OFFSET ?3",
                col = media_order(order),
            );
            let mut st = c.prepare_cached(&sql)?;
            let rows = st
                .query_map(params![user_id, to_i64(limit), to_i64(from)], media_entry)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((rows, u64::try_from(total).unwrap_or(0)))
        })
        .await
    }

    async fn set_media_quarantine(
        &self,
        media_ids: &[String],
        by: Option<&str>,
        now_ms: i64,
    ) -> Result<u64> {
        let (ids, by) = (media_ids.to_vec(), by.map(str::to_owned));
        self.write(move |tx, _| {
            let mut changed = 0u64;
            for id in ids {
                let n = match &by {
                    Some(by) => tx.exec(
                        "INSERT OR IGNORE INTO media_quarantine (media_id, quarantined_by, ts_ms)
                         SELECT media_id, ?2, ?3 FROM media WHERE media_id = ?1",
                        params![id, by, now_ms],
                    )?,
                    None => tx.exec("DELETE FROM media_quarantine WHERE media_id = ?1", [id])?,
                };
                changed += n as u64;
            }
            Ok(changed)
        })
        .await
    }

    async fn media_quarantined_by(&self, media_id: &str) -> Result<Option<String>> {
        let id = media_id.to_owned();
        self.read(move |c| {
            Ok(c.q_row(
                "SELECT quarantined_by FROM media_quarantine WHERE media_id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn user_media_ids(&self, user_id: &str) -> Result<Vec<String>> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT media_id FROM media WHERE uploader = ?1 AND content_hash != '' ORDER BY created_ms",
            )?;
            let rows = st
                .query_map([user_id], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn server_notice_room(&self, user_id: &str) -> Result<Option<String>> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            Ok(c.q_row(
                "SELECT room_id FROM server_notice_rooms WHERE user_id = ?1",
                [user_id],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    async fn set_server_notice_room(&self, user_id: &str, room_id: &str) -> Result<()> {
        let (user_id, room_id) = (user_id.to_owned(), room_id.to_owned());
        self.write(move |tx, _| {
            tx.exec(
                "INSERT OR REPLACE INTO server_notice_rooms (user_id, room_id) VALUES (?1, ?2)",
                params![user_id, room_id],
            )?;
            Ok(())
        })
        .await
    }

    async fn server_notice_room_owner(&self, room_id: &str) -> Result<Option<String>> {
        let room_id = room_id.to_owned();
        self.read(move |c| {
            Ok(c.q_row(
                "SELECT user_id FROM server_notice_rooms WHERE room_id = ?1",
                [room_id],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }
}

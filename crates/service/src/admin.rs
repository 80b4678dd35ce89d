//! Server administration: what operators do to users, rooms and media through the admin API, the
//! console and `feldpost admin`. Only server admins reach these (the API checks), every change is
//! written to the admin audit trail, and the server's own notices account cannot be taken over.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use feldpost_storage::Store;
pub use feldpost_storage::{
    AuditRecord, DeviceRecord, MediaAdminEntry, MediaOrder, RoomListEntry, RoomListQuery,
    RoomOrder, UserListEntry, UserListQuery, UserOrder, UserRecord,
};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};

use crate::accounts::{Accounts, Requester, Session, random_id};
use crate::enrollment::{Actor, audit};
use crate::profile::{Field, Profiles};
use crate::rooms::Rooms;
use crate::rooms::append::now_ms;
use crate::timeline::Timeline;
use crate::{Error, ErrorKind, Result};

/// How long a shared-secret registration nonce stays usable.
const NONCE_TTL: Duration = Duration::from_secs(60);
const MAX_NONCES: usize = 10_000;
/// Longest username or password shared-secret registration accepts.
const MAX_SHARED_SECRET_FIELD: usize = 512;

/// Changes to a user through `PUT /_synapse/admin/v2/users/{user_id}`; `None` leaves a field.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    pub password: Option<String>,
    pub logout_devices: bool,
    /// `Some(None)` removes the display name.
    pub displayname: Option<Option<String>>,
    pub avatar_url: Option<Option<String>>,
    pub admin: Option<bool>,
    pub deactivated: Option<bool>,
}

/// A shared-secret registration request (`POST /_synapse/admin/v1/register`).
#[derive(Debug, Clone, Default)]
pub struct SharedSecretRegistration {
    pub nonce: String,
    pub username: String,
    pub displayname: Option<String>,
    pub password: String,
    pub admin: bool,
    pub user_type: Option<String>,
    /// Hex HMAC-SHA1 of the other fields under the shared secret.
    pub mac: String,
}

/// What deleting a room did.
#[derive(Debug, Clone, Default)]
pub struct RoomDeletion {
    pub kicked_users: Vec<String>,
    pub failed_to_kick_users: Vec<String>,
    pub local_aliases: Vec<String>,
}

/// A finished room deletion, kept in memory so that its status can be asked for.
#[derive(Debug, Clone)]
pub struct DeletionRecord {
    pub delete_id: String,
    pub room_id: OwnedRoomId,
    pub result: RoomDeletion,
    finished: Instant,
}

/// How long finished deletions are remembered.
const DELETION_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// A device as `whois` reports it.
#[derive(Debug, Clone)]
pub struct Connection {
    pub device_id: String,
    pub ip: Option<String>,
    pub last_seen_ms: Option<i64>,
}

pub struct Admin {
    store: Arc<dyn Store>,
    accounts: Arc<Accounts>,
    profiles: Arc<Profiles>,
    rooms: Arc<Rooms>,
    timeline: Arc<Timeline>,
    server_name: OwnedServerName,
    shared_secret: Option<String>,
    notices_user: OwnedUserId,
    nonces: Mutex<HashMap<String, Instant>>,
    deletions: Mutex<Vec<DeletionRecord>>,
    /// Where the main listener is bound (links for phones point there when no public URL is set).
    main_addr: Mutex<Option<std::net::SocketAddr>>,
}

impl Admin {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        accounts: Arc<Accounts>,
        profiles: Arc<Profiles>,
        rooms: Arc<Rooms>,
        timeline: Arc<Timeline>,
        server_name: OwnedServerName,
        shared_secret: Option<String>,
        notices_user: OwnedUserId,
    ) -> Self {
        Self {
            store,
            accounts,
            profiles,
            rooms,
            timeline,
            server_name,
            shared_secret: shared_secret.filter(|s| !s.is_empty()),
            notices_user,
            nonces: Mutex::default(),
            deletions: Mutex::default(),
            main_addr: Mutex::default(),
        }
    }

    /// Records the address the main listener is bound to.
    pub fn set_main_addr(&self, addr: std::net::SocketAddr) {
        *self.main_addr.lock() = Some(addr);
    }

    /// The main listener's bound address, once known.
    pub fn main_addr(&self) -> Option<std::net::SocketAddr> {
        *self.main_addr.lock()
    }

    /// `M_FORBIDDEN` unless the requester is a server admin.
    pub fn require_admin(&self, r: &Requester) -> Result<()> {
        if r.is_admin {
            Ok(())
        } else {
            Err(Error::forbidden("You are not a server admin"))
        }
    }

    /// Whether any active server admin exists.
    pub async fn has_admin(&self) -> Result<bool> {
        Ok(self.store.count_admins().await? > 0)
    }

    pub async fn audit_log(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditRecord>> {
        Ok(self.store.admin_audit(before, limit.clamp(1, 1000)).await?)
    }

    // ---- users ----

    /// A local user id from a path or body, `M_INVALID_PARAM` for other servers' users.
    pub fn local_user(&self, user_id: &str) -> Result<OwnedUserId> {
        let id = OwnedUserId::try_from(user_id)
            .map_err(|_| Error::invalid_param(format!("Invalid user id {user_id}")))?;
        if id.server_name() != self.server_name {
            return Err(Error::invalid_param(
                "This endpoint can only be used with local users",
            ));
        }
        Ok(id)
    }

    pub async fn user(&self, user_id: &UserId) -> Result<UserRecord> {
        self.store
            .get_user(user_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found("User not found"))
    }

    pub async fn list_users(&self, q: UserListQuery) -> Result<(Vec<UserListEntry>, u64)> {
        // The list shows when each user was last seen.
        self.accounts.flush_seen().await?;
        Ok(self.store.list_users(q).await?)
    }

    pub async fn last_seen(&self, user_id: &UserId) -> Result<Option<i64>> {
        Ok(self
            .accounts
            .devices(user_id)
            .await?
            .iter()
            .filter_map(|d| d.last_seen_ms)
            .max())
    }

    fn protect_notices(&self, user_id: &UserId) -> Result<()> {
        if user_id == self.notices_user {
            return Err(Error::forbidden(
                "The server notices account is managed by the server",
            ));
        }
        Ok(())
    }

    /// Creates a user (`true`) or changes an existing one (`false`).
    pub async fn upsert_user(
        &self,
        actor: &Actor,
        user_id: &UserId,
        changes: UserChanges,
    ) -> Result<bool> {
        self.protect_notices(user_id)?;
        let existing = self.store.get_user(user_id.as_str()).await?;
        let created = existing.is_none();
        match &existing {
            None => {
                self.accounts
                    .register(
                        Some(user_id.localpart()),
                        changes.password.as_deref(),
                        changes.admin.unwrap_or(false),
                    )
                    .await?;
                audit(
                    &*self.store,
                    actor,
                    "user.create",
                    Some(user_id.as_str()),
                    json!({"admin": changes.admin.unwrap_or(false)}),
                )
                .await?;
            }
            Some(u) => {
                if changes.deactivated == Some(false) && u.deactivated {
                    if changes.password.is_none() {
                        return Err(Error::invalid_param(
                            "Must provide a password to re-activate an account",
                        ));
                    }
                    self.store.reactivate_user(user_id.as_str()).await?;
                    audit(
                        &*self.store,
                        actor,
                        "user.reactivate",
                        Some(user_id.as_str()),
                        json!({}),
                    )
                    .await?;
                }
                if let Some(pw) = &changes.password {
                    self.set_password(user_id, pw, changes.logout_devices)
                        .await?;
                    audit(
                        &*self.store,
                        actor,
                        "user.password",
                        Some(user_id.as_str()),
                        json!({"logout_devices": changes.logout_devices}),
                    )
                    .await?;
                }
                if let Some(a) = changes.admin
                    && a != u.is_admin
                {
                    self.set_admin(actor, user_id, a).await?;
                }
            }
        }
        if let Some(d) = &changes.displayname {
            self.profiles
                .set(user_id, Field::Displayname, d.as_deref())
                .await?;
        }
        if let Some(a) = &changes.avatar_url {
            self.profiles
                .set(user_id, Field::AvatarUrl, a.as_deref())
                .await?;
        }
        if changes.deactivated == Some(true) && !existing.as_ref().is_some_and(|u| u.deactivated) {
            self.deactivate(actor, user_id, false).await?;
        }
        Ok(created)
    }

    async fn set_password(&self, user_id: &UserId, password: &str, logout: bool) -> Result<()> {
        // An empty device id keeps no device: every session of the user ends when `logout`.
        let target = Requester {
            user_id: user_id.to_owned(),
            device_id: String::new(),
            is_admin: false,
        };
        self.accounts
            .change_password(&target, password, logout)
            .await
    }

    pub async fn reset_password(
        &self,
        actor: &Actor,
        user_id: &UserId,
        password: &str,
        logout_devices: bool,
    ) -> Result<()> {
        self.protect_notices(user_id)?;
        let u = self.user(user_id).await?;
        if u.deactivated {
            return Err(Error::invalid_param(
                "The account is deactivated; reactivate it instead",
            ));
        }
        self.set_password(user_id, password, logout_devices).await?;
        audit(
            &*self.store,
            actor,
            "user.password",
            Some(user_id.as_str()),
            json!({"logout_devices": logout_devices}),
        )
        .await
    }

    pub async fn set_admin(&self, actor: &Actor, user_id: &UserId, admin: bool) -> Result<()> {
        self.protect_notices(user_id)?;
        if let Actor::User(me) = actor
            && me == user_id
            && !admin
        {
            return Err(Error::invalid_param("You may not demote yourself"));
        }
        self.user(user_id).await?;
        self.store.set_user_admin(user_id.as_str(), admin).await?;
        audit(
            &*self.store,
            actor,
            if admin {
                "user.admin.grant"
            } else {
                "user.admin.revoke"
            },
            Some(user_id.as_str()),
            json!({}),
        )
        .await
    }

    /// Deactivates an account: its sessions end at once, then it leaves its rooms. `erase`
    /// also removes the display name and avatar.
    pub async fn deactivate(&self, actor: &Actor, user_id: &UserId, erase: bool) -> Result<()> {
        self.protect_notices(user_id)?;
        self.user(user_id).await?;
        self.accounts.deactivate(user_id).await?;
        audit(
            &*self.store,
            actor,
            "user.deactivate",
            Some(user_id.as_str()),
            json!({"erase": erase}),
        )
        .await?;
        self.leave_all_rooms(user_id).await;
        if erase {
            self.profiles.set(user_id, Field::Displayname, None).await?;
            self.profiles.set(user_id, Field::AvatarUrl, None).await?;
        }
        Ok(())
    }

    async fn leave_all_rooms(&self, user_id: &UserId) {
        let memberships = match self.store.rooms_for_user(user_id.as_str()).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(user = %user_id, error = %e, "could not list rooms to leave");
                return;
            }
        };
        for m in memberships {
            if !matches!(m.membership.as_str(), "join" | "invite" | "knock") {
                continue;
            }
            let Ok(room) = OwnedRoomId::try_from(m.room_id.as_str()) else {
                continue;
            };
            if let Err(e) = self.rooms.leave(&room, user_id, None).await {
                tracing::warn!(room = %room, user = %user_id, error = %e, "could not leave room");
            }
        }
    }

    /// Leaves the rooms of accounts deactivated while they could not be left (from the command
    /// line, or a failure midway). Returns how many memberships ended.
    pub async fn leave_rooms_of_deactivated(&self) -> Result<usize> {
        let mut n = 0;
        for (room, user) in self.store.deactivated_memberships().await? {
            let (Ok(room), Ok(user)) = (
                OwnedRoomId::try_from(room.as_str()),
                OwnedUserId::try_from(user.as_str()),
            ) else {
                continue;
            };
            if user.server_name() != self.server_name {
                continue;
            }
            match self.rooms.leave(&room, &user, None).await {
                Ok(_) => n += 1,
                Err(e) => {
                    tracing::debug!(room = %room, user = %user, error = %e, "could not leave room")
                }
            }
        }
        Ok(n)
    }

    pub async fn devices(&self, user_id: &UserId) -> Result<Vec<DeviceRecord>> {
        self.user(user_id).await?;
        self.accounts.devices(user_id).await
    }

    pub async fn device(&self, user_id: &UserId, device_id: &str) -> Result<DeviceRecord> {
        self.user(user_id).await?;
        self.accounts
            .device(user_id, device_id)
            .await?
            .ok_or_else(|| Error::not_found("Device not found"))
    }

    pub async fn set_device_name(
        &self,
        user_id: &UserId,
        device_id: &str,
        name: Option<&str>,
    ) -> Result<()> {
        self.user(user_id).await?;
        self.accounts
            .set_device_name(user_id, device_id, name)
            .await
    }

    pub async fn delete_devices(
        &self,
        actor: &Actor,
        user_id: &UserId,
        device_ids: &[String],
    ) -> Result<()> {
        self.user(user_id).await?;
        let deleted = self.accounts.delete_devices(user_id, device_ids).await?;
        audit(
            &*self.store,
            actor,
            "user.devices.delete",
            Some(user_id.as_str()),
            json!({"devices": deleted}),
        )
        .await
    }

    /// The user's devices with where and when each was last seen.
    pub async fn whois(&self, user_id: &UserId) -> Result<Vec<Connection>> {
        Ok(self
            .devices(user_id)
            .await?
            .into_iter()
            .map(|d| Connection {
                device_id: d.device_id,
                ip: d.last_seen_ip,
                last_seen_ms: d.last_seen_ms,
            })
            .collect())
    }

    /// Rooms the user is joined to.
    pub async fn joined_rooms(&self, user_id: &UserId) -> Result<Vec<String>> {
        self.user(user_id).await?;
        Ok(self
            .store
            .rooms_for_user(user_id.as_str())
            .await?
            .into_iter()
            .filter(|m| m.membership == "join")
            .map(|m| m.room_id)
            .collect())
    }

    // ---- shared-secret registration ----

    /// A single-use nonce for shared-secret registration.
    pub fn nonce(&self) -> Result<String> {
        self.shared_secret_enabled()?;
        let mut nonces = self.nonces.lock();
        nonces.retain(|_, t| t.elapsed() < NONCE_TTL);
        if nonces.len() >= MAX_NONCES {
            return Err(Error::new(
                ErrorKind::LimitExceeded {
                    retry_after_ms: NONCE_TTL.as_millis() as u64,
                },
                "Too many registrations in progress",
            ));
        }
        let nonce = random_id(32);
        nonces.insert(nonce.clone(), Instant::now());
        Ok(nonce)
    }

    fn shared_secret_enabled(&self) -> Result<&str> {
        self.shared_secret.as_deref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unknown,
                "Shared secret registration is not enabled",
            )
        })
    }

    /// Registers a user whose request carries an HMAC-SHA1 over the nonce, username, password,
    /// admin flag and user type under the configured secret.
    pub async fn register_with_shared_secret(
        &self,
        req: SharedSecretRegistration,
    ) -> Result<Session> {
        let secret = self.shared_secret_enabled()?;
        let issued = self.nonces.lock().remove(&req.nonce);
        if issued.is_none_or(|t| t.elapsed() >= NONCE_TTL) {
            return Err(Error::new(ErrorKind::Unknown, "unrecognised nonce"));
        }
        for (what, v) in [("username", &req.username), ("password", &req.password)] {
            if v.len() > MAX_SHARED_SECRET_FIELD || v.contains('\0') {
                return Err(Error::invalid_param(format!("Invalid {what}")));
            }
        }
        if req.user_type.is_some() {
            // Users here have no types (bots are application services).
            return Err(Error::invalid_param("Invalid user type"));
        }
        let expected = shared_secret_mac_input(&req);
        let given = hex::decode(req.mac.trim()).map_err(|_| Error::forbidden("HMAC incorrect"))?;
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes())
            .map_err(|_| Error::internal("bad shared secret"))?;
        mac.update(&expected);
        // verify_slice compares in constant time.
        mac.verify_slice(&given)
            .map_err(|_| Error::forbidden("HMAC incorrect"))?;
        let user_id = self
            .accounts
            .register(Some(&req.username), Some(&req.password), req.admin)
            .await?;
        if let Some(d) = req.displayname.as_deref().filter(|d| !d.is_empty()) {
            self.profiles
                .set(&user_id, Field::Displayname, Some(d))
                .await?;
        }
        audit(
            &*self.store,
            &Actor::Server,
            "user.register_shared_secret",
            Some(user_id.as_str()),
            json!({"admin": req.admin}),
        )
        .await?;
        self.accounts.create_session(&user_id, None, None).await
    }

    // ---- rooms ----

    pub async fn list_rooms(&self, mut q: RoomListQuery) -> Result<(Vec<RoomListEntry>, u64)> {
        q.server_name = self.server_name.to_string();
        Ok(self.store.list_rooms(q).await?)
    }

    pub async fn room(&self, room_id: &RoomId) -> Result<RoomListEntry> {
        self.store
            .room_details(room_id.as_str(), self.server_name.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Room not found"))
    }

    /// Users joined to the room.
    pub async fn room_members(&self, room_id: &RoomId) -> Result<Vec<String>> {
        self.room(room_id).await?;
        Ok(self
            .store
            .room_members(room_id.as_str())
            .await?
            .into_iter()
            .filter(|m| m.membership == "join")
            .map(|m| m.user_id)
            .collect())
    }

    /// The room's current state events in client format.
    pub async fn room_state(&self, room_id: &RoomId) -> Result<Vec<Value>> {
        self.room(room_id).await?;
        let state = self.rooms.current_state(room_id).await?;
        let mut out = Vec::with_capacity(state.len());
        for id in state.values() {
            if let Some(ev) = self.timeline.render_id(id.as_str()).await? {
                out.push(ev);
            }
        }
        Ok(out)
    }

    pub async fn room_blocked_by(&self, room_id: &RoomId) -> Result<Option<String>> {
        Ok(self.store.room_blocked_by(room_id.as_str()).await?)
    }

    /// Blocks a room (no local user may join or be invited) or lifts the block.
    pub async fn block_room(&self, actor: &Actor, room_id: &RoomId, block: bool) -> Result<()> {
        let by = actor.as_audit();
        self.store
            .set_room_blocked(room_id.as_str(), block.then_some(by.as_str()), now_ms())
            .await?;
        audit(
            &*self.store,
            actor,
            if block { "room.block" } else { "room.unblock" },
            Some(room_id.as_str()),
            json!({}),
        )
        .await
    }

    /// Makes every local member leave the room, removes its aliases and its directory entry,
    /// optionally blocks it, and with `purge` removes it from the database.
    pub async fn delete_room(
        &self,
        actor: &Actor,
        room_id: &RoomId,
        block: bool,
        purge: bool,
    ) -> Result<RoomDeletion> {
        let known = self.store.get_room(room_id.as_str()).await?.is_some();
        if !known && !block {
            return Err(Error::not_found("Room not found"));
        }
        if block {
            self.block_room(actor, room_id, true).await?;
        }
        let mut out = RoomDeletion::default();
        if !known {
            return Ok(out);
        }
        let reason = "This room has been removed by the server administrator";
        for m in self.store.room_members(room_id.as_str()).await? {
            if !matches!(m.membership.as_str(), "join" | "invite" | "knock") {
                continue;
            }
            let Ok(user) = OwnedUserId::try_from(m.user_id.as_str()) else {
                continue;
            };
            if user.server_name() != self.server_name {
                continue;
            }
            match self.rooms.leave(room_id, &user, Some(reason)).await {
                Ok(_) => {
                    if m.membership == "join" {
                        out.kicked_users.push(m.user_id);
                    }
                }
                Err(e) => {
                    tracing::warn!(room = %room_id, user = %user, error = %e, "could not remove member");
                    out.failed_to_kick_users.push(m.user_id);
                }
            }
        }
        for alias in self.store.aliases_for_room(room_id.as_str()).await? {
            self.store.delete_alias(&alias).await?;
            out.local_aliases.push(alias);
        }
        self.store
            .set_room_published(room_id.as_str(), false)
            .await?;
        if purge {
            self.rooms.purge(room_id).await?;
        }
        audit(
            &*self.store,
            actor,
            "room.delete",
            Some(room_id.as_str()),
            json!({
                "block": block,
                "purge": purge,
                "kicked_users": out.kicked_users,
                "failed_to_kick_users": out.failed_to_kick_users,
            }),
        )
        .await?;
        Ok(out)
    }

    /// Deletes a room like [`Admin::delete_room`] and remembers the outcome under a new id.
    pub async fn delete_room_tracked(
        &self,
        actor: &Actor,
        room_id: &RoomId,
        block: bool,
        purge: bool,
    ) -> Result<String> {
        let result = self.delete_room(actor, room_id, block, purge).await?;
        let delete_id = random_id(16);
        let mut d = self.deletions.lock();
        d.retain(|r| r.finished.elapsed() < DELETION_TTL);
        if d.len() >= MAX_NONCES {
            d.remove(0);
        }
        d.push(DeletionRecord {
            delete_id: delete_id.clone(),
            room_id: room_id.to_owned(),
            result,
            finished: Instant::now(),
        });
        Ok(delete_id)
    }

    pub fn deletion(&self, delete_id: &str) -> Option<DeletionRecord> {
        self.deletions
            .lock()
            .iter()
            .find(|r| r.delete_id == delete_id)
            .cloned()
    }

    pub fn deletions_of_room(&self, room_id: &RoomId) -> Vec<DeletionRecord> {
        self.deletions
            .lock()
            .iter()
            .filter(|r| r.room_id == room_id)
            .cloned()
            .collect()
    }

    // ---- media ----

    pub async fn user_media(
        &self,
        user_id: &UserId,
        from: u64,
        limit: u64,
        order: MediaOrder,
        descending: bool,
    ) -> Result<(Vec<MediaAdminEntry>, u64)> {
        Ok(self
            .store
            .list_user_media(user_id.as_str(), from, limit, order, descending)
            .await?)
    }

    /// The `mxc://` URIs referenced by the room's events: this server's and other servers'.
    pub async fn room_media(&self, room_id: &RoomId) -> Result<(Vec<String>, Vec<String>)> {
        self.room(room_id).await?;
        let mut uris = Vec::new();
        for json in self.store.room_events_with_urls(room_id.as_str()).await? {
            if let Ok(v) = serde_json::from_str::<Value>(&json)
                && let Some(content) = v.get("content")
            {
                collect_mxc(content, &mut uris);
            }
        }
        uris.sort();
        uris.dedup();
        let prefix = format!("mxc://{}/", self.server_name);
        Ok(uris.into_iter().partition(|u| u.starts_with(&prefix)))
    }

    /// Quarantines (or releases) one local media item: downloads of it fail from then on.
    pub async fn quarantine_media(
        &self,
        actor: &Actor,
        server_name: &str,
        media_id: &str,
        quarantine: bool,
    ) -> Result<()> {
        if server_name != self.server_name.as_str()
            || self.store.get_media(media_id).await?.is_none()
        {
            return Err(Error::not_found("Unknown media"));
        }
        let by = actor.as_audit();
        self.store
            .set_media_quarantine(
                &[media_id.to_owned()],
                quarantine.then_some(by.as_str()),
                now_ms(),
            )
            .await?;
        audit(
            &*self.store,
            actor,
            if quarantine {
                "media.quarantine"
            } else {
                "media.unquarantine"
            },
            Some(&format!("mxc://{server_name}/{media_id}")),
            json!({}),
        )
        .await
    }

    /// Quarantines the local media the room's events reference; returns how many were newly
    /// quarantined.
    pub async fn quarantine_room_media(&self, actor: &Actor, room_id: &RoomId) -> Result<u64> {
        let (local, _) = self.room_media(room_id).await?;
        let prefix = format!("mxc://{}/", self.server_name);
        let ids: Vec<String> = local
            .iter()
            .filter_map(|u| u.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        self.quarantine_many(actor, Some(room_id.as_str()), &ids)
            .await
    }

    /// Quarantines everything the user uploaded.
    pub async fn quarantine_user_media(&self, actor: &Actor, user_id: &UserId) -> Result<u64> {
        let ids = self.store.user_media_ids(user_id.as_str()).await?;
        self.quarantine_many(actor, Some(user_id.as_str()), &ids)
            .await
    }

    async fn quarantine_many(
        &self,
        actor: &Actor,
        target: Option<&str>,
        ids: &[String],
    ) -> Result<u64> {
        let by = actor.as_audit();
        let n = self
            .store
            .set_media_quarantine(ids, Some(&by), now_ms())
            .await?;
        audit(
            &*self.store,
            actor,
            "media.quarantine",
            target,
            json!({"count": n}),
        )
        .await?;
        Ok(n)
    }
}

/// Administration straight on the database, for `feldpost admin …` on the server machine. It
/// opens only the database (SQLite in WAL mode lets it share the file with a running server) and
/// never writes room events, whose stream positions belong to the server process: a deactivated
/// account's rooms are left by the server itself (see [`Admin::leave_rooms_of_deactivated`]).
pub struct OfflineAdmin {
    pub store: Arc<dyn Store>,
    pub accounts: Accounts,
    pub tokens: crate::enrollment::RegistrationTokens,
    pub server_name: OwnedServerName,
    notices_user: OwnedUserId,
}

impl OfflineAdmin {
    pub fn open(config: &crate::config::Config) -> Result<Self> {
        let server_name = OwnedServerName::try_from(config.server_name.as_str()).map_err(|_| {
            Error::invalid_param(format!("invalid server name {:?}", config.server_name))
        })?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            Error::internal(format!(
                "creating data directory {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let store: Arc<dyn Store> = Arc::new(
            feldpost_storage::sqlite::SqliteStore::open(&config.data_dir.join("feldpost.sqlite"))
                .map_err(|e| Error::internal(format!("opening database: {e}")))?,
        );
        let notices_user =
            OwnedUserId::try_from(format!("@{}:{server_name}", config.admin.notices_localpart))
                .map_err(|_| Error::invalid_param("admin.notices_localpart is not valid"))?;
        Ok(Self {
            accounts: Accounts::new(
                store.clone(),
                server_name.clone(),
                config.registration.clone(),
            ),
            tokens: crate::enrollment::RegistrationTokens::new(
                store.clone(),
                server_name.clone(),
                config.admin.enrollment_lifetime_minutes,
            ),
            store,
            server_name,
            notices_user,
        })
    }

    fn protect_notices(&self, user_id: &UserId) -> Result<()> {
        if user_id == self.notices_user {
            return Err(Error::forbidden(
                "The server notices account is managed by the server",
            ));
        }
        Ok(())
    }

    async fn existing(&self, user_id: &UserId) -> Result<UserRecord> {
        self.store
            .get_user(user_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found(format!("No user {user_id}")))
    }

    pub async fn create_user(
        &self,
        name: &str,
        password: &str,
        admin: bool,
        displayname: Option<&str>,
    ) -> Result<OwnedUserId> {
        let user_id = self.accounts.local_user_id(name)?;
        self.protect_notices(&user_id)?;
        let user_id = self
            .accounts
            .register(Some(user_id.localpart()), Some(password), admin)
            .await?;
        if let Some(d) = displayname.filter(|d| !d.is_empty()) {
            self.accounts.set_displayname(&user_id, Some(d)).await?;
        }
        audit(
            &*self.store,
            &Actor::Cli,
            "user.create",
            Some(user_id.as_str()),
            json!({"admin": admin}),
        )
        .await?;
        Ok(user_id)
    }

    pub async fn reset_password(
        &self,
        name: &str,
        password: &str,
        logout: bool,
    ) -> Result<OwnedUserId> {
        let user_id = self.accounts.local_user_id(name)?;
        self.protect_notices(&user_id)?;
        if self.existing(&user_id).await?.deactivated {
            return Err(Error::invalid_param("The account is deactivated"));
        }
        let target = Requester {
            user_id: user_id.clone(),
            device_id: String::new(),
            is_admin: false,
        };
        self.accounts
            .change_password(&target, password, logout)
            .await?;
        audit(
            &*self.store,
            &Actor::Cli,
            "user.password",
            Some(user_id.as_str()),
            json!({"logout_devices": logout}),
        )
        .await?;
        Ok(user_id)
    }

    pub async fn deactivate(&self, name: &str) -> Result<OwnedUserId> {
        let user_id = self.accounts.local_user_id(name)?;
        self.protect_notices(&user_id)?;
        if self.existing(&user_id).await?.deactivated {
            return Err(Error::invalid_param("The account is already deactivated"));
        }
        self.accounts.deactivate(&user_id).await?;
        audit(
            &*self.store,
            &Actor::Cli,
            "user.deactivate",
            Some(user_id.as_str()),
            json!({"erase": false}),
        )
        .await?;
        Ok(user_id)
    }

    pub async fn set_admin(&self, name: &str, admin: bool) -> Result<OwnedUserId> {
        let user_id = self.accounts.local_user_id(name)?;
        self.protect_notices(&user_id)?;
        self.existing(&user_id).await?;
        self.store.set_user_admin(user_id.as_str(), admin).await?;
        audit(
            &*self.store,
            &Actor::Cli,
            if admin {
                "user.admin.grant"
            } else {
                "user.admin.revoke"
            },
            Some(user_id.as_str()),
            json!({}),
        )
        .await?;
        Ok(user_id)
    }

    pub async fn list_users(&self, q: UserListQuery) -> Result<(Vec<UserListEntry>, u64)> {
        // The list shows when each user was last seen.
        self.accounts.flush_seen().await?;
        Ok(self.store.list_users(q).await?)
    }

    pub async fn user_exists(&self, name: &str) -> Result<bool> {
        let user_id = self.accounts.local_user_id(name)?;
        Ok(self.store.get_user(user_id.as_str()).await?.is_some())
    }

    pub async fn has_admin(&self) -> Result<bool> {
        Ok(self.store.count_admins().await? > 0)
    }
}

/// The bytes the shared-secret MAC is computed over.
fn shared_secret_mac_input(req: &SharedSecretRegistration) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(req.nonce.as_bytes());
    v.push(0);
    v.extend_from_slice(req.username.as_bytes());
    v.push(0);
    v.extend_from_slice(req.password.as_bytes());
    v.push(0);
    v.extend_from_slice(if req.admin { b"admin" } else { b"notadmin" });
    if let Some(t) = &req.user_type {
        v.push(0);
        v.extend_from_slice(t.as_bytes());
    }
    v
}

/// Every string under `v` that is an `mxc://` URI.
fn collect_mxc(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.starts_with("mxc://") => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| collect_mxc(x, out)),
        Value::Object(o) => o.values().for_each(|x| collect_mxc(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_input_matches_the_documented_layout() {
        let req = SharedSecretRegistration {
            nonce: "n".into(),
            username: "u".into(),
            password: "p".into(),
            admin: true,
            ..Default::default()
        };
        assert_eq!(shared_secret_mac_input(&req), b"n\0u\0p\0admin".to_vec());
        let req = SharedSecretRegistration {
            user_type: Some("bot".into()),
            ..req
        };
        assert_eq!(
            shared_secret_mac_input(&req),
            b"n\0u\0p\0admin\0bot".to_vec()
        );
    }

    #[test]
    fn mxc_uris_are_collected_from_nested_content() {
        let mut out = vec![];
        collect_mxc(
            &json!({"url": "mxc://a/b", "info": {"thumbnail_url": "mxc://a/c"}, "body": "x", "list": ["mxc://b/d"]}),
            &mut out,
        );
        out.sort();
        assert_eq!(out, vec!["mxc://a/b", "mxc://a/c", "mxc://b/d"]);
    }
}

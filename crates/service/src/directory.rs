//! The room directory: local room aliases (`/directory/room`, `/rooms/{roomId}/aliases`) and the
//! published room list (`/directory/list/room`, `/publicRooms`).
//!
//! Who may do what: any joined member may create an alias for the room; the alias's creator, a
//! server admin, or a joined member whose power level allows sending `m.room.canonical_alias`
//! may delete it. Publishing a room (or taking it off the list) needs that same
//! `m.room.canonical_alias` level (which falls back to `state_default`), since both decide how the
//! room is advertised; server admins may always do it.

use std::sync::Arc;

use feldpost_storage::{StorageError, Store};
use ruma::{OwnedRoomId, OwnedServerName, RoomAliasId, RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::accounts::Requester;
use crate::rooms::{NewPdu, Rooms, StateMap};
use crate::{Error, Result};

/// Largest page of `/publicRooms`; also the page size when the client gives no limit.
const MAX_PUBLIC_ROOMS_PAGE: usize = 500;

pub struct Directory {
    store: Arc<dyn Store>,
    rooms: Arc<Rooms>,
}

/// Where an alias points.
pub struct AliasTarget {
    pub room_id: OwnedRoomId,
    pub servers: Vec<OwnedServerName>,
}

/// A `/publicRooms` request.
#[derive(Debug, Default)]
pub struct PublicRoomsQuery {
    pub limit: Option<u64>,
    pub since: Option<String>,
    pub search_term: Option<String>,
    /// Room types to keep; `None` inside means rooms without a type.
    pub room_types: Option<Vec<Option<String>>>,
    /// A third-party network to list; this server bridges none.
    pub third_party_instance_id: Option<String>,
}

pub struct PublicRoomsPage {
    pub chunk: Vec<Value>,
    pub next_batch: Option<String>,
    pub prev_batch: Option<String>,
    pub total: usize,
}

/// A position in the sorted published-room list: `n<offset>` pages forward from `offset`,
/// `p<offset>` pages back from just before `offset`.
enum Since {
    Next(usize),
    Prev(usize),
}

fn parse_since(token: &str) -> Option<Since> {
    let (dir, n) = token.split_at_checked(1)?;
    let n: usize = n.parse().ok()?;
    match dir {
        "n" => Some(Since::Next(n)),
        "p" => Some(Since::Prev(n)),
        _ => None,
    }
}

impl Directory {
    pub fn new(store: Arc<dyn Store>, rooms: Arc<Rooms>) -> Self {
        Self { store, rooms }
    }

    fn ensure_local(&self, alias: &RoomAliasId) -> Result<()> {
        if alias.server_name() != self.rooms.server_name() {
            return Err(Error::invalid_param("Room alias must be on this server"));
        }
        Ok(())
    }

    /// Whether the user's power level allows changing how the room is advertised.
    async fn can_advertise(&self, room_id: &RoomId, user: &UserId) -> Result<bool> {
        if self.rooms.membership_of(room_id, user).await?.as_deref() != Some("join") {
            return Ok(false);
        }
        let pl = self.rooms.power_levels(room_id).await?;
        Ok(pl.user(user.as_str()) >= pl.event("m.room.canonical_alias", true))
    }

    /// Maps `alias` to `room_id`. `Ok(false)` means the alias is taken.
    pub async fn create_alias(
        &self,
        alias: &RoomAliasId,
        room_id: &RoomId,
        r: &Requester,
    ) -> Result<bool> {
        self.ensure_local(alias)?;
        if r.is_admin {
            if self.store.get_room(room_id.as_str()).await?.is_none() {
                return Err(Error::not_found("Room not found"));
            }
        } else {
            self.rooms
                .require_joined(room_id, &r.user_id)
                .await
                .map_err(|_| {
                    Error::forbidden("You must be in the room to create an alias for it")
                })?;
        }
        match self
            .store
            .put_alias(alias.as_str(), room_id.as_str(), r.user_id.as_str())
            .await
        {
            Ok(()) => Ok(true),
            Err(StorageError::Conflict(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Resolves a local alias. Aliases of other servers need federation, so they are not found.
    pub async fn resolve_alias(&self, alias: &RoomAliasId) -> Result<AliasTarget> {
        let not_found = || Error::not_found(format!("Room alias {alias} not found"));
        if alias.server_name() != self.rooms.server_name() {
            return Err(not_found());
        }
        let rec = self
            .store
            .get_alias(alias.as_str())
            .await?
            .ok_or_else(not_found)?;
        let room_id = OwnedRoomId::try_from(rec.room_id.as_str())
            .map_err(|_| Error::internal("bad stored room id"))?;
        // Servers with joined members can all answer for the room; ours comes first.
        let mut servers = vec![self.rooms.server_name().to_owned()];
        for m in self.store.room_members(room_id.as_str()).await? {
            if m.membership != "join" {
                continue;
            }
            if let Ok(u) = <&UserId>::try_from(m.user_id.as_str())
                && !servers.iter().any(|s| s == u.server_name())
            {
                servers.push(u.server_name().to_owned());
            }
        }
        Ok(AliasTarget { room_id, servers })
    }

    /// Removes an alias, and drops it from the room's `m.room.canonical_alias` when the requester
    /// may send that event.
    pub async fn delete_alias(&self, alias: &RoomAliasId, r: &Requester) -> Result<()> {
        let not_found = || Error::not_found(format!("Room alias {alias} not found"));
        if alias.server_name() != self.rooms.server_name() {
            return Err(not_found());
        }
        let rec = self
            .store
            .get_alias(alias.as_str())
            .await?
            .ok_or_else(not_found)?;
        let room_id = OwnedRoomId::try_from(rec.room_id.as_str())
            .map_err(|_| Error::internal("bad stored room id"))?;
        let allowed = rec.creator == r.user_id.as_str()
            || r.is_admin
            || self.can_advertise(&room_id, &r.user_id).await?;
        if !allowed {
            return Err(Error::forbidden(
                "Only the alias's creator or a room moderator may delete it",
            ));
        }
        if !self.store.delete_alias(alias.as_str()).await? {
            return Err(not_found());
        }
        if let Err(e) = self
            .remove_from_canonical_alias(&room_id, alias, &r.user_id)
            .await
        {
            // The alias is gone either way; a stale canonical alias only fails to resolve.
            tracing::info!(error = %e, %alias, "canonical alias left unchanged");
        }
        Ok(())
    }

    async fn remove_from_canonical_alias(
        &self,
        room_id: &RoomId,
        alias: &RoomAliasId,
        user: &UserId,
    ) -> Result<()> {
        let Some(ev) = self
            .rooms
            .state_event(room_id, "m.room.canonical_alias", "")
            .await?
        else {
            return Ok(());
        };
        let Value::Object(mut content) = ev.content_value() else {
            return Ok(());
        };
        let mut changed = false;
        if content.get("alias").and_then(Value::as_str) == Some(alias.as_str()) {
            content.remove("alias");
            changed = true;
        }
        if let Some(Value::Array(alts)) = content.get_mut("alt_aliases") {
            let before = alts.len();
            alts.retain(|a| a.as_str() != Some(alias.as_str()));
            changed |= alts.len() != before;
        }
        if changed {
            self.rooms
                .append(
                    room_id,
                    user,
                    NewPdu::state("m.room.canonical_alias", "", Value::Object(content)),
                )
                .await?;
        }
        Ok(())
    }

    /// The local aliases of a room, for joined members (anyone, if the room is world-readable).
    pub async fn local_aliases(&self, room_id: &RoomId, user: &UserId) -> Result<Vec<String>> {
        let forbidden = || Error::forbidden("You are not a member of this room");
        if self.store.get_room(room_id.as_str()).await?.is_none() {
            return Err(forbidden());
        }
        if self.rooms.membership_of(room_id, user).await?.as_deref() != Some("join") {
            let state = self.rooms.current_state(room_id).await?;
            if !self.world_readable(&state).await? {
                return Err(forbidden());
            }
        }
        Ok(self.store.aliases_for_room(room_id.as_str()).await?)
    }

    /// Whether the room is listed in the published room directory.
    pub async fn is_published(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self
            .store
            .get_room(room_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Room not found"))?
            .published)
    }

    pub async fn set_published(&self, room_id: &RoomId, r: &Requester, public: bool) -> Result<()> {
        if self.store.get_room(room_id.as_str()).await?.is_none() {
            return Err(Error::not_found("Room not found"));
        }
        if !r.is_admin && !self.can_advertise(room_id, &r.user_id).await? {
            return Err(Error::forbidden(
                "You need the power to change the room's canonical alias to publish it",
            ));
        }
        Ok(self
            .store
            .set_room_published(room_id.as_str(), public)
            .await?)
    }

    /// A page of the published room directory, largest rooms first.
    pub async fn public_rooms(&self, q: &PublicRoomsQuery) -> Result<PublicRoomsPage> {
        let since = match q.since.as_deref() {
            None | Some("") => Since::Next(0),
            Some(t) => {
                parse_since(t).ok_or_else(|| Error::invalid_param("Invalid pagination token"))?
            }
        };
        let mut entries = Vec::new();
        if q.third_party_instance_id.is_none() {
            let term = q.search_term.as_deref().map(str::to_lowercase);
            for id in self.store.published_rooms().await? {
                let Ok(room_id) = OwnedRoomId::try_from(id.as_str()) else {
                    continue;
                };
                let Some((entry, members)) = self.summary(&room_id).await? else {
                    continue;
                };
                if self.matches(&entry, &room_id, term.as_deref(), q).await? {
                    entries.push((members, room_id, entry));
                }
            }
        }
        entries.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let total = entries.len();
        let limit = match q.limit {
            Some(l) if l > 0 => (l as usize).min(MAX_PUBLIC_ROOMS_PAGE),
            _ => MAX_PUBLIC_ROOMS_PAGE,
        };
        let (start, end) = match since {
            Since::Next(n) => (n.min(total), n.min(total).saturating_add(limit).min(total)),
            Since::Prev(n) => (n.min(total).saturating_sub(limit), n.min(total)),
        };
        let chunk = entries
            .drain(start..end)
            .map(|(_, _, e)| Value::Object(e))
            .collect();
        Ok(PublicRoomsPage {
            chunk,
            next_batch: (end < total).then(|| format!("n{end}")),
            prev_batch: (start > 0).then(|| format!("p{start}")),
            total,
        })
    }

    /// Whether a summarised room passes the search term and room type filter.
    async fn matches(
        &self,
        entry: &Map<String, Value>,
        room_id: &RoomId,
        term: Option<&str>,
        q: &PublicRoomsQuery,
    ) -> Result<bool> {
        if let Some(types) = &q.room_types
            && !types.is_empty()
        {
            let kind = entry.get("room_type").and_then(Value::as_str);
            if !types.iter().any(|t| t.as_deref() == kind) {
                return Ok(false);
            }
        }
        let Some(term) = term.filter(|t| !t.is_empty()) else {
            return Ok(true);
        };
        let hit = |v: Option<&Value>| {
            v.and_then(Value::as_str)
                .is_some_and(|s| s.to_lowercase().contains(term))
        };
        if hit(entry.get("name")) || hit(entry.get("topic")) || hit(entry.get("canonical_alias")) {
            return Ok(true);
        }
        // Local aliases are also names a searcher might know the room by.
        Ok(self
            .store
            .aliases_for_room(room_id.as_str())
            .await?
            .iter()
            .any(|a| a.to_lowercase().contains(term)))
    }

    async fn world_readable(&self, state: &StateMap) -> Result<bool> {
        Ok(self
            .content_of(state, "m.room.history_visibility")
            .await?
            .and_then(|c| c.get("history_visibility").cloned())
            == Some(json!("world_readable")))
    }

    async fn content_of(&self, state: &StateMap, kind: &str) -> Result<Option<Value>> {
        Ok(self
            .rooms
            .state_event_in(state, kind, "")
            .await?
            .map(|e| e.content_value()))
    }

    /// The directory entry of a room and its joined member count; `None` for rooms nobody is in
    /// any more, which nobody could let a new member in.
    async fn summary(&self, room_id: &RoomId) -> Result<Option<(Map<String, Value>, usize)>> {
        let members = self
            .store
            .room_members(room_id.as_str())
            .await?
            .iter()
            .filter(|m| m.membership == "join")
            .count();
        if members == 0 {
            return Ok(None);
        }
        let state = self.rooms.current_state(room_id).await?;
        let text = |c: &Option<Value>, key: &str| {
            c.as_ref()
                .and_then(|c| c.get(key))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let mut m = Map::new();
        m.insert("room_id".into(), json!(room_id));
        m.insert("num_joined_members".into(), json!(members));
        if let Some(name) = text(&self.content_of(&state, "m.room.name").await?, "name") {
            m.insert("name".into(), json!(name));
        }
        if let Some(topic) = plain_topic(self.content_of(&state, "m.room.topic").await?) {
            m.insert("topic".into(), json!(topic));
        }
        let alias = self.content_of(&state, "m.room.canonical_alias").await?;
        if let Some(a) = text(&alias, "alias") {
            m.insert("canonical_alias".into(), json!(a));
        }
        if let Some(url) = text(&self.content_of(&state, "m.room.avatar").await?, "url") {
            m.insert("avatar_url".into(), json!(url));
        }
        let join_rule = text(
            &self.content_of(&state, "m.room.join_rules").await?,
            "join_rule",
        );
        m.insert(
            "join_rule".into(),
            json!(join_rule.as_deref().unwrap_or("public")),
        );
        m.insert(
            "world_readable".into(),
            json!(self.world_readable(&state).await?),
        );
        let guest = text(
            &self.content_of(&state, "m.room.guest_access").await?,
            "guest_access",
        );
        m.insert(
            "guest_can_join".into(),
            json!(guest.as_deref() == Some("can_join")),
        );
        if let Some(t) = text(&self.content_of(&state, "m.room.create").await?, "type") {
            m.insert("room_type".into(), json!(t));
        }
        Ok(Some((m, members)))
    }
}

/// The plain-text topic: the `text/plain` entry of `m.topic` if present, else `topic`.
fn plain_topic(content: Option<Value>) -> Option<String> {
    let c = content?;
    let from_block = c
        .get("m.topic")
        .and_then(|t| t.get("m.text"))
        .and_then(Value::as_array)
        .and_then(|texts| {
            texts.iter().find_map(|t| {
                let mime = t.get("mimetype").and_then(Value::as_str);
                if mime.is_none_or(|m| m == "text/plain") {
                    t.get("body").and_then(Value::as_str)
                } else {
                    None
                }
            })
        });
    from_block
        .or_else(|| c.get("topic").and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

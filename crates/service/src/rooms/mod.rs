//! Rooms: the DAG of PDUs, its state, and the operations that add to it. Every event, local state
//! changes included, is built as a signed PDU of the room's version and must pass that version's
//! authorization rules before it is stored.

pub(crate) mod append;
pub mod create;
pub mod membership;
mod purge;
pub mod state;
pub mod visibility;

use std::collections::HashMap;
use std::sync::Arc;

use feldpost_storage::{NewNotification, NewRoomNotification, Store};
use parking_lot::Mutex;
use ruma::{OwnedEventId, OwnedRoomId, OwnedServerName, RoomVersionId};

pub use append::NewPdu;
pub use state::StateMap;

use crate::generations::Generations;
use crate::notifier::Notifier;
use crate::pdu::Pdu;
use crate::signing_key::SigningKey;
use crate::{Error, Result};

/// What the server knows of a room's tip, kept in memory so that sending does not re-read it.
#[derive(Clone)]
pub(crate) struct RoomTip {
    pub version: RoomVersionId,
    pub extremities: Vec<OwnedEventId>,
    pub max_depth: i64,
    pub state_group: Option<i64>,
    pub chain_len: i64,
    pub state: Arc<StateMap>,
}

/// Rooms whose state `warm_largest` reads at a start: at most this many, of at least
/// `WARM_MIN_MEMBERS` joined members.
const WARM_ROOMS: usize = 100;
const WARM_MIN_MEMBERS: usize = 200;

pub struct Rooms {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) server_name: OwnedServerName,
    pub(crate) key: Arc<SigningKey>,
    pub(crate) notifier: Arc<Notifier>,
    pub(crate) default_version: RoomVersionId,
    locks: Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
    tips: Mutex<HashMap<OwnedRoomId, RoomTip>>,
    pub(crate) state_cache: Mutex<state::StateCache>,
    /// Serialises cache misses of `state_map` per group (striped).
    state_loading: Vec<tokio::sync::Mutex<()>>,
    event_cache: Mutex<Generations<OwnedEventId, Arc<Pdu>>>,
    /// History visibility by state group (see `visibility`).
    visibility_memo: Mutex<HashMap<i64, visibility::HistoryVisibility>>,
    /// Push's part in storing events (push sits above rooms, so it is handed in at start).
    event_hook: std::sync::OnceLock<Arc<dyn EventHook>>,
}

/// What push stores with an event: rows for single users, and a room notification for most
/// members alike (then the rows are the exceptions).
#[derive(Debug, Default)]
pub struct EventNotifications {
    pub rows: Vec<NewNotification>,
    pub room: Option<NewRoomNotification>,
    /// The users with a notification to push (through a row or the room notification).
    pub pushed: Vec<String>,
}

/// What the push layer does around storing an event.
pub trait EventHook: Send + Sync {
    /// The notifications `pdu` raises, given the room's state after it; they are stored in the
    /// same write as the event. Never fails the send: on error it logs and returns none.
    fn notifications<'a>(
        &'a self,
        pdu: &'a Pdu,
        state: &'a Arc<StateMap>,
    ) -> futures::future::BoxFuture<'a, EventNotifications>;

    /// Called once the event and its notifications are durable, with the users whose
    /// notification is to be pushed, and whether rows wait to be moved into place
    /// (`PushStore::move_pending_notifications`). Never blocks.
    fn stored(&self, pdu: &Arc<Pdu>, stream: i64, pushed: &[String], waiting: bool);
}

/// Parsed events per cache generation (see `generations`).
const EVENT_CACHE_LIMIT: usize = 50_000;

/// Room versions this server creates and joins.
pub const SUPPORTED_VERSIONS: &[&str] = &["10", "11", "12"];

impl Rooms {
    pub fn new(
        store: Arc<dyn Store>,
        server_name: OwnedServerName,
        key: Arc<SigningKey>,
        notifier: Arc<Notifier>,
        default_version: RoomVersionId,
    ) -> Self {
        Self {
            store,
            server_name,
            key,
            notifier,
            default_version,
            locks: Mutex::default(),
            tips: Mutex::default(),
            state_cache: Mutex::default(),
            state_loading: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            event_cache: Mutex::new(Generations::new(EVENT_CACHE_LIMIT)),
            visibility_memo: Mutex::default(),
            event_hook: std::sync::OnceLock::new(),
        }
    }

    /// Sets push's part in storing events (once; later calls are ignored).
    pub fn set_event_hook(&self, hook: Arc<dyn EventHook>) {
        let _ = self.event_hook.set(hook);
    }

    /// The notifications to store with `pdu` (none without push).
    pub(crate) async fn notifications_for(
        &self,
        pdu: &Pdu,
        state: &Arc<StateMap>,
    ) -> EventNotifications {
        match self.event_hook.get() {
            Some(h) => h.notifications(pdu, state).await,
            None => EventNotifications::default(),
        }
    }

    /// Tells push that an event is durable; never blocks.
    pub(crate) fn event_stored(
        &self,
        pdu: &Arc<Pdu>,
        stream: i64,
        pushed: &[String],
        waiting: bool,
    ) {
        if let Some(h) = self.event_hook.get() {
            h.stored(pdu, stream, pushed, waiting);
        }
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.server_name
    }

    pub fn default_version(&self) -> &RoomVersionId {
        &self.default_version
    }

    pub(crate) fn room_lock(&self, room_id: &ruma::RoomId) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .entry(room_id.to_owned())
            .or_default()
            .clone()
    }

    /// Fetches an event by id (from the cache or storage).
    pub async fn pdu(&self, event_id: &ruma::EventId) -> Result<Option<Arc<Pdu>>> {
        let (hit, pushed_out) = self.event_cache.lock().get(event_id);
        drop(pushed_out);
        if let Some(p) = hit {
            return Ok(Some(p));
        }
        let Some(stored) = self.store.get_event(event_id.as_str()).await? else {
            return Ok(None);
        };
        let pdu = Arc::new(Pdu::from_stored(&stored)?);
        self.cache_pdu(pdu.clone());
        Ok(Some(pdu))
    }

    /// The parsed form of a stored event, from the cache when another sync parsed it already
    /// (a message to a room of 2,000 is rendered for each member).
    pub(crate) fn pdu_of(&self, stored: &feldpost_storage::StoredEvent) -> Result<Arc<Pdu>> {
        if let Ok(id) = ruma::EventId::parse(stored.event_id.as_str()) {
            let (hit, pushed_out) = self.event_cache.lock().get(&id);
            drop(pushed_out);
            if let Some(p) = hit.filter(|p| *p.json == *stored.json) {
                return Ok(p);
            }
        }
        let pdu = Arc::new(Pdu::from_stored(stored)?);
        self.cache_pdu(pdu.clone());
        Ok(pdu)
    }

    pub(crate) fn cache_pdu(&self, pdu: Arc<Pdu>) {
        // What a full generation pushes out is freed after the lock is released.
        let pushed_out = self.event_cache.lock().insert(pdu.event_id.clone(), pdu);
        drop(pushed_out);
    }

    pub(crate) fn forget_cached_pdu(&self, event_id: &ruma::EventId) {
        self.event_cache.lock().remove(event_id);
    }

    /// The room's version, or `M_NOT_FOUND` when the server does not know the room.
    pub async fn room_version(&self, room_id: &ruma::RoomId) -> Result<RoomVersionId> {
        if let Some(t) = self.tips.lock().get(room_id) {
            return Ok(t.version.clone());
        }
        let room = self
            .store
            .get_room(room_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        RoomVersionId::try_from(room.room_version.as_str())
            .map_err(|_| Error::internal("bad stored room version"))
    }

    pub(crate) async fn tip(&self, room_id: &ruma::RoomId) -> Result<Option<RoomTip>> {
        if let Some(t) = self.tips.lock().get(room_id) {
            return Ok(Some(t.clone()));
        }
        let Some(room) = self.store.get_room(room_id.as_str()).await? else {
            return Ok(None);
        };
        let version = RoomVersionId::try_from(room.room_version.as_str())
            .map_err(|_| Error::internal("bad stored room version"))?;
        let tip = match self.store.room_head(room_id.as_str()).await? {
            Some(head) => {
                let (state_group, chain_len, state) = if head.state_group > 0 {
                    let rec = self
                        .store
                        .state_group(head.state_group)
                        .await?
                        .ok_or_else(|| Error::internal("room head state group missing"))?;
                    (
                        Some(head.state_group),
                        rec.chain_len,
                        self.state_map(head.state_group).await?,
                    )
                } else {
                    (None, 0, Arc::new(StateMap::new()))
                };
                let extremities = head
                    .forward_extremities
                    .iter()
                    .filter_map(|e| OwnedEventId::try_from(e.as_str()).ok())
                    .collect();
                RoomTip {
                    version,
                    extremities,
                    max_depth: head.max_depth,
                    state_group,
                    chain_len,
                    state,
                }
            }
            None => RoomTip {
                version,
                extremities: vec![],
                max_depth: 0,
                state_group: None,
                chain_len: 0,
                state: Arc::new(StateMap::new()),
            },
        };
        // Callers outside the room's lock read too: an append may have set a newer tip meanwhile,
        // and the one already there wins.
        let tip = self
            .tips
            .lock()
            .entry(room_id.to_owned())
            .or_insert(tip)
            .clone();
        Ok(Some(tip))
    }

    /// Reads the current state of the rooms with the most joined members into memory, so that
    /// the first message into a large room after a start does not pay for it (a room of 2,000
    /// members: its state map, about 15 ms of CPU, on the message's way to every member).
    /// Returns the rooms read.
    pub async fn warm_largest(&self) -> Vec<ruma::OwnedRoomId> {
        let rooms = match self.store.largest_rooms(WARM_MIN_MEMBERS, WARM_ROOMS).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the largest rooms");
                return vec![];
            }
        };
        let mut warmed = Vec::with_capacity(rooms.len());
        for room in rooms {
            let Ok(room_id) = ruma::OwnedRoomId::try_from(room) else {
                continue;
            };
            match self.tip(&room_id).await {
                Ok(_) => warmed.push(room_id),
                Err(e) => {
                    tracing::debug!(%room_id, error = %e, "could not read a large room's state")
                }
            }
        }
        warmed
    }

    pub(crate) fn set_tip(&self, room_id: &ruma::RoomId, tip: RoomTip) {
        self.tips.lock().insert(room_id.to_owned(), tip);
    }

    /// The room's current state.
    pub async fn current_state(&self, room_id: &ruma::RoomId) -> Result<Arc<StateMap>> {
        Ok(self
            .tip(room_id)
            .await?
            .ok_or_else(|| Error::not_found("Unknown room"))?
            .state)
    }

    /// The current state event of `(kind, state_key)`, if any.
    pub async fn state_event(
        &self,
        room_id: &ruma::RoomId,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<Arc<Pdu>>> {
        let state = self.current_state(room_id).await?;
        match state.get(&(kind.to_owned(), state_key.to_owned())) {
            Some(id) => self.pdu(id).await,
            None => Ok(None),
        }
    }

    /// The state event of `(kind, state_key)` in a given state map.
    pub async fn state_event_in(
        &self,
        state: &StateMap,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<Arc<Pdu>>> {
        match state.get(&(kind.to_owned(), state_key.to_owned())) {
            Some(id) => self.pdu(id).await,
            None => Ok(None),
        }
    }

    /// The user's current membership in the room (`join`, `invite`, `leave`, `ban`, `knock`).
    pub async fn membership_of(
        &self,
        room_id: &ruma::RoomId,
        user_id: &ruma::UserId,
    ) -> Result<Option<String>> {
        let Some(ev) = self
            .state_event(room_id, "m.room.member", user_id.as_str())
            .await?
        else {
            return Ok(None);
        };
        Ok(ev
            .content_value()
            .get("membership")
            .and_then(|m| m.as_str())
            .map(str::to_owned))
    }

    /// Fails with `M_FORBIDDEN` unless the user is joined to the room.
    pub async fn require_joined(
        &self,
        room_id: &ruma::RoomId,
        user_id: &ruma::UserId,
    ) -> Result<()> {
        // A room with a cached tip exists; only unknown rooms cost a read.
        let known = self.tips.lock().contains_key(room_id);
        if !known && self.store.get_room(room_id.as_str()).await?.is_none() {
            return Err(Error::forbidden("You are not a member of this room"));
        }
        match self.membership_of(room_id, user_id).await?.as_deref() {
            Some("join") => Ok(()),
            _ => Err(Error::forbidden("You are not joined to this room")),
        }
    }

    /// The power level of `user_id` in the current state, and the level an action needs.
    pub async fn power_levels(&self, room_id: &ruma::RoomId) -> Result<PowerLevels> {
        let state = self.current_state(room_id).await?;
        self.power_levels_in(room_id, &state).await
    }

    pub async fn power_levels_in(
        &self,
        room_id: &ruma::RoomId,
        state: &StateMap,
    ) -> Result<PowerLevels> {
        let pl = self
            .state_event_in(state, "m.room.power_levels", "")
            .await?;
        let create = self.state_event_in(state, "m.room.create", "").await?;
        let version = self.room_version(room_id).await?;
        let mut creators = Vec::new();
        if let Some(c) = &create {
            let privileged = version
                .rules()
                .map(|r| r.authorization.explicitly_privilege_room_creators)
                .unwrap_or(false);
            if privileged {
                creators.push(c.sender.to_string());
                if let Some(extra) = c
                    .content_value()
                    .get("additional_creators")
                    .and_then(|v| v.as_array())
                {
                    creators.extend(extra.iter().filter_map(|v| v.as_str().map(str::to_owned)));
                }
            } else if pl.is_none() {
                creators.push(c.sender.to_string());
            }
        }
        Ok(PowerLevels {
            content: pl.map(|p| p.content_value()),
            creators,
        })
    }
}

/// The `m.room.power_levels` content with the spec's defaults applied on read.
pub struct PowerLevels {
    content: Option<serde_json::Value>,
    /// Users with unlimited power (room v12 creators; the creator of a room without power levels).
    creators: Vec<String>,
}

impl PowerLevels {
    fn int(v: Option<&serde_json::Value>) -> Option<i64> {
        match v? {
            serde_json::Value::Number(n) => n.as_i64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn user(&self, user_id: &str) -> i64 {
        if self.creators.iter().any(|c| c == user_id) {
            return i64::MAX;
        }
        let Some(c) = &self.content else { return 0 };
        Self::int(c.get("users").and_then(|u| u.get(user_id)))
            .or_else(|| Self::int(c.get("users_default")))
            .unwrap_or(0)
    }

    /// The level named by a top-level key (`kick`, `ban`, `redact`, `invite`, …).
    pub fn action(&self, name: &str) -> i64 {
        let default = match name {
            "invite" => 0,
            _ => 50,
        };
        let Some(c) = &self.content else {
            return default;
        };
        Self::int(c.get(name)).unwrap_or(default)
    }

    pub fn event(&self, kind: &str, is_state: bool) -> i64 {
        let Some(c) = &self.content else { return 0 };
        if let Some(v) = Self::int(c.get("events").and_then(|e| e.get(kind))) {
            return v;
        }
        if is_state {
            Self::int(c.get("state_default")).unwrap_or(50)
        } else {
            Self::int(c.get("events_default")).unwrap_or(0)
        }
    }

    pub fn notification(&self, key: &str) -> i64 {
        self.content
            .as_ref()
            .and_then(|c| Self::int(c.get("notifications").and_then(|n| n.get(key))))
            .unwrap_or(50)
    }
}

//! `/v3/sync`: builds initial and incremental responses from the stream positions, and parks a
//! long-poll on the notifier until something the user can see changes. Never writes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use feldpost_storage::{MembershipRecord, Store, StoredEvent};
use parking_lot::Mutex;
use ruma::events::TimelineEventType;
use ruma::{OwnedRoomId, UserId};
use serde::ser::{Serialize, SerializeMap, SerializeStruct, Serializer};
use serde_json::{Map, Value, json};

use crate::filter::Filter;
use crate::notifier::{Interest, Notifier, Subscription, WakeKey};
use crate::pdu::ClientEvent;
use crate::per_device::PerDevice;
use crate::rooms::Rooms;
use crate::timeline::{Timeline, position_token};
use crate::typing::Typing;
use crate::{Error, Result};

/// A sync token: the stream position and the typing counter it covers, and — only when a sync
/// delivered fewer send-to-device messages than were waiting — the position of the last message
/// it delivered (`s<stream>_<typing>_<to_device>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncToken {
    pub stream: i64,
    pub typing: u64,
    pub to_device: Option<i64>,
}

impl SyncToken {
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix('s')?;
        let mut parts = rest.split('_');
        let stream = parts.next()?.parse().ok().filter(|v: &i64| *v >= 0)?;
        let typing = parts.next()?.parse().ok()?;
        let to_device = match parts.next() {
            Some(t) => Some(t.parse().ok().filter(|v: &i64| *v >= 0 && *v <= stream)?),
            None => None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            stream,
            typing,
            to_device,
        })
    }

    /// The position up to which the client has received its send-to-device messages.
    pub fn to_device_position(&self) -> i64 {
        self.to_device.unwrap_or(self.stream)
    }
}

impl std::fmt::Display for SyncToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s{}_{}", self.stream, self.typing)?;
        if let Some(t) = self.to_device {
            write!(f, "_{t}")?;
        }
        Ok(())
    }
}

/// A `/sync` response. Its outer shape is the same in every response, so it is written straight
/// to JSON without a tree of its own (most responses are long polls that ran out, which carry
/// nothing else); the rooms and events inside are JSON trees.
pub struct SyncResponse {
    next_batch: String,
    join: Map<String, Value>,
    /// The timeline events of the rooms in `join`, written into their sections.
    timelines: Timelines,
    invite: Map<String, Value>,
    leave: Map<String, Value>,
    account_data: Vec<Value>,
    presence: Vec<Value>,
    to_device: Vec<Value>,
    device_lists: crate::keys::DeviceListDelta,
    keys: Arc<KeyCounts>,
}

/// `{"events": [...]}`
struct Events<'a>(&'a [Value]);

impl Serialize for Events<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Events", 1)?;
        m.serialize_field("events", self.0)?;
        m.end()
    }
}

/// Joined rooms' timeline events by room id. Kept beside the rooms' JSON trees: the events are
/// written straight from their PDUs (`ClientEvent`).
type Timelines = HashMap<String, Vec<ClientEvent>>;

struct RoomsSection<'a>(&'a SyncResponse);

impl Serialize for RoomsSection<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let r = self.0;
        let mut m = s.serialize_struct("Rooms", 4)?;
        m.serialize_field("invite", &r.invite)?;
        m.serialize_field("join", &JoinSection(&r.join, &r.timelines))?;
        m.serialize_field("knock", &Map::new())?;
        m.serialize_field("leave", &r.leave)?;
        m.end()
    }
}

/// The joined rooms, each with its timeline events written into `timeline`.
struct JoinSection<'a>(&'a Map<String, Value>, &'a Timelines);

impl Serialize for JoinSection<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (id, room) in self.0 {
            match (room.as_object(), self.1.get(id)) {
                (Some(fields), Some(events)) => {
                    m.serialize_entry(id, &JoinedRoom(fields, events))?;
                }
                _ => m.serialize_entry(id, room)?,
            }
        }
        m.end()
    }
}

struct JoinedRoom<'a>(&'a Map<String, Value>, &'a [ClientEvent]);

impl Serialize for JoinedRoom<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            match v.as_object() {
                Some(timeline) if k == "timeline" => {
                    m.serialize_entry(k, &TimelineSection(timeline, self.1))?
                }
                _ => m.serialize_entry(k, v)?,
            }
        }
        m.end()
    }
}

/// `timeline`: its events, then its other fields (`limited`, `prev_batch`).
struct TimelineSection<'a>(&'a Map<String, Value>, &'a [ClientEvent]);

impl Serialize for TimelineSection<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("events", self.1)?;
        for (k, v) in self.0.iter().filter(|(k, _)| *k != "events") {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

struct DeviceLists<'a>(&'a crate::keys::DeviceListDelta);

impl Serialize for DeviceLists<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("DeviceLists", 2)?;
        m.serialize_field("changed", &self.0.changed)?;
        m.serialize_field("left", &self.0.left)?;
        m.end()
    }
}

impl Serialize for SyncResponse {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("SyncResponse", 8)?;
        m.serialize_field("account_data", &Events(&self.account_data))?;
        m.serialize_field("device_lists", &DeviceLists(&self.device_lists))?;
        m.serialize_field("device_one_time_keys_count", &self.keys.0)?;
        m.serialize_field("device_unused_fallback_key_types", &self.keys.1)?;
        m.serialize_field("next_batch", &self.next_batch)?;
        m.serialize_field("presence", &Events(&self.presence))?;
        m.serialize_field("rooms", &RoomsSection(self))?;
        m.serialize_field("to_device", &Events(&self.to_device))?;
        m.end()
    }
}

pub struct SyncRequest {
    pub since: Option<SyncToken>,
    pub full_state: bool,
    pub timeout: Duration,
    pub filter: Arc<Filter>,
}

pub struct Sync {
    store: Arc<dyn Store>,
    rooms: Arc<Rooms>,
    timeline: Arc<Timeline>,
    typing: Arc<Typing>,
    notifier: Arc<Notifier>,
    default_timeline_limit: u32,
    max_timeline_limit: u32,
    /// Unread counts and default push rules (`push::sync_counts`).
    push: Option<Arc<crate::push::Push>>,
    /// Each user's memberships and the position they were read at; valid while the change index
    /// shows no change of the user after it.
    memberships: Mutex<foldhash::HashMap<String, CachedMemberships>>,
    /// Per device, the position up to which send-to-device messages were acknowledged: while the
    /// user has no change after it, there is nothing more to delete.
    acknowledged: Mutex<PerDevice<i64>>,
    /// Per device, its one-time key counts and unused fallback key types, and the position they
    /// were read at; valid while the user's keys did not change after it.
    key_counts: Mutex<PerDevice<CachedKeyCounts>>,
}

type CachedKeyCounts = (i64, Arc<KeyCounts>);

/// A device's one-time key counts and unused fallback key types.
type KeyCounts = (BTreeMap<String, u64>, Vec<String>);

/// A user's memberships, the position they were read at, and — once a sync subscribed with
/// them — their wake keys resolved to the notifier's slots, which every later long poll of the
/// user reuses until the memberships change.
type CachedMemberships = (i64, Arc<Vec<MembershipRecord>>, Option<Interest>);

/// Bounds on the caches above (entries); past them a cache starts over.
const MAX_CACHED_USERS: usize = 500_000;

/// State events to strip into `invite_state`.
const STRIPPED: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

impl Sync {
    pub fn new(
        store: Arc<dyn Store>,
        rooms: Arc<Rooms>,
        timeline: Arc<Timeline>,
        typing: Arc<Typing>,
        notifier: Arc<Notifier>,
        max_timeline_limit: u32,
    ) -> Self {
        Self {
            store,
            rooms,
            timeline,
            typing,
            notifier,
            default_timeline_limit: 10,
            max_timeline_limit,
            push: None,
            memberships: Mutex::default(),
            acknowledged: Mutex::default(),
            key_counts: Mutex::default(),
        }
    }

    /// Subscribes to the user's key and the keys of the rooms they are in or invited to.
    fn subscribe(&self, user: &UserId, memberships: &Arc<Vec<MembershipRecord>>) -> Subscription {
        if let Some((_, list, Some(interest))) = self.memberships.lock().get(user.as_str())
            && Arc::ptr_eq(list, memberships)
        {
            return self.notifier.subscribe_to(interest);
        }
        let mut keys = vec![WakeKey::User(user.to_string())];
        keys.extend(
            memberships
                .iter()
                .filter(|m| m.membership == "join" || m.membership == "invite")
                .map(|m| WakeKey::Room(m.room_id.clone())),
        );
        let interest = self.notifier.interest(keys);
        let sub = self.notifier.subscribe_to(&interest);
        if let Some((_, list, kept)) = self.memberships.lock().get_mut(user.as_str())
            && Arc::ptr_eq(list, memberships)
        {
            *kept = Some(interest);
        }
        sub
    }

    /// The device's one-time key counts and unused fallback key types, which every response
    /// carries.
    async fn key_counts(&self, user: &UserId, device: &str) -> Result<Arc<KeyCounts>> {
        if let Some((at, counts)) = self.key_counts.lock().get(user.as_str(), device)
            && !self.store.changes().keys_changed(user.as_str(), *at)
        {
            return Ok(counts.clone());
        }
        let at = self.store.current_position();
        let counts =
            crate::keys::one_time_key_counts(self.store.as_ref(), user.as_str(), device).await?;
        let fallback = self
            .store
            .unused_fallback_key_types(user.as_str(), device)
            .await?;
        let counts = Arc::new((counts, fallback));
        self.key_counts
            .lock()
            .insert(user.as_str(), device, (at, counts.clone()));
        Ok(counts)
    }

    /// The user's memberships, from the cache when nothing about the user changed since.
    async fn memberships(&self, user: &UserId) -> Result<Arc<Vec<MembershipRecord>>> {
        if let Some((at, list, _)) = self.memberships.lock().get(user.as_str())
            && !self.store.changes().user_changed(user.as_str(), *at)
        {
            return Ok(list.clone());
        }
        // Read the position first: a change racing with the query shows up as newer than it.
        let at = self.store.current_position();
        let list = Arc::new(self.store.rooms_for_user(user.as_str()).await?);
        let mut cache = self.memberships.lock();
        if cache.len() >= MAX_CACHED_USERS {
            cache.clear();
        }
        cache.insert(user.to_string(), (at, list.clone(), None));
        Ok(list)
    }

    /// Deletes the device's send-to-device messages up to `up_to`, which its token shows it
    /// received; skipped when nothing arrived since the last acknowledgement (which left no
    /// message at or below its position, and any later one would show in the change index).
    async fn acknowledge(&self, user: &UserId, device: &str, up_to: i64) -> Result<()> {
        if let Some(done) = self.acknowledged.lock().get(user.as_str(), device)
            && !self.store.changes().inbox_changed(user.as_str(), *done)
        {
            return Ok(());
        }
        crate::to_device::acknowledge(self.store.as_ref(), user.as_str(), device, up_to).await?;
        self.acknowledged
            .lock()
            .insert(user.as_str(), device, up_to);
        Ok(())
    }

    /// Adds unread notification counts (and the default push rules) to sync responses.
    pub fn with_push(mut self, push: Arc<crate::push::Push>) -> Self {
        self.push = Some(push);
        self
    }

    /// Answers a sync, waiting up to `timeout` for something new when incremental.
    pub async fn sync(
        &self,
        user: &UserId,
        device: &str,
        req: SyncRequest,
        shutdown: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<SyncResponse> {
        // A long poll taken up during a burst of woken syncs would mostly park again: it lets
        // the burst go first (see `fanout`).
        if req.since.is_some() && !req.timeout.is_zero() {
            self.notifier.fanout().wait_for_burst().await;
        }
        let deadline = tokio::time::Instant::now() + req.timeout;
        // End-to-end encryption: a `since` token shows which send-to-device messages the device
        // received; they are deleted now, so that none is delivered twice.
        if let Some(since) = req.since {
            Box::pin(self.acknowledge(user, device, since.to_device_position())).await?;
        }
        // Held from a wake until the build after it, for the burst count.
        let mut woken = None;
        loop {
            // Subscribe before reading so that a change during the read still wakes us.
            let memberships = self.memberships(user).await?;
            let sub = self.subscribe(user, &memberships);
            let may_wait = req.since.is_some()
                && !req.full_state
                && tokio::time::Instant::now() < deadline
                && !*shutdown.borrow();
            // Boxed: a parked sync's future then holds only the wait, not the space of a build
            // (tens of kilobytes, times 80,000 clients).
            if let Some(body) =
                Box::pin(self.build(user, device, &req, &memberships, may_wait)).await?
            {
                return Ok(body);
            }
            drop(woken.take());
            let mut shutdown = shutdown.clone();
            // Biased: a sync whose deadline passed while its wake was queued is still counted
            // as woken, or the burst it belongs to would wait for it until `MAX_WAIT`.
            tokio::select! {
                biased;
                _ = sub.wait() => woken = Some(self.notifier.fanout().ticket()),
                _ = tokio::time::sleep_until(deadline) => {
                    self.notifier.fanout().wait_for_burst().await;
                    // One last look: a change exactly at the deadline still counts.
                    let memberships = self.memberships(user).await?;
                    if let Some(body) =
                        Box::pin(self.build(user, device, &req, &memberships, false)).await?
                    {
                        return Ok(body);
                    }
                    return Err(Error::internal("sync produced no response"));
                }
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Builds the response; `None` when `may_wait` and there is nothing new, so the caller parks.
    /// An incremental sync reads only what the change index shows may have changed since the
    /// token: the rooms with news, and the user's own sections only when they changed.
    async fn build(
        &self,
        user: &UserId,
        device: &str,
        req: &SyncRequest,
        memberships: &[MembershipRecord],
        may_wait: bool,
    ) -> Result<Option<SyncResponse>> {
        let now = SyncToken {
            stream: self.store.current_position(),
            typing: self.typing.current(),
            to_device: None,
        };
        let since = req.since.unwrap_or_default();
        let initial = req.since.is_none();
        if since.stream > now.stream {
            // A token from the future (e.g. another server's): treat as current rather than fail.
            tracing::debug!(%user, "sync token ahead of the stream");
        }
        let filter = &req.filter;
        let changes = self.store.changes();
        // Everything is read afresh for initial and full-state syncs and for tokens from the
        // future; otherwise only what changed after the token.
        let everything = initial || req.full_state || since.stream > now.stream;
        let user_changed = everything || changes.user_changed(user.as_str(), since.stream);
        let mut join = Map::new();
        let mut timelines = Timelines::new();
        let mut invite = Map::new();
        let mut leave = Map::new();
        let mut anything = false;

        for m in memberships {
            if !filter.room_allowed(&m.room_id) {
                continue;
            }
            // Parsed only for a room that goes into the response: most rooms of a woken sync
            // have no news.
            let room_id = || OwnedRoomId::try_from(m.room_id.as_str()).ok();
            let changed_membership = m.stream > since.stream && m.stream <= now.stream;
            match m.membership.as_str() {
                "join" => {
                    let newly = initial || changed_membership;
                    if !newly
                        && !everything
                        && !changes.room_changed(&m.room_id, since.stream)
                        && !self.typing.changed(&m.room_id, since.typing)
                    {
                        continue;
                    }
                    let Some(room_id) = room_id() else { continue };
                    if let Some((v, events)) = self
                        .joined_room(user, device, &room_id, since, now, newly, req)
                        .await?
                    {
                        join.insert(m.room_id.clone(), v);
                        timelines.insert(m.room_id.clone(), events);
                        anything = true;
                    }
                }
                "invite" if initial || changed_membership => {
                    let Some(room_id) = room_id() else { continue };
                    invite.insert(
                        m.room_id.clone(),
                        self.invited_room(&room_id, &m.event_id).await?,
                    );
                    anything = true;
                }
                "leave" | "ban"
                    if !m.forgotten
                        && ((changed_membership && !initial)
                            || (initial && filter.room.include_leave)) =>
                {
                    let Some(room_id) = room_id() else { continue };
                    leave.insert(
                        m.room_id.clone(),
                        self.left_room(user, device, &room_id, m, since, req)
                            .await?,
                    );
                    anything = true;
                }
                _ => {}
            }
        }

        let mut account_data = Vec::new();
        let account_data_records = if user_changed {
            self.store
                .account_data_since(
                    user.as_str(),
                    if initial { 0 } else { since.stream },
                    now.stream,
                )
                .await?
        } else {
            vec![]
        };
        for rec in account_data_records {
            let content: Value = serde_json::from_str(&rec.content).unwrap_or(json!({}));
            let ev = json!({"type": rec.kind, "content": content});
            match &rec.room_id {
                None => {
                    if filter.account_data.matches(&rec.kind, user.as_str()) {
                        account_data.push(ev);
                    }
                }
                Some(room) => {
                    if !filter.room.account_data.matches(&rec.kind, user.as_str())
                        || !filter.room.account_data.room_allowed(room)
                    {
                        continue;
                    }
                    // Room account data rides in the room's section (creating it if needed).
                    let section = if join.contains_key(room)
                        || memberships
                            .iter()
                            .any(|m| &m.room_id == room && m.membership == "join")
                    {
                        &mut join
                    } else if leave.contains_key(room) {
                        &mut leave
                    } else {
                        continue;
                    };
                    let entry = section
                        .entry(room.clone())
                        .or_insert_with(empty_joined_room);
                    if let Some(events) = entry
                        .pointer_mut("/account_data/events")
                        .and_then(Value::as_array_mut)
                    {
                        events.push(ev);
                        anything = true;
                    }
                }
            }
        }
        // Push: unread counts of joined rooms, rooms whose counts changed, default push rules.
        if let Some(push) = &self.push {
            anything |= crate::push::sync_counts::add_to_sync(
                push,
                user,
                crate::push::sync_counts::Window {
                    since: since.stream,
                    now: now.stream,
                    initial,
                    notifications_changed: everything
                        || changes.notifications_changed(user.as_str(), since.stream),
                },
                filter,
                memberships,
                &mut join,
                &mut account_data,
            )
            .await?;
        }
        anything |= !account_data.is_empty();

        let presence = if everything || changes.presence_changed(since.stream) {
            self.presence(
                user,
                memberships,
                if initial { 0 } else { since.stream },
                now.stream,
                filter,
            )
            .await?
        } else {
            vec![]
        };
        anything |= !presence.is_empty();

        // --- End-to-end encryption (see keys.rs and to_device.rs) ---
        let inbox = if everything
            || since.to_device.is_some()
            || changes.inbox_changed(user.as_str(), since.stream)
        {
            crate::to_device::inbox(
                self.store.as_ref(),
                user.as_str(),
                device,
                if initial {
                    0
                } else {
                    since.to_device_position()
                },
                now.stream,
            )
            .await?
        } else {
            crate::to_device::Inbox::default()
        };
        // Initial syncs leave `device_lists` empty, as the spec allows: the client queries the
        // keys of everyone it shares an encrypted room with after an initial sync anyway.
        // Device lists change with keys, and with who shares a room: a membership event in a
        // room (or a timeline too long to tell) means the delta must be computed.
        let members_moved = memberships.iter().any(|m| m.stream > since.stream)
            || join
                .values()
                .any(|room| room["timeline"]["limited"] == Value::Bool(true))
            || timelines
                .values()
                .flatten()
                .any(|e| *e.kind() == TimelineEventType::RoomMember);
        let device_lists =
            if initial || !(members_moved || changes.device_lists_changed(since.stream)) {
                crate::keys::DeviceListDelta::default()
            } else {
                crate::keys::device_list_delta(
                    self.store.as_ref(),
                    user.as_str(),
                    since.stream,
                    now.stream,
                )
                .await?
            };
        anything |= !inbox.events.is_empty()
            || !device_lists.changed.is_empty()
            || !device_lists.left.is_empty();
        if may_wait && !anything {
            return Ok(None);
        }
        let key_counts = self.key_counts(user, device).await?;
        // --- end of end-to-end encryption ---

        let mut next = if since.stream > now.stream {
            SyncToken {
                stream: since.stream,
                typing: now.typing,
                to_device: None,
            }
        } else {
            now
        };
        // More messages are waiting than one response carries: the next sync resumes after the
        // last one delivered.
        next.to_device = inbox.resume_after;
        let body = SyncResponse {
            next_batch: next.to_string(),
            join,
            timelines,
            invite,
            leave,
            account_data,
            presence,
            to_device: inbox.events,
            device_lists,
            keys: key_counts,
        };
        Ok(Some(body))
    }

    fn timeline_limit(&self, req: &SyncRequest) -> u32 {
        req.filter
            .room
            .timeline
            .limit
            .map(|l| l as u32)
            .unwrap_or(self.default_timeline_limit)
            .min(self.max_timeline_limit)
    }

    #[allow(clippy::too_many_arguments)]
    async fn joined_room(
        &self,
        user: &UserId,
        device: &str,
        room_id: &OwnedRoomId,
        since: SyncToken,
        now: SyncToken,
        newly_joined: bool,
        req: &SyncRequest,
    ) -> Result<Option<(Value, Vec<ClientEvent>)>> {
        let limit = self.timeline_limit(req);
        let tfilter = &req.filter.room.timeline;
        let after = if newly_joined { 0 } else { since.stream };
        let room_allowed_timeline = tfilter.room_allowed(room_id.as_str());
        let mut events = if room_allowed_timeline && limit > 0 {
            self.store
                .room_events_backward(
                    room_id.as_str(),
                    now.stream,
                    after,
                    limit + 1,
                    &tfilter.to_storage(),
                )
                .await?
        } else {
            vec![]
        };
        let limited = events.len() > limit as usize;
        events.truncate(limit as usize);
        events.reverse();
        let mut visible = Vec::with_capacity(events.len());
        for e in events {
            if self.timeline.visible(user, &e, Some("join")).await? {
                visible.push(e);
            }
        }
        // Ephemeral events only when the filter lets them through: a client that filters them
        // out costs no receipt query.
        let eph = &req.filter.room.ephemeral;
        let eph_room = eph.room_allowed(room_id.as_str());
        let typing = if eph_room && eph.type_allowed("m.typing") {
            self.typing.changed_since(
                room_id.as_str(),
                if newly_joined { 0 } else { since.typing },
            )
        } else {
            None
        };
        // Receipts are read only when the change index shows new ones (or for a new room).
        let receipts_news = newly_joined
            || self
                .store
                .changes()
                .receipts_changed(room_id.as_str(), since.stream);
        let mut receipts = if eph_room && eph.type_allowed("m.receipt") && receipts_news {
            self.store
                .receipts_since(
                    room_id.as_str(),
                    if newly_joined { 0 } else { since.stream },
                    now.stream,
                )
                .await?
        } else {
            vec![]
        };
        // Others' private receipts are not news to this user.
        receipts.retain(|r| r.receipt_type != "m.read.private" || r.user_id == user.as_str());
        let state = self
            .state_section(
                user,
                room_id,
                &visible,
                since,
                newly_joined || req.full_state,
                limited,
                req,
            )
            .await?;
        if !newly_joined
            && !req.full_state
            && visible.is_empty()
            && typing.is_none()
            && receipts.is_empty()
            && state.is_empty()
        {
            return Ok(None);
        }
        let mut ephemeral = Vec::new();
        if let Some(users) = typing {
            ephemeral.push(json!({"type": "m.typing", "content": {"user_ids": users}}));
        }
        if !receipts.is_empty() {
            ephemeral.push(receipt_event(user.as_str(), &receipts));
        }
        let prev_batch =
            position_token(visible.first().map(|e| e.stream - 1).unwrap_or(now.stream));
        let events = self
            .timeline
            .client_events(&visible, Some((user.as_str(), device)))
            .await?;
        let summary = if newly_joined || !state.is_empty() {
            Some(self.summary(user, room_id).await?)
        } else {
            None
        };
        // Moved into the tree, not copied: `json!` would serialize them anew. The events are
        // written into the timeline from the response's `timelines`.
        let mut timeline = Map::new();
        timeline.insert("limited".into(), Value::Bool(limited));
        timeline.insert("prev_batch".into(), Value::String(prev_batch));
        let mut room = joined_room_section(Value::Object(timeline), state, ephemeral);
        if let Some(summary) = summary {
            room.insert("summary".into(), summary);
        }
        Ok(Some((Value::Object(room), events)))
    }

    /// The state section: the state at the start of the timeline that the client lacks.
    #[allow(clippy::too_many_arguments)]
    async fn state_section(
        &self,
        user: &UserId,
        room_id: &OwnedRoomId,
        timeline: &[StoredEvent],
        since: SyncToken,
        full: bool,
        limited: bool,
        req: &SyncRequest,
    ) -> Result<Vec<Value>> {
        if !full && !limited {
            return Ok(vec![]);
        }
        let state = match timeline.first() {
            Some(first) => match first.state_group_before {
                Some(g) => self.rooms.state_map(g).await?,
                None => Arc::new(Default::default()),
            },
            None => self.rooms.current_state(room_id).await?,
        };
        let sfilter = &req.filter.room.state;
        let lazy = sfilter.lazy_load_members;
        let mut wanted: HashSet<&str> = timeline.iter().map(|e| e.sender.as_str()).collect();
        wanted.insert(user.as_str());
        let in_timeline: HashSet<&str> = timeline.iter().map(|e| e.event_id.as_str()).collect();
        let ids: Vec<String> = state
            .iter()
            .filter(|((t, k), id)| {
                !in_timeline.contains(id.as_str())
                    && sfilter.matches(t, "")
                    && (!lazy || t != "m.room.member" || wanted.contains(k.as_str()))
            })
            .map(|(_, id)| id.to_string())
            .collect();
        let mut events = self.store.get_events(&ids).await?;
        if !full {
            // Incremental and limited: only what changed since the client's token.
            events.retain(|e| e.stream > since.stream);
        }
        events.sort_by_key(|e| e.stream);
        self.timeline.render_many(&events, None).await
    }

    async fn summary(&self, user: &UserId, room_id: &OwnedRoomId) -> Result<Value> {
        // Counts and five heroes from the database: a room of 2,000 members is not loaded whole
        // for every member's initial sync.
        let members = self
            .store
            .member_summary(room_id.as_str(), user.as_str(), 5)
            .await?;
        let state = self.rooms.current_state(room_id).await?;
        let named = state.contains_key(&("m.room.name".to_owned(), String::new()))
            || state.contains_key(&("m.room.canonical_alias".to_owned(), String::new()));
        let mut summary = json!({
            "m.joined_member_count": members.joined,
            "m.invited_member_count": members.invited,
        });
        if !named {
            summary["m.heroes"] = json!(members.heroes);
        }
        Ok(summary)
    }

    async fn invited_room(&self, room_id: &OwnedRoomId, invite_event: &str) -> Result<Value> {
        let mut events = Vec::new();
        let state = self.rooms.current_state(room_id).await?;
        for kind in STRIPPED {
            if let Some(id) = state.get(&((*kind).to_owned(), String::new()))
                && let Some(p) = self.rooms.pdu(id).await?
            {
                events.push(stripped(&p));
            }
        }
        if let Ok(id) = ruma::OwnedEventId::try_from(invite_event)
            && let Some(p) = self.rooms.pdu(&id).await?
        {
            if let Some(inviter) = state.get(&("m.room.member".to_owned(), p.sender.to_string()))
                && let Some(ip) = self.rooms.pdu(inviter).await?
            {
                events.push(stripped(&ip));
            }
            events.push(stripped(&p));
        }
        Ok(json!({"invite_state": {"events": events}}))
    }

    async fn left_room(
        &self,
        user: &UserId,
        device: &str,
        room_id: &OwnedRoomId,
        m: &MembershipRecord,
        since: SyncToken,
        req: &SyncRequest,
    ) -> Result<Value> {
        let limit = self.timeline_limit(req);
        let tfilter = &req.filter.room.timeline;
        // The timeline ends at the leave event: nothing after it is theirs to see.
        let mut events = self
            .store
            .room_events_backward(
                room_id.as_str(),
                m.stream,
                since.stream,
                limit + 1,
                &tfilter.to_storage(),
            )
            .await?;
        let limited = events.len() > limit as usize;
        events.truncate(limit as usize);
        events.reverse();
        let mut visible = Vec::new();
        for e in events {
            if self
                .timeline
                .visible(user, &e, Some(m.membership.as_str()))
                .await?
            {
                visible.push(e);
            }
        }
        let prev_batch = position_token(visible.first().map(|e| e.stream - 1).unwrap_or(m.stream));
        let state = self
            .state_section(
                user,
                room_id,
                &visible,
                since,
                req.since.is_none(),
                limited,
                req,
            )
            .await?;
        Ok(json!({
            "timeline": {
                "events": self.timeline.render_many(&visible, Some((user.as_str(), device))).await?,
                "limited": limited,
                "prev_batch": prev_batch,
            },
            "state": {"events": state},
            "account_data": {"events": []},
        }))
    }

    async fn presence(
        &self,
        user: &UserId,
        memberships: &[MembershipRecord],
        after: i64,
        up_to: i64,
        filter: &Filter,
    ) -> Result<Vec<Value>> {
        if filter.presence.types.as_ref().is_some_and(|t| t.is_empty()) {
            return Ok(vec![]);
        }
        let mut users: HashSet<String> = HashSet::new();
        users.insert(user.to_string());
        for m in memberships.iter().filter(|m| m.membership == "join") {
            for member in self.store.room_members(&m.room_id).await? {
                if member.membership == "join" {
                    users.insert(member.user_id);
                }
            }
        }
        let users: Vec<String> = users.into_iter().collect();
        let now = crate::rooms::append::now_ms();
        Ok(self
            .store
            .presence_since(&users, after, up_to)
            .await?
            .into_iter()
            .filter(|p| filter.presence.matches("m.presence", &p.user_id))
            .map(|p| {
                let mut content = json!({
                    "presence": p.state,
                    "last_active_ago": (now - p.last_active_ms).max(0),
                    "currently_active": p.state == "online" && now - p.last_active_ms < 300_000,
                });
                if let Some(msg) = p.status_msg {
                    content["status_msg"] = json!(msg);
                }
                json!({"type": "m.presence", "sender": p.user_id, "content": content})
            })
            .collect())
    }
}

pub(crate) fn empty_joined_room() -> Value {
    let mut timeline = Map::new();
    timeline.insert("events".into(), Value::Array(Vec::new()));
    timeline.insert("limited".into(), Value::Bool(false));
    Value::Object(joined_room_section(
        Value::Object(timeline),
        Vec::new(),
        Vec::new(),
    ))
}

/// A joined room's section with its timeline, state and ephemeral events.
fn joined_room_section(
    timeline: Value,
    state: Vec<Value>,
    ephemeral: Vec<Value>,
) -> Map<String, Value> {
    let events = |list: Vec<Value>| {
        let mut m = Map::new();
        m.insert("events".into(), Value::Array(list));
        Value::Object(m)
    };
    let mut room = Map::new();
    room.insert("timeline".into(), timeline);
    room.insert("state".into(), events(state));
    room.insert("account_data".into(), events(Vec::new()));
    room.insert("ephemeral".into(), events(ephemeral));
    room.insert("unread_notifications".into(), Value::Object(Map::new()));
    room
}

fn stripped(p: &crate::pdu::Pdu) -> Value {
    json!({
        "type": p.kind.to_string(),
        "state_key": p.state_key.clone().unwrap_or_default(),
        "sender": p.sender.to_string(),
        "content": p.content_value(),
    })
}

/// Builds one `m.receipt` event; private receipts are shown only to their owner.
pub fn receipt_event(viewer: &str, receipts: &[feldpost_storage::ReceiptRecord]) -> Value {
    let mut content: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for r in receipts {
        if r.receipt_type == "m.read.private" && r.user_id != viewer {
            continue;
        }
        let by_type = content.entry(r.event_id.clone()).or_default();
        let users = by_type
            .entry(r.receipt_type.clone())
            .or_insert_with(|| json!({}));
        let mut receipt = json!({"ts": r.ts});
        if !r.thread_id.is_empty() {
            receipt["thread_id"] = json!(r.thread_id);
        }
        users[r.user_id.as_str()] = receipt;
    }
    json!({"type": "m.receipt", "content": content})
}

/// `M_INVALID_PARAM` for an unreadable `since`.
pub fn parse_since(s: &str) -> Result<SyncToken> {
    SyncToken::parse(s).ok_or_else(|| Error::invalid_param("Invalid since token"))
}

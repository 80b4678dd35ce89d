//! Plain records passed across the storage boundary. Identifiers are strings here: the services
//! validate them with ruma's types before they reach storage.

#[derive(Debug, Clone)]
pub struct NewUser {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub displayname: Option<String>,
    pub is_admin: bool,
    pub created_ms: i64,
}

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub user_id: String,
    pub password_hash: Option<String>,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub is_admin: bool,
    pub deactivated: bool,
    pub created_ms: i64,
}

#[derive(Debug, Clone)]
pub struct TokenOwner {
    pub user_id: String,
    pub device_id: String,
}

#[derive(Debug, Clone)]
pub struct DeviceRecord {
    pub user_id: String,
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ip: Option<String>,
    pub last_seen_ms: Option<i64>,
}

/// A device seen at an address at a time (`AccountStore::touch_devices`).
#[derive(Debug, Clone)]
pub struct DeviceSighting {
    pub user_id: String,
    pub device_id: String,
    pub ip: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct NewRoom {
    pub room_id: String,
    pub room_version: String,
    pub creator: String,
    pub created_ms: i64,
}

#[derive(Debug, Clone)]
pub struct RoomRecord {
    pub room_id: String,
    pub room_version: String,
    pub creator: String,
    pub published: bool,
}

/// A state entry: `(type, state_key) -> event_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    pub event_type: String,
    pub state_key: String,
    pub event_id: String,
}

/// A state snapshot, stored as a delta against `prev` (or in full when `prev` is `None`).
#[derive(Debug, Clone)]
pub struct StateGroupRecord {
    pub id: i64,
    pub prev: Option<i64>,
    pub chain_len: i64,
    pub entries: Vec<StateEntry>,
}

/// A state group to create together with an event.
#[derive(Debug, Clone)]
pub struct NewStateGroup {
    pub prev: Option<i64>,
    pub chain_len: i64,
    pub entries: Vec<StateEntry>,
}

/// The tip of a room's DAG as this server sees it.
#[derive(Debug, Clone)]
pub struct RoomHead {
    pub forward_extremities: Vec<String>,
    pub max_depth: i64,
    pub state_group: i64,
}

#[derive(Debug, Clone)]
pub struct MembershipUpdate {
    pub user_id: String,
    pub membership: String,
}

#[derive(Debug, Clone)]
pub struct RelationUpdate {
    pub relates_to: String,
    pub rel_type: String,
}

/// Everything written when an event is accepted into a room.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub room_id: String,
    pub sender: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub depth: i64,
    pub origin_server_ts: i64,
    /// The PDU as canonical JSON.
    pub json: String,
    /// Server-side `unsigned` data fixed at persist time (`prev_content`, `replaces_state`).
    pub unsigned: Option<String>,
    pub state_group_before: Option<i64>,
    /// A new group for the state after a state event; `None` means the state is unchanged.
    pub new_state_group: Option<NewStateGroup>,
    pub prev_events: Vec<String>,
    pub membership: Option<MembershipUpdate>,
    pub relation: Option<RelationUpdate>,
    pub txn: Option<(String, String, String)>,
    /// For a redaction: the redacted event and its redacted JSON.
    pub redaction: Option<(String, String)>,
    /// The notifications the event raises, stored in the same write so that a sync sees the
    /// event and the unread counts it changes together. Their `event_stream` is set here.
    pub notifications: Vec<crate::NewNotification>,
    /// What the event raises for most members alike (see `NewRoomNotification`); the
    /// `notifications` are then the exceptions.
    pub room_notification: Option<crate::NewRoomNotification>,
}

#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub event_id: String,
    pub room_id: String,
    pub stream: i64,
    pub json: String,
    pub unsigned: Option<String>,
    pub event_type: String,
    pub sender: String,
    pub state_key: Option<String>,
    pub state_group_before: Option<i64>,
    pub state_group_after: Option<i64>,
    pub redacted_by: Option<String>,
    pub txn: Option<(String, String)>,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub contains_url: Option<bool>,
}

#[derive(Debug, Clone, Default)]
pub struct MemberSummary {
    pub joined: u64,
    pub invited: u64,
    pub heroes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct MembershipRecord {
    pub room_id: String,
    pub user_id: String,
    pub membership: String,
    pub event_id: String,
    pub stream: i64,
    pub forgotten: bool,
}

#[derive(Debug, Clone)]
pub struct RelationQuery {
    pub room_id: String,
    pub event_id: String,
    pub rel_type: Option<String>,
    pub event_type: Option<String>,
    /// Exclusive bound in the direction of travel.
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub limit: u32,
    pub forward: bool,
}

#[derive(Debug, Clone)]
pub struct AliasRecord {
    pub alias: String,
    pub room_id: String,
    pub creator: String,
}

#[derive(Debug, Clone)]
pub struct AccountDataRecord {
    pub room_id: Option<String>,
    pub kind: String,
    pub content: String,
    pub stream: i64,
}

#[derive(Debug, Clone)]
pub struct ReceiptRecord {
    pub room_id: String,
    pub receipt_type: String,
    pub user_id: String,
    /// Empty for an unthreaded receipt.
    pub thread_id: String,
    pub event_id: String,
    pub ts: i64,
    pub stream: i64,
}

#[derive(Debug, Clone)]
pub struct PresenceRecord {
    pub user_id: String,
    pub state: String,
    pub status_msg: Option<String>,
    pub last_active_ms: i64,
    pub stream: i64,
}

#[derive(Debug, Clone)]
pub struct MediaRecord {
    pub media_id: String,
    /// Hex SHA-256 of the content; empty while a created media id awaits its upload.
    pub content_hash: String,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub size: i64,
    pub uploader: String,
    pub created_ms: i64,
}

/// Where a persisted event landed.
#[derive(Debug, Clone)]
pub struct PersistedEvent {
    /// The event's stream position; `-1` when `existing` is set.
    pub stream: i64,
    /// The event already stored for the same transaction id: nothing was written.
    pub existing: Option<String>,
    /// The state group after the event (new for a state event).
    pub state_group_after: Option<i64>,
    /// Its notification rows wait in the table of rows still to be moved into place (see
    /// `PushStore::move_pending_notifications`); they are read there meanwhile.
    pub notifications_waiting: bool,
}

//! Records of push: pushers, notifications produced by push-rule evaluation, unread counts.

/// A pusher as stored: one per (user, app id, pushkey).
#[derive(Debug, Clone, PartialEq)]
pub struct PusherRecord {
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    /// The pusher's `data` object as JSON text.
    pub data: String,
    /// The device whose access token set the pusher.
    pub device_id: Option<String>,
    /// When the pushkey was last set, in milliseconds.
    pub pushkey_ts: i64,
    /// The position of the last notified event handed to the gateway.
    pub pushed_through: i64,
}

/// A notification for one user, produced when an event matched a push rule with `notify`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub user_id: String,
    pub room_id: String,
    pub event_id: String,
    pub event_stream: i64,
    /// `main` or the thread root's event id.
    pub thread_id: String,
    pub notify: bool,
    pub highlight: bool,
    /// Whether it is to be pushed (not during quiet hours).
    pub push: bool,
    /// The matched rule's actions as JSON text.
    pub actions: String,
    pub profile_tag: Option<String>,
    pub ts: i64,
}

/// A notification that reaches every local member of the room joined before the event the same
/// way, but for the event's sender and the members given a `NewNotification` of their own for the
/// event (one with `notify: false` for a member it does not notify at all). A message into a
/// large room is one of these instead of a row per member.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRoomNotification {
    pub room_id: String,
    pub event_id: String,
    pub sender: String,
    /// `main` or the thread root's event id.
    pub thread_id: String,
    pub highlight: bool,
    /// Whether it is to be pushed.
    pub push: bool,
    /// The matched rule's actions as JSON text.
    pub actions: String,
    pub ts: i64,
}

/// A stored notification of one user (from a row of their own or a room notification); `id` is
/// its event's stream position, by which listings page and pushers keep their place.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationRecord {
    pub id: i64,
    pub user_id: String,
    pub room_id: String,
    pub event_id: String,
    pub event_stream: i64,
    pub thread_id: String,
    pub highlight: bool,
    pub push: bool,
    pub actions: String,
    pub profile_tag: Option<String>,
    pub ts: i64,
}

/// Unread notification and highlight counts of one thread (`main` for the main timeline).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ThreadCount {
    pub thread_id: String,
    pub notifications: u64,
    pub highlights: u64,
}

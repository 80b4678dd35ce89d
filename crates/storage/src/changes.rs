//! The change index: for each room and user, the last stream position at which something a sync
//! shows changed. An incremental sync asks it which rooms and which per-user sections can have
//! news, and reads the database only for those — a message wakes 2,000 syncs that each build one
//! room, and a sync that finds nothing new parks without a single query.
//!
//! The writer records a batch's keys *before* it publishes the batch's positions, so a sync that
//! reads the current position and then this index never misses a change at or below it. Positions
//! from before the process started are unknown: any question about them answers "maybe changed".

// Looked up for every room of every sync: a fast, randomly seeded hash rather than SipHash.
use foldhash::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::RwLock;

/// What a write touched, as far as `/sync` is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChangeKey {
    /// Events and receipts: what a room's section shows.
    Room(String),
    /// Read receipts in a room (also a `Room` change): lets a sync skip reading receipts of a
    /// room that only has new events.
    Receipts(String),
    /// A user's memberships and account data.
    User(String),
    /// Send-to-device messages for a user's devices.
    Inbox(String),
    /// Notification rows of a user (unread counts).
    Notifications(String),
    /// What bounds a user's unread counts: their read receipts and memberships.
    Reads(String),
    /// One-time and fallback keys of one user (uploaded, claimed, dropped with a device).
    Keys(String),
    /// Any device-list change (observers are found by shared rooms, at read time).
    DeviceLists,
    /// Any presence change.
    Presence,
    /// Any access token or account flag that authentication reads (logout, deactivation, admin).
    Credentials,
}

/// The per-room and per-user kinds, each with its own map.
#[derive(Clone, Copy)]
enum Kind {
    Room,
    User,
    Inbox,
    Notifications,
    Reads,
    Keys,
    Receipts,
}
const KINDS: usize = 7;

/// The global kinds.
#[derive(Clone, Copy)]
enum Global {
    DeviceLists,
    Presence,
    Credentials,
}
const GLOBALS: usize = 3;

pub struct ChangeIndex {
    /// Positions at or below this are from before the index knew everything (its start, or the
    /// last write by another process).
    floor: AtomicI64,
    keyed: [RwLock<HashMap<String, i64>>; KINDS],
    global: [AtomicI64; GLOBALS],
}

impl ChangeIndex {
    pub fn new(floor: i64) -> Self {
        Self {
            floor: AtomicI64::new(floor),
            keyed: Default::default(),
            global: std::array::from_fn(|_| AtomicI64::new(floor)),
        }
    }

    /// Records that `keys` changed at `pos` (called by the writer before `pos` becomes visible).
    pub fn record<'a>(&self, keys: impl IntoIterator<Item = &'a ChangeKey>, pos: i64) {
        for key in keys {
            let (kind, id) = match key {
                ChangeKey::Room(r) => (Kind::Room, r),
                ChangeKey::User(u) => (Kind::User, u),
                ChangeKey::Inbox(u) => (Kind::Inbox, u),
                ChangeKey::Notifications(u) => (Kind::Notifications, u),
                ChangeKey::Reads(u) => (Kind::Reads, u),
                ChangeKey::Keys(u) => (Kind::Keys, u),
                ChangeKey::Receipts(r) => (Kind::Receipts, r),
                ChangeKey::DeviceLists => {
                    self.bump_global(Global::DeviceLists, pos);
                    continue;
                }
                ChangeKey::Presence => {
                    self.bump_global(Global::Presence, pos);
                    continue;
                }
                ChangeKey::Credentials => {
                    self.bump_global(Global::Credentials, pos);
                    continue;
                }
            };
            let mut m = self.keyed[kind as usize].write();
            match m.get_mut(id.as_str()) {
                Some(p) => *p = (*p).max(pos),
                None => {
                    m.insert(id.clone(), pos);
                }
            }
        }
    }

    fn bump_global(&self, g: Global, pos: i64) {
        self.global[g as usize].fetch_max(pos, Ordering::SeqCst);
    }

    fn floor(&self) -> i64 {
        self.floor.load(Ordering::SeqCst)
    }

    fn keyed_changed(&self, kind: Kind, id: &str, since: i64) -> bool {
        since < self.floor()
            || self.keyed[kind as usize]
                .read()
                .get(id)
                .is_some_and(|p| *p > since)
    }

    fn global_changed(&self, g: Global, since: i64) -> bool {
        since < self.floor() || self.global[g as usize].load(Ordering::SeqCst) > since
    }

    /// Another process wrote up to `pos` (e.g. `feldpost admin`): what it touched is unknown, so
    /// everything before `pos` counts as maybe changed.
    pub fn forget_before(&self, pos: i64) {
        self.floor.fetch_max(pos, Ordering::SeqCst);
    }

    /// Whether the room's events or receipts may have changed after `since`.
    pub fn room_changed(&self, room_id: &str, since: i64) -> bool {
        self.keyed_changed(Kind::Room, room_id, since)
    }

    /// Whether the room may have new read receipts after `since`.
    pub fn receipts_changed(&self, room_id: &str, since: i64) -> bool {
        self.keyed_changed(Kind::Receipts, room_id, since)
    }

    /// Whether the user's memberships or account data may have changed after `since`.
    pub fn user_changed(&self, user_id: &str, since: i64) -> bool {
        self.keyed_changed(Kind::User, user_id, since)
    }

    /// Whether send-to-device messages may have arrived for the user after `since`.
    pub fn inbox_changed(&self, user_id: &str, since: i64) -> bool {
        self.keyed_changed(Kind::Inbox, user_id, since)
    }

    /// Whether the user may have new notification rows after `since`.
    pub fn notifications_changed(&self, user_id: &str, since: i64) -> bool {
        self.keyed_changed(Kind::Notifications, user_id, since)
    }

    /// Whether the user's read receipts or memberships may have changed after `since`.
    pub fn reads_changed(&self, user_id: &str, since: i64) -> bool {
        self.keyed_changed(Kind::Reads, user_id, since)
    }

    /// Whether the user's one-time or fallback keys may have changed after `since`.
    pub fn keys_changed(&self, user_id: &str, since: i64) -> bool {
        self.keyed_changed(Kind::Keys, user_id, since)
    }

    pub fn device_lists_changed(&self, since: i64) -> bool {
        self.global_changed(Global::DeviceLists, since)
    }

    pub fn presence_changed(&self, since: i64) -> bool {
        self.global_changed(Global::Presence, since)
    }

    /// Whether any credential changed after `since` (then cached authentications are void).
    pub fn credentials_changed(&self, since: i64) -> bool {
        self.global_changed(Global::Credentials, since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_history_is_maybe_changed() {
        let idx = ChangeIndex::new(10);
        assert!(idx.room_changed("!a", 9));
        assert!(!idx.room_changed("!a", 10));
        assert!(idx.user_changed("@u", 3));
        assert!(idx.presence_changed(9));
        assert!(!idx.device_lists_changed(10));
        idx.forget_before(20);
        assert!(idx.room_changed("!a", 19) && idx.credentials_changed(19));
        assert!(!idx.room_changed("!a", 20));
    }

    #[test]
    fn records_the_latest_position() {
        let idx = ChangeIndex::new(0);
        idx.record(
            &[ChangeKey::Room("!a".into()), ChangeKey::User("@u".into())],
            5,
        );
        idx.record(&[ChangeKey::Room("!a".into())], 3);
        assert!(idx.room_changed("!a", 4));
        assert!(!idx.receipts_changed("!a", 0));
        idx.record(&[ChangeKey::Receipts("!a".into())], 6);
        assert!(idx.receipts_changed("!a", 5) && !idx.receipts_changed("!a", 6));
        assert!(!idx.room_changed("!a", 5));
        assert!(!idx.room_changed("!b", 0));
        assert!(idx.user_changed("@u", 4));
        assert!(!idx.user_changed("@v", 0));
        idx.record(&[ChangeKey::DeviceLists, ChangeKey::Presence], 7);
        assert!(idx.device_lists_changed(6) && idx.presence_changed(6));
    }
}

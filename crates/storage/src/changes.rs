//! The change index: for each room and user, the last stream position at which something a sync
//! shows changed. An incremental sync asks it which rooms and which per-user sections can have
//! news, and reads the database only for those — a message wakes 2,000 syncs that each build one
//! room, and a sync that finds nothing new parks without a single query.
//!
//! The writer records a batch's keys *before* it publishes the batch's positions, so a sync that
//! reads the current position and then this index never misses a change at or below it. Positions
//! from before the process started are unknown: any question about them answers "maybe changed".

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::RwLock;

/// What a write touched, as far as `/sync` is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChangeKey {
    /// Events, receipts: everything in a room's section.
    Room(String),
    /// Memberships, account data, send-to-device messages, notification counts of one user.
    User(String),
    /// One-time and fallback keys of one user (uploaded, claimed, dropped with a device).
    Keys(String),
    /// Any device-list change (observers are found by shared rooms, at read time).
    DeviceLists,
    /// Any presence change.
    Presence,
    /// Any access token or account flag that authentication reads (logout, deactivation, admin).
    Credentials,
}

pub struct ChangeIndex {
    /// Positions at or below this are from before the index knew everything (its start, or the
    /// last write by another process).
    floor: AtomicI64,
    rooms: RwLock<HashMap<String, i64>>,
    users: RwLock<HashMap<String, i64>>,
    keys: RwLock<HashMap<String, i64>>,
    device_lists: AtomicI64,
    presence: AtomicI64,
    credentials: AtomicI64,
}

impl ChangeIndex {
    pub fn new(floor: i64) -> Self {
        Self {
            floor: AtomicI64::new(floor),
            rooms: RwLock::default(),
            users: RwLock::default(),
            keys: RwLock::default(),
            device_lists: AtomicI64::new(floor),
            presence: AtomicI64::new(floor),
            credentials: AtomicI64::new(floor),
        }
    }

    /// Records that `keys` changed at `pos` (called by the writer before `pos` becomes visible).
    pub fn record<'a>(&self, keys: impl IntoIterator<Item = &'a ChangeKey>, pos: i64) {
        for key in keys {
            match key {
                ChangeKey::Room(r) => bump(&self.rooms, r, pos),
                ChangeKey::User(u) => bump(&self.users, u, pos),
                ChangeKey::Keys(u) => bump(&self.keys, u, pos),
                ChangeKey::DeviceLists => {
                    self.device_lists.fetch_max(pos, Ordering::SeqCst);
                }
                ChangeKey::Presence => {
                    self.presence.fetch_max(pos, Ordering::SeqCst);
                }
                ChangeKey::Credentials => {
                    self.credentials.fetch_max(pos, Ordering::SeqCst);
                }
            }
        }
    }

    fn floor(&self) -> i64 {
        self.floor.load(Ordering::SeqCst)
    }

    /// Another process wrote up to `pos` (e.g. `feldpost admin`): what it touched is unknown, so
    /// everything before `pos` counts as maybe changed.
    pub fn forget_before(&self, pos: i64) {
        self.floor.fetch_max(pos, Ordering::SeqCst);
    }

    /// Whether the room may have changed after `since`.
    pub fn room_changed(&self, room_id: &str, since: i64) -> bool {
        since < self.floor() || self.rooms.read().get(room_id).is_some_and(|p| *p > since)
    }

    /// Whether the user's own sections (memberships, account data, inbox, counts) may have
    /// changed after `since`.
    pub fn user_changed(&self, user_id: &str, since: i64) -> bool {
        since < self.floor() || self.users.read().get(user_id).is_some_and(|p| *p > since)
    }

    /// Whether the user's one-time or fallback keys may have changed after `since`.
    pub fn keys_changed(&self, user_id: &str, since: i64) -> bool {
        since < self.floor() || self.keys.read().get(user_id).is_some_and(|p| *p > since)
    }

    pub fn device_lists_changed(&self, since: i64) -> bool {
        since < self.floor() || self.device_lists.load(Ordering::SeqCst) > since
    }

    pub fn presence_changed(&self, since: i64) -> bool {
        since < self.floor() || self.presence.load(Ordering::SeqCst) > since
    }

    /// Whether any credential changed after `since` (then cached authentications are void).
    pub fn credentials_changed(&self, since: i64) -> bool {
        since < self.floor() || self.credentials.load(Ordering::SeqCst) > since
    }
}

fn bump(map: &RwLock<HashMap<String, i64>>, key: &str, pos: i64) {
    let mut m = map.write();
    match m.get_mut(key) {
        Some(p) => *p = (*p).max(pos),
        None => {
            m.insert(key.to_owned(), pos);
        }
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
        assert!(!idx.room_changed("!a", 5));
        assert!(!idx.room_changed("!b", 0));
        assert!(idx.user_changed("@u", 4));
        assert!(!idx.user_changed("@v", 0));
        idx.record(&[ChangeKey::DeviceLists, ChangeKey::Presence], 7);
        assert!(idx.device_lists_changed(6) && idx.presence_changed(6));
    }
}

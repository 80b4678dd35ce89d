//! Typing notifications: in memory only, with timeouts. Each change bumps a counter that sync
//! tokens carry; the counter starts at the boot time in milliseconds so that it only grows across
//! restarts and a client's old token never hides a newer change.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::notifier::Notifier;

#[derive(Default)]
struct RoomTyping {
    users: HashMap<String, Instant>,
    /// Counter value of the last change.
    serial: u64,
}

pub struct Typing {
    rooms: Mutex<foldhash::HashMap<String, RoomTyping>>,
    serial: Mutex<u64>,
    notifier: Arc<Notifier>,
}

const MAX_TIMEOUT: Duration = Duration::from_secs(120);

impl Typing {
    pub fn new(notifier: Arc<Notifier>) -> Self {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        Self {
            rooms: Mutex::default(),
            serial: Mutex::new(boot),
            notifier,
        }
    }

    fn bump(&self) -> u64 {
        let mut s = self.serial.lock();
        *s += 1;
        *s
    }

    pub fn current(&self) -> u64 {
        *self.serial.lock()
    }

    pub fn set(&self, room_id: &str, user_id: &str, typing: bool, timeout: Duration) {
        let serial = self.bump();
        let changed = {
            let mut rooms = self.rooms.lock();
            let room = rooms.entry(room_id.to_owned()).or_default();
            let changed = if typing {
                let now = Instant::now();
                // An entry that has expired but not yet been swept counts as absent.
                let was_typing = room.users.get(user_id).is_some_and(|until| *until > now);
                room.users
                    .insert(user_id.to_owned(), now + timeout.min(MAX_TIMEOUT));
                !was_typing
            } else {
                room.users.remove(user_id).is_some()
            };
            if changed {
                room.serial = serial;
            }
            changed
        };
        if changed {
            self.notifier.wake_room(room_id);
        }
    }

    /// Drops expired entries and wakes the rooms that changed; run periodically.
    pub fn expire(&self) {
        let now = Instant::now();
        let mut changed = Vec::new();
        {
            let mut rooms = self.rooms.lock();
            for (room_id, room) in rooms.iter_mut() {
                let before = room.users.len();
                room.users.retain(|_, until| *until > now);
                if room.users.len() != before {
                    changed.push(room_id.clone());
                }
            }
            rooms.retain(|_, r| !r.users.is_empty() || r.serial > 0);
        }
        for room_id in changed {
            let serial = self.bump();
            if let Some(r) = self.rooms.lock().get_mut(&room_id) {
                r.serial = serial;
            }
            self.notifier.wake_room(&room_id);
        }
    }

    /// The users typing in the room if that changed after `since`.
    /// Whether typing in the room changed after `since` (cheaper than [`Self::changed_since`]).
    pub fn changed(&self, room_id: &str, since: u64) -> bool {
        self.rooms
            .lock()
            .get(room_id)
            .is_some_and(|r| r.serial > since)
    }

    pub fn changed_since(&self, room_id: &str, since: u64) -> Option<Vec<String>> {
        let rooms = self.rooms.lock();
        let r = rooms.get(room_id)?;
        if r.serial <= since {
            return None;
        }
        let now = Instant::now();
        let mut users: Vec<String> = r
            .users
            .iter()
            .filter(|(_, t)| **t > now)
            .map(|(u, _)| u.clone())
            .collect();
        users.sort();
        Some(users)
    }
}

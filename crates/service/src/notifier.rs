//! Wakes parked syncs. A sync waits on the keys it can see (its user and each of its rooms) and is
//! woken only when one of them changes, so a message wakes the members of one room, not everyone.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WakeKey {
    User(String),
    Room(String),
}

#[derive(Default)]
struct Slot {
    /// Bumped on every wake, so a subscriber can tell that it missed one.
    version: AtomicU64,
    notify: Notify,
}

#[derive(Default)]
pub struct Notifier {
    slots: Mutex<HashMap<WakeKey, Arc<Slot>>>,
}

/// Interest in a set of keys, taken *before* reading state: a wake between the read and the wait
/// is still seen. (Shutdown reaches parked syncs through the server's shutdown channel, not
/// through a key every sync would share: one slot with every parked sync as a waiter made each
/// park and wake contend on its list.)
pub struct Subscription {
    slots: Vec<(Arc<Slot>, u64)>,
}

impl Notifier {
    pub fn subscribe(&self, keys: impl IntoIterator<Item = WakeKey>) -> Subscription {
        let mut map = self.slots.lock();
        let slots = keys
            .into_iter()
            .map(|k| {
                let s = map.entry(k).or_default().clone();
                let v = s.version.load(Ordering::SeqCst);
                (s, v)
            })
            .collect();
        Subscription { slots }
    }

    pub fn wake(&self, key: &WakeKey) {
        let slot = self.slots.lock().get(key).cloned();
        if let Some(s) = slot {
            s.version.fetch_add(1, Ordering::SeqCst);
            s.notify.notify_waiters();
        }
    }

    pub fn wake_user(&self, user_id: &str) {
        self.wake(&WakeKey::User(user_id.to_owned()));
    }

    pub fn wake_room(&self, room_id: &str) {
        self.wake(&WakeKey::Room(room_id.to_owned()));
    }

    /// Drops slots nobody holds; called periodically.
    pub fn prune(&self) {
        self.slots.lock().retain(|_, s| Arc::strong_count(s) > 1);
    }
}

impl Subscription {
    /// Completes when any subscribed key has been woken since `subscribe`.
    pub async fn wait(&self) {
        let mut futs: Vec<_> = self
            .slots
            .iter()
            .map(|(s, _)| Box::pin(s.notify.notified()))
            .collect();
        for f in &mut futs {
            f.as_mut().enable();
        }
        if self
            .slots
            .iter()
            .any(|(s, v)| s.version.load(Ordering::SeqCst) != *v)
        {
            return;
        }
        futures::future::select_all(futs).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wake_before_wait_is_not_lost() {
        let n = Notifier::default();
        let sub = n.subscribe([WakeKey::Room("!a".into())]);
        n.wake_room("!a");
        tokio::time::timeout(std::time::Duration::from_secs(1), sub.wait())
            .await
            .expect("woken");
    }

    #[tokio::test]
    async fn other_keys_do_not_wake() {
        let n = Notifier::default();
        let sub = n.subscribe([WakeKey::Room("!a".into())]);
        n.wake_room("!b");
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), sub.wait())
                .await
                .is_err()
        );
        n.wake_user("@a");
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), sub.wait())
                .await
                .is_err()
        );
        n.wake_room("!a");
        tokio::time::timeout(std::time::Duration::from_secs(1), sub.wait())
            .await
            .expect("woken by its room");
    }
}

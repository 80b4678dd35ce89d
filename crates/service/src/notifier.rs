//! Wakes parked syncs. A sync waits on the keys it can see (its user and each of its rooms) and is
//! woken only when one of them changes, so a message wakes the members of one room, not everyone.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::fanout::Fanout;

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
    /// Syncs waiting on this slot now: how many a wake reaches (see `fanout`).
    waiting: AtomicUsize,
}

#[derive(Default)]
pub struct Notifier {
    slots: Mutex<HashMap<WakeKey, Arc<Slot>>>,
    fanout: Fanout,
}

/// Interest in a set of keys, taken *before* reading state: a wake between the read and the wait
/// is still seen. (Shutdown reaches parked syncs through the server's shutdown channel, not
/// through a key every sync would share: one slot with every parked sync as a waiter made each
/// park and wake contend on its list.)
pub struct Subscription {
    slots: Interest,
    versions: Vec<u64>,
}

/// A set of keys resolved to their slots. A sync keeps its user's and subscribes again with it
/// after every response: no lock, no key strings, no hashing per key. Slots it holds are never
/// pruned, so a wake of one of its keys always reaches the slot it waits on.
#[derive(Clone)]
pub struct Interest(Arc<[Arc<Slot>]>);

impl Notifier {
    pub fn subscribe(&self, keys: impl IntoIterator<Item = WakeKey>) -> Subscription {
        self.subscribe_to(&self.interest(keys))
    }

    /// Resolves keys to their slots (creating those nobody holds yet).
    pub fn interest(&self, keys: impl IntoIterator<Item = WakeKey>) -> Interest {
        let mut map = self.slots.lock();
        Interest(
            keys.into_iter()
                .map(|k| map.entry(k).or_default().clone())
                .collect(),
        )
    }

    pub fn subscribe_to(&self, interest: &Interest) -> Subscription {
        Subscription {
            versions: interest
                .0
                .iter()
                .map(|s| s.version.load(Ordering::SeqCst))
                .collect(),
            slots: interest.clone(),
        }
    }

    pub fn wake(&self, key: &WakeKey) {
        let slot = self.slots.lock().get(key).cloned();
        if let Some(s) = slot {
            s.version.fetch_add(1, Ordering::SeqCst);
            // Counted before the wake: a woken sync answered at once on another thread must
            // find itself in the count.
            self.fanout.woke(s.waiting.load(Ordering::SeqCst));
            s.notify.notify_waiters();
        }
    }

    /// Bursts of woken syncs, which new long polls let go first.
    pub fn fanout(&self) -> &Fanout {
        &self.fanout
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
        let slots = &self.slots.0;
        let _waiting = Waiting::new(slots);
        let mut futs: Vec<_> = slots
            .iter()
            .map(|s| Box::pin(s.notify.notified()))
            .collect();
        for f in &mut futs {
            f.as_mut().enable();
        }
        if slots
            .iter()
            .zip(&self.versions)
            .any(|(s, v)| s.version.load(Ordering::SeqCst) != *v)
        {
            return;
        }
        if futs.is_empty() {
            // Nothing to wait for: only the caller's deadline or shutdown ends this.
            return std::future::pending().await;
        }
        futures::future::select_all(futs).await;
    }
}

/// Counts a sync among the waiters of its slots while it waits.
struct Waiting<'a>(&'a [Arc<Slot>]);

impl<'a> Waiting<'a> {
    fn new(slots: &'a [Arc<Slot>]) -> Self {
        for s in slots {
            s.waiting.fetch_add(1, Ordering::SeqCst);
        }
        Self(slots)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        for s in self.0 {
            s.waiting.fetch_sub(1, Ordering::SeqCst);
        }
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

    /// A kept interest survives pruning and is woken like a fresh subscription.
    #[tokio::test]
    async fn a_kept_interest_is_woken_after_a_prune() {
        let n = Notifier::default();
        let interest = n.interest([WakeKey::Room("!a".into()), WakeKey::User("@u".into())]);
        n.prune();
        let sub = n.subscribe_to(&interest);
        n.wake_user("@u");
        tokio::time::timeout(std::time::Duration::from_secs(1), sub.wait())
            .await
            .expect("woken through the kept slot");
        let sub = n.subscribe_to(&interest);
        n.wake_room("!b");
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), sub.wait())
                .await
                .is_err()
        );
    }

    /// A wake reaching many waiting syncs starts a burst that new long polls let go first; one
    /// reaching a few does not.
    #[tokio::test]
    async fn a_wake_reaching_many_waiting_syncs_is_a_burst() {
        let n = Arc::new(Notifier::default());
        let mut waiters = Vec::new();
        for i in 0..150 {
            let room = if i < 3 { "!small" } else { "!large" };
            let sub = n.subscribe([WakeKey::Room(room.into())]);
            waiters.push(tokio::spawn(async move { sub.wait().await }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        n.wake_room("!small");
        assert!(!n.fanout().holding());
        n.wake_room("!large");
        assert!(n.fanout().holding());
        for w in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(1), w)
                .await
                .expect("woken")
                .expect("ends");
        }
    }

    /// A burst's count is in place before its syncs wake: those answered at once on the other
    /// thread are counted off it too, so the burst ends with its last answer, not at the limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_ends_with_its_last_answer() {
        const SYNCS: usize = 2_000;
        let n = Arc::new(Notifier::default());
        let interest = n.interest([WakeKey::Room("!large".into())]);
        let mut syncs = Vec::new();
        for _ in 0..SYNCS {
            let sub = n.subscribe_to(&interest);
            let n = n.clone();
            syncs.push(tokio::spawn(async move {
                sub.wait().await;
                drop(n.fanout().ticket());
            }));
        }
        while interest.0[0].waiting.load(Ordering::SeqCst) < SYNCS {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        n.wake_room("!large");
        for s in syncs {
            tokio::time::timeout(std::time::Duration::from_secs(1), s)
                .await
                .expect("woken")
                .expect("ends");
        }
        assert!(
            !n.fanout().holding(),
            "every woken sync was answered, so the burst holds nobody"
        );
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

//! Wakes parked syncs. A sync waits on the keys it can see (its user and each of its rooms) and is
//! woken only when one of them changes, so a message wakes the members of one room, not everyone.
//!
//! It also keeps the backlog of the syncs it woke: a message into a room of 2,000 members wakes
//! 2,000 syncs at once, and work nobody waits for (a long poll that timed out empty, moving
//! notification rows) yields to them until they are likely answered (`quiet`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

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
    /// Syncs waiting on this slot now: a wake tells the backlog how many it woke.
    waiters: AtomicUsize,
}

/// Server time one woken sync takes to answer (build, serialise, send, and its next request),
/// measured under load on two cores (BENCHMARKS.md): about 100 µs.
const RESPONSE_COST: Duration = Duration::from_micros(100);

pub struct Notifier {
    slots: Mutex<HashMap<WakeKey, Arc<Slot>>>,
    /// When the syncs woken so far are likely answered, in microseconds after `origin`: each
    /// wake adds its waiters times `RESPONSE_COST` to the later of now and this.
    backlog_until: AtomicU64,
    origin: Instant,
}

impl Default for Notifier {
    fn default() -> Self {
        Self {
            slots: Mutex::default(),
            backlog_until: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }
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
            let woken = s.waiters.load(Ordering::Relaxed);
            s.notify.notify_waiters();
            self.add_backlog(woken);
        }
    }

    fn micros_now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn add_backlog(&self, woken: usize) {
        if woken == 0 {
            return;
        }
        let cost = (woken as u64).saturating_mul(RESPONSE_COST.as_micros() as u64);
        let now = self.micros_now();
        let _ = self
            .backlog_until
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |until| {
                Some(until.max(now).saturating_add(cost))
            });
    }

    /// Completes once the syncs woken so far are likely answered, and at `latest` at the
    /// latest: work that nobody waits for calls this first, so that it does not take the
    /// cores from a large room's fan-out.
    pub async fn quiet(&self, latest: Instant) {
        loop {
            let until =
                self.origin + Duration::from_micros(self.backlog_until.load(Ordering::Relaxed));
            let now = Instant::now();
            if until <= now || latest <= now {
                return;
            }
            tokio::time::sleep_until(until.min(latest)).await;
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

/// Counts a sync as a waiter of its slots while its `wait` is pending.
struct Waiting<'a>(&'a [Arc<Slot>]);

impl<'a> Waiting<'a> {
    fn new(slots: &'a [Arc<Slot>]) -> Self {
        for s in slots {
            s.waiters.fetch_add(1, Ordering::Relaxed);
        }
        Self(slots)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        for s in self.0 {
            s.waiters.fetch_sub(1, Ordering::Relaxed);
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

    /// Parks `count` syncs on the room.
    async fn park(n: &Arc<Notifier>, room: &str, count: usize) -> Vec<tokio::task::JoinHandle<()>> {
        let before = waiting_on(n, room);
        let parked = (0..count)
            .map(|_| {
                let sub = n.subscribe([WakeKey::Room(room.into())]);
                tokio::spawn(async move { sub.wait().await })
            })
            .collect();
        while waiting_on(n, room) < before + count {
            tokio::task::yield_now().await;
        }
        parked
    }

    fn waiting_on(n: &Notifier, room: &str) -> usize {
        n.slots
            .lock()
            .get(&WakeKey::Room(room.into()))
            .map_or(0, |s| s.waiters.load(Ordering::Relaxed))
    }

    /// A wake of 50 parked syncs holds work that calls `quiet` back for 50 answers' time, and no
    /// longer than the caller's bound. The runtime's clock is paused (it moves only when all
    /// tasks sleep) and its timers tick in milliseconds.
    #[tokio::test(start_paused = true)]
    async fn quiet_waits_for_the_woken_syncs() {
        let n = Arc::new(Notifier::default());
        let start = Instant::now();
        n.quiet(start + Duration::from_secs(1)).await;
        assert_eq!(Instant::now(), start, "nothing woken, nothing to wait for");

        // Syncs parked elsewhere are not woken, so not counted.
        let _small = park(&n, "!small", 20).await;
        let waited = wake_and_quiet(&n, 50, Duration::from_secs(1)).await;
        assert!(waited >= RESPONSE_COST * 50, "{waited:?}");
        assert!(waited < RESPONSE_COST * 70, "{waited:?}");

        let waited = wake_and_quiet(&n, 50, Duration::from_millis(2)).await;
        assert!(waited >= Duration::from_millis(2), "{waited:?}");
        assert!(
            waited < RESPONSE_COST * 50,
            "bounded by the caller: {waited:?}"
        );
    }

    /// Parks `count` syncs on "!big", wakes them, and returns how long `quiet` then held a
    /// caller whose bound is `limit` away.
    async fn wake_and_quiet(n: &Arc<Notifier>, count: usize, limit: Duration) -> Duration {
        let parked = park(n, "!big", count).await;
        n.wake_room("!big");
        for p in parked {
            p.await.expect("woken");
        }
        let woken_at = Instant::now();
        n.quiet(woken_at + limit).await;
        Instant::now() - woken_at
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

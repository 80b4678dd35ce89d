//! Bursts of woken syncs go first. A message into a room of 2,000 members wakes 2,000 parked
//! syncs at once, and each answer brings the client's next long poll straight back. Taken up at
//! once, those new long polls (which almost always only park again) and the long polls that run
//! out meanwhile share the cores with the burst and stretch it; the burst's last recipients wait
//! for all of them. So while a large wake is being answered, new long polls and expiring ones wait
//! for it, at most [`MAX_WAIT`]: the same work in an order that delivers the message sooner.
//!
//! The count of syncs still to answer is approximate (a sync woken through two of its keys counts
//! twice); the time bound keeps a miscount from holding anyone for longer.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Syncs woken by one wake that make it a burst.
const LARGE: usize = 100;
/// The longest a long poll waits for a burst.
const MAX_WAIT: Duration = Duration::from_millis(250);

pub struct Fanout {
    /// Woken syncs of the current burst not answered yet.
    backlog: AtomicUsize,
    /// When the current burst stops holding others (nanoseconds after `base`); in the past when
    /// there is no burst.
    until: AtomicU64,
    base: Instant,
    cleared: Notify,
}

impl Default for Fanout {
    fn default() -> Self {
        Self {
            backlog: AtomicUsize::new(0),
            until: AtomicU64::new(0),
            base: Instant::now(),
            cleared: Notify::new(),
        }
    }
}

impl Fanout {
    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// A wake reached `n` parked syncs.
    pub(crate) fn woke(&self, n: usize) {
        if n == 0 {
            return;
        }
        let now = self.now();
        let running = self.until.load(Ordering::Acquire) > now;
        if n >= LARGE {
            if running {
                self.backlog.fetch_add(n, Ordering::AcqRel);
            } else {
                // A new burst: what an earlier one left miscounted is forgotten.
                let miscounted = self.backlog.swap(n, Ordering::AcqRel);
                tracing::debug!(reached = n, miscounted, "burst");
            }
            self.until
                .store(now + MAX_WAIT.as_nanos() as u64, Ordering::Release);
        } else if running {
            self.backlog.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// A woken sync has been answered, or found nothing for it and parks again.
    pub(crate) fn answered(&self) {
        let before = self
            .backlog
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| b.checked_sub(1));
        if before == Ok(1) {
            let until = self.until.load(Ordering::Acquire);
            let started = until.saturating_sub(MAX_WAIT.as_nanos() as u64);
            let took_ms = self.now().saturating_sub(started) / 1_000_000;
            tracing::debug!(took_ms, "burst answered");
            self.cleared.notify_waiters();
        }
    }

    /// Whether a burst holds new long polls now.
    pub(crate) fn holding(&self) -> bool {
        self.left().is_some()
    }

    fn left(&self) -> Option<Duration> {
        let now = self.now();
        let until = self.until.load(Ordering::Acquire);
        (until > now && self.backlog.load(Ordering::Acquire) > 0)
            .then(|| Duration::from_nanos(until - now))
    }

    /// Completes once no burst is being answered, or after at most [`MAX_WAIT`].
    pub async fn wait_for_burst(&self) {
        while let Some(left) = self.left() {
            let cleared = self.cleared.notified();
            tokio::pin!(cleared);
            cleared.as_mut().enable();
            if !self.holding() {
                return;
            }
            tokio::select! {
                _ = cleared => {}
                _ = tokio::time::sleep(left) => {}
            }
        }
    }

    /// Held by a woken sync until it has been answered.
    pub(crate) fn ticket(&self) -> Ticket<'_> {
        Ticket(self)
    }
}

/// Counts its sync as answered when dropped, whichever way the answer ends.
pub(crate) struct Ticket<'a>(&'a Fanout);

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.0.answered();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_burst_holds_nobody() {
        let f = Fanout::default();
        f.woke(5);
        tokio::time::timeout(Duration::from_millis(50), f.wait_for_burst())
            .await
            .expect("a small wake holds nobody");
    }

    #[tokio::test]
    async fn a_burst_holds_until_answered() {
        let f = std::sync::Arc::new(Fanout::default());
        f.woke(LARGE);
        assert!(f.holding());
        let waiter = {
            let f = f.clone();
            tokio::spawn(async move { f.wait_for_burst().await })
        };
        for _ in 0..LARGE - 1 {
            drop(f.ticket());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one woken sync is still unanswered");
        drop(f.ticket());
        tokio::time::timeout(Duration::from_millis(100), waiter)
            .await
            .expect("released when the last one is answered")
            .expect("the waiter ends");
    }

    #[tokio::test]
    async fn a_miscounted_burst_holds_at_most_the_bound() {
        let f = Fanout::default();
        f.woke(LARGE);
        let start = Instant::now();
        f.wait_for_burst().await;
        assert!(start.elapsed() >= MAX_WAIT - Duration::from_millis(5));
        // Answers beyond the count change nothing.
        f.answered();
        assert!(!f.holding());
    }
}

//! The newest notification rows of each user, kept in memory by the writer as it commits them.
//!
//! When push evaluation stores the rows for a message into a room of 2,000 members, each of those
//! members' syncs wakes a second time to learn its new unread count, and asks two things: which
//! rooms have new rows since my token, and what do they add to my cached count. Answered by the
//! database, the second question read every unread row of the user in that room — hundreds for
//! someone who never reads a busy room — and both were a hop to a reader thread. Here they are a
//! look at a few rows in memory.
//!
//! As with the event tails, the writer applies a batch's rows *before* it publishes the batch's
//! position, so a reader that takes the current position and then asks never misses a row at or
//! below it. Each user's tail knows the position after which it is complete; a question reaching
//! further back goes to the database. Bounded by rows: the oldest leave first.
//!
//! Room notifications (one for all members of a large room, see `NewRoomNotification`) have tails
//! of their own, per room, under the same rules; a member's count adds those the member has no
//! row of their own for.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::ThreadCount;

/// Rows held in total (about 150 bytes each).
const MAX_ROWS: usize = 100_000;
/// Rows held per user at most.
const PER_USER: usize = 64;
/// Room notifications held in total, and per room.
const MAX_ROOM_ROWS: usize = 20_000;
const PER_ROOM: usize = 64;

/// A notification row as the tails keep it.
#[derive(Debug, Clone)]
pub(crate) struct TailRow {
    pub user_id: String,
    pub room_id: String,
    pub thread_id: String,
    pub notify: bool,
    pub highlight: bool,
    /// Position of the event the row is about (compared with read receipts).
    pub event_stream: i64,
    /// Position at which the row was written.
    pub stream: i64,
}

/// A room notification as the tails keep it; its position is its event's.
#[derive(Debug, Clone)]
pub(crate) struct RoomTailRow {
    pub room_id: String,
    pub sender: String,
    pub thread_id: String,
    pub highlight: bool,
    pub event_stream: i64,
}

/// A change for the tails, collected during a write and applied when it commits.
#[derive(Debug, Clone)]
pub(crate) enum NotificationChange {
    Row(TailRow),
    Room(RoomTailRow),
    /// Rows were deleted (a room purged): forget every tail.
    ForgetAll,
}

pub(crate) struct RecentNotifications {
    inner: Mutex<Inner>,
}

struct Inner {
    users: HashMap<Arc<str>, Tail>,
    /// (user, position) in commit order, for eviction by age.
    order: VecDeque<(Arc<str>, i64)>,
    rows: usize,
    /// A user without a tail has no rows in memory after this position: everything before it
    /// may exist only in the database (written before start, or evicted since).
    floor: i64,
    /// The same three for room notifications.
    rooms: HashMap<Arc<str>, RoomTail>,
    room_order: VecDeque<(Arc<str>, i64)>,
    room_floor: i64,
}

struct RoomTail {
    /// Every room notification with a position above this is in `rows`.
    complete_after: i64,
    rows: VecDeque<RoomRow>,
}

struct RoomRow {
    sender: Arc<str>,
    thread_id: Arc<str>,
    highlight: bool,
    event_stream: i64,
}

struct Tail {
    /// Every row of the user with a position above this is in `rows`.
    complete_after: i64,
    rows: VecDeque<Row>,
}

struct Row {
    room_id: Arc<str>,
    thread_id: Arc<str>,
    notify: bool,
    highlight: bool,
    event_stream: i64,
    stream: i64,
}

impl RecentNotifications {
    /// Tails that know nothing at or before `position` (the store's position when opened).
    pub(crate) fn new(position: i64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                users: HashMap::new(),
                order: VecDeque::new(),
                rows: 0,
                floor: position,
                rooms: HashMap::new(),
                room_order: VecDeque::new(),
                room_floor: position,
            }),
        }
    }

    /// Applies a committed batch's changes, whose positions end at `last`; called before that
    /// position is published.
    pub(crate) fn apply(&self, changes: Vec<NotificationChange>, last: i64) {
        if changes.is_empty() {
            return;
        }
        let mut inner = self.inner.lock();
        for change in changes {
            match change {
                NotificationChange::Row(r) => inner.push(r),
                NotificationChange::Room(r) => inner.push_room(r),
                NotificationChange::ForgetAll => inner.reset(last),
            }
        }
        inner.evict();
    }

    /// Forgets everything up to `position` (another process wrote to the database).
    pub(crate) fn clear(&self, position: i64) {
        self.inner.lock().reset(position);
    }

    /// Rooms in which the user has rows written in `(after, up_to]`, or `None` when the tails
    /// cannot tell.
    pub(crate) fn rooms_changed(&self, user: &str, after: i64, up_to: i64) -> Option<Vec<String>> {
        let inner = self.inner.lock();
        let rows = inner.rows_after(user, after)?;
        let mut rooms: Vec<String> = rows
            .filter(|r| r.stream <= up_to)
            .map(|r| r.room_id.to_string())
            .collect();
        rooms.sort();
        rooms.dedup();
        Some(rooms)
    }

    /// What notifications written in `(after, up_to]` add to the user's unread counts in the
    /// room, per thread — the same answer as the database's windowed count — or `None` when the
    /// tails cannot tell. Room notifications count only for a `member` (joined before `floor`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn counts(
        &self,
        user: &str,
        room: &str,
        floor: i64,
        thread_floors: &[(String, i64)],
        after: i64,
        up_to: i64,
        member: bool,
    ) -> Option<Vec<ThreadCount>> {
        let inner = self.inner.lock();
        let own: Vec<&Row> = inner
            .rows_after(user, after)?
            .filter(|r| r.stream <= up_to && &*r.room_id == room)
            .collect();
        let shared = if member {
            Some(inner.room_rows_after(room, after)?)
        } else {
            None
        };
        // A thread's own receipt may be further along than the unthreaded one.
        let floor_of = |thread: &str| {
            thread_floors
                .iter()
                .find(|(t, _)| t.as_str() == thread)
                .map_or(floor, |(_, s)| (*s).max(floor))
        };
        let mut counts: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for r in &own {
            if !r.notify || r.event_stream <= floor_of(&r.thread_id) {
                continue;
            }
            let c = counts.entry(&*r.thread_id).or_default();
            c.0 += 1;
            c.1 += u64::from(r.highlight);
        }
        for b in shared.into_iter().flatten() {
            // A row of the user's own for the event replaces the room's.
            if b.event_stream > up_to
                || &*b.sender == user
                || b.event_stream <= floor_of(&b.thread_id)
                || own.iter().any(|r| r.event_stream == b.event_stream)
            {
                continue;
            }
            let c = counts.entry(&*b.thread_id).or_default();
            c.0 += 1;
            c.1 += u64::from(b.highlight);
        }
        Some(
            counts
                .into_iter()
                .map(|(thread, (n, h))| ThreadCount {
                    thread_id: thread.to_owned(),
                    notifications: n,
                    highlights: h,
                })
                .collect(),
        )
    }
}

impl Inner {
    /// The user's rows written after `after`, or `None` if some may be missing.
    fn rows_after<'a>(
        &'a self,
        user: &str,
        after: i64,
    ) -> Option<Box<dyn Iterator<Item = &'a Row> + 'a>> {
        match self.users.get(user) {
            Some(tail) if tail.complete_after <= after => Some(Box::new(
                tail.rows.iter().rev().take_while(move |r| r.stream > after),
            )),
            Some(_) => None,
            None if self.floor <= after => Some(Box::new(std::iter::empty())),
            None => None,
        }
    }

    /// The room notifications written after `after`, or `None` if some may be missing.
    fn room_rows_after<'a>(
        &'a self,
        room: &str,
        after: i64,
    ) -> Option<Box<dyn Iterator<Item = &'a RoomRow> + 'a>> {
        match self.rooms.get(room) {
            Some(tail) if tail.complete_after <= after => Some(Box::new(
                tail.rows
                    .iter()
                    .rev()
                    .take_while(move |r| r.event_stream > after),
            )),
            Some(_) => None,
            None if self.room_floor <= after => Some(Box::new(std::iter::empty())),
            None => None,
        }
    }

    fn push_room(&mut self, row: RoomTailRow) {
        let room: Arc<str> = match self.rooms.get_key_value(row.room_id.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(row.room_id.as_str()),
        };
        let floor = self.room_floor;
        let tail = self.rooms.entry(room.clone()).or_insert_with(|| RoomTail {
            complete_after: floor.min(row.event_stream - 1),
            rows: VecDeque::new(),
        });
        if tail
            .rows
            .back()
            .is_some_and(|b| b.event_stream >= row.event_stream)
        {
            // Out of order cannot happen with one writer; never guess, start this room over.
            tail.rows.clear();
            tail.complete_after = row.event_stream - 1;
        }
        tail.rows.push_back(RoomRow {
            sender: Arc::from(row.sender.as_str()),
            thread_id: Arc::from(row.thread_id.as_str()),
            highlight: row.highlight,
            event_stream: row.event_stream,
        });
        if tail.rows.len() > PER_ROOM
            && let Some(old) = tail.rows.pop_front()
        {
            tail.complete_after = tail.complete_after.max(old.event_stream);
        }
        self.room_order.push_back((room, row.event_stream));
    }

    fn push(&mut self, row: TailRow) {
        let user: Arc<str> = match self.users.get_key_value(row.user_id.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(row.user_id.as_str()),
        };
        let floor = self.floor;
        let tail = self.users.entry(user.clone()).or_insert_with(|| Tail {
            // Nothing of this user is in memory: complete since the floor, or since just before
            // this row if the floor is (impossibly) not behind it.
            complete_after: floor.min(row.stream - 1),
            rows: VecDeque::new(),
        });
        if tail.rows.back().is_some_and(|b| b.stream > row.stream) {
            // Out of order cannot happen with one writer; never guess, start this user over.
            self.rows -= tail.rows.len();
            tail.rows.clear();
            tail.complete_after = row.stream - 1;
        }
        // Rows of one user in one room share the room id's allocation.
        let room_id = tail
            .rows
            .iter()
            .rev()
            .find(|r| &*r.room_id == row.room_id.as_str())
            .map_or_else(|| Arc::from(row.room_id.as_str()), |r| r.room_id.clone());
        tail.rows.push_back(Row {
            room_id,
            thread_id: Arc::from(row.thread_id.as_str()),
            notify: row.notify,
            highlight: row.highlight,
            event_stream: row.event_stream,
            stream: row.stream,
        });
        self.rows += 1;
        if tail.rows.len() > PER_USER
            && let Some(old) = tail.rows.pop_front()
        {
            tail.complete_after = tail.complete_after.max(old.stream);
            self.rows -= 1;
        }
        self.order.push_back((user, row.stream));
    }

    fn reset(&mut self, position: i64) {
        self.users.clear();
        self.order.clear();
        self.rows = 0;
        self.floor = self.floor.max(position);
        self.rooms.clear();
        self.room_order.clear();
        self.room_floor = self.room_floor.max(position);
    }

    /// Drops the oldest rows until within budget. `order` may name rows that already left
    /// (through `PER_USER`); those entries are skipped.
    fn evict(&mut self) {
        // `room_order` has an entry per room notification ever held; once over budget, the
        // oldest are dropped with everything in their room up to them.
        while self.room_order.len() > MAX_ROOM_ROWS {
            let Some((room, stream)) = self.room_order.pop_front() else {
                break;
            };
            let Some(tail) = self.rooms.get_mut(&room) else {
                continue;
            };
            while tail.rows.front().is_some_and(|r| r.event_stream <= stream) {
                if let Some(old) = tail.rows.pop_front() {
                    tail.complete_after = tail.complete_after.max(old.event_stream);
                }
            }
            if tail.rows.is_empty() {
                self.room_floor = self.room_floor.max(tail.complete_after);
                self.rooms.remove(&room);
            }
        }
        while self.rows > MAX_ROWS || self.order.len() > 2 * MAX_ROWS {
            let Some((user, stream)) = self.order.pop_front() else {
                break;
            };
            let Some(tail) = self.users.get_mut(&user) else {
                continue;
            };
            while tail.rows.front().is_some_and(|r| r.stream <= stream) {
                if let Some(old) = tail.rows.pop_front() {
                    tail.complete_after = tail.complete_after.max(old.stream);
                    self.rows -= 1;
                }
            }
            if tail.rows.is_empty() {
                // A user without a tail is judged by the floor, which must then cover what
                // this tail had dropped.
                self.floor = self.floor.max(tail.complete_after);
                self.users.remove(&user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: &str, room: &str, thread: &str, event_stream: i64, stream: i64) -> TailRow {
        TailRow {
            user_id: user.into(),
            room_id: room.into(),
            thread_id: thread.into(),
            notify: true,
            highlight: false,
            event_stream,
            stream,
        }
    }

    #[test]
    fn knows_only_what_came_after_it_opened() {
        let t = RecentNotifications::new(10);
        assert_eq!(t.rooms_changed("@a:x", 9, 20), None);
        assert_eq!(t.rooms_changed("@a:x", 10, 20), Some(vec![]));
        t.apply(
            vec![NotificationChange::Row(row("@a:x", "!r:x", "main", 11, 12))],
            12,
        );
        assert_eq!(t.rooms_changed("@a:x", 10, 12), Some(vec!["!r:x".into()]));
        assert_eq!(t.rooms_changed("@a:x", 12, 12), Some(vec![]));
        assert_eq!(t.rooms_changed("@a:x", 10, 11), Some(vec![]));
        assert_eq!(t.rooms_changed("@a:x", 9, 12), None);
    }

    #[test]
    fn counts_follow_receipts_and_threads() {
        let t = RecentNotifications::new(0);
        let mut hl = row("@a:x", "!r:x", "main", 3, 4);
        hl.highlight = true;
        let mut silent = row("@a:x", "!r:x", "main", 7, 8);
        silent.notify = false;
        t.apply(
            vec![
                NotificationChange::Row(row("@a:x", "!r:x", "main", 1, 2)),
                NotificationChange::Row(hl),
                NotificationChange::Row(row("@a:x", "!r:x", "$root", 5, 6)),
                NotificationChange::Row(silent),
                NotificationChange::Row(row("@a:x", "!other:x", "main", 9, 10)),
            ],
            10,
        );
        let c = t.counts("@a:x", "!r:x", 1, &[], 0, 10, true).unwrap();
        let main = c.iter().find(|c| c.thread_id == "main").unwrap();
        assert_eq!((main.notifications, main.highlights), (1, 1));
        let thread = c.iter().find(|c| c.thread_id == "$root").unwrap();
        assert_eq!(thread.notifications, 1);
        // The thread's own receipt covers its row; the window excludes the first two rows.
        let c = t
            .counts("@a:x", "!r:x", 0, &[("$root".into(), 5)], 0, 10, true)
            .unwrap();
        assert!(c.iter().all(|c| c.thread_id == "main"));
        let c = t.counts("@a:x", "!r:x", 0, &[], 4, 10, true).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].thread_id, "$root");
    }

    #[test]
    fn eviction_and_purges_move_the_marks() {
        let t = RecentNotifications::new(0);
        let n = PER_USER as i64 + 5;
        t.apply(
            (1..=n)
                .map(|i| NotificationChange::Row(row("@a:x", "!r:x", "main", i, i)))
                .collect(),
            n,
        );
        // The oldest rows left the user's tail: only recent windows are answered.
        assert_eq!(t.rooms_changed("@a:x", 2, n), None);
        assert_eq!(t.rooms_changed("@a:x", 5, n), Some(vec!["!r:x".into()]));
        t.apply(vec![NotificationChange::ForgetAll], n + 1);
        assert_eq!(t.rooms_changed("@a:x", 5, n + 1), None);
        assert_eq!(t.rooms_changed("@a:x", n + 1, n + 1), Some(vec![]));
        assert_eq!(t.rooms_changed("@b:x", n, n + 1), None);
    }

    fn room_row(room: &str, sender: &str, event_stream: i64) -> NotificationChange {
        NotificationChange::Room(RoomTailRow {
            room_id: room.into(),
            sender: sender.into(),
            thread_id: "main".into(),
            highlight: false,
            event_stream,
        })
    }

    #[test]
    fn room_notifications_count_for_members_but_the_sender_and_the_excepted() {
        let t = RecentNotifications::new(0);
        let mut silent = row("@b:x", "!r:x", "main", 2, 2);
        silent.notify = false;
        t.apply(
            vec![
                room_row("!r:x", "@s:x", 1),
                room_row("!r:x", "@s:x", 2),
                NotificationChange::Row(silent),
                room_row("!r:x", "@a:x", 3),
                room_row("!other:x", "@s:x", 4),
            ],
            4,
        );
        let total = |user: &str, floor: i64, member: bool| {
            t.counts(user, "!r:x", floor, &[], 0, 4, member)
                .map(|c| c.iter().map(|c| c.notifications).sum::<u64>())
        };
        assert_eq!(total("@a:x", 0, true), Some(2), "not its own");
        assert_eq!(total("@b:x", 0, true), Some(2), "not the excepted");
        assert_eq!(total("@c:x", 0, true), Some(3));
        assert_eq!(total("@c:x", 1, true), Some(2), "after the floor");
        assert_eq!(total("@c:x", 0, false), Some(0), "members only");
    }

    #[test]
    fn room_tails_know_only_their_recent_notifications() {
        let t = RecentNotifications::new(10);
        assert!(t.counts("@a:x", "!r:x", 0, &[], 9, 20, true).is_none());
        let n = PER_ROOM as i64 + 5;
        t.apply(
            (11..=10 + n).map(|i| room_row("!r:x", "@s:x", i)).collect(),
            10 + n,
        );
        // The oldest left the room's tail: only recent windows are answered.
        assert!(t.counts("@a:x", "!r:x", 0, &[], 12, 10 + n, true).is_none());
        let recent = t.counts("@a:x", "!r:x", 0, &[], n, 10 + n, true);
        assert_eq!(recent.map(|c| c[0].notifications), Some(10));
        // A window a non-member asks about needs no room tail.
        assert!(
            t.counts("@a:x", "!r:x", 0, &[], 12, 10 + n, false)
                .is_some()
        );
        t.apply(vec![NotificationChange::ForgetAll], 11 + n);
        assert!(t.counts("@a:x", "!r:x", 0, &[], n, 11 + n, true).is_none());
    }

    #[test]
    fn the_global_budget_drops_whole_users_and_raises_the_floor() {
        let t = RecentNotifications::new(0);
        let users = MAX_ROWS / 2 + 10;
        let mut changes = Vec::new();
        for i in 0..users {
            let s = 2 * i as i64 + 1;
            let u = format!("@u{i}:x");
            changes.push(NotificationChange::Row(row(&u, "!r:x", "main", s, s)));
            changes.push(NotificationChange::Row(row(&u, "!r:x", "main", s, s + 1)));
        }
        let last = 2 * users as i64;
        t.apply(changes, last);
        // The first users were dropped whole; asking about them from before their rows is
        // unknown, asking about a newer window is answered.
        assert_eq!(t.rooms_changed("@u0:x", 0, last), None);
        assert_eq!(t.rooms_changed("@u0:x", 40, last), Some(vec![]));
        let newest = format!("@u{}:x", users - 1);
        assert_eq!(t.rooms_changed(&newest, 0, last), Some(vec!["!r:x".into()]));
    }
}

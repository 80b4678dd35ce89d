//! The newest events of each room, kept in memory by the writer as it commits them. Every sync a
//! message wakes asks "the room's events after my token"; in a room of 2,000 members that is
//! 2,000 identical queries, each a hop to a reader thread. The tail answers them from memory.
//!
//! Like the change index, the writer applies a batch's events here *before* it publishes the
//! batch's position, so a reader that takes the current position and then asks the tail never
//! misses an event at or below it. A room's tail knows the position after which it is complete;
//! a question reaching further back goes to the database. A room without a tail had no event
//! since the floor (the position when the store opened, raised as tails are dropped), so a quiet
//! room's first message is answered from memory too. Bounded by bytes: the oldest events (across
//! all rooms) leave first.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::{EventFilter, StoredEvent};

/// What the tails may hold in total (JSON and identifiers, approximately).
const BUDGET_BYTES: usize = 32 << 20;
/// Events kept per room at most: more than a sync timeline shows.
const PER_ROOM: usize = 64;
/// Entries of the eviction queue at most (some name events already gone).
const MAX_ORDER: usize = 200_000;

/// A change for the tails, collected during a write and applied when it commits.
#[derive(Debug, Clone)]
pub(crate) enum RecentChange {
    Event(StoredEvent),
    /// An event's content was removed (its JSON replaced by the redacted form).
    Redacted {
        room_id: String,
        event_id: String,
        json: String,
        redacted_by: String,
    },
    /// The room's events were deleted.
    Forget(String),
}

pub(crate) struct RecentEvents {
    inner: Mutex<Inner>,
}

struct Inner {
    rooms: HashMap<Arc<str>, Tail>,
    /// (room, position) in commit order, for eviction by age.
    order: VecDeque<(Arc<str>, i64)>,
    /// The size of the events in `rooms`.
    bytes: usize,
    /// A room without a tail has no event in memory after this position: anything before it
    /// may exist only in the database (written before the store opened, or evicted since).
    floor: i64,
}

struct Tail {
    /// Every event of the room with a position above this is in `events`.
    complete_after: i64,
    events: VecDeque<Cached>,
}

struct Cached {
    event: StoredEvent,
    contains_url: bool,
}

fn size_of(e: &StoredEvent) -> usize {
    e.json.len()
        + e.event_id.len()
        + e.room_id.len()
        + e.sender.len()
        + e.event_type.len()
        + e.unsigned.as_ref().map_or(0, String::len)
        + 160
}

/// Whether the stored column `contains_url` would be set (see `persist`).
pub(crate) fn contains_url(json: &str) -> bool {
    json.contains("\"url\":")
}

impl RecentEvents {
    /// Tails that know nothing at or before `position` (the store's position when opened).
    pub(crate) fn new(position: i64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                rooms: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
                floor: position,
            }),
        }
    }

    /// Applies a committed batch's changes; called before its position is published.
    pub(crate) fn apply(&self, changes: Vec<RecentChange>) {
        if changes.is_empty() {
            return;
        }
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        for change in changes {
            match change {
                RecentChange::Event(e) => inner.push(e),
                RecentChange::Redacted {
                    room_id,
                    event_id,
                    json,
                    redacted_by,
                } => {
                    if let Some(tail) = inner.rooms.get_mut(room_id.as_str())
                        && let Some(c) = tail
                            .events
                            .iter_mut()
                            .find(|c| c.event.event_id == event_id)
                    {
                        let before = size_of(&c.event);
                        c.event.json = json;
                        c.event.redacted_by = Some(redacted_by);
                        c.contains_url = false;
                        let after = size_of(&c.event);
                        inner.bytes = (inner.bytes + after).saturating_sub(before);
                    }
                }
                RecentChange::Forget(room) => inner.forget(&room),
            }
        }
        inner.evict();
    }

    /// Forgets everything up to `position` (another process wrote to the database).
    pub(crate) fn clear(&self, position: i64) {
        let mut inner = self.inner.lock();
        inner.rooms.clear();
        inner.order.clear();
        inner.bytes = 0;
        inner.floor = inner.floor.max(position);
    }

    /// The newest `limit` events of the room with `after < position <= before` that pass the
    /// filter, newest first — or `None` when the tail cannot tell (the database must answer).
    pub(crate) fn backward(
        &self,
        room_id: &str,
        before: i64,
        after: i64,
        limit: u32,
        filter: &EventFilter,
    ) -> Option<Vec<StoredEvent>> {
        let matcher = Matcher::new(filter)?;
        let inner = self.inner.lock();
        let Some(tail) = inner.rooms.get(room_id) else {
            // No event of the room since the floor.
            return (inner.floor <= after).then(Vec::new);
        };
        let mut out = Vec::new();
        for c in tail.events.iter().rev() {
            if c.event.stream > before {
                continue;
            }
            if c.event.stream <= after || out.len() >= limit as usize {
                break;
            }
            if matcher.matches(c) {
                out.push(c.event.clone());
            }
        }
        // Complete if the tail reaches back to `after`, or if it already held `limit` matches
        // (anything older would not be returned anyway).
        (tail.complete_after <= after || out.len() >= limit as usize).then_some(out)
    }
}

impl Inner {
    fn push(&mut self, event: StoredEvent) {
        let room: Arc<str> = match self.rooms.get_key_value(event.room_id.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(event.room_id.as_str()),
        };
        let stream = event.stream;
        self.bytes += size_of(&event);
        let floor = self.floor;
        let tail = self.rooms.entry(room.clone()).or_insert_with(|| Tail {
            // The room had no event since the floor (or it would have a tail).
            complete_after: floor.min(stream - 1),
            events: VecDeque::new(),
        });
        let mut dropped = 0;
        if tail.events.back().is_some_and(|b| b.event.stream >= stream) {
            // Out of order cannot happen with one writer; never guess, start this room over.
            dropped += tail
                .events
                .drain(..)
                .map(|c| size_of(&c.event))
                .sum::<usize>();
            tail.complete_after = stream - 1;
        }
        tail.events.push_back(Cached {
            contains_url: contains_url(&event.json),
            event,
        });
        if tail.events.len() > PER_ROOM
            && let Some(old) = tail.events.pop_front()
        {
            tail.complete_after = old.event.stream;
            dropped += size_of(&old.event);
        }
        self.bytes = self.bytes.saturating_sub(dropped);
        self.order.push_back((room, stream));
    }

    fn forget(&mut self, room: &str) {
        if let Some(tail) = self.rooms.remove(room) {
            let size: usize = tail.events.iter().map(|c| size_of(&c.event)).sum();
            self.bytes = self.bytes.saturating_sub(size);
        }
    }

    /// Drops the oldest events until within budget. `order` may name events that already left
    /// (through `PER_ROOM` or a forgotten room); those entries are skipped.
    fn evict(&mut self) {
        while self.bytes > BUDGET_BYTES || self.order.len() > MAX_ORDER {
            let Some((room, stream)) = self.order.pop_front() else {
                self.bytes = 0;
                return;
            };
            let Some(tail) = self.rooms.get_mut(&room) else {
                continue;
            };
            if tail
                .events
                .front()
                .is_some_and(|c| c.event.stream == stream)
                && let Some(old) = tail.events.pop_front()
            {
                self.bytes = self.bytes.saturating_sub(size_of(&old.event));
                tail.complete_after = tail.complete_after.max(stream);
                if tail.events.is_empty() {
                    // A room without a tail is judged by the floor, which must then cover
                    // what this tail dropped.
                    self.floor = self.floor.max(tail.complete_after);
                    self.rooms.remove(&room);
                }
            }
        }
    }
}

/// The event filter of a timeline, evaluated in memory with the semantics of the SQL version
/// (`filter_sql`): exact names, or `*` as a wildcard in type patterns.
struct Matcher<'a> {
    f: &'a EventFilter,
}

impl<'a> Matcher<'a> {
    /// `None` for patterns the SQL glob reads differently from a plain `*` wildcard.
    fn new(f: &'a EventFilter) -> Option<Self> {
        let odd = |p: &String| p.contains('*') && (p.contains('?') || p.contains('['));
        let types = f.types.iter().flatten().chain(f.not_types.iter());
        if types.clone().any(odd) {
            return None;
        }
        Some(Self { f })
    }

    fn matches(&self, c: &Cached) -> bool {
        let e = &c.event;
        let type_in = |list: &[String]| list.iter().any(|p| type_matches(p, &e.event_type));
        if let Some(types) = &self.f.types
            && !type_in(types)
        {
            return false;
        }
        if type_in(&self.f.not_types) {
            return false;
        }
        if let Some(senders) = &self.f.senders
            && !senders.iter().any(|s| s == &e.sender)
        {
            return false;
        }
        if self.f.not_senders.iter().any(|s| s == &e.sender) {
            return false;
        }
        match self.f.contains_url {
            Some(want) => c.contains_url == want,
            None => true,
        }
    }
}

fn type_matches(pattern: &str, value: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == value;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !value.starts_with(first) || value.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &value[first.len()..];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(room: &str, stream: i64, kind: &str, sender: &str) -> StoredEvent {
        StoredEvent {
            event_id: format!("$e{stream}"),
            room_id: room.into(),
            stream,
            json: "{}".into(),
            unsigned: None,
            event_type: kind.into(),
            sender: sender.into(),
            state_key: None,
            state_group_before: None,
            state_group_after: None,
            redacted_by: None,
            txn: None,
        }
    }

    fn streams(v: Option<Vec<StoredEvent>>) -> Option<Vec<i64>> {
        v.map(|v| v.iter().map(|e| e.stream).collect())
    }

    #[test]
    fn answers_only_what_it_knows_completely() {
        let r = RecentEvents::new(9);
        r.apply(vec![
            RecentChange::Event(ev("!a", 10, "m.room.message", "@x")),
            RecentChange::Event(ev("!b", 11, "m.room.message", "@x")),
            RecentChange::Event(ev("!a", 12, "m.room.message", "@y")),
        ]);
        let all = EventFilter::default();
        assert_eq!(
            streams(r.backward("!a", 12, 9, 10, &all)),
            Some(vec![12, 10])
        );
        assert_eq!(streams(r.backward("!a", 11, 9, 10, &all)), Some(vec![10]));
        // Before the tail began: unknown, unless `limit` matches were found first.
        assert_eq!(streams(r.backward("!a", 12, 5, 10, &all)), None);
        assert_eq!(streams(r.backward("!a", 12, 5, 1, &all)), Some(vec![12]));
        // A room without events since the floor: known to be quiet, but not before the floor.
        assert_eq!(streams(r.backward("!c", 12, 5, 1, &all)), None);
        assert_eq!(streams(r.backward("!c", 12, 9, 1, &all)), Some(vec![]));
        let senders = EventFilter {
            senders: Some(vec!["@y".into()]),
            ..Default::default()
        };
        assert_eq!(
            streams(r.backward("!a", 12, 9, 10, &senders)),
            Some(vec![12])
        );
        // A purged room's events are gone from the database as well.
        r.apply(vec![RecentChange::Forget("!a".into())]);
        assert_eq!(streams(r.backward("!a", 12, 9, 10, &all)), Some(vec![]));
        r.clear(20);
        assert_eq!(streams(r.backward("!b", 30, 19, 10, &all)), None);
        assert_eq!(streams(r.backward("!b", 30, 20, 10, &all)), Some(vec![]));
    }

    #[test]
    fn redaction_replaces_the_cached_json() {
        let r = RecentEvents::new(0);
        let mut e = ev("!a", 3, "m.room.message", "@x");
        e.json = r#"{"content":{"url":"mxc://a/b"}}"#.into();
        r.apply(vec![RecentChange::Event(e)]);
        let urls = EventFilter {
            contains_url: Some(true),
            ..Default::default()
        };
        assert_eq!(streams(r.backward("!a", 3, 2, 5, &urls)), Some(vec![3]));
        r.apply(vec![RecentChange::Redacted {
            room_id: "!a".into(),
            event_id: "$e3".into(),
            json: "{}".into(),
            redacted_by: "$r".into(),
        }]);
        assert_eq!(streams(r.backward("!a", 3, 2, 5, &urls)), Some(vec![]));
        let got = r
            .backward("!a", 3, 2, 5, &EventFilter::default())
            .unwrap_or_default();
        assert_eq!(got[0].redacted_by.as_deref(), Some("$r"));
    }

    #[test]
    fn per_room_bound_moves_the_complete_mark() {
        let r = RecentEvents::new(0);
        let events = (1..=(PER_ROOM as i64 + 5))
            .map(|s| RecentChange::Event(ev("!a", s, "m.room.message", "@x")))
            .collect();
        r.apply(events);
        let all = EventFilter::default();
        assert!(r.backward("!a", 1000, 0, 1000, &all).is_none());
        assert_eq!(
            r.backward("!a", 1000, 5, 1000, &all).map(|v| v.len()),
            Some(PER_ROOM)
        );
    }

    #[test]
    fn type_patterns() {
        assert!(type_matches("m.room.*", "m.room.message"));
        assert!(type_matches("*", "x"));
        assert!(type_matches("m.*.message", "m.room.message"));
        assert!(!type_matches("m.*.topic", "m.room.message"));
        assert!(!type_matches("m.room.message", "m.room.messages"));
        assert!(type_matches("a*a", "aa"));
        assert!(!type_matches("ab*ba", "aba"));
    }
}

//! Stored events by id, kept as they were read. The same few events are read again and again:
//! a room's create, power-levels and join-rules events by every member's initial sync (its
//! state section), the senders' member events by push evaluation. From SQLite each costs an
//! index walk and a row lookup on a reader thread.
//!
//! An event never changes after it is written except by a redaction or by a purge of its room.
//! The writer applies both here at commit, before it publishes the position (as it does for the
//! tails in `recent`). A read that raced such a change must not put its older copy back: every
//! change raises a version, and a reader fills in what it read only if the version it saw
//! before reading is still current.
//!
//! Bounded by bytes in two generations: a full young generation becomes the old one, and the
//! old one is dropped; a hit in the old generation moves the event back to the young one.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::StoredEvent;
use crate::recent::RecentChange;

/// Bytes (JSON and identifiers, approximately) per generation; two generations at most.
const GENERATION_BYTES: usize = 16 << 20;

pub(crate) struct EventRows {
    inner: Mutex<Inner>,
    generation_bytes: usize,
}

#[derive(Default)]
struct Inner {
    young: HashMap<String, Arc<StoredEvent>>,
    old: HashMap<String, Arc<StoredEvent>>,
    young_bytes: usize,
    /// Raised by every change of stored events (redaction, purge, another process's write).
    version: u64,
}

fn size_of(e: &StoredEvent) -> usize {
    e.json.len()
        + 2 * e.event_id.len()
        + e.room_id.len()
        + e.sender.len()
        + e.event_type.len()
        + e.unsigned.as_ref().map_or(0, String::len)
        + e.state_key.as_ref().map_or(0, String::len)
        + 200
}

impl EventRows {
    pub(crate) fn new() -> Self {
        Self::with_generation_bytes(GENERATION_BYTES)
    }

    fn with_generation_bytes(generation_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            generation_bytes,
        }
    }

    /// The version to hand back to [`Self::fill`] with what is read next.
    pub(crate) fn version(&self) -> u64 {
        self.inner.lock().version
    }

    /// The cached events among `ids`, and the ids that were not cached.
    pub(crate) fn get_many(&self, ids: &[String]) -> (Vec<StoredEvent>, Vec<String>) {
        let mut found = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        let mut inner = self.inner.lock();
        for id in ids {
            match inner.get(id) {
                Some(e) => found.push((*e).clone()),
                None => missing.push(id.clone()),
            }
        }
        (found, missing)
    }

    pub(crate) fn get(&self, id: &str) -> Option<StoredEvent> {
        self.inner.lock().get(id).map(|e| (*e).clone())
    }

    /// Keeps events read from the database, unless a change came in since `version` was taken.
    pub(crate) fn fill(&self, version: u64, events: &[StoredEvent]) {
        if events.is_empty() {
            return;
        }
        let mut inner = self.inner.lock();
        if inner.version != version {
            return;
        }
        for e in events {
            inner.insert(Arc::new(e.clone()), self.generation_bytes);
        }
    }

    /// Applies a committed batch's changes: a redacted event leaves, a purge empties the cache.
    pub(crate) fn apply(&self, changes: &[RecentChange]) {
        let relevant = changes.iter().any(|c| !matches!(c, RecentChange::Event(_)));
        if !relevant {
            return;
        }
        let mut inner = self.inner.lock();
        inner.version += 1;
        for change in changes {
            match change {
                RecentChange::Event(_) => {}
                RecentChange::Redacted { event_id, .. } => {
                    inner.young.remove(event_id.as_str());
                    inner.old.remove(event_id.as_str());
                }
                // Purges are rare; the cache is not indexed by room.
                RecentChange::Forget(_) => inner.clear(),
            }
        }
    }

    /// Forgets everything (another process wrote to the database).
    pub(crate) fn clear(&self) {
        let mut inner = self.inner.lock();
        inner.version += 1;
        inner.clear();
    }
}

impl Inner {
    fn get(&mut self, id: &str) -> Option<Arc<StoredEvent>> {
        if let Some(e) = self.young.get(id) {
            return Some(e.clone());
        }
        let (key, e) = self.old.remove_entry(id)?;
        self.young_bytes += size_of(&e);
        self.young.insert(key, e.clone());
        Some(e)
    }

    fn insert(&mut self, e: Arc<StoredEvent>, generation_bytes: usize) {
        if self.young.contains_key(e.event_id.as_str()) {
            return;
        }
        if self.young_bytes >= generation_bytes {
            self.old = std::mem::take(&mut self.young);
            self.young_bytes = 0;
        }
        self.old.remove(e.event_id.as_str());
        self.young_bytes += size_of(&e);
        self.young.insert(e.event_id.clone(), e);
    }

    fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
        self.young_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, json: &str) -> StoredEvent {
        StoredEvent {
            event_id: id.into(),
            room_id: "!r:x".into(),
            stream: 1,
            json: json.into(),
            unsigned: None,
            event_type: "m.room.message".into(),
            sender: "@a:x".into(),
            state_key: None,
            state_group_before: None,
            state_group_after: None,
            redacted_by: None,
            txn: None,
        }
    }

    #[test]
    fn filled_events_are_found_and_others_reported_missing() {
        let rows = EventRows::new();
        rows.fill(rows.version(), &[event("$a", "{}"), event("$b", "{}")]);
        let (found, missing) = rows.get_many(&["$a".into(), "$c".into(), "$b".into()]);
        let mut ids: Vec<_> = found.iter().map(|e| e.event_id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["$a", "$b"]);
        assert_eq!(missing, ["$c"]);
        assert!(rows.get("$a").is_some());
        assert!(rows.get("$c").is_none());
    }

    #[test]
    fn a_redaction_removes_the_event_and_stops_a_racing_fill() {
        let rows = EventRows::new();
        rows.fill(rows.version(), &[event("$a", r#"{"old":1}"#)]);
        // A reader takes the version, then reads the old row while the redaction commits.
        let seen = rows.version();
        rows.apply(&[RecentChange::Redacted {
            room_id: "!r:x".into(),
            event_id: "$a".into(),
            json: "{}".into(),
            redacted_by: "$r".into(),
        }]);
        assert!(rows.get("$a").is_none());
        rows.fill(seen, &[event("$a", r#"{"old":1}"#)]);
        assert!(rows.get("$a").is_none(), "a stale read must not come back");
        // A read after the change fills again.
        rows.fill(rows.version(), &[event("$a", "{}")]);
        assert_eq!(rows.get("$a").map(|e| e.json), Some("{}".to_owned()));
    }

    #[test]
    fn new_events_change_nothing_and_a_purge_empties_the_cache() {
        let rows = EventRows::new();
        let v = rows.version();
        rows.fill(v, &[event("$a", "{}")]);
        rows.apply(&[RecentChange::Event(event("$n", "{}"))]);
        assert_eq!(rows.version(), v, "appending events invalidates nothing");
        assert!(rows.get("$a").is_some());
        rows.apply(&[RecentChange::Forget("!r:x".into())]);
        assert!(rows.get("$a").is_none());
        rows.fill(rows.version(), &[event("$a", "{}")]);
        rows.clear();
        assert!(rows.get("$a").is_none());
    }

    #[test]
    fn bounded_by_bytes_in_two_generations() {
        let one = size_of(&event("$0000", "{}"));
        // Room for ten events per generation.
        let rows = EventRows::with_generation_bytes(10 * one);
        for i in 0..100 {
            rows.fill(rows.version(), &[event(&format!("${i:04}"), "{}")]);
            let inner = rows.inner.lock();
            assert!(inner.young.len() + inner.old.len() <= 21);
        }
        // The newest are kept, the oldest gone.
        assert!(rows.get("$0099").is_some());
        assert!(rows.get("$0000").is_none());
        // A hit in the old generation survives the next turnover.
        let old_id = {
            let inner = rows.inner.lock();
            inner.old.keys().next().cloned()
        };
        let Some(old_id) = old_id else {
            panic!("the old generation is filled");
        };
        assert!(rows.get(&old_id).is_some());
        for i in 100..105 {
            rows.fill(rows.version(), &[event(&format!("${i:04}"), "{}")]);
        }
        assert!(rows.get(&old_id).is_some());
    }
}

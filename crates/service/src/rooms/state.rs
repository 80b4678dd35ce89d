//! Room state snapshots: state groups stored as deltas, resolved to full maps and cached.

use std::collections::HashMap;
use std::sync::Arc;

use feldpost_storage::{NewStateGroup, StateEntry};
use ruma::OwnedEventId;

use super::Rooms;
use crate::{Error, Result};

/// `(event type, state key) -> event id`.
pub type StateMap = HashMap<(String, String), OwnedEventId>;

/// A delta chain longer than this is cut by writing a full snapshot.
const MAX_CHAIN: i64 = 100;
/// State entries (over all cached maps) kept in memory: maps of large rooms hold thousands of
/// entries each, so the bound is on entries, not maps.
const CACHE_ENTRY_LIMIT: usize = 1_000_000;

/// Full state maps by state group, in two generations bounded by entries. Like the parsed-event
/// cache (`generations`): a cache that was cleared when full made every busy room rebuild its
/// state from the database at the same moment; now a full young generation becomes the old one,
/// and a map read from the old one moves back.
#[derive(Default)]
pub(crate) struct StateCache {
    young: HashMap<i64, Arc<StateMap>>,
    young_entries: usize,
    old: HashMap<i64, Arc<StateMap>>,
}

/// What a full young generation pushed out, for the caller to drop outside its lock.
pub(crate) type Dropped = Option<HashMap<i64, Arc<StateMap>>>;

impl StateCache {
    pub(crate) fn get(&mut self, group: &i64) -> (Option<Arc<StateMap>>, Dropped) {
        if let Some(m) = self.young.get(group) {
            return (Some(m.clone()), None);
        }
        match self.old.remove(group) {
            Some(m) => {
                let dropped = self.insert(*group, m.clone());
                (Some(m), dropped)
            }
            None => (None, None),
        }
    }

    pub(crate) fn insert(&mut self, group: i64, map: Arc<StateMap>) -> Dropped {
        if let Some(old) = self.young.remove(&group) {
            self.young_entries -= old.len();
        }
        let mut dropped = None;
        if !self.young.is_empty() && self.young_entries + map.len() > CACHE_ENTRY_LIMIT / 2 {
            let young = std::mem::take(&mut self.young);
            dropped = Some(std::mem::replace(&mut self.old, young));
            self.young_entries = 0;
        }
        self.old.remove(&group);
        self.young_entries += map.len();
        self.young.insert(group, map);
        dropped
    }
}

impl Rooms {
    /// The full state of a state group.
    pub async fn state_map(&self, group: i64) -> Result<Arc<StateMap>> {
        if let Some(m) = self.cached_state(group) {
            return Ok(m);
        }
        // One load per group at a time: when a thousand members of a room sync at once, the
        // first builds the map and the others find it cached instead of each building a copy.
        // Groups share a few locks by number, so loads of different rooms rarely wait.
        let stripe = group.rem_euclid(self.state_loading.len() as i64) as usize;
        let _loading = self.state_loading[stripe].lock().await;
        if let Some(m) = self.cached_state(group) {
            return Ok(m);
        }
        // Walk back to a cached or full group, then apply the deltas forward.
        let records = self.store.state_group_chain(group).await?;
        match records.last() {
            None => return Err(Error::internal(format!("state group {group} missing"))),
            Some(r) if r.prev.is_some() => {
                return Err(Error::internal(format!(
                    "state group chain of {group} broken"
                )));
            }
            Some(_) => {}
        }
        let mut chain = Vec::new();
        let mut base: Option<Arc<StateMap>> = None;
        for rec in records {
            if let Some(m) = self.cached_state(rec.id) {
                base = Some(m);
                break;
            }
            chain.push(rec);
        }
        let mut map = base.map(|b| (*b).clone()).unwrap_or_default();
        for rec in chain.iter().rev() {
            for e in &rec.entries {
                let id = OwnedEventId::try_from(e.event_id.as_str())
                    .map_err(|_| Error::internal("bad state event id"))?;
                map.insert((e.event_type.clone(), e.state_key.clone()), id);
            }
        }
        let map = Arc::new(map);
        self.cache_state(group, map.clone());
        Ok(map)
    }

    fn cached_state(&self, group: i64) -> Option<Arc<StateMap>> {
        let (hit, dropped) = self.state_cache.lock().get(&group);
        // A generation that had to leave is freed here, outside the lock.
        drop(dropped);
        hit
    }

    pub(crate) fn cache_state(&self, group: i64, map: Arc<StateMap>) {
        let dropped = self.state_cache.lock().insert(group, map);
        drop(dropped);
    }

    /// The group record to write for the state after a state event.
    pub(crate) fn next_state_group(
        prev_group: Option<i64>,
        prev_chain: i64,
        after: &StateMap,
        changed: (&str, &str, &str),
    ) -> NewStateGroup {
        match prev_group {
            Some(prev) if prev_chain < MAX_CHAIN => NewStateGroup {
                prev: Some(prev),
                chain_len: prev_chain + 1,
                entries: vec![StateEntry {
                    event_type: changed.0.to_owned(),
                    state_key: changed.1.to_owned(),
                    event_id: changed.2.to_owned(),
                }],
            },
            _ => NewStateGroup {
                prev: None,
                chain_len: 0,
                entries: after
                    .iter()
                    .map(|((t, k), id)| StateEntry {
                        event_type: t.clone(),
                        state_key: k.clone(),
                        event_id: id.to_string(),
                    })
                    .collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(n: usize) -> Arc<StateMap> {
        let id = OwnedEventId::try_from("$e:x").expect("event id");
        Arc::new(
            (0..n)
                .map(|i| (("m.room.member".to_owned(), format!("@u{i}:x")), id.clone()))
                .collect(),
        )
    }

    #[test]
    fn maps_in_use_survive_a_full_generation() {
        let mut c = StateCache::default();
        let half = CACHE_ENTRY_LIMIT / 2;
        c.insert(1, map(10));
        // Fill the young generation; group 1 moves to the old one but is still there.
        assert!(c.insert(2, map(half - 10)).is_none());
        assert!(
            c.insert(3, map(5)).is_some(),
            "the full young generation became the old one"
        );
        assert!(
            c.get(&1).0.is_some(),
            "read from the old generation, moved back"
        );
        // Two more full generations without reading group 2: it leaves.
        let _ = c.insert(4, map(half));
        let _ = c.insert(5, map(half));
        assert!(c.get(&2).0.is_none());
        assert!(c.get(&5).0.is_some());
        // Re-inserting a group does not count it twice.
        let before = c.young_entries;
        let _ = c.insert(5, map(half));
        assert_eq!(c.young_entries, before);
    }
}

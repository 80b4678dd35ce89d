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

/// Full state maps by state group.
#[derive(Default)]
pub(crate) struct StateCache {
    maps: std::collections::HashMap<i64, Arc<StateMap>>,
    entries: usize,
}

impl StateCache {
    pub(crate) fn get(&self, group: &i64) -> Option<&Arc<StateMap>> {
        self.maps.get(group)
    }

    pub(crate) fn insert(&mut self, group: i64, map: Arc<StateMap>) {
        if self.entries + map.len() > CACHE_ENTRY_LIMIT {
            self.maps.clear();
            self.entries = 0;
        }
        self.entries += map.len();
        if let Some(old) = self.maps.insert(group, map) {
            self.entries -= old.len();
        }
    }
}

impl Rooms {
    /// The full state of a state group.
    pub async fn state_map(&self, group: i64) -> Result<Arc<StateMap>> {
        if let Some(m) = self.state_cache.lock().get(&group) {
            return Ok(m.clone());
        }
        // One load per group at a time: when a thousand members of a room sync at once, the
        // first builds the map and the others find it cached instead of each building a copy.
        // Groups share a few locks by number, so loads of different rooms rarely wait.
        let stripe = group.rem_euclid(self.state_loading.len() as i64) as usize;
        let _loading = self.state_loading[stripe].lock().await;
        if let Some(m) = self.state_cache.lock().get(&group) {
            return Ok(m.clone());
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
            if let Some(m) = self.state_cache.lock().get(&rec.id) {
                base = Some(m.clone());
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
        self.state_cache.lock().insert(group, map.clone());
        Ok(map)
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

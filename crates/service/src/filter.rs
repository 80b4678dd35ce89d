//! Filters (`POST /user/{userId}/filter`, inline `filter=` on sync and /messages), parsed into
//! what the services apply.

use std::sync::Arc;

use feldpost_storage::{EventFilter, Store};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::generations::Generations;
use crate::{Error, ErrorKind, Result};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RoomEventFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_types: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub senders: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_senders: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_rooms: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contains_url: Option<bool>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub lazy_load_members: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub include_redundant_members: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unread_thread_notifications: bool,
}

impl RoomEventFilter {
    pub fn to_storage(&self) -> EventFilter {
        EventFilter {
            types: self.types.clone(),
            not_types: self.not_types.clone(),
            senders: self.senders.clone(),
            not_senders: self.not_senders.clone(),
            contains_url: self.contains_url,
        }
    }

    /// Whether events of this type can pass at all (ephemeral events have no single sender).
    /// Whether the filter may hide some events of a room it allows.
    pub fn hides_events(&self) -> bool {
        self.types.is_some()
            || !self.not_types.is_empty()
            || self.senders.is_some()
            || !self.not_senders.is_empty()
            || self.contains_url.is_some()
    }

    pub fn type_allowed(&self, kind: &str) -> bool {
        let type_match = |pattern: &String| match pattern.strip_suffix('*') {
            Some(prefix) => kind.starts_with(prefix),
            None => pattern == kind,
        };
        self.types.as_ref().is_none_or(|t| t.iter().any(type_match))
            && !self.not_types.iter().any(type_match)
    }

    /// Whether an event of this type from this sender passes (for in-memory filtering).
    pub fn matches(&self, kind: &str, sender: &str) -> bool {
        let type_match = |pattern: &String| {
            if let Some(prefix) = pattern.strip_suffix('*') {
                kind.starts_with(prefix)
            } else {
                pattern == kind
            }
        };
        if let Some(t) = &self.types
            && !t.iter().any(type_match)
        {
            return false;
        }
        if self.not_types.iter().any(type_match) {
            return false;
        }
        if let Some(s) = &self.senders
            && !s.iter().any(|x| x == sender)
        {
            return false;
        }
        !self.not_senders.iter().any(|x| x == sender)
    }

    pub fn room_allowed(&self, room_id: &str) -> bool {
        if let Some(r) = &self.rooms
            && !r.iter().any(|x| x == room_id)
        {
            return false;
        }
        !self.not_rooms.iter().any(|x| x == room_id)
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RoomFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_rooms: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub include_leave: bool,
    pub timeline: RoomEventFilter,
    pub state: RoomEventFilter,
    pub ephemeral: RoomEventFilter,
    pub account_data: RoomEventFilter,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Filter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_fields: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_format: Option<String>,
    pub presence: RoomEventFilter,
    pub account_data: RoomEventFilter,
    pub room: RoomFilter,
}

impl Filter {
    pub fn room_allowed(&self, room_id: &str) -> bool {
        if let Some(r) = &self.room.rooms
            && !r.iter().any(|x| x == room_id)
        {
            return false;
        }
        !self.room.not_rooms.iter().any(|x| x == room_id)
    }
}

/// Parses a filter given as JSON text; it must be an object.
pub fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if !v.is_object() {
        return Err("a filter must be a JSON object".into());
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// Inline filters per generation: clients send few distinct ones.
const FILTERS_CACHED: usize = 4_096;

/// Stored filters per generation: each user uploads their own, and a client names its id in
/// every long poll, so the cache holds one entry per syncing user. An entry is its key and a
/// pointer: users whose filters have the same JSON share one parsed filter.
const STORED_FILTERS_CACHED: usize = 100_000;

/// The filters syncs name, parsed once and shared. Every long poll names its filter again, as a
/// stored filter's id or as inline JSON; reading and parsing it each time cost a database read
/// (for an id) and a parse, and each of tens of thousands of parked syncs held its own copy.
/// A stored filter never changes (an upload makes a new id), so its parsed form stays valid.
pub struct Filters {
    store: Arc<dyn Store>,
    default: Arc<Filter>,
    stored: Mutex<Generations<(String, String), Arc<Filter>>>,
    inline: Mutex<Generations<String, Arc<Filter>>>,
}

impl Filters {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            default: Arc::new(Filter::default()),
            stored: Mutex::new(Generations::new(STORED_FILTERS_CACHED)),
            inline: Mutex::new(Generations::new(FILTERS_CACHED)),
        }
    }

    /// The filter a sync's `filter` parameter names: none, inline JSON, or a stored filter's id.
    pub async fn for_sync(&self, user: &str, param: Option<&str>) -> Result<Arc<Filter>> {
        let Some(f) = param else {
            return Ok(self.default.clone());
        };
        if f.trim_start().starts_with(['{', '[', '"']) {
            let (hit, dropped) = self.inline.lock().get(f);
            drop(dropped);
            if let Some(hit) = hit {
                return Ok(hit);
            }
            let parsed: Filter =
                parse_json(f).map_err(|e| Error::invalid_param(format!("Invalid filter: {e}")))?;
            let parsed = Arc::new(parsed);
            let dropped = self.inline.lock().insert(f.to_owned(), parsed.clone());
            drop(dropped);
            return Ok(parsed);
        }
        let key = (user.to_owned(), f.to_owned());
        let (hit, dropped) = self.stored.lock().get(&key);
        drop(dropped);
        if let Some(hit) = hit {
            return Ok(hit);
        }
        let json = self
            .store
            .get_filter(user, f)
            .await?
            .ok_or_else(|| Error::not_found("Unknown filter"))?;
        // Shared by content with other users' filters of the same JSON (and inline ones).
        let (shared, dropped) = self.inline.lock().get(&json);
        drop(dropped);
        let parsed = match shared {
            Some(p) => p,
            None => {
                let parsed: Filter = serde_json::from_str(&json)
                    .map_err(|_| Error::new(ErrorKind::Unknown, "Stored filter unreadable"))?;
                let parsed = Arc::new(parsed);
                let dropped = self.inline.lock().insert(json, parsed.clone());
                drop(dropped);
                parsed
            }
        };
        let dropped = self.stored.lock().insert(key, parsed.clone());
        drop(dropped);
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stored filters are cached per (user, id) and shared by content: thousands of users who
    /// upload the same filter hold one parsed copy.
    #[tokio::test]
    async fn stored_filters_with_the_same_json_share_one_parse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(
            feldpost_storage::sqlite::SqliteStore::open(&dir.path().join("db.sqlite"))
                .expect("open"),
        );
        let json = r#"{"room":{"timeline":{"limit":5}}}"#;
        let a = store.put_filter("@a:x", json).await.expect("put");
        let b = store.put_filter("@b:x", json).await.expect("put");
        let other = store
            .put_filter("@b:x", r#"{"room":{"timeline":{"limit":6}}}"#)
            .await
            .expect("put");
        let filters = Filters::new(store);
        let fa = filters.for_sync("@a:x", Some(&a)).await.expect("a");
        let fb = filters.for_sync("@b:x", Some(&b)).await.expect("b");
        assert!(Arc::ptr_eq(&fa, &fb));
        assert_eq!(fa.room.timeline.limit, Some(5));
        let fo = filters.for_sync("@b:x", Some(&other)).await.expect("other");
        assert_eq!(fo.room.timeline.limit, Some(6));
        // A filter id names a filter of the user who uploaded it only.
        assert!(filters.for_sync("@a:x", Some(&other)).await.is_err());
    }
}

//! Filters (`POST /user/{userId}/filter`, inline `filter=` on sync and /messages), parsed into
//! what the services apply.

use feldpost_storage::EventFilter;
use serde::{Deserialize, Serialize};

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

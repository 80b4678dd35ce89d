//! `Pdu`: an event as the room DAG holds it, parsed from its canonical JSON. Implements the
//! `Event` trait of ruma's state-res so the authorization rules can run on it, and renders the
//! client-facing format.

use std::sync::Arc;

use feldpost_storage::StoredEvent;
use ruma::events::TimelineEventType;
use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId,
    RoomId, UInt, UserId,
};
use serde::Deserialize;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub kind: TimelineEventType,
    pub content: Box<RawValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
    pub depth: UInt,
    /// Room version 12 create events carry no `room_id`: the room id is derived from them.
    pub room_id_in_json: bool,
    /// The full PDU, as stored.
    pub json: Arc<str>,
}

#[derive(Deserialize)]
struct PduFields {
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawValue>,
    state_key: Option<String>,
    #[serde(default)]
    prev_events: Vec<OwnedEventId>,
    #[serde(default)]
    auth_events: Vec<OwnedEventId>,
    redacts: Option<OwnedEventId>,
    depth: UInt,
    room_id: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct RedactsInContent {
    redacts: Option<OwnedEventId>,
}

impl Pdu {
    /// Parses a PDU from its JSON; `event_id` and `room_id` come from where it is stored because
    /// they are not (always) part of the JSON.
    pub fn parse(event_id: OwnedEventId, room_id: OwnedRoomId, json: &str) -> Result<Self> {
        let f: PduFields = serde_json::from_str(json)
            .map_err(|e| Error::internal(format!("stored event {event_id} unreadable: {e}")))?;
        let redacts = match f.redacts {
            Some(r) => Some(r),
            None if f.kind == TimelineEventType::RoomRedaction => {
                serde_json::from_str::<RedactsInContent>(f.content.get())
                    .ok()
                    .and_then(|c| c.redacts)
            }
            None => None,
        };
        Ok(Self {
            event_id,
            room_id,
            sender: f.sender,
            origin_server_ts: f.origin_server_ts,
            kind: f.kind,
            content: f.content,
            state_key: f.state_key,
            prev_events: f.prev_events,
            auth_events: f.auth_events,
            redacts,
            depth: f.depth,
            room_id_in_json: f.room_id.is_some(),
            json: Arc::from(json),
        })
    }

    pub fn from_stored(e: &StoredEvent) -> Result<Self> {
        let event_id = OwnedEventId::try_from(e.event_id.as_str())
            .map_err(|_| Error::internal("bad stored event id"))?;
        let room_id = OwnedRoomId::try_from(e.room_id.as_str())
            .map_err(|_| Error::internal("bad stored room id"))?;
        Self::parse(event_id, room_id, &e.json)
    }

    pub fn content_value(&self) -> Value {
        serde_json::from_str(self.content.get()).unwrap_or(Value::Object(Map::new()))
    }

    pub fn canonical_object(&self) -> Result<CanonicalJsonObject> {
        serde_json::from_str(&self.json)
            .map_err(|e| Error::internal(format!("stored event not canonical: {e}")))
    }

    /// The event in the client-server format, without `unsigned`.
    pub fn to_client_value(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("content".into(), self.content_value());
        m.insert("event_id".into(), Value::String(self.event_id.to_string()));
        m.insert(
            "origin_server_ts".into(),
            Value::from(u64::from(self.origin_server_ts.get())),
        );
        m.insert("room_id".into(), Value::String(self.room_id.to_string()));
        m.insert("sender".into(), Value::String(self.sender.to_string()));
        m.insert("type".into(), Value::String(self.kind.to_string()));
        if let Some(k) = &self.state_key {
            m.insert("state_key".into(), Value::String(k.clone()));
        }
        if let Some(r) = &self.redacts {
            m.insert("redacts".into(), Value::String(r.to_string()));
        }
        m
    }
}

/// An event in the client format, serialized straight from its PDU: a message into a large room
/// is rendered for every member it wakes, and building a JSON tree of each copy (the content
/// parsed again) only to write it out cost more than the rest of the answer. Only `unsigned`
/// differs between viewers.
pub struct ClientEvent {
    pdu: Arc<Pdu>,
    unsigned: Map<String, Value>,
}

impl ClientEvent {
    pub fn new(pdu: Arc<Pdu>, unsigned: Map<String, Value>) -> Self {
        Self { pdu, unsigned }
    }

    pub fn kind(&self) -> &TimelineEventType {
        &self.pdu.kind
    }
}

/// The same fields as `Pdu::to_client_value`, and `unsigned`.
impl Serialize for ClientEvent {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let p = &*self.pdu;
        let mut m = s.serialize_map(None)?;
        // Stored as canonical JSON, so written as it is.
        m.serialize_entry("content", &p.content)?;
        m.serialize_entry("event_id", p.event_id.as_str())?;
        m.serialize_entry("origin_server_ts", &u64::from(p.origin_server_ts.get()))?;
        if let Some(r) = &p.redacts {
            m.serialize_entry("redacts", r.as_str())?;
        }
        m.serialize_entry("room_id", p.room_id.as_str())?;
        m.serialize_entry("sender", p.sender.as_str())?;
        if let Some(k) = &p.state_key {
            m.serialize_entry("state_key", k)?;
        }
        m.serialize_entry("type", &p.kind)?;
        m.serialize_entry("unsigned", &self.unsigned)?;
        m.end()
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.room_id_in_json.then_some(&*self.room_id)
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written straight from the PDU, an event reads exactly as its JSON tree does.
    #[test]
    fn a_client_event_reads_as_its_json_tree() {
        let json = r#"{"auth_events":["$a"],"content":{"body":"h\u00e9 \"x\"","n":[1,{"k":null}]},"depth":4,"origin_server_ts":1700000000000,"prev_events":["$p"],"redacts":"$r","room_id":"!r:h","sender":"@u:h","state_key":"","type":"m.room.topic"}"#;
        let pdu = Pdu::parse(
            OwnedEventId::try_from("$e").unwrap(),
            OwnedRoomId::try_from("!r:h").unwrap(),
            json,
        )
        .unwrap();
        let mut unsigned = Map::new();
        unsigned.insert("age".into(), Value::from(5));
        unsigned.insert("transaction_id".into(), Value::from("t1"));
        let mut expected = pdu.to_client_value();
        expected.insert("unsigned".into(), Value::Object(unsigned.clone()));
        let event = ClientEvent::new(Arc::new(pdu), unsigned);
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            Value::Object(expected)
        );
        assert_eq!(event.kind(), &TimelineEventType::RoomTopic);
    }
}

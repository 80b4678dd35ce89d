//! Building, signing, authorizing and storing a new local event.

use std::collections::HashMap;
use std::sync::Arc;

use feldpost_storage::{MembershipUpdate, NewEvent, NewRoom, RelationUpdate};
use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue, redact};
use ruma::events::TimelineEventType;
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId, UserId,
};
use serde_json::{Value, json};

use super::{RoomTip, Rooms, StateMap};
use crate::pdu::Pdu;
use crate::{Error, ErrorKind, Result};

/// The largest PDU the spec allows.
const MAX_PDU_BYTES: usize = 65_536;
/// At most this many prev_events per PDU (the spec's limit for v3+ is 20).
const MAX_PREV_EVENTS: usize = 20;

/// An event a local user (or the server on their behalf) wants to add to a room.
#[derive(Debug, Clone)]
pub struct NewPdu {
    pub kind: String,
    pub content: Value,
    pub state_key: Option<String>,
    pub redacts: Option<OwnedEventId>,
    /// `(device_id, txn_id)` for idempotent client sends.
    pub txn: Option<(String, String)>,
}

impl NewPdu {
    pub fn state(kind: &str, state_key: &str, content: Value) -> Self {
        Self {
            kind: kind.into(),
            content,
            state_key: Some(state_key.into()),
            redacts: None,
            txn: None,
        }
    }
    pub fn message(kind: &str, content: Value) -> Self {
        Self {
            kind: kind.into(),
            content,
            state_key: None,
            redacts: None,
            txn: None,
        }
    }
}

/// Checks the content of the state events that authorization and server logic read, so that a malformed one
/// is a `M_BAD_JSON` for the client rather than an authorization failure later.
fn validate_state_content(kind: &str, content: &Value) -> Result<()> {
    use ruma::events::room;
    fn check<T: serde::de::DeserializeOwned>(kind: &str, content: &Value) -> Result<()> {
        serde_json::from_value::<T>(content.clone())
            .map(|_| ())
            .map_err(|e| Error::bad_json(format!("invalid {kind} content: {e}")))
    }
    match kind {
        "m.room.power_levels" => {
            check::<room::power_levels::RoomPowerLevelsEventContent>(kind, content)
        }
        "m.room.join_rules" => check::<room::join_rules::RoomJoinRulesEventContent>(kind, content),
        "m.room.member" => check::<room::member::RoomMemberEventContent>(kind, content),
        "m.room.history_visibility" => {
            check::<room::history_visibility::RoomHistoryVisibilityEventContent>(kind, content)
        }
        "m.room.guest_access" => {
            check::<room::guest_access::RoomGuestAccessEventContent>(kind, content)
        }
        "m.room.canonical_alias" => {
            check::<room::canonical_alias::RoomCanonicalAliasEventContent>(kind, content)
        }
        "m.room.encryption" => check::<room::encryption::RoomEncryptionEventContent>(kind, content),
        _ => Ok(()),
    }
}

fn to_canonical(v: Value) -> Result<CanonicalJsonValue> {
    CanonicalJsonValue::try_from(v)
        .map_err(|e| Error::bad_json(format!("content is not canonical JSON: {e}")))
}

impl Rooms {
    /// Creates the room record and appends its `m.room.create` event. Returns the room id (which
    /// for room version 12 is derived from the create event).
    pub async fn append_create(
        &self,
        sender: &UserId,
        version: &RoomVersionId,
        content: Value,
    ) -> Result<(OwnedRoomId, Arc<Pdu>)> {
        let rules = version.rules().ok_or_else(|| {
            Error::new(
                ErrorKind::UnsupportedRoomVersion,
                "Unsupported room version",
            )
        })?;
        let room_id = if rules.authorization.room_create_event_id_as_room_id {
            None
        } else {
            Some(RoomId::new_v1(&self.server_name))
        };
        let tip = RoomTip {
            version: version.clone(),
            extremities: vec![],
            max_depth: 0,
            state_group: None,
            chain_len: 0,
            state: Arc::new(StateMap::new()),
        };
        let pdu = self
            .build(
                room_id.as_deref(),
                sender,
                &tip,
                NewPdu::state("m.room.create", "", content),
                None,
            )
            .await?;
        let room_id = pdu.room_id.clone();
        let lock = self.room_lock(&room_id);
        let _guard = lock.lock().await;
        self.store
            .create_room(NewRoom {
                room_id: room_id.to_string(),
                room_version: version.to_string(),
                creator: sender.to_string(),
                created_ms: now_ms(),
            })
            .await
            .map_err(|_| Error::new(ErrorKind::RoomInUse, "Room already exists"))?;
        let (pdu, _) = self.authorize_and_store(&tip, pdu, None).await?;
        Ok((room_id, pdu))
    }

    /// Appends an event from a local user to an existing room: builds, signs, authorizes and
    /// stores it. Returns the PDU and its stream position.
    pub async fn append(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        new: NewPdu,
    ) -> Result<(Arc<Pdu>, i64)> {
        let lock = self.room_lock(room_id);
        let _guard = lock.lock().await;
        // A retried transaction id is recognised when storing (see `persist_event`).
        let tip = self
            .tip(room_id)
            .await?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        let txn = new.txn.clone();
        let pdu = self.build(Some(room_id), sender, &tip, new, None).await?;
        let stored = self
            .authorize_and_store(
                &tip,
                pdu,
                txn.clone().map(|(d, t)| (sender.to_string(), d, t)),
            )
            .await;
        match (stored, txn) {
            // A retry that would no longer be allowed (the sender left, say) still answers
            // with the event its first attempt stored.
            (Err(e), Some((device, txn))) => {
                match self
                    .store
                    .event_for_txn(sender.as_str(), &device, &txn)
                    .await?
                    .and_then(|id| OwnedEventId::try_from(id).ok())
                {
                    Some(id) => match self.pdu(&id).await? {
                        Some(pdu) => Ok((pdu, -1)),
                        None => Err(e),
                    },
                    None => Err(e),
                }
            }
            (stored, _) => stored,
        }
    }

    /// Builds and signs the event `append` would store next, but neither authorizes nor stores
    /// it: public only so that benchmarks can time the CPU-bound part of sending on its own.
    #[doc(hidden)]
    pub async fn build_detached(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        new: NewPdu,
    ) -> Result<Pdu> {
        let tip = self
            .tip(room_id)
            .await?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        self.build(Some(room_id), sender, &tip, new, None).await
    }

    /// Checks what the spec asks servers to check of events that clients send: messages need a
    /// `msgtype` and a textual `body`; a thread cannot start from an event that itself relates
    /// to another.
    pub async fn validate_client_event(
        &self,
        room_id: &RoomId,
        kind: &str,
        content: &Value,
    ) -> Result<()> {
        if kind == "m.room.message"
            && (!content.get("msgtype").is_some_and(Value::is_string)
                || !content.get("body").is_some_and(Value::is_string))
        {
            return Err(Error::bad_json(
                "m.room.message needs a msgtype and a textual body",
            ));
        }
        let relates = content.get("m.relates_to");
        if relates
            .and_then(|r| r.get("rel_type"))
            .and_then(Value::as_str)
            == Some("m.thread")
        {
            let target = relates
                .and_then(|r| r.get("event_id"))
                .and_then(Value::as_str)
                .and_then(|id| OwnedEventId::try_from(id).ok())
                .ok_or_else(|| Error::bad_json("m.thread relation without a valid event_id"))?;
            let Some(root) = self.pdu(&target).await?.filter(|p| p.room_id == room_id) else {
                return Err(Error::new(
                    ErrorKind::Unknown,
                    "Thread root not found in this room",
                ));
            };
            if root.content_value().get("m.relates_to").is_some() {
                return Err(Error::new(
                    ErrorKind::Unknown,
                    "Cannot start a thread from an event that has a relation",
                ));
            }
        }
        Ok(())
    }

    /// Builds and signs a PDU on top of `tip`.
    async fn build(
        &self,
        room_id: Option<&RoomId>,
        sender: &UserId,
        tip: &RoomTip,
        new: NewPdu,
        ts: Option<MilliSecondsSinceUnixEpoch>,
    ) -> Result<Pdu> {
        let rules = tip
            .version
            .rules()
            .ok_or_else(|| Error::internal("unsupported room version"))?;
        let kind = TimelineEventType::from(new.kind.as_str());
        if new.state_key.is_some() {
            validate_state_content(&new.kind, &new.content)?;
        }
        let mut content = new.content;
        if let (Some(r), true) = (&new.redacts, rules.redaction.keep_room_redaction_redacts)
            && let Value::Object(m) = &mut content
        {
            m.insert("redacts".into(), Value::String(r.to_string()));
        }
        let raw_content = serde_json::value::to_raw_value(&content)
            .map_err(|e| Error::bad_json(e.to_string()))?;
        let auth_types = ruma::state_res::auth_types_for_event(
            &kind,
            sender,
            new.state_key.as_deref(),
            &raw_content,
            &rules.authorization,
        )
        .map_err(|e| Error::bad_json(format!("invalid content: {e}")))?;
        let mut auth_events: Vec<String> = auth_types
            .iter()
            .filter_map(|(t, k)| tip.state.get(&(t.to_string(), k.clone())))
            .map(|id| id.to_string())
            .collect();
        auth_events.sort();
        auth_events.dedup();

        let mut obj = CanonicalJsonObject::new();
        obj.insert("auth_events".into(), to_canonical(json!(auth_events))?);
        obj.insert("content".into(), to_canonical(content)?);
        obj.insert(
            "depth".into(),
            CanonicalJsonValue::Integer((tip.max_depth + 1).try_into().unwrap_or_default()),
        );
        let ts = ts.unwrap_or_else(MilliSecondsSinceUnixEpoch::now);
        obj.insert(
            "origin_server_ts".into(),
            CanonicalJsonValue::Integer(ts.get().into()),
        );
        let prev: Vec<String> = tip
            .extremities
            .iter()
            .take(MAX_PREV_EVENTS)
            .map(|e| e.to_string())
            .collect();
        obj.insert("prev_events".into(), to_canonical(json!(prev))?);
        if let Some(r) = room_id {
            obj.insert("room_id".into(), CanonicalJsonValue::String(r.to_string()));
        }
        obj.insert(
            "sender".into(),
            CanonicalJsonValue::String(sender.to_string()),
        );
        obj.insert("type".into(), CanonicalJsonValue::String(new.kind.clone()));
        if let Some(k) = &new.state_key {
            obj.insert("state_key".into(), CanonicalJsonValue::String(k.clone()));
        }
        if let (Some(r), false) = (&new.redacts, rules.redaction.keep_room_redaction_redacts) {
            obj.insert("redacts".into(), CanonicalJsonValue::String(r.to_string()));
        }
        // Refuse oversized events before the costlier hashing and signing.
        let unsigned_len = serde_json::to_vec(&obj)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if unsigned_len > MAX_PDU_BYTES {
            return Err(Error::new(ErrorKind::TooLarge, "Event too large"));
        }
        ruma::signatures::hash_and_sign_event(
            self.server_name.as_str(),
            &self.key.pair,
            &mut obj,
            &rules.redaction,
        )
        .map_err(|e| match e {
            ruma::signatures::JsonError::PduTooLarge => {
                Error::new(ErrorKind::TooLarge, "Event too large")
            }
            other => Error::internal(format!("signing failed: {other}")),
        })?;
        let hash = ruma::signatures::reference_hash(&obj, &rules).map_err(|e| match e {
            ruma::signatures::JsonError::PduTooLarge => {
                Error::new(ErrorKind::TooLarge, "Event too large")
            }
            other => Error::internal(format!("hashing failed: {other}")),
        })?;
        let event_id = OwnedEventId::try_from(format!("${hash}"))
            .map_err(|_| Error::internal("bad event id"))?;
        let room_id = match room_id {
            Some(r) => r.to_owned(),
            None => OwnedRoomId::try_from(format!("!{hash}"))
                .map_err(|_| Error::internal("bad room id"))?,
        };
        let json = serde_json::to_string(&obj).map_err(|e| Error::internal(e.to_string()))?;
        if json.len() > MAX_PDU_BYTES {
            return Err(Error::new(ErrorKind::TooLarge, "Event too large"));
        }
        Pdu::parse(event_id, room_id, &json)
    }

    /// Runs the authorization rules against the state at `tip` and stores the event.
    async fn authorize_and_store(
        &self,
        tip: &RoomTip,
        pdu: Pdu,
        txn: Option<(String, String, String)>,
    ) -> Result<(Arc<Pdu>, i64)> {
        // Timed for the debug log: evaluation and the commit are what a large room's recipients
        // wait for before they are woken.
        let started = std::time::Instant::now();
        let rules = tip
            .version
            .rules()
            .ok_or_else(|| Error::internal("unsupported room version"))?;
        // The rules read events synchronously: load everything they may ask for first.
        let mut events: HashMap<OwnedEventId, Arc<Pdu>> = HashMap::new();
        for id in &pdu.auth_events {
            if let Some(p) = self.pdu(id).await? {
                events.insert(id.clone(), p);
            }
        }
        let mut by_state: HashMap<(String, String), Arc<Pdu>> = HashMap::new();
        for p in events.values() {
            if let Some(k) = &p.state_key {
                by_state.insert((p.kind.to_string(), k.clone()), p.clone());
            }
        }
        // Rules beyond the auth events (e.g. the create event in v12) come from the state.
        if let Some(id) = tip.state.get(&("m.room.create".to_owned(), String::new()))
            && let Some(p) = self.pdu(id).await?
        {
            events.insert(id.clone(), p.clone());
            by_state.insert(("m.room.create".into(), String::new()), p);
        }
        let fetch_event = |id: &EventId| events.get(id).map(|p| (**p).clone());
        ruma::state_res::check_state_independent_auth_rules(
            &rules.authorization,
            &pdu,
            fetch_event,
        )
        .map_err(|e| Error::forbidden(format!("Event not authorized: {e}")))?;
        let fetch_state = |t: &ruma::events::StateEventType, k: &str| {
            by_state
                .get(&(t.to_string(), k.to_owned()))
                .map(|p| (**p).clone())
        };
        ruma::state_res::check_state_dependent_auth_rules(&rules.authorization, &pdu, fetch_state)
            .map_err(|e| Error::forbidden(format!("Event not authorized: {e}")))?;

        let content = pdu.content_value();
        let mut new_state = tip.state.clone();
        let mut new_group = None;
        let mut unsigned = None;
        if let Some(key) = &pdu.state_key {
            let skey = (pdu.kind.to_string(), key.clone());
            if let Some(prev_id) = tip.state.get(&skey)
                && let Some(prev) = self.pdu(prev_id).await?
            {
                unsigned = Some(
                    json!({
                        "prev_content": prev.content_value(),
                        "replaces_state": prev_id.to_string(),
                        "prev_sender": prev.sender.to_string(),
                    })
                    .to_string(),
                );
            }
            let mut m = (*tip.state).clone();
            m.insert(skey, pdu.event_id.clone());
            new_group = Some(Rooms::next_state_group(
                tip.state_group,
                tip.chain_len,
                &m,
                (pdu.kind.to_string().as_str(), key, pdu.event_id.as_str()),
            ));
            new_state = Arc::new(m);
        }
        let membership = match (&pdu.kind, &pdu.state_key) {
            (TimelineEventType::RoomMember, Some(user)) => Some(MembershipUpdate {
                user_id: user.clone(),
                membership: content
                    .get("membership")
                    .and_then(Value::as_str)
                    .unwrap_or("leave")
                    .to_owned(),
            }),
            _ => None,
        };
        let mut relation = content.get("m.relates_to").and_then(|r| {
            Some(RelationUpdate {
                rel_type: r.get("rel_type")?.as_str()?.to_owned(),
                relates_to: r.get("event_id")?.as_str()?.to_owned(),
            })
        });
        // A relation is only indexed when its target is an event of the same room.
        if let Some(rel) = &relation {
            let same_room = match OwnedEventId::try_from(rel.relates_to.as_str()) {
                Ok(id) => self
                    .pdu(&id)
                    .await?
                    .is_some_and(|t| t.room_id == pdu.room_id),
                Err(_) => false,
            };
            if !same_room {
                relation = None;
            }
        }
        let redaction = match &pdu.redacts {
            Some(target) if pdu.kind == TimelineEventType::RoomRedaction => {
                match self.pdu(target).await? {
                    Some(t) if t.room_id == pdu.room_id => {
                        let obj = t.canonical_object()?;
                        let redacted = redact(obj, &rules.redaction, None)
                            .map_err(|e| Error::internal(format!("redaction failed: {e}")))?;
                        let json = serde_json::to_string(&redacted)
                            .map_err(|e| Error::internal(e.to_string()))?;
                        Some((target.to_string(), json))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let redacted_target = redaction.as_ref().map(|(t, _)| t.clone());
        let evaluating = std::time::Instant::now();
        let super::EventNotifications {
            rows: notifications,
            room: room_notification,
            pushed,
        } = self.notifications_for(&pdu, &new_state).await;
        let persisting = std::time::Instant::now();
        let persisted = self
            .store
            .persist_event(NewEvent {
                event_id: pdu.event_id.to_string(),
                room_id: pdu.room_id.to_string(),
                sender: pdu.sender.to_string(),
                event_type: pdu.kind.to_string(),
                state_key: pdu.state_key.clone(),
                depth: i64::try_from(u64::from(pdu.depth)).unwrap_or(i64::MAX),
                origin_server_ts: u64::from(pdu.origin_server_ts.get()) as i64,
                json: pdu.json.to_string(),
                unsigned,
                state_group_before: tip.state_group,
                new_state_group: new_group.clone(),
                prev_events: pdu.prev_events.iter().map(|e| e.to_string()).collect(),
                membership,
                relation,
                txn,
                redaction,
                notifications,
                room_notification,
            })
            .await?;
        if let Some(existing) = persisted.existing {
            let id = OwnedEventId::try_from(existing)
                .map_err(|_| Error::internal("bad stored event id"))?;
            let pdu = self
                .pdu(&id)
                .await?
                .ok_or_else(|| Error::internal("txn event missing"))?;
            return Ok((pdu, -1));
        }
        let pdu = Arc::new(pdu);
        if let Some(t) = redacted_target
            && let Ok(id) = OwnedEventId::try_from(t)
        {
            self.forget_cached_pdu(&id);
        }
        self.cache_pdu(pdu.clone());
        let (state_group, chain_len) = if let Some(g) = new_group {
            if let Some(id) = persisted.state_group_after {
                self.state_cache.lock().insert(id, new_state.clone());
            }
            (persisted.state_group_after, g.chain_len)
        } else {
            (tip.state_group, tip.chain_len)
        };
        let depth = i64::try_from(u64::from(pdu.depth)).unwrap_or(i64::MAX);
        self.set_tip(
            &pdu.room_id,
            RoomTip {
                version: tip.version.clone(),
                extremities: vec![pdu.event_id.clone()],
                max_depth: tip.max_depth.max(depth),
                state_group,
                chain_len,
                state: new_state,
            },
        );
        self.notifier.wake_room(pdu.room_id.as_str());
        tracing::debug!(
            room = %pdu.room_id,
            authorize_us = (evaluating - started).as_micros() as u64,
            evaluate_us = (persisting - evaluating).as_micros() as u64,
            persist_us = persisting.elapsed().as_micros() as u64,
            "event stored and its room woken"
        );
        if let Some(user) = pdu
            .state_key
            .as_deref()
            .filter(|_| pdu.kind == TimelineEventType::RoomMember)
        {
            // The target learns of invites, joins and kicks through its user key.
            self.notifier.wake_user(user);
        }
        self.event_stored(
            &pdu,
            persisted.stream,
            &pushed,
            persisted.notifications_waiting,
        );
        Ok((pdu, persisted.stream))
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

//! Reading room timelines for clients: rendering stored events in the client format, /messages
//! pagination with history visibility, single events, /context.

use std::sync::Arc;

use feldpost_storage::{Store, StoredEvent};
use ruma::{EventId, OwnedRoomId, RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::filter::RoomEventFilter;
use crate::pdu::{ClientEvent, Pdu};
use crate::rooms::Rooms;
use crate::rooms::append::now_ms;
use crate::{Error, Result};

/// A pagination token: a stream position. Sync tokens (`s…`) are accepted too.
pub fn parse_position(token: &str) -> Option<i64> {
    let rest = token
        .strip_prefix('t')
        .or_else(|| token.strip_prefix('s'))?;
    let pos = rest.split('_').next()?;
    pos.parse::<i64>().ok().filter(|p| *p >= 0)
}

pub fn position_token(pos: i64) -> String {
    format!("t{pos}")
}

pub struct Timeline {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) rooms: Arc<Rooms>,
}

/// One page of /messages.
pub struct MessagesPage {
    pub chunk: Vec<Value>,
    pub start: String,
    pub end: Option<String>,
    pub state: Vec<Value>,
}

impl Timeline {
    pub fn new(store: Arc<dyn Store>, rooms: Arc<Rooms>) -> Self {
        Self { store, rooms }
    }

    /// The client format of a stored event, with `unsigned` as this requester sees it.
    pub async fn render(
        &self,
        e: &StoredEvent,
        viewer_device: Option<(&str, &str)>,
    ) -> Result<Value> {
        let pdu = self.rooms.pdu_of(e)?;
        let mut m = pdu.to_client_value();
        let unsigned = self.unsigned(e, &pdu, viewer_device).await?;
        m.insert("unsigned".into(), Value::Object(unsigned));
        Ok(Value::Object(m))
    }

    /// Like `render_many`, for responses that only write the events out (sync timelines).
    pub async fn client_events(
        &self,
        events: &[StoredEvent],
        viewer: Option<(&str, &str)>,
    ) -> Result<Vec<ClientEvent>> {
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let pdu = self.rooms.pdu_of(e)?;
            let unsigned = self.unsigned(e, &pdu, viewer).await?;
            out.push(ClientEvent::new(pdu, unsigned));
        }
        Ok(out)
    }

    /// `unsigned` as this requester sees it: the age, the transaction id for the device that
    /// sent the event, and what redacted it.
    async fn unsigned(
        &self,
        e: &StoredEvent,
        pdu: &Pdu,
        viewer_device: Option<(&str, &str)>,
    ) -> Result<Map<String, Value>> {
        let mut unsigned: Map<String, Value> = match &e.unsigned {
            Some(u) => serde_json::from_str(u).unwrap_or_default(),
            None => Map::new(),
        };
        let age = now_ms() - u64::from(pdu.origin_server_ts.get()) as i64;
        unsigned.insert("age".into(), json!(age.max(0)));
        if let (Some((user, device)), Some((txn_device, txn_id))) = (viewer_device, &e.txn)
            && user == e.sender
            && device == txn_device
        {
            unsigned.insert("transaction_id".into(), json!(txn_id));
        }
        if let Some(by) = &e.redacted_by
            && let Some(r) = self.store.get_event(by).await?
        {
            let rp = Pdu::from_stored(&r)?;
            unsigned.insert(
                "redacted_because".into(),
                Value::Object(rp.to_client_value()),
            );
        }
        Ok(unsigned)
    }

    /// The client format of a state event from its id (used for state sections and /state).
    pub async fn render_id(&self, event_id: &str) -> Result<Option<Value>> {
        match self.store.get_event(event_id).await? {
            Some(e) => Ok(Some(self.render(&e, None).await?)),
            None => Ok(None),
        }
    }

    pub async fn render_many(
        &self,
        events: &[StoredEvent],
        viewer: Option<(&str, &str)>,
    ) -> Result<Vec<Value>> {
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            out.push(self.render(e, viewer).await?);
        }
        Ok(out)
    }

    /// Whether `user` may see the stored event.
    pub async fn visible(
        &self,
        user: &UserId,
        e: &StoredEvent,
        current_membership: Option<&str>,
    ) -> Result<bool> {
        let pdu = self.rooms.pdu_of(e)?;
        self.rooms
            .can_see(user, &pdu, e.state_group_before, current_membership)
            .await
    }

    /// The user's current membership, and `M_FORBIDDEN` if they were never in the room (and it is
    /// not world-readable).
    pub async fn require_reader(&self, room_id: &RoomId, user: &UserId) -> Result<Option<String>> {
        if self.store.get_room(room_id.as_str()).await?.is_none() {
            return Err(Error::forbidden("You are not a member of this room"));
        }
        let membership = self.rooms.membership_of(room_id, user).await?;
        if membership.is_some() {
            return Ok(membership);
        }
        let hv = self
            .rooms
            .state_event(room_id, "m.room.history_visibility", "")
            .await?;
        let world = hv.is_some_and(|h| {
            h.content_value()
                .get("history_visibility")
                .and_then(Value::as_str)
                == Some("world_readable")
        });
        if world {
            Ok(None)
        } else {
            Err(Error::forbidden("You are not a member of this room"))
        }
    }

    /// `GET /rooms/{roomId}/messages`.
    #[allow(clippy::too_many_arguments)]
    pub async fn messages(
        &self,
        room_id: &RoomId,
        user: &UserId,
        device: &str,
        from: Option<i64>,
        to: Option<i64>,
        backward: bool,
        limit: u32,
        filter: &RoomEventFilter,
    ) -> Result<MessagesPage> {
        let membership = self.require_reader(room_id, user).await?;
        let now = self.store.current_position();
        let storage_filter = filter.to_storage();
        // Fetch a little more than asked so that invisible events do not shorten pages much.
        let fetch = limit.saturating_mul(2).clamp(1, 2000);
        let start = from.unwrap_or(if backward { now } else { 0 });
        let mut chunk = Vec::new();
        let mut cursor = start;
        let mut exhausted = false;
        while chunk.len() < limit as usize && !exhausted {
            let batch = if backward {
                let lower = to.unwrap_or(0);
                self.store
                    .room_events_backward(room_id.as_str(), cursor, lower, fetch, &storage_filter)
                    .await?
            } else {
                let upper = to.map(|t| t + 1).unwrap_or(now + 1);
                self.store
                    .room_events_forward(room_id.as_str(), cursor, upper, fetch, &storage_filter)
                    .await?
            };
            if (batch.len() as u32) < fetch {
                exhausted = true;
            }
            for e in batch {
                cursor = if backward { e.stream - 1 } else { e.stream };
                if self.visible(user, &e, membership.as_deref()).await? {
                    chunk.push(e);
                    if chunk.len() >= limit as usize {
                        break;
                    }
                }
            }
            if chunk.is_empty() && exhausted {
                break;
            }
        }
        let end = if exhausted && chunk.len() < limit as usize {
            None
        } else {
            Some(position_token(cursor))
        };
        let mut state = Vec::new();
        if filter.lazy_load_members {
            let mut senders: Vec<&str> = chunk.iter().map(|e| e.sender.as_str()).collect();
            senders.sort();
            senders.dedup();
            let current = self.rooms.current_state(room_id).await?;
            for s in senders {
                if let Some(id) = current.get(&("m.room.member".to_owned(), s.to_owned()))
                    && let Some(v) = self.render_id(id.as_str()).await?
                {
                    state.push(v);
                }
            }
        }
        let rendered = self
            .render_many(&chunk, Some((user.as_str(), device)))
            .await?;
        Ok(MessagesPage {
            chunk: rendered,
            start: position_token(start),
            end,
            state,
        })
    }

    /// `GET /rooms/{roomId}/event/{eventId}`.
    pub async fn event(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        user: &UserId,
        device: &str,
    ) -> Result<Value> {
        let membership = self
            .require_reader(room_id, user)
            .await
            .map_err(|_| Error::not_found("Event not found"))?;
        let e = self
            .store
            .get_event(event_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Event not found"))?;
        if e.room_id != room_id.as_str() || !self.visible(user, &e, membership.as_deref()).await? {
            return Err(Error::not_found("Event not found"));
        }
        self.render(&e, Some((user.as_str(), device))).await
    }

    /// `GET /rooms/{roomId}/context/{eventId}`: events around one event and the state at it.
    pub async fn context(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        user: &UserId,
        device: &str,
        limit: u32,
        filter: &RoomEventFilter,
    ) -> Result<Value> {
        // Readers who were never in the room get 403 here; only /event folds that into 404.
        let membership = self.require_reader(room_id, user).await?;
        let e = self
            .store
            .get_event(event_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Event not found"))?;
        if e.room_id != room_id.as_str() || !self.visible(user, &e, membership.as_deref()).await? {
            return Err(Error::not_found("Event not found"));
        }
        let before_n = limit / 2;
        let after_n = limit - before_n;
        let sf = filter.to_storage();
        let mut before = Vec::new();
        for b in self
            .store
            .room_events_backward(room_id.as_str(), e.stream - 1, 0, before_n, &sf)
            .await?
        {
            if self.visible(user, &b, membership.as_deref()).await? {
                before.push(b);
            }
        }
        let now = self.store.current_position();
        let mut after = Vec::new();
        for a in self
            .store
            .room_events_forward(room_id.as_str(), e.stream, now + 1, after_n, &sf)
            .await?
        {
            if self.visible(user, &a, membership.as_deref()).await? {
                after.push(a);
            }
        }
        let start = before.last().map(|b| b.stream - 1).unwrap_or(e.stream - 1);
        let end = after.last().map(|a| a.stream).unwrap_or(e.stream);
        let viewer = Some((user.as_str(), device));
        let mut state = Vec::new();
        // The spec asks for the state at the last event returned.
        let last = after.last().unwrap_or(&e);
        if let Some(group) = last.state_group_after.or(last.state_group_before) {
            let map = self.rooms.state_map(group).await?;
            let mut wanted: Vec<&str> = before
                .iter()
                .chain(after.iter())
                .chain(std::iter::once(&e))
                .map(|x| x.sender.as_str())
                .collect();
            wanted.sort();
            wanted.dedup();
            for ((t, k), id) in map.iter() {
                if filter.lazy_load_members && t == "m.room.member" && !wanted.contains(&k.as_str())
                {
                    continue;
                }
                if let Some(v) = self.render_id(id.as_str()).await?
                    && filter.matches(t, v["sender"].as_str().unwrap_or_default())
                {
                    state.push(v);
                }
            }
        }
        Ok(json!({
            "event": self.render(&e, viewer).await?,
            "events_before": self.render_many(&before, viewer).await?,
            "events_after": self.render_many(&after, viewer).await?,
            "start": position_token(start),
            "end": position_token(end),
            "state": state,
        }))
    }

    /// Rooms a user can read, as ids (used by search-like features).
    pub async fn joined_rooms(&self, user: &UserId) -> Result<Vec<OwnedRoomId>> {
        Ok(self
            .store
            .rooms_for_user(user.as_str())
            .await?
            .into_iter()
            .filter(|m| m.membership == "join")
            .filter_map(|m| OwnedRoomId::try_from(m.room_id).ok())
            .collect())
    }
}

//! Read receipts (`m.read`, `m.read.private`, threaded or not) and the fully-read marker. Markers
//! only move forward: one for an event older than the current one is accepted and ignored.

use std::sync::Arc;

use feldpost_storage::{ReceiptRecord, Store, StoredEvent};
use ruma::{EventId, OwnedEventId, RoomId, UserId};
use serde_json::{Value, json};

use crate::account_data::AccountData;
use crate::notifier::Notifier;
use crate::rooms::Rooms;
use crate::rooms::append::now_ms;
use crate::{Error, Result};

/// How many relation hops lead from an event to its thread at most (the spec's recommendation).
const MAX_THREAD_HOPS: usize = 3;

pub struct Receipts {
    store: Arc<dyn Store>,
    rooms: Arc<Rooms>,
    notifier: Arc<Notifier>,
    account_data: Arc<AccountData>,
}

impl Receipts {
    pub fn new(
        store: Arc<dyn Store>,
        rooms: Arc<Rooms>,
        notifier: Arc<Notifier>,
        account_data: Arc<AccountData>,
    ) -> Self {
        Self {
            store,
            rooms,
            notifier,
            account_data,
        }
    }

    /// `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`. `thread_id` is `None` for an
    /// unthreaded receipt, `main` or a thread root's id otherwise.
    pub async fn send(
        &self,
        user: &UserId,
        room: &RoomId,
        receipt_type: &str,
        event_id: &EventId,
        thread_id: Option<&str>,
    ) -> Result<()> {
        match receipt_type {
            "m.read" | "m.read.private" => {}
            "m.fully_read" => {
                if thread_id.is_some() {
                    return Err(Error::invalid_param(
                        "thread_id cannot be given for m.fully_read",
                    ));
                }
                return self.set_fully_read(user, room, event_id).await;
            }
            _ => {
                return Err(Error::invalid_param(
                    "Receipt type must be m.read, m.read.private or m.fully_read",
                ));
            }
        }
        self.rooms.require_joined(room, user).await?;
        let event = self.event_in_room(room, event_id).await?;
        let thread = match thread_id {
            None => String::new(),
            Some("") => return Err(Error::invalid_param("thread_id must not be empty")),
            Some(t) => {
                self.check_thread(room, event_id, t).await?;
                t.to_owned()
            }
        };
        if let Some(current) = self
            .store
            .get_receipt(room.as_str(), receipt_type, user.as_str(), &thread)
            .await?
            && !self.is_after(&event, &current.event_id).await?
        {
            return Ok(());
        }
        self.store
            .set_receipt(ReceiptRecord {
                room_id: room.to_string(),
                receipt_type: receipt_type.to_owned(),
                user_id: user.to_string(),
                thread_id: thread,
                event_id: event_id.to_string(),
                ts: now_ms(),
                stream: 0,
            })
            .await?;
        // A private receipt concerns its owner alone.
        if receipt_type == "m.read.private" {
            self.notifier.wake_user(user.as_str());
        } else {
            self.notifier.wake_room(room.as_str());
        }
        Ok(())
    }

    /// Moves the fully-read marker (room account data `m.fully_read`) forward to `event_id`.
    pub async fn set_fully_read(
        &self,
        user: &UserId,
        room: &RoomId,
        event_id: &EventId,
    ) -> Result<()> {
        self.rooms.require_joined(room, user).await?;
        let event = self.event_in_room(room, event_id).await?;
        let current = self
            .store
            .get_account_data(user.as_str(), Some(room.as_str()), "m.fully_read")
            .await?
            .and_then(|raw| serde_json::from_str::<Value>(&raw).ok())
            .and_then(|c| c.get("event_id").and_then(Value::as_str).map(str::to_owned));
        if let Some(current) = current
            && !self.is_after(&event, &current).await?
        {
            return Ok(());
        }
        self.account_data
            .write(
                user,
                Some(room),
                "m.fully_read",
                &json!({"event_id": event_id}),
            )
            .await
    }

    /// `POST /rooms/{roomId}/read_markers`: each marker given is set as by its own request.
    pub async fn set_markers(
        &self,
        user: &UserId,
        room: &RoomId,
        fully_read: Option<&EventId>,
        read: Option<&EventId>,
        read_private: Option<&EventId>,
    ) -> Result<()> {
        self.rooms.require_joined(room, user).await?;
        if let Some(e) = fully_read {
            self.set_fully_read(user, room, e).await?;
        }
        if let Some(e) = read {
            self.send(user, room, "m.read", e, None).await?;
        }
        if let Some(e) = read_private {
            self.send(user, room, "m.read.private", e, None).await?;
        }
        Ok(())
    }

    async fn event_in_room(&self, room: &RoomId, event_id: &EventId) -> Result<StoredEvent> {
        self.store
            .get_event(event_id.as_str())
            .await?
            .filter(|e| e.room_id == room.as_str())
            .ok_or_else(|| Error::not_found("Event not found in this room"))
    }

    /// Whether `event` comes after the event `current` points at (true if that one is unknown).
    async fn is_after(&self, event: &StoredEvent, current: &str) -> Result<bool> {
        Ok(match self.store.get_event(current).await? {
            Some(c) => event.stream > c.stream,
            None => true,
        })
    }

    /// `M_INVALID_PARAM` unless the event belongs to the thread: `main` for the main timeline,
    /// otherwise the root's id, which the root itself and its thread's events belong to.
    async fn check_thread(&self, room: &RoomId, event_id: &EventId, thread_id: &str) -> Result<()> {
        let in_thread = self.thread_of(room, event_id).await?;
        let ok = if thread_id == "main" {
            in_thread.is_none()
        } else {
            let root = <&EventId>::try_from(thread_id)
                .map_err(|_| Error::invalid_param("thread_id must be main or an event id"))?;
            root == event_id || in_thread.as_deref() == Some(root)
        };
        if !ok {
            return Err(Error::invalid_param(
                "The event is not part of the thread given by thread_id",
            ));
        }
        Ok(())
    }

    /// The root of the thread an event is in, following other relations a few hops (a reaction
    /// to a threaded message is in that thread too).
    async fn thread_of(&self, room: &RoomId, event_id: &EventId) -> Result<Option<OwnedEventId>> {
        let mut current = event_id.to_owned();
        for _ in 0..MAX_THREAD_HOPS {
            let Some(pdu) = self.rooms.pdu(&current).await? else {
                return Ok(None);
            };
            if pdu.room_id != room {
                return Ok(None);
            }
            let content = pdu.content_value();
            let Some(rel) = content.get("m.relates_to") else {
                return Ok(None);
            };
            let Some(parent) = rel
                .get("event_id")
                .and_then(Value::as_str)
                .and_then(|s| OwnedEventId::try_from(s).ok())
            else {
                return Ok(None);
            };
            if rel.get("rel_type").and_then(Value::as_str) == Some("m.thread") {
                return Ok(Some(parent));
            }
            current = parent;
        }
        Ok(None)
    }
}

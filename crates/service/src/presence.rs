//! Presence: a user's `online` / `unavailable` / `offline` state and status message. A change is
//! stored at a stream position, so that the syncs of the user and of everyone sharing a room with
//! them pick it up, and those syncs are woken.

use std::sync::Arc;

use feldpost_storage::{PresenceRecord, Store};
use ruma::UserId;
use serde_json::{Value, json};

use crate::notifier::Notifier;
use crate::rooms::append::now_ms;
use crate::{Error, Result};

pub const STATES: &[&str] = &["online", "unavailable", "offline"];

/// The longest status message accepted, in bytes: it is copied into many syncs.
pub const MAX_STATUS_MSG_BYTES: usize = 4096;

pub struct Presence {
    store: Arc<dyn Store>,
    notifier: Arc<Notifier>,
}

impl Presence {
    pub fn new(store: Arc<dyn Store>, notifier: Arc<Notifier>) -> Self {
        Self { store, notifier }
    }

    /// Sets the user's own presence; setting it counts as activity.
    pub async fn set(&self, user: &UserId, state: &str, status_msg: Option<&str>) -> Result<()> {
        if !STATES.contains(&state) {
            return Err(Error::invalid_param(
                "presence must be online, unavailable or offline",
            ));
        }
        if status_msg.is_some_and(|m| m.len() > MAX_STATUS_MSG_BYTES) {
            return Err(Error::invalid_param(format!(
                "status_msg may be at most {MAX_STATUS_MSG_BYTES} bytes"
            )));
        }
        self.store
            .set_presence(PresenceRecord {
                user_id: user.to_string(),
                state: state.to_owned(),
                status_msg: status_msg.map(str::to_owned),
                last_active_ms: now_ms(),
                stream: 0,
            })
            .await?;
        // The user's own syncs listen on the user key; other members' on the shared rooms.
        self.notifier.wake_user(user.as_str());
        for m in self.store.rooms_for_user(user.as_str()).await? {
            if m.membership == "join" {
                self.notifier.wake_room(&m.room_id);
            }
        }
        Ok(())
    }

    /// Applies a sync's `set_presence`: written only when the state changes or the stored
    /// activity is more than a minute old, so that long-polling does not write on every request.
    pub async fn set_from_sync(&self, user: &UserId, state: &str) -> Result<()> {
        if let Some(current) = self.store.get_presence(user.as_str()).await? {
            let fresh = now_ms() - current.last_active_ms < 60_000;
            if current.state == state && (fresh || state != "online") {
                return Ok(());
            }
            return self.set(user, state, current.status_msg.as_deref()).await;
        }
        self.set(user, state, None).await
    }

    /// The presence of `target` as `viewer` may see it: their own, or that of someone sharing a
    /// joined room with them. A user who never set any is `offline`.
    pub async fn get(&self, viewer: &UserId, target: &UserId) -> Result<Value> {
        let exists = self
            .store
            .get_user(target.as_str())
            .await?
            .is_some_and(|u| !u.deactivated);
        if !exists {
            return Err(Error::not_found("Unknown user"));
        }
        if viewer != target
            && !self
                .store
                .shared_rooms(viewer.as_str(), target.as_str())
                .await?
        {
            return Err(Error::forbidden(
                "You are not allowed to see this user's presence",
            ));
        }
        let Some(p) = self.store.get_presence(target.as_str()).await? else {
            return Ok(json!({"presence": "offline"}));
        };
        let mut body = json!({
            "presence": p.state,
            "last_active_ago": (now_ms() - p.last_active_ms).max(0),
            "currently_active": p.state == "online",
        });
        if let Some(msg) = p.status_msg {
            body["status_msg"] = json!(msg);
        }
        Ok(body)
    }
}

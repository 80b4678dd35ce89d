//! Account data: JSON objects a user's clients share, global or per room, and room tags kept in
//! the room's `m.tag`. Every write wakes the user's parked syncs, which deliver the change.

use std::sync::Arc;

use feldpost_storage::Store;
use ruma::{RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::notifier::Notifier;
use crate::{Error, Result};

/// Types the server maintains itself: clients read them like any other but may not set them.
pub const SERVER_MANAGED: &[&str] = &["m.fully_read", "m.push_rules"];

/// The longest account data type or tag name accepted, in bytes (the spec's limit for tags).
const MAX_NAME_BYTES: usize = 255;

pub struct AccountData {
    store: Arc<dyn Store>,
    notifier: Arc<Notifier>,
    /// Tags are a read-modify-write of one `m.tag` object; serializing them keeps concurrent
    /// changes from overwriting each other.
    tag_lock: tokio::sync::Mutex<()>,
}

pub fn is_server_managed(kind: &str) -> bool {
    SERVER_MANAGED.contains(&kind)
}

fn check_name(name: &str, what: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(Error::invalid_param(format!(
            "{what} must be 1 to {MAX_NAME_BYTES} bytes"
        )));
    }
    Ok(())
}

impl AccountData {
    pub fn new(store: Arc<dyn Store>, notifier: Arc<Notifier>) -> Self {
        Self {
            store,
            notifier,
            tag_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The content of one account data type; `M_NOT_FOUND` when it was never set.
    pub async fn get(&self, user: &UserId, room: Option<&RoomId>, kind: &str) -> Result<Value> {
        self.get_opt(user, room, kind)
            .await?
            .ok_or_else(|| Error::not_found("Account data not found"))
    }

    /// One global type of many users at once (those who have it), in one database hop.
    pub async fn global_of(&self, users: &[&UserId], kind: &str) -> Result<Vec<(String, Value)>> {
        let ids = users.iter().map(|u| u.as_str().to_owned()).collect();
        let rows = self.store.global_account_data_of(ids, kind).await?;
        rows.into_iter()
            .map(|(u, raw)| {
                serde_json::from_str(&raw)
                    .map(|v| (u, v))
                    .map_err(|_| Error::internal("stored account data unreadable"))
            })
            .collect()
    }

    async fn get_opt(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        kind: &str,
    ) -> Result<Option<Value>> {
        let raw = self
            .store
            .get_account_data(user.as_str(), room.map(RoomId::as_str), kind)
            .await?;
        raw.map(|r| {
            serde_json::from_str(&r).map_err(|_| Error::internal("stored account data unreadable"))
        })
        .transpose()
    }

    /// Sets account data on behalf of a client, which may not set the server-managed types.
    pub async fn set(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        kind: &str,
        content: Map<String, Value>,
    ) -> Result<()> {
        if is_server_managed(kind) {
            return Err(Error::bad_json(format!(
                "Cannot set {kind} through the account data API"
            )));
        }
        check_name(kind, "The account data type")?;
        self.write(user, room, kind, &Value::Object(content)).await
    }

    /// Writes any type, server-managed ones included, and wakes the user's syncs.
    pub(crate) async fn write(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        kind: &str,
        content: &Value,
    ) -> Result<()> {
        let json = serde_json::to_string(content).map_err(|e| Error::internal(e.to_string()))?;
        self.store
            .set_account_data(user.as_str(), room.map(RoomId::as_str), kind, &json)
            .await?;
        self.notifier.wake_user(user.as_str());
        Ok(())
    }

    /// The user's tags on a room: tag name to tag object.
    pub async fn tags(&self, user: &UserId, room: &RoomId) -> Result<Map<String, Value>> {
        Ok(self
            .get_opt(user, Some(room), "m.tag")
            .await?
            .and_then(|mut c| match c.get_mut("tags").map(Value::take) {
                Some(Value::Object(tags)) => Some(tags),
                _ => None,
            })
            .unwrap_or_default())
    }

    /// Adds or replaces a tag. `order`, if present, must be a number in `[0, 1]`.
    pub async fn set_tag(
        &self,
        user: &UserId,
        room: &RoomId,
        tag: &str,
        content: Map<String, Value>,
    ) -> Result<()> {
        check_name(tag, "A tag name")?;
        match content.get("order") {
            Some(Value::Number(n)) if !n.as_f64().is_some_and(|o| (0.0..=1.0).contains(&o)) => {
                return Err(Error::invalid_param("order must be between 0 and 1"));
            }
            None | Some(Value::Number(_)) => {}
            Some(_) => return Err(Error::bad_json("order must be a number")),
        }
        let _guard = self.tag_lock.lock().await;
        let mut tags = self.tags(user, room).await?;
        tags.insert(tag.to_owned(), Value::Object(content));
        self.write(user, Some(room), "m.tag", &json!({"tags": tags}))
            .await
    }

    /// Removes a tag; removing one that is not there succeeds without a change.
    pub async fn delete_tag(&self, user: &UserId, room: &RoomId, tag: &str) -> Result<()> {
        let _guard = self.tag_lock.lock().await;
        let mut tags = self.tags(user, room).await?;
        if tags.remove(tag).is_none() {
            return Ok(());
        }
        self.write(user, Some(room), "m.tag", &json!({"tags": tags}))
            .await
    }
}

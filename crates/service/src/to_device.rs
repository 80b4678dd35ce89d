//! Send-to-device messaging: messages queued per device in stream order, delivered by sync and
//! deleted once the device's next sync shows (by its `since` token) that it received them. Each
//! sending device's transaction ids make `/sendToDevice` idempotent.

use std::sync::Arc;

use feldpost_storage::{NewToDevice, Store};
use ruma::{OwnedServerName, OwnedUserId, UserId};
use serde_json::{Map, Value, json};

use crate::notifier::Notifier;
use crate::{Error, ErrorKind, Result};

/// The most messages one sync response carries (the spec recommends 100); the rest follow in the
/// next responses.
pub const SYNC_LIMIT: u32 = 100;

/// The most target entries (user and device pairs, `*` counting once) in one request.
pub const MAX_MESSAGES: usize = 10_000;

/// The largest content of one message in bytes, as JSON: the size of a federation EDU, so that a
/// message could later be relayed to another server unchanged.
pub const MAX_CONTENT_BYTES: usize = 65_536;

pub struct ToDevice {
    store: Arc<dyn Store>,
    notifier: Arc<Notifier>,
    server_name: OwnedServerName,
}

/// The messages one sync delivers, and where the next sync should resume when they were cut at
/// [`SYNC_LIMIT`].
#[derive(Debug, Default)]
pub struct Inbox {
    pub events: Vec<Value>,
    /// The stream position of the last message delivered when more are waiting.
    pub resume_after: Option<i64>,
}

impl ToDevice {
    pub fn new(
        store: Arc<dyn Store>,
        notifier: Arc<Notifier>,
        server_name: OwnedServerName,
    ) -> Self {
        Self {
            store,
            notifier,
            server_name,
        }
    }

    /// `/sendToDevice`: queues `messages` (user → device or `*` → content) from the requester's
    /// device, unless this transaction id was already carried out.
    pub async fn send(
        &self,
        sender: &UserId,
        sender_device: &str,
        event_type: &str,
        txn_id: &str,
        messages: Map<String, Value>,
    ) -> Result<()> {
        if event_type.is_empty() || event_type.len() > 255 {
            return Err(Error::invalid_param(
                "The event type must be 1 to 255 bytes",
            ));
        }
        if txn_id.is_empty() || txn_id.len() > 255 {
            return Err(Error::invalid_param(
                "The transaction id must be 1 to 255 bytes",
            ));
        }
        let mut queue = Vec::new();
        for (user, devices) in messages {
            let user_id = OwnedUserId::try_from(user.as_str())
                .map_err(|_| Error::invalid_param(format!("Invalid user id {user}")))?;
            let devices = devices
                .as_object()
                .ok_or_else(|| Error::bad_json(format!("messages.{user} must be an object")))?;
            for (device, content) in devices {
                if !content.is_object() {
                    return Err(Error::bad_json(format!(
                        "messages.{user}.{device} must be an object"
                    )));
                }
                let text =
                    serde_json::to_string(content).map_err(|e| Error::internal(e.to_string()))?;
                if text.len() > MAX_CONTENT_BYTES {
                    return Err(Error::new(
                        ErrorKind::TooLarge,
                        format!("A message may be at most {MAX_CONTENT_BYTES} bytes"),
                    ));
                }
                if user_id.server_name() != self.server_name {
                    // Relaying to other servers needs federation, which this server does not
                    // speak yet: such messages are dropped, as for an unknown device.
                    tracing::debug!(%user_id, "dropping to-device message for a remote user");
                    continue;
                }
                queue.push(NewToDevice {
                    user_id: user_id.to_string(),
                    device_id: (device != "*").then(|| device.clone()),
                    content: text,
                });
                if queue.len() > MAX_MESSAGES {
                    return Err(Error::new(
                        ErrorKind::TooLarge,
                        format!("At most {MAX_MESSAGES} messages may be sent at once"),
                    ));
                }
            }
        }
        let recipients = self
            .store
            .queue_to_device(sender.as_str(), sender_device, txn_id, event_type, queue)
            .await?;
        for user in recipients.unwrap_or_default() {
            self.notifier.wake_user(&user);
        }
        Ok(())
    }
}

/// Acknowledges the messages a device received in the sync that handed out `since`: they are
/// deleted, and never delivered again.
pub async fn acknowledge(store: &dyn Store, user: &str, device: &str, since: i64) -> Result<()> {
    // Most syncs have nothing to acknowledge: a read spares them the writer.
    if store
        .to_device_inbox(user, device, 0, since, 1)
        .await?
        .is_empty()
    {
        return Ok(());
    }
    Ok(store.ack_to_device(user, device, since).await?)
}

/// The device's messages after `after` up to `up_to`, oldest first, at most [`SYNC_LIMIT`].
pub async fn inbox(
    store: &dyn Store,
    user: &str,
    device: &str,
    after: i64,
    up_to: i64,
) -> Result<Inbox> {
    let mut records = store
        .to_device_inbox(user, device, after, up_to, SYNC_LIMIT + 1)
        .await?;
    let more = records.len() > SYNC_LIMIT as usize;
    records.truncate(SYNC_LIMIT as usize);
    let resume_after = if more {
        records.last().map(|r| r.stream)
    } else {
        None
    };
    let events = records
        .into_iter()
        .map(|r| {
            let content: Value = serde_json::from_str(&r.content).unwrap_or_else(|_| json!({}));
            json!({"sender": r.sender, "type": r.event_type, "content": content})
        })
        .collect();
    Ok(Inbox {
        events,
        resume_after,
    })
}

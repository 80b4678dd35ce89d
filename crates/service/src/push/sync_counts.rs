//! What push adds to `/sync`: `unread_notifications` (and, when the filter asks,
//! `unread_thread_notifications`) for joined rooms, a room entry when only its counts changed
//! (evaluation runs after the event was already visible), and the default `m.push_rules` in the
//! initial sync of a user who never changed a rule.

use std::collections::{HashMap, HashSet};

use feldpost_storage::MembershipRecord;
use ruma::{OwnedRoomId, UserId};
use serde_json::{Map, Value, json};

use super::Push;
use super::rules::{PUSH_RULES_TYPE, PushRules};
use crate::Result;
use crate::filter::Filter;
use crate::sync::empty_joined_room;

/// The span a sync covers.
pub(crate) struct Window {
    pub since: i64,
    pub now: i64,
    pub initial: bool,
    /// Whether the change index shows new notification rows of the user.
    pub notifications_changed: bool,
}

/// Fills in the push parts of a sync response; true when it added a room.
pub(crate) async fn add_to_sync(
    push: &Push,
    user: &UserId,
    window: Window,
    filter: &Filter,
    memberships: &[MembershipRecord],
    join: &mut Map<String, Value>,
    account_data: &mut Vec<Value>,
) -> Result<bool> {
    let Window {
        since,
        now,
        initial,
        notifications_changed,
    } = window;
    let mut added = false;
    let hides_events = filter.room.timeline.hides_events();
    // Only new rows of the user's own, or a filter that may have hidden a message, can bring a
    // room whose counts changed that is not in the response yet.
    if !initial && (notifications_changed || hides_events) {
        let joined: HashSet<&str> = memberships
            .iter()
            .filter(|m| m.membership == "join")
            .map(|m| m.room_id.as_str())
            .collect();
        // No new notification rows, no rooms with new counts from them.
        let mut rooms = if notifications_changed {
            push.rooms_with_new_notifications(user, since, now).await?
        } else {
            vec![]
        };
        // A room notification comes with its event, whose room is in the response unless the
        // filter hid the event: then the changed rooms missing from it are looked at.
        let changes = push.store.changes();
        let hidden: Vec<String> = if hides_events {
            joined
                .iter()
                .filter(|r| !join.contains_key(**r) && changes.room_changed(r, since))
                .map(|r| (*r).to_owned())
                .collect()
        } else {
            vec![]
        };
        if !hidden.is_empty() {
            rooms.extend(
                push.store
                    .rooms_with_room_notifications(user.as_str(), hidden, since, now)
                    .await?,
            );
        }
        for room in rooms {
            if joined.contains(room.as_str())
                && filter.room_allowed(&room)
                && !join.contains_key(&room)
            {
                join.insert(room, empty_joined_room());
                added = true;
            }
        }
    } else if initial
        && filter.account_data.matches(PUSH_RULES_TYPE, user.as_str())
        && !account_data
            .iter()
            .any(|e| e.get("type").and_then(Value::as_str) == Some(PUSH_RULES_TYPE))
    {
        account_data.push(json!({
            "type": PUSH_RULES_TYPE,
            "content": PushRules::default_content(user),
        }));
    }
    if join.is_empty() {
        return Ok(added);
    }
    let threaded = filter.room.timeline.unread_thread_notifications;
    let joined_at: HashMap<&str, i64> = memberships
        .iter()
        .filter(|m| m.membership == "join")
        .map(|m| (m.room_id.as_str(), m.stream))
        .collect();
    for (room, section) in join.iter_mut() {
        let Ok(room_id) = OwnedRoomId::try_from(room.as_str()) else {
            continue;
        };
        let joined_at = joined_at.get(room.as_str()).copied();
        let counts = push.room_counts(user, &room_id, joined_at).await?;
        let (n, h) = if threaded { counts.main } else { counts.total };
        section["unread_notifications"] = json!({"notification_count": n, "highlight_count": h});
        if threaded {
            let threads: Map<String, Value> = counts
                .threads
                .iter()
                .map(|(root, n, h)| {
                    (
                        root.clone(),
                        json!({"notification_count": n, "highlight_count": h}),
                    )
                })
                .collect();
            section["unread_thread_notifications"] = Value::Object(threads);
        }
    }
    Ok(added)
}

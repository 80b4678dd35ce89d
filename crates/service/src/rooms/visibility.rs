//! History visibility: which events a user may see, decided by the state at each event.

use ruma::UserId;
use ruma::events::TimelineEventType;
use serde_json::Value;

use super::Rooms;
use crate::Result;
use crate::pdu::Pdu;

/// `m.room.history_visibility`, as it governs reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HistoryVisibility {
    WorldReadable,
    Shared,
    Invited,
    Joined,
}

impl HistoryVisibility {
    /// A value that is missing or not understood counts as `shared`, as the specification says.
    fn parse(content: &Value) -> Self {
        match content.get("history_visibility").and_then(Value::as_str) {
            Some("world_readable") => Self::WorldReadable,
            Some("invited") => Self::Invited,
            Some("joined") => Self::Joined,
            _ => Self::Shared,
        }
    }
}

/// State groups whose history visibility is remembered; the memo starts over beyond this.
const MEMO_LIMIT: usize = 200_000;

impl Rooms {
    /// The history visibility of a state group's state. A group's state never changes, and a
    /// message into a room of 2,000 asks this of the same group for every member it wakes.
    pub(crate) async fn history_visibility(&self, group: i64) -> Result<HistoryVisibility> {
        if let Some(v) = self.visibility_memo.lock().get(&group) {
            return Ok(*v);
        }
        let state = self.state_map(group).await?;
        let visibility = match self
            .state_event_in(&state, "m.room.history_visibility", "")
            .await?
        {
            Some(ev) => HistoryVisibility::parse(&ev.content_value()),
            None => HistoryVisibility::Shared,
        };
        let mut memo = self.visibility_memo.lock();
        if memo.len() >= MEMO_LIMIT {
            memo.clear();
        }
        memo.insert(group, visibility);
        Ok(visibility)
    }

    /// Whether `user` may see `pdu`, given the state before it (`state_group`) and the user's
    /// current membership in the room.
    pub async fn can_see(
        &self,
        user: &UserId,
        pdu: &Pdu,
        state_group: Option<i64>,
        current_membership: Option<&str>,
    ) -> Result<bool> {
        use HistoryVisibility::*;
        let Some(group) = state_group else {
            // The create event has no state before it; it is visible to anyone in the room.
            return Ok(current_membership.is_some());
        };
        let visibility = self.history_visibility(group).await?;
        if visibility == WorldReadable {
            return Ok(true);
        }
        // Shared history and a member now: visible whatever the membership at the event, so
        // the member event need not be read (for every recipient of every message).
        if visibility == Shared && current_membership == Some("join") {
            return Ok(true);
        }
        // The user's own membership event is always visible to them.
        if pdu.kind == TimelineEventType::RoomMember
            && pdu.state_key.as_deref() == Some(user.as_str())
        {
            return Ok(true);
        }
        let state = self.state_map(group).await?;
        let at_event = match self
            .state_event_in(&state, "m.room.member", user.as_str())
            .await?
        {
            Some(ev) => ev
                .content_value()
                .get("membership")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            None => None,
        };
        Ok(match at_event.as_deref() {
            Some("join") => true,
            Some("invite") => matches!(visibility, Invited | Shared),
            _ => visibility == Shared && current_membership == Some("join"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::HistoryVisibility;
    use serde_json::json;

    #[test]
    fn unknown_or_missing_values_count_as_shared() {
        let parse = |v| HistoryVisibility::parse(&v);
        assert_eq!(
            parse(json!({"history_visibility": "joined"})),
            HistoryVisibility::Joined
        );
        assert_eq!(
            parse(json!({"history_visibility": "invited"})),
            HistoryVisibility::Invited
        );
        assert_eq!(
            parse(json!({"history_visibility": "world_readable"})),
            HistoryVisibility::WorldReadable
        );
        assert_eq!(
            parse(json!({"history_visibility": "shared"})),
            HistoryVisibility::Shared
        );
        assert_eq!(
            parse(json!({"history_visibility": "later"})),
            HistoryVisibility::Shared
        );
        assert_eq!(
            parse(json!({"history_visibility": 3})),
            HistoryVisibility::Shared
        );
        assert_eq!(parse(json!({})), HistoryVisibility::Shared);
    }
}

//! History visibility: which events a user may see, decided by the state at each event.

use ruma::UserId;

use super::Rooms;
use crate::Result;
use crate::pdu::Pdu;

impl Rooms {
    /// Whether `user` may see `pdu`, given the state before it (`state_group`) and the user's
    /// current membership in the room.
    pub async fn can_see(
        &self,
        user: &UserId,
        pdu: &Pdu,
        state_group: Option<i64>,
        current_membership: Option<&str>,
    ) -> Result<bool> {
        let Some(group) = state_group else {
            // The create event has no state before it; it is visible to anyone in the room.
            return Ok(current_membership.is_some());
        };
        let state = self.state_map(group).await?;
        let visibility = match self
            .state_event_in(&state, "m.room.history_visibility", "")
            .await?
        {
            Some(ev) => ev
                .content_value()
                .get("history_visibility")
                .and_then(|v| v.as_str())
                .unwrap_or("shared")
                .to_owned(),
            None => "shared".to_owned(),
        };
        if visibility == "world_readable" {
            return Ok(true);
        }
        // Shared history and a member now: visible whatever the membership at the event, so
        // the member event need not be read (for every recipient of every message).
        if visibility == "shared" && current_membership == Some("join") {
            return Ok(true);
        }
        // The user's own membership event is always visible to them.
        if pdu.kind.to_string() == "m.room.member"
            && pdu.state_key.as_deref() == Some(user.as_str())
        {
            return Ok(true);
        }
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
            Some("invite") if visibility == "invited" || visibility == "shared" => true,
            _ => visibility == "shared" && current_membership == Some("join"),
        })
    }
}

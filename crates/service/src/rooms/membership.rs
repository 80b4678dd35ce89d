//! Membership changes: join, invite, leave, kick, ban, unban. Each is an `m.room.member` event
//! that the authorization rules decide on; the checks here only give clearer errors first.

use std::sync::Arc;

use ruma::{RoomId, UserId};
use serde_json::{Map, Value, json};

use super::{NewPdu, Rooms};
use crate::pdu::Pdu;
use crate::{Error, Result};

/// A profile to copy into a join event.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

fn member_content(
    membership: &str,
    profile: Option<&Profile>,
    reason: Option<&str>,
    extra: Option<&Map<String, Value>>,
) -> Value {
    let mut m = Map::new();
    if let Some(extra) = extra {
        m.extend(extra.clone());
    }
    m.insert("membership".into(), Value::String(membership.into()));
    if let Some(p) = profile {
        if let Some(d) = &p.displayname {
            m.insert("displayname".into(), Value::String(d.clone()));
        }
        if let Some(a) = &p.avatar_url {
            m.insert("avatar_url".into(), Value::String(a.clone()));
        }
    }
    if let Some(r) = reason {
        m.insert("reason".into(), Value::String(r.into()));
    }
    Value::Object(m)
}

impl Rooms {
    /// Joins a local user to a room this server knows.
    pub async fn join(
        &self,
        room_id: &RoomId,
        user: &UserId,
        profile: &Profile,
        reason: Option<&str>,
    ) -> Result<Arc<Pdu>> {
        if self.tip(room_id).await?.is_none() {
            // Joining over federation comes with the federation issue.
            return Err(Error::not_found("This server does not know the room"));
        }
        self.check_not_blocked(room_id).await?;
        if self.membership_of(room_id, user).await?.as_deref() == Some("ban") {
            return Err(Error::forbidden("You are banned from this room"));
        }
        let content = member_content("join", Some(profile), reason, None);
        // Joining again with an unchanged profile is a no-op, not a new event.
        if let Some(current) = self
            .state_event(room_id, "m.room.member", user.as_str())
            .await?
            && current.content_value() == content
        {
            return Ok(current);
        }
        let (pdu, _) = self
            .append(
                room_id,
                user,
                NewPdu::state("m.room.member", user.as_str(), content),
            )
            .await?;
        Ok(pdu)
    }

    pub async fn invite(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        target_profile: &Profile,
        reason: Option<&str>,
        is_direct: bool,
    ) -> Result<Arc<Pdu>> {
        self.require_joined(room_id, sender).await?;
        self.check_not_blocked(room_id).await?;
        match self.membership_of(room_id, target).await?.as_deref() {
            Some("ban") => return Err(Error::forbidden("The user is banned from this room")),
            Some("join") => return Err(Error::forbidden("The user is already joined")),
            _ => {}
        }
        let mut extra = Map::new();
        if is_direct {
            extra.insert("is_direct".into(), Value::Bool(true));
        }
        let content = member_content("invite", Some(target_profile), reason, Some(&extra));
        let (pdu, _) = self
            .append(
                room_id,
                sender,
                NewPdu::state("m.room.member", target.as_str(), content),
            )
            .await?;
        Ok(pdu)
    }

    /// Leaves a room, or rejects an invite or withdraws a knock.
    pub async fn leave(
        &self,
        room_id: &RoomId,
        user: &UserId,
        reason: Option<&str>,
    ) -> Result<Arc<Pdu>> {
        if self.store.get_room(room_id.as_str()).await?.is_none() {
            return Err(Error::not_found("Unknown room"));
        }
        match self.membership_of(room_id, user).await?.as_deref() {
            Some("join" | "invite" | "knock") => {}
            _ => return Err(Error::forbidden("You are not a member of this room")),
        }
        let content = member_content("leave", None, reason, None);
        let (pdu, _) = self
            .append(
                room_id,
                user,
                NewPdu::state("m.room.member", user.as_str(), content),
            )
            .await?;
        Ok(pdu)
    }

    /// Kick (`leave`), ban or unban (`leave` from `ban`) another user.
    pub async fn set_other_membership(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        membership: &str,
        reason: Option<&str>,
    ) -> Result<Arc<Pdu>> {
        self.require_joined(room_id, sender).await?;
        let current = self.membership_of(room_id, target).await?;
        match membership {
            "leave" if current.as_deref() == Some("ban") => {}
            "leave" if !matches!(current.as_deref(), Some("join" | "invite" | "knock")) => {
                return Err(Error::forbidden("The user is not a member of this room"));
            }
            _ => {}
        }
        // Keep the profile in a ban so the member list still shows who was banned.
        let content = member_content(membership, None, reason, None);
        let (pdu, _) = self
            .append(
                room_id,
                sender,
                NewPdu::state("m.room.member", target.as_str(), content),
            )
            .await?;
        Ok(pdu)
    }

    /// Re-issues the user's join event with a changed profile in every joined room.
    pub async fn update_profile_in_rooms(&self, user: &UserId, profile: &Profile) -> Result<()> {
        let rooms = self.store.rooms_for_user(user.as_str()).await?;
        for m in rooms.into_iter().filter(|m| m.membership == "join") {
            let Ok(room_id) = ruma::OwnedRoomId::try_from(m.room_id.as_str()) else {
                continue;
            };
            let Some(current) = self
                .state_event(&room_id, "m.room.member", user.as_str())
                .await?
            else {
                continue;
            };
            let mut content = current.content_value();
            if let Value::Object(obj) = &mut content {
                for (k, v) in [
                    ("displayname", &profile.displayname),
                    ("avatar_url", &profile.avatar_url),
                ] {
                    match v {
                        Some(v) => obj.insert(k.into(), json!(v)),
                        None => obj.remove(k),
                    };
                }
            }
            // A room where the user may no longer change their own member event is skipped.
            if let Err(e) = self
                .append(
                    &room_id,
                    user,
                    NewPdu::state("m.room.member", user.as_str(), content),
                )
                .await
            {
                tracing::debug!(room = %room_id, error = %e, "profile not propagated to room");
            }
        }
        Ok(())
    }
}

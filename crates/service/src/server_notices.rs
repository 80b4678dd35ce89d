//! Server notices (the spec's module of that name): the server's own notices account keeps
//! exactly one room per local user, tagged `m.server_notice` for that user, invites the user
//! rather than joining them, and sends `m.room.message` events into it. The room's power
//! levels leave the user unable to send, and an invite to it cannot be rejected.

use std::sync::Arc;

use feldpost_storage::{NewUser, StorageError, Store};
use ruma::{OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::account_data::AccountData;
use crate::rooms::append::now_ms;
use crate::rooms::create::CreateRoom;
use crate::rooms::membership::Profile;
use crate::rooms::{NewPdu, Rooms};
use crate::{Error, ErrorKind, Result};

/// The tag the spec names for the server notices room.
pub const NOTICE_TAG: &str = "m.server_notice";
/// Power a member needs to send into a notices room: above anything the user is given.
const SEND_LEVEL: i64 = 100;

pub struct ServerNotices {
    store: Arc<dyn Store>,
    rooms: Arc<Rooms>,
    account_data: Arc<AccountData>,
    server_name: OwnedServerName,
    user_id: OwnedUserId,
    displayname: String,
    /// Serializes finding or creating a user's room, so that concurrent notices share one.
    room_lock: tokio::sync::Mutex<()>,
}

impl ServerNotices {
    pub fn new(
        store: Arc<dyn Store>,
        rooms: Arc<Rooms>,
        account_data: Arc<AccountData>,
        server_name: OwnedServerName,
        localpart: &str,
        displayname: &str,
    ) -> Result<Self> {
        let user_id =
            OwnedUserId::try_from(format!("@{localpart}:{server_name}")).map_err(|_| {
                Error::invalid_param("admin.notices_localpart is not a valid localpart")
            })?;
        Ok(Self {
            store,
            rooms,
            account_data,
            server_name,
            user_id,
            displayname: displayname.to_owned(),
            room_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The account notices come from.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// Creates the notices account if it does not exist yet. It has no password, so nobody can
    /// log in as it; an existing account of that name with a password belongs to a person and
    /// is refused.
    pub async fn ensure_account(&self) -> Result<()> {
        match self.store.get_user(self.user_id.as_str()).await? {
            Some(u) if u.password_hash.is_some() => Err(Error::internal(format!(
                "{} is a user account with a password; choose another admin.notices_localpart",
                self.user_id
            ))),
            Some(_) => Ok(()),
            None => {
                let created = self
                    .store
                    .create_user(NewUser {
                        user_id: self.user_id.to_string(),
                        password_hash: None,
                        displayname: Some(self.displayname.clone()),
                        is_admin: false,
                        created_ms: now_ms(),
                    })
                    .await;
                match created {
                    Ok(()) | Err(StorageError::Conflict(_)) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Whether `room_id` is some user's server notices room.
    pub async fn is_notice_room(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self
            .store
            .server_notice_room_owner(room_id.as_str())
            .await?
            .is_some())
    }

    /// Sends a notice to a local user: `content` is an `m.room.message` content with a `msgtype`
    /// and a textual `body`.
    pub async fn send(&self, to: &UserId, content: Value) -> Result<OwnedEventId> {
        let Value::Object(content) = content else {
            return Err(Error::bad_json("content must be an object"));
        };
        if content.get("msgtype").and_then(Value::as_str).is_none()
            || content.get("body").and_then(Value::as_str).is_none()
        {
            return Err(Error::bad_json(
                "content needs a string msgtype and a string body",
            ));
        }
        if to.server_name() != self.server_name {
            return Err(Error::invalid_param(
                "Server notices can only be sent to local users",
            ));
        }
        if to == self.user_id {
            return Err(Error::invalid_param(
                "The notices account cannot notify itself",
            ));
        }
        match self.store.get_user(to.as_str()).await? {
            Some(u) if !u.deactivated => {}
            Some(_) => return Err(Error::invalid_param("The user is deactivated")),
            None => return Err(Error::not_found("Unknown user")),
        }
        self.ensure_account().await?;
        let room = self.room_for(to).await?;
        let (pdu, _) = self
            .rooms
            .append(
                &room,
                &self.user_id,
                NewPdu::message("m.room.message", Value::Object(content)),
            )
            .await?;
        tracing::info!(user = %to, room = %room, "sent server notice");
        Ok(pdu.event_id.clone())
    }

    /// Sends a plain-text notice (`msgtype` `m.server_notice`, as the spec describes notices).
    pub async fn send_text(&self, to: &UserId, body: &str) -> Result<OwnedEventId> {
        self.send(
            to,
            json!({
                "msgtype": "m.server_notice",
                "server_notice_type": "org.feldpost.notice",
                "body": body,
            }),
        )
        .await
    }

    /// The user's notices room, created (or the user invited again after leaving) as needed.
    async fn room_for(&self, to: &UserId) -> Result<OwnedRoomId> {
        let _guard = self.room_lock.lock().await;
        if let Some(existing) = self.store.server_notice_room(to.as_str()).await?
            && let Ok(room) = OwnedRoomId::try_from(existing.as_str())
            && self.store.get_room(room.as_str()).await?.is_some()
            && self
                .rooms
                .membership_of(&room, &self.user_id)
                .await?
                .as_deref()
                == Some("join")
        {
            match self.rooms.membership_of(&room, to).await?.as_deref() {
                Some("join" | "invite") => return Ok(room),
                Some("ban") => {}
                _ => {
                    let profile = self.profile_of(to).await;
                    self.rooms
                        .invite(&room, &self.user_id, to, &profile, None, false)
                        .await?;
                    return Ok(room);
                }
            }
        }
        let mut pl = Map::new();
        pl.insert("events_default".into(), json!(SEND_LEVEL));
        pl.insert("invite".into(), json!(SEND_LEVEL));
        let req = CreateRoom {
            preset: Some("private_chat".into()),
            name: Some("Server Notices".into()),
            topic: Some("Hinweise des Servers / Notices from the server".into()),
            invite: vec![to.to_owned()],
            power_level_content_override: Some(pl),
            ..CreateRoom::default()
        };
        let store = self.store.clone();
        let room = self
            .rooms
            .create_room(&self.user_id, req, |u| {
                let store = store.clone();
                async move { Ok(profile_from_store(&*store, &u).await) }
            })
            .await?;
        self.store
            .set_server_notice_room(to.as_str(), room.as_str())
            .await?;
        self.account_data
            .set_tag(to, &room, NOTICE_TAG, Map::new())
            .await?;
        Ok(room)
    }

    async fn profile_of(&self, user: &UserId) -> Profile {
        profile_from_store(&*self.store, user).await
    }

    /// `M_CANNOT_LEAVE_SERVER_NOTICE_ROOM` when `user` would reject the invite to their notices
    /// room: the spec forbids that, while leaving after joining stays allowed.
    pub async fn check_leave(&self, room_id: &RoomId, user: &UserId) -> Result<()> {
        if self
            .store
            .server_notice_room_owner(room_id.as_str())
            .await?
            .as_deref()
            == Some(user.as_str())
            && self.rooms.membership_of(room_id, user).await?.as_deref() == Some("invite")
        {
            return Err(Error::new(
                ErrorKind::CannotLeaveServerNoticeRoom,
                "You cannot reject this invite: it is your server notices room",
            ));
        }
        Ok(())
    }
}

async fn profile_from_store(store: &dyn Store, user: &UserId) -> Profile {
    match store.get_user(user.as_str()).await {
        Ok(Some(u)) => Profile {
            displayname: u.displayname,
            avatar_url: u.avatar_url,
        },
        _ => Profile::default(),
    }
}

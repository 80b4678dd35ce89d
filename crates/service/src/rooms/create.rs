//! `createRoom`: the create event, the creator's join, power levels, presets, initial state,
//! name, topic, alias and invites, in the order the spec gives.

use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomVersionId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::membership::Profile;
use super::{NewPdu, Rooms, SUPPORTED_VERSIONS};
use crate::{Error, ErrorKind, Result};

#[derive(Debug, Clone, Deserialize, Default)]
pub struct StateEventInput {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub state_key: String,
    pub content: Map<String, Value>,
}

/// The `createRoom` request body.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct CreateRoom {
    pub visibility: Option<String>,
    pub room_alias_name: Option<String>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub invite_3pid: Vec<Value>,
    pub room_version: Option<String>,
    pub creation_content: Option<Map<String, Value>>,
    pub initial_state: Vec<StateEventInput>,
    pub preset: Option<String>,
    pub is_direct: bool,
    pub power_level_content_override: Option<Map<String, Value>>,
}

impl Rooms {
    /// Creates a room. `profile_of` gives the profile copied into member events.
    pub async fn create_room<F, Fut>(
        &self,
        creator: &UserId,
        req: CreateRoom,
        profile_of: F,
    ) -> Result<OwnedRoomId>
    where
        F: Fn(OwnedUserId) -> Fut,
        Fut: std::future::Future<Output = Result<Profile>>,
    {
        let version = match &req.room_version {
            Some(v) if SUPPORTED_VERSIONS.contains(&v.as_str()) => {
                RoomVersionId::try_from(v.as_str()).map_err(|_| {
                    Error::new(
                        ErrorKind::UnsupportedRoomVersion,
                        "Unsupported room version",
                    )
                })?
            }
            Some(_) => {
                return Err(Error::new(
                    ErrorKind::UnsupportedRoomVersion,
                    "This server does not support that room version",
                ));
            }
            None => self.default_version.clone(),
        };
        let rules = version.rules().ok_or_else(|| {
            Error::new(
                ErrorKind::UnsupportedRoomVersion,
                "Unsupported room version",
            )
        })?;
        if !req.invite_3pid.is_empty() {
            return Err(Error::new(
                ErrorKind::Unrecognized,
                "Third-party invites are not supported by this server",
            ));
        }
        let preset = match req.preset.as_deref() {
            Some(p @ ("private_chat" | "public_chat" | "trusted_private_chat")) => p.to_owned(),
            Some(_) => return Err(Error::invalid_param("Unknown preset")),
            None if req.visibility.as_deref() == Some("public") => "public_chat".into(),
            None => "private_chat".into(),
        };
        match req.visibility.as_deref() {
            None | Some("public") | Some("private") => {}
            Some(_) => return Err(Error::invalid_param("visibility must be public or private")),
        }
        for s in &req.initial_state {
            if s.kind == "m.room.create" || s.kind == "m.room.member" {
                return Err(Error::invalid_param(format!(
                    "initial_state may not contain {}",
                    s.kind
                )));
            }
        }
        let alias = match &req.room_alias_name {
            Some(local) => {
                if local.is_empty() || local.contains(':') || local.contains(char::is_whitespace) {
                    return Err(Error::new(
                        ErrorKind::InvalidParam,
                        "Invalid room_alias_name",
                    ));
                }
                let alias = OwnedRoomAliasId::try_from(format!("#{local}:{}", self.server_name))
                    .map_err(|_| Error::invalid_param("Invalid room_alias_name"))?;
                if self.store.get_alias(alias.as_str()).await?.is_some() {
                    return Err(Error::new(ErrorKind::RoomInUse, "Room alias already taken"));
                }
                Some(alias)
            }
            None => None,
        };

        // 1. The create event.
        let mut create = req.creation_content.clone().unwrap_or_default();
        create.insert("room_version".into(), json!(version.as_str()));
        if !rules.authorization.use_room_create_sender {
            create.insert("creator".into(), json!(creator.as_str()));
        } else {
            create.remove("creator");
        }
        let (room_id, _) = self
            .append_create(creator, &version, Value::Object(create.clone()))
            .await?;

        // 2. The creator joins.
        let profile = profile_of(creator.to_owned()).await?;
        let mut join = Map::new();
        join.insert("membership".into(), json!("join"));
        if let Some(d) = &profile.displayname {
            join.insert("displayname".into(), json!(d));
        }
        if let Some(a) = &profile.avatar_url {
            join.insert("avatar_url".into(), json!(a));
        }
        if req.is_direct {
            join.insert("is_direct".into(), json!(true));
        }
        self.append(
            &room_id,
            creator,
            NewPdu::state("m.room.member", creator.as_str(), Value::Object(join)),
        )
        .await?;

        // 3. Power levels.
        let creators_privileged = rules.authorization.explicitly_privilege_room_creators;
        let additional: Vec<String> = create
            .get("additional_creators")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut users = Map::new();
        if !creators_privileged {
            users.insert(creator.to_string(), json!(100));
        }
        if preset == "trusted_private_chat" {
            for u in &req.invite {
                if !(creators_privileged && additional.iter().any(|a| a == u.as_str())) {
                    users.insert(u.to_string(), json!(100));
                }
            }
        }
        let mut pl = json!({
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.name": 50,
                "m.room.power_levels": 100,
                "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50,
                "m.room.avatar": 50,
                "m.room.tombstone": if creators_privileged { 150 } else { 100 },
                "m.room.server_acl": 100,
                "m.room.encryption": 100,
            },
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": 0,
            "notifications": {"room": 50},
        });
        if let (Some(over), Value::Object(base)) = (&req.power_level_content_override, &mut pl) {
            for (k, v) in over {
                base.insert(k.clone(), v.clone());
            }
        }
        self.append(
            &room_id,
            creator,
            NewPdu::state("m.room.power_levels", "", pl),
        )
        .await?;

        // 4. Canonical alias.
        if let Some(alias) = &alias {
            self.store
                .put_alias(alias.as_str(), room_id.as_str(), creator.as_str())
                .await?;
            self.append(
                &room_id,
                creator,
                NewPdu::state(
                    "m.room.canonical_alias",
                    "",
                    json!({"alias": alias.as_str()}),
                ),
            )
            .await?;
        }

        // 5. Preset state, unless initial_state overrides it.
        let overridden = |kind: &str| {
            req.initial_state
                .iter()
                .any(|s| s.kind == kind && s.state_key.is_empty())
        };
        let (join_rule, guest) = match preset.as_str() {
            "public_chat" => ("public", "forbidden"),
            _ => ("invite", "can_join"),
        };
        if !overridden("m.room.join_rules") {
            self.append(
                &room_id,
                creator,
                NewPdu::state("m.room.join_rules", "", json!({"join_rule": join_rule})),
            )
            .await?;
        }
        if !overridden("m.room.history_visibility") {
            self.append(
                &room_id,
                creator,
                NewPdu::state(
                    "m.room.history_visibility",
                    "",
                    json!({"history_visibility": "shared"}),
                ),
            )
            .await?;
        }
        if !overridden("m.room.guest_access") {
            self.append(
                &room_id,
                creator,
                NewPdu::state("m.room.guest_access", "", json!({"guest_access": guest})),
            )
            .await?;
        }

        // 6. Initial state.
        for s in &req.initial_state {
            self.append(
                &room_id,
                creator,
                NewPdu::state(&s.kind, &s.state_key, Value::Object(s.content.clone())),
            )
            .await?;
        }

        // 7. Name and topic.
        if let Some(name) = &req.name {
            self.append(
                &room_id,
                creator,
                NewPdu::state("m.room.name", "", json!({"name": name})),
            )
            .await?;
        }
        if let Some(topic) = &req.topic {
            let content = json!({
                "topic": topic,
                "m.topic": {"m.text": [{"body": topic, "mimetype": "text/plain"}]},
            });
            self.append(
                &room_id,
                creator,
                NewPdu::state("m.room.topic", "", content),
            )
            .await?;
        }

        // 8. Invites.
        for invitee in &req.invite {
            let p = profile_of(invitee.clone()).await.unwrap_or_default();
            self.invite(&room_id, creator, invitee, &p, None, req.is_direct)
                .await?;
        }

        if req.visibility.as_deref() == Some("public") {
            self.store
                .set_room_published(room_id.as_str(), true)
                .await?;
        }
        Ok(room_id)
    }
}

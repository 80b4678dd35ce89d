//! Profiles: display name and avatar. A change is copied into the user's `m.room.member` event in
//! every room they are joined to, so that other members see it.

use std::collections::HashMap;
use std::sync::Arc;

use feldpost_storage::Store;
use parking_lot::Mutex;
use ruma::{MxcUri, OwnedUserId, UserId};

use crate::rooms::Rooms;
use crate::rooms::membership::Profile;
use crate::{Error, Result};

/// The longest display name accepted, in characters.
pub const MAX_DISPLAYNAME_CHARS: usize = 256;
/// The longest avatar URL accepted, in bytes.
pub const MAX_AVATAR_URL_BYTES: usize = 1000;

/// The profile fields this server stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Displayname,
    AvatarUrl,
}

impl Field {
    pub fn parse(key: &str) -> Option<Self> {
        match key {
            "displayname" => Some(Field::Displayname),
            "avatar_url" => Some(Field::AvatarUrl),
            _ => None,
        }
    }
}

pub struct Profiles {
    store: Arc<dyn Store>,
    rooms: Arc<Rooms>,
    /// One lock per user, so that concurrent changes reach the rooms in the order they were stored.
    locks: Mutex<HashMap<OwnedUserId, Arc<tokio::sync::Mutex<()>>>>,
}

impl Profiles {
    pub fn new(store: Arc<dyn Store>, rooms: Arc<Rooms>) -> Self {
        Self {
            store,
            rooms,
            locks: Mutex::default(),
        }
    }

    /// The profile of a user of this server; `M_NOT_FOUND` for anyone else.
    pub async fn get(&self, user: &UserId) -> Result<Profile> {
        let u = self
            .store
            .get_user(user.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Profile not found"))?;
        Ok(Profile {
            displayname: u.displayname,
            avatar_url: u.avatar_url,
        })
    }

    /// Sets (or with `None` or `""` removes) a field of the user's own profile.
    pub async fn set(&self, user: &UserId, field: Field, value: Option<&str>) -> Result<()> {
        let value = value.filter(|v| !v.is_empty());
        match (field, value) {
            (_, None) => {}
            (Field::Displayname, Some(v)) => {
                if v.chars().count() > MAX_DISPLAYNAME_CHARS {
                    return Err(Error::invalid_param(format!(
                        "displayname may be at most {MAX_DISPLAYNAME_CHARS} characters"
                    )));
                }
            }
            (Field::AvatarUrl, Some(v)) => {
                if v.len() > MAX_AVATAR_URL_BYTES {
                    return Err(Error::invalid_param(format!(
                        "avatar_url may be at most {MAX_AVATAR_URL_BYTES} bytes"
                    )));
                }
                if !<&MxcUri>::from(v).is_valid() {
                    return Err(Error::invalid_param("avatar_url must be an mxc:// URI"));
                }
            }
        }
        let lock = self
            .locks
            .lock()
            .entry(user.to_owned())
            .or_default()
            .clone();
        let result = {
            let _guard = lock.lock().await;
            self.set_locked(user, field, value).await
        };
        drop(lock);
        self.locks.lock().retain(|_, l| Arc::strong_count(l) > 1);
        result
    }

    async fn set_locked(&self, user: &UserId, field: Field, value: Option<&str>) -> Result<()> {
        let mut profile = self.get(user).await?;
        let slot = match field {
            Field::Displayname => &mut profile.displayname,
            Field::AvatarUrl => &mut profile.avatar_url,
        };
        if slot.as_deref() == value {
            return Ok(());
        }
        *slot = value.map(str::to_owned);
        match field {
            Field::Displayname => self.store.set_displayname(user.as_str(), value).await?,
            Field::AvatarUrl => self.store.set_avatar_url(user.as_str(), value).await?,
        }
        self.rooms.update_profile_in_rooms(user, &profile).await
    }
}

//! Accounts, devices and access tokens: registration, login, logout, passwords, deactivation,
//! profiles. Passwords are hashed with argon2; access tokens are random and stored as SHA-256.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use feldpost_storage::{DeviceRecord, DeviceSighting, NewUser, Store, UserRecord};
use rand::Rng;
use rand::distributions::Alphanumeric;
use ruma::{OwnedServerName, OwnedUserId, UserId};
use sha2::{Digest, Sha256};

use crate::config::RegistrationConfig;
use crate::notifier::Notifier;
use crate::rooms::append::now_ms;
use crate::rooms::membership::Profile;
use crate::{Error, ErrorKind, Result};

/// Who is making an authenticated request.
#[derive(Debug, Clone)]
pub struct Requester {
    pub user_id: OwnedUserId,
    pub device_id: String,
    pub is_admin: bool,
}

/// A new session handed to a client.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: String,
    pub access_token: String,
}

pub struct Accounts {
    store: Arc<dyn Store>,
    server_name: OwnedServerName,
    config: RegistrationConfig,
    /// Wakes the syncs that report device-list changes when devices are deleted.
    notifier: Arc<Notifier>,
    /// Devices seen and not written yet, by user and device id: where, and when. Written
    /// together by `flush_seen`, every second and before anything reads last-seen data: with
    /// 80,000 clients, a write of its own per device every five minutes was 267 write
    /// transactions a second. Informational data, so a crash may lose the last second of it.
    seen: parking_lot::Mutex<foldhash::HashMap<(String, String), (String, i64)>>,
    /// Authenticated tokens (by their SHA-256) and the position they were checked at; void as
    /// soon as any credential changes after it (logout, device deletion, deactivation, admin
    /// flag).
    authenticated: parking_lot::Mutex<foldhash::HashMap<[u8; 32], CachedToken>>,
}

struct CachedToken {
    at: i64,
    requester: Requester,
    /// When the token's device was last recorded as seen: that is recorded once per
    /// `TOUCH_INTERVAL`, not once per request. Kept here, with the entry every request looks up
    /// anyway, and carried over when the entry is checked again.
    touched: Option<std::time::Instant>,
}

const TOUCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random_string(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Whether a localpart is one the spec allows for new users.
pub fn valid_localpart(local: &str) -> bool {
    !local.is_empty()
        && local
            .chars()
            .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+'))
}

impl Accounts {
    pub fn new(
        store: Arc<dyn Store>,
        server_name: OwnedServerName,
        config: RegistrationConfig,
    ) -> Self {
        Self {
            store,
            server_name,
            config,
            notifier: Arc::new(Notifier::default()),
            seen: Default::default(),
            authenticated: Default::default(),
        }
    }

    /// Wakes parked syncs through `notifier` when devices are deleted (without it, as in offline
    /// admin commands, nobody is parked to be woken).
    pub fn with_notifier(mut self, notifier: Arc<Notifier>) -> Self {
        self.notifier = notifier;
        self
    }

    pub fn registration_open(&self) -> bool {
        self.config.open
    }

    fn argon2(&self) -> Result<Argon2<'static>> {
        let params = Params::new(
            self.config.argon2_memory_kib,
            self.config.argon2_iterations,
            1,
            None,
        )
        .map_err(|e| Error::internal(format!("argon2 parameters: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    async fn hash_password(&self, password: &str) -> Result<String> {
        let argon = self.argon2()?;
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
            argon
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| Error::internal(format!("hashing failed: {e}")))
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?
    }

    async fn verify_password(&self, hash: &str, password: &str) -> bool {
        let (hash, password) = (hash.to_owned(), password.to_owned());
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false)
    }

    /// Parses a localpart or full user id into a local user id, `M_INVALID_USERNAME` otherwise.
    pub fn local_user_id(&self, name: &str) -> Result<OwnedUserId> {
        let local = if let Some(rest) = name.strip_prefix('@') {
            let (local, server) = rest
                .split_once(':')
                .ok_or_else(|| Error::new(ErrorKind::InvalidUsername, "Invalid user id"))?;
            if server != self.server_name.as_str() {
                return Err(Error::new(
                    ErrorKind::InvalidUsername,
                    "User id is not on this server",
                ));
            }
            local
        } else {
            name
        };
        if !valid_localpart(local) {
            return Err(Error::new(
                ErrorKind::InvalidUsername,
                "User ID may only contain a-z, 0-9, '.', '_', '=', '-', '/' and '+'",
            ));
        }
        let id = format!("@{local}:{}", self.server_name);
        if id.len() > 255 {
            return Err(Error::new(
                ErrorKind::InvalidUsername,
                "User ID is too long",
            ));
        }
        OwnedUserId::try_from(id)
            .map_err(|_| Error::new(ErrorKind::InvalidUsername, "Invalid user id"))
    }

    /// `M_USER_IN_USE` if taken, `M_INVALID_USERNAME` if invalid.
    pub async fn check_available(&self, name: &str) -> Result<OwnedUserId> {
        let user_id = self.local_user_id(name)?;
        if self.store.get_user(user_id.as_str()).await?.is_some() {
            return Err(Error::new(ErrorKind::UserInUse, "User ID already taken"));
        }
        Ok(user_id)
    }

    fn check_password_strength(&self, password: &str) -> Result<()> {
        if password.chars().count() < self.config.min_password_length {
            return Err(Error::new(
                ErrorKind::WeakPassword,
                format!(
                    "Password must be at least {} characters",
                    self.config.min_password_length
                ),
            ));
        }
        Ok(())
    }

    /// Creates an account. `username` `None` picks a random localpart.
    pub async fn register(
        &self,
        username: Option<&str>,
        password: Option<&str>,
        is_admin: bool,
    ) -> Result<OwnedUserId> {
        let user_id = match username {
            Some(name) => {
                if name.chars().any(|c| c.is_ascii_uppercase()) {
                    return Err(Error::new(
                        ErrorKind::InvalidUsername,
                        "User ID must be lowercase",
                    ));
                }
                self.check_available(name).await?
            }
            None => self.local_user_id(&random_string(12).to_lowercase())?,
        };
        let hash = match password {
            Some(p) => {
                self.check_password_strength(p)?;
                Some(self.hash_password(p).await?)
            }
            None => None,
        };
        self.store
            .create_user(NewUser {
                user_id: user_id.to_string(),
                password_hash: hash,
                displayname: Some(user_id.localpart().to_owned()),
                is_admin,
                created_ms: now_ms(),
            })
            .await
            .map_err(|e| match e {
                feldpost_storage::StorageError::Conflict(_) => {
                    Error::new(ErrorKind::UserInUse, "User ID already taken")
                }
                other => other.into(),
            })?;
        tracing::info!(user = %user_id, "registered user");
        Ok(user_id)
    }

    /// Creates a device (or replaces the session of an existing one) and a token for it.
    pub async fn create_session(
        &self,
        user_id: &UserId,
        device_id: Option<&str>,
        display_name: Option<&str>,
    ) -> Result<Session> {
        let device_id = match device_id {
            Some(d) if !d.is_empty() => d.to_owned(),
            _ => random_string(10).to_uppercase(),
        };
        let token = format!("fpt_{}", random_string(40));
        self.store
            .upsert_device_with_token(
                user_id.as_str(),
                &device_id,
                display_name,
                &hash_token(&token),
                now_ms(),
            )
            .await?;
        Ok(Session {
            user_id: user_id.to_owned(),
            device_id,
            access_token: token,
        })
    }

    /// Checks a password login. Failures are indistinguishable to the caller.
    pub async fn check_password(&self, user_id: &UserId, password: &str) -> Result<UserRecord> {
        let forbidden = || Error::forbidden("Invalid username or password");
        let user = self
            .store
            .get_user(user_id.as_str())
            .await?
            .ok_or_else(forbidden)?;
        if user.deactivated {
            return Err(Error::new(
                ErrorKind::UserDeactivated,
                "This account has been deactivated",
            ));
        }
        let hash = user.password_hash.clone().ok_or_else(forbidden)?;
        if !self.verify_password(&hash, password).await {
            return Err(forbidden());
        }
        Ok(user)
    }

    /// Resolves a request's access token, and tells whether its device is due to be recorded as
    /// seen (see `seen`): the first request of a token, then once per `TOUCH_INTERVAL`.
    pub async fn authenticate_seen(&self, token: &str) -> Result<(Requester, bool)> {
        let unknown = || {
            Error::new(
                ErrorKind::UnknownToken { soft_logout: false },
                "Unknown access token",
            )
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = std::time::Instant::now();
        let due = |touched: &mut Option<std::time::Instant>| {
            let due = touched.is_none_or(|at| now.duration_since(at) >= TOUCH_INTERVAL);
            if due {
                *touched = Some(now);
            }
            due
        };
        let mut touched = None;
        if let Some(c) = self.authenticated.lock().get_mut(&digest) {
            if !self.store.changes().credentials_changed(c.at) {
                let due = due(&mut c.touched);
                return Ok((c.requester.clone(), due));
            }
            touched = c.touched;
        }
        // Read the position first: a logout racing with the lookup voids the entry.
        let at = self.store.current_position();
        let owner = self
            .store
            .token_owner(&hex::encode(digest))
            .await?
            .ok_or_else(unknown)?;
        let user = self
            .store
            .get_user(&owner.user_id)
            .await?
            .ok_or_else(unknown)?;
        if user.deactivated {
            return Err(unknown());
        }
        let user_id = OwnedUserId::try_from(owner.user_id)
            .map_err(|_| Error::internal("bad stored user id"))?;
        let requester = Requester {
            user_id,
            device_id: owner.device_id,
            is_admin: user.is_admin,
        };
        let due = due(&mut touched);
        let mut cache = self.authenticated.lock();
        if cache.len() >= 500_000 {
            cache.clear();
        }
        cache.insert(
            digest,
            CachedToken {
                at,
                requester: requester.clone(),
                touched,
            },
        );
        Ok((requester, due))
    }

    pub async fn logout(&self, requester: &Requester) -> Result<()> {
        self.store
            .delete_devices(
                requester.user_id.as_str(),
                std::slice::from_ref(&requester.device_id),
            )
            .await?;
        self.devices_removed(&requester.user_id).await
    }

    pub async fn logout_all(&self, user_id: &UserId) -> Result<()> {
        self.store
            .delete_all_devices(user_id.as_str(), None)
            .await?;
        self.devices_removed(user_id).await
    }

    /// Deleting devices deletes their end-to-end encryption keys too (in the same transaction),
    /// which changes the user's device list: the syncs that report it are woken.
    async fn devices_removed(&self, user_id: &UserId) -> Result<()> {
        self.notifier.wake_user(user_id.as_str());
        for m in self.store.rooms_for_user(user_id.as_str()).await? {
            if m.membership == "join" {
                self.notifier.wake_room(&m.room_id);
            }
        }
        Ok(())
    }

    pub async fn change_password(
        &self,
        requester: &Requester,
        new_password: &str,
        logout_devices: bool,
    ) -> Result<()> {
        self.check_password_strength(new_password)?;
        let hash = self.hash_password(new_password).await?;
        self.store
            .set_password_hash(requester.user_id.as_str(), &hash)
            .await?;
        if logout_devices {
            self.store
                .delete_all_devices(requester.user_id.as_str(), Some(&requester.device_id))
                .await?;
            self.devices_removed(&requester.user_id).await?;
        }
        Ok(())
    }

    pub async fn deactivate(&self, user_id: &UserId) -> Result<()> {
        self.store.deactivate_user(user_id.as_str()).await?;
        self.devices_removed(user_id).await?;
        tracing::info!(user = %user_id, "deactivated user");
        Ok(())
    }

    pub async fn user(&self, user_id: &UserId) -> Result<Option<UserRecord>> {
        Ok(self.store.get_user(user_id.as_str()).await?)
    }

    pub async fn profile(&self, user_id: &UserId) -> Result<Profile> {
        let u = self
            .store
            .get_user(user_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Profile not found"))?;
        Ok(Profile {
            displayname: u.displayname,
            avatar_url: u.avatar_url,
        })
    }

    pub async fn set_displayname(&self, user_id: &UserId, name: Option<&str>) -> Result<()> {
        Ok(self.store.set_displayname(user_id.as_str(), name).await?)
    }

    pub async fn set_avatar_url(&self, user_id: &UserId, url: Option<&str>) -> Result<()> {
        Ok(self.store.set_avatar_url(user_id.as_str(), url).await?)
    }

    pub async fn devices(&self, user_id: &UserId) -> Result<Vec<DeviceRecord>> {
        self.flush_seen().await?;
        Ok(self.store.list_devices(user_id.as_str()).await?)
    }

    pub async fn device(&self, user_id: &UserId, device_id: &str) -> Result<Option<DeviceRecord>> {
        self.flush_seen().await?;
        Ok(self.store.get_device(user_id.as_str(), device_id).await?)
    }

    pub async fn set_device_name(
        &self,
        user_id: &UserId,
        device_id: &str,
        name: Option<&str>,
    ) -> Result<()> {
        if !self
            .store
            .set_device_name(user_id.as_str(), device_id, name)
            .await?
        {
            return Err(Error::not_found("Device not found"));
        }
        Ok(())
    }

    pub async fn delete_devices(&self, user_id: &UserId, ids: &[String]) -> Result<Vec<String>> {
        let deleted = self.store.delete_devices(user_id.as_str(), ids).await?;
        self.devices_removed(user_id).await?;
        Ok(deleted)
    }

    /// Whether the device's last-seen data is due for an update; marks it updated if so.
    /// Records that the device was seen from `ip` now; written with the next `flush_seen`.
    pub fn seen(&self, r: &Requester, ip: String) {
        self.seen
            .lock()
            .insert((r.user_id.to_string(), r.device_id.clone()), (ip, now_ms()));
    }

    /// Writes the sightings recorded since the last flush, in one write.
    pub async fn flush_seen(&self) -> Result<()> {
        let pending = std::mem::take(&mut *self.seen.lock());
        if pending.is_empty() {
            return Ok(());
        }
        let sightings = pending
            .into_iter()
            .map(|((user_id, device_id), (ip, at_ms))| DeviceSighting {
                user_id,
                device_id,
                ip,
                at_ms,
            })
            .collect();
        Ok(self.store.touch_devices(sightings).await?)
    }

    /// Records at once that the device is being seen from `ip` (when a request reads its own
    /// last-seen data).
    pub async fn touch_device(&self, r: &Requester, ip: &str) -> Result<()> {
        self.seen(r, ip.to_owned());
        self.flush_seen().await
    }

    pub async fn search(
        &self,
        searcher: &UserId,
        term: &str,
        limit: u32,
    ) -> Result<(Vec<UserRecord>, bool)> {
        let mut users = self
            .store
            .search_users(searcher.as_str(), term, limit)
            .await?;
        let limited = users.len() > limit as usize;
        users.truncate(limit as usize);
        Ok((users, limited))
    }

    pub async fn count_users(&self) -> Result<u64> {
        Ok(self.store.count_users().await?)
    }
}

/// A random opaque id (UIA sessions, media ids).
pub fn random_id(len: usize) -> String {
    random_string(len)
}

/// URL-safe random token text.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill(&mut buf[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

//! Feldpost's domain services: accounts, rooms, sync, media and the rest. The API layer calls
//! these; these call storage. Services never call up into the API, and take the services they
//! need as constructor arguments, so the graph stays acyclic (see ARCHITECTURE.md).

pub mod account_data;
pub mod accounts;
pub mod admin;
pub mod config;
pub mod directory;
pub mod enrollment;
mod error;
pub mod fanout;
pub mod filter;
mod generations;
pub mod key_backup;
pub mod keys;
pub mod media;
pub mod notifier;
pub mod pdu;
mod per_device;
pub mod presence;
pub mod profile;
pub mod push;
pub mod ratelimit;
pub mod receipts;
pub mod relations;
pub mod rooms;
pub mod server_notices;
pub mod signing_key;
pub mod sync;
pub mod timeline;
pub mod to_device;
pub mod typing;
pub mod uia;

use std::sync::Arc;

use feldpost_storage::Store;
use feldpost_storage::sqlite::SqliteStore;
use ruma::{OwnedServerName, RoomVersionId};

pub use error::{Error, ErrorKind, Result};

use crate::accounts::Accounts;
use crate::config::Config;
use crate::directory::Directory;
use crate::media::Media;
use crate::notifier::Notifier;
use crate::ratelimit::RateLimiter;
use crate::relations::Relations;
use crate::rooms::Rooms;
use crate::signing_key::SigningKey;
use crate::sync::Sync;
use crate::timeline::Timeline;
use crate::typing::Typing;
use crate::uia::Uia;
use crate::{account_data::AccountData, presence::Presence, profile::Profiles, receipts::Receipts};

/// Every service of one server, wired together.
pub struct Services {
    pub config: Config,
    pub server_name: OwnedServerName,
    pub store: Arc<dyn Store>,
    pub key: Arc<SigningKey>,
    pub notifier: Arc<Notifier>,
    pub accounts: Arc<Accounts>,
    pub rooms: Arc<Rooms>,
    pub timeline: Arc<Timeline>,
    pub typing: Arc<Typing>,
    pub directory: Directory,
    pub relations: Relations,
    pub account_data: Arc<AccountData>,
    pub receipts: Receipts,
    pub presence: Presence,
    pub profiles: Arc<Profiles>,
    pub sync: Sync,
    pub filters: filter::Filters,
    pub uia: Uia,
    pub rate_limiter: RateLimiter,
    pub media: Media,
    pub push: Arc<push::Push>,
    pub keys: keys::Keys,
    pub to_device: to_device::ToDevice,
    pub key_backup: key_backup::KeyBackup,
    pub registration_tokens: enrollment::RegistrationTokens,
    pub server_notices: server_notices::ServerNotices,
    pub admin: admin::Admin,
}

impl Services {
    /// Opens the data directory (database, signing key) and builds the services.
    pub fn open(config: Config) -> Result<Arc<Self>> {
        let server_name = OwnedServerName::try_from(config.server_name.as_str()).map_err(|_| {
            Error::invalid_param(format!("invalid server name {:?}", config.server_name))
        })?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            Error::internal(format!(
                "creating data directory {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&config.data_dir.join("feldpost.sqlite"))
                .map_err(|e| Error::internal(format!("opening database: {e}")))?,
        );
        let key = Arc::new(SigningKey::load_or_generate(
            &config.data_dir.join("signing.key"),
        )?);
        let default_version = RoomVersionId::try_from(config.rooms.default_room_version.as_str())
            .ok()
            .filter(|v| rooms::SUPPORTED_VERSIONS.contains(&v.as_str()))
            .ok_or_else(|| {
                Error::invalid_param("rooms.default_room_version must be 10, 11 or 12")
            })?;
        let notifier = Arc::new(Notifier::default());
        let rooms = Arc::new(Rooms::new(
            store.clone(),
            server_name.clone(),
            key.clone(),
            notifier.clone(),
            default_version,
        ));
        let timeline = Arc::new(Timeline::new(store.clone(), rooms.clone()));
        let typing = Arc::new(Typing::new(notifier.clone()));
        let directory = Directory::new(store.clone(), rooms.clone());
        let relations = Relations::new(store.clone(), timeline.clone());
        let account_data = Arc::new(AccountData::new(store.clone(), notifier.clone()));
        let receipts = Receipts::new(
            store.clone(),
            rooms.clone(),
            notifier.clone(),
            account_data.clone(),
        );
        let presence = Presence::new(store.clone(), notifier.clone());
        let profiles = Arc::new(Profiles::new(store.clone(), rooms.clone()));
        let push = Arc::new(push::Push::new(
            &config,
            store.clone(),
            rooms.clone(),
            account_data.clone(),
        )?);
        let sync = Sync::new(
            store.clone(),
            rooms.clone(),
            timeline.clone(),
            typing.clone(),
            notifier.clone(),
            config.limits.max_timeline_limit,
        )
        .with_push(push.clone());
        let media = Media::open(
            store.clone(),
            server_name.clone(),
            config.data_dir.join("media"),
            config.media.max_upload_size,
        )?;
        let accounts = Arc::new(
            Accounts::new(
                store.clone(),
                server_name.clone(),
                config.registration.clone(),
            )
            .with_notifier(notifier.clone()),
        );
        let registration_tokens = enrollment::RegistrationTokens::new(
            store.clone(),
            server_name.clone(),
            config.admin.enrollment_lifetime_minutes,
        );
        let server_notices = server_notices::ServerNotices::new(
            store.clone(),
            rooms.clone(),
            account_data.clone(),
            server_name.clone(),
            &config.admin.notices_localpart,
            &config.admin.notices_displayname,
        )?;
        let admin = admin::Admin::new(
            store.clone(),
            accounts.clone(),
            profiles.clone(),
            rooms.clone(),
            timeline.clone(),
            server_name.clone(),
            config.registration.shared_secret.clone(),
            server_notices.user_id().to_owned(),
        );
        let keys = keys::Keys::new(store.clone(), notifier.clone(), server_name.clone());
        let to_device =
            to_device::ToDevice::new(store.clone(), notifier.clone(), server_name.clone());
        let key_backup = key_backup::KeyBackup::new(store.clone());
        let filters = filter::Filters::new(store.clone());
        Ok(Arc::new(Self {
            filters,
            media,
            push,
            keys,
            to_device,
            key_backup,
            accounts,
            registration_tokens,
            server_notices,
            admin,
            rate_limiter: RateLimiter::new(config.rate_limits.clone()),
            uia: Uia::default(),
            config,
            server_name,
            store,
            key,
            notifier,
            rooms,
            timeline,
            typing,
            directory,
            relations,
            account_data,
            receipts,
            presence,
            profiles,
            sync,
        }))
    }

    /// Periodic upkeep: typing timeouts, notifier pruning; once at the start, the largest
    /// rooms' state read into memory.
    pub fn spawn_background(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        // Push evaluation, pusher queues and the distributor run in tasks of their own.
        self.push.start();
        let (rooms, push) = (self.rooms.clone(), self.push.clone());
        tokio::spawn(async move {
            let warmed = rooms.warm_largest().await;
            push.warm(&warmed).await;
        });
        let s = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                s.typing.expire();
                if let Err(e) = s.accounts.flush_seen().await {
                    tracing::debug!(error = %e, "could not record device activity");
                }
                n += 1;
                if n.is_multiple_of(60) {
                    s.notifier.prune();
                }
            }
        })
    }
}

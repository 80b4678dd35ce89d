//! Domain-level storage for Feldpost: traits that the services use, and the SQLite engine that
//! implements them. A PostgreSQL engine will implement the same traits; nothing above this crate
//! sees SQL.

mod records;
pub mod sqlite;

use async_trait::async_trait;
pub use records::*;

/// Errors from a storage engine. Callers map `Conflict` and `NotFound` to Matrix errors; anything
/// else is an internal failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Users, devices and access tokens.
#[async_trait]
pub trait AccountStore: Send + Sync {
    async fn create_user(&self, user: NewUser) -> Result<()>;
    async fn get_user(&self, user_id: &str) -> Result<Option<UserRecord>>;
    async fn count_users(&self) -> Result<u64>;
    async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<()>;
    async fn set_displayname(&self, user_id: &str, name: Option<&str>) -> Result<()>;
    async fn set_avatar_url(&self, user_id: &str, url: Option<&str>) -> Result<()>;
    /// Marks the user deactivated and removes every device and token.
    async fn deactivate_user(&self, user_id: &str) -> Result<()>;
    /// Creates (or replaces the token of) a device and stores the hashed access token.
    async fn upsert_device_with_token(
        &self,
        user_id: &str,
        device_id: &str,
        display_name: Option<&str>,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<()>;
    async fn token_owner(&self, token_hash: &str) -> Result<Option<TokenOwner>>;
    async fn delete_token(&self, token_hash: &str) -> Result<()>;
    async fn touch_device(
        &self,
        user_id: &str,
        device_id: &str,
        ip: &str,
        now_ms: i64,
    ) -> Result<()>;
    async fn list_devices(&self, user_id: &str) -> Result<Vec<DeviceRecord>>;
    async fn get_device(&self, user_id: &str, device_id: &str) -> Result<Option<DeviceRecord>>;
    async fn set_device_name(
        &self,
        user_id: &str,
        device_id: &str,
        name: Option<&str>,
    ) -> Result<bool>;
    /// Deletes the devices and their tokens; returns the ids that existed.
    async fn delete_devices(&self, user_id: &str, device_ids: &[String]) -> Result<Vec<String>>;
    /// Deletes every device of the user except `keep` (if given).
    async fn delete_all_devices(&self, user_id: &str, keep: Option<&str>) -> Result<()>;
    /// Up to `limit + 1` users matching `term` (case-insensitively, in user id or display name) who
    /// share a room with `searcher`, are joined to a public, world-readable or published room, or
    /// whose user id is `term` exactly; best matches first.
    async fn search_users(&self, searcher: &str, term: &str, limit: u32)
    -> Result<Vec<UserRecord>>;
}

/// Rooms, their events (PDUs), state snapshots, memberships, relations and aliases.
#[async_trait]
pub trait RoomStore: Send + Sync {
    async fn create_room(&self, room: NewRoom) -> Result<()>;
    async fn get_room(&self, room_id: &str) -> Result<Option<RoomRecord>>;
    async fn set_room_published(&self, room_id: &str, published: bool) -> Result<()>;
    async fn published_rooms(&self) -> Result<Vec<String>>;
    /// Persists an event with everything derived from it in one transaction and returns its
    /// stream position. Durable when this returns.
    async fn persist_event(&self, event: NewEvent) -> Result<PersistedEvent>;
    async fn get_event(&self, event_id: &str) -> Result<Option<StoredEvent>>;
    async fn get_events(&self, event_ids: &[String]) -> Result<Vec<StoredEvent>>;
    async fn event_for_txn(
        &self,
        user_id: &str,
        device_id: &str,
        txn_id: &str,
    ) -> Result<Option<String>>;
    async fn room_head(&self, room_id: &str) -> Result<Option<RoomHead>>;
    async fn state_group(&self, group: i64) -> Result<Option<StateGroupRecord>>;
    async fn current_state(&self, room_id: &str) -> Result<Vec<StateEntry>>;
    /// Events of a room with stream position in `(after, up_to]`, newest first, at most `limit`.
    async fn room_events_backward(
        &self,
        room_id: &str,
        before: i64,
        after: i64,
        limit: u32,
        filter: &EventFilter,
    ) -> Result<Vec<StoredEvent>>;
    /// Events of a room with stream position in `(after, before)`, oldest first.
    async fn room_events_forward(
        &self,
        room_id: &str,
        after: i64,
        before: i64,
        limit: u32,
        filter: &EventFilter,
    ) -> Result<Vec<StoredEvent>>;
    /// The current membership of the user in every room the server knows them in.
    async fn rooms_for_user(&self, user_id: &str) -> Result<Vec<MembershipRecord>>;
    async fn room_members(&self, room_id: &str) -> Result<Vec<MembershipRecord>>;
    async fn membership(&self, room_id: &str, user_id: &str) -> Result<Option<MembershipRecord>>;
    async fn forget_room(&self, room_id: &str, user_id: &str) -> Result<()>;
    async fn relations(&self, query: RelationQuery) -> Result<Vec<StoredEvent>>;
    /// Like `relations`, also following relations of related events, up to `depth` levels.
    async fn relations_recursive(
        &self,
        query: RelationQuery,
        depth: u32,
    ) -> Result<Vec<StoredEvent>>;
    /// How many `m.thread` events point at `root`, and whether `user_id` sent one of them.
    async fn thread_summary(&self, room_id: &str, root: &str, user_id: &str)
    -> Result<(u64, bool)>;
    async fn threads(
        &self,
        room_id: &str,
        before: i64,
        limit: u32,
        participated_by: Option<&str>,
    ) -> Result<Vec<(StoredEvent, i64)>>;
    async fn put_alias(&self, alias: &str, room_id: &str, creator: &str) -> Result<()>;
    async fn get_alias(&self, alias: &str) -> Result<Option<AliasRecord>>;
    async fn delete_alias(&self, alias: &str) -> Result<bool>;
    async fn aliases_for_room(&self, room_id: &str) -> Result<Vec<String>>;
    async fn shared_rooms(&self, a: &str, b: &str) -> Result<bool>;
}

/// Account data, receipts, filters, presence and media metadata: per-user records that sync reads.
#[async_trait]
pub trait UserDataStore: Send + Sync {
    async fn set_account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        kind: &str,
        content: &str,
    ) -> Result<i64>;
    async fn get_account_data(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        kind: &str,
    ) -> Result<Option<String>>;
    /// Account data of the user changed in `(after, up_to]` (all of it when `after` is 0).
    async fn account_data_since(
        &self,
        user_id: &str,
        after: i64,
        up_to: i64,
    ) -> Result<Vec<AccountDataRecord>>;
    async fn set_receipt(&self, receipt: ReceiptRecord) -> Result<i64>;
    /// The user's current receipt of one type and thread (`""` for unthreaded) in a room.
    async fn get_receipt(
        &self,
        room_id: &str,
        receipt_type: &str,
        user_id: &str,
        thread_id: &str,
    ) -> Result<Option<ReceiptRecord>>;
    async fn receipts_since(
        &self,
        room_id: &str,
        after: i64,
        up_to: i64,
    ) -> Result<Vec<ReceiptRecord>>;
    async fn put_filter(&self, user_id: &str, json: &str) -> Result<String>;
    async fn get_filter(&self, user_id: &str, filter_id: &str) -> Result<Option<String>>;
    async fn set_presence(&self, presence: PresenceRecord) -> Result<i64>;
    async fn get_presence(&self, user_id: &str) -> Result<Option<PresenceRecord>>;
    async fn presence_since(
        &self,
        user_ids: &[String],
        after: i64,
        up_to: i64,
    ) -> Result<Vec<PresenceRecord>>;
    async fn insert_media(&self, media: MediaRecord) -> Result<()>;
    async fn get_media(&self, media_id: &str) -> Result<Option<MediaRecord>>;
    /// Fills in a media id reserved without content (empty `content_hash`) by its uploader;
    /// false when it is unknown, someone else's or already has content.
    async fn complete_media(&self, media: MediaRecord) -> Result<bool>;
}

/// Everything a Feldpost server stores; one engine implements all of it.
pub trait Store: AccountStore + RoomStore + UserDataStore {
    /// The highest stream position whose writes are committed and visible.
    fn current_position(&self) -> i64;
}

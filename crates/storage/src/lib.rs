//! Domain-level storage for Feldpost: traits that the services use, and the SQLite engine that
//! implements them. A PostgreSQL engine will implement the same traits; nothing above this crate
//! sees SQL.

mod admin_records;
mod changes;
mod event_rows;
mod key_records;
mod push_records;
mod recent;
mod recent_notifications;
mod records;
pub mod sqlite;

pub use admin_records::*;
use async_trait::async_trait;
pub use changes::{ChangeIndex, ChangeKey};
pub use key_records::*;
pub use push_records::*;
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
    /// Records where and when devices were last seen, in one write.
    async fn touch_devices(&self, sightings: Vec<DeviceSighting>) -> Result<()>;
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
    /// The events among `event_ids` that exist, in no particular order.
    async fn get_events(&self, event_ids: &[String]) -> Result<Vec<StoredEvent>>;
    async fn event_for_txn(
        &self,
        user_id: &str,
        device_id: &str,
        txn_id: &str,
    ) -> Result<Option<String>>;
    async fn room_head(&self, room_id: &str) -> Result<Option<RoomHead>>;
    async fn state_group(&self, group: i64) -> Result<Option<StateGroupRecord>>;
    /// The group and its predecessors, newest first, down to a full snapshot (one read instead
    /// of one per delta).
    async fn state_group_chain(&self, group: i64) -> Result<Vec<StateGroupRecord>>;
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
    /// Up to `limit` rooms with at least `min_joined` joined members, the largest first.
    async fn largest_rooms(&self, min_joined: usize, limit: usize) -> Result<Vec<String>>;
    /// Joined and invited counts, and up to `heroes` joined or invited members other than
    /// `viewer` in user-id order — a room summary without loading every member.
    async fn member_summary(
        &self,
        room_id: &str,
        viewer: &str,
        heroes: u32,
    ) -> Result<MemberSummary>;
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
    /// One type of global account data of many users at once, for those who have it: (user,
    /// content). Fills caches for a whole room in one hop to the database.
    async fn global_account_data_of(
        &self,
        user_ids: Vec<String>,
        kind: &str,
    ) -> Result<Vec<(String, String)>>;
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

/// Administration: registration tokens and enrollments, the admin audit trail, listings for
/// operators, room purges and blocks, media quarantine and server-notice rooms.
#[async_trait]
pub trait AdminStore: Send + Sync {
    /// Stores a new token; `Conflict` when the token exists.
    async fn create_registration_token(&self, token: NewRegistrationToken) -> Result<i64>;
    /// The token with this hash, its pending count taken at `now_ms`.
    async fn registration_token(
        &self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<RegistrationTokenRecord>>;
    async fn registration_token_by_id(
        &self,
        id: i64,
        now_ms: i64,
    ) -> Result<Option<RegistrationTokenRecord>>;
    /// Every token (enrollments with `enrollments`, plain tokens without), newest first.
    async fn registration_tokens(
        &self,
        enrollments: bool,
        now_ms: i64,
    ) -> Result<Vec<RegistrationTokenRecord>>;
    /// Applies an update; false when the token is unknown.
    async fn update_registration_token(
        &self,
        token_hash: &str,
        update: RegistrationTokenUpdate,
    ) -> Result<bool>;
    async fn delete_registration_token(&self, token_hash: &str) -> Result<bool>;
    /// Marks a token revoked and drops its reservations; false when unknown or already revoked.
    async fn revoke_registration_token(&self, id: i64, now_ms: i64) -> Result<bool>;
    /// Atomically checks that the token is usable (known, not revoked or expired, and with a use
    /// left counting completed registrations and other sessions' live reservations) and
    /// reserves it for `session` until `expires_ms`.
    async fn reserve_registration_token(
        &self,
        token_hash: &str,
        session: &str,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<Reservation>;
    /// The live reservation of `session`, if any.
    async fn reserved_token(&self, session: &str, now_ms: i64) -> Result<Option<ClaimedToken>>;
    /// Turns the live reservation of `session` into a completed use: the reservation goes, the
    /// token's `completed` count rises. `None` when there is no live reservation or the token
    /// has been revoked meanwhile.
    async fn claim_registration_token(
        &self,
        session: &str,
        now_ms: i64,
    ) -> Result<Option<ClaimedToken>>;
    /// Gives back the use of a claim whose registration failed. The registration's UIA session
    /// ended with the claim, so no reservation is restored: a retry starts over.
    async fn unclaim_registration_token(&self, claim: &ClaimedToken) -> Result<()>;
    async fn record_registration_token_use(
        &self,
        token_id: i64,
        user_id: &str,
        now_ms: i64,
    ) -> Result<()>;
    async fn release_registration_token(&self, session: &str) -> Result<()>;

    async fn append_admin_audit(&self, entry: NewAuditEntry) -> Result<i64>;
    /// Audit entries with id below `before` (all when `None`), newest first.
    async fn admin_audit(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditRecord>>;

    /// A page of users and the number of users matching the filters.
    async fn list_users(&self, query: UserListQuery) -> Result<(Vec<UserListEntry>, u64)>;
    async fn set_user_admin(&self, user_id: &str, admin: bool) -> Result<bool>;
    async fn reactivate_user(&self, user_id: &str) -> Result<bool>;
    /// Active (not deactivated) server admins.
    async fn count_admins(&self) -> Result<u64>;
    /// `(room_id, user_id)` of deactivated users still joined, invited or knocking somewhere.
    async fn deactivated_memberships(&self) -> Result<Vec<(String, String)>>;

    async fn list_rooms(&self, query: RoomListQuery) -> Result<(Vec<RoomListEntry>, u64)>;
    async fn room_details(&self, room_id: &str, server_name: &str)
    -> Result<Option<RoomListEntry>>;
    /// Removes the room and everything stored about it.
    async fn purge_room(&self, room_id: &str) -> Result<()>;
    async fn set_room_blocked(&self, room_id: &str, by: Option<&str>, now_ms: i64) -> Result<()>;
    /// Who blocked the room, if it is blocked.
    async fn room_blocked_by(&self, room_id: &str) -> Result<Option<String>>;
    /// JSON of the room's events that carry a URL.
    async fn room_events_with_urls(&self, room_id: &str) -> Result<Vec<String>>;

    async fn list_user_media(
        &self,
        user_id: &str,
        from: u64,
        limit: u64,
        order: MediaOrder,
        descending: bool,
    ) -> Result<(Vec<MediaAdminEntry>, u64)>;
    /// Quarantines (`by` some) or releases (`by` none) media; returns how many changed.
    async fn set_media_quarantine(
        &self,
        media_ids: &[String],
        by: Option<&str>,
        now_ms: i64,
    ) -> Result<u64>;
    async fn media_quarantined_by(&self, media_id: &str) -> Result<Option<String>>;
    async fn user_media_ids(&self, user_id: &str) -> Result<Vec<String>>;

    async fn server_notice_room(&self, user_id: &str) -> Result<Option<String>>;
    async fn set_server_notice_room(&self, user_id: &str, room_id: &str) -> Result<()>;
    /// The user a server-notice room belongs to.
    async fn server_notice_room_owner(&self, room_id: &str) -> Result<Option<String>>;
}

/// End-to-end encryption: device and cross-signing keys, one-time and fallback keys, signatures,
/// device-list changes, send-to-device messages and key backups. Deleting a device (through
/// `AccountStore`) removes its keys and pending messages in the same transaction.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores a device's upload in one transaction. New or changed device keys record a
    /// device-list change and drop the signatures made of the old keys.
    async fn upload_keys(&self, upload: KeyUpload) -> Result<KeyUploadOutcome>;
    async fn device_keys(&self, user_id: &str, device_id: &str) -> Result<Option<String>>;
    /// Keys of the user's existing devices: all of them when `device_ids` is empty.
    async fn user_device_keys(
        &self,
        user_id: &str,
        device_ids: &[String],
    ) -> Result<Vec<DeviceKeysRecord>>;
    /// Unclaimed one-time keys of a device, per algorithm.
    async fn one_time_key_counts(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Vec<(String, u64)>>;
    /// Algorithms for which the device has a fallback key that no claim has handed out yet.
    async fn unused_fallback_key_types(
        &self,
        user_id: &str,
        device_id: &str,
    ) -> Result<Vec<String>>;
    /// Hands out one key per claim in one transaction: the device's oldest one-time key of the
    /// algorithm (removed), else its fallback key (marked used). Claims that find none are skipped.
    async fn claim_keys(&self, claims: Vec<KeyClaim>) -> Result<Vec<ClaimedKey>>;
    async fn cross_signing_keys(&self, user_id: &str) -> Result<Vec<CrossSigningKeyRecord>>;
    /// Stores cross-signing keys, removes the key types in `remove`, drops signatures of a
    /// replaced master key and records a device-list change for the user.
    async fn set_cross_signing_keys(
        &self,
        user_id: &str,
        keys: Vec<CrossSigningKeyRecord>,
        remove: Vec<String>,
    ) -> Result<()>;
    /// Every stored signature of the user's keys (the services filter what a viewer may see).
    async fn signatures_of(&self, target_user_id: &str) -> Result<Vec<SignatureRecord>>;
    /// Stores signatures and records device-list changes: `(user, viewer)`, where a viewer of
    /// `None` means everyone sharing a room with the user.
    async fn add_signatures(
        &self,
        signatures: Vec<SignatureRecord>,
        changes: Vec<(String, Option<String>)>,
    ) -> Result<()>;
    /// Users with a device-list change in `(after, up_to]` meant for everyone or for `viewer`.
    async fn device_list_changes(
        &self,
        viewer: &str,
        after: i64,
        up_to: i64,
    ) -> Result<Vec<String>>;
    /// Users who are joined to a room the user is joined to (the user included).
    async fn users_sharing_room(&self, user_id: &str) -> Result<Vec<String>>;
    /// Current memberships changed in `(after, up_to]` in rooms where the user is joined or whose
    /// own membership changed in that window (the user's own rows included).
    async fn membership_changes(
        &self,
        user_id: &str,
        after: i64,
        up_to: i64,
    ) -> Result<Vec<MembershipRecord>>;
    /// Queues messages to existing devices of local users, one stream position each, unless the
    /// sending device already used `txn_id` (then `None`). Returns the users who got a message.
    async fn queue_to_device(
        &self,
        sender: &str,
        sender_device: &str,
        txn_id: &str,
        event_type: &str,
        messages: Vec<NewToDevice>,
    ) -> Result<Option<Vec<String>>>;
    /// Queued messages of a device in `(after, up_to]`, oldest first, at most `limit`.
    async fn to_device_inbox(
        &self,
        user_id: &str,
        device_id: &str,
        after: i64,
        up_to: i64,
        limit: u32,
    ) -> Result<Vec<ToDeviceRecord>>;
    /// Deletes the device's messages up to and including `up_to` (the client has them).
    async fn ack_to_device(&self, user_id: &str, device_id: &str, up_to: i64) -> Result<()>;
    /// Creates a backup version (the new current one) and returns its number.
    async fn create_backup(&self, user_id: &str, algorithm: &str, auth_data: &str) -> Result<i64>;
    /// A backup version that is not deleted: the given one, or the current (highest) one.
    async fn backup_version(
        &self,
        user_id: &str,
        version: Option<i64>,
    ) -> Result<Option<BackupVersionRecord>>;
    /// False when the version does not exist or is deleted.
    async fn update_backup_auth_data(
        &self,
        user_id: &str,
        version: i64,
        auth_data: &str,
    ) -> Result<bool>;
    /// Deletes a version and its keys; false only when it never existed.
    async fn delete_backup(&self, user_id: &str, version: i64) -> Result<bool>;
    /// Stores keys in the current version. A key replaces the stored key of its session only
    /// when `better(new, old)`.
    async fn put_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        keys: Vec<BackupKeyRecord>,
        better: BetterBackupKey,
    ) -> Result<BackupWrite>;
    /// Keys of a version (`None` when the version does not exist), optionally of one room or
    /// one session only.
    async fn backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<Option<Vec<BackupKeyRecord>>>;
    async fn delete_backup_keys(
        &self,
        user_id: &str,
        version: i64,
        room_id: Option<&str>,
        session_id: Option<&str>,
    ) -> Result<BackupWrite>;
}

/// Push: pushers, notifications from push-rule evaluation and the unread counts built on them.
#[async_trait]
pub trait PushStore: Send + Sync {
    /// Creates or updates the user's pusher for (app id, pushkey). Unless `append`, pushers with
    /// the same app id and pushkey of other users are removed. A new pusher starts after the
    /// user's latest notification, so that it does not replay old ones.
    async fn set_pusher(&self, pusher: PusherRecord, append: bool) -> Result<()>;
    /// Removes one pusher of the user; false when there was none.
    async fn delete_pusher(&self, user_id: &str, app_id: &str, pushkey: &str) -> Result<bool>;
    async fn pushers_for_user(&self, user_id: &str) -> Result<Vec<PusherRecord>>;
    async fn all_pushers(&self) -> Result<Vec<PusherRecord>>;
    /// Records that the user's notifications up to event position `pushed_through` were handed
    /// to the gateway.
    async fn set_pusher_progress(
        &self,
        user_id: &str,
        app_id: &str,
        pushkey: &str,
        pushed_through: i64,
    ) -> Result<()>;
    /// Moves up to `max` waiting notification rows, oldest first, into the indexed table of all
    /// rows; every reader reads both. False when nothing waited. Rows left waiting at a restart
    /// move when the store opens.
    async fn move_pending_notifications(&self, max: usize) -> Result<bool>;
    /// The user's notifications (their own rows and the room notifications that reach them)
    /// of events before position `before` (all when `None`), newest first; a record's `id` is its
    /// event's position.
    async fn notifications(
        &self,
        user_id: &str,
        before: Option<i64>,
        limit: u32,
        only_highlight: bool,
    ) -> Result<Vec<NotificationRecord>>;
    /// The user's notifications to be pushed of events after position `after`, oldest first.
    async fn pending_pushes(
        &self,
        user_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<NotificationRecord>>;
    /// The stream positions of the events the user's read receipts (public or private) point at
    /// in a room, by thread id (`""` for the unthreaded receipt).
    async fn read_positions(&self, user_id: &str, room_id: &str) -> Result<Vec<(String, i64)>>;
    /// Unread counts per thread of a room: notifications of events after `floor` (or, for a
    /// thread listed in `thread_floors`, after the larger of the two), among the notification
    /// rows written in stream positions `(window.0, window.1]` — a window lets a cached count
    /// be brought up to date by adding only what arrived since. Room notifications count only
    /// for a `member`: a user joined to the room since before `floor`.
    async fn unread_counts(
        &self,
        user_id: &str,
        room_id: &str,
        floor: i64,
        thread_floors: Vec<(String, i64)>,
        window: (i64, i64),
        member: bool,
    ) -> Result<Vec<ThreadCount>>;
    /// Unread notifications across the rooms the user is joined to (after their join and their
    /// unthreaded receipts), for the badge count that every push carries.
    async fn unread_total(&self, user_id: &str) -> Result<u64>;
    /// Those of `rooms` with a room notification in `(after, up_to]` not sent by the user: for a
    /// sync whose filter hid the event itself.
    async fn rooms_with_room_notifications(
        &self,
        user_id: &str,
        rooms: Vec<String>,
        after: i64,
        up_to: i64,
    ) -> Result<Vec<String>>;
    /// Rooms in which the user's notifications changed in stream positions `(after, up_to]`.
    async fn rooms_with_new_notifications(
        &self,
        user_id: &str,
        after: i64,
        up_to: i64,
    ) -> Result<Vec<String>>;
}

/// Everything a Feldpost server stores; one engine implements all of it.
pub trait Store:
    AccountStore + RoomStore + UserDataStore + AdminStore + KeyStore + PushStore
{
    /// The highest stream position whose writes are committed and visible.
    fn current_position(&self) -> i64;
    /// Which rooms and users changed at which positions (see [`ChangeIndex`]).
    fn changes(&self) -> &ChangeIndex;
}

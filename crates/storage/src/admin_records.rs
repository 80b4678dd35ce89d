//! Records of the administration domain: registration tokens and enrollments, the admin audit
//! trail, user and room listings for operators, media quarantine and server-notice rooms.

/// A registration token. An enrollment is a token bound to one localpart (`bound_localpart`),
/// allowed once and short-lived; a plain token (`bound_localpart` `None`) may be used by anyone.
#[derive(Debug, Clone)]
pub struct RegistrationTokenRecord {
    pub id: i64,
    /// The token in clear: operators list and hand it out, so it cannot be stored hashed only.
    pub token: String,
    /// How many registrations may complete with it; `None` is unlimited.
    pub uses_allowed: Option<i64>,
    /// Registrations in progress (unexpired reservations) at the time of reading.
    pub pending: i64,
    pub completed: i64,
    /// Milliseconds since the epoch after which it is invalid; `None` never expires.
    pub expiry_time: Option<i64>,
    pub bound_localpart: Option<String>,
    pub displayname: Option<String>,
    pub created_by: String,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
    /// The users who registered with it, oldest first.
    pub used_by: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct NewRegistrationToken {
    pub token: String,
    /// SHA-256 of the token (hex), the lookup key.
    pub token_hash: String,
    pub uses_allowed: Option<i64>,
    pub expiry_time: Option<i64>,
    pub bound_localpart: Option<String>,
    pub displayname: Option<String>,
    pub created_by: String,
    pub created_ms: i64,
}

/// A change to a token: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct RegistrationTokenUpdate {
    pub uses_allowed: Option<Option<i64>>,
    pub expiry_time: Option<Option<i64>>,
}

/// What reserving a token for a registration in progress came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    Reserved {
        token_id: i64,
    },
    /// Unknown, revoked, expired or used up.
    Invalid,
}

/// A reservation taken by a registration that is completing.
#[derive(Debug, Clone)]
pub struct ClaimedToken {
    pub token_id: i64,
    pub token_hash: String,
    pub bound_localpart: Option<String>,
    pub displayname: Option<String>,
    pub expires_ms: i64,
}

#[derive(Debug, Clone)]
pub struct NewAuditEntry {
    pub ts_ms: i64,
    /// Who acted: a user id, or `cli` for the command line, or `server` for the server itself.
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    /// A JSON object with the particulars.
    pub details: String,
}

#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub id: i64,
    pub ts_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub details: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserOrder {
    #[default]
    Name,
    Admin,
    Deactivated,
    Displayname,
    AvatarUrl,
    CreationTs,
    LastSeenTs,
}

#[derive(Debug, Clone, Default)]
pub struct UserListQuery {
    /// Substring of the user id or the display name (case-insensitive).
    pub name: Option<String>,
    /// Substring of the user id (case-insensitive).
    pub user_id: Option<String>,
    pub admins: Option<bool>,
    pub include_deactivated: bool,
    pub order: UserOrder,
    pub descending: bool,
    pub from: u64,
    pub limit: u64,
}

#[derive(Debug, Clone)]
pub struct UserListEntry {
    pub user: crate::UserRecord,
    pub last_seen_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoomOrder {
    #[default]
    Name,
    CanonicalAlias,
    JoinedMembers,
    JoinedLocalMembers,
    Version,
    Creator,
    Encryption,
    Federatable,
    Public,
    JoinRules,
    GuestAccess,
    HistoryVisibility,
    StateEvents,
}

#[derive(Debug, Clone, Default)]
pub struct RoomListQuery {
    /// Substring of the name, canonical alias or room id (case-insensitive).
    pub search: Option<String>,
    pub order: RoomOrder,
    pub descending: bool,
    pub from: u64,
    pub limit: u64,
    /// This server's name: members whose id ends in `:server_name` count as local.
    pub server_name: String,
}

/// A room as operators see it: the usual state fields read from the current state.
#[derive(Debug, Clone, Default)]
pub struct RoomListEntry {
    pub room_id: String,
    pub version: String,
    pub creator: String,
    pub published: bool,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub avatar: Option<String>,
    pub canonical_alias: Option<String>,
    pub join_rules: Option<String>,
    pub guest_access: Option<String>,
    pub history_visibility: Option<String>,
    pub encryption: Option<String>,
    pub room_type: Option<String>,
    pub federatable: bool,
    pub joined_members: i64,
    pub joined_local_members: i64,
    pub state_events: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaOrder {
    MediaId,
    UploadName,
    #[default]
    CreatedTs,
    MediaLength,
    MediaType,
    QuarantinedBy,
}

#[derive(Debug, Clone)]
pub struct MediaAdminEntry {
    pub media: crate::MediaRecord,
    pub quarantined_by: Option<String>,
}

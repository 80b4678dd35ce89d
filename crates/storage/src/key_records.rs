//! Records of end-to-end encryption data passed across the storage boundary: keys as the JSON the
//! clients signed (the services validate and verify it before it gets here), signatures,
//! send-to-device messages and key backups.

/// A one-time or fallback key: `<algorithm>:<key_id>` split, and the key as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTimeKeyRecord {
    pub algorithm: String,
    pub key_id: String,
    pub json: String,
}

/// What one `/keys/upload` stores for one device, in one transaction.
#[derive(Debug, Clone)]
pub struct KeyUpload {
    pub user_id: String,
    pub device_id: String,
    /// The device keys as canonical JSON, already verified.
    pub device_keys: Option<String>,
    pub one_time_keys: Vec<OneTimeKeyRecord>,
    /// At most one per algorithm; replaces the stored one (unless identical).
    pub fallback_keys: Vec<OneTimeKeyRecord>,
}

/// A one-time key already held for the device under the same id, but with other content.
#[derive(Debug, Clone)]
pub enum KeyUploadOutcome {
    Stored {
        /// Whether the device keys were new or different (a device-list change was recorded).
        device_keys_changed: bool,
    },
    ConflictingOneTimeKey(String),
}

/// The stored device keys of one device, with its display name for `unsigned`.
#[derive(Debug, Clone)]
pub struct DeviceKeysRecord {
    pub user_id: String,
    pub device_id: String,
    pub json: String,
    pub display_name: Option<String>,
}

/// A request for one key of a device.
#[derive(Debug, Clone)]
pub struct KeyClaim {
    pub user_id: String,
    pub device_id: String,
    pub algorithm: String,
}

/// A key handed out by a claim.
#[derive(Debug, Clone)]
pub struct ClaimedKey {
    pub user_id: String,
    pub device_id: String,
    pub algorithm: String,
    pub key_id: String,
    pub json: String,
    pub fallback: bool,
}

/// A cross-signing key: `key_type` is `master`, `self_signing` or `user_signing`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossSigningKeyRecord {
    pub user_id: String,
    pub key_type: String,
    pub public_key: String,
    pub json: String,
}

/// A signature of one key (a device id or a master public key) by another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureRecord {
    pub target_user_id: String,
    pub target_key_id: String,
    pub signer_user_id: String,
    pub signer_key_id: String,
    pub signature: String,
}

/// A send-to-device message to queue. `device_id` `None` means every device of the user.
#[derive(Debug, Clone)]
pub struct NewToDevice {
    pub user_id: String,
    pub device_id: Option<String>,
    pub content: String,
}

/// A queued send-to-device message.
#[derive(Debug, Clone)]
pub struct ToDeviceRecord {
    pub stream: i64,
    pub sender: String,
    pub event_type: String,
    pub content: String,
}

/// A key backup version and what it holds.
#[derive(Debug, Clone)]
pub struct BackupVersionRecord {
    pub version: i64,
    pub algorithm: String,
    pub auth_data: String,
    pub etag: i64,
    pub count: u64,
}

/// One backed-up megolm session key.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupKeyRecord {
    pub room_id: String,
    pub session_id: String,
    pub first_message_index: i64,
    pub forwarded_count: i64,
    pub is_verified: bool,
    pub session_data: String,
}

/// The result of a write to a backup.
#[derive(Debug, Clone)]
pub enum BackupWrite {
    /// Written: the backup's key count and etag afterwards.
    Done { count: u64, etag: i64 },
    /// The version exists but is not the current one; `current` is (if any).
    WrongVersion { current: Option<i64> },
    /// No such version (or deleted).
    NotFound,
}

/// Decides whether a new backup key should replace the stored one of its session.
pub type BetterBackupKey = fn(&BackupKeyRecord, &BackupKeyRecord) -> bool;

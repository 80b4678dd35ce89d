-- End-to-end encryption: device and cross-signing keys, one-time and fallback keys, signatures,
-- device-list changes, send-to-device messages and server-side key backups.

-- The identity keys a device uploaded, as the signed JSON object it sent (its own signature only).
CREATE TABLE e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Unclaimed one-time keys. `seq` orders uploads: keys are handed out oldest upload first.
CREATE TABLE e2e_one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    json TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);
CREATE INDEX e2e_one_time_keys_claim ON e2e_one_time_keys (user_id, device_id, algorithm, seq);

-- At most one fallback key per device and algorithm; `used` once it was handed out by a claim.
CREATE TABLE e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    json TEXT NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- A user's cross-signing keys: `key_type` is master, self_signing or user_signing.
CREATE TABLE e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    public_key TEXT NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded after the key they sign, kept apart from it so that each viewer is shown
-- only those the spec lets them see. `target_key_id` is a device id or a master public key.
CREATE TABLE e2e_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);

-- Device-list changes in stream order. With `viewer` NULL the change concerns everyone who shares
-- a room with `user_id` (and the user); otherwise only `viewer` is told (their own signature of
-- another user's master key).
CREATE TABLE e2e_device_list_changes (
    stream INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    viewer TEXT
);
CREATE INDEX e2e_device_list_changes_user ON e2e_device_list_changes (user_id, stream);

-- Send-to-device messages waiting for their device, one stream position each.
CREATE TABLE e2e_to_device (
    stream INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    content TEXT NOT NULL
);
CREATE INDEX e2e_to_device_inbox ON e2e_to_device (user_id, device_id, stream);

-- Transaction ids of /sendToDevice already carried out, per sending device.
CREATE TABLE e2e_to_device_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

-- Key backup versions. Deleted versions stay as tombstones so that their numbers are never reused
-- and deleting one twice succeeds. `etag` changes whenever the stored keys change.
CREATE TABLE e2e_backup_versions (
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, version)
);

CREATE TABLE e2e_backup_keys (
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index INTEGER NOT NULL,
    forwarded_count INTEGER NOT NULL,
    is_verified INTEGER NOT NULL,
    session_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);

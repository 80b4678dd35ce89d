-- Registration tokens and enrollments (tokens bound to one localpart).
CREATE TABLE registration_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    token TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    uses_allowed INTEGER,
    completed INTEGER NOT NULL DEFAULT 0,
    expiry_time INTEGER,
    bound_localpart TEXT,
    displayname TEXT,
    created_by TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
CREATE INDEX registration_tokens_bound ON registration_tokens (bound_localpart);

-- A registration in progress that passed the token stage holds a reservation until it completes
-- or the reservation lapses; live reservations are the token's `pending` count.
CREATE TABLE registration_token_reservations (
    session TEXT PRIMARY KEY,
    token_id INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX registration_token_reservations_token ON registration_token_reservations (token_id);

CREATE TABLE registration_token_uses (
    token_id INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    used_ms INTEGER NOT NULL,
    PRIMARY KEY (token_id, user_id)
);

-- Append-only record of administrative actions.
CREATE TABLE admin_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    details TEXT NOT NULL
);

CREATE TABLE media_quarantine (
    media_id TEXT PRIMARY KEY,
    quarantined_by TEXT NOT NULL,
    ts_ms INTEGER NOT NULL
);

CREATE TABLE blocked_rooms (
    room_id TEXT PRIMARY KEY,
    blocked_by TEXT NOT NULL,
    ts_ms INTEGER NOT NULL
);

CREATE TABLE server_notice_rooms (
    user_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL UNIQUE
);

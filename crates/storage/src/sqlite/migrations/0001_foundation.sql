CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES ('stream', 0);

CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    password_hash TEXT,
    displayname TEXT,
    avatar_url TEXT,
    is_admin INTEGER NOT NULL DEFAULT 0,
    deactivated INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
);

CREATE TABLE devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    last_seen_ip TEXT,
    last_seen_ms INTEGER,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE access_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT NOT NULL,
    published INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
);

CREATE TABLE state_groups (
    id INTEGER PRIMARY KEY,
    room_id TEXT NOT NULL,
    prev_group INTEGER,
    chain_len INTEGER NOT NULL
);

CREATE TABLE state_group_entries (
    group_id INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (group_id, event_type, state_key)
);

CREATE TABLE events (
    stream INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT,
    depth INTEGER NOT NULL,
    origin_server_ts INTEGER NOT NULL,
    json TEXT NOT NULL,
    unsigned TEXT,
    state_group_before INTEGER,
    state_group_after INTEGER,
    redacted_by TEXT,
    txn_device TEXT,
    txn_id TEXT,
    contains_url INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_room ON events (room_id, stream);

CREATE TABLE event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);

CREATE TABLE forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

CREATE TABLE room_heads (
    room_id TEXT PRIMARY KEY,
    max_depth INTEGER NOT NULL,
    state_group INTEGER NOT NULL
);

CREATE TABLE current_state (
    room_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_type, state_key)
);

CREATE TABLE memberships (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream INTEGER NOT NULL,
    forgotten INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

CREATE TABLE event_relations (
    event_id TEXT PRIMARY KEY,
    relates_to TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    sender TEXT NOT NULL,
    stream INTEGER NOT NULL
);
CREATE INDEX event_relations_target ON event_relations (relates_to, stream);
CREATE INDEX event_relations_threads ON event_relations (room_id, rel_type, relates_to);

CREATE TABLE txn_ids (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

CREATE TABLE room_aliases (
    alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    content TEXT NOT NULL,
    stream INTEGER NOT NULL,
    PRIMARY KEY (user_id, room_id, kind)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream);

CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    stream INTEGER NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_stream ON receipts (room_id, stream);

CREATE TABLE filters (
    user_id TEXT NOT NULL,
    filter_id INTEGER NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

CREATE TABLE presence (
    user_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ms INTEGER NOT NULL,
    stream INTEGER NOT NULL
);

CREATE TABLE media (
    media_id TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    content_type TEXT,
    filename TEXT,
    size INTEGER NOT NULL,
    uploader TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);

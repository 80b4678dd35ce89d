-- Push: pushers, the notifications that push-rule evaluation produced, and per-pusher progress.

CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    data TEXT NOT NULL,
    device_id TEXT,
    pushkey_ts INTEGER NOT NULL,
    -- The last notification (push_notifications.id) handed to the gateway; delivery resumes
    -- after it, also after a restart.
    last_notification_id INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_key ON pushers (app_id, pushkey);

CREATE TABLE push_notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    -- Stream position of the event: compared with the position of the user's read receipts.
    event_stream INTEGER NOT NULL,
    -- Stream position at which this row became visible, so that sync notices changed counts.
    stream INTEGER NOT NULL,
    -- 'main' or the thread root's event id.
    thread_id TEXT NOT NULL,
    notify INTEGER NOT NULL,
    highlight INTEGER NOT NULL,
    -- Whether a push goes out (false during quiet hours; the counts still rise).
    push INTEGER NOT NULL,
    actions TEXT NOT NULL,
    profile_tag TEXT,
    ts INTEGER NOT NULL
);
CREATE INDEX push_notifications_user ON push_notifications (user_id, id);
CREATE INDEX push_notifications_room ON push_notifications (user_id, room_id, event_stream);
CREATE INDEX push_notifications_stream ON push_notifications (user_id, stream);

-- A message into a room of 2,000 members stored 2,000 notification rows, nearly all alike, and
-- dirtied two index pages at random places for each (about 30 MB of page writes per message).
-- Now an event that notifies most members the same way is stored once, as a room notification:
-- it reaches every local member joined before it, but for its sender and the members that have
-- a row of their own for the event in push_notifications (or still waiting in
-- push_pending_notifications) — those whose outcome differs, a row with notify = 0 for those it
-- does not notify at all.
CREATE TABLE push_room_notifications (
    -- The event's stream position; also the position at which the notification became visible.
    event_stream INTEGER PRIMARY KEY,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    highlight INTEGER NOT NULL,
    push INTEGER NOT NULL,
    actions TEXT NOT NULL,
    ts INTEGER NOT NULL
);
-- Unread counts read only this index.
CREATE INDEX push_room_notifications_room
    ON push_room_notifications (room_id, event_stream, thread_id, highlight, sender);

-- A user's notifications are listed and pushed in the order of their events' positions, merged
-- with the room notifications, so the per-user index follows positions instead of row ids.
DROP INDEX IF EXISTS push_notifications_user;
CREATE INDEX push_notifications_user ON push_notifications (user_id, event_stream);
-- The waiting table is small and short-lived; indexed, its rows are read where they are, by
-- counts, listings, pushers and the room notifications' exceptions, without waiting for the move.
CREATE INDEX push_pending_notifications_user
    ON push_pending_notifications (user_id, event_stream);

-- The position from which the current membership has been a join without a break (a change of
-- display name keeps it): room notifications reach a member from there on.
ALTER TABLE memberships ADD COLUMN joined_stream INTEGER NOT NULL DEFAULT 0;
UPDATE memberships SET joined_stream = stream;

-- Pushers now follow event positions instead of row ids: delivery resumes after this position.
ALTER TABLE pushers ADD COLUMN pushed_through INTEGER NOT NULL DEFAULT 0;
UPDATE pushers SET pushed_through = coalesce(
    (SELECT max(n.event_stream) FROM push_notifications n
      WHERE n.user_id = pushers.user_id AND n.id <= pushers.last_notification_id), 0);

-- Unread counts read only this index (no row lookups), however many notifications are unread.
DROP INDEX IF EXISTS push_notifications_room;
CREATE INDEX push_notifications_unread
    ON push_notifications (user_id, room_id, event_stream, notify, thread_id, highlight, stream);
-- Room summaries count members by membership.
CREATE INDEX memberships_room_membership ON memberships (room_id, membership, user_id);

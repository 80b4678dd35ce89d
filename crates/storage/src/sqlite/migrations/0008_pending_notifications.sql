-- Notification rows waiting to move into push_notifications. An event with many recipients
-- writes its rows here, in its own write: a table without secondary indexes, so the rows append
-- to a few pages, where push_notifications dirtied two index pages at random places per
-- recipient (thousands of pages for a room of 2,000 members). Later writes move them over in
-- small chunks, oldest first. While any row waits here, new rows queue behind it, so that ids in
-- push_notifications keep growing with positions. Readers that go to the database for counts
-- read both tables.
CREATE TABLE push_pending_notifications (
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_stream INTEGER NOT NULL,
    stream INTEGER NOT NULL,
    thread_id TEXT NOT NULL,
    notify INTEGER NOT NULL,
    highlight INTEGER NOT NULL,
    push INTEGER NOT NULL,
    actions TEXT NOT NULL,
    profile_tag TEXT,
    ts INTEGER NOT NULL
);

-- Every notification row was written into four b-trees, one at a random place per recipient;
-- a message to 2,000 members dirtied thousands of pages. New rows of a user are now found by
-- walking the (user_id, id) index backwards (ids and positions grow together), so the index on
-- (user_id, stream) goes.
DROP INDEX IF EXISTS push_notifications_stream;

-- The upkeep that leaves the rooms of deactivated accounts runs every minute; without an index it
-- joined every membership with its user (about a second with 80,000 users). Deactivated accounts
-- are few: a partial index finds them directly.
CREATE INDEX IF NOT EXISTS users_deactivated ON users (user_id) WHERE deactivated = 1;

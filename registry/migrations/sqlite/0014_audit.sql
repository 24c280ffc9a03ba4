-- The audit log's own entries: denied requests and failed logins, tallied in memory and written
-- in batches, one row for many alike (count), with what was refused (detail).
ALTER TABLE events ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
ALTER TABLE events ADD COLUMN detail TEXT;

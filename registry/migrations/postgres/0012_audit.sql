-- The audit log's own entries: denied requests and failed logins, tallied in memory and written
-- in batches, one row for many alike (count), with what was refused (detail).
-- Expand only: columns with defaults.
ALTER TABLE events ADD COLUMN count BIGINT NOT NULL DEFAULT 1;
ALTER TABLE events ADD COLUMN detail TEXT;

-- Upload sessions that any replica continues without re-reading what came before: the sha256
-- state after the session's bytes, and on object stores the multipart upload the session's parts
-- go into (its id recorded before the first part is sent, so an abandoned one is aborted by it).
-- A part with a `tag` is a part of that multipart upload; one without is a chunk object of its own.
-- Expand only: schema 1 code ignores the columns, and fails (never corrupts) a session whose
-- parts it cannot read.
ALTER TABLE uploads ADD COLUMN hash_state BYTEA;
ALTER TABLE uploads ADD COLUMN assembly TEXT;
ALTER TABLE upload_parts ADD COLUMN tag TEXT;

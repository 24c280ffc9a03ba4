-- What a running fetch has put in storage for the other replicas to stream before it ends: the
-- holder's `fetch_id` names its segment objects, each `segment` bytes of the blob's `size`,
-- `published` bytes so far. `wanted` once another replica waits for the blob: only then does the
-- holder publish. Expand only: nullable columns and columns with defaults.
ALTER TABLE proxy_fetches ADD COLUMN fetch_id TEXT;
ALTER TABLE proxy_fetches ADD COLUMN size BIGINT;
ALTER TABLE proxy_fetches ADD COLUMN segment BIGINT;
ALTER TABLE proxy_fetches ADD COLUMN published BIGINT NOT NULL DEFAULT 0;
ALTER TABLE proxy_fetches ADD COLUMN wanted BOOLEAN NOT NULL DEFAULT FALSE;

-- What a running fetch has put in storage for the other replicas to stream before it ends: the
-- holder's `fetch_id` names its segment objects, each `segment` bytes of the blob's `size`,
-- `published` bytes so far. `wanted` once another replica waits for the blob: only then does the
-- holder publish.
ALTER TABLE proxy_fetches ADD COLUMN fetch_id TEXT;
ALTER TABLE proxy_fetches ADD COLUMN size INTEGER;
ALTER TABLE proxy_fetches ADD COLUMN segment INTEGER;
ALTER TABLE proxy_fetches ADD COLUMN published INTEGER NOT NULL DEFAULT 0;
ALTER TABLE proxy_fetches ADD COLUMN wanted INTEGER NOT NULL DEFAULT 0;

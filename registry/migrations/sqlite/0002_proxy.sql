-- Berth metadata, schema version 2: pull-through cache bookkeeping.

-- When each cached tag was last confirmed with its upstream (a HEAD, or the fetch that cached it).
CREATE TABLE proxy_tags (
    repository_id INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    name          TEXT    NOT NULL,
    checked_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, name)
);

-- Cached content (manifests and blobs) and when it was last pulled, for least-recently-pulled
-- eviction under a size limit and for the TTL of unpulled content.
CREATE TABLE proxy_content (
    repository_id INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest        TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('blob', 'manifest')),
    size          INTEGER NOT NULL,
    pulled_at     INTEGER NOT NULL, -- unix milliseconds, so pulls within a second still order
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX proxy_content_by_pulled ON proxy_content (pulled_at);

-- Eviction asks whether any repository still holds a manifest's bytes.
CREATE INDEX manifests_by_digest ON manifests (digest);

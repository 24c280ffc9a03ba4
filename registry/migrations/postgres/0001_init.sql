-- Berth metadata on PostgreSQL, schema version 1: the same model as the SQLite schema (its
-- versions 1-3), in PostgreSQL's types. Timestamps are unix seconds unless a column says
-- otherwise.
--
-- Schema changes are expand-then-contract: a migration that old replicas can still run beside
-- (new tables, new nullable columns) keeps `compatible_from` unchanged; one that removes what
-- older code uses raises it (see src/meta/postgres/migrate.rs).

CREATE TABLE repositories (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT   COLLATE "C" NOT NULL UNIQUE, -- byte order, as pagination promises
    created_at BIGINT NOT NULL
);

-- Content known to be committed in storage, by digest (layers, configs and manifests alike).
CREATE TABLE blobs (
    digest     TEXT   PRIMARY KEY,
    size       BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- A blob is readable in a repository once it was pushed or mounted there.
CREATE TABLE repository_blobs (
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest        TEXT   NOT NULL REFERENCES blobs (digest),
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX repository_blobs_by_digest ON repository_blobs (digest);

CREATE TABLE manifests (
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest        TEXT   NOT NULL REFERENCES blobs (digest),
    media_type    TEXT   NOT NULL,
    size          BIGINT NOT NULL,
    artifact_type TEXT,
    subject       TEXT,
    annotations   TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX manifests_by_subject ON manifests (repository_id, subject) WHERE subject IS NOT NULL;
CREATE INDEX manifests_by_digest ON manifests (digest);

-- Edges from a manifest to what it needs: its config and layers ('blob') or, for an index, its
-- child manifests ('manifest'). Garbage collection marks from these.
CREATE TABLE manifest_references (
    repository_id   BIGINT NOT NULL,
    manifest_digest TEXT   NOT NULL,
    child_digest    TEXT   NOT NULL,
    kind            TEXT   NOT NULL CHECK (kind IN ('blob', 'manifest')),
    PRIMARY KEY (repository_id, manifest_digest, kind, child_digest),
    FOREIGN KEY (repository_id, manifest_digest)
        REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
);
CREATE INDEX manifest_references_by_child ON manifest_references (child_digest);

CREATE TABLE tags (
    repository_id BIGINT NOT NULL,
    name          TEXT   COLLATE "C" NOT NULL,
    digest        TEXT   NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, name),
    FOREIGN KEY (repository_id, digest)
        REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
);

-- Upload sessions, so that any replica continues any session.
CREATE TABLE uploads (
    id         TEXT    PRIMARY KEY,
    repository TEXT    NOT NULL,
    received   BIGINT  NOT NULL,
    parts      INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL
);
CREATE INDEX uploads_by_updated ON uploads (updated_at);

-- Each chunk is its own storage object, named by its start offset and a nonce.
CREATE TABLE upload_parts (
    upload_id TEXT   NOT NULL REFERENCES uploads (id) ON DELETE CASCADE,
    start     BIGINT NOT NULL,
    size      BIGINT NOT NULL,
    nonce     TEXT   NOT NULL,
    PRIMARY KEY (upload_id, start)
);

-- Pull-through cache: when each cached tag was last confirmed with its upstream.
CREATE TABLE proxy_tags (
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    name          TEXT   NOT NULL,
    checked_at    BIGINT NOT NULL,
    PRIMARY KEY (repository_id, name)
);

-- Cached content and when it was last pulled (unix milliseconds), for eviction.
CREATE TABLE proxy_content (
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest        TEXT   NOT NULL,
    kind          TEXT   NOT NULL CHECK (kind IN ('blob', 'manifest')),
    size          BIGINT NOT NULL,
    pulled_at     BIGINT NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX proxy_content_by_pulled ON proxy_content (pulled_at);
